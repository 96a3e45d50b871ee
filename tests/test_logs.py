"""Logs: JSON lines (or text) with request, job and worker ids — from the formatter, from a
500 in the app, and from real ``serve``, ``worker`` and ``migrate`` processes."""

from __future__ import annotations

import io
import json
import logging
import os
import pty
import re
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from service.api import create_app
from service.config import Settings
from service.logs import configure_logging, log_context, resolve_format
from tests.support.databases import sqlite_url
from tests.support.factories import add_dataset, regression_data, submit
from tests.support.processes import ServeProcess, run_batchwise, workers

TEXT_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ [\w.]+: .*$")


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """Put the root logger back as it was (pytest's capture handlers included)."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        yield
    finally:
        for handler in root.handlers:
            if handler not in handlers:
                root.removeHandler(handler)
        root.setLevel(level)


def json_lines(text: str) -> list[dict[str, Any]]:
    """Every non-empty line parsed as one JSON object (fails on any other line)."""
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@pytest.mark.usefixtures("restore_logging")
def test_json_line_carries_context_ids_extras_and_the_traceback() -> None:
    stream = io.StringIO()
    assert configure_logging("info", "json", stream=stream) == "json"
    log = logging.getLogger("service.test")
    with log_context(request_id="r1", worker_id="w1"), log_context(job_id="j1"):
        log.info("claimed %s", "it", extra={"attempt": 2, "path": Path("a")})
        try:
            raise ValueError("bad thing")
        except ValueError:
            log.exception("failed")
    log.debug("below the level")
    log.info("outside", extra={"loss": float("nan")})
    first, second, third = json_lines(stream.getvalue())
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", first.pop("time"))
    assert first == {
        "level": "INFO",
        "logger": "service.test",
        "message": "claimed it",
        "request_id": "r1",
        "job_id": "j1",
        "worker_id": "w1",
        "attempt": 2,
        "path": "a",
    }
    assert second["level"] == "ERROR"
    assert second["job_id"] == "j1"
    assert second["exception"].startswith("Traceback")
    assert "ValueError: bad thing" in second["exception"]
    # Outside the context no id is written; a NaN extra is still valid JSON (as text).
    assert third["message"] == "outside"
    assert "request_id" not in third
    assert "job_id" not in third
    assert third["loss"] == "nan"


@pytest.mark.usefixtures("restore_logging")
def test_text_format_when_forced_and_a_second_call_replaces_the_handler() -> None:
    first, stream = io.StringIO(), io.StringIO()
    configure_logging("info", "json", stream=first)
    configure_logging("warning", "text", stream=stream)
    log = logging.getLogger("service.test")
    log.info("not shown")
    with log_context(job_id="j9"):
        log.warning("slow %d", 3)
    assert first.getvalue() == ""
    (line,) = stream.getvalue().splitlines()
    assert TEXT_LINE.match(line)
    assert line.endswith("WARNING service.test: slow 3 [job_id=j9]")


def test_auto_is_text_on_a_terminal_and_json_otherwise() -> None:
    assert resolve_format("auto", io.StringIO()) == "json"
    primary, secondary = pty.openpty()
    try:
        with os.fdopen(secondary, "w", closefd=False) as terminal:
            assert resolve_format("auto", terminal) == "text"
            assert resolve_format("json", terminal) == "json"
    finally:
        os.close(primary)
        os.close(secondary)
    closed = io.StringIO()
    closed.close()
    assert resolve_format("auto", closed) == "json"


@pytest.mark.usefixtures("restore_logging")
def test_unexpected_error_logs_its_request_id_and_echoes_it(settings: Settings) -> None:
    stream = io.StringIO()
    configure_logging("info", "json", stream=stream)
    app = create_app(settings)

    @app.get("/boom")
    def boom() -> None:
        logging.getLogger("service.api").info("about to fail")
        raise RuntimeError("kaboom")

    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.get("/boom", headers={"X-Request-ID": "boom-1"})
    assert response.status_code == 500
    assert response.headers["x-request-id"] == "boom-1"
    lines = [line for line in json_lines(stream.getvalue()) if line["logger"] == "service.api"]
    # The route's own line (run in a thread) and the 500 handler's both carry the id.
    assert [(line["message"], line["request_id"]) for line in lines] == [
        ("about to fail", "boom-1"),
        ("unhandled error on GET /boom", "boom-1"),
    ]
    assert "RuntimeError: kaboom" in lines[1]["exception"]


def test_serve_writes_json_lines_with_the_request_id(
    serve_process: ServeProcess, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with serve_process(
        database_url=sqlite_url(tmp_path / "serve.db"), data_dir=tmp_path
    ) as base_url:
        request = urllib.request.Request(
            f"{base_url}/v1/jobs", headers={"X-Request-ID": "trace-me-7"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.headers["X-Request-ID"] == "trace-me-7"
    output = capsys.readouterr().out
    server_lines = output.split(" ---\n", 1)[1]
    lines = json_lines(server_lines)
    assert any(line["message"].startswith("serving on http://") for line in lines)
    # uvicorn's access line goes through the same handler, inside the request's context.
    (access,) = [line for line in lines if line.get("request_id") == "trace-me-7"]
    assert access["logger"] == "uvicorn.access"
    assert "GET /v1/jobs" in access["message"]


def test_worker_lines_follow_a_job_from_claim_to_finish(
    session: Session, settings: Settings
) -> None:
    X, y = regression_data(64)
    dataset_id = add_dataset(session, X, y, settings.data_dir)
    job_id = submit(session, dataset_id, batch_size=16, epochs=2, commit=True)
    env = {"BATCHWISE_LOG_LEVEL": "debug", "BATCHWISE_WORKER_THREADS": "1"}
    with workers(settings.resolved_database_url, settings.data_dir, burst=True, env=env) as (
        worker,
    ):
        assert worker.wait() == 0
        lines = json_lines(worker.output())
    by_message = {re.sub(r"[0-9a-f-]{36}", "<job>", line["message"]): line for line in lines}
    started = next(line for line in lines if ": started (pid" in line["message"])
    worker_id = started["worker_id"]
    assert started["pid"] == worker.pid
    assert started["threads"] == 1
    claimed = next(line for line in lines if "claimed job" in line["message"])
    assert (claimed["job_id"], claimed["worker_id"], claimed["attempt"]) == (job_id, worker_id, 1)
    epochs = [line for line in lines if line["level"] == "DEBUG" and "epoch" in line]
    assert [(e["epoch"], e["job_id"], e["worker_id"]) for e in epochs] == [
        (1, job_id, worker_id),
        (2, job_id, worker_id),
    ]
    finished = next(line for line in lines if line.get("status") == "succeeded")
    assert finished["job_id"] == job_id
    assert finished["worker_id"] == worker_id
    assert finished["error_code"] is None
    assert finished["duration_s"] >= 0
    assert any(message.startswith("worker ") and "stopped" in message for message in by_message)


def test_migrate_writes_text_when_forced(tmp_path: Path) -> None:
    env = {
        "BATCHWISE_DATABASE_URL": sqlite_url(tmp_path / "m.db"),
        "BATCHWISE_DATA_DIR": str(tmp_path),
        "BATCHWISE_LOG_FORMAT": "text",
    }
    result = run_batchwise("migrate", env=env)
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert lines
    assert all(TEXT_LINE.match(line) for line in lines), lines
    assert "INFO service.cli: database" in lines[-1]

    env["BATCHWISE_LOG_FORMAT"] = "yaml"
    refused = run_batchwise("migrate", env=env)
    assert refused.returncode == 1
    assert "invalid settings: log_format" in refused.stderr
