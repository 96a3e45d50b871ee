"""PostgreSQL stalled (every server process SIGSTOPped: the kernel still accepts connections
and acknowledges packets, nothing answers) under a real ``batchwise serve`` with auth on.

The API's database waits end after ``BATCHWISE_DATABASE_TIMEOUT_S``: each route that needs the
database answers 503 problem+json with ``Retry-After`` within one to two timeouts (a pooled
connection that does not answer, then a connect that does not either), none of them on the
event loop, so ``/healthz`` keeps answering throughout: each poll within half a second beyond
the machine's own scheduling noise (measured just before), where a loop that waited on the
database would hold it for a whole timeout. How fast it answers (under 100 ms is the goal) is
printed with ``-s``, a figure rather than an assertion. After SIGCONT every route answers
again, with no restart.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from service.db import create_engine_for, session_factory
from tests.support.databases import engine_on
from tests.support.factories import make_key, submit_http, upload_long_job_data
from tests.support.private_postgres import PrivatePostgres
from tests.support.problems import assert_problem
from tests.support.processes import run_server, wait_for

pytestmark = pytest.mark.postgres

TIMEOUT_S = 2.0  # BATCHWISE_DATABASE_TIMEOUT_S; libpq's connect timeout is at least 2 s
# One timeout for a pooled connection that does not answer, one for the connect that replaces
# it, and scheduling slack for a loaded machine.
ANSWERED_WITHIN_S = 2 * TIMEOUT_S + 1.5
#: A loop that waited on the stalled database would hold /healthz for TIMEOUT_S at least.
HEALTHZ_BOUND_S = TIMEOUT_S / 4
# What is bounded is the slowest poll during the stall beyond the slowest in as long a window
# just before it: that window is the machine's own scheduling noise (a few ms on a quiet
# machine, tens beside busy neighbours), as in tests/security/test_body_limits.py.
NOISE_WINDOW_S = 2.0
HEALTHZ_EVERY_S = 0.02


def server_pids(server: PrivatePostgres) -> list[int]:
    """The postmaster (first) and every process it started."""
    postmaster = int((server.data_dir / "postmaster.pid").read_text().split()[0])
    children = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # ended meanwhile
        if int(stat.rsplit(")", 1)[1].split()[1]) == postmaster:
            children.append(int(entry.name))
    return [postmaster, *children]


@contextmanager
def stalled(server: PrivatePostgres) -> Iterator[None]:
    """Every process of ``server`` stopped (the postmaster first, so it starts no new one), and
    continued on the way out, whatever happens."""
    pids = server_pids(server)
    try:
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
        yield
    finally:
        for pid in pids:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)


@contextmanager
def healthz_polled(base_url: str) -> Iterator[list[float]]:
    """``GET /healthz`` every :data:`HEALTHZ_EVERY_S` on a connection of its own; the
    latencies of the polls (a failed poll counts as infinitely slow)."""
    latencies: list[float] = []
    stop = threading.Event()

    def poll() -> None:
        with httpx.Client(base_url=base_url, timeout=10) as client:
            while not stop.is_set():
                started = time.perf_counter()
                try:
                    ok = client.get("/healthz").status_code == 200
                except httpx.HTTPError:
                    ok = False
                latencies.append(time.perf_counter() - started if ok else float("inf"))
                stop.wait(HEALTHZ_EVERY_S)

    poller = threading.Thread(target=poll)
    poller.start()
    try:
        yield latencies
    finally:
        stop.set()
        poller.join()


def test_a_stalled_postgres_costs_503s_within_the_timeout_never_healthz(
    private_postgres: PrivatePostgres, private_postgres_url: str, tmp_path: Path
) -> None:
    with engine_on(private_postgres_url) as engine, session_factory(engine)() as session:
        key = make_key(session, "stall")
    env = {"BATCHWISE_AUTH": "on", "BATCHWISE_DATABASE_TIMEOUT_S": f"{TIMEOUT_S:g}"}
    headers = {"Authorization": f"Bearer {key}"}
    with (
        run_server(database_url=private_postgres_url, data_dir=tmp_path / "data", env=env) as url,
        httpx.Client(base_url=url, headers=headers, timeout=30) as client,
    ):
        dataset_id = upload_long_job_data(client)
        job_id = submit_http(client, dataset_id, seed=0)
        requests: dict[str, Callable[[httpx.Client], httpx.Response]] = {
            "GET job": lambda c: c.get(f"/v1/jobs/{job_id}"),
            "GET history": lambda c: c.get(f"/v1/jobs/{job_id}/history"),
            "GET history csv": lambda c: c.get(f"/v1/jobs/{job_id}/history.csv"),
            "GET jobs": lambda c: c.get("/v1/jobs"),
            "GET dataset": lambda c: c.get(f"/v1/datasets/{dataset_id}"),
            "POST job": lambda c: c.post(
                "/v1/jobs", json={"dataset_id": dataset_id, "epochs": 1, "batch_size": 64}
            ),
        }
        for name, send in requests.items():  # every pool holds a connection made before
            assert send(client).status_code in (200, 202), name

        def timed(send: Callable[[httpx.Client], httpx.Response]) -> tuple[httpx.Response, float]:
            with httpx.Client(base_url=url, headers=headers, timeout=30) as own:
                started = time.perf_counter()
                response = send(own)
                return response, time.perf_counter() - started

        with healthz_polled(url) as latencies:
            time.sleep(NOISE_WINDOW_S)
            before = len(latencies)
            with stalled(private_postgres), ThreadPoolExecutor(len(requests)) as pool:
                answers = dict(zip(requests, pool.map(timed, requests.values()), strict=True))
                during = len(latencies)
            after = latencies[during:]

        for name, (response, took_s) in answers.items():
            body = assert_problem(response, 503, "/problems/service-unavailable")
            assert response.headers["retry-after"] == "5", name
            assert "Retry in 5 s" in body["detail"], (name, body["detail"])
            assert took_s < ANSWERED_WITHIN_S, (name, took_s)
        polls = latencies[before:during]
        # The figures, for -s: each route's answer, /healthz's slowest polls.
        noise = max(latencies[:before])
        took = {name: round(took_s, 2) for name, (_, took_s) in answers.items()}
        slowest_ms = [round(s * 1000, 1) for s in sorted(polls)[-3:]]
        print(
            f"answered 503 in {took} s; /healthz slowest of {len(polls)}: {slowest_ms} ms, "
            f"before the stall {noise * 1000:.1f} ms"
        )
        assert len(polls) >= 50, len(polls)  # polled all through the stall (≥ 2 s)
        assert max(polls) - noise < HEALTHZ_BOUND_S, (sorted(polls)[-5:], noise)
        assert after == [] or max(after) - noise < HEALTHZ_BOUND_S

        # Continued: every route answers again, on the same server process.
        def all_answered() -> bool:
            return all(send(client).status_code in (200, 202) for send in requests.values())

        wait_for(all_answered, timeout=4 * TIMEOUT_S, interval=0.2, what="every route again")
        assert client.get("/readyz").status_code == 200


def test_every_wait_of_an_engine_with_a_timeout_ends_after_it(
    private_postgres: PrivatePostgres, private_postgres_url: str
) -> None:
    """A statement on a pooled connection to the stalled server fails after the timeout (the
    connection closed), and so does the new connection that replaces it; once the server
    continues, the same engine works again."""
    engine = create_engine_for(private_postgres_url, timeout_s=TIMEOUT_S)

    def select_one() -> float:
        started = time.perf_counter()
        with engine.connect() as connection:
            assert connection.execute(text("SELECT 1")).scalar() == 1
        return time.perf_counter() - started

    try:
        select_one()  # a pooled connection
        with stalled(private_postgres):
            started = time.perf_counter()
            with pytest.raises(OperationalError, match=r"did not answer within 2 s|timeout"):
                select_one()
            took_s = time.perf_counter() - started
        # The pooled connection's ping waits one timeout, its replacement's connect another.
        assert TIMEOUT_S <= took_s < ANSWERED_WITHIN_S, took_s
        assert select_one() < TIMEOUT_S
    finally:
        engine.dispose()
