"""Per-tenant limits on jobs, request side: the steps a job may take, how long it may run,
and how many of a tenant's jobs may wait in the queue. Every tenant gets the same
:class:`JobLimits`, built from ``Settings``; each limit counts that tenant's jobs only.

- Steps: epochs × steps per epoch, summed over the epochs of the batch-size schedule, with
  steps per epoch = ⌈n_train / B⌉ (⌊n_train / B⌋ with ``drop_last``) as the training loop
  takes them, n_train the rows left after the validation split. An adaptive schedule is
  counted at its starting size: it never shrinks, so that is the most steps it can take.
  Over the limit: 422 naming ``body.epochs`` and ``body.batch_size``.
- Runtime: a job that sets no ``max_runtime_s`` gets the limit; one asking for more is a 422
  naming ``body.max_runtime_s``. The worker ends a job past it as ``failed`` (``time_limit``).
- Queued jobs: past the limit, :class:`TooManyQueuedJobs` (429 with ``Retry-After``), see
  :func:`queue_room`. Exact under concurrent submits: the count is taken after the caller's
  own inserts, holding a lock to the commit — on PostgreSQL the tenant's advisory lock
  (:func:`service.jobs.repository.lock_tenant_queue`), on SQLite the database's write lock,
  which the first insert takes — so of two concurrent submits the second counts the first.

The running-jobs limit is the claim's (:func:`service.jobs.queue.claim`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from sqlalchemy.orm import Session

from service.config import Settings
from service.core import TrainConfig, split_sizes
from service.errors import FieldError, InvalidInput, TooManyQueuedJobs
from service.jobs import repository

__all__ = [
    "QUEUE_RETRY_AFTER_S",
    "JobLimits",
    "StepCount",
    "count_steps",
    "queue_room",
    "steps_per_epoch",
]

#: What a 429 for a full queue tells clients to wait: long enough for workers to start some.
QUEUE_RETRY_AFTER_S = 30


@dataclass(frozen=True)
class StepCount:
    """The optimizer steps a config takes on a dataset.

    total : over every epoch. n_train : training rows (after the validation split).
    first_batch_size, first_steps : the batch size and steps of epoch 1.
    last_batch_size : the batch size of the last epoch (the largest: schedules never shrink).
    """

    total: int
    n_train: int
    first_batch_size: int
    first_steps: int
    last_batch_size: int


def steps_per_epoch(n_train: int, batch_size: int, *, drop_last: bool) -> int:
    """Steps of one epoch over ``n_train`` rows, as ``Training`` takes them: a final partial
    batch is a step unless ``drop_last``."""
    full, partial = divmod(n_train, batch_size)
    return full + (1 if partial and not drop_last else 0)


def count_steps(config: TrainConfig, n_rows: int) -> StepCount:
    """The steps ``config`` takes on ``n_rows`` rows (see the module docstring); the config
    must already have passed ``check_config_for_dataset``.

    The schedule changes the batch size at most every ``every_epochs`` epochs, and once two
    such periods run at the same size it has reached its cap for good, so the sum takes a few
    iterations whatever ``epochs`` is.
    """
    n_train, _ = split_sizes(n_rows, config.validation_split)
    base = config.batch_size if config.batch_size is not None else n_train
    schedule = config.batch_size_schedule
    period = schedule.every_epochs
    total = 0
    first = last = schedule.batch_size_at(0, base, n_train)
    epoch = 0
    while epoch < config.epochs:
        size = schedule.batch_size_at(epoch, base, n_train)
        steps = steps_per_epoch(n_train, size, drop_last=config.drop_last)
        if epoch > 0 and size == last:
            total += (config.epochs - epoch) * steps  # capped: the rest run at this size
            break
        total += min(period, config.epochs - epoch) * steps
        last = size
        epoch += period
    return StepCount(
        total=total,
        n_train=n_train,
        first_batch_size=first,
        first_steps=steps_per_epoch(n_train, first, drop_last=config.drop_last),
        last_batch_size=last,
    )


@dataclass(frozen=True)
class JobLimits:
    """The limits every tenant's jobs are held to; ``None`` leaves that one unchecked."""

    max_queued_jobs: int | None = None
    max_steps_per_job: int | None = None
    max_job_runtime_s: float | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> JobLimits:
        return cls(
            max_queued_jobs=settings.tenant_max_queued_jobs,
            max_steps_per_job=settings.max_steps_per_job,
            max_job_runtime_s=settings.max_job_runtime_s,
        )

    def runtime_for(self, requested: float | None) -> float | None:
        """The ``max_runtime_s`` a job gets: the one asked for, else the limit. A request
        above the limit is a 422 naming ``body.max_runtime_s``."""
        limit = self.max_job_runtime_s
        if limit is None:
            return requested
        if requested is None:
            return limit
        if requested > limit:
            msg = (
                f"{requested:g} s is more than the {limit:g} s one job may run "
                "(BATCHWISE_MAX_JOB_RUNTIME_S); ask for at most that, or leave it out to get it"
            )
            raise InvalidInput(
                f"The job cannot run: max_runtime_s: {msg}.",
                errors=[FieldError(("body", "max_runtime_s"), msg, "runtime_above_limit")],
            )
        return requested

    def check_steps(self, config: TrainConfig, *, n_rows: int) -> None:
        """A 422 naming ``body.epochs`` and ``body.batch_size`` when ``config`` would take
        more steps than one job may on ``n_rows`` rows."""
        limit = self.max_steps_per_job
        if limit is None:
            return
        count = count_steps(config, n_rows)
        if count.total <= limit:
            return
        if count.last_batch_size == count.first_batch_size:
            how = (
                f"{config.epochs} epochs × {count.first_steps} steps per epoch "
                f"({count.n_train} training rows at batch size {count.first_batch_size})"
            )
        else:
            how = (
                f"{config.epochs} epochs over {count.n_train} training rows at batch sizes "
                f"{count.first_batch_size} to {count.last_batch_size} (the batch-size schedule)"
            )
        epochs_msg = (
            f"{config.epochs} epochs take {count.total} steps, more than the {limit} one job "
            "may take (BATCHWISE_MAX_STEPS_PER_JOB)"
        )
        batch_msg = (
            f"batch size {count.first_batch_size} takes {count.first_steps} steps per epoch "
            f"over {count.n_train} training rows; a larger batch takes fewer"
        )
        raise InvalidInput(
            f"The job would take {count.total} steps, {how}, more than the {limit} steps one "
            "job may take (BATCHWISE_MAX_STEPS_PER_JOB): lower epochs or raise batch_size.",
            errors=[
                FieldError(("body", "epochs"), epochs_msg, "too_many_steps"),
                FieldError(("body", "batch_size"), batch_msg, "too_many_steps"),
            ],
        )


def _queue_full(queued: int, limit: int, what: str) -> TooManyQueuedJobs:
    room = max(0, limit - queued)
    return TooManyQueuedJobs(
        f"You have {queued} queued jobs and may have at most {limit} "
        f"(BATCHWISE_TENANT_MAX_QUEUED_JOBS), so {what} cannot be queued now: there is room "
        f"for {room}. "
        f"Retry in {QUEUE_RETRY_AFTER_S} s, once workers have started some, or cancel "
        "queued jobs.",
        retry_after_s=QUEUE_RETRY_AFTER_S,
    )


@contextmanager
def queue_room(
    session: Session, tenant: str, limits: JobLimits | None, *, adding: int, what: str
) -> Iterator[None]:
    """Around the insert of ``adding`` queued jobs of ``tenant``: :class:`TooManyQueuedJobs`
    (429) when, counting them, ``tenant`` has more queued jobs than ``limits`` allow (``what``
    names them in the detail: "this job"). The caller's rollback then undoes the inserts.
    Nothing is checked without a limit.

    The tenant's queue lock is taken before the inserts and held to the commit, and the count
    made after them, so it is exact under concurrent submits (see the module docstring).
    """
    limit = None if limits is None else limits.max_queued_jobs
    if limit is None:
        yield
        return
    repository.lock_tenant_queue(session, tenant)
    yield
    queued = repository.count_queued(session, tenant)
    if queued > limit:
        raise _queue_full(queued - adding, limit, what)
