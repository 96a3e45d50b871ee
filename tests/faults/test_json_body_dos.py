"""Oversized JSON bodies against a real ``batchwise serve``: every request but the upload is
capped by ``BATCHWISE_MAX_REQUEST_BYTES`` while it streams, so a client cannot make the server
buffer a body of any size before validation refuses it.

The server runs with a 64 KiB cap. A 10 MiB body, chunked or with its true length, is refused
with 413 problem+json long before the client has sent half of it, and 20 such requests leave
the server's resident memory where it was. A body under the cap is still read and validated.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.databases import sqlite_url
from tests.support.processes import run_server
from tests.support.rawhttp import listening_pid, rss_bytes, send

MAX_REQUEST_BYTES = 64 * 1024
ATTACK = b'{"rows": [' + b"[1.0, 2.0], " * (10 * 1024**2 // 12) + b"[1.0, 2.0]]}"
MEASURED_REQUESTS = 20
MAX_RSS_GROWTH = 4 * 1024 * 1024
TOO_LARGE = (
    f"The request body is larger than the limit of {MAX_REQUEST_BYTES} bytes "
    "(BATCHWISE_MAX_REQUEST_BYTES): "
)
#: What each route's refusal tells the client to do instead.
ADVICE = {
    "/v1/jobs": "a job is a training config of a few hundred bytes; upload its data to "
    "POST /v1/datasets and name them with dataset_id.",
    "/v1/sweeps": "a sweep is a training config and lists of batch sizes and rates; upload its "
    "data to POST /v1/datasets and name them with dataset_id.",
    "/v1/jobs/j-missing/predict": "send the rows to predict in several smaller requests.",
}


@pytest.fixture(scope="module")
def port(tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path) -> Iterator[int]:
    root = tmp_path_factory.mktemp("json-dos")
    shutil.copyfile(sqlite_template, root / "batchwise.db")
    env = {"BATCHWISE_MAX_REQUEST_BYTES": str(MAX_REQUEST_BYTES)}
    with run_server(
        database_url=sqlite_url(root / "batchwise.db"), data_dir=root / "data", env=env
    ) as base_url:
        yield int(base_url.rsplit(":", 1)[1])


@pytest.mark.parametrize("path", ["/v1/jobs", "/v1/sweeps", "/v1/jobs/j-missing/predict"])
@pytest.mark.parametrize("chunked", [True, False], ids=["chunked", "content-length"])
def test_a_body_over_the_request_limit_is_413_early_without_memory_growth(
    port: int, path: str, chunked: bool
) -> None:
    length = None if chunked else len(ATTACK)

    def attack() -> tuple[int, int, int]:
        answer = send(
            port, ATTACK, content_length=length, content_type="application/json", path=path
        )
        problem = answer.problem()
        expected = (413, TOO_LARGE + ADVICE[path], path)
        assert (answer.status, problem["detail"], problem["instance"]) == expected
        assert answer.headers["connection"] == "close"
        return answer.status, answer.sent, answer.total

    for _ in range(3):  # warm-up: the first requests grow caches, not leaks
        attack()
    pid = listening_pid(port)
    before = rss_bytes(pid)
    answers = [attack() for _ in range(MEASURED_REQUESTS)]
    after = rss_bytes(pid)
    # The answer came while most of the body was still unsent: it was never read.
    assert max(sent for _, sent, _ in answers) < len(ATTACK) // 2
    assert after - before < MAX_RSS_GROWTH, (before, after)


def test_a_body_under_the_limit_is_still_read_and_validated(port: int) -> None:
    body = json.dumps({"dataset_id": "d-missing", "batch_size": 0}).encode()
    answer = send(
        port, body, content_length=len(body), content_type="application/json", path="/v1/jobs"
    )
    problem = answer.problem()
    assert answer.status == 422
    assert ["body", "batch_size"] in [error["loc"] for error in problem["errors"]]
