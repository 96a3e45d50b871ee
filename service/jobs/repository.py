"""The request side's SQL about jobs: insert, read, list, cancel, delete; read epochs and models.

Functions flush, never commit: the request boundary owns the transaction. State changes are
single conditional statements (``UPDATE … WHERE status = 'queued'``), so a worker claiming the
same job at the same moment either sees the change or makes the statement match nothing; the
request side never takes a lease and never writes epochs (that is :mod:`service.jobs.queue`).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import and_, delete, exists, func, literal, or_, select, update
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from service.db import Job, JobCheckpoint, JobEpoch, JobModel


def add(session: Session, job: Job) -> None:
    """Insert a job row (in the caller's transaction: a failed request leaves no job)."""
    session.add(job)
    session.flush()


def _owned(job_id: str, tenant: str) -> ColumnElement[bool]:
    return and_(Job.id == job_id, Job.tenant == tenant)


def get(session: Session, job_id: str, *, tenant: str) -> Job | None:
    """``tenant``'s job with ``job_id``, read afresh from the database, or ``None``."""
    return session.scalars(
        select(Job).where(_owned(job_id, tenant)).execution_options(populate_existing=True)
    ).one_or_none()


def _has_tag(session: Session, tag: str) -> ColumnElement[bool]:
    if session.get_bind().dialect.name == "postgresql":
        # jobs.tags is JSON (not JSONB): cast to use JSONB containment, tags @> '["tag"]'.
        contains: ColumnElement[bool] = Job.tags.cast(JSONB).contains([tag])
        return contains
    # SQLite: EXISTS (SELECT 1 FROM json_each(jobs.tags) WHERE value = :tag)
    each = func.json_each(Job.tags).table_valued("value")
    return exists(select(literal(1)).select_from(each).where(each.c.value == tag))


def list_page(
    session: Session,
    *,
    tenant: str,
    limit: int,
    after: tuple[datetime, str] | None = None,
    status: str | None = None,
    dataset_id: str | None = None,
    tag: str | None = None,
) -> list[Job]:
    """Up to ``limit`` of ``tenant``'s jobs, newest first (``created_at`` desc, ``id`` desc to
    break ties), strictly after the keyset position ``after = (created_at, id)``, matching every
    filter."""
    query = (
        select(Job)
        .where(Job.tenant == tenant)
        .order_by(Job.created_at.desc(), Job.id.desc())
        .limit(limit)
    )
    if after is not None:
        created_at, job_id = after
        query = query.where(
            or_(Job.created_at < created_at, and_(Job.created_at == created_at, Job.id < job_id))
        )
    if status is not None:
        query = query.where(Job.status == status)
    if dataset_id is not None:
        query = query.where(Job.dataset_id == dataset_id)
    if tag is not None:
        query = query.where(_has_tag(session, tag))
    return list(session.scalars(query))


def cancel_queued(session: Session, job_id: str, *, tenant: str, now: datetime) -> bool:
    """Cancel ``tenant``'s job if it is still queued; whether it was."""
    result = session.execute(
        update(Job)
        .where(_owned(job_id, tenant), Job.status == "queued")
        .values(status="cancelled", cancel_requested=True, finished_at=now)
        .execution_options(synchronize_session=False)
    )
    session.flush()
    return bool(getattr(result, "rowcount", 0))


def request_cancel_running(session: Session, job_id: str, *, tenant: str) -> bool:
    """Flag ``tenant``'s running job for its worker to stop; whether it was running."""
    result = session.execute(
        update(Job)
        .where(_owned(job_id, tenant), Job.status == "running")
        .values(cancel_requested=True)
        .execution_options(synchronize_session=False)
    )
    session.flush()
    return bool(getattr(result, "rowcount", 0))


def delete_finished(session: Session, job_id: str, finished: Sequence[str], *, tenant: str) -> bool:
    """Delete ``tenant``'s job and everything it owns if its status is in ``finished``; whether
    it was.

    The children go explicitly too, not only by ON DELETE CASCADE, so the delete does not
    depend on a connection setting (SQLite's ``foreign_keys``).
    """
    result = session.execute(
        delete(Job)
        .where(_owned(job_id, tenant), Job.status.in_(finished))
        .execution_options(synchronize_session=False)
    )
    if not getattr(result, "rowcount", 0):
        return False
    for child in (JobEpoch, JobCheckpoint, JobModel):
        session.execute(delete(child).where(child.job_id == job_id))
    session.flush()
    return True


def epoch_rows(session: Session, job_id: str) -> list[tuple[int, dict[str, Any], bytes]]:
    """``(epoch, record, step_losses)`` of every stored epoch of a job, in epoch order."""
    rows = session.execute(
        select(JobEpoch.epoch, JobEpoch.record, JobEpoch.step_losses)
        .where(JobEpoch.job_id == job_id)
        .order_by(JobEpoch.epoch)
    )
    return [(int(epoch), record, bytes(losses)) for epoch, record, losses in rows]


def model(session: Session, job_id: str) -> JobModel | None:
    """The fitted model of a job, or ``None``."""
    return session.get(JobModel, job_id)


__all__ = [
    "add",
    "cancel_queued",
    "delete_finished",
    "epoch_rows",
    "get",
    "list_page",
    "model",
    "request_cancel_running",
]
