"""PostgreSQL stopped and started again while jobs run, on a private server (see ``conftest``):
a real API and two real worker processes on it.

Shorter than the lease, the outage costs nothing: the API answers 503 problem+json with
``Retry-After`` while the database is away and 200 once it is back; the workers retry their
writes (training paused) and carry on — every job finishes at attempt 1. Longer than the lease,
the workers give their jobs up without exiting, claim them again once the database is back, and
resume them from their checkpoints. Either way, every history is byte for byte what an
uninterrupted run stores.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, select

from service.db import session_factory
from service.db.tables import JobEpoch
from service.worker.database_outage import UNREACHABLE
from tests.support.databases import engine_on
from tests.support.factories import LONG_JOB, submit_http, upload_long_job_data
from tests.support.private_postgres import PrivatePostgres
from tests.support.processes import claims, run_server, wait_for, worker_dir, worker_pid, workers
from tests.support.stored import history, job_row, long_job_history

pytestmark = pytest.mark.postgres

SEEDS = (3, 4, 3, 4)  # two distinct histories: a job's epochs written to another would show
OUTAGE_S = 2.0


@pytest.fixture
def engine(private_postgres_url: str) -> Iterator[Engine]:
    with engine_on(private_postgres_url) as engine:
        yield engine


def stored_epochs(engine: Engine, job_id: str) -> list[int]:
    with session_factory(engine)() as session:
        return list(
            session.scalars(
                select(JobEpoch.epoch).where(JobEpoch.job_id == job_id).order_by(JobEpoch.epoch)
            )
        )


def running_past_epoch(engine: Engine, job_ids: list[str], epoch: int, count: int) -> Any:
    """A probe: the rows of ``count`` jobs running past ``epoch``, once there are that many."""

    def probe() -> list[dict[str, Any]] | None:
        rows = [job_row(engine, job_id) for job_id in job_ids]
        running = [r for r in rows if r["status"] == "running" and r["epoch"] >= epoch]
        return running if len(running) >= count else None

    return probe


def all_finished(engine: Engine, job_ids: list[str]) -> Any:
    def probe() -> bool:
        rows = [job_row(engine, job_id) for job_id in job_ids]
        return all(r["status"] in ("succeeded", "failed", "cancelled") for r in rows)

    return probe


def assert_problem_503(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["retry-after"] == "5"
    body = response.json()
    assert (body["type"], body["status"]) == ("/problems/service-unavailable", 503)
    assert body["detail"].startswith("The database is unreachable (OperationalError)")


def test_postgres_restart_shorter_than_the_lease_costs_no_attempt_and_no_epoch(
    private_postgres: PrivatePostgres,
    private_postgres_url: str,
    engine: Engine,
    tmp_path: Path,
) -> None:
    url = private_postgres_url
    env = {"BATCHWISE_LEASE_SECONDS": "10"}  # outlasts the outage
    with (
        run_server(database_url=url, data_dir=tmp_path / "api") as base,
        httpx.Client(base_url=base, timeout=5) as client,  # a hung request fails the test
    ):
        dataset_id = upload_long_job_data(client)
        job_ids = [submit_http(client, dataset_id, seed) for seed in SEEDS]
        with workers(url, worker_dir(tmp_path), count=2, env=env) as started:
            running = wait_for(
                running_past_epoch(engine, job_ids, 2, count=2), what="two jobs mid-run"
            )

            private_postgres.stop("fast")
            stopped = time.monotonic()
            assert_problem_503(client.get(f"/v1/jobs/{job_ids[0]}"))
            assert_problem_503(client.post("/v1/jobs", json={"dataset_id": dataset_id}))
            readiness = client.get("/readyz")
            assert readiness.status_code == 503
            assert readiness.json()["detail"].startswith("The database is unreachable")
            time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - stopped)))
            assert all(w.process.poll() is None for w in started)  # nobody crashed meanwhile
            private_postgres.start()

            back = client.get(f"/v1/jobs/{job_ids[0]}")  # the pool's dead connections: replaced
            assert back.status_code == 200, back.text
            assert client.get("/readyz").status_code == 200
            listed = client.get("/v1/jobs").json()["items"]
            assert sorted(job["id"] for job in listed) == sorted(job_ids)  # the 503 made none
            wait_for(all_finished(engine, job_ids), timeout=60, what="every job to finish")
            assert all(w.process.poll() is None for w in started)  # they survived the outage
            outputs = [w.output() for w in started]
        listed = [client.get(f"/v1/jobs/{job_id}").json() for job_id in job_ids]

    assert [job["status"] for job in listed] == ["succeeded"] * len(SEEDS)
    # Both workers were mid-job when the server went: each retried an epoch's write until
    # the server was back, and gave nothing up.
    interrupted = {worker_pid(row["worker_id"]) for row in running}
    assert interrupted == {w.pid for w in started}
    for output in outputs:
        assert "cannot record epoch" in output
        assert "the database is back; record epoch" in output
        assert "given up" not in output
    # Exactly once each: one claim, attempt 1, epochs 1…E stored once, the reference bytes.
    assert sorted(claims(*started)) == sorted(job_ids)
    assert [job_row(engine, job_id)["attempt"] for job_id in job_ids] == [1] * len(SEEDS)
    for job_id, seed in zip(job_ids, SEEDS, strict=True):
        assert stored_epochs(engine, job_id) == list(range(1, LONG_JOB["epochs"] + 1))
        assert tuple(history(engine, job_id)) == long_job_history(seed)


def test_postgres_outage_past_the_lease_gives_jobs_up_and_they_resume_identically(
    private_postgres: PrivatePostgres,
    private_postgres_url: str,
    engine: Engine,
    tmp_path: Path,
) -> None:
    url = private_postgres_url
    lease_s = 1.0
    env = {"BATCHWISE_LEASE_SECONDS": f"{lease_s}"}
    seeds = SEEDS[:2]
    with (
        run_server(database_url=url, data_dir=tmp_path / "api") as base,
        httpx.Client(base_url=base, timeout=5) as client,
    ):
        dataset_id = upload_long_job_data(client)
        job_ids = [submit_http(client, dataset_id, seed) for seed in seeds]
    with workers(url, worker_dir(tmp_path), count=2, env=env) as started:
        running = wait_for(running_past_epoch(engine, job_ids, 2, count=2), what="both mid-run")
        private_postgres.stop("fast")
        # Long past the lease: each worker gives its job up and goes back to polling.
        wait_for(
            lambda: all(f"given up ({UNREACHABLE}" in w.output() for w in started),
            timeout=10 * lease_s,
            what="both workers to give their jobs up",
        )
        assert all(w.process.poll() is None for w in started)
        private_postgres.start()
        wait_for(all_finished(engine, job_ids), timeout=60, what="every job to finish")
        assert all(w.process.poll() is None for w in started)
        outputs = [w.output() for w in started]

    rows = [job_row(engine, job_id) for job_id in job_ids]
    assert [(r["status"], r["attempt"]) for r in rows] == [("succeeded", 2)] * 2
    assert {worker_pid(r["worker_id"]) for r in running} == {w.pid for w in started}
    assert sorted(claims(*started)) == sorted(job_ids * 2)  # each claimed again once
    for output in outputs:
        assert f"given up ({UNREACHABLE}" in output
    assert sum(output.count("resumes after epoch") for output in outputs) == 2
    for job_id, seed in zip(job_ids, seeds, strict=True):
        assert stored_epochs(engine, job_id) == list(range(1, LONG_JOB["epochs"] + 1))
        assert tuple(history(engine, job_id)) == long_job_history(seed)
