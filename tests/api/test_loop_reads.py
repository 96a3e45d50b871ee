"""The reads async code makes — the key check, ``GET /v1/jobs/{id}`` and its history, each in
one hop to a thread (:mod:`service.api.reads`) — next to sync routes that hold database
connections across their steps, in a real ``batchwise serve`` with auth on: every request is
answered.

They read through an engine of their own: from the shared pool, with every connection held by
sync routes (``POST /v1/jobs``) that wait for the loop to run their next step, the reads would
wait for a connection — a deadlock until the pool's timeout, which this test catches.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
from sqlalchemy import Engine

from service.db import session_factory
from service.keys import service as keys_service
from tests.support.factories import LONG_JOB, submit_http, upload_long_job_data
from tests.support.processes import run_server

# More clients posting at once than the shared pool has connections (5 + 10 overflow), each
# sending its next request as soon as the last is answered, so that new requests keep arriving
# (and being authenticated on the loop) while sync routes hold connections.
CLIENTS = 20
REQUESTS_PER_CLIENT = 15
# Well under the pool's 30 s timeout: a deadlock shows as timeouts, not slow answers.
REQUEST_TIMEOUT_S = 10.0


async def load(base_url: str, key: str, dataset_id: str, job_id: str) -> Counter[str]:
    """:data:`CLIENTS` clients posting jobs and as many reading the job and as many its history,
    each :data:`REQUESTS_PER_CLIENT` requests one after another; the outcomes counted as
    ``"<method> <status>"`` or the exception's name."""
    outcomes: Counter[str] = Counter()

    async def one_client(send: Callable[[httpx.AsyncClient], Awaitable[httpx.Response]]) -> None:
        async with httpx.AsyncClient(
            base_url=base_url,
            headers={"Authorization": f"Bearer {key}"},
            timeout=REQUEST_TIMEOUT_S,
        ) as client:
            for _ in range(REQUESTS_PER_CLIENT):
                try:
                    response = await send(client)
                except httpx.HTTPError as exc:
                    outcomes[type(exc).__name__] += 1
                else:
                    outcomes[f"{response.request.method} {response.status_code}"] += 1

    body = {"dataset_id": dataset_id, **LONG_JOB}
    sends: list[Callable[[httpx.AsyncClient], Awaitable[httpx.Response]]] = [
        lambda client: client.post("/v1/jobs", json=body),
        lambda client: client.get(f"/v1/jobs/{job_id}"),
        lambda client: client.get(f"/v1/jobs/{job_id}/history"),
    ]
    await asyncio.gather(*(one_client(send) for send in sends for _ in range(CLIENTS)))
    return outcomes


def test_reads_on_the_loop_and_sync_writes_holding_connections_are_all_answered(
    db_url: str, engine: Engine, tmp_path: Path
) -> None:
    with session_factory(engine)() as session:
        key = keys_service.create_key(session, tenant="busy").key
        session.commit()
    env = {"BATCHWISE_AUTH": "on"}
    with run_server(database_url=db_url, data_dir=tmp_path / "data", env=env) as base_url:
        with httpx.Client(
            base_url=base_url, headers={"Authorization": f"Bearer {key}"}, timeout=30
        ) as client:
            dataset_id = upload_long_job_data(client)
            job_id = submit_http(client, dataset_id, seed=0)
        outcomes = asyncio.run(load(base_url, key, dataset_id, job_id))
    total = CLIENTS * REQUESTS_PER_CLIENT
    assert outcomes == {"POST 202": total, "GET 200": 2 * total}
