"""Dataset limits through the real app and a real database (both backends): the upload size
(per request), rows × features (``BATCHWISE_MAX_CELLS``) and each tenant's storage quota
(``BATCHWISE_TENANT_MAX_STORED_BYTES``), including concurrent uploads racing for the last room.

Every refusal is checked for its status, problem type and numbers, and for leftovers: no row,
no chunk, no spool file.
"""

from __future__ import annotations

import io
import threading
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import Engine

from service.config import Settings
from service.datasets import service as datasets_service
from service.datasets.arrays import write_canonical
from service.datasets.ingest import IngestLimits, ParsedDataset
from service.datasets.ingest_csv import parse_csv
from service.datasets.schemas import DatasetCreateJSON
from service.db import session_factory
from service.errors import PayloadTooLarge, StorageQuotaExceeded
from tests.support.factories import regression_data
from tests.support.problems import assert_problem, locs
from tests.support.tenants import ALPHA, BETA, Api, api, csv_bytes, inline, spool_files, stored

TOO_LARGE = "/problems/payload-too-large"
QUOTA = "/problems/storage-quota-exceeded"
BOUNDARY = "limits-boundary"


def multipart(csv: bytes) -> bytes:
    """A ``multipart/form-data`` body with ``csv`` as its one file part."""
    head = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="d.csv"\r\n'
        "Content-Type: text/csv\r\n\r\n"
    ).encode()
    return head + csv + f"\r\n--{BOUNDARY}--\r\n".encode()


MULTIPART = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}


# --- upload bytes: a limit per request ---------------------------------------------------------


def test_upload_limit_is_per_request_exact_and_cut_off_while_streaming(
    settings: Settings, engine: Engine
) -> None:
    small = multipart(csv_bytes(20))
    large = multipart(csv_bytes(21))
    limit = len(small)  # a body of exactly the limit passes; one byte more does not
    assert len(large) > limit
    with api(settings, engine, max_upload_bytes=limit) as client:
        for _ in range(3):  # 3 × limit bytes in all: each request is measured alone
            response = client.post(ALPHA, "/v1/datasets", content=small, headers=MULTIPART)
            assert response.status_code == 201, response.text
        before = stored(engine)
        # Chunked, no Content-Length: refused while streaming, at the first byte past it.
        response = client.post(
            ALPHA,
            "/v1/datasets",
            content=iter([large[:100], large[100:]]),
            headers=MULTIPART,
        )
        problem = assert_problem(response, 413, TOO_LARGE)
    assert problem["detail"] == (
        f"The request body is larger than the limit of {limit} bytes (BATCHWISE_MAX_UPLOAD_BYTES)."
    )
    assert response.headers["connection"] == "close"
    assert stored(engine) == before
    assert before.datasets == {ALPHA: 3}
    assert spool_files(settings) == []


# --- rows × features ---------------------------------------------------------------------------


def cells_detail(rows: str, features: int, cells: int, limit: int) -> str:
    return (
        f"the dataset has {rows} rows × {features} features = {cells} cells, more than {limit}, "
        "the limit set by BATCHWISE_MAX_CELLS"
    )


def test_csv_over_max_cells_is_413_naming_rows_features_product_and_limit(
    settings: Settings, engine: Engine
) -> None:
    # Rows and features are each well inside their own limits; only their product is not.
    with api(settings, engine, max_cells=30, max_rows=1_000, max_features=10) as client:
        fits = client.post(ALPHA, "/v1/datasets", files={"file": ("a.csv", csv_bytes(10, 3))})
        assert fits.status_code == 201, fits.text  # 10 × 3 = 30 cells: at the limit
        before = stored(engine)
        response = client.post(ALPHA, "/v1/datasets", files={"file": ("b.csv", csv_bytes(11, 3))})
    problem = assert_problem(response, 413, TOO_LARGE)
    assert problem["detail"] == cells_detail("11", 3, 33, 30)
    assert problem["errors"] == [
        {"loc": ["file"], "msg": cells_detail("11", 3, 33, 30), "type": "too_many_cells"}
    ]
    assert stored(engine) == before
    assert spool_files(settings) == []


def test_json_over_max_cells_is_413_at_body_x(settings: Settings, engine: Engine) -> None:
    with api(settings, engine, max_cells=20) as client:
        response = client.post(ALPHA, "/v1/datasets", json=inline(7, 3))
    problem = assert_problem(response, 413, TOO_LARGE)
    assert problem["detail"] == cells_detail("7", 3, 21, 20)
    assert locs(problem) == [["body", "X"]]
    assert stored(engine).datasets == {}


def npy_header_only(shape: tuple[int, int]) -> bytes:
    """An NPY file whose header declares ``shape`` but which holds no data at all: a parser
    that read the data before checking the shape would fail on it as corrupt."""
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buffer, {"descr": "<f8", "fortran_order": False, "shape": shape}
    )
    return buffer.getvalue()


def test_npy_and_npz_over_max_cells_are_refused_from_the_header_alone(
    settings: Settings, engine: Engine
) -> None:
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("X.npy", npy_header_only((1_000_000, 50)))
        zf.writestr("y.npy", npy_header_only((1_000_000, 1)))
    with api(settings, engine, max_cells=10_000_000) as client:
        npy = client.post(
            ALPHA, "/v1/datasets", files={"file": ("big.npy", npy_header_only((400_000, 31)))}
        )
        npz = client.post(ALPHA, "/v1/datasets", files={"file": ("big.npz", archive.getvalue())})
    # NPY: 31 columns are 30 features and the target.
    npy_problem = assert_problem(npy, 413, TOO_LARGE)
    assert npy_problem["errors"][0]["msg"] == cells_detail("400000", 30, 12_000_000, 10_000_000)
    assert locs(npy_problem) == [["file"]]
    npz_problem = assert_problem(npz, 413, TOO_LARGE)
    assert npz_problem["errors"][0]["msg"] == cells_detail("1000000", 50, 50_000_000, 10_000_000)
    assert locs(npz_problem) == [["file", "X"]]
    assert stored(engine).datasets == {}
    assert spool_files(settings) == []


def test_csv_over_max_cells_stops_reading_at_the_first_block_past_it(tmp_path: Path) -> None:
    path = tmp_path / "long.csv"
    path.write_bytes(csv_bytes(5_000, 4))  # ~200 kB, read 4 kB at a time
    limits = IngestLimits(max_rows=10**6, max_features=10, max_cells=400)
    with pytest.raises(PayloadTooLarge) as raised:
        parse_csv(path, target=None, limits=limits, block_bytes=4096)
    error = raised.value.errors[0]
    assert error.type == "too_many_cells"
    # Past 100 rows × 4 features, within one 4 kB block (≈ 90 rows of ~45 bytes).
    rows = int(error.msg.split("at least ")[1].split(" rows")[0])
    assert 100 < rows <= 200
    assert error.msg == cells_detail(f"at least {rows}", 4, rows * 4, 400)


# --- the storage quota -------------------------------------------------------------------------


def test_canonical_size_is_what_is_stored(tmp_path: Path) -> None:
    for n_rows, n_features in [(2, 1), (10, 2), (1000, 7), (3, 40)]:
        X, y = regression_data(n_rows, n_features)
        names = tuple(f"x{i}" for i in range(n_features))
        parsed = ParsedDataset(X=X, y=y, feature_names=names, target_name="y")
        _, size = write_canonical(parsed, tmp_path / f"{n_rows}x{n_features}.npy")
        assert datasets_service.canonical_size(n_rows, n_features) == size


def quota_detail(used: int, new: int, limit: int) -> str:
    return (
        f"Storing this dataset ({new} bytes) would bring your stored datasets to {used + new} "
        f"bytes, over your quota of {limit} bytes (BATCHWISE_TENANT_MAX_STORED_BYTES); {used} "
        "bytes are in use. Nothing was stored: delete datasets you no longer need "
        "(DELETE /v1/datasets/{id}) to make room."
    )


@pytest.mark.parametrize("form", ["json", "csv"])
def test_storage_quota_is_per_tenant_413_of_its_own_type_and_stores_nothing(
    settings: Settings, engine: Engine, form: str
) -> None:
    size = datasets_service.canonical_size(10, 2)  # 128-byte header + 10 × 3 × 8
    assert size == 368
    limit = 2 * size

    def upload(client: Api, tenant: str) -> Any:
        if form == "json":
            return client.post(tenant, "/v1/datasets", json=inline(10))
        return client.post(tenant, "/v1/datasets", files={"file": ("d.csv", csv_bytes(10))})

    with api(settings, engine, tenant_max_stored_bytes=limit) as client:
        first, second = upload(client, ALPHA), upload(client, ALPHA)
        assert [first.status_code, second.status_code] == [201, 201]  # exactly at the quota
        before = stored(engine)
        refused = upload(client, ALPHA)
        problem = assert_problem(refused, 413, QUOTA)
        assert problem["title"] == "Storage quota exceeded"
        assert problem["detail"] == quota_detail(used=limit, new=size, limit=limit)
        assert stored(engine) == before
        assert spool_files(settings) == []

        # Another tenant's quota is its own.
        assert [upload(client, BETA).status_code for _ in range(2)] == [201, 201]
        assert_problem(upload(client, BETA), 413, QUOTA)

        # Deleting makes room again.
        deleted = client.delete(ALPHA, f"/v1/datasets/{first.json()['id']}")
        assert deleted.status_code == 204
        assert upload(client, ALPHA).status_code == 201
    assert stored(engine).stored_bytes == {ALPHA: limit, BETA: limit}


def test_quota_counts_the_stored_size_after_dropped_rows(
    settings: Settings, engine: Engine
) -> None:
    # 12 rows of which 2 are dropped: 10 stored, 368 bytes, exactly the quota.
    csv = csv_bytes(10) + b"nan,1,2\n1,2,inf\n"
    with api(settings, engine, tenant_max_stored_bytes=368) as client:
        response = client.post(
            ALPHA, "/v1/datasets", files={"file": ("d.csv", csv)}, data={"invalid_rows": "drop"}
        )
    assert response.status_code == 201, response.text
    assert (response.json()["size_bytes"], response.json()["dropped_rows"]) == (368, 2)


def test_concurrent_uploads_of_one_tenant_never_pass_its_quota(
    settings: Settings, engine: Engine
) -> None:
    """Every upload passes the early check together (all start at a barrier, before any has
    committed); the locked re-check lets exactly as many through as fit."""
    size = datasets_service.canonical_size(10, 2)
    n_uploads, fits = 6, 2
    limit = fits * size + size - 1  # room for 2 and most of a third
    sessions = session_factory(engine)
    start = threading.Barrier(n_uploads)
    outcomes: list[str] = []
    errors: list[BaseException] = []
    body = DatasetCreateJSON.model_validate(inline(10))
    limits = IngestLimits(max_rows=100, max_features=10)

    def uploader(index: int) -> None:
        try:
            with sessions() as session:
                start.wait()
                try:
                    datasets_service.create_from_inline(
                        session,
                        body,
                        tenant=ALPHA,
                        limits=limits,
                        work_dir=settings.data_dir / f"work-{index}",
                        max_stored_bytes=limit,
                    )
                    session.commit()
                    outcomes.append("stored")
                except StorageQuotaExceeded as exc:
                    session.rollback()
                    outcomes.append(exc.detail)
        except BaseException as exc:  # reported below, with the thread's failure
            errors.append(exc)

    threads = [threading.Thread(target=uploader, args=(i,)) for i in range(n_uploads)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert outcomes.count("stored") == fits
    refusals = [outcome for outcome in outcomes if outcome != "stored"]
    assert len(refusals) == n_uploads - fits
    # Refused by the early check or by the locked one: either way against both stored.
    assert set(refusals) == {quota_detail(used=fits * size, new=size, limit=limit)}
    after = stored(engine)
    assert after.datasets == {ALPHA: fits}
    assert after.stored_bytes == {ALPHA: fits * size}
    assert after.chunks == fits  # one 4 MiB chunk each: nothing of a refused one is left
