"""The compose topology as local processes, on a fresh PostgreSQL database: ``batchwise
migrate`` (the one-shot service), one ``batchwise serve`` with no embedded workers (the api)
and three ``batchwise worker`` processes (``--scale worker=3``). Thirty jobs go in over HTTP;
one worker is stopped with SIGTERM in the middle of the long one.

Each job runs exactly once — every job at attempt 1 except the interrupted one, released and
resumed at attempt 2 — each stores epochs 1…E once, and every history is byte for byte what an
uninterrupted in-process run of the core stores (timing fields aside).
"""

from __future__ import annotations

import os
import signal
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, func, select

from service.db import session_factory
from service.db.migrate import current_revision, head_revision
from service.db.tables import Job, JobEpoch
from service.worker.loop import EXIT_OK
from tests.support.databases import engine_on
from tests.support.factories import LONG_JOB_ROWS, SIGNALLED_JOB, regression_data
from tests.support.processes import ServeProcess, run_batchwise, wait_for, workers
from tests.support.stored import history, job_row, reference_history

pytestmark = pytest.mark.postgres

N_JOBS = 30
#: The other 29: two epochs of four steps each, one seed per job.
SHORT = {"batch_size": 16, "epochs": 2}
SHORT_ROWS = 64


def batchwise(*args: str, database_url: str, data_dir: Path) -> subprocess.CompletedProcess[str]:
    """``batchwise ARGS`` run to its end, as a one-shot container would."""
    env = {"BATCHWISE_DATABASE_URL": database_url, "BATCHWISE_DATA_DIR": str(data_dir)}
    return run_batchwise(*args, env=env)


@pytest.fixture
def fresh_database(postgres_server: Any) -> Iterator[str]:
    """URL of a new, empty (never migrated) PostgreSQL database, dropped afterwards."""
    name = f"bw_{os.getpid()}_{uuid.uuid4().hex[:8]}_compose"
    url: str = postgres_server.create(name)
    try:
        yield url
    finally:
        postgres_server.drop(name)


@pytest.fixture
def fresh_engine(fresh_database: str) -> Iterator[Engine]:
    with engine_on(fresh_database) as engine:
        yield engine


def epochs_stored(engine: Engine) -> dict[str, list[int]]:
    """job id → its stored epoch numbers, in order."""
    with session_factory(engine)() as session:
        rows = session.execute(select(JobEpoch.job_id, JobEpoch.epoch).order_by(JobEpoch.epoch))
        stored: dict[str, list[int]] = {}
        for job_id, epoch in rows:
            stored.setdefault(job_id, []).append(epoch)
        return stored


def count_finished(engine: Engine) -> int:
    with session_factory(engine)() as session:
        return int(
            session.scalar(
                select(func.count())
                .select_from(Job)
                .where(Job.status.in_(("succeeded", "failed", "cancelled")))
            )
            or 0
        )


def test_compose_topology_runs_30_jobs_once_each_and_survives_a_sigterm_mid_job(
    fresh_database: str, fresh_engine: Engine, serve_process: ServeProcess, tmp_path: Path
) -> None:
    api_data, worker_data = tmp_path / "api-data", tmp_path / "worker-data"
    api_data.mkdir()
    worker_data.mkdir()

    # Why the api waits for migrate: against an unmigrated PostgreSQL it refuses to start.
    refused = batchwise("serve", "--port", "0", database_url=fresh_database, data_dir=api_data)
    assert refused.returncode == 1
    assert "run `batchwise migrate` first" in refused.stderr

    migrated = batchwise("migrate", database_url=fresh_database, data_dir=api_data)
    assert migrated.returncode == 0, migrated.stderr
    assert current_revision(fresh_database) == head_revision()

    X_long, y_long = regression_data(LONG_JOB_ROWS)
    X_short, y_short = regression_data(SHORT_ROWS, seed=1)
    with (
        serve_process(database_url=fresh_database, data_dir=api_data) as base_url,
        httpx.Client(base_url=base_url, timeout=60) as client,
    ):
        dataset_ids = []
        for name, X, y in (("long", X_long, y_long), ("short", X_short, y_short)):
            created = client.post(
                "/v1/datasets", json={"name": name, "X": X.tolist(), "y": y.tolist()}
            )
            assert created.status_code == 201, created.text
            dataset_ids.append(created.json()["id"])
        # The long job first, so the first claim takes it while the others queue behind it.
        bodies = [{"dataset_id": dataset_ids[0], **SIGNALLED_JOB}] + [
            {"dataset_id": dataset_ids[1], **SHORT, "seed": seed} for seed in range(N_JOBS - 1)
        ]
        job_ids = []
        for body in bodies:
            submitted = client.post("/v1/jobs", json=body)
            assert submitted.status_code == 202, submitted.text
            job_ids.append(submitted.json()["id"])
        long_id = job_ids[0]

        with workers(fresh_database, worker_data, count=3) as started:
            running = wait_for(
                lambda: (row := job_row(fresh_engine, long_id))["epoch"] >= 2 and row,
                timeout=120,
                what="two epochs of the long job",
            )
            # worker_id is host:pid:random: the process that holds the long job.
            pid = int(running["worker_id"].split(":")[-2])
            (victim,) = [w for w in started if w.pid == pid]
            victim.signal(signal.SIGTERM)
            assert victim.wait() == EXIT_OK
            released = job_row(fresh_engine, long_id)
            assert released["epoch"] < SIGNALLED_JOB["epochs"]  # stopped mid-job
            assert released["worker_id"] != running["worker_id"]

            wait_for(
                lambda: count_finished(fresh_engine) == N_JOBS, timeout=240, what="all 30 jobs"
            )
            others = [w for w in started if w is not victim]
            assert all(w.process.poll() is None for w in others)  # still serving the queue

        listed = [client.get(f"/v1/jobs/{job_id}").json() for job_id in job_ids]
        assert [job["status"] for job in listed] == ["succeeded"] * N_JOBS
        long_history = client.get(f"/v1/jobs/{long_id}/history").json()
        assert long_history["epoch"] == list(range(1, SIGNALLED_JOB["epochs"] + 1))

    rows = {job_id: job_row(fresh_engine, job_id) for job_id in job_ids}
    assert {job_id: row["attempt"] for job_id, row in rows.items()} == {
        job_id: 2 if job_id == long_id else 1 for job_id in job_ids
    }
    assert rows[long_id]["worker_id"] != running["worker_id"]  # finished by another worker
    # Each epoch of each job stored once: no job ran twice, the resumed one did not repeat.
    assert epochs_stored(fresh_engine) == {
        job_id: list(range(1, (SIGNALLED_JOB if job_id == long_id else SHORT)["epochs"] + 1))
        for job_id in job_ids
    }
    assert history(fresh_engine, long_id) == reference_history(X_long, y_long, **SIGNALLED_JOB)
    for seed, job_id in enumerate(job_ids[1:]):
        assert history(fresh_engine, job_id) == reference_history(
            X_short, y_short, **SHORT, seed=seed
        )
