"""Run one claimed job: load its dataset → train (resuming its checkpoint) → write each epoch →
finish.

No transaction is open while training runs: each write (an epoch, a heartbeat, the finish) is
its own short transaction, fenced by the claim (see :mod:`service.jobs.queue`). A heartbeat
thread extends the lease every ``min(lease_seconds / 3, 0.5 s)`` and reads ``cancel_requested``;
the core calls ``should_stop`` between steps, which only reads flags: cancel asked, lease lost,
SIGTERM, ``max_runtime_s`` passed. How the run ends decides the write:

    completed, early stopping  → succeeded, with the model
    cancel asked               → cancelled
    SIGTERM                    → released (queued again; the next claim resumes the checkpoint)
    max_runtime_s passed       → failed, time_limit
    TrainingDiverged           → failed, diverged (the finite epochs stay)
    dataset missing or corrupt → failed, dataset_corrupt
    anything else              → failed, internal
    lease lost                 → nothing at all; the worker stops
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from service.core import Checkpoint, CoreError, TrainConfig, Training, TrainingDiverged
from service.datasets.arrays import CanonicalFileError
from service.datasets.service import StoredBytesCorruptError
from service.db import utcnow
from service.errors import NotFound
from service.jobs import queue
from service.jobs.queue import Claim, FinalStatus, LeaseLost
from service.logs import log_context
from service.sweeps import orchestration
from service.worker.cache import DatasetCache
from service.worker.signals import StopFlag

logger = logging.getLogger("service.worker")

Outcome = Literal["succeeded", "failed", "cancelled", "released", "lease_lost"]

#: The longest gap between heartbeats, whatever the lease: it bounds how late a cancel is seen.
MAX_HEARTBEAT_INTERVAL_S = 0.5


@dataclass(frozen=True)
class RunnerContext:
    """What every job run needs: sessions, the lease length, the dataset cache, the stop flag."""

    sessions: sessionmaker[Session]
    lease_seconds: float
    cache: DatasetCache
    stop: StopFlag
    clock: Callable[[], float] = time.monotonic


class _Flags:
    """Written by the heartbeat thread and the loop, read by ``should_stop`` between steps.

    Plain attributes: each write is one atomic store under the GIL, and a reader that sees a
    flag one step late only stops one step later.
    """

    def __init__(self) -> None:
        self.cancel = False
        self.lease_lost = False
        self.step = 0  # steps done in the running epoch (for progress)
        self.heartbeat: _Heartbeat | None = None
        self.started = time.monotonic()  # for the duration in the job's last log line


class _Heartbeat(threading.Thread):
    """Extends the claim's lease on a timer and raises the cancel and lease-lost flags."""

    def __init__(self, context: RunnerContext, claim: Claim, flags: _Flags) -> None:
        super().__init__(name=f"heartbeat-{claim.job_id[:8]}", daemon=True)
        self.context, self.claim, self.flags = context, claim, flags
        self.interval = min(context.lease_seconds / 3, MAX_HEARTBEAT_INTERVAL_S)
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.wait(self.interval):
            if not self.beat():
                return

    def beat(self) -> bool:
        """One heartbeat; False once the lease is lost (nothing more to do)."""
        try:
            with self.context.sessions() as session:
                cancel = queue.heartbeat(
                    session,
                    self.claim,
                    step=max(self.flags.step, 0),
                    lease_seconds=self.context.lease_seconds,
                    now=utcnow(),
                )
                session.commit()
        except LeaseLost:
            logger.warning(
                "job %s: lease lost; stopping without writing",
                self.claim.job_id,
                extra=_ids(self.claim),
            )
            self.flags.lease_lost = True
            return False
        except SQLAlchemyError as exc:
            # The database may be back before the lease ends; if not, the claim is lost anyway.
            logger.warning(
                "job %s: heartbeat failed: %s", self.claim.job_id, exc, extra=_ids(self.claim)
            )
            return True
        if cancel and not self.flags.cancel:
            logger.info("job %s: cancel requested", self.claim.job_id, extra=_ids(self.claim))
            self.flags.cancel = True
        return True

    def stop(self) -> None:
        self._done.set()
        if self.is_alive():
            self.join()


def _ids(claim: Claim) -> dict[str, object]:
    """A log call's ``extra=`` naming the claim (the heartbeat thread has no log context)."""
    return {"job_id": claim.job_id, "worker_id": claim.worker_id, "attempt": claim.attempt}


def _stop_heartbeat(flags: _Flags) -> None:
    # Before the last write: a beat after it would only find the claim gone.
    if flags.heartbeat is not None:
        flags.heartbeat.stop()


def _finish(
    context: RunnerContext,
    claim: Claim,
    flags: _Flags,
    status: FinalStatus,
    *,
    training: Training | None = None,
    error_code: str | None = None,
    error_message: str | None = None,
) -> Outcome:
    _stop_heartbeat(flags)
    if flags.lease_lost:
        return "lease_lost"
    try:
        with context.sessions() as session:
            queue.finish(
                session,
                claim,
                status=status,
                model=training.model if training is not None else None,
                error_code=error_code,
                error_message=error_message,
                now=utcnow(),
            )
            _advance_sweep(session, claim.job_id)
            session.commit()
    except LeaseLost:
        logger.warning("job %s: lease lost before it could finish as %s", claim.job_id, status)
        return "lease_lost"
    duration_s = round(time.monotonic() - flags.started, 3)
    logger.log(
        logging.WARNING if status == "failed" else logging.INFO,
        "job %s: %s after %.1f s (attempt %d)%s",
        claim.job_id,
        status,
        duration_s,
        claim.attempt,
        f" ({error_code}: {error_message})" if error_code else "",
        extra={
            "status": status,
            "error_code": error_code,
            "duration_s": duration_s,
            "attempt": claim.attempt,
        },
    )
    return status


def _advance_sweep(session: Session, job_id: str) -> None:
    """Advance the job's sweep (if any) in the finish's own transaction, so a crash cannot
    lose the step. A bug there must not lose the finish: it is rolled back to a savepoint and
    logged, and the next read of the sweep advances it."""
    try:
        with session.begin_nested():
            orchestration.job_finished(session, job_id)
    except Exception:
        logger.exception("job %s: advancing its sweep failed", job_id)


def _release(context: RunnerContext, claim: Claim, flags: _Flags) -> Outcome:
    _stop_heartbeat(flags)
    if flags.lease_lost:
        return "lease_lost"
    try:
        with context.sessions() as session:
            queue.release(session, claim, now=utcnow())
            session.commit()
    except LeaseLost:
        logger.warning("job %s: lease lost before it could be released", claim.job_id)
        return "lease_lost"
    duration_s = round(time.monotonic() - flags.started, 3)
    logger.info(
        "job %s: released to the queue (%s) after %.1f s; the next claim resumes it",
        claim.job_id,
        context.stop.signal_name,
        duration_s,
        extra={"status": "released", "duration_s": duration_s, "attempt": claim.attempt},
    )
    return "released"


def run_claim(context: RunnerContext, claim: Claim) -> Outcome:
    """Run ``claim``'s job to one of the outcomes above and write it (fenced)."""
    with log_context(job_id=claim.job_id):
        return _run_claim(context, claim)


def _run_claim(context: RunnerContext, claim: Claim) -> Outcome:
    flags = _Flags()
    heartbeat = flags.heartbeat = _Heartbeat(context, claim, flags)
    heartbeat.start()
    try:
        return _run(context, claim, flags)
    except LeaseLost:
        flags.lease_lost = True
        logger.warning("job %s: lease lost; stopping without writing", claim.job_id)
        return "lease_lost"
    except Exception as exc:  # a bug, or the database gone: fail the job with the reason
        logger.exception("job %s: internal error", claim.job_id)
        try:
            return _finish(
                context,
                claim,
                flags,
                "failed",
                error_code="internal",
                error_message=f"{type(exc).__name__}: {exc}",
            )
        except SQLAlchemyError:
            return "failed"  # not written: the lease expires and another attempt follows
    finally:
        heartbeat.stop()


def _run(context: RunnerContext, claim: Claim, flags: _Flags) -> Outcome:
    try:
        with context.sessions() as session:
            dataset, X, y = context.cache.open(session, claim.dataset_id)
            checkpoint_bytes = queue.load_checkpoint(session, claim.job_id)
    except (NotFound, StoredBytesCorruptError, CanonicalFileError) as exc:
        detail = getattr(exc, "detail", None) or str(exc)
        return _finish(
            context, claim, flags, "failed", error_code="dataset_corrupt", error_message=detail
        )

    deadline = None
    if claim.max_runtime_s is not None:
        deadline = context.clock() + claim.max_runtime_s
    stop, clock = context.stop, context.clock

    def should_stop() -> bool:
        flags.step += 1
        return (
            flags.cancel
            or flags.lease_lost
            or stop.is_set()
            or (deadline is not None and clock() > deadline)
        )

    try:
        config = TrainConfig.from_dict(claim.config)
        resume = Checkpoint.from_bytes(checkpoint_bytes) if checkpoint_bytes else None
        training = Training(
            X, y, config, resume_from=resume, should_stop=should_stop, task=dataset.task
        )
    except CoreError as exc:
        return _finish(
            context, claim, flags, "failed", error_code="internal", error_message=str(exc)
        )
    if resume is not None:
        logger.info(
            "job %s: attempt %d resumes after epoch %d", claim.job_id, claim.attempt, resume.epoch
        )

    flags.step = -1  # the core asks should_stop once before each epoch's first step
    try:
        for record in training:
            with context.sessions() as session:
                queue.record_epoch(
                    session,
                    claim,
                    record.to_dict(),
                    record.step_losses,
                    training.checkpoint().to_bytes(),
                    now=utcnow(),
                    lease_seconds=context.lease_seconds,
                )
                session.commit()
            flags.step = -1
            logger.debug(
                "job %s: epoch %d/%d, train loss %.6g, %.3g s, %.0f samples/s",
                claim.job_id,
                record.epoch,
                config.epochs,
                record.train_loss,
                record.wall_time_s,
                record.samples_per_s,
                extra={"epoch": record.epoch, "train_loss": record.train_loss},
            )
    except TrainingDiverged as exc:
        if flags.lease_lost:
            return "lease_lost"
        return _finish(
            context, claim, flags, "failed", error_code="diverged", error_message=str(exc)
        )

    if flags.lease_lost:
        return "lease_lost"
    if training.stop_reason in ("completed", "early_stopping"):
        return _finish(context, claim, flags, "succeeded", training=training)
    if flags.cancel:
        return _finish(context, claim, flags, "cancelled")
    if stop.is_set():
        return _release(context, claim, flags)
    if claim.max_runtime_s is None:  # the core stopped with no flag raised: not expected
        reason = f"training stopped unexpectedly ({training.stop_reason})"
        return _finish(context, claim, flags, "failed", error_code="internal", error_message=reason)
    return _finish(
        context,
        claim,
        flags,
        "failed",
        error_code="time_limit",
        error_message=f"the job ran past its max_runtime_s of {claim.max_runtime_s:g} s after "
        f"{training.epoch} of {config.epochs} epochs; raise max_runtime_s or train fewer epochs",
    )


__all__ = ["MAX_HEARTBEAT_INTERVAL_S", "Outcome", "RunnerContext", "run_claim"]
