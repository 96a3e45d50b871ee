"""Limits with real processes on both databases: worker processes keep a tenant at its running
limit while another tenant's job runs, a job without ``max_runtime_s`` is ended by the tenant
default (``failed``, ``time_limit``, its epochs kept), and a real ``batchwise serve`` refuses an
upload past the storage quota.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import Engine

from service.config import Settings
from service.datasets import service as datasets_service
from service.db import session_factory
from tests.support import factories
from tests.support.factories import regression_data
from tests.support.problems import assert_problem
from tests.support.processes import wait_for, workers
from tests.support.stored import history, job_row, status_is
from tests.support.tenants import ALPHA, BETA, api, csv_bytes, make_keys, spool_files, stored

#: An MLP (linear models take a fused fast path that runs an epoch in milliseconds): ~40 ms
#: an epoch on 20,000 rows, so a job runs for seconds.
LONG = {
    "model": "mlp",
    "hidden_layers": [64, 64],
    "batch_size": 8,
    "learning_rate": 0.005,
    "seed": 3,
}
LONG_ROWS = 20_000


def add_dataset(engine: Engine, tenant: str, n_rows: int, work_dir: Path) -> str:
    with session_factory(engine)() as session:
        return factories.add_dataset(session, *regression_data(n_rows), work_dir, tenant=tenant)


def submit(engine: Engine, tenant: str, dataset_id: str, **config: Any) -> str:
    with session_factory(engine)() as session:
        return factories.submit(session, dataset_id, tenant=tenant, commit=True, **config)


def test_workers_run_another_tenants_job_while_one_tenant_waits_at_its_limit(
    engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    long_data = add_dataset(engine, ALPHA, LONG_ROWS, tmp_path)
    small_data = add_dataset(engine, BETA, 200, tmp_path)
    # Alpha's two jobs are older than beta's: without the limit they would run first.
    alpha_first = submit(engine, ALPHA, long_data, **LONG, epochs=100)
    alpha_second = submit(engine, ALPHA, long_data, **LONG, epochs=2)
    beta_job = submit(engine, BETA, small_data, epochs=3)

    env = {"BATCHWISE_TENANT_MAX_RUNNING_JOBS": "1"}
    with workers(settings.resolved_database_url, settings.data_dir, 2, env=env):
        beta = wait_for(status_is(engine, beta_job, "succeeded"), timeout=60, what="beta's job")
        # Beta's job has run on the second worker while alpha's second job waited.
        waiting = job_row(engine, alpha_second)
        assert (waiting["status"], waiting["attempt"], waiting["started_at"]) == (
            "queued",
            0,
            None,
        )
        first = wait_for(status_is(engine, alpha_first, "succeeded"), timeout=120, what="alpha 1")
        second = wait_for(status_is(engine, alpha_second, "succeeded"), timeout=60, what="alpha 2")
    assert first["started_at"] < beta["finished_at"] < first["finished_at"]  # side by side
    assert second["started_at"] >= first["finished_at"]  # alpha's two never both running
    assert (first["attempt"], second["attempt"], beta["attempt"]) == (1, 1, 1)


def test_a_job_without_max_runtime_is_ended_by_the_tenant_default_keeping_its_epochs(
    engine: Engine, settings: Settings
) -> None:
    with api(settings, engine, max_job_runtime_s=1.0) as client:
        X, y = regression_data(LONG_ROWS)
        created = client.post(
            ALPHA, "/v1/datasets", json={"name": "long", "X": X.tolist(), "y": y.tolist()}
        )
        assert created.status_code == 201, created.text
        job = client.job(ALPHA, created.json()["id"], **LONG, epochs=1000)
    assert job["max_runtime_s"] == 1.0

    with workers(settings.resolved_database_url, settings.data_dir, burst=True) as (worker,):
        assert worker.wait(timeout=60) == 0

    row = job_row(engine, job["id"])
    assert (row["status"], row["error_code"]) == ("failed", "time_limit")
    assert row["error_message"].startswith("the job ran past its max_runtime_s of 1 s after ")
    stored_epochs = history(engine, job["id"])
    assert 1 <= row["epoch"] < 1000
    assert [e.record["epoch"] for e in stored_epochs] == list(range(1, row["epoch"] + 1))


def test_serve_refuses_an_upload_past_the_tenants_storage_quota(
    engine: Engine, settings: Settings, serve_process: Any
) -> None:
    size = datasets_service.canonical_size(50, 2)
    keys = make_keys(engine, ALPHA, BETA)
    env = {"BATCHWISE_AUTH": "on", "BATCHWISE_TENANT_MAX_STORED_BYTES": str(2 * size)}

    def upload(client: httpx.Client, tenant: str, seed: int) -> httpx.Response:
        return client.post(
            "/v1/datasets",
            files={"file": (f"d{seed}.csv", csv_bytes(50, seed=seed), "text/csv")},
            headers={"Authorization": f"Bearer {keys[tenant]}"},
        )

    with (
        serve_process(
            database_url=settings.resolved_database_url, data_dir=settings.data_dir, env=env
        ) as base_url,
        httpx.Client(base_url=base_url, timeout=30) as client,
    ):
        assert [upload(client, ALPHA, seed).status_code for seed in (1, 2)] == [201, 201]
        refused = upload(client, ALPHA, 3)
        problem = assert_problem(refused, 413, "/problems/storage-quota-exceeded")
        assert problem["detail"].startswith(
            f"Storing this dataset ({size} bytes) would bring your stored datasets to "
            f"{3 * size} bytes, over your quota of {2 * size} bytes "
            f"(BATCHWISE_TENANT_MAX_STORED_BYTES); {2 * size} bytes are in use."
        )
        listed = client.get(
            "/v1/datasets", headers={"Authorization": f"Bearer {keys[ALPHA]}"}
        ).json()
        assert len(listed["items"]) == 2
        assert upload(client, BETA, 4).status_code == 201  # beta's quota is its own
    after = stored(engine)
    assert after.datasets == {ALPHA: 2, BETA: 1}
    assert after.stored_bytes == {ALPHA: 2 * size, BETA: size}
    assert spool_files(settings) == []
