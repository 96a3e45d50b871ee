"""The worker's failure paths and plumbing, on both databases: a corrupt dataset, a config the
core refuses, the dataset cache, the BLAS thread cap, the ``worker`` command's refusals, and
the workers ``serve`` embeds.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

import httpx
import numpy as np
import pytest
from sqlalchemy import Engine, update

from service.cli import main
from service.config import Settings
from service.core import TrainConfig
from service.db import session_factory
from service.db.tables import DatasetChunk, Job
from service.worker import BLAS_THREAD_VARIABLES, blas_thread_env
from service.worker.cache import DatasetCache
from service.worker.loop import EXIT_OK, run_worker
from service.worker.signals import StopFlag
from tests.support.factories import add_dataset, regression_data, submit
from tests.support.processes import REPO_ROOT, run_batchwise, wait_for
from tests.support.stored import job_row

ServeProcess = Callable[..., AbstractContextManager[str]]


def run_queue_dry(settings: Settings) -> int:
    """Run a worker in this process until the queue is empty."""
    return run_worker(
        settings.model_copy(update={"lease_seconds": 5.0}), stop=StopFlag(), burst=True
    )


def test_corrupt_dataset_fails_the_job_with_dataset_corrupt(
    engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    X, y = regression_data(32)
    with session_factory(engine)() as session:
        dataset_id = add_dataset(session, X, y, tmp_path)
        job_id = submit(session, dataset_id, batch_size=8, epochs=1, commit=True)
        session.execute(
            update(DatasetChunk).where(DatasetChunk.dataset_id == dataset_id).values(data=b"x")
        )
        session.commit()

    assert run_queue_dry(settings) == EXIT_OK

    row = job_row(engine, job_id)
    assert (row["status"], row["error_code"]) == ("failed", "dataset_corrupt")
    assert "do not match the recorded size" in row["error_message"]
    assert not list((settings.data_dir / "cache").glob("*"))  # nothing half-written is kept


def test_config_the_core_refuses_fails_the_job_as_internal(
    engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    X, y = regression_data(32)
    with session_factory(engine)() as session:
        job_id = submit(
            session, add_dataset(session, X, y, tmp_path), batch_size=8, epochs=1, commit=True
        )
        # Past the API's checks (a row written by an older version, say): 64 > 32 rows.
        bad = TrainConfig(batch_size=64, epochs=1).to_dict()
        session.execute(update(Job).where(Job.id == job_id).values(config=bad))
        session.commit()

    assert run_queue_dry(settings) == EXIT_OK

    row = job_row(engine, job_id)
    assert (row["status"], row["error_code"]) == ("failed", "internal")
    assert row["error_message"].startswith("batch_size:")


def test_dataset_cache_fills_once_by_content_hash_and_memory_maps(
    engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    X, y = regression_data(40, n_features=2)
    cache = DatasetCache(settings.data_dir / "cache")
    with session_factory(engine)() as session:
        dataset_id = add_dataset(session, X, y, tmp_path)
        dataset, X_cached, y_cached = cache.open(session, dataset_id)
        path = cache.path_of(dataset.sha256)
        assert path.exists()
        assert isinstance(X_cached.base, np.memmap) or isinstance(X_cached, np.memmap)
        assert np.array_equal(X_cached, X)
        assert np.array_equal(y_cached, y)
        # A second open reads the file, not the database: drop the stored bytes to prove it.
        session.execute(
            update(DatasetChunk).where(DatasetChunk.dataset_id == dataset_id).values(data=b"")
        )
        _, X_again, _ = cache.open(session, dataset_id)
        assert np.array_equal(X_again, X)
        session.rollback()
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]


@pytest.mark.parametrize("numpy_first", [False, True], ids=["environment", "threadpoolctl"])
def test_blas_thread_cap_is_in_force_in_a_worker_process(numpy_first: bool) -> None:
    """Before NumPy loads the environment caps it; after, threadpoolctl (a runtime dependency,
    so never a warning that it is missing), as in ``batchwise worker``."""
    before = "import numpy\n" if numpy_first else ""
    code = before + (
        "from service.worker import cap_blas_threads\n"
        "cap_blas_threads(1)\n"
        "import numpy\n"
        "from threadpoolctl import threadpool_info\n"
        "print(sorted({pool['num_threads'] for pool in threadpool_info()}))\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in BLAS_THREAD_VARIABLES}
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=REPO_ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[1]"
    assert result.stderr == ""
    assert blas_thread_env(3) == dict.fromkeys(BLAS_THREAD_VARIABLES, "3")


def test_a_plain_worker_logs_no_warning(db_url: str, tmp_path: Path) -> None:
    """What ``serve`` embeds, as a new user runs it: the BLAS cap is applied (NumPy is loaded
    by then, so by threadpoolctl) without a warning about anything."""
    env = {"BATCHWISE_DATABASE_URL": db_url, "BATCHWISE_DATA_DIR": str(tmp_path)}
    result = run_batchwise("worker", "--burst", env=env)
    assert result.returncode == 0, result.stderr
    output = result.stdout + result.stderr
    assert "worker" in output  # it logged (at INFO), so a warning would show
    assert "WARNING" not in output
    assert "threadpoolctl" not in output


def test_worker_refuses_a_database_that_is_not_migrated(
    blank_db_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("BATCHWISE_DATABASE_URL", blank_db_url)
    monkeypatch.setenv("BATCHWISE_DATA_DIR", str(tmp_path))
    assert main(["worker", "--burst"]) == 1
    assert "run `batchwise migrate` first" in capsys.readouterr().err


def test_serve_runs_embedded_workers_and_stops_them_with_the_api(
    engine: Engine, settings: Settings, serve_process: ServeProcess
) -> None:
    X, y = regression_data(64)
    env = {
        "BATCHWISE_WORKERS": "2",
        "BATCHWISE_LEASE_SECONDS": "2",
        "BATCHWISE_POLL_SECONDS": "0.1",
    }
    url = settings.resolved_database_url
    with (
        serve_process(database_url=url, data_dir=settings.data_dir, env=env) as base,
        httpx.Client(base_url=base, timeout=30) as client,
    ):
        dataset = client.post("/v1/datasets", json={"X": X.tolist(), "y": y.tolist()}).json()
        job = client.post("/v1/jobs", json={"dataset_id": dataset["id"], "epochs": 2}).json()
        wait_for(
            lambda: client.get(f"/v1/jobs/{job['id']}").json()["status"] == "succeeded",
            what="the embedded worker to finish the job",
        )
    worker_pid = int(job_row(engine, job["id"])["worker_id"].split(":")[1])
    with pytest.raises(ProcessLookupError):  # stopped with the server, and reaped
        os.kill(worker_pid, 0)
