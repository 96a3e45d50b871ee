"""Load on the HTTP API: many concurrent clients on loopback against one real ``serve``.

    python -m benchmarks.load                        # temp SQLite file, 30 s scenarios, ~3 min
    python -m benchmarks.load --quick                # 5 s scenarios
    python -m benchmarks.load --api-processes 2      # BATCHWISE_API_PROCESSES=2
    python -m benchmarks.load --generator both       # the reads with wrk, then with asyncio
    python -m benchmarks.load --database-url postgresql+psycopg://postgres@127.0.0.1:5432/load

One ``python -m service serve`` (uvicorn on 127.0.0.1 in ``--api-processes`` processes, default
1; ``BATCHWISE_WORKERS=2`` embedded workers; auth on) on one database (default a fresh SQLite
file in a temp dir; ``--database-url`` an empty database that you create before and drop
after: the run leaves its rows). First an API key of the tenant ``load`` is made with the real
``python -m service keys create --tenant load`` on that database; every request carries it
(``Authorization: Bearer``), so each pays for the key's check (one primary-key lookup). Then a
job of 20 epochs (linear, 8,000 × 8 rows, 20 % validation, B = 32: 4,000 step losses) is
trained for real by those workers, so its history is the one a worker writes.

Scenarios, each a closed loop: every client sends its next request as soon as the last one
answered, until the duration (or a request cap) is reached.

1. ``GET /v1/jobs/{id}`` of the finished job, 50 clients;
2. ``GET /v1/jobs/{id}/history`` of that job in full (JSON, 4,000 steps), 50 clients;
3. ``POST /v1/jobs`` of small jobs (1 epoch, 64 rows, B = 32), 20 clients, while the two
   workers drain the queue, until the duration or ``--max-jobs`` accepted jobs (default 3,000:
   the workers finish ~100 jobs/s on SQLite, a third of the rate the API accepts them, and the
   cap keeps the drain, hence the run, near two minutes); then a bounded wait until every
   accepted job has finished, and the count of those that succeeded and failed (read from the
   database). The tenant's queued-job limit is raised to the cap for the run
   (``BATCHWISE_TENANT_MAX_QUEUED_JOBS``): this measures how fast jobs are accepted, not the
   limit's 429s.

Load generators (``--generator``):

- ``wrk`` (C, epoll; Debian/Ubuntu ``apt-get install wrk``, macOS ``brew install wrk``): one
  thread per keep-alive connection, tens of µs of CPU per request, so the server keeps the
  cores. ``auto`` (the default) drives the reads with it when ``wrk`` is on the PATH, else
  falls back to the asyncio generator.
- ``asyncio``: ``clients`` ``httpx.AsyncClient`` s with one keep-alive connection each on one
  event loop; ~0.7 ms of CPU per request, taken from the cores the server runs on, so its
  figures are a floor. It always drives the POSTs: it caps the accepted jobs and reads each
  one's id. ``both`` runs each read scenario with ``wrk`` and then with ``asyncio``.

The clients connect one after another, 10 ms apart, as clients arriving over time do. API
processes share one listening socket and each accepts every connection waiting when it looks:
50 connections opened in one burst can all land on one process (seen: 50/0), and keep-alive
connections stay where they landed.

Latency is the client's: request sent to last body byte received (for ``asyncio``, including
the time the request waited for the client's own event loop). Client, server and workers share
the machine's cores. Each scenario prints the 1-minute load average when it started, CPU per
request of the API processes and of the client, and how the clients' connections were spread
over the API processes.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
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
#: The tenant of the key the load generators authenticate with.
TENANT = "load"
READ_CLIENTS = 50
POST_CLIENTS = 20
DEFAULT_SECONDS = 30.0
QUICK_SECONDS = 5.0
# A cap on requests per read scenario, far above what loopback reaches in the duration, so a
# run that goes unexpectedly fast still stops (asyncio generator; wrk stops at its duration).
MAX_REQUESTS = 200_000
# The POST scenario stops at its duration or at this many accepted jobs: 20 clients queue jobs
# ~3× faster than 2 workers finish them on SQLite, so 30 s of posting is ~90 s of draining.
DEFAULT_MAX_JOBS = 3_000
REQUEST_TIMEOUT_S = 10.0
DRAIN_TIMEOUT_S = 120.0
WARMUP_REQUESTS_PER_CLIENT = 2
WRK_WARMUP_S = 2
# The clients connect one after another, this far apart: opened all at once, they could all land
# on one API process (see the module docstring).
CONNECT_GAP_S = 0.01
# When the connections are counted, after the scenario's start.
CONNECTIONS_SAMPLED_AFTER_S = 2.0
# An API process that used no CPU for this long after /healthz answered has finished starting.
IDLE_FOR_S = 0.5
GOAL_READ_P99_MS = 100.0
GENERATORS = ("auto", "wrk", "asyncio", "both")

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


# --- processes, from /proc --------------------------------------------------------------------


def _stat_fields(pid: int) -> list[str] | None:
    """The fields of ``/proc/<pid>/stat`` after the command name (``state`` first), or None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` so far; NaN when it (or ``/proc``) is gone."""
    fields = _stat_fields(pid)
    if fields is None:
        return float("nan")
    # utime and stime: fields 14 and 15 of proc(5), the 12th and 13th after the name.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def child_processes(pid: int) -> dict[int, str]:
    """The command lines of ``pid``'s children, by pid."""
    children: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        if fields is None or int(fields[1]) != pid:
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        children[int(entry.name)] = cmdline.replace(b"\0", b" ").decode()
    return children


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    try:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    except OSError:
        pass
    return inodes


def connections_by_process(pids: Sequence[int], port: int) -> list[int]:
    """How many established TCP connections to ``port`` each of ``pids`` holds (from
    ``/proc/net/tcp``: state ``01``, local port in hex)."""
    established = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            columns = line.split()
            if columns[3] == "01" and int(columns[1].rsplit(":", 1)[1], 16) == port:
                established.add(columns[9])
    return [len(_socket_inodes(pid) & established) for pid in pids]


# --- the server ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Server:
    """A running ``serve``: ``pid`` its own process, ``api_pids`` the processes running
    uvicorn — ``serve`` itself with one API process, else the ones uvicorn started."""

    base_url: str
    port: int
    pid: int
    api_pids: tuple[int, ...]

    def cpu_seconds(self) -> float:
        """CPU seconds the API processes have used so far (not the workers')."""
        return sum(cpu_seconds(pid) for pid in self.api_pids)

    def connections(self) -> list[int]:
        """Established client connections held by each API process."""
        return connections_by_process(self.api_pids, self.port)


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


def _api_pids(serve_pid: int, api_processes: int, deadline: float) -> tuple[int, ...]:
    """The processes that run uvicorn, once each has finished starting (used no CPU for
    :data:`IDLE_FOR_S`): until then the others would take every connection."""
    if api_processes == 1:
        return (serve_pid,)
    while True:
        # uvicorn starts its processes with multiprocessing's spawn.
        pids = tuple(
            sorted(
                pid
                for pid, cmdline in child_processes(serve_pid).items()
                if "multiprocessing.spawn" in cmdline
            )
        )
        if len(pids) == api_processes:
            before = [cpu_seconds(pid) for pid in pids]
            time.sleep(IDLE_FOR_S)
            if [cpu_seconds(pid) for pid in pids] == before:
                return pids
        elif time.monotonic() > deadline:
            raise _processes.ProcessFailedError(
                f"serve started {len(pids)} API processes, not {api_processes}"
            )
        else:
            time.sleep(0.05)


@contextmanager
def serve_with_workers(
    database_url: str,
    data_dir: Path,
    workers: int,
    *,
    api_processes: int = 1,
    extra_env: dict[str, str] | None = None,
) -> Iterator[Server]:
    """A real ``python -m service serve`` on 127.0.0.1 with auth on, ``api_processes`` API
    processes and ``workers`` embedded workers; yields it once ``GET /healthz`` answers 200
    and every API process has started. Output goes to a log file in ``data_dir``, printed if
    it fails to start. Stopped with SIGTERM (it stops its workers), then SIGKILL."""
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
        }
        | (extra_env or {}),
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
            if _processes.answers_healthz(base_url):
                break
            time.sleep(0.05)
        api_pids = _api_pids(process.pid, api_processes, deadline)
        yield Server(base_url, port, process.pid, api_pids)
    finally:
        _processes.stop(process, timeout_s=20)


# --- what a scenario measured ----------------------------------------------------------------


@dataclass
class Run:
    """What one scenario measured: ``ok`` answers with the expected status and their latency
    percentiles (ms); ``errors`` by kind (``HTTP 500``, ``ReadTimeout``, ``socket read``, …);
    ``wall_s`` from the first request to the last answer; CPU seconds the API processes and
    the load generator spent meanwhile; the 1-minute load average when it started; the
    clients' connections per API process, counted once they were all open."""

    name: str
    generator: str
    clients: int
    ok: int = 0
    p50_ms: float = float("nan")
    p99_ms: float = float("nan")
    max_ms: float = float("nan")
    errors: Counter[str] = field(default_factory=Counter)
    wall_s: float = 0.0
    server_cpu_s: float = float("nan")
    client_cpu_s: float = float("nan")
    load_average: float = float("nan")
    connections: list[int] = field(default_factory=list)

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    @property
    def per_second(self) -> float:
        return self.ok / self.wall_s if self.wall_s > 0 else 0.0

    def set_latencies(self, latencies_s: Sequence[float]) -> None:
        """``ok`` and the percentiles from every answer's latency (linear interpolation)."""
        self.ok = len(latencies_s)
        if latencies_s:
            ms = 1e3 * np.asarray(latencies_s)
            self.p50_ms, self.p99_ms, self.max_ms = (
                float(np.percentile(ms, q)) for q in (50, 99, 100)
            )


@contextmanager
def sampled_connections(server: Server, run: Run, after_s: float) -> Iterator[None]:
    """Count ``run.connections`` ``after_s`` into the block, from a thread (the block may be
    a subprocess or an event loop that does not return until the end)."""
    done = threading.Event()

    def sample() -> None:
        if not done.wait(after_s):
            run.connections = server.connections()

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield
    finally:
        done.set()
        sampler.join()


# --- the asyncio load generator --------------------------------------------------------------


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
    headers: dict[str, str],
    warm_up: int = 0,
    on_ok: Callable[[httpx.Response], None] | None = None,
) -> Run:
    """``clients`` simulated clients, each an ``httpx.AsyncClient`` with one keep-alive
    connection sending ``headers``, ``send`` one request after another until ``seconds`` have
    passed or ``max_requests`` were sent in all (a request in flight at the deadline still
    completes, within the client's timeout). First each sends ``warm_up`` untimed requests
    (the connections open, the server's code paths warm). An answer with ``expected_status``
    is timed; another status or a transport error is counted as an error."""
    run = Run(name, "asyncio", clients, load_average=os.getloadavg()[0])
    latencies: list[float] = []
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
            latencies.append(elapsed)
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
                    base_url=server.base_url,
                    headers=headers,
                    limits=limits,
                    timeout=REQUEST_TIMEOUT_S,
                )
            )
            for _ in range(clients)
        ]
        for client in pool:  # connect, one after another
            await client.get("/healthz")
            await asyncio.sleep(CONNECT_GAP_S)
        for _ in range(warm_up):
            await asyncio.gather(*(send(client) for client in pool))
        server_cpu_start, client_cpu_start = server.cpu_seconds(), time.process_time()
        start = time.perf_counter()
        deadline = start + seconds
        with sampled_connections(server, run, CONNECTIONS_SAMPLED_AFTER_S):
            await asyncio.gather(*(one_client(client) for client in pool))
        run.wall_s = time.perf_counter() - start
        run.server_cpu_s = server.cpu_seconds() - server_cpu_start
        run.client_cpu_s = time.process_time() - client_cpu_start
    run.set_latencies(latencies)
    return run


# --- the wrk load generator ------------------------------------------------------------------


# wrk runs one thread per connection, and setup() (called for each thread, before it starts and
# connects) waits CONNECT_GAP_S: the clients connect one after another, as clients arriving over
# time would. Lua has no sleep: LuaJIT's FFI calls usleep(3) (a wrk built on plain Lua spins on
# its CPU clock instead). done() prints what was measured on one line (latencies in µs), which
# the benchmark reads rather than wrk's human summary.
WRK_SCRIPT = """\
local has_ffi, ffi = pcall(require, "ffi")
if has_ffi then ffi.cdef("int usleep(unsigned int usec);") end

setup = function(thread)
  if has_ffi then
    ffi.C.usleep(CONNECT_GAP_S * 1e6)
  else
    local start = os.clock()
    while os.clock() - start < CONNECT_GAP_S do end
  end
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("BATCHWISE-WRK %d %d %d %d %d %d %d %.0f %.0f %.0f\\n",
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99), latency.max))
end
"""


def wrk_path() -> str | None:
    """The ``wrk`` executable on the PATH, or None."""
    return shutil.which("wrk")


def run_wrk(
    server: Server,
    path: str,
    *,
    name: str,
    clients: int,
    seconds: float,
    headers: dict[str, str],
    script: Path,
) -> Run:
    """``clients`` connections of one ``wrk`` thread GET ``path`` for ``seconds``, after
    :data:`WRK_WARMUP_S` s of untimed warm-up. A non-2xx/3xx answer or a socket error is an
    error."""
    wrk = wrk_path()
    if wrk is None:
        raise RuntimeError("wrk is not on the PATH (apt-get install wrk)")
    args = [wrk, "--threads", str(clients), "--connections", str(clients), "--latency"]
    args += ["--timeout", f"{REQUEST_TIMEOUT_S:g}s", "--script", str(script)]
    for key, value in headers.items():
        args += ["--header", f"{key}: {value}"]
    url = server.base_url + path
    subprocess.run([*args, "--duration", f"{WRK_WARMUP_S}s", url], check=True, capture_output=True)
    run = Run(name, "wrk", clients, load_average=os.getloadavg()[0])
    server_cpu_start = server.cpu_seconds()
    children_start = resource.getrusage(resource.RUSAGE_CHILDREN)
    with sampled_connections(server, run, CONNECTIONS_SAMPLED_AFTER_S):
        completed = subprocess.run(
            [*args, "--duration", f"{seconds:g}s", url],
            check=True,
            capture_output=True,
            text=True,
        )
    children_end = resource.getrusage(resource.RUSAGE_CHILDREN)
    run.server_cpu_s = server.cpu_seconds() - server_cpu_start
    run.client_cpu_s = (children_end.ru_utime + children_end.ru_stime) - (
        children_start.ru_utime + children_start.ru_stime
    )
    report = next(
        (line for line in completed.stdout.splitlines() if line.startswith("BATCHWISE-WRK ")),
        None,
    )
    if report is None:
        raise RuntimeError(f"wrk printed no report:\n{completed.stdout}\n{completed.stderr}")
    requests, duration_us, connect, read, write, status, timeout, p50, p99, top = (
        float(value) for value in report.split()[1:]
    )
    for kind, count in (
        ("socket connect", connect),
        ("socket read", read),
        ("socket write", write),
        ("non-2xx/3xx", status),
        ("timeout", timeout),
    ):
        if count:
            run.errors[kind] = int(count)
    run.ok = int(requests - status)
    run.wall_s = duration_us / 1e6
    run.p50_ms, run.p99_ms, run.max_ms = p50 / 1e3, p99 / 1e3, top / 1e3
    return run


# --- the scenarios ---------------------------------------------------------------------------


async def read_scenario(
    server: Server, path: str, *, name: str, seconds: float, headers: dict[str, str]
) -> Run:
    """50 asyncio clients GET ``path``, each answer 200."""

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
        headers=headers,
        warm_up=WARMUP_REQUESTS_PER_CLIENT,
    )


async def post_scenario(
    server: Server,
    dataset_id: str,
    *,
    seconds: float,
    max_jobs: int,
    headers: dict[str, str],
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
        headers=headers,
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
    verdict = ""
    if goal_p99_ms is not None:
        met = run.error_count == 0 and run.p99_ms < goal_p99_ms
        verdict = f"  [no errors, p99 < {goal_p99_ms:g} ms: {'met' if met else 'NOT met'}]"
    errors = ", ".join(f"{kind} × {n}" for kind, n in run.errors.most_common()) or "0"
    spread = "/".join(str(n) for n in run.connections) or "?"
    return (
        f"{run.name} [{run.generator}; load average {run.load_average:.2f} at start]\n"
        f"  {run.clients} clients, {run.wall_s:.1f} s: {run.ok:,} answered, "
        f"{run.per_second:,.0f}/s; p50 {run.p50_ms:.1f} ms, p99 {run.p99_ms:.1f} ms, "
        f"max {run.max_ms:.1f} ms; errors {errors}{verdict}\n"
        f"  CPU per answered request: API {1e3 * run.server_cpu_s / max(run.ok, 1):.2f} ms, "
        f"load generator {1e3 * run.client_cpu_s / max(run.ok, 1):.2f} ms (API processes "
        f"busy {run.server_cpu_s / run.wall_s:.0%} of a core; connections per API process "
        f"{spread})"
    )


def read_generators(choice: str) -> list[str]:
    """The generators that drive the read scenarios for ``--generator choice``."""
    if choice == "both":
        return ["wrk", "asyncio"]
    if choice == "auto":
        return ["wrk" if wrk_path() else "asyncio"]
    return [choice]


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
        "--api-processes",
        type=int,
        default=1,
        help="BATCHWISE_API_PROCESSES of the server (default 1)",
    )
    parser.add_argument(
        "--generator",
        choices=GENERATORS,
        default="auto",
        help="what drives the read scenarios: wrk, asyncio, both, or auto (wrk when it is "
        "on the PATH, else asyncio; the default)",
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
    if seconds <= 0 or args.max_jobs <= 0 or args.api_processes <= 0:
        raise SystemExit("--seconds, --max-jobs and --api-processes must be positive")
    generators = read_generators(args.generator)
    if "wrk" in generators and wrk_path() is None:
        raise SystemExit("wrk is not on the PATH: apt-get install wrk (or --generator asyncio)")
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    runs: list[tuple[Run, float | None]] = []
    with tempfile.TemporaryDirectory(prefix="batchwise-load-") as scratch:
        data_dir = Path(scratch)
        database_url = args.database_url or f"sqlite:///{(data_dir / 'batchwise.db').as_posix()}"
        upgrade(database_url)
        engine = create_engine_for(database_url)
        database = engine.dialect.name
        key = create_key(database_url, data_dir)
        headers = {"Authorization": f"Bearer {key}"}
        script = data_dir / "report.lua"
        script.write_text(WRK_SCRIPT.replace("CONNECT_GAP_S", f"{CONNECT_GAP_S:g}"))
        # The benchmark's own jobs must not meet the tenant's queued-job limit.
        limits = {"BATCHWISE_TENANT_MAX_QUEUED_JOBS": str(args.max_jobs)}
        try:
            with (
                serve_with_workers(
                    database_url,
                    data_dir,
                    EMBEDDED_WORKERS,
                    api_processes=args.api_processes,
                    extra_env=limits,
                ) as server,
                httpx.Client(base_url=server.base_url, headers=headers, timeout=120) as client,
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
                    for generator in generators:
                        _progress(f"{name}: {READ_CLIENTS} clients, {generator}, {seconds:g} s")
                        if generator == "wrk":
                            run = run_wrk(
                                server,
                                path,
                                name=name,
                                clients=READ_CLIENTS,
                                seconds=seconds,
                                headers=headers,
                                script=script,
                            )
                        else:
                            run = asyncio.run(
                                read_scenario(
                                    server, path, name=name, seconds=seconds, headers=headers
                                )
                            )
                        runs.append((run, GOAL_READ_P99_MS))
                _progress(f"POST /v1/jobs: {POST_CLIENTS} clients for {seconds:g} s")
                post_run, accepted = asyncio.run(
                    post_scenario(
                        server,
                        small_set_id,
                        seconds=seconds,
                        max_jobs=args.max_jobs,
                        headers=headers,
                    )
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
        f"batchwise load benchmark on {database}{' (quick)' if args.quick else ''}: serve on "
        f"127.0.0.1 with {args.api_processes} API process{'es' if args.api_processes > 1 else ''} "
        f"and {EMBEDDED_WORKERS} embedded workers, auth on (a key of tenant '{TENANT}'), "
        f"{seconds:g} s per scenario"
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
        f"\nnote: load generator, API processes and the {EMBEDDED_WORKERS} workers share this "
        f"machine's {cores} cores; latency is the client's, request sent to last byte."
    )
    print(
        f"load average (1 min): {load_before:.2f} before, {load_after:.2f} after; took {took:.0f} s"
    )
    machine.print_machine()
    return 0


if __name__ == "__main__":
    sys.exit(main())
