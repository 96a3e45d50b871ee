"""The worker loop: claim a job, run it, repeat; poll with backoff when the queue is empty.

Idle, the worker looks at the queue after 50 ms, then doubles the wait up to
``poll_seconds``; a claimed job resets it. SIGTERM (see :mod:`service.worker.signals`) ends
the loop: while idle at once, while training at the next step, after releasing the job.
A worker whose lease was lost (it was paused past it and another took the job) exits with
:data:`EXIT_LEASE_LOST`: whatever made it late may make it late again. The database going
away is not the worker's fault, so it never ends the loop: an idle worker keeps polling (with
the same backoff), and a job the database stayed away from past its lease is given up
(``abandoned``, see :mod:`service.worker.database_outage`) while the worker goes on polling.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from service.config import Settings
from service.db import create_engine_for, session_factory
from service.jobs import queue
from service.logs import log_context
from service.worker.cache import DatasetCache
from service.worker.context import RunnerContext
from service.worker.runner import run_claim
from service.worker.signals import StopFlag

logger = logging.getLogger("service.worker")

EXIT_OK = 0
EXIT_LEASE_LOST = 3
#: The first wait of an idle worker; it doubles up to ``Settings.poll_seconds``.
MIN_POLL_SECONDS = 0.05


def new_worker_id() -> str:
    """``host:pid:random`` — unique per process, readable in the jobs table."""
    return f"{socket.gethostname()[:60]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def run_worker(
    settings: Settings, *, stop: StopFlag, worker_id: str | None = None, burst: bool = False
) -> int:
    """Claim and run jobs until ``stop`` is set (``burst``: until the queue is empty too).

    Returns the process exit status: :data:`EXIT_OK`, or :data:`EXIT_LEASE_LOST`.
    """
    worker_id = worker_id or new_worker_id()
    engine = create_engine_for(settings.resolved_database_url)
    context = RunnerContext(
        sessions=session_factory(engine),
        lease_seconds=settings.lease_seconds,
        cache=DatasetCache(settings.data_dir / "cache"),
        stop=stop,
        checkpoint_budget_bytes=settings.checkpoint_budget_bytes,
    )
    with log_context(worker_id=worker_id):
        return _loop(settings, context, engine, worker_id=worker_id, burst=burst)


def _loop(
    settings: Settings,
    context: RunnerContext,
    engine: Engine,
    *,
    worker_id: str,
    burst: bool,
) -> int:
    stop = context.stop
    logger.info(
        "worker %s: started (pid %d, %d BLAS thread%s, lease %g s)",
        worker_id,
        os.getpid(),
        settings.worker_threads,
        "" if settings.worker_threads == 1 else "s",
        settings.lease_seconds,
        extra={"pid": os.getpid(), "threads": settings.worker_threads},
    )
    delay = MIN_POLL_SECONDS
    try:
        while not stop.is_set():
            try:
                with context.sessions() as session:
                    claimed = queue.claim(
                        session,
                        worker_id=worker_id,
                        lease_seconds=settings.lease_seconds,
                        max_running_per_tenant=settings.tenant_max_running_jobs,
                    )
                    session.commit()
            except SQLAlchemyError as exc:
                logger.warning("worker %s: cannot claim: %s", worker_id, exc)
                claimed = None
            if claimed is None:
                if burst:
                    break
                stop.wait(delay)
                delay = min(delay * 2, settings.poll_seconds)
                continue
            delay = MIN_POLL_SECONDS
            logger.info(
                "worker %s: claimed job %s (attempt %d)",
                worker_id,
                claimed.job_id,
                claimed.attempt,
                extra={"job_id": claimed.job_id, "attempt": claimed.attempt},
            )
            # Any other outcome, "abandoned" included, leaves the worker polling the queue.
            if run_claim(context, claimed) == "lease_lost":
                logger.warning(
                    "worker %s: lost the lease of job %s; exiting",
                    worker_id,
                    claimed.job_id,
                    extra={"job_id": claimed.job_id, "attempt": claimed.attempt},
                )
                return EXIT_LEASE_LOST
        return EXIT_OK
    finally:
        engine.dispose()
        reason = f" ({stop.signal_name})" if stop.signal_name else ""
        logger.info("worker %s: stopped%s", worker_id, reason)


__all__ = ["EXIT_LEASE_LOST", "EXIT_OK", "MIN_POLL_SECONDS", "new_worker_id", "run_worker"]
