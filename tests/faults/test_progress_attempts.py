"""Attempts that made progress are not poison (both databases): a job whose worker is killed
again and again, each time after it checkpointed a new epoch, runs to the end with a history
identical to an undisturbed run, however many attempts that takes; the attempt limit (3)
counts only attempts in a row that checkpointed no new epoch.

The deaths are real: the test SIGKILLs whichever worker process holds the job once that
attempt has stored an epoch past the one it resumed from.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

from sqlalchemy import Engine

from service.config import Settings
from service.db import session_factory
from service.jobs import queue
from tests.support.factories import (
    SIGNALLED_JOB,
    add_dataset,
    long_job_data,
    submit,
)
from tests.support.processes import wait_for, worker_pid, workers
from tests.support.stored import history, job_row, reference_history

MAX_ATTEMPTS = 3  # the jobs table's default
KILLS = MAX_ATTEMPTS + 2  # more deaths than the limit allows attempts without progress


def test_a_job_killed_after_each_new_epoch_is_not_poison_and_finishes_identically(
    engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    data = long_job_data()
    with session_factory(engine)() as session:
        job_id = submit(
            session, add_dataset(session, *data, tmp_path), **SIGNALLED_JOB, commit=True
        )

    killed: list[tuple[int, int, int]] = []  # (attempt, epoch when claimed, epoch when killed)
    with workers(settings.resolved_database_url, settings.data_dir, count=KILLS + 1) as started:
        by_pid = {w.pid: w for w in started}
        claimed_at_epoch: dict[int, int] = {}
        deadline = time.monotonic() + 120
        while len(killed) < KILLS:
            assert time.monotonic() < deadline, f"stuck after killing {killed}"
            row = job_row(engine, job_id)
            assert row["status"] in ("queued", "running"), row
            attempt = row["attempt"]
            if row["status"] == "running" and attempt > len(killed):
                start = claimed_at_epoch.setdefault(attempt, row["epoch"])
                if row["epoch"] > start:  # this attempt checkpointed a new epoch
                    victim = by_pid[worker_pid(row["worker_id"])]
                    victim.signal(signal.SIGKILL)
                    assert victim.wait() == -signal.SIGKILL
                    assert job_row(engine, job_id)["stalled_attempts"] == 0
                    killed.append((attempt, start, row["epoch"]))
            time.sleep(0.005)
        wait_for(
            lambda: job_row(engine, job_id)["status"] in ("succeeded", "failed"),
            timeout=120,
            what="the job to end",
        )
    done = job_row(engine, job_id)

    assert [attempt for attempt, _, _ in killed] == list(range(1, KILLS + 1))
    assert all(at_kill > at_claim for _, at_claim, at_kill in killed)
    assert (done["status"], done["error_code"]) == ("succeeded", None)
    assert done["attempt"] == KILLS + 1
    assert history(engine, job_id) == reference_history(*data, **SIGNALLED_JOB)


def test_poison_counts_only_attempts_in_a_row_without_a_new_epoch(
    engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    """Two attempts killed after progress, then every attempt killed as soon as it is seen:
    the job fails on the attempt that ends the first run of 3 attempts in a row without a new
    epoch, with the rule in its message. (Whether an attempt killed at once stored an epoch
    first is read after its death, from the job's epoch count.)"""
    data = long_job_data()
    with session_factory(engine)() as session:
        job_id = submit(
            session, add_dataset(session, *data, tmp_path), **SIGNALLED_JOB, commit=True
        )

    progressed = 2
    epoch_after: list[int] = [0]  # the job's epochs when each attempt ended (0: before any)
    with workers(settings.resolved_database_url, settings.data_dir, count=8) as started:
        by_pid = {w.pid: w for w in started}
        deadline = time.monotonic() + 180
        while (row := job_row(engine, job_id))["status"] != "failed":
            assert time.monotonic() < deadline, f"stuck after epochs {epoch_after}"
            attempt = row["attempt"]
            mine = row["status"] == "running" and attempt == len(epoch_after)
            if mine and (attempt > progressed or row["epoch"] > epoch_after[-1]):
                victim = by_pid[worker_pid(row["worker_id"])]
                victim.signal(signal.SIGKILL)
                assert victim.wait() == -signal.SIGKILL
                epoch_after.append(job_row(engine, job_id)["epoch"])
            time.sleep(0.005)

    # The attempt that ended the first run of MAX_ATTEMPTS attempts without a new epoch.
    stalled, last = 0, None
    for attempt in range(1, len(epoch_after)):
        stalled = 0 if epoch_after[attempt] > epoch_after[attempt - 1] else stalled + 1
        if stalled == MAX_ATTEMPTS:
            last = attempt
            break
    assert last == len(epoch_after) - 1 == row["attempt"], epoch_after
    assert all(epoch_after[a] > epoch_after[a - 1] for a in range(1, progressed + 1))
    assert (row["error_code"], row["stalled_attempts"]) == ("lease_expired", MAX_ATTEMPTS)
    assert row["error_message"] == queue.exhausted_message(last, MAX_ATTEMPTS)
    assert "does not count toward the limit of 3" in row["error_message"]
    assert row["epoch"] == epoch_after[-1] >= progressed  # the epochs made stay
