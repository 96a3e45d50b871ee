"""What the database holds for a job, read fresh: its row, its stored history (timing fields
aside, step losses as the exact stored bytes), and the history an uninterrupted in-process run
of the core stores, to compare with."""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import Engine, select, text
from sqlalchemy.exc import OperationalError

from service.core import TrainConfig, Training
from service.db import session_factory
from service.db.tables import Job, JobEpoch
from tests.support.factories import LONG_JOB, long_job_data

#: Timing fields differ between any two runs; everything else in a record is reproducible.
TIMING_FIELDS = ("wall_time_s", "samples_per_s")


def job_row(engine: Engine, job_id: str) -> dict[str, Any]:
    """Every column of the job's row, read fresh."""
    with session_factory(engine)() as session:
        job = session.get(Job, job_id)
        assert job is not None
        return {c.key: getattr(job, c.key) for c in Job.__table__.columns}


def status_is(engine: Engine, job_id: str, *statuses: str) -> Callable[[], dict[str, Any] | None]:
    """A probe: the job's row once its status is one of ``statuses``."""

    def probe() -> dict[str, Any] | None:
        row = job_row(engine, job_id)
        return row if row["status"] in statuses else None

    return probe


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


def reference_history(X: np.ndarray, y: np.ndarray, **config: Any) -> list[StoredEpoch]:
    """What an uninterrupted in-process run of the core stores for ``config``: the history
    every run of it must reproduce byte for byte."""
    training = Training(X, y, TrainConfig(**config), task="regression")
    return [
        StoredEpoch(
            record={k: v for k, v in r.to_dict().items() if k not in TIMING_FIELDS},
            step_losses=r.step_losses.astype("<f4").tobytes(),
        )
        for r in training
    ]


@functools.cache
def long_job_history(seed: int) -> tuple[StoredEpoch, ...]:
    """:func:`reference_history` of :data:`LONG_JOB` with ``seed``, computed once per run."""
    return tuple(reference_history(*long_job_data(), **LONG_JOB, seed=seed))
