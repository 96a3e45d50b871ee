"""What ``GET /metrics`` reports about jobs, read from the database at scrape time.

The API is stateless and there may be several API processes, and workers have no HTTP port,
so the job figures are read where they live: three short reads in one transaction, each
bounded (an index-only count per status, the jobs finished in a recent window, the latest
epoch of each running job).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import and_, func, select
from sqlalchemy.orm import Session

from service.db.tables import Job, JobEpoch

#: Every job status, so each is reported (as 0) even when no job has it.
JOB_STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")
FINAL_STATUSES = ("succeeded", "failed", "cancelled")


@dataclass(frozen=True)
class FinishedJob:
    """A job finished in the window: its final status and seconds from first claim to end."""

    status: str
    duration_s: float


@dataclass(frozen=True)
class RunningJob:
    """A running job (lease live) and its latest epoch's speed; ``None`` before epoch 1."""

    samples_per_s: float | None
    epoch_wall_time_s: float | None


@dataclass(frozen=True)
class JobStats:
    """Job figures at ``now``.

    ``by_status``: count per status (every status present). ``oldest_queued_age_s``: ``now``
    minus the oldest queued job's ``created_at`` (0 when none is queued). ``finished``: jobs
    with ``finished_at`` in ``[now - window, now]`` that were claimed at least once.
    ``running``: running jobs whose lease has not expired.
    """

    by_status: dict[str, int]
    oldest_queued_age_s: float
    finished: Sequence[FinishedJob]
    running: Sequence[RunningJob]


def read_job_stats(session: Session, *, now: datetime, window: timedelta) -> JobStats:
    """The :class:`JobStats` of the database behind ``session`` at ``now``."""
    by_status = dict.fromkeys(JOB_STATUSES, 0)
    oldest_queued: datetime | None = None
    rows = session.execute(
        select(Job.status, func.count(), func.min(Job.created_at)).group_by(Job.status)
    )
    for status, count, oldest in rows:
        by_status[status] = count
        if status == "queued":
            oldest_queued = oldest

    finished = [
        FinishedJob(status, max((finished_at - started_at).total_seconds(), 0.0))
        for status, started_at, finished_at in session.execute(
            select(Job.status, Job.started_at, Job.finished_at).where(
                Job.status.in_(FINAL_STATUSES),
                Job.finished_at >= now - window,
                Job.started_at.is_not(None),
            )
        )
        if started_at is not None and finished_at is not None
    ]

    # The epoch row of a running job's latest epoch (none yet: NULLs from the outer join).
    latest = JobEpoch.__table__.c
    running = [
        RunningJob(
            samples_per_s=_number(record, "samples_per_s"),
            epoch_wall_time_s=_number(record, "wall_time_s"),
        )
        for (record,) in session.execute(
            select(JobEpoch.record)
            .select_from(Job)
            .outerjoin(JobEpoch, and_(latest.job_id == Job.id, latest.epoch == Job.epoch))
            .where(Job.status == "running", Job.lease_expires_at >= now)
        )
    ]
    age = 0.0 if oldest_queued is None else max((now - oldest_queued).total_seconds(), 0.0)
    return JobStats(
        by_status=by_status, oldest_queued_age_s=age, finished=finished, running=running
    )


def _number(record: dict[str, object] | None, key: str) -> float | None:
    value = None if record is None else record.get(key)
    return float(value) if isinstance(value, int | float) else None


__all__ = [
    "FINAL_STATUSES",
    "JOB_STATUSES",
    "FinishedJob",
    "JobStats",
    "RunningJob",
    "read_job_stats",
]
