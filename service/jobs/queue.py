"""The job queue's SQL: claim with a lease, heartbeat, fenced writes, release, finish.

Only the worker calls these. None of them commits: the worker commits after each one (its
transaction boundary), so each is one short transaction and none is open while training runs.

Claim: the oldest claimable job — ``queued``, or ``running`` with an expired lease and attempts
left — becomes ``running`` with ``attempt + 1``, this worker's id and a lease of
``lease_seconds``. Attempts left: fewer than ``max_attempts`` attempts in a row checkpointed no
new epoch (``stalled_attempts``); an attempt that wrote an epoch starts the count again, so only
a job that keeps losing its worker before any progress fails as poison. PostgreSQL picks the
job with ``SELECT … FOR UPDATE SKIP LOCKED`` inside the ``UPDATE``, so concurrent claimers never
wait on, nor take, the same row; SQLite serialises claimers with ``BEGIN IMMEDIATE`` (the write
lock first, then select + update). Expired jobs with no attempts left are failed
(``lease_expired``) by the same transaction. With a per-tenant running limit, a tenant at it is
skipped (its jobs wait), and PostgreSQL claims take turns on an advisory lock so the limit holds
exactly (see :func:`claim`).

One clock: lease times come from the database's clock, read once the claiming or renewing
statement can no longer wait (:mod:`service.jobs.lease_clock`), and every comparison with a
lease uses that clock; a claim that waited for the write lock still gets its whole lease.

Fencing: every later write is conditioned on the claim,
``WHERE id = :id AND attempt = :attempt AND worker_id = :worker_id AND status = 'running'``,
and is the transaction's first statement; a row count of 0 raises :class:`LeaseLost` (the caller
rolls back, so a stale worker changes nothing).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import numpy as np
from sqlalchemy import ColumnElement, Select, and_, case, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from service.core import FittedModel
from service.core.finite import json_safe
from service.db import is_sqlite, utcnow
from service.db.tables import Job, JobCheckpoint, JobEpoch, JobModel, TenantLimits
from service.jobs import checkpoints
from service.jobs.lease_clock import LeaseClock, lease_clock

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


def _lock_fenced_row(session: Session, claim: Claim) -> None:
    """Before a write that renews the lease, on PostgreSQL: wait for the job's row here. An
    ``UPDATE`` computes its new values, ``clock_timestamp()`` included, before it waits for a
    locked row (an API cancel, a claim settling it), so that wait would come out of the lease.
    (On SQLite the write lock, taken first, already covers it.) :class:`LeaseLost` if fenced
    out."""
    if is_sqlite(session.get_bind().engine.url):
        return
    held = session.execute(select(Job.id).where(_fence(claim)).with_for_update()).first()
    if held is None:
        raise LeaseLost(claim.job_id, claim.attempt, claim.worker_id)


def _expired(clock: LeaseClock) -> ColumnElement[bool]:
    return and_(Job.status == "running", Job.lease_expires_at < clock.now())


def exhausted_message(attempt: int, max_attempts: int) -> str:
    """Why a job failed as poison (``lease_expired``), with the rule."""
    return (
        f"the lease expired on attempt {attempt}, the last of {max_attempts} attempts in a row "
        "that checkpointed no new epoch: the worker running the job stopped heartbeating "
        "(killed, or paused past its lease) each time before it finished an epoch, so it is "
        "not retried again (an attempt that checkpoints a new epoch does not count toward the "
        f"limit of {max_attempts})"
    )


def _settle_expired(session: Session, clock: LeaseClock) -> None:
    """Expired jobs that cannot run again: out of attempts → failed; cancel asked → cancelled."""
    dead = or_(Job.stalled_attempts >= Job.max_attempts, Job.cancel_requested.is_(True))
    query = select(Job.id, Job.attempt, Job.max_attempts, Job.cancel_requested).where(
        _expired(clock), dead
    )
    if not is_sqlite(session.get_bind().engine.url):
        query = query.with_for_update(skip_locked=True)
    for job_id, attempt, max_attempts, cancel_requested in session.execute(query).all():
        values: dict[str, Any] = {
            "lease_expires_at": None,
            "finished_at": clock.now(),
        }
        if cancel_requested:
            values["status"] = "cancelled"
        else:
            values |= {
                "status": "failed",
                "error_code": "lease_expired",
                "error_message": exhausted_message(attempt, max_attempts),
            }
        session.execute(update(Job).where(Job.id == job_id, _expired(clock)).values(**values))


def _claimable(clock: LeaseClock) -> ColumnElement[bool]:
    return or_(
        Job.status == "queued",
        and_(
            _expired(clock),
            Job.stalled_attempts < Job.max_attempts,
            Job.cancel_requested.is_(False),
        ),
    )


#: The advisory lock (two-key form) that serialises claims on PostgreSQL when a per-tenant
#: running limit applies.
CLAIM_LOCK_KEYS = (7103, 0)


def _tenants_at(limit: int, clock: LeaseClock) -> Select[str]:
    """The tenants with as many running jobs (lease unexpired) as they may have: their own
    ``max_running_jobs`` (:class:`TenantLimits`), else ``limit``."""
    running = and_(Job.status == "running", Job.lease_expires_at >= clock.now())
    own = (
        select(TenantLimits.max_running_jobs)
        .where(TenantLimits.tenant == Job.tenant)
        .scalar_subquery()
    )
    return (
        select(Job.tenant)
        .where(running)
        .group_by(Job.tenant)
        .having(func.count() >= func.coalesce(own, limit))
    )


def claim(
    session: Session,
    *,
    worker_id: str,
    lease_seconds: float,
    now: datetime | None = None,
    max_running_per_tenant: int | None = None,
) -> Claim | None:
    """Claim the oldest claimable job for ``worker_id``, or None when there is none.

    ``session`` must have no transaction open (on SQLite this starts one with ``BEGIN
    IMMEDIATE``); commit right after. The job's lease runs ``lease_seconds`` from the
    database's clock once the claim holds its locks (``now``: a fixed clock, for tests).

    ``max_running_per_tenant``: a job is claimable only while its tenant has fewer running
    jobs (lease unexpired) than that, or than the tenant's own ``max_running_jobs``
    (:class:`TenantLimits`); its jobs wait queued, and the oldest job of a tenant
    below it is claimed instead. Exact under concurrent claimers: SQLite's ``BEGIN
    IMMEDIATE`` runs claims one at a time; on PostgreSQL ``SKIP LOCKED`` alone would let two
    claimers each take a different job of one tenant and both pass its limit, so claims hold
    a transaction-level advisory lock (:data:`CLAIM_LOCK_KEYS`) to the commit, and each one
    counts running jobs with every earlier claim committed. A claim is one short transaction,
    so waiting for the lock costs milliseconds.
    """
    sqlite_backend = is_sqlite(session.get_bind().engine.url)
    # A read first, which takes no lock: idle workers polling an empty queue would otherwise
    # keep taking the write (or claim) lock that heartbeats and claims of real work wait for.
    # A lease it misses by a hair is found at the next poll.
    hint = LeaseClock(utcnow() if sqlite_backend and now is None else now)
    work = or_(Job.status == "queued", _expired(hint))
    if session.execute(select(Job.id).where(work).limit(1)).first() is None:
        return None
    if not sqlite_backend and max_running_per_tenant is not None:
        # The next statements (READ COMMITTED) see every claim committed before this one.
        session.execute(select(func.pg_advisory_xact_lock(*CLAIM_LOCK_KEYS)))
    # On SQLite this takes the write lock (BEGIN IMMEDIATE) before reading, so two claimers
    # cannot both read the same job queued, and before reading the clock, so the wait for
    # the lock is not taken out of the lease.
    clock = lease_clock(session, now)
    _settle_expired(session, clock)
    pick = select(Job.id).where(_claimable(clock)).order_by(Job.created_at, Job.id).limit(1)
    if max_running_per_tenant is not None:
        pick = pick.where(Job.tenant.not_in(_tenants_at(max_running_per_tenant, clock)))
    values = {
        "status": "running",
        "attempt": Job.attempt + 1,
        "stalled_attempts": Job.stalled_attempts + 1,  # until it checkpoints an epoch
        "worker_id": worker_id,
        "lease_expires_at": clock.after(lease_seconds),
        "heartbeat_at": clock.now(),
        "started_at": case((Job.started_at.is_(None), clock.now()), else_=Job.started_at),
        "step": 0,
    }
    returning = (Job.id, Job.attempt, Job.dataset_id, Job.config, Job.max_runtime_s)
    if sqlite_backend:
        job_id = session.execute(pick).scalar_one_or_none()
        if job_id is None:
            return None
        statement = update(Job).where(Job.id == job_id, _claimable(clock))
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
    session: Session,
    claim: Claim,
    *,
    step: int,
    lease_seconds: float,
    now: datetime | None = None,
) -> bool:
    """Extend the lease to ``lease_seconds`` from now on the database's clock (``now``: a
    fixed clock) and store ``step`` (within the running epoch); return whether a cancel was
    requested. :class:`LeaseLost` if fenced out."""
    _lock_fenced_row(session, claim)
    clock = lease_clock(session, now)
    statement = (
        update(Job)
        .where(_fence(claim))
        .values(lease_expires_at=clock.after(lease_seconds), heartbeat_at=clock.now(), step=step)
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
    now: datetime | None = None,
    lease_seconds: float | None = None,
    checkpoint_budget_bytes: int | None = None,
) -> None:
    """Store one completed epoch: its record (``EpochRecord.to_dict()``), its step losses
    ((steps,) → float32 little-endian bytes), the checkpoint taken after it (and a kept copy
    when the job keeps that epoch's, within the tenant's ``checkpoint_budget_bytes``:
    :mod:`service.jobs.checkpoints`), and the job's progress (epoch, samples seen, latest and
    best losses); with ``lease_seconds`` the lease is extended too (the write is proof of
    life). A new epoch makes the attempt one that made progress: ``stalled_attempts`` starts
    again from 0.

    Idempotent: (job, epoch) and the job's checkpoint are upserts, and best = min(best, latest)
    is unchanged by a repeat. :class:`LeaseLost` (before anything is written) if fenced out.
    """
    clean = json_safe(dict(record))
    losses = np.ascontiguousarray(step_losses, dtype="<f4").tobytes()
    epoch = int(clean["epoch"])
    train_loss, val_loss = clean.get("train_loss"), clean.get("val_loss")
    lease: dict[str, Any] = {}
    if lease_seconds is not None:
        _lock_fenced_row(session, claim)
        clock = lease_clock(session, now)
        lease = {"lease_expires_at": clock.after(lease_seconds), "heartbeat_at": clock.now()}
    progress = (
        update(Job)
        .where(_fence(claim))
        .values(
            **lease,
            stalled_attempts=case((Job.epoch < epoch, 0), else_=Job.stalled_attempts),
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
    now: datetime | None = None,
) -> None:
    """End the job as ``status`` at the database's clock (``now``: a fixed clock); store
    ``model`` (succeeded jobs) and the error (failed ones, ``error_code`` one of
    :data:`ERROR_CODES`). :class:`LeaseLost` if fenced out."""
    if error_code is not None and error_code not in ERROR_CODES:
        raise ValueError(f"unknown error code {error_code!r}; expected one of {ERROR_CODES}")
    done = (
        update(Job)
        .where(_fence(claim))
        .values(
            status=status,
            lease_expires_at=None,
            finished_at=lease_clock(session, now).now(),
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


def release(session: Session, claim: Claim, *, now: datetime | None = None) -> None:
    """Give the job back to the queue (a worker shutting down): ``queued``, lease cleared,
    the attempt count kept; the next claim resumes it from its checkpoint. The worker chose
    to stop, so this attempt does not count as one without progress."""
    back = (
        update(Job)
        .where(_fence(claim))
        .values(
            status="queued",
            worker_id=None,
            lease_expires_at=None,
            heartbeat_at=lease_clock(session, now).now(),
            step=0,
            stalled_attempts=case((Job.stalled_attempts > 0, Job.stalled_attempts - 1), else_=0),
        )
    )
    if session.execute(back).rowcount != 1:  # type: ignore[attr-defined]
        raise LeaseLost(claim.job_id, claim.attempt, claim.worker_id)


__all__ = [
    "ERROR_CODES",
    "Claim",
    "FinalStatus",
    "LeaseLost",
    "claim",
    "exhausted_message",
    "finish",
    "heartbeat",
    "load_checkpoint",
    "record_epoch",
    "release",
]
