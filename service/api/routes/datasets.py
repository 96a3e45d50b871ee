"""``/v1/datasets``: upload (a multipart file, or inline JSON at ``/inline``), list, get, delete.

Thin: parse the request, call :mod:`service.datasets.service`, return its read schema. A
dataset is prepared (parsed, summarised, written in its canonical form) in the thread pool when
small and in a child process when large (:mod:`service.api.offload`), then stored in the thread
pool: off the event loop either way.
"""

from __future__ import annotations

import functools
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request, Response
from pydantic import ValidationError
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from service.api.auth import REQUIRE_TENANT
from service.api.deps import (
    PageCursor,
    PageLimit,
    ReadsDep,
    SessionDep,
    SettingsDep,
    TenantDep,
)
from service.api.offload import offload
from service.api.openapi import schema_ref
from service.api.problems import created_responses, problem_responses
from service.api.reads import Reads
from service.api.upload import MultipartForm, SpooledFile, read_body, receive_multipart, spool_dir
from service.config import Settings
from service.datasets import service as datasets_service
from service.datasets.ingest import IngestLimits
from service.datasets.schemas import (
    DatasetCreateJSON,
    DatasetPage,
    DatasetRead,
    DatasetUploadForm,
)
from service.errors import FieldError, InvalidInput, UnsupportedMediaType, body_errors

router = APIRouter(
    prefix="/v1/datasets",
    tags=["datasets"],
    dependencies=[REQUIRE_TENANT],
    responses=problem_responses(401),
)

#: JSON bodies are parsed whole, in memory: they are for small datasets. Larger ones go
#: as a multipart file, which streams to disk.
MAX_JSON_BYTES = 16 * 1024 * 1024

FILE_FIELD = "file"

_UPLOAD_FORM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": [FILE_FIELD],
    "properties": {
        FILE_FIELD: {
            "type": "string",
            "format": "binary",
            "description": "The dataset: CSV with a header row, NPY (a 2-D array), or NPZ "
            "(arrays `X` and `y`). The format is detected from the first bytes.",
        },
        "name": {
            "type": "string",
            "maxLength": 200,
            "description": "A label for people; default the file's name.",
        },
        "target": {
            "type": "string",
            "description": "Target column: name or 0-based index; default the last column.",
            "examples": ["price", "3"],
        },
        "invalid_rows": {
            "type": "string",
            "enum": ["error", "drop"],
            "default": "error",
            "description": "`drop` drops rows with NaN, infinite, empty or overflowing cells "
            "(counted in `dropped_rows`); `error` refuses the file.",
        },
    },
}

_UPLOAD_REQUEST_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "The file, streamed to disk as it arrives.",
        "content": {
            "multipart/form-data": {
                "schema": _UPLOAD_FORM_SCHEMA,
                "encoding": {
                    FILE_FIELD: {"contentType": "text/csv, application/octet-stream"},
                },
            },
        },
    }
}

_INLINE_REQUEST_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": f"A small dataset, up to {MAX_JSON_BYTES // 2**20} MiB of JSON.",
        "content": {
            "application/json": {
                "schema": schema_ref(DatasetCreateJSON),
                "examples": {
                    "inline": {
                        "summary": "Four rows, two features",
                        "value": {
                            "name": "xor-ish",
                            "X": [[0, 0], [0, 1], [1, 0], [1, 1]],
                            "y": [0, 1, 1, 0],
                            "feature_names": ["a", "b"],
                        },
                    }
                },
            },
        },
    }
}

DatasetId = Annotated[
    str, Path(description="The dataset's id.", examples=["5f0c1c9e-3f5d-4a3e-9a51-2f8d2f0c9b11"])
]


def _limits(settings: Settings) -> IngestLimits:
    return IngestLimits(
        max_rows=settings.max_rows,
        max_features=settings.max_features,
        max_cells=settings.max_cells,
        max_decompressed_bytes=settings.max_decompressed_bytes,
    )


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


def _upload_fields(form: MultipartForm) -> tuple[DatasetUploadForm, SpooledFile]:
    """The form's text fields validated, and its file; :class:`InvalidInput` listing every
    problem (missing or misnamed file part, unknown or repeated fields) otherwise."""
    errors: list[FieldError] = []
    fields = dict(form.fields)
    if FILE_FIELD in fields:
        del fields[FILE_FIELD]
        errors.append(
            FieldError(
                ("body", FILE_FIELD),
                "must be a file part, with a filename (curl: -F file=@data.csv)",
                "file_expected",
            )
        )
    for name in sorted(set(form.duplicate_fields)):
        errors.append(FieldError(("body", name), "given more than once", "duplicate"))
    for name in form.ignored_files:
        if name != FILE_FIELD:
            errors.append(
                FieldError(
                    ("body", name),
                    f"unexpected file part {name!r}: send the dataset as {FILE_FIELD!r}",
                    "extra_forbidden",
                )
            )
    parsed: DatasetUploadForm | None = None
    try:
        parsed = DatasetUploadForm.model_validate(fields)
    except ValidationError as exc:
        errors.extend(body_errors(exc.errors()))
    upload = form.files.get(FILE_FIELD)
    if upload is None and not any(e.loc == ("body", FILE_FIELD) for e in errors):
        errors.append(FieldError(("body", FILE_FIELD), "Field required", "missing"))
    if errors or parsed is None or upload is None:
        count = len(errors)
        raise InvalidInput(
            f"The upload form is invalid: {count} error{'s' if count != 1 else ''}.",
            errors=errors,
        )
    return parsed, upload


_STORED = (
    "The data are validated (every bad cell is reported with its line and column), "
    "summarised (task, classes, per-feature statistics) and stored in the database. "
    "Too many rows, features or cells (rows × features) is 413; so is a dataset that "
    "would pass the tenant's storage quota (`/problems/storage-quota-exceeded`). "
    "Answers 201 with the dataset and its `Location`."
)


@router.post(
    "",
    operation_id="createDataset",
    status_code=201,
    summary="Upload a dataset",
    description=(
        "Store a dataset for training, sent as `multipart/form-data` with a `file` part (CSV "
        "with a header row, NPY, or NPZ with arrays `X` and `y`) and optional `name`, "
        "`target` (column name or 0-based index; default the last column) and `invalid_rows` "
        "(`error` | `drop`). The body streams to disk and is refused with 413 as soon as it "
        "passes `BATCHWISE_MAX_UPLOAD_BYTES`. A small dataset can be sent as JSON instead: "
        "`POST /v1/datasets/inline`.\n\n" + _STORED
    ),
    responses=created_responses("The dataset.") | problem_responses(400, 413, 415, 422),
    openapi_extra=_UPLOAD_REQUEST_BODY,
)
async def create_dataset(
    request: Request,
    response: Response,
    session: SessionDep,
    settings: SettingsDep,
    tenant: TenantDep,
    reads: ReadsDep,
) -> DatasetRead:
    # A JSON body is still taken here, undocumented, as before it had its own operation.
    media_type = _media_type(request)
    if media_type not in ("multipart/form-data", "application/json"):
        shown = media_type or "no Content-Type"
        raise UnsupportedMediaType(
            f"Cannot read a request body of type {shown!r}: send multipart/form-data (a "
            "file part named 'file'), or a small dataset as JSON to POST /v1/datasets/inline."
        )
    return await _create(request, response, session, settings, tenant, reads, media_type)


@router.post(
    "/inline",
    operation_id="createDatasetInline",
    status_code=201,
    summary="Create a small dataset from JSON",
    description=(
        "Store a small dataset sent as `application/json` `{name, X, y, feature_names}`, up "
        f"to {MAX_JSON_BYTES // 2**20} MiB (the body is read whole: larger data go as a file "
        "to `POST /v1/datasets`, which streams).\n\n" + _STORED
    ),
    responses=created_responses("The dataset.") | problem_responses(400, 413, 415, 422),
    openapi_extra=_INLINE_REQUEST_BODY,
)
async def create_dataset_inline(
    request: Request,
    response: Response,
    session: SessionDep,
    settings: SettingsDep,
    tenant: TenantDep,
    reads: ReadsDep,
) -> DatasetRead:
    media_type = _media_type(request)
    if media_type != "application/json":
        shown = media_type or "no Content-Type"
        raise UnsupportedMediaType(
            f"Cannot read a request body of type {shown!r} here: send the dataset as JSON "
            "with `Content-Type: application/json`, or a file as multipart/form-data to "
            "POST /v1/datasets."
        )
    return await _create(request, response, session, settings, tenant, reads, media_type)


async def _create(
    request: Request,
    response: Response,
    session: Session,
    settings: Settings,
    tenant: str,
    reads: Reads,
    media_type: str,
) -> DatasetRead:
    """Prepare the body (JSON or multipart), store it, set ``Location``."""
    limits = _limits(settings)
    # The canonical file's path is chosen here, so that it is deleted whatever happens.
    dest = datasets_service.canonical_path(spool_dir(settings.data_dir))
    forget = functools.partial(dest.unlink, missing_ok=True)
    # Read before the work, in a session of its own: a tenant without room is refused before
    # its canonical file is written, and no transaction stays open meanwhile.
    quota = settings.tenant_max_stored_bytes
    room = None if quota is None else await reads(datasets_service.storage_room, tenant, quota)
    try:
        if media_type == "application/json":
            json_limit = min(settings.max_upload_bytes, MAX_JSON_BYTES)
            limit_name = (
                "BATCHWISE_MAX_UPLOAD_BYTES"
                if json_limit == settings.max_upload_bytes
                else "the limit of an inline JSON dataset: upload the data as a file to "
                "POST /v1/datasets, as multipart/form-data (CSV, NPY or NPZ), which streams"
            )
            raw = await read_body(request, max_bytes=json_limit, limit_name=limit_name)
            prepared = await offload(
                request,
                len(raw),
                datasets_service.prepare_inline_json,
                raw,
                limits,
                dest,
                room,
                on_cancel=forget,
            )
        else:
            async with receive_multipart(
                request,
                spool_dir=dest.parent,
                max_bytes=settings.max_upload_bytes,
                file_fields=(FILE_FIELD,),
            ) as form:
                fields, upload = _upload_fields(form)
                size = await run_in_threadpool(datasets_service.upload_work_bytes, upload.path)
                prepared = await offload(
                    request,
                    size,
                    datasets_service.prepare_file,
                    upload.path,
                    filename=upload.filename,
                    content_type=upload.content_type,
                    name=fields.name,
                    target=fields.target,
                    invalid_rows=fields.invalid_rows,
                    limits=limits,
                    dest=dest,
                    room=room,
                    on_cancel=forget,
                )
        # What is left is database work, which mostly waits on I/O without the GIL.
        dataset = await run_in_threadpool(
            datasets_service.store_prepared,
            session,
            prepared,
            tenant=tenant,
            max_stored_bytes=settings.tenant_max_stored_bytes,
        )
    finally:
        forget()
    response.headers["Location"] = f"{router.prefix}/{dataset.id}"
    return dataset


@router.get(
    "",
    operation_id="listDatasets",
    summary="List datasets",
    description="Datasets, newest first, one page at a time. Pass a page's `next_cursor` as "
    "`cursor` to get the next; `next_cursor` is null on the last page. The order is stable "
    "(ties in `created_at` are broken by id), and datasets created meanwhile do not shift "
    "later pages.",
    responses=problem_responses(400, 422),
)
def list_datasets(
    session: SessionDep,
    tenant: TenantDep,
    limit: PageLimit = 20,
    cursor: PageCursor = None,
) -> DatasetPage:
    return datasets_service.list_datasets(session, tenant=tenant, limit=limit, cursor=cursor)


@router.get(
    "/{dataset_id}",
    operation_id="getDataset",
    summary="Get a dataset",
    description="The dataset's metadata: shape, feature names, target, task, classes, "
    "per-feature statistics, and the sha256 of its stored bytes.",
    responses=problem_responses(404),
)
def get_dataset(dataset_id: DatasetId, session: SessionDep, tenant: TenantDep) -> DatasetRead:
    return datasets_service.get_dataset(session, dataset_id, tenant=tenant)


@router.delete(
    "/{dataset_id}",
    operation_id="deleteDataset",
    status_code=204,
    response_class=Response,
    summary="Delete a dataset",
    description="Delete the dataset and its stored bytes. (Once jobs exist: 409 while a "
    "queued or running job uses it.)",
    responses=problem_responses(404, 409),
)
def delete_dataset(dataset_id: DatasetId, session: SessionDep, tenant: TenantDep) -> None:
    datasets_service.delete_dataset(session, dataset_id, tenant=tenant)
