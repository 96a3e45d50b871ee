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
    database unreachable       → nothing at all; the worker carries on

A write the database refuses is retried while the lease could hold; past that the job is given
up (``abandoned``) and resumes from its checkpoint at the next claim
(:mod:`service.worker.database_outage`). The heartbeat is :mod:`service.worker.heartbeat`.
"""

from __future__ import annotations

import logging
import time
from typing import Literal

import numpy as np
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

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
from service.errors import NotFound
from service.jobs import checkpoints, queue
from service.jobs.queue import Claim, FinalStatus, LeaseLost
from service.logs import log_context
from service.probes import orchestration as probes_orchestration
from service.sweeps import orchestration
from service.worker.context import RunnerContext
from service.worker.database_outage import UNREACHABLE, DatabaseLost, is_transient, with_database
from service.worker.heartbeat import Heartbeat, RunFlags

logger = logging.getLogger("service.worker")

#: A warm start's checkpoint bytes and whether its optimizer starts afresh.
Start = tuple[bytes, bool] | None

Outcome = Literal["succeeded", "failed", "cancelled", "released", "lease_lost", "abandoned"]


def _abandon(claim: Claim, flags: RunFlags, reason: DatabaseLost | str) -> Outcome:
    flags.stop_heartbeat()
    logger.warning(
        "job %s: given up (%s); it is claimed again once its lease has expired, and resumes "
        "from its last checkpoint",
        claim.job_id,
        reason,
        extra={"status": "abandoned", "attempt": claim.attempt},
    )
    return "abandoned"


def _last_write_barred(claim: Claim, flags: RunFlags) -> Outcome | None:
    """Stops the heartbeat before the job's last write, then the outcome if that write must
    not happen: the lease is lost, or the job was given up."""
    flags.stop_heartbeat()
    if flags.lease_lost:
        return "lease_lost"
    if flags.gave_up:
        return _abandon(claim, flags, UNREACHABLE)
    return None


def _finish(
    context: RunnerContext,
    claim: Claim,
    flags: RunFlags,
    status: FinalStatus,
    *,
    training: Training | None = None,
    error_code: str | None = None,
    error_message: str | None = None,
) -> Outcome:
    if barred := _last_write_barred(claim, flags):
        return barred

    def finish(session: Session) -> None:
        queue.finish(
            session,
            claim,
            status=status,
            model=training.model if training is not None else None,
            error_code=error_code,
            error_message=error_message,
        )
        _advance_sweep(session, claim.job_id)

    try:
        with_database(context, claim, flags, f"finish as {status}", finish)
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
    logged, and the next read of the sweep advances it. The database going away is no bug: its
    error propagates (a savepoint cannot outlive the connection) and the finish is retried."""
    try:
        with session.begin_nested():
            orchestration.job_finished(session, job_id)
    except Exception as exc:
        if is_transient(exc):
            raise
        logger.exception("job %s: advancing its sweep failed", job_id)
    # A probe's branch, or a probe's source (its waiting checkpoints): the same contract.
    try:
        with session.begin_nested():
            probes_orchestration.job_finished(session, job_id)
    except Exception as exc:
        if is_transient(exc):
            raise
        logger.exception("job %s: advancing its probe failed", job_id)


def _release(context: RunnerContext, claim: Claim, flags: RunFlags) -> Outcome:
    if barred := _last_write_barred(claim, flags):
        return barred
    try:
        with_database(
            context,
            claim,
            flags,
            "release the job",
            lambda session: queue.release(session, claim),
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
    flags = RunFlags()
    flags.renewed(context.clock(), context.lease_seconds)  # the claim's own lease
    heartbeat = flags.heartbeat = Heartbeat(context, claim, flags)
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


def _run(context: RunnerContext, claim: Claim, flags: RunFlags) -> Outcome:
    def load(session: Session) -> tuple[DatasetRead, np.ndarray, np.ndarray, bytes | None, Start]:
        dataset, X, y = context.cache.open(session, claim.dataset_id)
        own = queue.load_checkpoint(session, claim.job_id)
        # A warm start's first attempt starts from its source's checkpoint; later ones resume.
        start = checkpoints.load_start(session, claim.job_id) if own is None else None
        return dataset, X, y, own, start

    try:
        dataset, X, y, checkpoint_bytes, start = with_database(
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
        init_from = Checkpoint.from_bytes(start[0]) if start is not None else None
        training = Training(
            X,
            y,
            config,
            resume_from=resume,
            init_from=init_from,
            reset_optimizer=start is not None and start[1],
            should_stop=should_stop,
            task=dataset.task,
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
                    lease_seconds=context.lease_seconds,
                    checkpoint_budget_bytes=context.checkpoint_budget_bytes,
                )

            with_database(
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
        return _finish(
            context, claim, flags, "failed", error_code="diverged", error_message=str(exc)
        )

    # Every branch below ends in _finish or _release, which write nothing once the lease is
    # lost or the job given up.
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


__all__ = ["Outcome", "run_claim"]
