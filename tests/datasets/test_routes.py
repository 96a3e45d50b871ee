"""The datasets API through the real app and a real database (both backends).

Every refused upload is checked for leftovers: no ``datasets`` row, no ``dataset_chunks`` row
and no file in the spool directory.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, text, update

from service.api import create_app
from service.api.upload import spool_dir
from service.config import Settings
from service.db import Dataset, session_factory
from tests.support.problems import assert_problem

HOUSES_CSV = b"rooms,area,price\n2,60,100.5\n3,90,150.25\n4,120,210\n"


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as client:
        yield client


def make_client(settings: Settings, **overrides: Any) -> TestClient:
    return TestClient(create_app(settings.model_copy(update=overrides)))


def counts(engine: Engine) -> tuple[int, int]:
    """(rows in datasets, rows in dataset_chunks)."""
    with engine.connect() as connection:
        datasets = connection.scalar(text("SELECT count(*) FROM datasets"))
        chunks = connection.scalar(text("SELECT count(*) FROM dataset_chunks"))
    return int(datasets or 0), int(chunks or 0)


def assert_nothing_left(engine: Engine, settings: Settings) -> None:
    assert counts(engine) == (0, 0)
    spool = spool_dir(settings.data_dir)
    assert not spool.exists() or list(spool.iterdir()) == []


def upload(client: TestClient, content: bytes, filename: str = "houses.csv", **fields: str) -> Any:
    return client.post("/v1/datasets", files={"file": (filename, content, "text/csv")}, data=fields)


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


# --- create -----------------------------------------------------------------------------------


def test_csv_upload_stores_dataset_with_stats_and_location(
    client: TestClient, engine: Engine
) -> None:
    response = upload(client, HOUSES_CSV, name="houses")
    assert response.status_code == 201, response.text
    body = response.json()
    assert response.headers["location"] == f"/v1/datasets/{body['id']}"
    assert body["name"] == "houses"
    assert (body["n_rows"], body["n_features"]) == (3, 2)
    assert body["feature_names"] == ["rooms", "area"]
    assert body["target"] == "price"
    assert body["task"] == "regression"
    assert body["classes"] is None
    assert body["source_format"] == "csv"
    assert body["dropped_rows"] == 0
    # Population statistics: rooms (2, 3, 4), area (60, 90, 120).
    rooms, area = body["stats"]
    assert rooms == pytest.approx(
        {"name": "rooms", "mean": 3.0, "std": math.sqrt(2 / 3), "min": 2.0, "max": 4.0}
    )
    assert area == pytest.approx(
        {"name": "area", "mean": 90.0, "std": 30 * math.sqrt(2 / 3), "min": 60.0, "max": 120.0}
    )
    assert len(body["sha256"]) == 64
    assert body["size_bytes"] > 3 * 3 * 8
    assert counts(engine) == (1, 1)


def test_csv_upload_name_defaults_to_filename_and_target_by_name_or_index(
    client: TestClient,
) -> None:
    by_default = upload(client, HOUSES_CSV).json()
    assert by_default["name"] == "houses.csv"
    by_name = upload(client, HOUSES_CSV, target="rooms").json()
    by_index = upload(client, HOUSES_CSV, target="0").json()
    for body in (by_name, by_index):
        assert body["target"] == "rooms"
        assert body["feature_names"] == ["area", "price"]
        assert body["task"] == "regression"


def test_binary_target_reports_classes(client: TestClient) -> None:
    csv = b"a,b,label\n0.5,1,0\n1.5,2,1\n2.5,3,1\n3.5,4,0\n"
    body = upload(client, csv).json()
    assert body["task"] == "binary"
    assert body["classes"] == [0.0, 1.0]


def test_invalid_rows_drop_counts_dropped_rows(client: TestClient) -> None:
    csv = b"a,y\n1,2\nnan,3\n3,4\n5,\n6,7\n"
    response = upload(client, csv, invalid_rows="drop")
    assert response.status_code == 201, response.text
    body = response.json()
    assert (body["n_rows"], body["dropped_rows"]) == (3, 2)
    assert body["stats"][0]["mean"] == pytest.approx((1 + 3 + 6) / 3)


def test_npy_and_npz_uploads(client: TestClient) -> None:
    table = np.array([[1.0, 2.0, 10.0], [3.0, 4.0, 20.0], [5.0, 6.5, 30.0]])
    npy = client.post(
        "/v1/datasets",
        files={"file": ("t.npy", npy_bytes(table), "application/octet-stream")},
    )
    assert npy.status_code == 201, npy.text
    assert npy.json()["source_format"] == "npy"
    assert npy.json()["stats"][1]["max"] == 6.5

    buffer = io.BytesIO()
    np.savez(buffer, X=table[:, :2], y=table[:, 2])
    npz = client.post("/v1/datasets", files={"file": ("t.npz", buffer.getvalue())})
    assert npz.status_code == 201, npz.text
    body = npz.json()
    assert body["source_format"] == "npz"
    assert (body["n_rows"], body["n_features"]) == (3, 2)
    assert body["stats"][0]["mean"] == 3.0


#: Where a JSON dataset goes: its own operation, and the upload's path, which still takes one.
JSON_PATHS = pytest.mark.parametrize("path", ["/v1/datasets/inline", "/v1/datasets"])


@JSON_PATHS
def test_inline_json_dataset(client: TestClient, path: str) -> None:
    response = client.post(
        path,
        json={
            "name": "xor",
            "X": [[0, 0], [0, 1], [1, 0], [1, 1]],
            "y": [0, 1, 1, 0],
            "feature_names": ["a", "b"],
        },
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["name"] == "xor"
    assert body["source_format"] == "json"
    assert body["feature_names"] == ["a", "b"]
    assert body["task"] == "binary"
    assert body["stats"][0] == {"name": "a", "mean": 0.5, "std": 0.5, "min": 0.0, "max": 1.0}
    assert response.headers["location"] == f"/v1/datasets/{body['id']}"


def test_the_inline_operation_takes_json_only(client: TestClient, engine: Engine) -> None:
    for files, content, headers in (
        ({"file": ("houses.csv", HOUSES_CSV, "text/csv")}, None, None),
        (None, HOUSES_CSV, {"Content-Type": "text/csv"}),
        (None, b'{"X": [[1.0]], "y": [1.0]}', {}),
    ):
        response = client.post("/v1/datasets/inline", files=files, content=content, headers=headers)
        detail = assert_problem(response, 415)["detail"]
        assert "Content-Type: application/json" in detail
        assert "multipart/form-data to POST /v1/datasets" in detail
    assert counts(engine) == (0, 0)


# --- refused uploads leave nothing behind ---------------------------------------------------


def test_bad_csv_cell_names_line_and_column(
    client: TestClient, engine: Engine, settings: Settings
) -> None:
    csv = b"rooms,area,price\n2,60,100\n3,abc,150\n4,120,210\n"
    body = assert_problem(upload(client, csv), 422)
    assert body["errors"][0]["loc"] == ["file", "line 3", "column 'area'"]
    assert_nothing_left(engine, settings)


def test_a_text_column_says_how_to_encode_or_drop_it(
    client: TestClient, engine: Engine, settings: Settings
) -> None:
    """Not only ``'paris' is not a number``: the detail says what to do, and that no upload
    field leaves a column out (naming the fields there are)."""
    csv = b"rooms,city,price\n2,paris,100\n3,lyon,150\n4,paris,210\n"
    body = assert_problem(upload(client, csv, invalid_rows="drop"), 422, "/problems/invalid-input")
    assert [(e["loc"], e["msg"], e["type"]) for e in body["errors"]] == [
        (["file", f"line {n}", "column 'city'"], f"{city!r} is not a number", "not_a_number")
        for n, city in ((2, "paris"), (3, "lyon"), (4, "paris"))
    ]
    assert body["detail"] == (
        "line 2, column 'city': 'paris' is not a number (and 2 more problems). "
        "Every column must hold numbers: encode a text column as numbers (one-hot: a 0/1 column "
        "per value; or an integer code per value, as the classes of a target) or delete it from "
        "the file, then upload again. No upload field leaves a column out: `target` names the "
        "target column, and `invalid_rows=drop` drops rows with empty, NaN or infinite cells, "
        "never text."
    )
    assert_nothing_left(engine, settings)


def test_other_bad_cells_get_no_text_hint(client: TestClient) -> None:
    body = assert_problem(upload(client, b"a,y\n1,2\n,3\n4,5\n"), 422)
    assert body["detail"] == "line 3, column 'a': the cell is empty"


def test_text_in_an_inline_dataset_says_how_to_encode_or_leave_it_out(
    client: TestClient, engine: Engine, settings: Settings
) -> None:
    body = {"X": [[1.0, "paris"], [2.0, "lyon"]], "y": [1.0, 2.0], "feature_names": ["a", "c"]}
    problem = assert_problem(client.post("/v1/datasets", json=body), 422)
    assert [e["loc"] for e in problem["errors"]] == [["body", "X", 0, 1], ["body", "X", 1, 1]]
    assert problem["detail"] == (
        "The request is invalid: 2 errors. X and y must hold numbers: encode text as numbers "
        "(one-hot: a 0/1 column per value; or an integer code per value, as the classes of y), "
        "or leave that column out of X and its name out of feature_names."
    )
    assert_nothing_left(engine, settings)


def test_unknown_file_format_is_415(client: TestClient, engine: Engine, settings: Settings) -> None:
    response = client.post(
        "/v1/datasets", files={"file": ("photo.png", b"\x89PNG\r\n\x1a\n....", "image/png")}
    )
    assert_problem(response, 415)
    assert_nothing_left(engine, settings)


def test_rows_over_limit_is_413_naming_the_setting(settings: Settings, engine: Engine) -> None:
    with make_client(settings, max_rows=2) as client:
        body = assert_problem(upload(client, HOUSES_CSV), 413)
    assert "BATCHWISE_MAX_ROWS" in body["detail"]
    assert_nothing_left(engine, settings)


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_body_over_upload_limit_is_413(settings: Settings, engine: Engine, chunked: bool) -> None:
    limit = 10_000
    boundary = "xyzzy"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.csv"\r\n'
        "Content-Type: text/csv\r\n\r\na,b\n"
    ).encode()
    rows = b"1,2\n" * (10 * limit // 4)
    tail = f"\r\n--{boundary}--\r\n".encode()
    content: Any = iter([head, rows, tail]) if chunked else head + rows + tail
    with make_client(settings, max_upload_bytes=limit) as client:
        response = client.post(
            "/v1/datasets",
            content=content,
            headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
        )
    body = assert_problem(response, 413)
    assert "BATCHWISE_MAX_UPLOAD_BYTES" in body["detail"]
    assert str(limit) in body["detail"]
    assert_nothing_left(engine, settings)


@JSON_PATHS
def test_json_over_upload_limit_is_413(settings: Settings, engine: Engine, path: str) -> None:
    with make_client(settings, max_upload_bytes=100) as client:
        response = client.post(path, json={"X": [[1.0]] * 50, "y": [1.0] * 50})
    assert_problem(response, 413)
    assert_nothing_left(engine, settings)


def test_multipart_with_wrong_field_name_is_422(
    client: TestClient, engine: Engine, settings: Settings
) -> None:
    response = client.post(
        "/v1/datasets", files={"data": ("houses.csv", HOUSES_CSV)}, data={"colour": "red"}
    )
    body = assert_problem(response, 422)
    locs = {tuple(e["loc"]): e["type"] for e in body["errors"]}
    assert locs == {
        ("body", "data"): "extra_forbidden",
        ("body", "colour"): "extra_forbidden",
        ("body", "file"): "missing",
    }
    assert_nothing_left(engine, settings)


def test_file_sent_as_text_field_is_422(
    client: TestClient, engine: Engine, settings: Settings
) -> None:
    # A part without a filename is a text field: what `curl -F file=houses.csv` sends.
    response = client.post("/v1/datasets", files={"file": (None, "houses.csv")})
    body = assert_problem(response, 422)
    assert [(e["loc"], e["type"]) for e in body["errors"]] == [(["body", "file"], "file_expected")]
    assert_nothing_left(engine, settings)


def test_bad_form_fields_are_422(client: TestClient, engine: Engine, settings: Settings) -> None:
    response = upload(client, HOUSES_CSV, invalid_rows="ignore", name="  ")
    body = assert_problem(response, 422)
    assert {tuple(e["loc"]) for e in body["errors"]} == {
        ("body", "invalid_rows"),
        ("body", "name"),
    }
    assert_nothing_left(engine, settings)


def test_repeated_file_part_is_422(client: TestClient, engine: Engine, settings: Settings) -> None:
    response = client.post(
        "/v1/datasets",
        files=[("file", ("a.csv", HOUSES_CSV)), ("file", ("b.csv", HOUSES_CSV))],
    )
    body = assert_problem(response, 422)
    assert [(e["loc"], e["type"]) for e in body["errors"]] == [(["body", "file"], "duplicate")]
    assert_nothing_left(engine, settings)


def test_multipart_without_closing_boundary_is_400(
    client: TestClient, engine: Engine, settings: Settings
) -> None:
    content = (
        b'--xyz\r\nContent-Disposition: form-data; name="file"; filename="a.csv"\r\n\r\n'
        + HOUSES_CSV
    )
    response = client.post(
        "/v1/datasets",
        content=content,
        headers={"Content-Type": "multipart/form-data; boundary=xyz"},
    )
    assert "closing boundary" in assert_problem(response, 400)["detail"]
    assert_nothing_left(engine, settings)


def test_multipart_without_boundary_is_400(client: TestClient) -> None:
    response = client.post(
        "/v1/datasets", content=b"abc", headers={"Content-Type": "multipart/form-data"}
    )
    assert "boundary" in assert_problem(response, 400)["detail"]


@pytest.mark.parametrize("content_type", ["text/plain", None])
def test_other_request_media_types_are_415(
    client: TestClient, engine: Engine, content_type: str | None
) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    response = client.post("/v1/datasets", content=HOUSES_CSV, headers=headers)
    assert "multipart/form-data" in assert_problem(response, 415)["detail"]
    assert counts(engine) == (0, 0)


@pytest.mark.parametrize(
    ("body", "expected_loc", "expected_type"),
    [
        ({"X": [[1.0, 2.0], [3.0]], "y": [1.0, 2.0]}, ["body", "X", 1], None),
        ({"X": [[1.0], [2.0], [3.0]], "y": [1.0, 2.0]}, ["body", "y"], None),
        ({"X": [[1.0], ["a"]], "y": [1.0, 2.0]}, ["body", "X", 1, 0], "float_parsing"),
        ({"X": [[1.0], [2.0]], "y": [1.0, 2.0], "extra": 1}, ["body", "extra"], "extra_forbidden"),
        ({"y": [1.0, 2.0]}, ["body", "X"], "missing"),
    ],
    ids=["ragged-X", "length-mismatch", "not-a-number", "unknown-field", "missing-X"],
)
@JSON_PATHS
def test_json_body_errors_have_loc_paths(
    client: TestClient,
    path: str,
    engine: Engine,
    settings: Settings,
    body: dict[str, Any],
    expected_loc: list[Any],
    expected_type: str | None,
) -> None:
    problem = assert_problem(client.post(path, json=body), 422)
    assert problem["errors"][0]["loc"] == expected_loc
    if expected_type is not None:
        assert problem["errors"][0]["type"] == expected_type
    assert_nothing_left(engine, settings)


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "1e309"])
def test_json_non_finite_numbers_are_422(client: TestClient, literal: str) -> None:
    raw = f'{{"X": [[1.0], [{literal}]], "y": [1.0, 2.0]}}'
    response = client.post(
        "/v1/datasets", content=raw, headers={"Content-Type": "application/json"}
    )
    assert assert_problem(response, 422)["errors"][0]["loc"] == ["body", "X", 1, 0]


def test_malformed_json_is_422(client: TestClient) -> None:
    response = client.post(
        "/v1/datasets", content=b'{"X": [[1', headers={"Content-Type": "application/json"}
    )
    problem = assert_problem(response, 422)
    assert problem["errors"][0]["type"] == "json_invalid"


# --- get, list, delete ----------------------------------------------------------------------


def test_get_returns_what_create_returned(client: TestClient) -> None:
    created = upload(client, HOUSES_CSV).json()
    response = client.get(f"/v1/datasets/{created['id']}")
    assert response.status_code == 200
    assert response.json() == created


def test_get_unknown_id_is_404_naming_it(client: TestClient) -> None:
    body = assert_problem(client.get("/v1/datasets/no-such-id"), 404)
    assert "'no-such-id'" in body["detail"]
    assert body["type"] == "/problems/not-found"
    assert body["instance"] == "/v1/datasets/no-such-id"


def test_delete_removes_row_and_chunks(client: TestClient, engine: Engine) -> None:
    keep = upload(client, HOUSES_CSV).json()
    gone = upload(client, HOUSES_CSV).json()
    assert counts(engine) == (2, 2)
    response = client.delete(f"/v1/datasets/{gone['id']}")
    assert response.status_code == 204
    assert response.content == b""
    assert counts(engine) == (1, 1)
    assert_problem(client.get(f"/v1/datasets/{gone['id']}"), 404)
    assert client.get(f"/v1/datasets/{keep['id']}").status_code == 200
    assert (
        "'" + gone["id"] + "'"
        in assert_problem(client.delete(f"/v1/datasets/{gone['id']}"), 404)["detail"]
    )


def test_list_is_empty_without_datasets(client: TestClient) -> None:
    assert client.get("/v1/datasets").json() == {"items": [], "next_cursor": None}


def test_list_pages_newest_first_without_duplicates_when_created_at_ties(
    client: TestClient, engine: Engine
) -> None:
    ids = [upload(client, HOUSES_CSV, name=f"d{i}").json()["id"] for i in range(7)]
    # Three share one timestamp and the rest another: the id must break the ties.
    with session_factory(engine)() as session, session.begin():
        first = session.get(Dataset, ids[0])
        assert first is not None
        tie = first.created_at
        session.execute(update(Dataset).where(Dataset.id.in_(ids[:3])).values(created_at=tie))
        later = session.get(Dataset, ids[6])
        assert later is not None
        session.execute(
            update(Dataset).where(Dataset.id.in_(ids[3:])).values(created_at=later.created_at)
        )

    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 3}
        if cursor:
            params["cursor"] = cursor
        page = client.get("/v1/datasets", params=params).json()
        seen += [item["id"] for item in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == 3
    assert len(seen) == len(set(seen)) == 7
    # Newest first; within a tie, descending id.
    assert seen == sorted(ids[3:], reverse=True) + sorted(ids[:3], reverse=True)
    # The same walk again gives the same order.
    again = client.get("/v1/datasets", params={"limit": 100}).json()
    assert [item["id"] for item in again["items"]] == seen
    assert again["next_cursor"] is None


def test_list_default_limit_is_20(client: TestClient, engine: Engine) -> None:
    for i in range(21):
        client.post("/v1/datasets", json={"name": f"d{i}", "X": [[1.0], [2.0]], "y": [1, 2]})
    page = client.get("/v1/datasets").json()
    assert len(page["items"]) == 20
    assert page["next_cursor"] is not None


@pytest.mark.parametrize("cursor", ["not-a-cursor", "WyJ4Il0", "W10"])
def test_malformed_cursor_is_400(client: TestClient, cursor: str) -> None:
    body = assert_problem(client.get("/v1/datasets", params={"cursor": cursor}), 400)
    assert body["errors"][0]["loc"] == ["query", "cursor"]


@pytest.mark.parametrize("limit", ["0", "101", "ten"])
def test_limit_out_of_range_is_422(client: TestClient, limit: str) -> None:
    body = assert_problem(client.get("/v1/datasets", params={"limit": limit}), 422)
    assert body["errors"][0]["loc"] == ["query", "limit"]
