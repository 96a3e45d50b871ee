"""The rules for datasets: create (from a spooled upload or inline JSON), list, get, delete, and
read the stored bytes back. Functions take the caller's session and never commit.

Storage: the parsed arrays are written once in the canonical form (one ``.npy`` file, float64,
shape (n_rows, n_features + 1), target last; see :mod:`service.datasets.arrays`), and that
file's bytes go to ``dataset_chunks`` in ``CHUNK_BYTES`` slices, read in a loop so at most one
chunk of it is in memory. The metadata row and every chunk are in the caller's one
transaction: a failure anywhere leaves neither.

Storage quota (``max_stored_bytes``, per tenant): the tenant's stored ``size_bytes`` plus the
new dataset's must fit, else :class:`StorageQuotaExceeded` (413) and nothing is stored. It is
checked twice: once while the dataset is prepared, as soon as its size is known (the canonical
size follows from the shape), against the :class:`StorageRoom` read before — so the canonical
file is never written for a tenant without room; and again, exactly, after the metadata row is
inserted, holding a lock to the commit — SQLite's write lock, which that insert takes, or on
PostgreSQL the tenant's advisory lock — so two concurrent uploads of one tenant cannot both fit
in the room for one: the second sees the first, or waits for its commit and then sees it.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError
from sqlalchemy.orm import Session

from service import tenants
from service.datasets import repository
from service.datasets.arrays import canonical_header, write_canonical
from service.datasets.ingest import (
    DatasetSummary,
    IngestLimits,
    ParsedDataset,
    detect_format,
    is_zip,
    parse_file,
    parse_inline,
    summarize,
)
from service.datasets.ingest_numpy import declared_npz_bytes
from service.datasets.schemas import (
    DatasetCreateJSON,
    DatasetPage,
    DatasetRead,
    FeatureStatsRead,
    InvalidRows,
    SourceFormat,
)
from service.db import Dataset, utcnow
from service.errors import (
    BatchwiseError,
    Conflict,
    InvalidInput,
    NotFound,
    StorageQuotaExceeded,
    invalid_body,
)
from service.pagination import decode_cursor, page_of

CHUNK_BYTES = 4 * 1024 * 1024
HEAD_BYTES = 512  # enough for every format's magic bytes


class StoredBytesCorruptError(BatchwiseError):
    """The stored chunks do not reproduce the dataset's recorded size and sha256."""

    status, title, slug = 500, "Stored dataset corrupt", "stored-dataset-corrupt"


@dataclass(frozen=True)
class PreparedDataset:
    """A dataset parsed, summarised and written in the canonical form to ``path``: all the CPU
    work of a create, and no database, so a child process can do it (the API does, for a large
    body: see :mod:`service.api.offload`). :func:`store_prepared` stores it and deletes
    ``path``."""

    name: str
    source_format: SourceFormat
    summary: DatasetSummary
    path: Path
    sha256: str
    size_bytes: int


@dataclass(frozen=True)
class StorageRoom:
    """A tenant's stored bytes and quota, read before a dataset is prepared."""

    used_bytes: int
    max_stored_bytes: int

    def check(self, new_bytes: int) -> None:
        """:class:`StorageQuotaExceeded` (413) unless ``new_bytes`` more fit."""
        check_storage_quota(self.used_bytes, new_bytes, self.max_stored_bytes)


def storage_room(session: Session, tenant: str, max_stored_bytes: int | None) -> StorageRoom | None:
    """``tenant``'s :class:`StorageRoom` under the quota ``max_stored_bytes`` (None: none)."""
    if max_stored_bytes is None:
        return None
    max_stored_bytes = _own_quota(session, tenant, max_stored_bytes)
    return StorageRoom(repository.stored_bytes(session, tenant), max_stored_bytes)


def _own_quota(session: Session, tenant: str, default: int) -> int:
    """``tenant``'s own storage quota (``batchwise tenants set-limits``), else ``default``."""
    own = tenants.limits_of(session, tenant).max_stored_bytes
    return default if own is None else own


def upload_work_bytes(path: Path) -> int:
    """The bytes that parsing the upload at ``path`` reads (the API offloads by it): its size,
    or for an NPZ archive the larger total its members declare once decompressed."""
    size = path.stat().st_size
    with path.open("rb") as file:
        head = file.read(HEAD_BYTES)
    if not is_zip(head):
        return size
    return max(size, declared_npz_bytes(path) or 0)


def prepare_file(
    path: Path,
    *,
    filename: str | None,
    content_type: str | None,
    name: str | None,
    target: str | None,
    invalid_rows: InvalidRows,
    limits: IngestLimits,
    dest: Path,
    room: StorageRoom | None = None,
) -> PreparedDataset:
    """Parse the uploaded file at ``path`` (CSV, NPY or NPZ, detected from its first bytes,
    then its name and content type) and write its canonical form to ``dest`` (a path of the
    caller's choosing, so that the caller can delete it whatever happens). ``name`` defaults
    to ``filename``; ``room``: the tenant's storage room (None: no quota)."""
    with path.open("rb") as file:
        head = file.read(HEAD_BYTES)
    fmt = detect_format(filename, content_type, head)
    parsed = parse_file(path, fmt, target=target, limits=limits, invalid_rows=invalid_rows)
    name = name or filename or "upload"
    return _prepare(parsed, name=name, source_format=fmt, dest=dest, room=room)


#: What to do about text in an inline dataset's X or y.
JSON_TEXT_HINT = (
    "X and y must hold numbers: encode text as numbers (one-hot: a 0/1 column per value; or "
    "an integer code per value, as the classes of y), or leave that column out of X and its "
    "name out of feature_names."
)


def prepare_inline_json(
    raw: bytes, limits: IngestLimits, dest: Path, room: StorageRoom | None = None
) -> PreparedDataset:
    """A ``DatasetCreateJSON`` body decoded, validated and prepared (as for
    :func:`prepare_file`). :class:`InvalidInput` listing every problem with its
    ``("body", ...)`` location otherwise, and what to do about text where numbers belong."""
    try:
        body = DatasetCreateJSON.model_validate_json(raw)
    except ValidationError as exc:
        problems = exc.errors()
        refused = invalid_body(problems)
        if any(e["type"] == "float_parsing" and e["loc"][0] in ("X", "y") for e in problems):
            refused = InvalidInput(f"{refused.detail} {JSON_TEXT_HINT}", errors=refused.errors)
        raise refused from None
    return prepare_inline(body, limits=limits, dest=dest, room=room)


def prepare_inline(
    body: DatasetCreateJSON,
    *,
    limits: IngestLimits,
    dest: Path,
    room: StorageRoom | None = None,
) -> PreparedDataset:
    """A dataset sent inline as JSON, validated and prepared (as for :func:`prepare_file`)."""
    parsed = parse_inline(body.X, body.y, limits=limits, feature_names=body.feature_names)
    return _prepare(parsed, name=body.name, source_format="json", dest=dest, room=room)


def create_from_inline(
    session: Session,
    body: DatasetCreateJSON,
    *,
    tenant: str,
    limits: IngestLimits,
    work_dir: Path,
    max_stored_bytes: int | None = None,
) -> DatasetRead:
    """Validate and store a dataset sent inline as JSON, as ``tenant``'s, in one call
    (``max_stored_bytes`` as for :func:`store_prepared`)."""
    room = storage_room(session, tenant, max_stored_bytes)
    prepared = prepare_inline(body, limits=limits, dest=canonical_path(work_dir), room=room)
    return store_prepared(session, prepared, tenant=tenant, max_stored_bytes=max_stored_bytes)


def canonical_size(n_rows: int, n_features: int) -> int:
    """Bytes of the canonical stored form of an (n_rows, n_features) dataset: the NPY header,
    then 8 bytes per cell of the n_features + 1 columns (the target included)."""
    return len(canonical_header(n_rows, n_features + 1)) + 8 * n_rows * (n_features + 1)


def check_storage_quota(used_bytes: int, new_bytes: int, max_stored_bytes: int) -> None:
    """:class:`StorageQuotaExceeded` (413) unless ``used_bytes + new_bytes`` fits the quota."""
    if used_bytes + new_bytes <= max_stored_bytes:
        return
    raise StorageQuotaExceeded(
        f"Storing this dataset ({new_bytes} bytes) would bring your stored datasets to "
        f"{used_bytes + new_bytes} bytes, over your quota of {max_stored_bytes} bytes "
        f"(BATCHWISE_TENANT_MAX_STORED_BYTES); {used_bytes} bytes are in use. Nothing was "
        "stored: delete datasets you no longer need (DELETE /v1/datasets/{id}) to make room."
    )


def canonical_path(work_dir: Path) -> Path:
    """A new, unused path in ``work_dir`` for a canonical file (not created)."""
    work_dir.mkdir(parents=True, exist_ok=True)
    return work_dir / f"canonical-{uuid.uuid4().hex}.npy"


def _prepare(
    parsed: ParsedDataset,
    *,
    name: str,
    source_format: SourceFormat,
    dest: Path,
    room: StorageRoom | None,
) -> PreparedDataset:
    if room is not None:
        # Before the canonical file is written (re-checked, exactly, when it is stored).
        room.check(canonical_size(parsed.n_rows, parsed.n_features))
    summary = summarize(parsed)
    sha256, size_bytes = write_canonical(parsed, dest)
    return PreparedDataset(
        name=name[:200],
        source_format=source_format,
        summary=summary,
        path=dest,
        sha256=sha256,
        size_bytes=size_bytes,
    )


def store_prepared(
    session: Session,
    prepared: PreparedDataset,
    *,
    tenant: str,
    max_stored_bytes: int | None = None,
) -> DatasetRead:
    """Store ``prepared`` as ``tenant``'s, in the caller's transaction, and delete its file
    (whatever happens). ``max_stored_bytes``: the tenant's storage quota (None: none)."""
    summary, size_bytes = prepared.summary, prepared.size_bytes
    try:
        dataset = Dataset(
            id=str(uuid.uuid4()),
            tenant=tenant,
            name=prepared.name,
            n_rows=summary.n_rows,
            n_features=summary.n_features,
            feature_names=list(summary.feature_names),
            target_name=summary.target_name,
            task=summary.task,
            classes=None if summary.classes is None else [float(c) for c in summary.classes],
            stats={
                "features": [
                    {"name": s.name, "mean": s.mean, "std": s.std, "min": s.min, "max": s.max}
                    for s in summary.stats
                ]
            },
            source_format=prepared.source_format,
            dropped_rows=summary.dropped_rows,
            sha256=prepared.sha256,
            size_bytes=size_bytes,
            chunk_count=-(-size_bytes // CHUNK_BYTES),
            created_at=utcnow(),
        )
        if max_stored_bytes is not None:
            repository.lock_tenant_storage(session, tenant)
            max_stored_bytes = _own_quota(session, tenant, max_stored_bytes)
        repository.add(session, dataset)
        if max_stored_bytes is not None:
            # Under the lock, counting this dataset's own row: exact (see the module docstring).
            used = repository.stored_bytes(session, tenant) - size_bytes
            check_storage_quota(used, size_bytes, max_stored_bytes)
        with prepared.path.open("rb") as file:
            seq = 0
            while data := file.read(CHUNK_BYTES):
                repository.add_chunk(session, dataset.id, seq, data)
                seq += 1
        session.flush()
    finally:
        prepared.path.unlink(missing_ok=True)
    return to_read(dataset)


def to_read(dataset: Dataset) -> DatasetRead:
    """The API's view of a dataset row."""
    return DatasetRead(
        id=dataset.id,
        name=dataset.name,
        n_rows=dataset.n_rows,
        n_features=dataset.n_features,
        feature_names=list(dataset.feature_names),
        target=dataset.target_name,
        task=dataset.task,
        classes=dataset.classes,
        stats=[FeatureStatsRead(**s) for s in dataset.stats["features"]],
        source_format=dataset.source_format,
        sha256=dataset.sha256,
        size_bytes=dataset.size_bytes,
        dropped_rows=dataset.dropped_rows,
        created_at=dataset.created_at,
    )


def get_dataset(session: Session, dataset_id: str, *, tenant: str | None = None) -> DatasetRead:
    """The dataset with ``dataset_id``; :class:`NotFound` (404) naming the id otherwise.

    ``tenant``: the caller's; another tenant's dataset is then the very same 404 as a missing
    one. ``None`` reads any tenant's: for the worker, and for the dataset of a job or sweep
    already read as the caller's (its owner owns the dataset too).
    """
    return to_read(_get_row(session, dataset_id, tenant=tenant))


def _get_row(session: Session, dataset_id: str, *, tenant: str | None) -> Dataset:
    dataset = repository.get(session, dataset_id, tenant=tenant)
    if dataset is None:
        raise NotFound(f"No dataset with id {dataset_id!r}.")
    return dataset


def list_datasets(
    session: Session, *, tenant: str, limit: int, cursor: str | None = None
) -> DatasetPage:
    """A page of up to ``limit`` of ``tenant``'s datasets, newest first, after ``cursor`` (from
    a previous page's ``next_cursor``). Stable when ``created_at`` ties: the id breaks them."""
    after = decode_cursor(cursor) if cursor is not None else None
    rows = repository.list_page(session, tenant=tenant, limit=limit + 1, after=after)
    rows, next_cursor = page_of(rows, limit)
    return DatasetPage(items=[to_read(row) for row in rows], next_cursor=next_cursor)


def ensure_not_in_use(session: Session, dataset_id: str) -> None:
    """Refuse (:class:`Conflict`, 409, naming a job) to delete a dataset any job refers to.

    A queued or running job still needs the data: cancel it first. A finished job keeps its
    dataset too (its history and predictions read the dataset's task and feature names, and
    ``jobs.dataset_id`` is ON DELETE RESTRICT): delete the job first; nothing goes silently.
    """
    found = repository.jobs_using(session, dataset_id)
    if not found:
        return
    job_id, status = found[0]
    if status in ("queued", "running"):
        raise Conflict(
            f"Dataset {dataset_id!r} is in use by {status} job {job_id!r}: cancel the job, "
            "wait for it to finish, then delete it before deleting the dataset."
        )
    raise Conflict(
        f"Dataset {dataset_id!r} has finished jobs (e.g. {status} job {job_id!r}): delete them "
        "first (DELETE /v1/jobs/{id}); a job's history and model refer to its dataset."
    )


def delete_dataset(session: Session, dataset_id: str, *, tenant: str) -> None:
    """Delete one of ``tenant``'s datasets and its stored bytes; 404 if there is none, 409
    while it is in use."""
    _get_row(session, dataset_id, tenant=tenant)
    ensure_not_in_use(session, dataset_id)
    repository.remove(session, dataset_id)


def read_dataset_bytes(session: Session, dataset_id: str, dest_path: Path) -> DatasetRead:
    """Write a dataset's canonical bytes to ``dest_path``, one chunk at a time.

    The file appears atomically (written beside it, then renamed) and only after its size and
    sha256 match the recorded ones; open it with
    :func:`service.datasets.arrays.open_canonical` (``n_features`` from the returned schema).
    """
    dataset = _get_row(session, dataset_id, tenant=None)  # the worker's: any tenant
    partial = dest_path.with_name(dest_path.name + ".part")
    digest = hashlib.sha256()
    size = 0
    try:
        with partial.open("wb") as file:
            for seq in range(dataset.chunk_count):
                data = repository.chunk(session, dataset_id, seq)
                if data is None:
                    raise StoredBytesCorruptError(f"Dataset {dataset_id!r} is missing chunk {seq}.")
                digest.update(data)
                size += len(data)
                file.write(data)
        if size != dataset.size_bytes or digest.hexdigest() != dataset.sha256:
            raise StoredBytesCorruptError(
                f"Dataset {dataset_id!r}: the stored bytes ({size} B) do not match the recorded "
                f"size ({dataset.size_bytes} B) and sha256."
            )
        os.replace(partial, dest_path)
    finally:
        partial.unlink(missing_ok=True)
    return to_read(dataset)


__all__ = [
    "CHUNK_BYTES",
    "PreparedDataset",
    "StorageRoom",
    "StoredBytesCorruptError",
    "canonical_path",
    "canonical_size",
    "check_storage_quota",
    "create_from_inline",
    "delete_dataset",
    "ensure_not_in_use",
    "get_dataset",
    "list_datasets",
    "prepare_file",
    "prepare_inline",
    "prepare_inline_json",
    "read_dataset_bytes",
    "storage_room",
    "store_prepared",
    "to_read",
    "upload_work_bytes",
]
