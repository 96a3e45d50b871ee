"""The request side's SQL about jobs: insert, read, list, cancel, delete; read epochs and models.

Functions flush, never commit: the request boundary owns the transaction. State changes are
single conditional statements (``UPDATE … WHERE status = 'queued'``), so a worker claiming the
same job at the same moment either sees the change or makes the statement match nothing; the
request side never takes a lease and never writes epochs (that is :mod:`service.jobs.queue`).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import bindparam, delete, exists, func, literal, select, update
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from service.db import Dataset, Job, JobCheckpoint, JobEpoch, JobModel, is_sqlite, owned
from service.pagination import newest_first


def add(session: Session, job: Job) -> None:
    """Insert a job row (in the caller's transaction: a failed request leaves no job)."""
    session.add(job)
    session.flush()


def get(session: Session, job_id: str, *, tenant: str) -> Job | None:
    """``tenant``'s job with ``job_id``, read afresh from the database, or ``None``."""
    return session.scalars(
        select(Job).where(owned(Job, job_id, tenant)).execution_options(populate_existing=True)
    ).one_or_none()


class JobView(NamedTuple):
    """A job as the read side shows it: the columns of ``jobs`` that make a ``JobRead``,
    read-only and typed, whether read by :func:`read` and :func:`list_page` or taken from a
    ``Job`` the request holds (:meth:`of`)."""

    id: str
    dataset_id: str
    name: str | None
    tags: list[str]
    status: str
    cancel_requested: bool
    config: dict[str, Any]
    max_runtime_s: float | None
    epoch: int
    epochs: int
    step: int
    steps_per_epoch: int | None
    samples_seen: int
    latest_train_loss: float | None
    latest_val_loss: float | None
    best_train_loss: float | None
    best_val_loss: float | None
    error_code: str | None
    error_message: str | None
    attempt: int
    max_attempts: int
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    init_from: dict[str, Any] | None
    keep_checkpoints: list[int] | str | None

    @classmethod
    def of(cls, job: Job) -> JobView:
        """The view of a job the session holds."""
        return cls._make([getattr(job, name) for name in cls._fields])


class JobTask(NamedTuple):
    """What a history needs of a job: ``task`` is its dataset's, ``None`` if that is gone."""

    id: str
    dataset_id: str
    status: str
    config: dict[str, Any]
    task: str | None


# The hot reads (GET a job, its history) run statements built once, with Core rows: building a
# statement per call and loading ORM objects into the identity map cost more than the lookup.
_JOBS, _DATASETS, _EPOCHS = Job.__table__.c, Dataset.__table__.c, JobEpoch.__table__.c
_JOB_VIEWS = select(*(_JOBS[name] for name in JobView._fields))
_OWNED = owned(Job, bindparam("job_id"), bindparam("tenant"))
_READ_JOB = _JOB_VIEWS.where(_OWNED)
_READ_JOB_TASK = (
    select(*(_JOBS[name] for name in JobTask._fields[:-1]), _DATASETS.task)
    .select_from(Job.__table__.outerjoin(Dataset.__table__, _DATASETS.id == _JOBS.dataset_id))
    .where(_OWNED)
)
_EPOCH_ROWS = (
    select(_EPOCHS.epoch, _EPOCHS.record, _EPOCHS.step_losses)
    .where(_EPOCHS.job_id == bindparam("job_id"))
    .order_by(_EPOCHS.epoch)
)


def read(session: Session, job_id: str, *, tenant: str) -> JobView | None:
    """``tenant``'s job with ``job_id``, or ``None``."""
    row = session.execute(_READ_JOB, {"job_id": job_id, "tenant": tenant}).one_or_none()
    return None if row is None else JobView._make(row)


def read_with_task(session: Session, job_id: str, *, tenant: str) -> JobTask | None:
    """``tenant``'s job with ``job_id`` and its dataset's task, or ``None``."""
    row = session.execute(_READ_JOB_TASK, {"job_id": job_id, "tenant": tenant}).one_or_none()
    return None if row is None else JobTask._make(row)


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
) -> list[JobView]:
    """Up to ``limit`` of ``tenant``'s jobs, newest first (``created_at`` desc, ``id`` desc to
    break ties), strictly after the keyset position ``after = (created_at, id)``, matching every
    filter."""
    query = _JOB_VIEWS.where(Job.tenant == tenant)
    query = newest_first(query, Job.created_at, Job.id, limit=limit, after=after)
    if status is not None:
        query = query.where(Job.status == status)
    if dataset_id is not None:
        query = query.where(Job.dataset_id == dataset_id)
    if tag is not None:
        query = query.where(_has_tag(session, tag))
    return [JobView._make(row) for row in session.execute(query)]


def cancel_queued(session: Session, job_id: str, *, tenant: str, now: datetime) -> bool:
    """Cancel ``tenant``'s job if it is still queued; whether it was."""
    result = session.execute(
        update(Job)
        .where(owned(Job, job_id, tenant), Job.status == "queued")
        .values(status="cancelled", cancel_requested=True, finished_at=now)
        .execution_options(synchronize_session=False)
    )
    session.flush()
    return bool(getattr(result, "rowcount", 0))


def request_cancel_running(session: Session, job_id: str, *, tenant: str) -> bool:
    """Flag ``tenant``'s running job for its worker to stop; whether it was running."""
    result = session.execute(
        update(Job)
        .where(owned(Job, job_id, tenant), Job.status == "running")
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
        .where(owned(Job, job_id, tenant), Job.status.in_(finished))
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


def epoch_records(session: Session, job_id: str) -> list[dict[str, Any]]:
    """One job's per-epoch records in epoch order, without the step-loss blobs."""
    rows = session.execute(
        select(JobEpoch.record).where(JobEpoch.job_id == job_id).order_by(JobEpoch.epoch)
    )
    return [record for (record,) in rows]


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
    "JobTask",
    "JobView",
    "add",
    "cancel_queued",
    "count_queued",
    "delete_finished",
    "epoch_records",
    "epoch_rows",
    "get",
    "list_page",
    "lock_tenant_queue",
    "model",
    "read",
    "read_with_task",
    "request_cancel_running",
]


def cancel_unfinished(
    session: Session, which: ColumnElement[bool], *, now: datetime, skip_locked: bool = False
) -> int:
    """Cancel the queued jobs ``which`` selects at once and flag its running ones for their
    workers (as ``POST /v1/jobs/{id}/cancel`` does); how many jobs were touched: a sweep's
    or a probe's cancel.

    ``skip_locked`` (PostgreSQL): leave out rows another transaction holds — a worker
    finishing the job waits for the group's lock, which the caller then holds, so waiting on
    it would deadlock; that job is finishing anyway.
    """
    touched = 0
    for status, values in (
        ("queued", {"status": "cancelled", "cancel_requested": True, "finished_at": now}),
        ("running", {"cancel_requested": True}),
    ):
        ids = select(Job.id).where(which, Job.status == status)
        if skip_locked and not is_sqlite(session.get_bind().engine.url):
            ids = ids.with_for_update(skip_locked=True)
        result = session.execute(
            update(Job)
            .where(Job.id.in_(list(session.scalars(ids))), Job.status == status)
            .values(**values)
            .execution_options(synchronize_session=False)
        )
        touched += int(getattr(result, "rowcount", 0) or 0)
    session.flush()
    return touched
