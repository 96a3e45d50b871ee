"""Kept checkpoints and warm starts: which checkpoints a job keeps, within its tenant's budget,
and which one a warm-started job starts from.

A job keeps the checkpoints of the epochs in its ``keep_checkpoints`` (a list, or "all") in
``job_kept_checkpoints``, beside the latest one every job has (``job_checkpoints``); both go
with the job (ON DELETE CASCADE). Their bytes count against the tenant's
``checkpoint_budget_bytes``: a job whose checkpoints, as predicted from its config and the
dataset's shape (:func:`service.core.estimate_checkpoint_bytes`), would not fit beside what the
tenant keeps already is refused at submit (422 naming ``keep_checkpoints``); an epoch that
finds the budget full anyway (other jobs kept theirs meanwhile) is not kept, and its row says
so (``data`` NULL, a ``note``). Epochs of one tenant's jobs check the budget one after the
other (:func:`_lock_tenant_checkpoints`), so two workers cannot both fill its last room.

A warm start (``init_from``) may start from any epoch with a kept checkpoint or from the
latest; the bytes are copied into ``job_starts`` at submit, so neither the source's later
epochs nor its deletion change what the job starts from.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field
from sqlalchemy import func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from service.db import Job, JobCheckpoint, JobEpoch, JobKeptCheckpoint, is_sqlite, owned
from service.db.tables import JobStart
from service.errors import FieldError, InvalidInput, NotFound
from service.jobs import repository

__all__ = [
    "CheckpointList",
    "CheckpointRead",
    "available_epochs",
    "budget_refusal",
    "checkpoint_at",
    "epochs_to_keep",
    "keep_after_epoch",
    "keep_more",
    "list_checkpoints",
    "load_start",
    "source_checkpoint",
    "store_start",
    "tenant_kept_bytes",
]


class CheckpointRead(BaseModel):
    """A checkpoint a job has: after ``epoch``, with ``samples_seen`` and the epoch's
    ``train_loss``. ``kept``: a kept copy (``keep_checkpoints``) holds it; ``latest``: it is
    the job's latest. ``note``: why an epoch asked for was not kept."""

    epoch: int
    samples_seen: int
    train_loss: float | None
    size_bytes: int
    kept: bool
    latest: bool
    note: str | None = None


class CheckpointList(BaseModel):
    """A job's checkpoints in epoch order, and its tenant's checkpoint budget."""

    job_id: str
    keep_checkpoints: list[int] | str | None = Field(
        description='What the job keeps: a list of epochs, "all", or null (the latest only).'
    )
    items: list[CheckpointRead]
    budget_bytes: int | None = Field(
        description="The tenant's budget for kept checkpoints (BATCHWISE_CHECKPOINT_BUDGET_BYTES)."
    )
    used_bytes: int = Field(description="The bytes of the tenant's kept checkpoints now.")


def wants(keep: Any, epoch: int) -> bool:
    """Whether ``keep_checkpoints`` = ``keep`` asks for ``epoch``."""
    return keep == "all" or (isinstance(keep, list) and epoch in keep)


def epochs_to_keep(keep: Any, *, start_epoch: int, epochs: int) -> int:
    """How many checkpoints ``keep`` asks for over epochs ``start_epoch + 1 … epochs``; 422
    naming ``keep_checkpoints`` for an epoch outside them."""
    if keep is None:
        return 0
    if keep == "all":
        return epochs - start_epoch
    outside = [epoch for epoch in keep if not start_epoch < epoch <= epochs]
    if outside:
        where = f"epochs {start_epoch + 1} … {epochs}"
        message = f"epoch {outside[0]} is not one the job runs ({where}); keep only those"
        raise InvalidInput(
            f"keep_checkpoints: {message}.",
            errors=[FieldError(("body", "keep_checkpoints"), message, "value_error")],
        )
    return len(set(keep))


#: The first key of the advisory lock that serialises the budget checks of one tenant's kept
#: checkpoints (PostgreSQL; the second key is the tenant's ``hashtext``). The others: 7101 a
#: tenant's storage, 7102 its queue, 7103 the claims.
CHECKPOINT_LOCK_NAMESPACE = 7104


def _lock_tenant_checkpoints(session: Session, tenant: str) -> None:
    """Hold ``tenant``'s checkpoint lock until the transaction ends, so that epochs of its jobs
    ending at once check its budget one after the other, each seeing the ones before it.

    PostgreSQL only: a transaction-level advisory lock (two tenants whose names hash alike
    merely take turns). SQLite needs none: the epoch's writes before the check take the
    database's one write lock, held to the commit.
    """
    if is_sqlite(session.get_bind().engine.url):
        return
    session.execute(
        select(func.pg_advisory_xact_lock(CHECKPOINT_LOCK_NAMESPACE, func.hashtext(tenant)))
    )


def tenant_kept_bytes(session: Session, tenant: str) -> int:
    """The bytes of ``tenant``'s kept checkpoints."""
    total = session.scalar(
        select(func.coalesce(func.sum(JobKeptCheckpoint.size_bytes), 0))
        .join(Job, Job.id == JobKeptCheckpoint.job_id)
        .where(Job.tenant == tenant, JobKeptCheckpoint.data.is_not(None))
    )
    return int(total or 0)


def budget_refusal(
    session: Session, tenant: str, *, count: int, each: int, budget: int | None
) -> None:
    """422 naming ``keep_checkpoints`` when ``count`` checkpoints of ``each`` bytes do not fit
    beside what ``tenant`` keeps already."""
    if budget is None or count == 0:
        return
    used = tenant_kept_bytes(session, tenant)
    wanted = count * each
    if used + wanted <= budget:
        return
    message = (
        f"{count} checkpoints of about {each:,} bytes ({wanted:,} bytes) do not fit in the "
        f"{budget:,}-byte checkpoint budget, {used:,} bytes of which are kept already "
        "(BATCHWISE_CHECKPOINT_BUDGET_BYTES); keep fewer epochs, or delete jobs whose "
        "checkpoints you no longer need"
    )
    raise InvalidInput(
        f"keep_checkpoints: {message}.",
        errors=[FieldError(("body", "keep_checkpoints"), message, "value_error")],
    )


def _epoch_facts(session: Session, job_id: str) -> dict[int, tuple[int, float | None]]:
    rows = session.execute(
        select(JobEpoch.epoch, JobEpoch.record).where(JobEpoch.job_id == job_id)
    ).all()
    return {
        epoch: (int(record.get("samples_seen", 0)), record.get("train_loss"))
        for epoch, record in rows
    }


def list_checkpoints(
    session: Session, job_id: str, *, tenant: str, budget: int | None = None
) -> CheckpointList:
    """``tenant``'s job's checkpoints (404 for another's or none): the kept ones and the
    latest, in epoch order."""
    job = repository.get(session, job_id, tenant=tenant)
    if job is None:
        raise NotFound(f"No job with id {job_id!r}.")
    facts = _epoch_facts(session, job_id)
    latest = session.execute(
        select(JobCheckpoint.epoch, func.length(JobCheckpoint.data)).where(
            JobCheckpoint.job_id == job_id
        )
    ).one_or_none()
    items: dict[int, CheckpointRead] = {}
    for row in session.execute(
        select(
            JobKeptCheckpoint.epoch,
            JobKeptCheckpoint.samples_seen,
            JobKeptCheckpoint.train_loss,
            JobKeptCheckpoint.size_bytes,
            JobKeptCheckpoint.data.is_not(None),
            JobKeptCheckpoint.note,
        ).where(JobKeptCheckpoint.job_id == job_id)
    ):
        epoch, samples, loss, size, kept, note = row
        items[epoch] = CheckpointRead(
            epoch=epoch,
            samples_seen=samples,
            train_loss=loss,
            size_bytes=size,
            kept=bool(kept),
            latest=latest is not None and latest[0] == epoch,
            note=note,
        )
    if latest is not None and latest[0] not in items:
        samples, loss = facts.get(latest[0], (job.samples_seen, None))
        items[latest[0]] = CheckpointRead(
            epoch=latest[0],
            samples_seen=samples,
            train_loss=loss,
            size_bytes=int(latest[1]),
            kept=False,
            latest=True,
        )
    return CheckpointList(
        job_id=job_id,
        keep_checkpoints=job.keep_checkpoints,
        items=[items[epoch] for epoch in sorted(items)],
        budget_bytes=budget,
        used_bytes=tenant_kept_bytes(session, tenant),
    )


def checkpoint_at(
    session: Session, job_id: str, epoch: int, *, tenant: str
) -> CheckpointRead | None:
    """The usable checkpoint of ``tenant``'s job at ``epoch`` (kept, or the latest), or None;
    404 for an unknown job."""
    for item in list_checkpoints(session, job_id, tenant=tenant).items:
        if item.epoch == epoch and (item.kept or item.latest):
            return item
    return None


def keep_more(session: Session, job_id: str, epochs: list[int], *, tenant: str) -> None:
    """Add ``epochs`` to a job's ``keep_checkpoints`` (e.g. a probe's on a running job);
    epochs already past and not kept stay unavailable. 404 for an unknown job."""
    # Locked to the commit: two probes of one running source must not each write back a list
    # missing the other's epochs.
    job = session.scalars(
        select(Job)
        .where(owned(Job, job_id, tenant))
        .with_for_update()
        .execution_options(populate_existing=True)
    ).one_or_none()
    if job is None:
        raise NotFound(f"No job with id {job_id!r}.")
    if job.keep_checkpoints == "all":
        return
    current: list[int] = [int(e) for e in job.keep_checkpoints or []]
    job.keep_checkpoints = sorted({*current, *epochs})
    session.flush()


def source_checkpoint(session: Session, job: Job, epoch: int) -> bytes | None:
    """``job``'s checkpoint bytes after ``epoch``: a kept one, else the latest if it is that
    epoch's; None when it has neither."""
    kept = session.scalar(
        select(JobKeptCheckpoint.data).where(
            JobKeptCheckpoint.job_id == job.id, JobKeptCheckpoint.epoch == epoch
        )
    )
    if kept is not None:
        return kept
    return session.scalar(
        select(JobCheckpoint.data).where(
            JobCheckpoint.job_id == job.id, JobCheckpoint.epoch == epoch
        )
    )


def available_epochs(session: Session, job: Job) -> list[int]:
    """The epochs ``job`` has a usable checkpoint of, ascending."""
    kept = session.scalars(
        select(JobKeptCheckpoint.epoch).where(
            JobKeptCheckpoint.job_id == job.id, JobKeptCheckpoint.data.is_not(None)
        )
    ).all()
    latest = session.scalar(select(JobCheckpoint.epoch).where(JobCheckpoint.job_id == job.id))
    return sorted({*kept, *([] if latest is None else [latest])})


def store_start(session: Session, job_id: str, data: bytes) -> None:
    """Keep the checkpoint the new job ``job_id`` starts from."""
    session.add(JobStart(job_id=job_id, data=data))
    session.flush()


def load_start(session: Session, job_id: str) -> tuple[bytes, bool] | None:
    """The checkpoint a warm-started job starts from and whether its optimizer starts afresh
    (``reset_optimizer``), or None for a job that starts afresh."""
    row = session.execute(
        select(JobStart.data, Job.init_from)
        .join(Job, Job.id == JobStart.job_id)
        .where(JobStart.job_id == job_id)
    ).one_or_none()
    if row is None:
        return None
    data, init_from = row
    return data, bool((init_from or {}).get("reset_optimizer", False))


def keep_after_epoch(
    session: Session,
    job_id: str,
    epoch: int,
    record: dict[str, Any],
    checkpoint_bytes: bytes,
    *,
    budget: int | None,
) -> None:
    """At the end of ``epoch`` (in the transaction that records it): keep its checkpoint if
    the job asks for it and the tenant's budget has room, else write why not. Idempotent."""
    keep, tenant = session.execute(
        select(Job.keep_checkpoints, Job.tenant).where(Job.id == job_id)
    ).one()
    if not wants(keep, epoch):
        return
    size = len(checkpoint_bytes)
    data: bytes | None = checkpoint_bytes
    note = None
    if budget is not None:
        # Waits at most for the commits of the tenant's other epochs ending at the same
        # moment: milliseconds, taken from a lease of tens of seconds.
        _lock_tenant_checkpoints(session, tenant)
        mine = session.scalar(
            select(JobKeptCheckpoint.size_bytes).where(
                JobKeptCheckpoint.job_id == job_id,
                JobKeptCheckpoint.epoch == epoch,
                JobKeptCheckpoint.data.is_not(None),
            )
        )
        used = tenant_kept_bytes(session, tenant) - (mine or 0)
        if used + size > budget:
            data = None
            note = (
                f"not kept: the tenant's checkpoint budget of {budget:,} bytes held {used:,} "
                f"bytes, no room for these {size:,}; delete jobs whose checkpoints you no "
                "longer need"
            )
    values = {
        "job_id": job_id,
        "epoch": epoch,
        "samples_seen": int(record.get("samples_seen", 0)),
        "train_loss": record.get("train_loss"),
        "size_bytes": size,
        "data": data,
        "note": note,
    }
    insert = sqlite.insert if is_sqlite(session.get_bind().engine.url) else postgresql.insert
    table: Any = JobKeptCheckpoint.__table__
    statement = insert(table).values(**values)
    session.execute(
        statement.on_conflict_do_update(
            index_elements=["job_id", "epoch"],
            set_={key: statement.excluded[key] for key in values if key not in ("job_id", "epoch")},
        )
    )
