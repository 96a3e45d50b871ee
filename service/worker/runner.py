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
    database unreachable       → nothing at all; the worker carries on (see below)

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
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, TypeVar

import numpy as np
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from service.core import (
    Checkpoint,
    CoreError,
    EpochRecord,
    TrainConfig,
    Training,
    TrainingDiverged,
)
from service.datasets.arrays import CanonicalFileError
from service.datasets.schemas import DatasetRead
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

Outcome = Literal["succeeded", "failed", "cancelled", "released", "lease_lost", "abandoned"]

T = TypeVar("T")

#: The longest gap between heartbeats, whatever the lease: it bounds how late a cancel is seen.
MAX_HEARTBEAT_INTERVAL_S = 0.5
#: A write the database refused is retried after this, doubling up to the maximum.
FIRST_RETRY_S = 0.05
MAX_RETRY_S = 1.0


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` says the database is (for now) out of reach rather than that a statement
    is wrong: a lost or refused connection, a server shutting down or starting up, SQLite busy.
    Those are worth retrying; anything else is a bug to report. (DBAPI's OperationalError also
    holds a few that retrying will not cure, e.g. SQLite's "no such table": retried until the
    lease runs out, those end in a given-up job rather than a job failed as ``internal``.)"""
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(exc, OperationalError | InterfaceError)


#: Why a job is given up (in the worker's log).
UNREACHABLE = "the database stayed unreachable until the lease ran out"


class DatabaseLost(Exception):
    """The database stayed out of reach until the lease would have expired: the worker gives
    the job up, writing nothing more for it."""


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
        self.lease_until = 0.0  # (the context's clock) when the lease ends unless renewed
        self.gave_up = False  # the database stayed away until the lease ran out

    def renewed(self, at: float, lease_seconds: float) -> None:
        """A write that extends the lease succeeded; it was sent at ``at``."""
        self.lease_until = max(self.lease_until, at + lease_seconds)


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
        """One heartbeat; False once the lease is lost or given up (nothing more to do)."""
        sent = self.context.clock()
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
            # The database may be back before the lease ends; if not, the job is given up.
            logger.warning(
                "job %s: heartbeat failed: %s", self.claim.job_id, exc, extra=_ids(self.claim)
            )
            if self.context.clock() < self.flags.lease_until:
                return True
            self.flags.gave_up = True  # training stops at its next step
            return False
        self.flags.renewed(sent, self.context.lease_seconds)
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


def _with_database(
    context: RunnerContext,
    claim: Claim,
    flags: _Flags,
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
                extra=_ids(claim),
            )
            time.sleep(delay)
            delay = min(delay * 2, MAX_RETRY_S)
            continue
        if renews_lease:
            flags.renewed(sent, context.lease_seconds)
        if failures:
            logger.info("job %s: the database is back; %s done", claim.job_id, what)
        return result


def _abandon(claim: Claim, flags: _Flags, reason: DatabaseLost | str) -> Outcome:
    _stop_heartbeat(flags)
    logger.warning(
        "job %s: given up (%s); it is claimed again once its lease has expired, and resumes "
        "from its last checkpoint",
        claim.job_id,
        reason,
        extra={"status": "abandoned", "attempt": claim.attempt},
    )
    return "abandoned"


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
    if flags.gave_up:
        return _abandon(claim, flags, UNREACHABLE)

    def finish(session: Session) -> None:
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

    try:
        _with_database(context, claim, flags, f"finish as {status}", finish)
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
    if flags.gave_up:
        return _abandon(claim, flags, UNREACHABLE)
    try:
        _with_database(
            context,
            claim,
            flags,
            "release the job",
            lambda session: queue.release(session, claim, now=utcnow()),
        )
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
    flags.renewed(context.clock(), context.lease_seconds)  # the claim's own lease
    heartbeat = flags.heartbeat = _Heartbeat(context, claim, flags)
    heartbeat.start()
    try:
        return _run(context, claim, flags)
    except LeaseLost:
        flags.lease_lost = True
        logger.warning("job %s: lease lost; stopping without writing", claim.job_id)
        return "lease_lost"
    except DatabaseLost as exc:
        return _abandon(claim, flags, exc)
    except Exception as exc:  # a bug: fail the job with the reason
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
        except DatabaseLost as lost:
            return _abandon(claim, flags, lost)
        except SQLAlchemyError:
            return "failed"  # not written: the lease expires and another attempt follows
    finally:
        heartbeat.stop()


def _run(context: RunnerContext, claim: Claim, flags: _Flags) -> Outcome:
    def load(session: Session) -> tuple[DatasetRead, np.ndarray, np.ndarray, bytes | None]:
        dataset, X, y = context.cache.open(session, claim.dataset_id)
        return dataset, X, y, queue.load_checkpoint(session, claim.job_id)

    try:
        dataset, X, y, checkpoint_bytes = _with_database(
            context, claim, flags, "load the dataset and checkpoint", load
        )
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
            or flags.gave_up
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
            checkpoint = training.checkpoint().to_bytes()

            def write_epoch(
                session: Session, record: EpochRecord = record, checkpoint: bytes = checkpoint
            ) -> None:
                queue.record_epoch(
                    session,
                    claim,
                    record.to_dict(),
                    record.step_losses,
                    checkpoint,
                    now=utcnow(),
                    lease_seconds=context.lease_seconds,
                )

            _with_database(
                context,
                claim,
                flags,
                f"record epoch {record.epoch}",
                write_epoch,
                renews_lease=True,
            )
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
        if flags.gave_up:
            return _abandon(claim, flags, UNREACHABLE)
        return _finish(
            context, claim, flags, "failed", error_code="diverged", error_message=str(exc)
        )

    if flags.lease_lost:
        return "lease_lost"
    if flags.gave_up:
        return _abandon(claim, flags, UNREACHABLE)
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


__all__ = [
    "FIRST_RETRY_S",
    "MAX_HEARTBEAT_INTERVAL_S",
    "MAX_RETRY_S",
    "UNREACHABLE",
    "DatabaseLost",
    "Outcome",
    "RunnerContext",
    "is_transient",
    "run_claim",
]
