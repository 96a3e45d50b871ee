"""End to end through a real ``batchwise serve`` process (uvicorn) with httpx."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from sqlalchemy import Engine, text

from service.api.upload import spool_dir

ServeProcess = Callable[..., AbstractContextManager[str]]

HOUSES_CSV = b"rooms,area,price\n2,60,100.5\n3,90,150.25\n4,120,210\n"


def counts(engine: Engine) -> tuple[int, int]:
    with engine.connect() as connection:
        datasets = connection.scalar(text("SELECT count(*) FROM datasets"))
        chunks = connection.scalar(text("SELECT count(*) FROM dataset_chunks"))
    return int(datasets or 0), int(chunks or 0)


def test_upload_get_list_delete(
    serve_process: ServeProcess, db_url: str, tmp_path: Path, engine: Engine
) -> None:
    data_dir = tmp_path / "server-data"
    with (
        serve_process(database_url=db_url, data_dir=data_dir) as base,
        httpx.Client(base_url=base) as client,
    ):
        assert client.get("/readyz").status_code == 200
        created = client.post(
            "/v1/datasets", files={"file": ("houses.csv", HOUSES_CSV, "text/csv")}
        )
        assert created.status_code == 201, created.text
        dataset = created.json()
        location = created.headers["location"]
        assert location == f"/v1/datasets/{dataset['id']}"
        assert client.get(location).json() == dataset
        listed = client.get("/v1/datasets").json()
        assert listed == {"items": [dataset], "next_cursor": None}
        assert counts(engine) == (1, 1)
        assert client.delete(location).status_code == 204
        assert client.get(location).status_code == 404
        assert client.get("/v1/datasets").json()["items"] == []
    assert counts(engine) == (0, 0)
    assert list(spool_dir(data_dir).iterdir()) == []


def test_chunked_upload_over_limit_is_cut_off_with_413(
    serve_process: ServeProcess, db_url: str, tmp_path: Path, engine: Engine
) -> None:
    limit = 256 * 1024
    data_dir = tmp_path / "server-data"
    boundary = "cut-off-boundary"
    sent = 0

    def body() -> Iterator[bytes]:
        nonlocal sent
        yield (
            f"--{boundary}\r\n"
            'Content-Disposition: form-data; name="file"; filename="big.csv"\r\n'
            "Content-Type: text/csv\r\n\r\na,b\n"
        ).encode()
        block = b"1.5,2.5\n" * 8192  # 64 KiB
        for _ in range(10 * limit // len(block)):
            sent += len(block)
            yield block
        yield f"\r\n--{boundary}--\r\n".encode()

    env = {"BATCHWISE_MAX_UPLOAD_BYTES": str(limit)}
    with (
        serve_process(database_url=db_url, data_dir=data_dir, env=env) as base,
        httpx.Client(base_url=base, timeout=30) as client,
    ):
        response = client.post(
            "/v1/datasets",
            content=body(),  # a generator: chunked transfer encoding, no Content-Length
            headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
        )
        assert response.status_code == 413, response.text
        assert response.headers["content-type"] == "application/problem+json"
        assert str(limit) in response.json()["detail"]
        assert list(spool_dir(data_dir).iterdir()) == []
        # The connection stays usable and the server healthy.
        assert client.get("/healthz").json() == {"status": "ok"}
    assert sent >= 9 * limit
    assert counts(engine) == (0, 0)


def test_problem_shapes_over_http(serve_process: ServeProcess, db_url: str, tmp_path: Path) -> None:
    with (
        serve_process(database_url=db_url, data_dir=tmp_path / "d") as base,
        httpx.Client(base_url=base) as client,
    ):
        cases: list[tuple[str, str, dict[str, Any], int]] = [
            ("GET", "/nowhere", {}, 404),
            ("PATCH", "/v1/datasets", {}, 405),
            (
                "POST",
                "/v1/datasets",
                {"content": b"x", "headers": {"Content-Type": "text/plain"}},
                415,
            ),
            ("POST", "/v1/datasets", {"json": {"X": [[1.0], [2.0, 3.0]], "y": [1, 2]}}, 422),
            ("POST", "/v1/datasets", {"json": {"X": np.ones((2, 1)).tolist(), "y": [1]}}, 422),
        ]
        for method, path, kwargs, status in cases:
            response = client.request(method, path, **kwargs)
            assert response.status_code == status, (method, path, response.text)
            assert response.headers["content-type"] == "application/problem+json"
            body = response.json()
            assert {"type", "title", "status", "detail"} <= set(body)
            assert body["status"] == status
            if status == 422:
                assert body["errors"][0]["loc"][:2] in (["body", "X"], ["body", "y"])
