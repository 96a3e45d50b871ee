"""The sweeps' SQL: insert, read, lock, list, attach point jobs, cancel their unfinished jobs.

Functions flush, never commit: the caller's boundary (the request, or the worker's finish
transaction) owns the transaction. Point jobs are inserted by :mod:`service.jobs.service`
(the same validation and row as ``POST /v1/jobs``) and then attached here.

Locking: :func:`lock` is ``SELECT … FOR UPDATE`` on PostgreSQL, so two workers finishing a
sweep's last two jobs at once take turns in ``advance`` and the second sees the first's finish
(READ COMMITTED reads afresh after the lock). SQLite has one writer at a time already.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from service.db import Job, JobEpoch, is_sqlite, owned
from service.db.tables import Sweep
from service.jobs import repository as jobs_repository
from service.pagination import newest_first

#: Job statuses that still need work.
UNFINISHED = ("queued", "running")


def add(session: Session, sweep: Sweep) -> None:
    """Insert a sweep row (in the caller's transaction)."""
    session.add(sweep)
    session.flush()


def get(session: Session, sweep_id: str, *, tenant: str) -> Sweep | None:
    """``tenant``'s sweep with ``sweep_id``, read afresh, or ``None``."""
    return session.scalars(
        select(Sweep)
        .where(owned(Sweep, sweep_id, tenant))
        .execution_options(populate_existing=True)
    ).one_or_none()


def lock(session: Session, sweep_id: str) -> Sweep | None:
    """The sweep, read afresh and locked for the rest of the transaction (PostgreSQL row
    lock; SQLite's write lock is the caller's first write), or ``None``. Any tenant's: the
    worker advances every sweep, and a request locks only a sweep it has read as its own."""
    query = select(Sweep).where(Sweep.id == sweep_id).execution_options(populate_existing=True)
    if not is_sqlite(session.get_bind().engine.url):
        query = query.with_for_update()
    return session.scalars(query).one_or_none()


def list_page(
    session: Session, *, tenant: str, limit: int, after: tuple[datetime, str] | None = None
) -> list[Sweep]:
    """Up to ``limit`` of ``tenant``'s sweeps, newest first (``created_at`` desc, ``id``
    desc), strictly after the keyset position ``after = (created_at, id)``."""
    query = select(Sweep).where(Sweep.tenant == tenant)
    query = newest_first(query, Sweep.created_at, Sweep.id, limit=limit, after=after)
    return list(session.scalars(query))


def attach_job(session: Session, job_id: str, sweep_id: str, point: dict[str, Any]) -> None:
    """Mark a just-submitted job as the sweep's point ``point`` ({batch_size, learning_rate,
    seed, round})."""
    session.execute(
        update(Job)
        .where(Job.id == job_id)
        .values(sweep_id=sweep_id, sweep_point=point)
        .execution_options(synchronize_session=False)
    )
    session.flush()


def jobs_of(session: Session, sweep_id: str) -> list[Job]:
    """Every job of the sweep, read afresh, oldest first."""
    return list(
        session.scalars(
            select(Job)
            .where(Job.sweep_id == sweep_id)
            .order_by(Job.created_at, Job.id)
            .execution_options(populate_existing=True)
        )
    )


def sweep_of_job(session: Session, job_id: str) -> str | None:
    """The id of the sweep the job belongs to, or ``None``."""
    return session.scalar(select(Job.sweep_id).where(Job.id == job_id))


def count_unfinished(session: Session, sweep_id: str) -> int:
    """How many of the sweep's jobs are queued or running."""
    return (
        session.scalar(
            select(func.count())
            .select_from(Job)
            .where(Job.sweep_id == sweep_id, Job.status.in_(UNFINISHED))
        )
        or 0
    )


def epoch_records(
    session: Session, job_ids: list[str]
) -> dict[str, list[tuple[int, dict[str, Any], bytes]]]:
    """``{job_id: [(epoch, record, step_losses), …]}`` in epoch order, for every job given."""
    out: dict[str, list[tuple[int, dict[str, Any], bytes]]] = {job_id: [] for job_id in job_ids}
    if not job_ids:
        return out
    rows = session.execute(
        select(JobEpoch.job_id, JobEpoch.epoch, JobEpoch.record, JobEpoch.step_losses)
        .where(JobEpoch.job_id.in_(job_ids))
        .order_by(JobEpoch.job_id, JobEpoch.epoch)
    )
    for job_id, epoch, record, losses in rows:
        out[job_id].append((int(epoch), record, bytes(losses)))
    return out


def cancel_unfinished_jobs(
    session: Session, sweep_id: str, *, now: datetime, skip_locked: bool = False
) -> int:
    """The sweep's jobs, cancelled: :func:`service.jobs.repository.cancel_unfinished`."""
    return jobs_repository.cancel_unfinished(
        session, Job.sweep_id == sweep_id, now=now, skip_locked=skip_locked
    )


def set_state(session: Session, sweep: Sweep, **values: Any) -> None:
    """Write ``values`` (status, round, lr_state, error_message, finished_at) to the sweep."""
    for key, value in values.items():
        setattr(sweep, key, value)
    session.flush()


__all__ = [
    "UNFINISHED",
    "add",
    "attach_job",
    "cancel_unfinished_jobs",
    "count_unfinished",
    "epoch_records",
    "get",
    "jobs_of",
    "list_page",
    "lock",
    "set_state",
    "sweep_of_job",
]
