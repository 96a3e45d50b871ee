"""``/v1/jobs``: submit, list, get, cancel, delete; history (JSON or CSV), model (JSON or NPZ),
predict.

Thin: parse the request, call :mod:`service.jobs.service`, return its read schema. Training
happens in worker processes; nothing here waits for it.
"""

from __future__ import annotations

from functools import partial
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.responses import PlainTextResponse
from pydantic import TypeAdapter
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from service.api.auth import REQUIRE_TENANT
from service.api.deps import (
    PageCursor,
    PageLimit,
    ReadsDep,
    SessionDep,
    SessionsDep,
    SettingsDep,
    TenantDep,
    in_transaction,
)
from service.api.offload import offload
from service.api.openapi import schema_ref
from service.api.problems import created_responses, problem_responses
from service.jobs import checkpoints, predictions
from service.jobs import service as jobs_service
from service.jobs.checkpoints import CheckpointList
from service.jobs.limits import JobLimits
from service.jobs.read_schemas import HistoryRead, JobPage, JobRead, ModelRead, PredictResponse
from service.jobs.schemas import (
    EXAMPLE_DATASET_ID,
    EXAMPLE_JOB_ID,
    JobStatus,
    JobSubmit,
    PredictRequest,
)
from service.probes import service as probes_service

router = APIRouter(
    prefix=jobs_service.JOBS_PATH,
    tags=["jobs"],
    dependencies=[REQUIRE_TENANT],
    responses=problem_responses(401),
)

# The hot reads (a job, its history, the model to predict with) are ``async`` routes that read
# and build their body through ReadsDep (service.api.reads): the event loop never waits on the
# database. Each returns the body it built (:func:`_json`), so FastAPI neither validates our
# own output again nor serializes it a second time; ``response_model`` still documents it.

# How FastAPI serializes a response model: pydantic's ``dump_json``, ``by_alias=True``.
_JOB_JSON, _HISTORY_JSON = TypeAdapter(JobRead), TypeAdapter(HistoryRead)


def _json(body: bytes) -> Response:
    """A body from :data:`_JOB_JSON` or :data:`_HISTORY_JSON`, sent as FastAPI sends a model."""
    return Response(body, media_type="application/json")


JobId = Annotated[str, Path(description="The job's id.", examples=[EXAMPLE_JOB_ID])]
MaxPoints = Annotated[
    int | None,
    Query(
        ge=2,
        le=1_000_000,
        description="Downsample the step losses to at most this many points: the steps are cut "
        "into max_points/2 contiguous buckets and each keeps its minimum and its maximum, so "
        "spikes survive. Omit for every step.",
    ),
]

_CREATE_EXAMPLES = {
    "seed-32": {
        "summary": "Linear regression, batch 32 for 10 epochs",
        "value": {
            "dataset_id": EXAMPLE_DATASET_ID,
            "batch_size": 32,
            "epochs": 10,
            "learning_rate": 0.01,
            "tags": ["seed-example"],
        },
    },
    "seed-128": {
        "summary": "Linear regression, batch 128 for 5 epochs",
        "value": {
            "dataset_id": EXAMPLE_DATASET_ID,
            "batch_size": 128,
            "epochs": 5,
            "learning_rate": 0.01,
            "tags": ["seed-example"],
        },
    },
    "mlp-schedules": {
        "summary": "An MLP with Adam, cosine decay and a growing batch size",
        "value": {
            "dataset_id": EXAMPLE_DATASET_ID,
            "model": "mlp",
            "hidden_layers": [32, 16],
            "optimizer": "adam",
            "learning_rate": 0.001,
            "batch_size": 32,
            "epochs": 20,
            "validation_split": 0.2,
            "standardize": True,
            "lr_schedule": {"kind": "cosine", "min_lr": 0.0001},
            "batch_size_schedule": {"kind": "grow", "factor": 2, "every_epochs": 5},
            "early_stopping": {"monitor": "val_loss", "patience": 3},
            "max_runtime_s": 600,
        },
    },
}


@router.post(
    "",
    operation_id="submitJob",
    status_code=202,
    response_model=JobRead,
    summary="Submit a training job",
    description=(
        "Queue a training job on a stored dataset. The body is the flat training config with "
        "the core's names and defaults (every field but `dataset_id` is optional), plus "
        "`max_runtime_s`, `name` and `tags`. The config is checked against the dataset before "
        "anything is queued: a batch size above the training rows, a softmax model on a "
        "regression target, an unknown optimizer or a bad schedule value is refused with 422 "
        "naming the field; an unknown dataset is 404.\n\n"
        "Limits: more steps (epochs × steps per epoch) than `BATCHWISE_MAX_STEPS_PER_JOB` or "
        "a `max_runtime_s` above `BATCHWISE_MAX_JOB_RUNTIME_S` is 422 (a job without "
        "`max_runtime_s` gets that limit); a tenant with `BATCHWISE_TENANT_MAX_QUEUED_JOBS` "
        "queued jobs is answered 429 with `Retry-After`.\n\n"
        "Warm start: `init_from` {`job_id`, `epoch`, `reset_optimizer`} starts from one of "
        "your jobs' checkpoints (`GET /v1/jobs/{id}/checkpoints`) on the same dataset and "
        "model; `epochs` then counts on from that epoch. `keep_checkpoints` (epochs, or "
        '`"all"`) keeps checkpoints to start from, within `BATCHWISE_CHECKPOINT_BUDGET_BYTES` '
        'per tenant. `batch_size_schedule` `{"kind": "warmup", "points": [[samples, batch], '
        '…]}` (or `"probe_id"`) grows the batch as training goes.\n\n'
        "Answers 202 with the job (`status` = `queued`, the resolved config with every "
        "default filled in, and `links`) and its `Location`. A worker picks it up; follow it "
        "with `GET /v1/jobs/{id}`."
    ),
    responses=created_responses("The queued job.", status=202)
    | problem_responses(400, 404, 422, 429),
    openapi_extra={
        "requestBody": {
            "content": {"application/json": {"examples": _CREATE_EXAMPLES}},
        }
    },
)
async def submit_job(
    body: JobSubmit, sessions: SessionsDep, settings: SettingsDep, tenant: TenantDep
) -> Response:
    # All its database work in one hop to the pool, committed there: the tenant's queue lock
    # (service.jobs.limits) is held to the commit, and SessionDep would commit after more hops,
    # each of which holds every other submit of the tenant waiting (docs/performance.md).
    limits = JobLimits.from_settings(settings)

    def submit(session: Session) -> JobRead:
        def resolve_probe(probe_id: str) -> list[tuple[int, int]]:
            return probes_service.warmup_points_for(session, probe_id, tenant=tenant)

        return jobs_service.submit(
            session, body, tenant=tenant, limits=limits, resolve_probe=resolve_probe
        )

    job = await run_in_threadpool(partial(in_transaction, sessions, submit))
    response = _json(_JOB_JSON.dump_json(job, by_alias=True))
    response.status_code = 202
    response.headers["Location"] = job.links.self
    return response


@router.get(
    "/{job_id}/checkpoints",
    operation_id="listJobCheckpoints",
    summary="A job's checkpoints",
    description="The checkpoints a job has, in epoch order: those it keeps "
    "(`keep_checkpoints`; `kept` true) and its latest (`latest` true), each with the samples "
    "seen and the training loss at that epoch and its size. An epoch it asked for that did "
    "not fit in the tenant's checkpoint budget is listed with `kept` false and a `note`. "
    "Any of them can start a warm start: `POST /v1/jobs` with `init_from`. Also the tenant's "
    "`budget_bytes` and `used_bytes`.",
    responses=problem_responses(404),
)
def list_checkpoints(
    job_id: JobId, session: SessionDep, settings: SettingsDep, tenant: TenantDep
) -> CheckpointList:
    return checkpoints.list_checkpoints(
        session, job_id, tenant=tenant, budget=settings.checkpoint_budget_bytes
    )


@router.get(
    "",
    operation_id="listJobs",
    summary="List jobs",
    description="Jobs, newest first, one page at a time, optionally only those with a "
    "`status`, on a `dataset_id`, or carrying a `tag`. Pass a page's `next_cursor` as "
    "`cursor` (with the same filters) to get the next; it is null on the last page.",
    responses=problem_responses(400, 422),
)
def list_jobs(
    session: SessionDep,
    tenant: TenantDep,
    limit: PageLimit = 20,
    cursor: PageCursor = None,
    status: Annotated[JobStatus | None, Query(description="Only jobs in this status.")] = None,
    dataset_id: Annotated[
        str | None, Query(max_length=36, description="Only jobs on this dataset.")
    ] = None,
    tag: Annotated[
        str | None, Query(min_length=1, max_length=50, description="Only jobs with this tag.")
    ] = None,
) -> JobPage:
    return jobs_service.list_jobs(
        session,
        tenant=tenant,
        limit=limit,
        cursor=cursor,
        status=status,
        dataset_id=dataset_id,
        tag=tag,
    )


@router.get(
    "/{job_id}",
    operation_id="getJob",
    response_model=JobRead,
    summary="Get a job",
    description="The job's status (queued, running, succeeded, failed, cancelled), progress "
    "(epoch, step, fraction done, ETA), latest and best losses, `error` with a code "
    "(diverged, time_limit, lease_expired, dataset_corrupt, internal) and a message when it "
    "failed, its times and attempts.\n\n"
    "For a job run with `noise_scale: true`, `batch_size_advice` says where its batch size "
    "sits against the gradient noise scale it measured (B_simple over the last quarter of "
    "its epochs, corrected for sampling without replacement): a sentence, the verdict (well "
    "below, below, near, above, well above), the noise scale, the loss it was measured at "
    "and its uncertainty factor. Null without noise-scale measurements.",
    responses=problem_responses(404),
)
async def get_job(job_id: JobId, reads: ReadsDep, tenant: TenantDep) -> Response:
    return _json(await reads(_job_body, job_id, tenant))


def _job_body(session: Session, job_id: str, tenant: str) -> bytes:
    job = jobs_service.get_job(session, job_id, tenant=tenant)
    return _JOB_JSON.dump_json(job, by_alias=True)


@router.post(
    "/{job_id}/cancel",
    operation_id="cancelJob",
    summary="Cancel a job",
    description="A queued job is cancelled at once (200, `status` = `cancelled`). A running "
    "job is flagged (202, `cancel_requested` = true): its worker stops within about a "
    "second, and the job then reads `cancelled`. A finished job cannot be cancelled (409).",
    responses={
        202: {
            "description": "Cancel requested; the worker stops the running job soon.",
            "model": JobRead,
        },
        **problem_responses(404, 409),
    },
)
def cancel_job(
    job_id: JobId, response: Response, session: SessionDep, tenant: TenantDep
) -> JobRead:
    job = jobs_service.cancel(session, job_id, tenant=tenant)
    if job.status == "running":
        response.status_code = 202
    return job


@router.delete(
    "/{job_id}",
    operation_id="deleteJob",
    status_code=204,
    response_class=Response,
    summary="Delete a job",
    description="Delete a finished job (succeeded, failed or cancelled) with its history, "
    "checkpoint and model. A queued or running job is refused with 409: cancel it first.",
    responses=problem_responses(404, 409),
)
def delete_job(job_id: JobId, session: SessionDep, tenant: TenantDep) -> None:
    jobs_service.delete_job(session, job_id, tenant=tenant)


_HISTORY_DESCRIPTION = (
    "The history so far, readable while the job runs: per-epoch arrays (`epoch`, "
    "`train_loss`, `val_loss`, `val_rmse` and `val_r2` for regression or `val_accuracy` for "
    "classification, `learning_rate`, `batch_size`, `samples_seen`, `wall_time_s`, "
    "`samples_per_s`, `noise_scale`) and the per-step training losses `steps` = "
    "`{step, loss}`. `max_points` downsamples the steps keeping each bucket's min and max. "
    "Values that do not apply are null; nothing is ever NaN or infinite. As a table: "
    "`GET /v1/jobs/{id}/history.csv`."
)
#: The ``format=`` forms from before each media type had its own operation: they still
#: answer, undocumented, so that existing clients keep working.
_OLD_FORMAT = "Undocumented: the operation with its own path replaces it."
CsvTable = Annotated[
    Literal["epochs", "steps"],
    Query(
        description="`epochs` (default): one row per epoch; `steps`: one `step,loss` row per "
        "(kept) step."
    ),
]


@router.get(
    "/{job_id}/history",
    operation_id="getJobHistory",
    response_model=HistoryRead,
    summary="Get a job's loss history",
    description=_HISTORY_DESCRIPTION,
    responses=problem_responses(404, 422),
)
async def get_history(
    job_id: JobId,
    reads: ReadsDep,
    tenant: TenantDep,
    max_points: MaxPoints = None,
    format: Annotated[
        Literal["json", "csv"], Query(include_in_schema=False, description=_OLD_FORMAT)
    ] = "json",
    table: Annotated[
        Literal["epochs", "steps"], Query(include_in_schema=False, description=_OLD_FORMAT)
    ] = "epochs",
) -> Response:
    if format == "csv":
        return await get_history_csv(job_id, reads, tenant, max_points, table)
    return _json(await reads(_history_body, job_id, tenant, max_points))


def _history_body(session: Session, job_id: str, tenant: str, max_points: int | None) -> bytes:
    history = jobs_service.history(session, job_id, tenant=tenant, max_points=max_points)
    return _HISTORY_JSON.dump_json(history, by_alias=True)


@router.get(
    "/{job_id}/history.csv",
    operation_id="getJobHistoryCsv",
    response_class=Response,
    summary="Get a job's loss history as CSV",
    description="The history as a CSV table with a header row: `table=epochs` (default) one "
    "row per epoch with the columns of `GET /v1/jobs/{id}/history`, `table=steps` one "
    "`step,loss` row per (kept) step. Values that do not apply are empty. Readable while the "
    "job runs.",
    responses={
        200: {
            "description": "The table, as an attachment.",
            "content": {
                "text/csv": {
                    "schema": {"type": "string"},
                    "example": "epoch,train_loss,val_loss,...\n1,0.41,0.38,...\n",
                }
            },
        },
        **problem_responses(404, 422),
    },
)
async def get_history_csv(
    job_id: JobId,
    reads: ReadsDep,
    tenant: TenantDep,
    max_points: MaxPoints = None,
    table: CsvTable = "epochs",
) -> Response:
    text = await reads(
        jobs_service.history_csv, job_id, tenant=tenant, table=table, max_points=max_points
    )
    return PlainTextResponse(
        text,
        media_type="text/csv",
        headers={"Content-Disposition": f'attachment; filename="job-{job_id}-{table}.csv"'},
    )


@router.get(
    "/{job_id}/model",
    operation_id="getJobModel",
    response_model=ModelRead,
    summary="Get a job's model",
    description="A succeeded job's fitted model: named parameters, the standardisation "
    "applied to inputs (`(x − mean) / std`), class labels, the config and the dataset's "
    "feature names. As an `.npz` file: `GET /v1/jobs/{id}/model.npz`. 409 until the job has "
    "succeeded.",
    responses=problem_responses(404, 409, 422),
)
def get_model(
    job_id: JobId,
    session: SessionDep,
    tenant: TenantDep,
    format: Annotated[
        Literal["json", "npz"], Query(include_in_schema=False, description=_OLD_FORMAT)
    ] = "json",
) -> ModelRead | Response:
    if format == "npz":
        return get_model_npz(job_id, session, tenant)
    return predictions.get_model(session, job_id, tenant=tenant)


@router.get(
    "/{job_id}/model.npz",
    operation_id="getJobModelNpz",
    response_class=Response,
    summary="Get a job's model as an .npz file",
    description="A succeeded job's fitted model as a NumPy `.npz` archive that needs no "
    "pickle (`np.load(path)` reads it): the flat parameter vector `theta`, the inputs' `mean` "
    "and `std` when standardised, the `classes` of a classifier, and `header`, UTF-8 JSON "
    "bytes with the config, the task and the number of features. 409 until the job has "
    "succeeded.",
    responses={
        200: {
            "description": "The `.npz` archive, as an attachment.",
            "content": {
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
            },
        },
        **problem_responses(404, 409, 422),
    },
)
def get_model_npz(job_id: JobId, session: SessionDep, tenant: TenantDep) -> Response:
    return Response(
        predictions.get_model_npz(session, job_id, tenant=tenant),
        media_type="application/octet-stream",
        headers={"Content-Disposition": f'attachment; filename="job-{job_id}-model.npz"'},
    )


@router.post(
    "/{job_id}/predict",
    operation_id="predict",
    summary="Predict with a job's model",
    description="Predictions for rows `X` (each with the dataset's features, in order) from "
    "a succeeded job's model: values for regression, the dataset's own class labels for "
    "classifiers, with `probabilities` (columns in the order of `classes`). A row of the "
    "wrong width is refused with 422 naming the expected width; 409 until the job has "
    "succeeded. At most 100,000 rows, and a body of at most `BATCHWISE_MAX_REQUEST_BYTES` "
    "(413 above it): send more rows in several requests.",
    response_model=PredictResponse,
    responses=problem_responses(400, 404, 409, 413, 422),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": schema_ref(PredictRequest)}},
        }
    },
)
async def predict(job_id: JobId, request: Request, reads: ReadsDep, tenant: TenantDep) -> Response:
    # FastAPI would decode the body on the event loop; offload decodes it (a large one in a
    # child process, which also predicts and serializes the answer), once the model is found.
    raw = await request.body()  # under its cap: service.api.body_limit
    npz = await reads(predictions.get_model_npz, job_id, tenant=tenant)
    return _json(await offload(request, len(raw), predictions.predict_json, raw, npz))
