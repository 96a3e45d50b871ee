"""A SQLite database locked past its busy timeout is a 503 with ``Retry-After``, not a 500:
a real ``batchwise serve`` on a real SQLite file, whose write lock this test holds from
another connection (``BEGIN IMMEDIATE``) until the API has answered. Reads go on meanwhile
(WAL), and the same write succeeds once the lock is let go.
"""

from __future__ import annotations

import shutil
import sqlite3
import threading
from pathlib import Path

import httpx

from service.api.problems import DATABASE_RETRY_AFTER_S
from service.db import session_factory
from service.db.session import SQLITE_BUSY_TIMEOUT_MS
from tests.support.databases import engine_on, sqlite_url
from tests.support.factories import add_dataset, regression_data
from tests.support.problems import assert_problem
from tests.support.processes import run_server


def test_a_write_that_finds_sqlite_locked_past_its_busy_timeout_is_a_503_with_retry_after(
    sqlite_template: Path, tmp_path: Path
) -> None:
    path = tmp_path / "db" / "batchwise.db"
    path.parent.mkdir()
    shutil.copyfile(sqlite_template, path)
    url = sqlite_url(path)
    with engine_on(url) as engine, session_factory(engine)() as session:
        dataset_id = add_dataset(session, *regression_data(64), tmp_path)
    job = {"dataset_id": dataset_id, "batch_size": 16, "epochs": 1}

    data_dir = tmp_path / "data"
    data_dir.mkdir()
    with (
        run_server(database_url=url, data_dir=data_dir) as base_url,
        httpx.Client(base_url=base_url, timeout=60) as client,
    ):
        held, answered = threading.Event(), threading.Event()

        def hold_write_lock() -> None:
            connection = sqlite3.connect(path, isolation_level=None)
            try:
                connection.execute("BEGIN IMMEDIATE")
                held.set()
                answered.wait(60)
                connection.execute("ROLLBACK")
            finally:
                connection.close()

        holder = threading.Thread(target=hold_write_lock)
        holder.start()
        try:
            assert held.wait(10)
            assert client.get("/v1/jobs").status_code == 200  # readers are not blocked
            refused = client.post("/v1/jobs", json=job)
        finally:
            answered.set()
            holder.join()

        body = assert_problem(refused, 503)
        assert refused.headers["Retry-After"] == str(DATABASE_RETRY_AFTER_S)
        assert "locked" in body["detail"]
        assert f"Retry in {DATABASE_RETRY_AFTER_S} s" in body["detail"]
        assert refused.elapsed.total_seconds() >= SQLITE_BUSY_TIMEOUT_MS / 1000 * 0.9
        assert client.get("/v1/jobs").json()["items"] == []  # nothing was queued

        accepted = client.post("/v1/jobs", json=job)
        assert accepted.status_code == 202, accepted.text
        assert [item["id"] for item in client.get("/v1/jobs").json()["items"]] == [
            accepted.json()["id"]
        ]
