"""What every job run of a worker shares, and how its log lines name the claim."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy.orm import Session, sessionmaker

from service.jobs.queue import Claim
from service.worker.cache import DatasetCache
from service.worker.signals import StopFlag


@dataclass(frozen=True)
class RunnerContext:
    """What every job run needs: sessions, the lease length, the dataset cache, the stop flag;
    the tenants' budget of kept checkpoints (None: no limit)."""

    sessions: sessionmaker[Session]
    lease_seconds: float
    cache: DatasetCache
    stop: StopFlag
    clock: Callable[[], float] = time.monotonic
    checkpoint_budget_bytes: int | None = None


def claim_log_ids(claim: Claim) -> dict[str, object]:
    """A log call's ``extra=`` naming the claim (the heartbeat thread has no log context)."""
    return {"job_id": claim.job_id, "worker_id": claim.worker_id, "attempt": claim.attempt}


__all__ = ["RunnerContext", "claim_log_ids"]
