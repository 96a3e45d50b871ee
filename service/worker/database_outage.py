"""Riding out a database outage while a job runs: retry a write while the lease could hold.

The database going away (a PostgreSQL restart, a network cut) is not the job's fault. A write
that fails for that reason (:func:`is_transient`) is retried with backoff, training paused,
while the lease could still hold; the heartbeat thread keeps trying too. Back in time, the job
carries on as if nothing happened. Once the lease would have expired without a successful
write, the worker gives the job up (``abandoned``): it writes nothing more for it and goes back
to the queue, where the job — its lease expired — is claimed again and resumes from its last
checkpoint.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session

from service.jobs.queue import Claim, LeaseLost
from service.worker.context import RunnerContext, claim_log_ids
from service.worker.heartbeat import RunFlags

logger = logging.getLogger("service.worker")

T = TypeVar("T")

#: A write the database refused is retried after this, doubling up to the maximum.
FIRST_RETRY_S = 0.05
MAX_RETRY_S = 1.0

#: Why a job is given up (in the worker's log).
UNREACHABLE = "the database stayed unreachable until the lease ran out"


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` says the database is (for now) out of reach rather than that a statement
    is wrong: a lost or refused connection, a server shutting down or starting up, SQLite busy.
    Those are worth retrying; anything else is a bug to report. (DBAPI's OperationalError also
    holds a few that retrying will not cure, e.g. SQLite's "no such table": retried until the
    lease runs out, those end in a given-up job rather than a job failed as ``internal``.)"""
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(exc, OperationalError | InterfaceError)


class DatabaseLost(Exception):
    """The database stayed out of reach until the lease would have expired: the worker gives
    the job up, writing nothing more for it."""


def with_database(
    context: RunnerContext,
    claim: Claim,
    flags: RunFlags,
    what: str,
    action: Callable[[Session], T],
    *,
    renews_lease: bool = False,
) -> T:
    """``action(session)`` in its own transaction, committed; retried with backoff while the
    database is out of reach (:func:`is_transient`) and the lease could still hold.

    Raises :class:`DatabaseLost` once the lease would have expired, or when the claim turns out
    lost after a failed try (a commit whose answer was lost may have gone through: the job is
    not this worker's to touch any more either way). Other errors, and :class:`LeaseLost` on a
    first try, propagate.
    """
    delay, failures = FIRST_RETRY_S, 0
    while True:
        sent = context.clock()
        try:
            with context.sessions() as session:
                result = action(session)
                session.commit()
        except LeaseLost:
            if failures:
                raise DatabaseLost(
                    f"the claim no longer holds after {failures} failed tries to {what}"
                ) from None
            raise
        except SQLAlchemyError as exc:
            if not is_transient(exc):
                raise
            failures += 1
            if flags.gave_up or context.clock() + delay > flags.lease_until:
                flags.gave_up = True
                cause = type(getattr(exc, "orig", None) or exc).__name__
                raise DatabaseLost(f"{UNREACHABLE} ({failures} tries to {what}: {cause})") from None
            logger.warning(
                "job %s: cannot %s (try %d), retrying in %.2f s: %s",
                claim.job_id,
                what,
                failures,
                delay,
                exc,
                extra=claim_log_ids(claim),
            )
            time.sleep(delay)
            delay = min(delay * 2, MAX_RETRY_S)
            continue
        if renews_lease:
            flags.renewed(sent, context.lease_seconds)
        if failures:
            logger.info("job %s: the database is back; %s done", claim.job_id, what)
        return result


__all__ = [
    "FIRST_RETRY_S",
    "MAX_RETRY_S",
    "UNREACHABLE",
    "DatabaseLost",
    "is_transient",
    "with_database",
]
