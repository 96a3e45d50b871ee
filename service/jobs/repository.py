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

from sqlalchemy import Row, and_, bindparam, delete, exists, func, literal, or_, select, update
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from service.db import Dataset, Job, JobCheckpoint, JobEpoch, JobModel, is_sqlite


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


# The hot reads (GET a job, its history) run these statements built once, on the tables:
# building a statement per call (and computing its cache key) and loading ORM objects into
# the identity map cost several times the SQLite lookup itself. Plain rows are read-only;
# their columns are attributes, as on a ``Job``.
_JOBS, _DATASETS, _EPOCHS = Job.__table__.c, Dataset.__table__.c, JobEpoch.__table__.c
#: A row of any columns, each read as an attribute (``row.status``).
PlainRow = Row[*tuple[Any, ...]]
_READ_JOB = select(Job.__table__).where(
    _JOBS.id == bindparam("job_id"), _JOBS.tenant == bindparam("tenant")
)
_READ_JOB_TASK = (
    select(_JOBS.id, _JOBS.dataset_id, _JOBS.status, _JOBS.config, _DATASETS.task)
    .select_from(Job.__table__.outerjoin(Dataset.__table__, _DATASETS.id == _JOBS.dataset_id))
    .where(_JOBS.id == bindparam("job_id"), _JOBS.tenant == bindparam("tenant"))
)
_EPOCH_ROWS = (
    select(_EPOCHS.epoch, _EPOCHS.record, _EPOCHS.step_losses)
    .where(_EPOCHS.job_id == bindparam("job_id"))
    .order_by(_EPOCHS.epoch)
)


def read(session: Session, job_id: str, *, tenant: str) -> PlainRow | None:
    """``tenant``'s job with ``job_id`` as a read-only row (every column of ``jobs``), or
    ``None``."""
    return session.execute(_READ_JOB, {"job_id": job_id, "tenant": tenant}).one_or_none()


def read_with_task(session: Session, job_id: str, *, tenant: str) -> PlainRow | None:
    """``(id, dataset_id, status, config, task)`` of ``tenant``'s job with ``job_id`` — ``task``
    its dataset's, ``None`` if the dataset is gone — or ``None`` if there is no such job."""
    return session.execute(_READ_JOB_TASK, {"job_id": job_id, "tenant": tenant}).one_or_none()


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
    rows = session.execute(_EPOCH_ROWS, {"job_id": job_id})
    return [(int(epoch), record, bytes(losses)) for epoch, record, losses in rows]


def model(session: Session, job_id: str) -> JobModel | None:
    """The fitted model of a job, or ``None``."""
    return session.get(JobModel, job_id)


#: The first key of the advisory lock that serialises one tenant's job inserts (PostgreSQL;
#: the second key is the tenant's ``hashtext``).
QUEUE_LOCK_NAMESPACE = 7102


def lock_tenant_queue(session: Session, tenant: str) -> None:
    """Hold ``tenant``'s queue lock until the transaction ends, so that concurrent submits of
    one tenant count its queued jobs one after the other, each seeing the ones before it.

    PostgreSQL only: a transaction-level advisory lock (two tenants whose names hash alike
    merely take turns). SQLite needs none: the job's insert, made before the count, takes the
    database's one write lock, held to the commit.
    """
    if is_sqlite(session.get_bind().engine.url):
        return
    session.execute(select(func.pg_advisory_xact_lock(QUEUE_LOCK_NAMESPACE, func.hashtext(tenant))))


def count_queued(session: Session, tenant: str) -> int:
    """How many of ``tenant``'s jobs are ``queued`` (the caller's own inserts included)."""
    count = session.scalar(
        select(func.count()).select_from(Job).where(Job.tenant == tenant, Job.status == "queued")
    )
    return int(count or 0)


__all__ = [
    "PlainRow",
    "add",
    "cancel_queued",
    "count_queued",
    "delete_finished",
    "epoch_rows",
    "get",
    "list_page",
    "lock_tenant_queue",
    "model",
    "read",
    "read_with_task",
    "request_cancel_running",
]
