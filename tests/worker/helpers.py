"""Plain helpers for the worker tests: datasets and jobs in the database, real worker
processes, polling, and histories to compare.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from sqlalchemy import Engine, select, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from service.datasets import service as datasets_service
from service.datasets.ingest import IngestLimits
from service.datasets.schemas import DatasetCreateJSON
from service.db import session_factory
from service.db.tables import Job, JobEpoch
from service.jobs import JobCreate
from service.jobs import service as jobs_service
from service.keys import DEFAULT_TENANT

REPO_ROOT = Path(__file__).resolve().parents[2]
#: Timing fields differ between any two runs; everything else in a record is reproducible.
TIMING_FIELDS = ("wall_time_s", "samples_per_s")
#: A short lease, so expiry-driven tests take about a second.
LEASE_SECONDS = "1"

T = TypeVar("T")


def regression_data(
    n_rows: int, n_features: int = 3, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """X (n, d) standard normal; y = X·w + 0.5 + small noise, w = (1, 2, …, d)."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n_rows, n_features))
    y = X @ np.arange(1.0, n_features + 1) + 0.5 + 0.1 * rng.standard_normal(n_rows)
    return X, y


def add_dataset(session: Session, X: np.ndarray, y: np.ndarray, work_dir: Path) -> str:
    """Store (X, y) as an inline dataset through the datasets service; commit; its id."""
    body = DatasetCreateJSON(name="toy", X=X.tolist(), y=y.tolist())
    limits = IngestLimits(max_rows=10**7, max_features=1000)
    dataset = datasets_service.create_from_inline(
        session, body, limits=limits, work_dir=work_dir, tenant=DEFAULT_TENANT
    )
    session.commit()
    return dataset.id


def submit(session: Session, dataset_id: str, **config: Any) -> str:
    """Queue a job through the jobs service (as the API does); commit; its id."""
    job = jobs_service.submit(
        session, JobCreate(dataset_id=dataset_id, **config), tenant=DEFAULT_TENANT
    )
    session.commit()
    return job.id


def job_row(engine: Engine, job_id: str) -> dict[str, Any]:
    """Every column of the job's row, read fresh."""
    with session_factory(engine)() as session:
        job = session.get(Job, job_id)
        assert job is not None
        return {c.key: getattr(job, c.key) for c in Job.__table__.columns}


@dataclass(frozen=True)
class StoredEpoch:
    """One stored epoch without its timing fields; ``step_losses`` the exact stored bytes."""

    record: dict[str, Any]
    step_losses: bytes


def history(engine: Engine, job_id: str) -> list[StoredEpoch]:
    """The job's stored epochs in order, timing fields dropped."""
    with session_factory(engine)() as session:
        rows = session.execute(
            select(JobEpoch).where(JobEpoch.job_id == job_id).order_by(JobEpoch.epoch)
        ).scalars()
        return [
            StoredEpoch(
                record={k: v for k, v in row.record.items() if k not in TIMING_FIELDS},
                step_losses=row.step_losses,
            )
            for row in rows
        ]


def write_locked(engine: Engine, job_id: str) -> bool:
    """Whether another process holds a write lock a claimer would wait on: SQLite's database
    write lock, or PostgreSQL's row lock on the job."""
    if engine.dialect.name == "sqlite":
        database = engine.url.database
        assert database is not None
        probe = sqlite3.connect(database, timeout=0.05, isolation_level=None)
        try:
            probe.execute("BEGIN IMMEDIATE")
            probe.execute("ROLLBACK")
            return False
        except sqlite3.OperationalError:
            return True
        finally:
            probe.close()
    with engine.connect() as connection:
        try:
            connection.execute(
                text("SELECT id FROM jobs WHERE id = :id FOR UPDATE NOWAIT"), {"id": job_id}
            )
            return False
        except OperationalError:
            return True
        finally:
            connection.rollback()


def wait_for(
    probe: Callable[[], T | None], *, timeout: float = 30.0, interval: float = 0.01, what: str = ""
) -> T:
    """Call ``probe`` until it returns something truthy; that value. AssertionError on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or probe}")
        time.sleep(interval)


def status_is(engine: Engine, job_id: str, *statuses: str) -> Callable[[], dict[str, Any] | None]:
    """A probe: the job's row once its status is one of ``statuses``."""

    def probe() -> dict[str, Any] | None:
        row = job_row(engine, job_id)
        return row if row["status"] in statuses else None

    return probe


def worker_env(
    database_url: str, data_dir: Path, extra: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The environment of a worker process: this test's database and data dir, a short lease,
    fast polling, none of the caller's other ``BATCHWISE_*`` variables."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BATCHWISE_")}
    env |= {
        "BATCHWISE_DATABASE_URL": database_url,
        "BATCHWISE_DATA_DIR": str(data_dir),
        "BATCHWISE_LEASE_SECONDS": LEASE_SECONDS,
        "BATCHWISE_POLL_SECONDS": "0.1",
        "PYTHONUNBUFFERED": "1",
    }
    return env | dict(extra or {})


class WorkerProcess:
    """A real ``python -m service worker`` process with its output in a log file."""

    def __init__(
        self,
        database_url: str,
        data_dir: Path,
        log_path: Path,
        *,
        burst: bool = False,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.log_path = log_path
        args = [sys.executable, "-m", "service", "worker"] + (["--burst"] if burst else [])
        with log_path.open("wb") as log:
            self.process = subprocess.Popen(
                args,
                env=worker_env(database_url, data_dir, env),
                cwd=REPO_ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    @property
    def pid(self) -> int:
        return self.process.pid

    def output(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def signal(self, signum: signal.Signals) -> None:
        self.process.send_signal(signum)

    def wait(self, timeout: float = 30.0) -> int:
        """The exit status; AssertionError with the output if it does not exit in time."""
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"worker {self.pid} still running after {timeout} s:\n{self.output()}"
            ) from None

    def stop(self) -> None:
        """SIGCONT (in case it is paused), SIGTERM, then SIGKILL after 10 s."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@contextmanager
def workers(
    database_url: str,
    data_dir: Path,
    count: int = 1,
    *,
    burst: bool = False,
    env: Mapping[str, str] | None = None,
) -> Iterator[list[WorkerProcess]]:
    """``count`` worker processes, stopped at exit; their output is printed for failed tests."""
    started = [
        WorkerProcess(
            database_url,
            data_dir,
            data_dir / f"worker-{uuid.uuid4().hex[:8]}.log",
            burst=burst,
            env=env,
        )
        for _ in range(count)
    ]
    try:
        yield started
    finally:
        for worker in started:
            worker.stop()
        for worker in started:
            print(f"--- worker {worker.pid} (exit {worker.process.returncode}) ---")
            print(worker.output())
