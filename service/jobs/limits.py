"""Per-tenant limits on jobs, request side: the steps a job may take, how long it may run,
and how many of a tenant's jobs may wait in the queue. Every tenant gets the
:class:`JobLimits` built from ``Settings``, with its own overrides in place
(:meth:`JobLimits.for_tenant`, :mod:`service.tenants`); each limit counts that tenant's jobs
only.

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

- Memory: the bytes one job needs in a worker (:func:`service.core.estimate_job_bytes`:
  parameters, gradient, optimizer state, checkpoints, a step's work arrays at the largest
  batch the schedule reaches, the rows held, the stored model), from the config and the
  dataset's shape. Over ``max_job_bytes``: 422 naming the fields that drive it
  (``body.hidden_layers``, ``body.batch_size``, ``body.dataset_id``, …) with the bytes.

The running-jobs limit is the claim's (:func:`service.jobs.queue.claim`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

from sqlalchemy.orm import Session

from service import tenants as tenant_limits
from service.config import Settings
from service.core import Task, TrainConfig, estimate_job_bytes, model_outputs, split_sizes
from service.core.warmup import plan_epoch
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

T = TypeVar("T", int, float)

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
    if schedule.kind == "warmup":
        return _count_warmup_steps(config, n_train, base)
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


def _count_warmup_steps(config: TrainConfig, n_train: int, base: int) -> StepCount:
    """The warmup's steps, epoch by epoch as the run plans them (from the start: a warm
    start runs fewer). Once past the last point every epoch is the same."""
    schedule = config.batch_size_schedule
    last_point = schedule.points[-1][0]
    total = samples = 0
    previous: int | None = None
    first_batch = first_steps = 0
    for epoch in range(config.epochs):
        plan = plan_epoch(
            schedule,
            samples=samples,
            total_steps=total,
            previous=previous,
            base=base,
            n_train=n_train,
            drop_last=config.drop_last,
            lr_for=lambda _: config.learning_rate,
        )
        if epoch == 0:
            first_batch, first_steps = plan.phases[0].batch_size, plan.steps
        if samples >= last_point:  # the rest run at this one size
            total += (config.epochs - epoch) * plan.steps
            break
        total += plan.steps
        samples += plan.rows
        previous = plan.batch_size
    return StepCount(
        total=total,
        n_train=n_train,
        first_batch_size=first_batch,
        first_steps=first_steps,
        last_batch_size=schedule.warmup_batch_at(samples, base, n_train)[0],
    )


@dataclass(frozen=True)
class JobLimits:
    """The limits every tenant's jobs are held to; ``None`` leaves that one unchecked."""

    max_queued_jobs: int | None = None
    max_steps_per_job: int | None = None
    max_job_runtime_s: float | None = None
    max_job_bytes: int | None = None
    checkpoint_budget_bytes: int | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> JobLimits:
        return cls(
            max_queued_jobs=settings.tenant_max_queued_jobs,
            max_steps_per_job=settings.max_steps_per_job,
            max_job_runtime_s=settings.max_job_runtime_s,
            max_job_bytes=settings.resolved_max_job_bytes,
            checkpoint_budget_bytes=settings.checkpoint_budget_bytes,
        )

    def for_tenant(self, session: Session, tenant: str) -> JobLimits:
        """These limits with ``tenant``'s own in place of the defaults (its overrides,
        :mod:`service.tenants`; a limit turned off here stays off)."""
        own = tenant_limits.limits_of(session, tenant)

        def pick(default: T | None, override: T | None) -> T | None:
            return default if default is None or override is None else override

        return JobLimits(
            max_queued_jobs=pick(self.max_queued_jobs, own.max_queued_jobs),
            max_steps_per_job=pick(self.max_steps_per_job, own.max_steps_per_job),
            max_job_runtime_s=pick(self.max_job_runtime_s, own.max_job_runtime_s),
            max_job_bytes=pick(self.max_job_bytes, own.max_job_bytes),
            checkpoint_budget_bytes=self.checkpoint_budget_bytes,
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

    def check_memory(
        self,
        config: TrainConfig,
        *,
        n_rows: int,
        n_features: int,
        task: Task,
        n_classes: int | None,
    ) -> None:
        """A 422 when ``config`` would need more than ``max_job_bytes`` in a worker on this
        dataset (metadata alone; the config must have passed ``check_config_for_dataset``),
        naming every field that drives a quarter or more of it, largest first."""
        limit = self.max_job_bytes
        if limit is None:
            return
        need = estimate_job_bytes(
            config,
            n_rows=n_rows,
            n_features=n_features,
            n_outputs=model_outputs(config, task, n_classes),
        )
        total = need.total
        if total <= limit:
            return
        errors = [
            FieldError(
                ("body", _BODY_FIELDS.get(part.field, part.field)),
                f"{part.what}: {_size(part.bytes)} of the {_size(total)} the job needs, more "
                f"than the {_size(limit)} one job may use (BATCHWISE_MAX_JOB_BYTES); "
                f"{_remedy(part.field, config)}",
                "job_too_large",
            )
            for part in need.parts
            if part is need.parts[0] or 4 * part.bytes >= total
        ]
        breakdown = "; ".join(f"{part.what}: {_size(part.bytes)}" for part in need.parts)
        raise InvalidInput(
            f"The job would need about {_size(total)} in a worker, more than the "
            f"{_size(limit)} one job may use (BATCHWISE_MAX_JOB_BYTES): {breakdown}. Use fewer "
            "or narrower hidden layers, a smaller batch size or fewer rows, or ask the operator "
            "to raise BATCHWISE_MAX_JOB_BYTES.",
            errors=errors,
        )


#: The core's names of what drives a job's memory, as the request body spells them.
_BODY_FIELDS = {"dataset": "dataset_id"}


def _size(n_bytes: int) -> str:
    """``3,221,225,472 bytes (3.0 GiB)``: exact, and readable."""
    for unit, scale in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if n_bytes >= scale:
            return f"{n_bytes:,} bytes ({n_bytes / scale:.1f} {unit})"
    return f"{n_bytes:,} bytes"


def _remedy(field: str, config: TrainConfig) -> str:
    """What to change when ``field`` drives the size."""
    if field == "hidden_layers":
        return "use fewer or narrower hidden layers"
    if field == "model":
        return "a model with fewer outputs, or a dataset with fewer features or classes"
    if field == "batch_size":
        if config.batch_size_schedule.kind != "constant":
            return "use a smaller batch size or batch_size_schedule.max_batch_size"
        return "use a smaller batch size"
    if field == "validation_split":
        return "hold out fewer rows, or use narrower hidden layers"
    if field == "noise_scale_samples":
        return "measure the noise scale on fewer rows, or not at all"
    if config.dtype == "float64":
        return "train on fewer rows or features, or in float32"
    return "train on fewer rows or features"


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

    The tenant's queue lock is taken after the inserts and held to the commit, and the count
    made under it, so it is exact under concurrent submits (see the module docstring). Taken
    after, not before: every submit of the tenant waits while the lock is held, and the inserts
    need no lock (of two submits, the one that locks second counts the other's committed row:
    under READ COMMITTED, the service's isolation level, each statement sees every commit made
    before it began).
    """
    limit = None if limits is None else limits.max_queued_jobs
    yield
    if limit is None:
        return
    repository.lock_tenant_queue(session, tenant)
    queued = repository.count_queued(session, tenant)
    if queued > limit:
        raise _queue_full(queued - adding, limit, what)
