"""Chaos on PostgreSQL: a sweep and plain jobs run by real API and worker processes while a
bounded loop injects faults; the test (``tests/faults/test_chaos.py``) and the benchmark
(``benchmarks/chaos.py``) run it, then judge it with :mod:`tests.support.chaos_checks`.

The run: ``plan.api_processes`` ``batchwise serve`` processes (no embedded workers, a data dir
each) and ``plan.workers`` ``batchwise worker`` processes on one PostgreSQL database. Dataset A
is uploaded (inline JSON) and a sweep queued on it (batch sizes × given learning rates ×
seeds); then, while the workers run, half the plain jobs are submitted on A, dataset B is
uploaded as a CSV file whose first upload is cut off by kill -9 of the API process receiving
it (the client sends it again to the other process), and the other half are submitted on B.
Meanwhile:

- every ``kill_every_s`` (± a third, from a seeded RNG) a random worker is kill -9ed and
  replaced, at most ``max_kills`` times — one running a job it has stored an epoch of in this
  attempt: a job whose workers die before it makes any progress three attempts in a row is
  failed as poison, by design, and a schedule that kills faster than a loaded machine trains
  would fail it so (a worker that ends on its own is replaced too);
- the killed API process is started again (same port) ``api_down_s`` later;
- once that is back and ``pg_restart_at`` of the jobs have finished, PostgreSQL is stopped
  (``-m fast``: every session cut) and started again ``pg_outage_s`` later.

Two poller threads read jobs, histories and the sweep from both API processes throughout;
every answer and connection failure is recorded (:mod:`tests.support.chaos_clients`).
"""

from __future__ import annotations

import functools
import random
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import Engine, func, select
from sqlalchemy.exc import SQLAlchemyError

from service.db import session_factory
from service.db.tables import Job
from service.jobs.schemas import FINISHED_STATUSES
from tests.support.chaos_clients import ChaosClient, Recorder
from tests.support.chaos_processes import ApiProcess, WorkerExit, WorkerSlots, trained_an_epoch
from tests.support.factories import regression_data
from tests.support.private_postgres import PrivatePostgres
from tests.support.processes import wait_for

DATASET_A, DATASET_B, SWEEP_NAME = "chaos-a", "chaos-b", "chaos-sweep"
BOUNDARY = "chaos-boundary"


@dataclass(frozen=True)
class ChaosPlan:
    """How big the run is and which faults it injects."""

    batch_sizes: tuple[int, ...] = (4, 8, 16, 32, 64, 128)
    learning_rates: tuple[float, ...] = (0.01, 0.03)
    seeds: int = 5
    plain_jobs: int = 40
    #: Plain jobs repeat this many configs: copies must store the same history too.
    plain_configs: int = 5
    epochs: int = 12
    rows: int = 256  # rows of dataset A (B has twice as many)
    workers: int = 3
    api_processes: int = 2
    lease_s: float = 2.0
    kill_every_s: float = 3.0
    max_kills: int = 8
    api_down_s: float = 1.5
    pg_restart_at: float = 0.4  # the fraction of jobs finished
    pg_outage_s: float = 1.5
    submit_gap_s: float = 0.1
    timeout_s: float = 300.0
    seed: int = 0

    @property
    def sweep_jobs(self) -> int:
        return len(self.batch_sizes) * len(self.learning_rates) * self.seeds

    @property
    def jobs(self) -> int:
        return self.sweep_jobs + self.plain_jobs


@dataclass(frozen=True)
class Outage:
    """A fault window, in seconds into the run: the thing was down from ``down`` to ``up``."""

    down: float
    up: float


@dataclass
class ApiKill:
    """kill -9 of an API process mid-upload, and what its spool held."""

    api: int
    window: Outage
    exit_status: int
    spooling: list[str]  # upload parts with bytes when it was killed
    left_after_kill: list[str]  # the spool once it was dead
    left_after_restart: list[str]  # the spool once it was back


@dataclass
class ChaosRun:
    """Everything a run did and saw, for the checks and the benchmark's figures."""

    plan: ChaosPlan
    recorder: Recorder
    dataset_ids: dict[str, str] = field(default_factory=dict)
    sweep_id: str = ""
    sweep_job_ids: list[str] = field(default_factory=list)
    plain_job_ids: dict[str, str] = field(default_factory=dict)  # tag → id
    plain_job_configs: dict[str, dict[str, Any]] = field(default_factory=dict)  # tag → body
    kills: list[WorkerExit] = field(default_factory=list)
    worker_exits: list[WorkerExit] = field(default_factory=list)  # not caused by the harness
    pg_outages: list[Outage] = field(default_factory=list)
    api_kills: list[ApiKill] = field(default_factory=list)
    wall_s: float = 0.0
    worker_outputs: list[str] = field(default_factory=list)
    api_outputs: list[str] = field(default_factory=list)
    api_exit_statuses: list[int | None] = field(default_factory=list)
    worker_exit_statuses: list[int] = field(default_factory=list)
    spools: list[Path] = field(default_factory=list)
    worker_data_dir: Path = Path()
    final_sweep: dict[str, Any] = field(default_factory=dict)

    @property
    def job_ids(self) -> list[str]:
        return [*self.sweep_job_ids, *self.plain_job_ids.values()]


# --- what is submitted ----------------------------------------------------------------------


def dataset_a(plan: ChaosPlan) -> tuple[np.ndarray, np.ndarray]:
    return regression_data(plan.rows, n_features=3, seed=11)


def csv_b(plan: ChaosPlan) -> bytes:
    """Dataset B as CSV: y = 2·a − b + 0.5·c plus noise, integers and decimals mixed."""
    rng = np.random.default_rng(12)
    X = np.round(rng.standard_normal((2 * plan.rows, 3)), 4)
    y = np.round(2 * X[:, 0] - X[:, 1] + 0.5 * X[:, 2] + 0.1 * rng.standard_normal(len(X)), 4)
    lines = ["a,b,c,target"] + [f"{r[0]},{r[1]},{r[2]},{t}" for r, t in zip(X, y, strict=True)]
    return ("\n".join(lines) + "\n").encode()


def multipart(name: str, csv: bytes) -> bytes:
    head = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="name"\r\n\r\n{name}\r\n'
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="b.csv"\r\n'
        "Content-Type: text/csv\r\n\r\n"
    ).encode()
    return head + csv + f"\r\n--{BOUNDARY}--\r\n".encode()


def sweep_body(plan: ChaosPlan, dataset_id: str) -> dict[str, Any]:
    return {
        "dataset_id": dataset_id,
        "name": SWEEP_NAME,
        "base": {"model": "linear", "epochs": plan.epochs, "seed": 1},
        "batch_sizes": list(plan.batch_sizes),
        "learning_rates": list(plan.learning_rates),
        "seeds": plan.seeds,
    }


def plain_body(plan: ChaosPlan, index: int, dataset_id: str, on_b: bool) -> dict[str, Any]:
    """Plain job ``index``: a small MLP on A, linear with momentum on B; configs repeat."""
    seed = index % plan.plain_configs
    if on_b:
        config = {"model": "linear", "optimizer": "momentum", "batch_size": 8}
    else:
        config = {"model": "mlp", "hidden_layers": [8], "batch_size": 16}
    return {"dataset_id": dataset_id, "epochs": plan.epochs, "seed": seed} | config


# --- the run --------------------------------------------------------------------------------


class _Threads:
    """Background threads whose exceptions are re-raised by :meth:`join`."""

    def __init__(self) -> None:
        self.threads: list[threading.Thread] = []
        self.errors: list[BaseException] = []

    def start(self, target: Callable[[], None], name: str) -> None:
        def run() -> None:
            try:
                target()
            except BaseException as exc:
                self.errors.append(exc)

        thread = threading.Thread(target=run, name=name, daemon=True)
        thread.start()
        self.threads.append(thread)

    def join(self, timeout: float = 60.0) -> None:
        for thread in self.threads:
            thread.join(timeout)
            assert not thread.is_alive(), f"thread {thread.name} did not end"
        if self.errors:
            raise self.errors[0]


def finished_count(engine: Engine) -> int | None:
    """Jobs finished so far (None while the database is away)."""
    try:
        with session_factory(engine)() as session:
            query = select(func.count()).where(Job.status.in_(FINISHED_STATUSES))
            return int(session.scalar(query.select_from(Job)) or 0)
    except SQLAlchemyError:
        return None


class _Chaos:
    """One run's state and threads."""

    def __init__(
        self, plan: ChaosPlan, pg: PrivatePostgres, url: str, engine: Engine, root: Path
    ) -> None:
        self.plan, self.pg, self.engine = plan, pg, engine
        self.started = time.monotonic()
        self.run = ChaosRun(plan=plan, recorder=Recorder(self.started))
        logs = root / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        self.apis = [ApiProcess(i, url, root / f"api{i}", logs) for i in range(plan.api_processes)]
        self.run.spools = [api.spool for api in self.apis]
        self.run.worker_data_dir = root / "workers"
        self.run.worker_data_dir.mkdir(parents=True, exist_ok=True)
        # Debug: a line per stored epoch, which the kills go by.
        env = {"BATCHWISE_LEASE_SECONDS": f"{plan.lease_s:g}", "BATCHWISE_LOG_LEVEL": "debug"}
        self.workers = WorkerSlots(url, self.run.worker_data_dir, plan.workers, env, self.started)
        self.rng = random.Random(plan.seed)
        self.done = threading.Event()
        self.api_back = threading.Event()
        self.pg_down = threading.Event()
        self.threads = _Threads()

    def client(self) -> ChaosClient:
        return ChaosClient([api.base_url for api in self.apis], self.run.recorder)

    # --- setup and submissions ---

    def upload_a(self, client: ChaosClient) -> str:
        X, y = dataset_a(self.plan)
        reply = client.call(
            "POST",
            "/v1/datasets",
            route="/v1/datasets",
            json={"name": DATASET_A, "X": X.tolist(), "y": y.tolist()},
            lookup=lambda: client.find_named("datasets", DATASET_A),
        )
        assert reply.status in (0, 201), reply.body
        dataset_id: str = reply.body["id"]
        return dataset_id

    def queue_sweep(self, client: ChaosClient, dataset_id: str) -> None:
        reply = client.call(
            "POST",
            "/v1/sweeps",
            route="/v1/sweeps",
            json=sweep_body(self.plan, dataset_id),
            lookup=lambda: client.find_named("sweeps", SWEEP_NAME),
        )
        assert reply.status in (0, 202), reply.body
        self.run.sweep_id = reply.body["id"]
        params = {"tag": f"sweep:{self.run.sweep_id}", "limit": 100}
        page = client.get("/v1/jobs", params=params, route="/v1/jobs?tag")
        self.run.sweep_job_ids = [job["id"] for job in page["items"]]
        assert len(self.run.sweep_job_ids) == self.plan.sweep_jobs, page

    def submit_plain(
        self, client: ChaosClient, indices: range, dataset_id: str, on_b: bool
    ) -> None:
        for index in indices:
            tag = f"chaos-job-{index}"
            body = plain_body(self.plan, index, dataset_id, on_b)
            self.run.plain_job_configs[tag] = body
            self.run.plain_job_ids[tag] = client.submit_job(body, tag)
            time.sleep(self.plan.submit_gap_s)

    def kill_api_mid_upload(self, client: ChaosClient, body: bytes) -> None:
        """Send half of dataset B's upload to API 0, kill -9 it once its spool file has
        bytes, then upload B again through the client (API 1 answers)."""
        api = self.apis[0]
        head = (
            f"POST /v1/datasets HTTP/1.1\r\nHost: 127.0.0.1:{api.port}\r\n"
            f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        with socket.create_connection(("127.0.0.1", api.port), timeout=10) as upload:
            upload.sendall(head + body[: len(body) // 2])
            spooling = wait_for(
                lambda: [p.name for p in api.spool.glob("upload-*.part") if p.stat().st_size],
                timeout=20,
                what="the upload to reach API 0's spool",
            )
            down = self.run.recorder.now()
            status = api.kill()
        left = sorted(p.name for p in api.spool.iterdir())
        reply = client.call(
            "POST",
            "/v1/datasets",
            route="/v1/datasets",
            prefer=1,
            content=body,
            headers={"content-type": f"multipart/form-data; boundary={BOUNDARY}"},
            lookup=lambda: client.find_named("datasets", DATASET_B),
        )
        assert reply.status in (0, 201), reply.body
        self.run.dataset_ids["b"] = reply.body["id"]
        kill = ApiKill(0, Outage(down, down), status, spooling, left, [])
        self.run.api_kills.append(kill)

        def restart() -> None:
            time.sleep(max(0.0, self.plan.api_down_s - (self.run.recorder.now() - down)))
            api.start()
            kill.window = Outage(down, self.run.recorder.now())
            kill.left_after_restart = sorted(p.name for p in api.spool.iterdir())
            self.api_back.set()

        self.threads.start(restart, "api-restart")

    def submitter(self) -> None:
        client = self.client()
        try:
            half = self.plan.plain_jobs // 2
            self.submit_plain(client, range(half), self.run.dataset_ids["a"], on_b=False)
            self.kill_api_mid_upload(client, multipart(DATASET_B, csv_b(self.plan)))
            b_jobs = range(half, self.plan.plain_jobs)
            self.submit_plain(client, b_jobs, self.run.dataset_ids["b"], on_b=True)
        finally:
            client.close()

    # --- faults and readers ---

    def chaos(self) -> None:
        next_kill = self._next_kill()
        while not self.done.wait(0.2):
            if not self.run.pg_outages and self.api_back.is_set():
                finished = finished_count(self.engine)
                if finished is not None and finished >= self.plan.pg_restart_at * self.plan.jobs:
                    self.restart_postgres()
                    next_kill = self._next_kill()
                    continue
            if len(self.run.kills) >= self.plan.max_kills or time.monotonic() < next_kill:
                continue
            slots = enumerate(self.workers.slots)
            busy = [slot for slot, w in slots if trained_an_epoch(w.output())]
            if busy:  # else a moment later
                self.run.kills.append(self.workers.kill(self.rng.choice(busy)))
                next_kill = self._next_kill()

    def _next_kill(self) -> float:
        return time.monotonic() + self.plan.kill_every_s * self.rng.uniform(2 / 3, 4 / 3)

    def restart_postgres(self) -> None:
        self.pg_down.set()
        down = self.run.recorder.now()
        self.pg.stop("fast")
        time.sleep(self.plan.pg_outage_s)
        self.pg.start()
        self.run.pg_outages.append(Outage(down, self.run.recorder.now()))
        self.pg_down.clear()

    def supervisor(self) -> None:
        while not self.done.wait(0.2):
            self.workers.refill()

    def poller(self, seed: int) -> None:
        rng, client = random.Random(seed), self.client()
        try:
            while not self.done.wait(0.25):
                job_ids = self.run.job_ids
                if not job_ids:
                    continue
                job_id = rng.choice(job_ids)
                roll = rng.random()
                if roll < 0.5:
                    client.get(f"/v1/jobs/{job_id}", route="/v1/jobs/{id}")
                elif roll < 0.8:
                    client.get(
                        f"/v1/jobs/{job_id}/history",
                        params={"max_points": 200},
                        route="/v1/jobs/{id}/history",
                    )
                elif roll < 0.9:
                    client.get(f"/v1/sweeps/{self.run.sweep_id}", route="/v1/sweeps/{id}")
                else:
                    client.get("/v1/jobs", params={"limit": 50}, route="/v1/jobs")
        finally:
            client.close()

    # --- the whole ---

    def execute(self) -> ChaosRun:
        for api in self.apis:
            api.start()
        client = self.client()
        try:
            self.run.dataset_ids["a"] = self.upload_a(client)
            self.queue_sweep(client, self.run.dataset_ids["a"])
            self.workers.start()
            self.threads.start(self.supervisor, "supervisor")
            self.threads.start(self.chaos, "chaos")
            self.threads.start(self.submitter, "submitter")
            for seed in (1, 2):
                self.threads.start(functools.partial(self.poller, seed), f"poller-{seed}")
            wait_for(self._all_finished, timeout=self.plan.timeout_s, interval=0.2, what="jobs")
            self.run.wall_s = time.monotonic() - self.started
            self.done.set()
            self.threads.join()
            sweep_path = f"/v1/sweeps/{self.run.sweep_id}"
            self.run.final_sweep = client.get(sweep_path, route="/v1/sweeps/{id}")
        finally:
            self.done.set()
            client.close()
            self.run.worker_exit_statuses = self.workers.close()
            self.run.worker_exits = [e for e in self.workers.exits if not e.killed]
            self.run.worker_outputs = self.workers.outputs()
            self.run.api_exit_statuses = [api.stop() for api in self.apis]
            self.run.api_outputs = [api.output() for api in self.apis]
        return self.run

    def _all_finished(self) -> bool:
        if self.threads.errors:
            raise self.threads.errors[0]
        if len(self.run.plain_job_ids) < self.plan.plain_jobs or self.pg_down.is_set():
            return False
        if not self.api_back.is_set():
            return False
        return finished_count(self.engine) == self.plan.jobs


def run_chaos(
    plan: ChaosPlan, pg: PrivatePostgres, database_url: str, engine: Engine, root: Path
) -> ChaosRun:
    """Run ``plan`` on the migrated database at ``database_url`` (on ``pg``, which the run
    restarts); processes' data dirs and logs under ``root``."""
    return _Chaos(plan, pg, database_url, engine, root).execute()


__all__ = ["ApiKill", "ChaosPlan", "ChaosRun", "Outage", "csv_b", "dataset_a", "run_chaos"]
