"""A running job's flags, and the heartbeat thread that keeps its lease and raises them.

The heartbeat extends the claim's lease every ``min(lease_seconds / 3, 0.5 s)`` and reads
``cancel_requested``; training reads the flags between steps (see :mod:`service.worker.runner`).
A heartbeat the database refuses is tried again at the next beat while the lease could still
hold; after that the job is given up (see :mod:`service.worker.database_outage`).
"""

from __future__ import annotations

import logging
import threading
import time

from sqlalchemy.exc import SQLAlchemyError

from service.jobs import queue
from service.jobs.queue import Claim, LeaseLost
from service.worker.context import RunnerContext, claim_log_ids

logger = logging.getLogger("service.worker")

#: The longest gap between heartbeats, whatever the lease: it bounds how late a cancel is seen.
MAX_HEARTBEAT_INTERVAL_S = 0.5


class RunFlags:
    """Written by the heartbeat thread and the loop, read by ``should_stop`` between steps.

    Plain attributes: each write is one atomic store under the GIL, and a reader that sees a
    flag one step late only stops one step later.
    """

    def __init__(self) -> None:
        self.cancel = False
        self.lease_lost = False
        self.step = 0  # steps done in the running epoch (for progress)
        self.heartbeat: Heartbeat | None = None
        self.started = time.monotonic()  # for the duration in the job's last log line
        self.lease_until = 0.0  # (the context's clock) when the lease ends unless renewed
        self.gave_up = False  # the database stayed away until the lease ran out

    def renewed(self, at: float, lease_seconds: float) -> None:
        """A write that extends the lease succeeded; it was sent at ``at``."""
        self.lease_until = max(self.lease_until, at + lease_seconds)

    def stop_heartbeat(self) -> None:
        """Before the last write: a beat after it would only find the claim gone."""
        if self.heartbeat is not None:
            self.heartbeat.stop()


class Heartbeat(threading.Thread):
    """Extends the claim's lease on a timer and raises the cancel and lease-lost flags."""

    def __init__(self, context: RunnerContext, claim: Claim, flags: RunFlags) -> None:
        super().__init__(name=f"heartbeat-{claim.job_id[:8]}", daemon=True)
        self.context, self.claim, self.flags = context, claim, flags
        self.interval = min(context.lease_seconds / 3, MAX_HEARTBEAT_INTERVAL_S)
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.wait(self.interval):
            if not self.beat():
                return

    def beat(self) -> bool:
        """One heartbeat; False once the lease is lost or given up (nothing more to do)."""
        sent = self.context.clock()
        try:
            with self.context.sessions() as session:
                cancel = queue.heartbeat(
                    session,
                    self.claim,
                    step=max(self.flags.step, 0),
                    lease_seconds=self.context.lease_seconds,
                )
                session.commit()
        except LeaseLost:
            logger.warning(
                "job %s: lease lost; stopping without writing",
                self.claim.job_id,
                extra=claim_log_ids(self.claim),
            )
            self.flags.lease_lost = True
            return False
        except SQLAlchemyError as exc:
            # The database may be back before the lease ends; if not, the job is given up.
            logger.warning(
                "job %s: heartbeat failed: %s",
                self.claim.job_id,
                exc,
                extra=claim_log_ids(self.claim),
            )
            if self.context.clock() < self.flags.lease_until:
                return True
            self.flags.gave_up = True  # training stops at its next step
            return False
        self.flags.renewed(sent, self.context.lease_seconds)
        if cancel and not self.flags.cancel:
            logger.info(
                "job %s: cancel requested", self.claim.job_id, extra=claim_log_ids(self.claim)
            )
            self.flags.cancel = True
        return True

    def stop(self) -> None:
        self._done.set()
        if self.is_alive():
            self.join()


__all__ = ["MAX_HEARTBEAT_INTERVAL_S", "Heartbeat", "RunFlags"]
