"""The rules for jobs, request side: submit, get, list, cancel, delete; history.

Functions take the caller's session and never commit, and the caller's ``tenant``: another
tenant's job (or dataset) is the same 404 as a missing one, and lists show the tenant's jobs
only. ``submit`` validates the config twice: the schema's bounds (done by the caller), then the
core's rules against the dataset's metadata (rows, features, task, classes), so anything that
cannot run is refused before a worker sees it, with a 422 naming the field as it is spelled in
the request body; the API passes the limits too (:mod:`service.jobs.limits`: steps, runtime,
the tenant's queued jobs).
"""

from __future__ import annotations

import uuid
from dataclasses import asdict
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from service.core import (
    CoreConfigError,
    Task,
    TrainConfig,
    check_config_for_dataset,
    effective_task,
    estimate_checkpoint_bytes,
    split_sizes,
)
from service.core.finite import finite_or_none, json_safe
from service.datasets import service as datasets_service
from service.db import Job, utcnow
from service.errors import Conflict, FieldError, InvalidInput, NotFound
from service.jobs import checkpoints, repository
from service.jobs.advice import batch_size_advice
from service.jobs.history import (
    Steps,
    downsample_min_max,
    epochs_csv,
    join_evaluations,
    join_steps,
    steps_csv,
)
from service.jobs.limits import JobLimits, queue_room
from service.jobs.read_schemas import (
    BatchSizeChangeRead,
    EvaluationsRead,
    HistoryRead,
    InitFromRead,
    JobErrorRead,
    JobLinks,
    JobPage,
    JobRead,
    LossesRead,
    NoiseScaleRead,
    ProgressRead,
    StepsRead,
)
from service.jobs.repository import JobView
from service.jobs.schemas import FINISHED_STATUSES, JobCreate, JobStatus
from service.jobs.warm_starts import ProbeResolver, resolve_probe_points, resolve_warm_start
from service.links import links as resource_links
from service.pagination import decode_cursor, page_of

JOBS_PATH = "/v1/jobs"
#: Settings of the core a client does not choose (hidden from the config shown): the
#: server's memory budget, and the split seed a warm start with another seed inherits.
SERVER_FIELDS = ("max_in_memory_bytes", "split_seed")


def _invalid_config(exc: CoreConfigError) -> InvalidInput:
    # The core names nested fields "lr_schedule.gamma" and list items "hidden_layers[0]".
    loc: list[str | int] = ["body"]
    for part in exc.field.split("."):
        name, _, index = part.partition("[")
        loc.append(name)
        if index.rstrip("]").isdigit():
            loc.append(int(index.rstrip("]")))
    return InvalidInput(
        f"The job cannot run: {exc.field}: {exc.message}.",
        errors=[FieldError(tuple(loc), exc.message, "value_error")],
    )


def _resolve_config(body: JobCreate) -> TrainConfig:
    try:
        return TrainConfig.from_dict(body.train_config())
    except CoreConfigError as exc:
        raise _invalid_config(exc) from None


def _check_points(config: TrainConfig, n_rows: int) -> None:
    """422 naming the warmup point whose batch is above the training rows."""
    n_train, _ = split_sizes(n_rows, config.validation_split)
    for i, (_, batch) in enumerate(config.batch_size_schedule.points):
        if batch > n_train:
            raise _invalid_config(
                CoreConfigError(
                    f"batch_size_schedule.points[{i}]",
                    f"batch {batch} is larger than the {n_train} training rows; lower it",
                )
            )


def submit(
    session: Session,
    body: JobCreate,
    *,
    tenant: str,
    limits: JobLimits | None = None,
    resolve_probe: ProbeResolver | None = None,
) -> JobRead:
    """Queue a job for ``tenant``: 404 for an unknown dataset (another tenant's included), 422
    naming the field for a config that cannot run on it (e.g. ``batch_size`` above the training
    rows, ``softmax`` on a regression target), else a ``queued`` job row inserted in the
    caller's transaction.

    ``limits`` (:mod:`service.jobs.limits`; None checks none): 422 for too many steps, more
    memory than one job may use, or a ``max_runtime_s`` above the limit, which a job without
    one gets; 429 when ``tenant``'s queue is full — found after the insert, which the
    caller's rollback then undoes.

    Warm starts (``init_from``) and kept checkpoints: :mod:`service.jobs.warm_starts` and
    :mod:`service.jobs.checkpoints` (their refusals name the field too); a warmup's
    ``probe_id`` is resolved into points by ``resolve_probe`` (the probes')."""
    body = resolve_probe_points(body, resolve_probe)
    config = _resolve_config(body)
    dataset = datasets_service.get_dataset(session, body.dataset_id, tenant=tenant)
    if limits is not None:
        limits = limits.for_tenant(session, tenant)
    try:
        check_config_for_dataset(
            config,
            n_rows=dataset.n_rows,
            n_features=dataset.n_features,
            task=dataset.task,
            n_classes=None if dataset.classes is None else len(dataset.classes),
        )
    except CoreConfigError as exc:
        if exc.field == "dataset":
            raise InvalidInput(
                f"Dataset {dataset.id!r} cannot be trained on: {exc.message}.",
                errors=[FieldError(("body", "dataset_id"), exc.message, "value_error")],
            ) from None
        raise _invalid_config(exc) from None
    _check_points(config, dataset.n_rows)
    start = None
    if body.init_from is not None:
        start = resolve_warm_start(session, body, config, tenant=tenant)
        config = start.config
    n_classes = None if dataset.classes is None else len(dataset.classes)
    kept = checkpoints.epochs_to_keep(
        body.keep_checkpoints, start_epoch=start.epoch if start else 0, epochs=config.epochs
    )
    if kept and limits is not None:
        each = estimate_checkpoint_bytes(
            config, n_features=dataset.n_features, task=dataset.task, n_classes=n_classes
        )
        checkpoints.budget_refusal(
            session, tenant, count=kept, each=each, budget=limits.checkpoint_budget_bytes
        )
    max_runtime_s = body.max_runtime_s
    if limits is not None:
        max_runtime_s = limits.runtime_for(body.max_runtime_s)
        limits.check_steps(config, n_rows=dataset.n_rows)
        limits.check_memory(
            config,
            n_rows=dataset.n_rows,
            n_features=dataset.n_features,
            task=dataset.task,
            n_classes=None if dataset.classes is None else len(dataset.classes),
        )
    job = Job(
        id=str(uuid.uuid4()),
        tenant=tenant,
        dataset_id=dataset.id,
        name=body.name,
        tags=list(dict.fromkeys(body.tags)),  # unique, in the order given
        config=config.to_dict(),
        max_runtime_s=max_runtime_s,
        status="queued",
        cancel_requested=False,
        attempt=0,
        max_attempts=3,
        epoch=start.epoch if start else 0,
        epochs=config.epochs,
        step=0,
        samples_seen=start.samples_seen if start else 0,
        created_at=utcnow(),
        init_from=start.init_from if start else None,
        keep_checkpoints=body.keep_checkpoints,
    )
    with queue_room(session, tenant, limits, adding=1, what="this job"):
        repository.add(session, job)
        if start is not None:
            checkpoints.store_start(session, job.id, start.data)
    return to_read(JobView.of(job))


def _progress(job: JobView, now: datetime) -> ProgressRead:
    within = 0.0
    if job.status == "running" and job.steps_per_epoch:
        within = min(job.step / job.steps_per_epoch, 1.0)
    fraction = 1.0 if job.status == "succeeded" else min((job.epoch + within) / job.epochs, 1.0)
    eta_s = None
    if job.status == "running" and job.started_at is not None and fraction > 0.0:
        elapsed = max((now - job.started_at).total_seconds(), 0.0)
        eta_s = elapsed * (1.0 - fraction) / fraction
    return ProgressRead(
        epoch=job.epoch,
        epochs=job.epochs,
        step=job.step,
        steps_per_epoch=job.steps_per_epoch,
        fraction=fraction,
        eta_s=eta_s,
    )


def links(job_id: str, dataset_id: str) -> JobLinks:
    """The URLs of a job's resources."""
    subresources = ("history", "model", "predict", "cancel", "checkpoints")
    return JobLinks(
        **resource_links(JOBS_PATH, job_id, dataset_id=dataset_id, subresources=subresources)
    )


def shown_config(config: dict[str, Any]) -> dict[str, Any]:
    """A job's stored config as a client may send it back (server-side fields left out)."""
    return {key: value for key, value in config.items() if key not in SERVER_FIELDS}


def to_read(job: JobView, *, now: datetime | None = None) -> JobRead:
    """The API's view of a job."""
    error = None
    if job.error_code is not None:
        error = JobErrorRead(code=job.error_code, message=job.error_message or "")
    return JobRead(
        id=job.id,
        dataset_id=job.dataset_id,
        name=job.name,
        tags=list(job.tags),
        status=_status(job.status),
        cancel_requested=job.cancel_requested,
        config=shown_config(job.config),
        max_runtime_s=job.max_runtime_s,
        progress=_progress(job, now or utcnow()),
        samples_seen=job.samples_seen,
        latest=LossesRead(
            train_loss=finite_or_none(job.latest_train_loss),
            val_loss=finite_or_none(job.latest_val_loss),
        ),
        best=LossesRead(
            train_loss=finite_or_none(job.best_train_loss),
            val_loss=finite_or_none(job.best_val_loss),
        ),
        init_from=None if job.init_from is None else InitFromRead(**job.init_from),
        keep_checkpoints=job.keep_checkpoints,
        error=error,
        attempts=job.attempt,
        max_attempts=job.max_attempts,
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        links=links(job.id, job.dataset_id),
    )


def _status(value: str) -> JobStatus:
    for status in ("queued", "running", "succeeded", "failed", "cancelled"):
        if value == status:
            return status
    raise ValueError(f"unknown job status {value!r}")


def get_row(session: Session, job_id: str, *, tenant: str) -> Job:
    # Another tenant's job is the very same 404 as a missing one.
    job = repository.get(session, job_id, tenant=tenant)
    if job is None:
        raise NotFound(f"No job with id {job_id!r}.")
    return job


def _read_row(session: Session, job_id: str, *, tenant: str) -> JobView:
    # As get_row, as a read-only view: no ORM object for a request that only shows the job.
    job = repository.read(session, job_id, tenant=tenant)
    if job is None:
        raise NotFound(f"No job with id {job_id!r}.")
    return job


def get_job(session: Session, job_id: str, *, tenant: str) -> JobRead:
    """``tenant``'s job with ``job_id``, its batch-size advice attached; :class:`NotFound`
    (404) otherwise."""
    job = to_read(_read_row(session, job_id, tenant=tenant))
    return job.model_copy(update={"batch_size_advice": batch_size_advice(session, job)})


def list_jobs(
    session: Session,
    *,
    tenant: str,
    limit: int,
    cursor: str | None = None,
    status: JobStatus | None = None,
    dataset_id: str | None = None,
    tag: str | None = None,
) -> JobPage:
    """A page of up to ``limit`` of ``tenant``'s jobs, newest first, matching every filter
    given, after ``cursor`` (a previous page's ``next_cursor``; 400 if malformed)."""
    after = decode_cursor(cursor) if cursor is not None else None
    rows = repository.list_page(
        session,
        tenant=tenant,
        limit=limit + 1,
        after=after,
        status=status,
        dataset_id=dataset_id,
        tag=tag,
    )
    rows, next_cursor = page_of(rows, limit)
    now = utcnow()
    return JobPage(items=[to_read(row, now=now) for row in rows], next_cursor=next_cursor)


def cancel(session: Session, job_id: str, *, tenant: str) -> JobRead:
    """Cancel a job: a queued one at once (``cancelled``), a running one by flagging it for its
    worker (``cancel_requested``; it stops within a second). 409 for a finished job."""
    now = utcnow()
    # A worker may claim or release the job between two statements: each is conditional on
    # the status it expects, so retry on the status actually found.
    for _ in range(3):
        if repository.cancel_queued(session, job_id, tenant=tenant, now=now):
            break
        if repository.request_cancel_running(session, job_id, tenant=tenant):
            break
        job = get_row(session, job_id, tenant=tenant)
        if job.status in FINISHED_STATUSES:
            raise Conflict(
                f"Job {job_id!r} has already finished ({job.status}); nothing to cancel."
            )
    return to_read(JobView.of(get_row(session, job_id, tenant=tenant)), now=now)


def delete_job(session: Session, job_id: str, *, tenant: str) -> None:
    """Delete a finished job with its history, checkpoint and model; 404 if there is none,
    409 while it is queued or running (cancel it first)."""
    if repository.delete_finished(session, job_id, FINISHED_STATUSES, tenant=tenant):
        return
    job = get_row(session, job_id, tenant=tenant)
    raise Conflict(
        f"Job {job_id!r} is {job.status}: only a finished job can be deleted; cancel it first."
    )


def _dataset_task(value: str) -> Task:
    for task in ("regression", "binary", "multiclass"):
        if value == task:
            return task
    raise ValueError(f"unknown dataset task {value!r}")


def _job_task(config: dict[str, Any], dataset_task: Task) -> Task:
    try:
        return effective_task(TrainConfig.from_dict(config), dataset_task)
    except CoreConfigError:  # validated at submit; kept safe for rows written by hand
        return dataset_task


def _first_step(records: list[dict[str, Any]]) -> int:
    """The global number of a history's first step (a warm start's follow its source's)."""
    if not records:
        return 1
    first = records[0]
    return int(first.get("total_steps", 0)) - int(first.get("steps", 0)) + 1


def _steps_for(blobs: list[bytes], max_points: int | None, first: int = 1) -> Steps:
    steps = join_steps(blobs, first)
    return steps if max_points is None else downsample_min_max(steps, max_points)


def history(
    session: Session, job_id: str, *, tenant: str, max_points: int | None = None
) -> HistoryRead:
    """The job's history so far (readable while it runs): per-epoch arrays in epoch order and
    the step losses, downsampled to at most ``max_points`` keeping each bucket's min and max."""
    # One statement for the job and its dataset's task (a job's dataset is its owner's).
    job = repository.read_with_task(session, job_id, tenant=tenant)
    if job is None:
        raise NotFound(f"No job with id {job_id!r}.")
    if job.task is None:
        raise NotFound(f"No dataset with id {job.dataset_id!r}.")
    task = _job_task(job.config, _dataset_task(job.task))
    rows = repository.epoch_rows(session, job_id)
    records = [json_safe(record) for _, record, _ in rows]
    steps = _steps_for([blob for _, _, blob in rows], max_points, _first_step(records))

    def column(name: str) -> list[Any]:
        return [record.get(name) for record in records]

    regression = task == "regression"
    return HistoryRead(
        job_id=job.id,
        status=_status(job.status),
        task=task,
        epoch=[epoch for epoch, _, _ in rows],
        train_loss=column("train_loss"),
        val_loss=column("val_loss"),
        val_rmse=column("val_rmse") if regression else None,
        val_r2=column("val_r2") if regression else None,
        val_accuracy=None if regression else column("val_accuracy"),
        learning_rate=column("learning_rate"),
        batch_size=column("batch_size"),
        samples_seen=column("samples_seen"),
        wall_time_s=column("wall_time_s"),
        samples_per_s=column("samples_per_s"),
        noise_scale=[
            None if noise is None else NoiseScaleRead(**noise) for noise in column("noise_scale")
        ],
        batch_size_reason=column("batch_size_reason"),
        batch_size_changes=[
            BatchSizeChangeRead(epoch=epoch, **change)
            for epoch, record, _ in rows
            for change in record.get("batch_changes", ())
        ],
        evaluations=EvaluationsRead(**asdict(join_evaluations(records))),
        # Not validated again: int64 and float32 arrays give lists of int and float, and
        # checking their thousands of items cost more than the rest of the history.
        steps=StepsRead.model_construct(step=steps.step.tolist(), loss=steps.loss.tolist()),
        total_steps=steps.total,
        downsampled=steps.downsampled,
    )


def history_csv(
    session: Session,
    job_id: str,
    *,
    tenant: str,
    table: str = "epochs",
    max_points: int | None = None,
) -> str:
    """The history as CSV: ``table="epochs"`` one row per epoch (columns
    :data:`service.jobs.history.EPOCH_COLUMNS`), ``"steps"`` one ``step,loss`` row per kept step."""
    _read_row(session, job_id, tenant=tenant)
    rows = repository.epoch_rows(session, job_id)
    if table == "steps":
        first = _first_step([record for _, record, _ in rows[:1]])
        return steps_csv(_steps_for([blob for _, _, blob in rows], max_points, first))
    return epochs_csv(json_safe(record) | {"epoch": epoch} for epoch, record, _ in rows)


__all__ = [
    "JOBS_PATH",
    "cancel",
    "delete_job",
    "get_job",
    "get_row",
    "history",
    "history_csv",
    "links",
    "list_jobs",
    "shown_config",
    "submit",
    "to_read",
]
