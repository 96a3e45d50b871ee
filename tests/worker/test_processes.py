"""Real worker processes (``python -m service worker``) on both databases: the job lifecycle,
cancellation, crashes (kill -9), pauses past the lease (SIGSTOP), graceful shutdown (SIGTERM),
and several workers racing over one queue.

Jobs are queued through the jobs service (as the API does) or the HTTP API; leases are 1 s so
expiry takes about a second. Histories are compared as stored: every record field but the
timing ones, and the step losses' exact bytes.
"""

from __future__ import annotations

import re
import signal
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from sqlalchemy import Engine, func, select

from service.config import Settings
from service.db import session_factory, utcnow
from service.db.tables import JobEpoch, JobModel
from service.jobs import service as jobs_service
from service.keys import DEFAULT_TENANT
from service.worker.loop import EXIT_LEASE_LOST, EXIT_OK
from tests.support.factories import (
    LONG_JOB_ROWS,
    SIGNALLED_JOB,
    add_dataset,
    regression_data,
    submit,
)
from tests.support.processes import ServeProcess, WorkerProcess, wait_for, workers
from tests.support.stored import (
    history,
    job_row,
    reference_history,
    status_is,
    write_locked,
)


def epoch_at_least(engine: Engine, job_id: str, epoch: int) -> Any:
    def probe() -> dict[str, Any] | None:
        row = job_row(engine, job_id)
        return row if row["epoch"] >= epoch else None

    return probe


def epoch_count(engine: Engine, job_id: str) -> int:
    with session_factory(engine)() as session:
        return int(
            session.scalar(
                select(func.count()).select_from(JobEpoch).where(JobEpoch.job_id == job_id)
            )
            or 0
        )


def pause_between_writes(worker: WorkerProcess, engine: Engine, job_id: str) -> None:
    """SIGSTOP ``worker`` at a moment it holds no write lock.

    A process stopped inside a write transaction blocks every writer (SQLite) or hides the
    job's row from claimers (PostgreSQL) until it resumes: no lease helps there, so this test
    pauses it between writes, as a process usually is (its transactions take milliseconds).
    """
    for _ in range(50):
        worker.signal(signal.SIGSTOP)
        if not write_locked(engine, job_id):
            return
        worker.signal(signal.SIGCONT)
        time.sleep(0.013)
    raise AssertionError("the worker held a write lock at each of 50 pauses")


@pytest.fixture
def long_data() -> tuple[np.ndarray, np.ndarray]:
    return regression_data(LONG_JOB_ROWS)


def submit_signalled_job(
    engine: Engine, data: tuple[np.ndarray, np.ndarray], work_dir: Path
) -> str:
    """A committed ``SIGNALLED_JOB`` on a new dataset of ``data``; its id."""
    with session_factory(engine)() as session:
        return submit(session, add_dataset(session, *data, work_dir), **SIGNALLED_JOB, commit=True)


def lease_expired(engine: Engine, job_id: str) -> Any:
    """A probe for ``wait_for``: whether the job's lease has run out."""
    return lambda: job_row(engine, job_id)["lease_expires_at"] < utcnow()


def test_upload_job_poll_history_model_predict_through_the_api(
    settings: Settings, serve_process: ServeProcess
) -> None:
    """The product's main path over HTTP, with the seed example's two batch sizes; two jobs
    of one config and seed store identical histories and predict identically."""
    X, y = regression_data(512)
    url = settings.resolved_database_url
    with (
        serve_process(database_url=url, data_dir=settings.data_dir) as base,
        httpx.Client(base_url=base, timeout=30) as client,
    ):
        created = client.post(
            "/v1/datasets", json={"name": "toy", "X": X.tolist(), "y": y.tolist()}
        )
        assert created.status_code == 201, created.text
        dataset_id = created.json()["id"]
        configs = [
            {"batch_size": 32, "epochs": 10, "seed": 7},
            {"batch_size": 128, "epochs": 5, "seed": 7},
            {"batch_size": 32, "epochs": 10, "seed": 7},  # the first again
        ]
        job_ids = []
        for config in configs:
            response = client.post("/v1/jobs", json={"dataset_id": dataset_id, **config})
            assert response.status_code == 202, response.text
            assert response.json()["status"] == "queued"
            job_ids.append(response.json()["id"])

        with workers(url, settings.data_dir, count=2):
            for job_id in job_ids:
                wait_for(
                    lambda job_id=job_id: (
                        client.get(f"/v1/jobs/{job_id}").json()["status"] in ("succeeded", "failed")
                    ),
                    what=f"job {job_id} to finish",
                )

        jobs = [client.get(f"/v1/jobs/{job_id}").json() for job_id in job_ids]
        assert [job["status"] for job in jobs] == ["succeeded"] * 3
        histories = [client.get(f"/v1/jobs/{job_id}/history").json() for job_id in job_ids]
        for history_body, config in zip(histories, configs, strict=True):
            assert history_body["epoch"] == list(range(1, config["epochs"] + 1))
            steps_per_epoch = -(-512 // config["batch_size"])
            assert len(history_body["steps"]["loss"]) == config["epochs"] * steps_per_epoch
        for field in ("train_loss", "batch_size", "samples_seen", "steps"):
            assert histories[0][field] == histories[2][field]
        expected = reference_history(X, y, **configs[0])
        assert histories[0]["train_loss"] == [e.record["train_loss"] for e in expected]
        assert histories[1]["batch_size"] == [128] * 5

        probe = {"X": X[:4].tolist()}
        predictions = [
            client.post(f"/v1/jobs/{job_id}/predict", json=probe).json()["predictions"]
            for job_id in job_ids
        ]
        assert predictions[0] == predictions[2]
        assert np.allclose(predictions[0], y[:4], atol=0.5)  # y = X·w + 0.5 is learnt
        model = client.get(f"/v1/jobs/{job_ids[0]}/model")
        assert model.status_code == 200


def test_status_transitions_and_cancel_of_a_queued_and_a_running_job(
    engine: Engine, settings: Settings, tmp_path: Path, long_data: tuple[np.ndarray, np.ndarray]
) -> None:
    X, y = long_data
    url = settings.resolved_database_url
    with session_factory(engine)() as session:
        dataset_id = add_dataset(session, X, y, tmp_path)
        running_id = submit(session, dataset_id, **{**SIGNALLED_JOB, "epochs": 1000}, commit=True)
        queued_id = submit(session, dataset_id, batch_size=64, epochs=2, commit=True)
    assert job_row(engine, queued_id)["status"] == "queued"

    with workers(url, settings.data_dir) as (worker,):
        wait_for(epoch_at_least(engine, running_id, 1), what="the first epoch")
        assert job_row(engine, running_id)["status"] == "running"

        with session_factory(engine)() as session:
            queued = jobs_service.cancel(session, queued_id, tenant=DEFAULT_TENANT)
            assert queued.status == "cancelled"  # at once
            session.commit()
            jobs_service.cancel(session, running_id, tenant=DEFAULT_TENANT)
            session.commit()
        cancelled = wait_for(status_is(engine, running_id, "cancelled", "failed"), what="cancel")
        assert worker.process.poll() is None  # cancelling a job does not stop the worker

    queued = job_row(engine, queued_id)
    assert (queued["status"], queued["attempt"], queued["started_at"]) == ("cancelled", 0, None)
    assert cancelled["status"] == "cancelled"
    assert cancelled["error_code"] is None
    assert cancelled["finished_at"] is not None
    assert 1 <= cancelled["epoch"] < 1000
    assert epoch_count(engine, running_id) == cancelled["epoch"]  # what was done is kept


def test_diverged_and_time_limited_jobs_fail_keeping_their_finite_epochs(
    engine: Engine, settings: Settings, tmp_path: Path, long_data: tuple[np.ndarray, np.ndarray]
) -> None:
    X, y = regression_data(256)
    with session_factory(engine)() as session:
        small_id = add_dataset(session, X, y, tmp_path)
        long_id = add_dataset(session, *long_data, tmp_path)
        diverging = submit(
            session, small_id, learning_rate=1.0, batch_size=64, epochs=30, commit=True
        )
        limited = submit(
            session, long_id, **{**SIGNALLED_JOB, "epochs": 1000}, max_runtime_s=0.3, commit=True
        )
        fine = submit(session, small_id, batch_size=64, epochs=3, commit=True)

    with workers(settings.resolved_database_url, settings.data_dir, burst=True) as (worker,):
        assert worker.wait() == EXIT_OK

    diverged = job_row(engine, diverging)
    assert (diverged["status"], diverged["error_code"]) == ("failed", "diverged")
    assert "training diverged at epoch 15, step 2" in diverged["error_message"]
    stored = history(engine, diverging)
    assert [e.record["epoch"] for e in stored] == list(range(1, 15))
    assert all(np.isfinite(np.frombuffer(e.step_losses, "<f4")).all() for e in stored)
    assert stored == reference_history(X, y, learning_rate=1.0, batch_size=64, epochs=14)

    timed_out = job_row(engine, limited)
    assert (timed_out["status"], timed_out["error_code"]) == ("failed", "time_limit")
    assert "max_runtime_s of 0.3 s" in timed_out["error_message"]
    assert epoch_count(engine, limited) == timed_out["epoch"] < 1000

    assert job_row(engine, fine)["status"] == "succeeded"
    with session_factory(engine)() as session:
        models = set(session.scalars(select(JobModel.job_id)))
    assert models == {fine}  # only a succeeded job has a model


def test_sigterm_releases_the_job_and_the_next_claim_resumes_it_identically(
    engine: Engine, settings: Settings, tmp_path: Path, long_data: tuple[np.ndarray, np.ndarray]
) -> None:
    url = settings.resolved_database_url
    job_id = submit_signalled_job(engine, long_data, tmp_path)

    with workers(url, settings.data_dir) as (first,):
        wait_for(epoch_at_least(engine, job_id, 2), what="two epochs")
        first.signal(signal.SIGTERM)
        assert first.wait() == EXIT_OK
    released = job_row(engine, job_id)
    assert (released["status"], released["attempt"], released["worker_id"]) == ("queued", 1, None)
    assert 2 <= released["epoch"] < SIGNALLED_JOB["epochs"]
    assert epoch_count(engine, job_id) == released["epoch"]

    with workers(url, settings.data_dir, burst=True) as (second,):
        assert second.wait() == EXIT_OK
    finished = job_row(engine, job_id)
    assert (finished["status"], finished["attempt"]) == ("succeeded", 2)
    assert history(engine, job_id) == reference_history(*long_data, **SIGNALLED_JOB)


def test_killed_worker_job_is_recovered_by_another_with_an_identical_history(
    engine: Engine, settings: Settings, tmp_path: Path, long_data: tuple[np.ndarray, np.ndarray]
) -> None:
    url = settings.resolved_database_url
    with session_factory(engine)() as session:
        dataset_id = add_dataset(session, *long_data, tmp_path)
        job_id = submit(session, dataset_id, **SIGNALLED_JOB, commit=True)
        uninterrupted_id = submit(session, dataset_id, **SIGNALLED_JOB, commit=True)

    with workers(url, settings.data_dir) as (victim,):
        wait_for(epoch_at_least(engine, job_id, 2), what="two epochs")
        victim.signal(signal.SIGKILL)
        assert victim.wait() == -signal.SIGKILL
    orphan = job_row(engine, job_id)
    assert orphan["status"] == "running"  # nobody released it: the lease has to expire
    assert orphan["epoch"] < SIGNALLED_JOB["epochs"]
    # A burst worker stops at an empty queue, and the orphan is claimable only once its lease
    # has run out (the victim may have run the other job first: their created_at can tie).
    wait_for(
        lease_expired(engine, job_id),
        timeout=10,
        what="the killed worker's lease to expire",
    )

    with workers(url, settings.data_dir, burst=True) as (rescuer,):
        # It may run both long jobs; the timeout is a hang guard, not a bound on their time.
        assert rescuer.wait(timeout=120) == EXIT_OK
    recovered = job_row(engine, job_id)
    assert (recovered["status"], recovered["attempt"]) == ("succeeded", 2)
    assert job_row(engine, uninterrupted_id)["attempt"] == 1
    assert history(engine, job_id) == history(engine, uninterrupted_id)
    assert len(history(engine, job_id)) == SIGNALLED_JOB["epochs"]
    assert "resumes after epoch" in rescuer.output()


def test_paused_worker_loses_its_job_to_another_then_writes_nothing_and_exits(
    engine: Engine, settings: Settings, tmp_path: Path, long_data: tuple[np.ndarray, np.ndarray]
) -> None:
    url = settings.resolved_database_url
    job_id = submit_signalled_job(engine, long_data, tmp_path)

    with workers(url, settings.data_dir) as (paused,):
        wait_for(epoch_at_least(engine, job_id, 2), what="two epochs")
        pause_between_writes(paused, engine, job_id)
        wait_for(
            lease_expired(engine, job_id),
            timeout=10,
            what="the paused worker's lease to expire",
        )
        with workers(url, settings.data_dir, burst=True) as (other,):
            # The paused worker's lease runs out; the other claims the job and finishes it.
            assert other.wait() == EXIT_OK
        done = job_row(engine, job_id)
        assert (done["status"], done["attempt"]) == ("succeeded", 2)
        stored = history(engine, job_id)

        paused.signal(signal.SIGCONT)
        assert paused.wait() == EXIT_LEASE_LOST
    assert job_row(engine, job_id) == done
    assert history(engine, job_id) == stored == reference_history(*long_data, **SIGNALLED_JOB)
    assert "lease" in paused.output()


@pytest.mark.parametrize("n_workers", [2, 4])
def test_racing_workers_run_each_of_50_jobs_exactly_once(
    engine: Engine, settings: Settings, tmp_path: Path, n_workers: int
) -> None:
    """Claims race, never leases: a lease of 10 s outlasts any stall a loaded machine gives a
    worker, so a second claim of a job could only come from a claim that was not exclusive
    (a 1 s lease is lost, rightly, by a worker that a busy neighbour starves for a second)."""
    X, y = regression_data(64)
    with session_factory(engine)() as session:
        dataset_id = add_dataset(session, X, y, tmp_path)
        job_ids = [
            submit(session, dataset_id, batch_size=16, epochs=2, seed=i, commit=True)
            for i in range(50)
        ]

    with workers(
        settings.resolved_database_url,
        settings.data_dir,
        count=n_workers,
        burst=True,
        env={"BATCHWISE_LEASE_SECONDS": "10"},
    ) as racers:
        # Generous: 50 small jobs take seconds, but minutes on a machine loaded many times over.
        assert [racer.wait(timeout=180) for racer in racers] == [EXIT_OK] * n_workers
        claims = [
            job_id
            for racer in racers
            for job_id in re.findall(r"claimed job (\S+) \(attempt", racer.output())
        ]

    assert sorted(claims) == sorted(job_ids)  # each claimed once, by one worker
    rows = [job_row(engine, job_id) for job_id in job_ids]
    assert {(row["status"], row["attempt"], row["epoch"]) for row in rows} == {("succeeded", 1, 2)}
    assert all(epoch_count(engine, job_id) == 2 for job_id in job_ids)
