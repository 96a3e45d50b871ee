"""The probes' SQL: insert, read, lock, list, attach branch jobs, cancel their unfinished jobs.

Functions flush, never commit: the caller's boundary (the request, or the worker's finish
transaction) owns the transaction. Branch jobs are inserted by :mod:`service.jobs.service` (the
same validation and row as ``POST /v1/jobs``) and then attached here (``probe_branches``).
Locking as the sweeps': ``SELECT … FOR UPDATE`` on PostgreSQL, SQLite's one writer otherwise.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import and_, func, select
from sqlalchemy.orm import Session

from service.db import Job, JobEpoch, is_sqlite
from service.db.tables import Probe, ProbeBranch
from service.jobs import repository as jobs_repository
from service.pagination import newest_first

__all__ = [
    "UNFINISHED",
    "add",
    "attach_branch",
    "branches_of",
    "cancel_unfinished_jobs",
    "count_unfinished",
    "epoch_records",
    "get",
    "list_page",
    "lock",
    "probe_of_job",
    "running_probes_of_source",
    "set_state",
]

#: Job statuses that still need work.
UNFINISHED = ("queued", "running")


def add(session: Session, probe: Probe) -> None:
    """Insert a probe row (in the caller's transaction)."""
    session.add(probe)
    session.flush()


def get(session: Session, probe_id: str, *, tenant: str) -> Probe | None:
    """``tenant``'s probe with ``probe_id``, read afresh, or ``None``."""
    return session.scalars(
        select(Probe)
        .where(and_(Probe.id == probe_id, Probe.tenant == tenant))
        .execution_options(populate_existing=True)
    ).one_or_none()


def lock(session: Session, probe_id: str) -> Probe | None:
    """The probe, read afresh and locked for the rest of the transaction, or ``None``."""
    query = select(Probe).where(Probe.id == probe_id).execution_options(populate_existing=True)
    if not is_sqlite(session.get_bind().engine.url):
        query = query.with_for_update()
    return session.scalars(query).one_or_none()


def list_page(
    session: Session, *, tenant: str, limit: int, after: tuple[datetime, str] | None = None
) -> list[Probe]:
    """Up to ``limit`` of ``tenant``'s probes, newest first, after the keyset position."""
    query = select(Probe).where(Probe.tenant == tenant)
    query = newest_first(query, Probe.created_at, Probe.id, limit=limit, after=after)
    return list(session.scalars(query))


def attach_branch(session: Session, branch: ProbeBranch) -> None:
    """Name a just-submitted job as the probe's branch."""
    session.add(branch)
    session.flush()


def branches_of(session: Session, probe_id: str) -> list[tuple[ProbeBranch, Job]]:
    """Every branch of the probe with its job, read afresh, oldest first."""
    rows = session.execute(
        select(ProbeBranch, Job)
        .join(Job, Job.id == ProbeBranch.job_id)
        .where(ProbeBranch.probe_id == probe_id)
        .order_by(Job.created_at, Job.id)
        .execution_options(populate_existing=True)
    )
    return [(branch, job) for branch, job in rows]


def probe_of_job(session: Session, job_id: str) -> str | None:
    """The id of the probe the job is a branch of, or ``None``."""
    return session.scalar(select(ProbeBranch.probe_id).where(ProbeBranch.job_id == job_id))


def running_probes_of_source(session: Session, job_id: str) -> list[str]:
    """The running probes whose source is ``job_id`` (their later checkpoints wait for it)."""
    return list(
        session.scalars(select(Probe.id).where(Probe.job_id == job_id, Probe.status == "running"))
    )


def count_unfinished(session: Session, probe_id: str) -> int:
    """How many of the probe's branch jobs are queued or running."""
    return (
        session.scalar(
            select(func.count())
            .select_from(ProbeBranch)
            .join(Job, Job.id == ProbeBranch.job_id)
            .where(ProbeBranch.probe_id == probe_id, Job.status.in_(UNFINISHED))
        )
        or 0
    )


def epoch_records(
    session: Session, job_ids: list[str]
) -> dict[str, list[tuple[int, dict[str, Any]]]]:
    """``{job_id: [(epoch, record), …]}`` in epoch order, for every job given."""
    out: dict[str, list[tuple[int, dict[str, Any]]]] = {job_id: [] for job_id in job_ids}
    if not job_ids:
        return out
    rows = session.execute(
        select(JobEpoch.job_id, JobEpoch.epoch, JobEpoch.record)
        .where(JobEpoch.job_id.in_(job_ids))
        .order_by(JobEpoch.job_id, JobEpoch.epoch)
    )
    for job_id, epoch, record in rows:
        out[job_id].append((int(epoch), record))
    return out


def cancel_unfinished_jobs(
    session: Session, probe_id: str, *, now: datetime, skip_locked: bool = False
) -> int:
    """The probe's branch jobs, cancelled: :func:`service.jobs.repository.cancel_unfinished`."""
    branch_jobs = select(ProbeBranch.job_id).where(ProbeBranch.probe_id == probe_id)
    return jobs_repository.cancel_unfinished(
        session, Job.id.in_(branch_jobs), now=now, skip_locked=skip_locked
    )


def set_state(session: Session, probe: Probe, **values: object) -> None:
    """Write ``values`` (status, round, spec, error_message, finished_at) to the probe."""
    for key, value in values.items():
        setattr(probe, key, value)
    session.flush()
