"""The job queue's SQL: claim with a lease, heartbeat, fenced writes, release, finish.

Only the worker calls these. None of them commits: the worker commits after each one (its
transaction boundary), so each is one short transaction and none is open while training runs.

Claim: the oldest claimable job — ``queued``, or ``running`` with an expired lease and attempts
left — becomes ``running`` with ``attempt + 1``, this worker's id and a lease of
``lease_seconds``. PostgreSQL picks it with ``SELECT … FOR UPDATE SKIP LOCKED`` inside the
``UPDATE``, so concurrent claimers never wait on, nor take, the same row; SQLite serialises
claimers with ``BEGIN IMMEDIATE`` (the write lock first, then select + update). Expired jobs with
no attempts left are failed (``lease_expired``) by the same transaction. With a per-tenant
running limit, a tenant at it is skipped (its jobs wait), and PostgreSQL claims take turns on an
advisory lock so the limit holds exactly (see :func:`claim`).

Fencing: every later write is conditioned on the claim,
``WHERE id = :id AND attempt = :attempt AND worker_id = :worker_id AND status = 'running'``,
and is the transaction's first statement; a row count of 0 raises :class:`LeaseLost` (the caller
rolls back, so a stale worker changes nothing).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

import numpy as np
from sqlalchemy import ColumnElement, Select, and_, case, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from service.core import FittedModel
from service.core.finite import json_safe
from service.db import is_sqlite
from service.db.tables import Job, JobCheckpoint, JobEpoch, JobModel
from service.jobs import checkpoints

FinalStatus = Literal["succeeded", "failed", "cancelled"]

#: Error codes a job can end with.
ERROR_CODES = ("diverged", "time_limit", "lease_expired", "dataset_corrupt", "internal")


class LeaseLost(Exception):
    """The claim no longer holds: another worker re-claimed the job, or it finished or was
    released. The worker must stop and write nothing more for this job."""

    def __init__(self, job_id: str, attempt: int, worker_id: str) -> None:
        super().__init__(
            f"job {job_id}: the claim of worker {worker_id!r} (attempt {attempt}) no longer holds"
        )
        self.job_id, self.attempt, self.worker_id = job_id, attempt, worker_id


@dataclass(frozen=True)
class Claim:
    """A worker's hold on a job: writes for ``job_id`` are fenced on ``attempt`` and
    ``worker_id``. ``config`` is the resolved ``TrainConfig.to_dict()``."""

    job_id: str
    attempt: int
    worker_id: str
    dataset_id: str
    config: dict[str, Any]
    max_runtime_s: float | None


def _fence(claim: Claim) -> ColumnElement[bool]:
    return and_(
        Job.id == claim.job_id,
        Job.attempt == claim.attempt,
        Job.worker_id == claim.worker_id,
        Job.status == "running",
    )


def _expired(now: datetime) -> ColumnElement[bool]:
    return and_(Job.status == "running", Job.lease_expires_at < now)


def _exhausted_message(attempt: int, max_attempts: int) -> str:
    return (
        f"the lease expired on attempt {attempt} of {max_attempts}: the worker running the job "
        "stopped heartbeating (killed, or paused past its lease) on every attempt, so it is not "
        "retried again"
    )


def _settle_expired(session: Session, now: datetime) -> None:
    """Expired jobs that cannot run again: out of attempts → failed; cancel asked → cancelled."""
    dead = or_(Job.attempt >= Job.max_attempts, Job.cancel_requested.is_(True))
    query = select(Job.id, Job.attempt, Job.max_attempts, Job.cancel_requested).where(
        _expired(now), dead
    )
    if not is_sqlite(session.get_bind().engine.url):
        query = query.with_for_update(skip_locked=True)
    for job_id, attempt, max_attempts, cancel_requested in session.execute(query).all():
        values: dict[str, Any] = {
            "lease_expires_at": None,
            "finished_at": now,
        }
        if cancel_requested:
            values["status"] = "cancelled"
        else:
            values |= {
                "status": "failed",
                "error_code": "lease_expired",
                "error_message": _exhausted_message(attempt, max_attempts),
            }
        session.execute(update(Job).where(Job.id == job_id, _expired(now)).values(**values))


def _claimable(now: datetime) -> ColumnElement[bool]:
    return or_(
        Job.status == "queued",
        and_(
            _expired(now),
            Job.attempt < Job.max_attempts,
            Job.cancel_requested.is_(False),
        ),
    )


#: The advisory lock (two-key form) that serialises claims on PostgreSQL when a per-tenant
#: running limit applies.
CLAIM_LOCK_KEYS = (7103, 0)


def _tenants_at(limit: int, now: datetime) -> Select[str]:
    """The tenants with ``limit`` or more running jobs whose lease has not expired."""
    running = and_(Job.status == "running", Job.lease_expires_at >= now)
    return select(Job.tenant).where(running).group_by(Job.tenant).having(func.count() >= limit)


def claim(
    session: Session,
    *,
    worker_id: str,
    lease_seconds: float,
    now: datetime,
    max_running_per_tenant: int | None = None,
) -> Claim | None:
    """Claim the oldest claimable job for ``worker_id``, or None when there is none.

    ``session`` must have no transaction open (on SQLite this starts one with ``BEGIN
    IMMEDIATE``); commit right after. The job's lease runs to ``now + lease_seconds``.

    ``max_running_per_tenant``: a job is claimable only while its tenant has fewer running
    jobs (lease unexpired) than that; its jobs wait queued, and the oldest job of a tenant
    below it is claimed instead. Exact under concurrent claimers: SQLite's ``BEGIN
    IMMEDIATE`` runs claims one at a time; on PostgreSQL ``SKIP LOCKED`` alone would let two
    claimers each take a different job of one tenant and both pass its limit, so claims hold
    a transaction-level advisory lock (:data:`CLAIM_LOCK_KEYS`) to the commit, and each one
    counts running jobs with every earlier claim committed. A claim is one short transaction,
    so waiting for the lock costs milliseconds.
    """
    sqlite_backend = is_sqlite(session.get_bind().engine.url)
    if sqlite_backend:
        # Take the write lock before reading, so two claimers cannot both read the same job
        # queued (a deferred transaction would only find out at its write, or fail to upgrade).
        session.connection().exec_driver_sql("BEGIN IMMEDIATE")
    elif max_running_per_tenant is not None:
        # The next statements (READ COMMITTED) see every claim committed before this one.
        session.execute(select(func.pg_advisory_xact_lock(*CLAIM_LOCK_KEYS)))
    _settle_expired(session, now)
    pick = select(Job.id).where(_claimable(now)).order_by(Job.created_at, Job.id).limit(1)
    if max_running_per_tenant is not None:
        pick = pick.where(Job.tenant.not_in(_tenants_at(max_running_per_tenant, now)))
    values = {
        "status": "running",
        "attempt": Job.attempt + 1,
        "worker_id": worker_id,
        "lease_expires_at": now + timedelta(seconds=lease_seconds),
        "heartbeat_at": now,
        "started_at": case((Job.started_at.is_(None), now), else_=Job.started_at),
        "step": 0,
    }
    returning = (Job.id, Job.attempt, Job.dataset_id, Job.config, Job.max_runtime_s)
    if sqlite_backend:
        job_id = session.execute(pick).scalar_one_or_none()
        if job_id is None:
            return None
        statement = update(Job).where(Job.id == job_id, _claimable(now))
    else:
        locked = pick.with_for_update(skip_locked=True).scalar_subquery()
        statement = update(Job).where(Job.id == locked)
    row = session.execute(statement.values(**values).returning(*returning)).one_or_none()
    if row is None:
        return None
    return Claim(
        job_id=row.id,
        attempt=row.attempt,
        worker_id=worker_id,
        dataset_id=row.dataset_id,
        config=dict(row.config),
        max_runtime_s=row.max_runtime_s,
    )


def heartbeat(
    session: Session, claim: Claim, *, step: int, lease_seconds: float, now: datetime
) -> bool:
    """Extend the lease to ``now + lease_seconds`` and store ``step`` (within the running
    epoch); return whether a cancel was requested. :class:`LeaseLost` if fenced out."""
    statement = (
        update(Job)
        .where(_fence(claim))
        .values(
            lease_expires_at=now + timedelta(seconds=lease_seconds), heartbeat_at=now, step=step
        )
        .returning(Job.cancel_requested)
    )
    cancel_requested = session.execute(statement).scalar_one_or_none()
    if cancel_requested is None:
        raise LeaseLost(claim.job_id, claim.attempt, claim.worker_id)
    return bool(cancel_requested)


def _lower(column: Any, value: float | None) -> Any:
    """SQL for min(column, value) where NULL means "none yet"; the column itself if no value."""
    if value is None:
        return column
    return case((or_(column.is_(None), column > value), value), else_=column)


def _upsert(session: Session, table: Any, values: Mapping[str, Any], keys: list[str]) -> None:
    dialect_insert = (
        sqlite.insert if is_sqlite(session.get_bind().engine.url) else postgresql.insert
    )
    statement = dialect_insert(table).values(**values)
    changes = {name: statement.excluded[name] for name in values if name not in keys}
    session.execute(statement.on_conflict_do_update(index_elements=keys, set_=changes))


def record_epoch(
    session: Session,
    claim: Claim,
    record: Mapping[str, Any],
    step_losses: np.ndarray,
    checkpoint_bytes: bytes,
    *,
    now: datetime,
    lease_seconds: float | None = None,
    checkpoint_budget_bytes: int | None = None,
) -> None:
    """Store one completed epoch: its record (``EpochRecord.to_dict()``), its step losses
    ((steps,) → float32 little-endian bytes), the checkpoint taken after it (and a kept copy
    when the job keeps that epoch's, within the tenant's ``checkpoint_budget_bytes``:
    :mod:`service.jobs.checkpoints`), and the job's progress (epoch, samples seen, latest and
    best losses); with ``lease_seconds`` the lease is extended too (the write is proof of
    life).

    Idempotent: (job, epoch) and the job's checkpoint are upserts, and best = min(best, latest)
    is unchanged by a repeat. :class:`LeaseLost` (before anything is written) if fenced out.
    """
    clean = json_safe(dict(record))
    losses = np.ascontiguousarray(step_losses, dtype="<f4").tobytes()
    epoch = int(clean["epoch"])
    train_loss, val_loss = clean.get("train_loss"), clean.get("val_loss")
    lease: dict[str, Any] = {}
    if lease_seconds is not None:
        lease = {"lease_expires_at": now + timedelta(seconds=lease_seconds), "heartbeat_at": now}
    progress = (
        update(Job)
        .where(_fence(claim))
        .values(
            **lease,
            epoch=epoch,
            step=0,
            steps_per_epoch=clean.get("steps"),
            samples_seen=clean.get("samples_seen", 0),
            latest_train_loss=train_loss,
            latest_val_loss=val_loss,
            best_train_loss=_lower(Job.best_train_loss, train_loss),
            best_val_loss=_lower(Job.best_val_loss, val_loss),
        )
    )
    if session.execute(progress).rowcount != 1:  # type: ignore[attr-defined]
        raise LeaseLost(claim.job_id, claim.attempt, claim.worker_id)
    _upsert(
        session,
        JobEpoch.__table__,
        {"job_id": claim.job_id, "epoch": epoch, "record": clean, "step_losses": losses},
        ["job_id", "epoch"],
    )
    _upsert(
        session,
        JobCheckpoint.__table__,
        {
            "job_id": claim.job_id,
            "epoch": epoch,
            "attempt": claim.attempt,
            "data": checkpoint_bytes,
        },
        ["job_id"],
    )
    checkpoints.keep_after_epoch(
        session, claim.job_id, epoch, clean, checkpoint_bytes, budget=checkpoint_budget_bytes
    )


def load_checkpoint(session: Session, job_id: str) -> bytes | None:
    """The job's latest checkpoint bytes (``Checkpoint.to_bytes()``), or None before epoch 1."""
    return session.execute(
        select(JobCheckpoint.data).where(JobCheckpoint.job_id == job_id)
    ).scalar_one_or_none()


def finish(
    session: Session,
    claim: Claim,
    *,
    status: FinalStatus,
    model: FittedModel | None = None,
    error_code: str | None = None,
    error_message: str | None = None,
    now: datetime,
) -> None:
    """End the job as ``status``; store ``model`` (succeeded jobs) and the error (failed
    ones, ``error_code`` one of :data:`ERROR_CODES`). :class:`LeaseLost` if fenced out."""
    if error_code is not None and error_code not in ERROR_CODES:
        raise ValueError(f"unknown error code {error_code!r}; expected one of {ERROR_CODES}")
    done = (
        update(Job)
        .where(_fence(claim))
        .values(
            status=status,
            lease_expires_at=None,
            finished_at=now,
            error_code=error_code,
            error_message=error_message,
        )
    )
    if session.execute(done).rowcount != 1:  # type: ignore[attr-defined]
        raise LeaseLost(claim.job_id, claim.attempt, claim.worker_id)
    if model is not None:
        _upsert(
            session,
            JobModel.__table__,
            {
                "job_id": claim.job_id,
                "model": json_safe(model.to_dict()),
                "npz": model.to_npz_bytes(),
            },
            ["job_id"],
        )


def release(session: Session, claim: Claim, *, now: datetime) -> None:
    """Give the job back to the queue (a worker shutting down): ``queued``, lease cleared,
    the attempt count kept; the next claim resumes it from its checkpoint."""
    back = (
        update(Job)
        .where(_fence(claim))
        .values(status="queued", worker_id=None, lease_expires_at=None, heartbeat_at=now, step=0)
    )
    if session.execute(back).rowcount != 1:  # type: ignore[attr-defined]
        raise LeaseLost(claim.job_id, claim.attempt, claim.worker_id)


__all__ = [
    "ERROR_CODES",
    "Claim",
    "FinalStatus",
    "LeaseLost",
    "claim",
    "finish",
    "heartbeat",
    "load_checkpoint",
    "record_epoch",
    "release",
]
