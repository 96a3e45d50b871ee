"""The API process restarted under load, on both databases, with real worker processes.

SIGTERM mid-run: the workers do not need the API, so every job — one submitted right before
the restart too — finishes while it is down or after, and the new API serves each full history.
``kill -9`` mid-upload: the upload's transaction never committed, so there is no dataset row;
its spool file survives the crash and the next start removes it.
"""

from __future__ import annotations

import os
import signal
import socket
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, func, select

from service.config import Settings
from service.db import session_factory
from service.db.tables import Dataset, DatasetChunk
from tests.support.factories import LONG_JOB, submit_http, upload_long_job_data
from tests.support.processes import (
    ServerFailedError,
    claims,
    run_server,
    server_pid,
    wait_for,
    worker_dir,
    workers,
)
from tests.support.stored import history, job_row, long_job_history

SEEDS = (3, 4, 3)
LATE_SEED = 4  # the job submitted right before the restart


def epochs_done(engine: Engine, job_ids: list[str]) -> int:
    return sum(job_row(engine, job_id)["epoch"] for job_id in job_ids)


def test_api_restarted_mid_run_loses_no_job_and_serves_every_full_history(
    settings: Settings, engine: Engine, tmp_path: Path
) -> None:
    url, api_data = settings.resolved_database_url, settings.data_dir
    with workers(url, worker_dir(tmp_path), count=2) as started:
        with (
            run_server(database_url=url, data_dir=api_data) as base,
            httpx.Client(base_url=base, timeout=30) as client,
        ):
            dataset_id = upload_long_job_data(client)
            job_ids = [submit_http(client, dataset_id, seed) for seed in SEEDS]
            wait_for(
                lambda: job_row(engine, job_ids[0])["epoch"] >= 2, what="the first job mid-run"
            )
            job_ids.append(submit_http(client, dataset_id, LATE_SEED))
        # run_server's exit: SIGTERM, and a clean exit checked, straight after the 202.
        at_stop = {job_id: job_row(engine, job_id)["status"] for job_id in job_ids}
        assert "running" in at_stop.values()
        assert at_stop[job_ids[-1]] in ("queued", "running")
        progress = epochs_done(engine, job_ids)
        wait_for(lambda: epochs_done(engine, job_ids) > progress, what="training with no API up")

        with (
            run_server(database_url=url, data_dir=api_data) as base,
            httpx.Client(base_url=base, timeout=30) as client,
        ):
            wait_for(
                lambda: all(
                    client.get(f"/v1/jobs/{job_id}").json()["status"] == "succeeded"
                    for job_id in job_ids
                ),
                timeout=60,
                interval=0.1,
                what="every job to succeed",
            )
            histories = [client.get(f"/v1/jobs/{job_id}/history").json() for job_id in job_ids]
        assert all(w.process.poll() is None for w in started)  # the workers never noticed

    assert sorted(claims(*started)) == sorted(job_ids)  # each claimed once
    seeds = (*SEEDS, LATE_SEED)
    for job_id, seed, served in zip(job_ids, seeds, histories, strict=True):
        expected = long_job_history(seed)
        assert job_row(engine, job_id)["attempt"] == 1
        assert served["epoch"] == list(range(1, LONG_JOB["epochs"] + 1))
        assert served["train_loss"] == [e.record["train_loss"] for e in expected]
        steps = sum(e.record["steps"] for e in expected)
        assert len(served["steps"]["loss"]) == steps
        assert tuple(history(engine, job_id)) == expected


def multipart_csv(boundary: str, rows: int) -> bytes:
    """A multipart body with one CSV file part of ``rows`` rows (about 16 bytes each)."""
    lines = ["a,b,c,target"] + [f"{i},{i % 7},{i % 13},{i % 5}" for i in range(rows)]
    csv = ("\n".join(lines) + "\n").encode()
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.csv"\r\n'
        "Content-Type: text/csv\r\n\r\n"
    ).encode()
    return head + csv + f"\r\n--{boundary}--\r\n".encode()


def count(engine: Engine, table: Any) -> int:
    with session_factory(engine)() as session:
        return int(session.scalar(select(func.count()).select_from(table)) or 0)


def kill_mid_upload(base_url: str, spool: Path, body: bytes, boundary: str) -> list[Path]:
    """Send half of ``body`` as an upload to the server at ``base_url``; SIGKILL the server
    once its spool file has bytes; the spool files it had then."""
    host, port = base_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as upload_socket:
        upload_socket.sendall(
            (
                "POST /v1/datasets HTTP/1.1\r\n"
                f"Host: {host}:{port}\r\n"
                f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
                f"Content-Length: {len(body)}\r\n\r\n"
            ).encode()
            + body[: len(body) // 2]
        )
        spooling = wait_for(
            lambda: [p for p in spool.glob("upload-*.part") if p.stat().st_size > 0],
            what="the upload to reach its spool file",
        )
        os.kill(server_pid(base_url), signal.SIGKILL)
    return spooling


def test_api_killed_mid_upload_leaves_no_dataset_and_the_next_start_clears_the_spool(
    settings: Settings, engine: Engine
) -> None:
    url, data_dir = settings.resolved_database_url, settings.data_dir
    spool = data_dir / "spool"
    boundary = "faults-boundary"
    body = multipart_csv(boundary, 200_000)
    with (
        pytest.raises(ServerFailedError, match=r"exited with -9"),  # run_server's verdict
        run_server(database_url=url, data_dir=data_dir) as base,
    ):
        spooling = kill_mid_upload(base, spool, body, boundary)
    leftovers = sorted(p.name for p in spool.iterdir())
    assert leftovers == [p.name for p in spooling]  # the crash left it: nobody cleaned up
    assert count(engine, Dataset) == count(engine, DatasetChunk) == 0

    with (
        run_server(database_url=url, data_dir=data_dir) as base,
        httpx.Client(base_url=base, timeout=30) as client,
    ):
        assert list(spool.iterdir()) == []  # removed at start, before any request
        assert client.get("/v1/datasets").json()["items"] == []
    assert count(engine, Dataset) == count(engine, DatasetChunk) == 0
