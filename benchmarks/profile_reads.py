"""One read request end to end, in-process, under cProfile: where the API's CPU goes.

    python -m benchmarks.profile_reads                  # temp SQLite file
    python -m benchmarks.profile_reads --requests 2000 --top 30
    python -m benchmarks.profile_reads --database-url postgresql+psycopg://postgres@127.0.0.1:5432/load

The job the load benchmark reads (:func:`benchmarks.load.prepare`: 20 epochs, 4,000 step
losses) is trained for real by a ``batchwise serve`` with two workers, with a key made by
``batchwise keys create``; that server is then stopped. In this process, the app that
``batchwise serve`` runs (:func:`service.api.app.create_app`, auth on) is called through its
ASGI interface, one request after another — the whole stack below uvicorn's HTTP parsing:
middleware, routing, auth, dependencies, the session, the SQL, the response. Each read path
is timed over ``--requests`` requests (mean and p50 of the wall time, one core), then profiled
(stdlib ``cProfile``), printing the functions with the most time of their own and the most
cumulative time.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import anyio.to_thread
import httpx
import numpy as np

from benchmarks import machine
from benchmarks.load import EMBEDDED_WORKERS, create_key, prepare, serve_with_workers
from service.api.app import create_app
from service.config import Settings
from service.db.migrate import upgrade

DEFAULT_REQUESTS = 1_000
DEFAULT_TOP = 25
WARMUP_REQUESTS = 50

ASGIApp = Any
T = TypeVar("T")


async def call(app: ASGIApp, path: str, headers: list[tuple[bytes, bytes]]) -> tuple[int, int]:
    """One ``GET path`` through ``app``'s ASGI interface; ``(status, body bytes)``."""
    route, _, query = path.partition("?")
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": route,
        "raw_path": route.encode(),
        "root_path": "",
        "query_string": query.encode(),
        "headers": [(b"host", b"127.0.0.1"), *headers],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }
    status, size = 0, 0

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status, size
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            size += len(message.get("body", b""))

    await app(scope, receive, send)
    return status, size


async def timed(
    app: ASGIApp, path: str, headers: list[tuple[bytes, bytes]], n: int
) -> tuple[np.ndarray, int]:
    """Wall seconds of ``n`` sequential requests, and the body size of the last."""
    for _ in range(WARMUP_REQUESTS):
        await call(app, path, headers)
    seconds = np.empty(n)
    size = 0
    for i in range(n):
        start = time.perf_counter()
        status, size = await call(app, path, headers)
        seconds[i] = time.perf_counter() - start
        if status != 200:
            raise RuntimeError(f"GET {path} answered {status}")
    return seconds, size


async def _inline_run_sync(func: Callable[..., T], *args: Any, **_options: Any) -> T:
    return func(*args)


async def profiled(
    app: ASGIApp, path: str, headers: list[tuple[bytes, bytes]], n: int
) -> cProfile.Profile:
    """``n`` requests under cProfile, with the thread pool's calls run inline: cProfile sees
    the main thread only, and the code the pool runs is what is to be seen (the hops
    themselves are timed, not profiled: compare the mean with and without the pool)."""
    profile = cProfile.Profile()
    real_run_sync = anyio.to_thread.run_sync
    anyio.to_thread.run_sync = _inline_run_sync  # type: ignore[assignment]
    try:
        profile.enable()
        for _ in range(n):
            await call(app, path, headers)
        profile.disable()
    finally:
        anyio.to_thread.run_sync = real_run_sync
    return profile


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.profile_reads",
        description=(__doc__ or "").split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--requests", type=int, default=DEFAULT_REQUESTS)
    parser.add_argument("--top", type=int, default=DEFAULT_TOP, help="functions listed per sort")
    parser.add_argument(
        "--database-url",
        help="an empty database to run on (create and drop it around the run); default a "
        "temp SQLite file",
    )
    parser.add_argument(
        "--no-profile", action="store_true", help="only the timings, no cProfile listing"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.requests <= 0:
        raise SystemExit("--requests must be positive")
    with tempfile.TemporaryDirectory(prefix="batchwise-profile-") as scratch:
        data_dir = Path(scratch)
        database_url = args.database_url or f"sqlite:///{(data_dir / 'batchwise.db').as_posix()}"
        upgrade(database_url)
        key = create_key(database_url, data_dir)
        auth = {"Authorization": f"Bearer {key}"}
        with (
            serve_with_workers(database_url, data_dir, EMBEDDED_WORKERS) as server,
            httpx.Client(base_url=server.base_url, timeout=120, headers=auth) as client,
        ):
            job_id, _, steps = prepare(client)

        settings = Settings(database_url=database_url, data_dir=data_dir, auth="on")
        app = create_app(settings)
        headers = [(b"authorization", f"Bearer {key}".encode())]
        paths = (f"/v1/jobs/{job_id}", f"/v1/jobs/{job_id}/history")
        try:
            for path in paths:
                seconds, size = asyncio.run(timed(app, path, headers, args.requests))
                print(
                    f"GET {path.replace(job_id, '{id}')}: {args.requests} requests, "
                    f"mean {1e3 * seconds.mean():.3f} ms, p50 {1e3 * np.median(seconds):.3f} ms, "
                    f"p99 {1e3 * np.percentile(seconds, 99):.3f} ms; body {size:,} bytes "
                    f"({steps:,} steps)"
                )
            if not args.no_profile:
                for path in paths:
                    profile = asyncio.run(profiled(app, path, headers, args.requests))
                    print(f"\n--- cProfile of {args.requests} × GET {path} ---")
                    stats = pstats.Stats(profile, stream=sys.stdout).strip_dirs()
                    stats.sort_stats("tottime").print_stats(args.top)
                    stats.sort_stats("cumulative").print_stats(args.top)
        finally:
            app.state.engine.dispose()
    machine.print_machine()
    return 0


if __name__ == "__main__":
    sys.exit(main())
