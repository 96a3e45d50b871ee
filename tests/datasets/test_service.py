"""The datasets service on a real database (both backends): chunked storage, reading the bytes
back, one transaction per create, cursors, delete."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import Engine, delete, func, select, text, update
from sqlalchemy.orm import Session

from service.datasets import service as datasets_service
from service.datasets.arrays import open_canonical
from service.datasets.ingest import IngestLimits
from service.datasets.schemas import DatasetCreateJSON
from service.db import DatasetChunk
from service.errors import BadRequest, NotFound, StorageQuotaExceeded
from service.keys import DEFAULT_TENANT
from service.pagination import decode_cursor, encode_cursor
from tests.support.archives import declared_member, npz, training_arrays

LIMITS = IngestLimits(max_rows=1_000_000, max_features=1_000)


def make_body(n_rows: int = 50, n_features: int = 3, seed: int = 0) -> DatasetCreateJSON:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n_rows, n_features))
    y = X @ np.arange(1.0, n_features + 1) + 0.5
    return DatasetCreateJSON(name="synthetic", X=X.tolist(), y=y.tolist())


def counts(engine: Engine) -> tuple[int, int]:
    with engine.connect() as connection:
        datasets = connection.scalar(text("SELECT count(*) FROM datasets"))
        chunks = connection.scalar(text("SELECT count(*) FROM dataset_chunks"))
    return int(datasets or 0), int(chunks or 0)


def test_bytes_round_trip_through_chunks(
    session: Session, engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Small chunks, so the data really is split and reassembled in order.
    monkeypatch.setattr(datasets_service, "CHUNK_BYTES", 1000)
    body = make_body(n_rows=50, n_features=3)
    created = datasets_service.create_from_inline(
        session, body, limits=LIMITS, work_dir=tmp_path / "work", tenant=DEFAULT_TENANT
    )
    session.commit()
    n_chunks = -(-created.size_bytes // 1000)
    assert n_chunks > 1
    assert counts(engine) == (1, n_chunks)
    sizes = session.scalars(select(func.length(DatasetChunk.data)).order_by(DatasetChunk.seq)).all()
    assert sizes == [1000] * (n_chunks - 1) + [created.size_bytes - 1000 * (n_chunks - 1)]

    dest = tmp_path / "copy.npy"
    read = datasets_service.read_dataset_bytes(session, created.id, dest)
    assert read == created
    assert dest.stat().st_size == created.size_bytes
    assert hashlib.sha256(dest.read_bytes()).hexdigest() == created.sha256
    X, y = open_canonical(dest, created.n_features)
    np.testing.assert_array_equal(X, np.array(body.X))
    np.testing.assert_array_equal(y, np.array(body.y))
    assert list(tmp_path.glob("*.part")) == []
    assert list((tmp_path / "work").iterdir()) == []  # the canonical temp file is gone


def test_create_does_not_commit(session: Session, engine: Engine, tmp_path: Path) -> None:
    datasets_service.create_from_inline(
        session, make_body(), limits=LIMITS, work_dir=tmp_path, tenant=DEFAULT_TENANT
    )
    session.rollback()
    assert counts(engine) == (0, 0)


def test_read_bytes_detects_corrupt_chunks(
    session: Session, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(datasets_service, "CHUNK_BYTES", 1000)
    created = datasets_service.create_from_inline(
        session, make_body(), limits=LIMITS, work_dir=tmp_path, tenant=DEFAULT_TENANT
    )
    session.execute(
        update(DatasetChunk)
        .where(DatasetChunk.dataset_id == created.id, DatasetChunk.seq == 1)
        .values(data=b"\x00" * 1000)
    )
    dest = tmp_path / "copy.npy"
    with pytest.raises(datasets_service.StoredBytesCorruptError, match="sha256"):
        datasets_service.read_dataset_bytes(session, created.id, dest)
    session.execute(
        delete(DatasetChunk).where(DatasetChunk.dataset_id == created.id, DatasetChunk.seq == 1)
    )
    with pytest.raises(datasets_service.StoredBytesCorruptError, match="missing chunk 1"):
        datasets_service.read_dataset_bytes(session, created.id, dest)
    assert not dest.exists()
    assert list(tmp_path.glob("*.part")) == []


def test_read_bytes_of_unknown_dataset_is_not_found(session: Session, tmp_path: Path) -> None:
    with pytest.raises(NotFound, match="'nope'"):
        datasets_service.read_dataset_bytes(session, "nope", tmp_path / "x.npy")


def test_delete_removes_chunks_and_unknown_is_not_found(
    session: Session, engine: Engine, tmp_path: Path
) -> None:
    created = datasets_service.create_from_inline(
        session, make_body(), limits=LIMITS, work_dir=tmp_path, tenant=DEFAULT_TENANT
    )
    session.commit()
    datasets_service.delete_dataset(session, created.id, tenant=DEFAULT_TENANT)
    session.commit()
    assert counts(engine) == (0, 0)
    with pytest.raises(NotFound):
        datasets_service.delete_dataset(session, created.id, tenant=DEFAULT_TENANT)


def test_cursor_round_trips_and_rejects_garbage() -> None:
    when = datetime(2026, 11, 26, 12, 0, 0, 123456, tzinfo=UTC)
    cursor = encode_cursor(when, "abc")
    assert decode_cursor(cursor) == (when, "abc")
    for garbage in ["", "!!!", "bm90IGpzb24", "WyIyMDI2LTExLTI2VDEyOjAwOjAwIiwiYSJd"]:
        # not base64 JSON, not JSON, a naive timestamp
        with pytest.raises(BadRequest):
            decode_cursor(garbage)


def test_limit_one_walks_every_dataset(session: Session, tmp_path: Path) -> None:
    ids = {
        datasets_service.create_from_inline(
            session, make_body(seed=i), limits=LIMITS, work_dir=tmp_path, tenant=DEFAULT_TENANT
        ).id
        for i in range(3)
    }
    seen: list[str] = []
    cursor: str | None = None
    for _ in range(3):
        page = datasets_service.list_datasets(
            session, limit=1, cursor=cursor, tenant=DEFAULT_TENANT
        )
        seen += [item.id for item in page.items]
        cursor = page.next_cursor
    assert cursor is None
    assert set(seen) == ids
    assert len(seen) == 3


def test_a_tenant_without_room_is_refused_before_the_canonical_file_is_written(
    tmp_path: Path,
) -> None:
    body = make_body(n_rows=50, n_features=3)
    needed = datasets_service.canonical_size(50, 3)
    dest = datasets_service.canonical_path(tmp_path)
    room = datasets_service.StorageRoom(used_bytes=1_000, max_stored_bytes=1_000 + needed - 1)
    with pytest.raises(StorageQuotaExceeded, match=f"Storing this dataset \\({needed} bytes\\)"):
        datasets_service.prepare_inline(body, limits=LIMITS, dest=dest, room=room)
    assert list(tmp_path.iterdir()) == []
    exact = datasets_service.StorageRoom(used_bytes=1_000, max_stored_bytes=1_000 + needed)
    prepared = datasets_service.prepare_inline(body, limits=LIMITS, dest=dest, room=exact)
    assert (prepared.path, prepared.size_bytes) == (dest, needed)


def test_an_npz_upload_weighs_what_its_members_declare(tmp_path: Path) -> None:
    """The API offloads by this weight: a small archive that inflates to 1 GB is heavy."""
    archive = npz(
        *training_arrays(100), declared_member("feature_names.npy", (250_000_000,), "<U1")
    )
    path = tmp_path / "bomb.npz"
    path.write_bytes(archive)
    assert len(archive) < 2_000_000
    assert datasets_service.upload_work_bytes(path) > 1_000_000_000
    csv = tmp_path / "rows.csv"
    csv.write_text("a,y\n1,2\n")
    assert datasets_service.upload_work_bytes(csv) == csv.stat().st_size
    broken = tmp_path / "broken.npz"
    broken.write_bytes(b"PK\x03\x04" + bytes(100))
    assert datasets_service.upload_work_bytes(broken) == 104  # parsing says what is wrong
