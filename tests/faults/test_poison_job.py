"""A poison job — one whose worker dies on every attempt — ends ``failed`` after the attempt cap
(3), on both databases, while the jobs queued behind it run.

The death is real: the test SIGKILLs whichever worker process holds the job as soon as the job
is ``running`` with a new attempt number. With a 1 s lease, each death costs about a second
before the next claim; the claim after the third finds no attempts left and fails the job.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

from sqlalchemy import Engine

from service.config import Settings
from service.db import session_factory
from service.jobs import queue
from tests.support.factories import LONG_JOB, add_dataset, regression_data, submit
from tests.support.processes import wait_for, worker_pid, workers
from tests.support.stored import job_row

MAX_ATTEMPTS = 3  # the jobs table's default attempt cap
#: An attempt that checkpointed an epoch does not count toward the cap, so each must die before
#: its first epoch ends: at batch 1 on 60,000 rows that epoch takes over a second (0.4 s on
#: 20,000 rows, quiet), far beyond the few milliseconds from a claim to its kill. (At batch 8 it
#: took 56 ms, and on a loaded machine an attempt once checkpointed before its kill.)
POISON_ROWS = 60_000
POISON_JOB = {**LONG_JOB, "batch_size": 1, "seed": 3}


def test_poison_job_fails_after_three_killed_attempts_without_blocking_the_queue(
    engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    with session_factory(engine)() as session:
        poison = submit(
            session,
            add_dataset(session, *regression_data(POISON_ROWS), tmp_path),
            **POISON_JOB,
            commit=True,
        )
        small_id = add_dataset(session, *regression_data(64), tmp_path)
        others = [
            submit(session, small_id, batch_size=16, epochs=2, seed=i, commit=True)
            for i in range(3)
        ]

    first = job_row(engine, poison)
    transitions = [(first["status"], first["attempt"])]
    killed: list[str] = []  # the worker id of each attempt, killed
    with workers(settings.resolved_database_url, settings.data_dir, count=4) as started:
        by_pid = {w.pid: w for w in started}
        deadline = time.monotonic() + 60
        while transitions[-1][0] != "failed":
            assert time.monotonic() < deadline, f"the poison job is stuck at {transitions}"
            row = job_row(engine, poison)
            state = (row["status"], row["attempt"])
            if state != transitions[-1]:
                transitions.append(state)
            if row["status"] == "running" and row["attempt"] > len(killed):
                victim = by_pid[worker_pid(row["worker_id"])]
                victim.signal(signal.SIGKILL)
                assert victim.wait() == -signal.SIGKILL
                killed.append(row["worker_id"])
            time.sleep(0.005)
        wait_for(
            lambda: all(job_row(engine, job_id)["status"] == "succeeded" for job_id in others),
            what="the jobs behind the poison job",
        )
        survivors = [w for w in started if w.process.poll() is None]

    assert transitions == [
        ("queued", 0),
        ("running", 1),
        ("running", 2),
        ("running", 3),
        ("failed", 3),
    ]
    assert len(set(killed)) == MAX_ATTEMPTS  # three processes, each killed on its attempt
    assert len(survivors) == len(started) - MAX_ATTEMPTS == 1
    failed = job_row(engine, poison)
    assert (failed["error_code"], failed["lease_expires_at"]) == ("lease_expired", None)
    assert failed["error_message"] == queue.exhausted_message(3, MAX_ATTEMPTS)
    assert failed["error_message"].startswith(
        "the lease expired on attempt 3, the last of 3 attempts in a row that checkpointed no "
        "new epoch"
    )
    assert failed["finished_at"] is not None
    for job_id in others:
        done = job_row(engine, job_id)
        assert (done["status"], done["attempt"], done["epoch"]) == ("succeeded", 1, 2)
        assert done["finished_at"] < failed["finished_at"]  # none waited behind the poison
