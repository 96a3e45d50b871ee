"""Load on the HTTP API: many concurrent clients on loopback against one real ``serve``.

    python -m benchmarks.load                    # temp SQLite file, 30 s scenarios, ~2 minutes
    python -m benchmarks.load --quick            # 5 s scenarios
    python -m benchmarks.load --seconds 10
    python -m benchmarks.load --database-url postgresql+psycopg://postgres@127.0.0.1:5432/load

One ``python -m service serve`` (uvicorn on 127.0.0.1, ``BATCHWISE_WORKERS=2`` embedded workers)
on one database (default a fresh SQLite file in a temp dir; ``--database-url`` an empty database
that you create before and drop after: the run leaves its rows). Before the load, a job of 20
epochs (linear, 8,000 × 8 rows, 20 % validation, B = 32: 4,000 step losses) is trained for real by
those workers, so its history is the one a worker writes.

Scenarios, each driven by a bounded asyncio load generator (``httpx.AsyncClient``, ``clients``
coroutines sharing one connection pool of that size, each sending its next request as soon as
the last one answered, until the duration or the request cap is reached; it stops by itself):

1. ``GET /v1/jobs/{id}`` of the finished job, 50 clients;
2. ``GET /v1/jobs/{id}/history`` of that job in full (JSON, 4,000 steps), 50 clients;
3. ``POST /v1/jobs`` of small jobs (1 epoch, 64 rows, B = 32), 20 clients, while the two
   workers drain the queue, until the duration or ``--max-jobs`` accepted jobs (default 3,000:
   the workers finish ~100 jobs/s on SQLite, a third of the rate the API accepts them, and the
   cap keeps the drain, hence the run, near two minutes); then a bounded wait until every
   accepted job has finished, and the count of those that succeeded and failed (read from the
   database).

Latency is the client's: request sent to last body byte received, including the time the
request waited for the client's own event loop. Client, server and workers share the machine's
cores, so the figures are a floor for a server that had the machine to itself.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import AsyncExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
from sqlalchemy import Engine, func, select

from benchmarks import _processes, machine
from benchmarks.jobs import make_data, submit, upload_npy, wait_finished
from service.db import Job, create_engine_for, session_factory
from service.db.migrate import upgrade

EMBEDDED_WORKERS = 2
#: The tenant of the key the load generator authenticates with.
TENANT = "load"
READ_CLIENTS = 50
POST_CLIENTS = 20
DEFAULT_SECONDS = 30.0
QUICK_SECONDS = 5.0
# A cap on requests per read scenario, far above what loopback reaches in the duration, so a
# run that goes unexpectedly fast still stops.
MAX_REQUESTS = 200_000
# The POST scenario stops at its duration or at this many accepted jobs: 20 clients queue jobs
# ~3× faster than 2 workers finish them on SQLite, so 30 s of posting is ~90 s of draining.
DEFAULT_MAX_JOBS = 3_000
REQUEST_TIMEOUT_S = 10.0
DRAIN_TIMEOUT_S = 120.0
WARMUP_REQUESTS_PER_CLIENT = 2
GOAL_READ_P99_MS = 100.0

HISTORY_ROWS, HISTORY_FEATURES, HISTORY_EPOCHS = 8_000, 8, 20
HISTORY_JOB = {
    "model": "linear",
    "optimizer": "sgd",
    "learning_rate": 0.005,
    "batch_size": 32,
    "epochs": HISTORY_EPOCHS,
    "validation_split": 0.2,
    "seed": 0,
    "tags": ["bench-load-history"],
}
SMALL_JOB = {"epochs": 1, "batch_size": 32, "tags": ["bench-load-post"]}
PENDING = ("queued", "running")


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --- the server ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Server:
    base_url: str
    pid: int

    def cpu_seconds(self) -> float:
        """User + system CPU seconds of the uvicorn process so far (not its workers'); NaN
        where ``/proc`` is missing."""
        try:
            stat = Path(f"/proc/{self.pid}/stat").read_text()
        except OSError:
            return float("nan")
        # Fields after the ")" that closes the command name: utime and stime are the 12th
        # and 13th (fields 14 and 15 of proc(5)), in clock ticks.
        fields = stat.rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def create_key(database_url: str, data_dir: Path) -> str:
    """A new API key of the tenant :data:`TENANT`, made by the real ``batchwise keys create``
    on the benchmark's database."""
    completed = subprocess.run(
        [sys.executable, "-m", "service", "keys", "create", "--tenant", TENANT],
        env=_processes.child_env(database_url, data_dir),
        cwd=_processes.REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if completed.returncode != 0:
        raise _processes.ProcessFailedError(f"keys create failed: {completed.stderr}")
    return completed.stdout.strip()


@contextmanager
def serve_with_workers(
    database_url: str, data_dir: Path, workers: int, *, api_processes: int = 1
) -> Iterator[Server]:
    """A real ``python -m service serve`` on 127.0.0.1 with auth on, ``api_processes`` uvicorn
    processes and ``workers`` embedded workers; yields it once ``GET /healthz`` answers 200.
    Output goes to a log file in ``data_dir``, printed if it fails to start. Stopped with
    SIGTERM (it stops its workers), then SIGKILL."""
    port = _processes.free_port()
    base_url = f"http://127.0.0.1:{port}"
    log_path = data_dir / f"serve-{port}.log"
    env = _processes.child_env(
        database_url,
        data_dir,
        {
            "BATCHWISE_WORKERS": str(workers),
            "BATCHWISE_API_PROCESSES": str(api_processes),
            "BATCHWISE_AUTH": "on",
        },
    )
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "service", "serve", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            cwd=_processes.REPO_ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + _processes.STARTUP_TIMEOUT_S
        while True:
            if process.poll() is not None or time.monotonic() > deadline:
                output = log_path.read_text(encoding="utf-8", errors="replace")
                raise _processes.ProcessFailedError(
                    f"serve did not answer /healthz (exit {process.poll()}); output:\n{output}"
                )
            try:
                with urllib.request.urlopen(f"{base_url}/healthz", timeout=2) as response:
                    if response.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.05)
        yield Server(base_url, process.pid)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


# --- the load generator ----------------------------------------------------------------------


@dataclass
class Run:
    """What one scenario measured: ``latencies_s`` of the answers with the expected status;
    ``errors`` by kind (``HTTP 500``, ``ReadTimeout``, …); ``wall_s`` from the first request
    to the last answer; CPU seconds the uvicorn process and this client spent meanwhile."""

    name: str
    clients: int
    latencies_s: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    wall_s: float = 0.0
    server_cpu_s: float = float("nan")
    client_cpu_s: float = float("nan")

    @property
    def ok(self) -> int:
        return len(self.latencies_s)

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    @property
    def per_second(self) -> float:
        return self.ok / self.wall_s if self.wall_s > 0 else 0.0

    def percentile_ms(self, q: float) -> float:
        """The ``q``-th percentile of the latencies in ms (linear interpolation); NaN if none."""
        if not self.latencies_s:
            return float("nan")
        return 1e3 * float(np.percentile(np.asarray(self.latencies_s), q))


Send = Callable[[httpx.AsyncClient], Awaitable[httpx.Response]]


async def drive(
    server: Server,
    send: Send,
    *,
    name: str,
    clients: int,
    seconds: float,
    max_requests: int,
    expected_status: int,
    warm_up: int = 0,
    on_ok: Callable[[httpx.Response], None] | None = None,
) -> Run:
    """``clients`` simulated clients, each an ``httpx.AsyncClient`` with one keep-alive
    connection, ``send`` one request after another until ``seconds`` have passed or
    ``max_requests`` were sent in all (a request in flight at the deadline still completes,
    within the client's timeout). First each sends ``warm_up`` untimed requests (the
    connections open, the server's code paths warm). An answer with ``expected_status`` is
    timed; another status or a transport error is counted as an error."""
    run = Run(name, clients)
    sent = 0
    deadline = 0.0

    async def one_client(client: httpx.AsyncClient) -> None:
        nonlocal sent
        while time.perf_counter() < deadline and sent < max_requests:
            sent += 1
            request_start = time.perf_counter()
            try:
                response = await send(client)
            except httpx.HTTPError as exc:
                run.errors[type(exc).__name__] += 1
                continue
            elapsed = time.perf_counter() - request_start
            if response.status_code != expected_status:
                run.errors[f"HTTP {response.status_code}"] += 1
                continue
            run.latencies_s.append(elapsed)
            if on_ok is not None:
                on_ok(response)

    # One client per connection: httpx's pool does work per request that grows with its
    # connections (a shared pool of 50 cost the generator ~4 ms of CPU a request, more than the
    # server), and separate clients are what the scenario models.
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    async with AsyncExitStack() as stack:
        pool = [
            await stack.enter_async_context(
                httpx.AsyncClient(
                    base_url=server.base_url, limits=limits, timeout=REQUEST_TIMEOUT_S
                )
            )
            for _ in range(clients)
        ]
        for _ in range(warm_up):
            await asyncio.gather(*(send(client) for client in pool))
        server_cpu_start, client_cpu_start = server.cpu_seconds(), time.process_time()
        start = time.perf_counter()
        deadline = start + seconds
        await asyncio.gather(*(one_client(client) for client in pool))
        run.wall_s = time.perf_counter() - start
        run.server_cpu_s = server.cpu_seconds() - server_cpu_start
        run.client_cpu_s = time.process_time() - client_cpu_start
    return run


async def read_scenario(server: Server, path: str, *, name: str, seconds: float) -> Run:
    """50 clients GET ``path``, each answer 200."""

    def send(client: httpx.AsyncClient) -> Awaitable[httpx.Response]:
        return client.get(path)

    return await drive(
        server,
        send,
        name=name,
        clients=READ_CLIENTS,
        seconds=seconds,
        max_requests=MAX_REQUESTS,
        expected_status=200,
        warm_up=WARMUP_REQUESTS_PER_CLIENT,
    )


async def post_scenario(
    server: Server, dataset_id: str, *, seconds: float, max_jobs: int
) -> tuple[Run, list[str]]:
    """20 clients POST small jobs, each answer 202, for ``seconds`` or ``max_jobs`` requests;
    the run and the ids of the accepted jobs (from ``Location``, so the client parses no
    body). No warm-up: every job posted counts."""
    body = SMALL_JOB | {"dataset_id": dataset_id}
    accepted: list[str] = []

    def send(client: httpx.AsyncClient) -> Awaitable[httpx.Response]:
        return client.post("/v1/jobs", json=body)

    def on_ok(response: httpx.Response) -> None:
        accepted.append(response.headers["Location"].rstrip("/").rsplit("/", 1)[-1])

    run = await drive(
        server,
        send,
        name="POST /v1/jobs (2 workers draining)",
        clients=POST_CLIENTS,
        seconds=seconds,
        max_requests=max_jobs,
        expected_status=202,
        on_ok=on_ok,
    )
    return run, accepted


# --- the database's view of the posted jobs ---------------------------------------------------


def status_counts(engine: Engine, dataset_id: str) -> Counter[str]:
    """How many jobs on ``dataset_id`` are in each status."""
    with session_factory(engine)() as session:
        rows = session.execute(
            select(Job.status, func.count())
            .where(Job.dataset_id == dataset_id)
            .group_by(Job.status)
        ).all()
    return Counter({str(status): int(count) for status, count in rows})


def wait_drained(engine: Engine, dataset_id: str, timeout: float) -> tuple[Counter[str], float]:
    """Poll until no job on ``dataset_id`` is queued or running, or ``timeout`` passes; the
    final counts and the seconds waited."""
    start = time.perf_counter()
    while True:
        counts = status_counts(engine, dataset_id)
        waited = time.perf_counter() - start
        if not any(counts[status] for status in PENDING) or waited > timeout:
            return counts, waited
        time.sleep(0.25)


# --- the run ---------------------------------------------------------------------------------


def prepare(client: httpx.Client) -> tuple[str, str, int]:
    """Upload the datasets and train the history job for real; ``(job id, small dataset id,
    step losses in its history)``."""
    X, y = make_data(HISTORY_ROWS, seed=3)
    history_set = upload_npy(client, X[:, :HISTORY_FEATURES], y, "bench-load-history")
    small_set = upload_npy(client, X[:64, :HISTORY_FEATURES], y[:64], "bench-load-small")
    job = submit(client, HISTORY_JOB | {"dataset_id": history_set["id"]})
    finished = wait_finished(client, job["id"], timeout=120)
    if finished["status"] != "succeeded":
        raise RuntimeError(f"the history job did not succeed: {finished}")
    history = client.get(f"/v1/jobs/{job['id']}/history").json()
    epochs, steps = len(history["epoch"]), len(history["steps"]["step"])
    if epochs != HISTORY_EPOCHS or steps != history["total_steps"]:
        raise RuntimeError(f"history of {epochs} epochs and {steps} steps: {history.keys()}")
    return job["id"], small_set["id"], steps


def format_run(run: Run, goal_p99_ms: float | None) -> str:
    p99 = run.percentile_ms(99)
    verdict = ""
    if goal_p99_ms is not None:
        met = run.error_count == 0 and p99 < goal_p99_ms
        verdict = f"  [no errors, p99 < {goal_p99_ms:g} ms: {'met' if met else 'NOT met'}]"
    errors = ", ".join(f"{kind} × {n}" for kind, n in run.errors.most_common()) or "0"
    return (
        f"{run.name}\n"
        f"  {run.clients} clients, {run.wall_s:.1f} s: {run.ok:,} answered, "
        f"{run.per_second:,.0f}/s; p50 {run.percentile_ms(50):.1f} ms, p99 {p99:.1f} ms, "
        f"max {run.percentile_ms(100):.1f} ms; errors {errors}{verdict}\n"
        f"  CPU per answered request: uvicorn {1e3 * run.server_cpu_s / max(run.ok, 1):.2f} ms, "
        f"load generator {1e3 * run.client_cpu_s / max(run.ok, 1):.2f} ms "
        f"(uvicorn busy {run.server_cpu_s / run.wall_s:.0%} of a core)"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.load",
        description=(__doc__ or "").split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--quick", action="store_true", help=f"{QUICK_SECONDS:g} s scenarios (unless --seconds)"
    )
    parser.add_argument(
        "--seconds",
        type=float,
        help=f"duration of each scenario (default {DEFAULT_SECONDS:g}, {QUICK_SECONDS:g} quick)",
    )
    parser.add_argument(
        "--max-jobs",
        type=int,
        default=DEFAULT_MAX_JOBS,
        help=f"stop posting after this many jobs (default {DEFAULT_MAX_JOBS:,}), which bounds "
        "the wait for the workers to drain them",
    )
    parser.add_argument(
        "--database-url",
        help="an empty database to run on (the run leaves its rows; create and drop it around "
        "the run); default a temp SQLite file",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    seconds = args.seconds or (QUICK_SECONDS if args.quick else DEFAULT_SECONDS)
    if seconds <= 0 or args.max_jobs <= 0:
        raise SystemExit("--seconds and --max-jobs must be positive")
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    runs: list[tuple[Run, float | None]] = []
    with tempfile.TemporaryDirectory(prefix="batchwise-load-") as scratch:
        data_dir = Path(scratch)
        database_url = args.database_url or f"sqlite:///{(data_dir / 'batchwise.db').as_posix()}"
        upgrade(database_url)
        engine = create_engine_for(database_url)
        database = engine.dialect.name
        try:
            with (
                serve_with_workers(database_url, data_dir, EMBEDDED_WORKERS) as server,
                httpx.Client(base_url=server.base_url, timeout=120) as client,
            ):
                _progress("preparing: datasets, and a 20-epoch job trained by the workers")
                job_id, small_set_id, steps = prepare(client)
                for path, name in (
                    (f"/v1/jobs/{job_id}", "GET /v1/jobs/{id}"),
                    (
                        f"/v1/jobs/{job_id}/history",
                        f"GET /v1/jobs/{{id}}/history ({steps:,} steps)",
                    ),
                ):
                    _progress(f"{name}: {READ_CLIENTS} clients for {seconds:g} s")
                    run = asyncio.run(read_scenario(server, path, name=name, seconds=seconds))
                    runs.append((run, GOAL_READ_P99_MS))
                _progress(f"POST /v1/jobs: {POST_CLIENTS} clients for {seconds:g} s")
                post_run, accepted = asyncio.run(
                    post_scenario(server, small_set_id, seconds=seconds, max_jobs=args.max_jobs)
                )
                runs.append((post_run, None))
                _progress(f"waiting for {len(accepted):,} jobs (at most {DRAIN_TIMEOUT_S:g} s)")
                at_stop = status_counts(engine, small_set_id)
                counts, drain_s = wait_drained(engine, small_set_id, DRAIN_TIMEOUT_S)
        finally:
            engine.dispose()
    took = time.perf_counter() - start
    load_after = os.getloadavg()[0]

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(
        f"batchwise load benchmark on {database}{' (quick)' if args.quick else ''}: one uvicorn "
        f"process on 127.0.0.1 with {EMBEDDED_WORKERS} embedded workers, {seconds:g} s per "
        f"scenario"
    )
    for run, goal in runs:
        print(format_run(run, goal))
    in_database = sum(counts.values())
    pending = sum(counts[status] for status in PENDING)
    complete = counts["succeeded"] == len(accepted) == in_database
    print(
        f"  accepted {len(accepted):,} (cap {args.max_jobs:,}); {at_stop['succeeded']:,} had "
        f"succeeded when the load stopped; {drain_s:.1f} s later, of {in_database:,} in the "
        f"database: succeeded {counts['succeeded']:,}, failed {counts['failed']:,}, cancelled "
        f"{counts['cancelled']:,}, still queued/running {pending:,} "
        f"[every job completes: {'met' if complete else 'NOT met'}]"
    )
    print(
        f"\nnote: client (one asyncio loop, httpx), server (one uvicorn process) and the "
        f"{EMBEDDED_WORKERS} workers share this machine's {cores} cores; latency is the "
        f"client's, request sent to last byte, including its own event loop's queueing."
    )
    print(
        f"load average (1 min): {load_before:.2f} before, {load_after:.2f} after; took {took:.0f} s"
    )
    machine.print_machine()
    return 0


if __name__ == "__main__":
    sys.exit(main())
