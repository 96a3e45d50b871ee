"""How fast the service runs jobs, how much it costs the core, how fast histories read back.

    python -m benchmarks.jobs                 # temp SQLite file, ~1-2 minutes
    python -m benchmarks.jobs --quick         # under a minute
    python -m benchmarks.jobs --database-url postgresql+psycopg://postgres@127.0.0.1:5432/bench
    python -m benchmarks.jobs --json figures.json

Everything runs against real processes: one ``python -m service serve`` (uvicorn,
``BATCHWISE_WORKERS=0``) and ``python -m service worker`` processes started and stopped by the
benchmark, on one database (default a fresh SQLite file in a temp dir; ``--database-url`` an
empty PostgreSQL database that you create before and drop after: the run leaves its rows).

1. Throughput: ``--jobs`` jobs of 1 epoch (linear, B = 32) on a 64-row dataset, posted one
   after another over HTTP to the API while 1, then 2, already started and idle workers wait.
   From the database's own times: *end to end* = jobs / (last ``finished_at`` − first
   ``created_at``) — the POSTs, the queue, idle-poll wake-up (a worker backs off to
   ``BATCHWISE_POLL_SECONDS``, default 1 s), claim, dataset open (cached), training, the
   epoch/checkpoint/model writes, finish; *drain* = jobs / (last ``finished_at`` − first
   ``started_at``), the same less the wait for the first claim. Worker start-up is excluded.
2. Service overhead: a job's samples/s (its history's ``samples_per_s``, epochs after the
   first) over the in-process core (``service.core.Training``) on the same config (read back
   from the submitted job), same data, same dtype (float32), same batch size, same BLAS thread
   cap (``--threads``: ``BATCHWISE_WORKER_THREADS`` for the worker, threadpoolctl here). The
   core runs twice per round: on the worker's own arrays (the dataset cache's memory-mapped
   canonical float64 file, opened the way the worker opens it) — the goal's denominator, as it
   isolates what the service adds — and on contiguous float32 arrays as ``benchmarks.core``
   does. Rounds interleave core, core, job; each figure is the fastest epoch after the first over
   all rounds (as ``benchmarks.core`` takes best runs: other processes' load only slows), the
   median epoch shown beside it. A record's ``wall_time_s`` covers the
   epoch's shuffle, gather and steps, not the worker's write after it, so the end-to-end figure
   (job ``finished_at − started_at`` against the in-process construction + all epochs) is
   reported beside it.
3. History reads: a job with ``--steps`` step losses (100 epochs) written straight into the
   service's tables (as ``tests/support/factories.py`` does), read over HTTP from ``serve``: JSON
   and CSV, at ``max_points=2000`` and in full; median of several reads with a warm-up read
   first; the time is the client's, request sent to last byte received (no client parsing).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from sqlalchemy import Engine, func, select
from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

from benchmarks import _processes, machine
from service.core import TrainConfig, Training
from service.datasets.arrays import open_canonical
from service.db import Job, JobEpoch, create_engine_for, session_factory, utcnow
from service.db.migrate import upgrade
from service.worker.cache import DatasetCache

N_FEATURES = 64
LEARNING_RATE = 0.005  # as benchmarks.core: stable for per-sample SGD on N(0, 1) features
FINISHED = ("succeeded", "failed", "cancelled")
HISTORY_EPOCHS = 100
HISTORY_MAX_POINTS = 2000
GOAL_SERVICE_RATIO = 0.9
GOAL_HISTORY_MS = 100.0


@dataclass(frozen=True)
class Figure:
    """One line of the table: ``value`` in ``unit``; ``goal`` met when ``value`` is on the
    right side of it (``at_least``: ≥, else <)."""

    section: str
    label: str
    value: float
    unit: str
    goal: float | None = None
    at_least: bool = True

    @property
    def met(self) -> bool | None:
        if self.goal is None:
            return None
        return self.value >= self.goal if self.at_least else self.value < self.goal


@dataclass
class Report:
    settings: dict[str, Any]
    machine: list[str]
    figures: list[Figure] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)


def source_digest() -> str:
    """sha256 of every ``service/**/*.py``: a run whose workers started on other code than the
    in-process core (the tree edited meanwhile) compares nothing."""
    digest = hashlib.sha256()
    for path in sorted((_processes.REPO_ROOT / "service").rglob("*.py")):
        digest.update(path.as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def make_data(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """X : (n, 64) float32 N(0, 1); y = X·w + 0.1ε (float32), w ~ N(0, 1/64) — the regression
    data of ``benchmarks.core``."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, N_FEATURES), dtype=np.float32)
    w = rng.standard_normal(N_FEATURES).astype(np.float32) / np.sqrt(N_FEATURES, dtype=np.float32)
    y = (X @ w + 0.1 * rng.standard_normal(n, dtype=np.float32)).astype(np.float32)
    return X, y


# --- the API, as a client uses it ------------------------------------------------------------


def _checked(response: httpx.Response, status: int) -> Any:
    if response.status_code != status:
        raise RuntimeError(
            f"{response.request.method} {response.request.url} answered "
            f"{response.status_code}: {response.text[:500]}"
        )
    return response.json()


def upload_npy(client: httpx.Client, X: np.ndarray, y: np.ndarray, name: str) -> dict[str, Any]:
    """POST (X | y) as one NPY file (target in the last column); the dataset read back."""
    buffer = io.BytesIO()
    np.save(buffer, np.column_stack([X, y]))
    files = {"file": (f"{name}.npy", buffer.getvalue(), "application/octet-stream")}
    dataset: dict[str, Any] = _checked(
        client.post("/v1/datasets", files=files, data={"name": name}, timeout=600), 201
    )
    return dataset


def upload_json(client: httpx.Client, X: np.ndarray, y: np.ndarray, name: str) -> dict[str, Any]:
    dataset: dict[str, Any] = _checked(
        client.post("/v1/datasets", json={"name": name, "X": X.tolist(), "y": y.tolist()}), 201
    )
    return dataset


def submit(client: httpx.Client, body: dict[str, Any]) -> dict[str, Any]:
    job: dict[str, Any] = _checked(client.post("/v1/jobs", json=body), 202)
    return job


def wait_finished(client: httpx.Client, job_id: str, *, timeout: float = 600.0) -> dict[str, Any]:
    """Poll ``GET /v1/jobs/{id}`` every 0.2 s (cheap beside the training) until it finishes."""
    deadline = time.monotonic() + timeout
    while True:
        job: dict[str, Any] = _checked(client.get(f"/v1/jobs/{job_id}"), 200)
        if job["status"] in FINISHED:
            return job
        if time.monotonic() > deadline:
            raise RuntimeError(f"job {job_id} still {job['status']} after {timeout:g} s")
        time.sleep(0.2)


# --- 1. throughput ---------------------------------------------------------------------------


def _finished_count(engine: Engine, ids: Sequence[str]) -> int:
    with session_factory(engine)() as session:
        count = session.scalar(
            select(func.count()).select_from(Job).where(Job.id.in_(ids), Job.status.in_(FINISHED))
        )
        return int(count or 0)


def _wait_all_finished(engine: Engine, ids: Sequence[str], timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while _finished_count(engine, ids) < len(ids):
        if time.monotonic() > deadline:
            raise RuntimeError(f"jobs not finished after {timeout:g} s")
        time.sleep(0.05)


def throughput_run(
    client: httpx.Client,
    engine: Engine,
    *,
    database_url: str,
    data_dir: Path,
    dataset_id: str,
    n_jobs: int,
    n_workers: int,
    queued_first: bool,
) -> dict[str, Any]:
    """``n_jobs`` one-epoch jobs through ``n_workers`` workers; figures from the database's
    times. ``queued_first``: every job is queued before the workers start (they claim at once
    on start; the span runs from the first claim), else the workers are started and idle first
    and the jobs are posted to them (the span runs from the first POST)."""
    body = {"dataset_id": dataset_id, "epochs": 1, "batch_size": 32, "tags": ["bench-throughput"]}

    def post_all() -> tuple[list[str], float]:
        start = time.perf_counter()
        ids = [submit(client, body)["id"] for _ in range(n_jobs)]
        return ids, time.perf_counter() - start

    if queued_first:
        ids, submit_s = post_all()
        with _processes.workers(database_url, data_dir, n_workers, threads=1):
            _wait_all_finished(engine, ids)
    else:
        with _processes.workers(database_url, data_dir, n_workers, threads=1):
            time.sleep(1.0)  # idle and backed off: the state a deployed worker waits in
            ids, submit_s = post_all()
            _wait_all_finished(engine, ids)
    with session_factory(engine)() as session:
        rows = session.execute(
            select(
                Job.status, Job.created_at, Job.started_at, Job.finished_at, Job.worker_id
            ).where(Job.id.in_(ids))
        ).all()
    failed = [row.status for row in rows if row.status != "succeeded"]
    if failed:
        raise RuntimeError(f"{len(failed)} of {n_jobs} jobs did not succeed: {failed[:5]}")

    def seconds(delta: timedelta) -> float:
        return delta.total_seconds()

    first = min(row.started_at if queued_first else row.created_at for row in rows)
    last_finished = max(row.finished_at for row in rows)
    first_claims: dict[str, Any] = {}
    per_worker: dict[str, int] = {}
    for row in rows:
        per_worker[row.worker_id] = per_worker.get(row.worker_id, 0) + 1
        first_claims[row.worker_id] = min(
            first_claims.get(row.worker_id, row.started_at), row.started_at
        )
    return {
        "workers": n_workers,
        "jobs": n_jobs,
        "queued_first": queued_first,
        "posts_per_s": n_jobs / submit_s,
        "span_s": seconds(last_finished - first),
        "jobs_per_s": n_jobs / seconds(last_finished - first),
        "median_run_ms": 1e3
        * statistics.median(seconds(row.finished_at - row.started_at) for row in rows),
        "median_wait_ms": 1e3
        * statistics.median(seconds(row.started_at - row.created_at) for row in rows),
        "jobs_per_worker": sorted(per_worker.values(), reverse=True),
        "first_claim_skew_ms": 1e3
        * seconds(max(first_claims.values()) - min(first_claims.values())),
    }


def bench_throughput(
    report: Report,
    client: httpx.Client,
    engine: Engine,
    *,
    database_url: str,
    data_dir: Path,
    n_jobs: int,
    repeats: int,
) -> None:
    """Both ways (posted to idle workers; queued first), 1 and 2 workers, interleaved
    ``repeats`` times; each figure is the fastest repeat."""
    X, y = make_data(64, seed=1)
    dataset = upload_json(client, X[:, :4], y, "bench-tiny")
    section = f"1. {n_jobs} jobs × 1 epoch (linear, B=32) on 64 rows, best of {repeats}"
    runs: dict[tuple[int, bool], list[dict[str, Any]]] = {}
    for repeat in range(repeats):
        for queued_first in (False, True):
            for n_workers in (1, 2):
                how = "queued, then workers start" if queued_first else "posted to idle workers"
                _progress(
                    f"throughput {repeat + 1}/{repeats}: {n_jobs} jobs {how}, {n_workers} worker(s)"
                )
                runs.setdefault((n_workers, queued_first), []).append(
                    throughput_run(
                        client,
                        engine,
                        database_url=database_url,
                        data_dir=data_dir,
                        dataset_id=dataset["id"],
                        n_jobs=n_jobs,
                        n_workers=n_workers,
                        queued_first=queued_first,
                    )
                )
    best = {key: max(found, key=lambda run: run["jobs_per_s"]) for key, found in runs.items()}
    for n_workers in (1, 2):
        report.figures.append(
            Figure(
                section,
                f"{n_workers} worker(s): jobs/s, 1st POST → last succeeded",
                best[n_workers, False]["jobs_per_s"],
                "jobs/s",
            )
        )
    report.figures.append(
        Figure(
            section,
            "POSTs/s of the submitting client (1 worker)",
            best[1, False]["posts_per_s"],
            "jobs/s",
        )
    )
    for n_workers in (1, 2):
        report.figures += [
            Figure(
                section,
                f"{n_workers} worker(s): jobs/s, queued first, 1st claim → last succeeded",
                best[n_workers, True]["jobs_per_s"],
                "jobs/s",
            ),
            Figure(
                section,
                f"{n_workers} worker(s): median claim → finished",
                best[n_workers, True]["median_run_ms"],
                "ms",
            ),
        ]
    report.figures.append(
        Figure(
            section,
            "2 workers / 1 worker (queued first)",
            best[2, True]["jobs_per_s"] / best[1, True]["jobs_per_s"],
            "×",
        )
    )
    report.details["throughput"] = [run for found in runs.values() for run in found]


# --- 2. service overhead ---------------------------------------------------------------------


def _core_epochs(
    X: np.ndarray, y: np.ndarray, config: TrainConfig, threads: int
) -> tuple[list[float], float, float]:
    """The core in this process: per-epoch ``samples_per_s``, the whole run's seconds
    (construction + every epoch) and the sum of the epochs' ``wall_time_s``."""
    with threadpool_limits(limits=threads):
        start = time.perf_counter()
        records = list(Training(X, y, config))
        total_s = time.perf_counter() - start
    epochs_s = sum(record.wall_time_s for record in records)
    return [float(record.samples_per_s) for record in records], total_s, epochs_s


@dataclass
class SpeedRuns:
    """Per-epoch samples/s (after the first) pooled over rounds; per round the whole run's
    seconds and the seconds outside the epochs' ``wall_time_s`` (set-up, writes, finish)."""

    epochs: list[float] = field(default_factory=list)
    totals: list[float] = field(default_factory=list)
    outside: list[float] = field(default_factory=list)

    def add(self, per_epoch: Sequence[float], total_s: float, epochs_s: float) -> None:
        self.epochs.extend(per_epoch[1:])
        self.totals.append(total_s)
        self.outside.append(total_s - epochs_s)

    @property
    def median(self) -> float:
        return statistics.median(self.epochs)

    @property
    def best(self) -> float:
        return max(self.epochs)


def bench_speed(
    report: Report,
    client: httpx.Client,
    engine: Engine,
    *,
    database_url: str,
    data_dir: Path,
    n_rows: int,
    epochs: int,
    rounds: int,
    batch_sizes: Sequence[int],
    threads: int,
) -> None:
    X, y = make_data(n_rows)
    _progress(f"speed: uploading {n_rows:,} × {N_FEATURES} as NPY")
    start = time.perf_counter()
    dataset = upload_npy(client, X, y, "bench-speed")
    report.details["speed_upload_s"] = time.perf_counter() - start
    # The worker's arrays: filled into the shared cache by the service's own code, as the
    # worker does on its first claim (so the job finds it there), memory-mapped the same way.
    with session_factory(engine)() as session:
        _, cache_path = DatasetCache(data_dir / "cache").ensure(session, dataset["id"])
    X_worker, y_worker = open_canonical(cache_path, N_FEATURES, mmap=True)
    details: dict[str, Any] = {}
    with _processes.workers(database_url, data_dir, 1, threads=threads):
        for batch_size in batch_sizes:
            body = {
                "dataset_id": dataset["id"],
                "model": "linear",
                "optimizer": "sgd",
                "learning_rate": LEARNING_RATE,
                "batch_size": batch_size,
                "epochs": epochs,
                "seed": 0,
                "dtype": "float32",
                "tags": ["bench-speed"],
            }
            config = TrainConfig.from_dict(
                {k: v for k, v in body.items() if k not in ("dataset_id", "tags")}
            )
            core_f32, core_worker, job = SpeedRuns(), SpeedRuns(), SpeedRuns()
            for round_ in range(rounds):
                _progress(f"speed: B={batch_size} round {round_ + 1}/{rounds}")
                core_f32.add(*_core_epochs(X, y, config, threads))
                core_worker.add(*_core_epochs(X_worker, y_worker, config, threads))
                submitted = submit(client, body)
                if TrainConfig.from_dict(submitted["config"]) != config:
                    raise RuntimeError(f"the job's config differs: {submitted['config']}")
                finished = wait_finished(client, submitted["id"])
                if finished["status"] != "succeeded":
                    raise RuntimeError(f"speed job {finished['id']}: {finished}")
                history = _checked(
                    client.get(f"/v1/jobs/{submitted['id']}/history", params={"max_points": 2}),
                    200,
                )
                wall = (
                    datetime.fromisoformat(finished["finished_at"])
                    - datetime.fromisoformat(finished["started_at"])
                ).total_seconds()
                job.add(history["samples_per_s"], wall, sum(history["wall_time_s"]))
            section = f"2. job / core, {n_rows:,} × {N_FEATURES} float32 linear, B={batch_size}"
            report.figures += [
                Figure(section, "job samples/s (fastest epoch ≥ 2)", job.best, "samples/s"),
                Figure(
                    section,
                    "core samples/s, worker's arrays (mmap f64)",
                    core_worker.best,
                    "samples/s",
                ),
                Figure(section, "core samples/s, contiguous float32", core_f32.best, "samples/s"),
                Figure(
                    section,
                    "job / core on the worker's arrays",
                    job.best / core_worker.best,
                    "×",
                    GOAL_SERVICE_RATIO,
                ),
                Figure(section, "job / core on contiguous float32", job.best / core_f32.best, "×"),
                Figure(
                    section,
                    "median epochs: job / core (worker's arrays)",
                    job.median / core_worker.median,
                    "×",
                ),
                Figure(
                    section,
                    "whole run: core s / job s (started→finished)",
                    statistics.median(core_worker.totals) / statistics.median(job.totals),
                    "×",
                ),
                Figure(
                    section,
                    "job: time outside its epochs (open, writes, finish)",
                    1e3 * statistics.median(job.outside),
                    "ms",
                ),
                Figure(
                    section,
                    "core: time outside its epochs (construction)",
                    1e3 * statistics.median(core_worker.outside),
                    "ms",
                ),
            ]
            details[str(batch_size)] = {
                "job": asdict(job),
                "core_worker_arrays": asdict(core_worker),
                "core_float32": asdict(core_f32),
            }
    report.details["speed"] = details


# --- 3. history reads ------------------------------------------------------------------------


def write_history(engine: Engine, job_id: str, *, total_steps: int, n_epochs: int) -> None:
    """Write ``n_epochs`` epoch rows holding ``total_steps`` float32 step losses in all, and
    mark the job succeeded — the rows a worker would have written, straight into the tables."""
    rng = np.random.default_rng(0)
    per_epoch = total_steps // n_epochs
    batch_size = 32
    with session_factory(engine)() as session:
        for epoch in range(1, n_epochs + 1):
            t = np.arange((epoch - 1) * per_epoch, epoch * per_epoch, dtype=np.float64)
            losses = (0.01 + np.exp(-t / 2e5) + 0.05 * rng.standard_normal(per_epoch) ** 2).astype(
                "<f4"
            )
            record = {
                "epoch": epoch,
                "train_loss": float(losses.mean()),
                "val_loss": None,
                "val_rmse": None,
                "val_r2": None,
                "val_accuracy": None,
                "learning_rate": LEARNING_RATE,
                "batch_size": batch_size,
                "steps": per_epoch,
                "total_steps": per_epoch * epoch,
                "samples_seen": per_epoch * batch_size * epoch,
                "wall_time_s": 0.05,
                "samples_per_s": per_epoch * batch_size / 0.05,
                "noise_scale": None,
            }
            session.add(
                JobEpoch(job_id=job_id, epoch=epoch, record=record, step_losses=losses.tobytes())
            )
        job = session.get(Job, job_id)
        assert job is not None
        now = utcnow()
        job.status, job.attempt, job.worker_id = "succeeded", 1, "bench"
        job.epoch, job.step, job.steps_per_epoch = n_epochs, 0, per_epoch
        job.samples_seen = per_epoch * batch_size * n_epochs
        job.started_at, job.finished_at = now - timedelta(seconds=60), now
        session.commit()


def timed_reads(
    client: httpx.Client, path: str, params: dict[str, Any], reads: int
) -> tuple[list[float], bytes]:
    """Seconds of ``reads`` GETs (after one warm-up), and the last body."""
    body = _checked_bytes(client.get(path, params=params))
    seconds = []
    for _ in range(reads):
        start = time.perf_counter()
        response = client.get(path, params=params)
        seconds.append(time.perf_counter() - start)
        body = _checked_bytes(response)
    return seconds, body


def _checked_bytes(response: httpx.Response) -> bytes:
    if response.status_code != 200:
        raise RuntimeError(
            f"GET {response.request.url}: {response.status_code} {response.text[:300]}"
        )
    return response.content


def bench_history(
    report: Report,
    client: httpx.Client,
    engine: Engine,
    *,
    total_steps: int,
    reads: int,
    full_reads: int,
) -> None:
    X, y = make_data(64, seed=2)
    dataset = upload_json(client, X[:, :4], y, "bench-history")
    # Queued through the API (no worker runs now), then its history written as a worker would.
    job = submit(client, {"dataset_id": dataset["id"], "epochs": HISTORY_EPOCHS, "batch_size": 32})
    _progress(f"history: writing {total_steps:,} step losses")
    write_history(engine, job["id"], total_steps=total_steps, n_epochs=HISTORY_EPOCHS)
    path = f"/v1/jobs/{job['id']}/history"
    cases: list[tuple[str, dict[str, Any], int, float | None, Callable[[bytes], None]]] = [
        (
            "JSON, max_points=2000",
            {"max_points": HISTORY_MAX_POINTS},
            reads,
            GOAL_HISTORY_MS,
            lambda body: _check_json(body, total_steps, HISTORY_MAX_POINTS),
        ),
        (
            "CSV steps, max_points=2000",
            {"format": "csv", "table": "steps", "max_points": HISTORY_MAX_POINTS},
            reads,
            GOAL_HISTORY_MS,
            lambda body: _check_csv(body, HISTORY_MAX_POINTS),
        ),
        (
            "CSV epochs",
            {"format": "csv"},
            reads,
            None,
            lambda body: _check_csv(body, HISTORY_EPOCHS),
        ),
        (
            "JSON, full",
            {},
            full_reads,
            None,
            lambda body: _check_json(body, total_steps, total_steps),
        ),
        (
            "CSV steps, full",
            {"format": "csv", "table": "steps"},
            full_reads,
            None,
            lambda body: _check_csv(body, total_steps),
        ),
    ]
    section = f"3. history of {total_steps:,} steps ({HISTORY_EPOCHS} epochs) over HTTP"
    details = {}
    for label, params, n, goal, check in cases:
        _progress(f"history: {label} × {n}")
        seconds, body = timed_reads(client, path, params, n)
        check(body)
        median_ms = 1e3 * statistics.median(seconds)
        report.figures.append(
            Figure(
                section,
                f"{label} ({len(body) / 1e6:.2f} MB), median of {n}",
                median_ms,
                "ms",
                goal,
                at_least=False,
            )
        )
        details[label] = {"ms": [1e3 * s for s in seconds], "bytes": len(body)}
    report.details["history"] = details


def _check_json(body: bytes, total_steps: int, max_points: int) -> None:
    history = json.loads(body)
    kept = len(history["steps"]["step"])
    if history["total_steps"] != total_steps or not 0 < kept <= max_points:
        raise RuntimeError(f"history: total_steps {history['total_steps']}, {kept} kept")


def _check_csv(body: bytes, max_rows: int) -> None:
    rows = body.count(b"\n") - 1
    if not 0 < rows <= max_rows:
        raise RuntimeError(f"CSV with {rows} rows, expected 1..{max_rows}")


# --- the run ---------------------------------------------------------------------------------


NOTES = """\
notes:
  1. POST → succeeded: jobs posted one by one over HTTP to workers already started and idle
     (backed off to BATCHWISE_POLL_SECONDS, default 1 s); includes the POSTs, the queue, the
     idle wake-up, claim, dataset open (cached), training, epoch + checkpoint + model writes,
     finish. Queued first: all jobs queued, then the workers started; from the first claim
     (worker start-up excluded). Times are the database's created/started/finished_at.
  2. samples/s of an epoch cover its shuffle, gather and steps (the record's wall_time_s);
     the job's per-epoch write, heartbeats and set-up are in "time outside its epochs" and the
     whole-run ratio. "worker's arrays" = the canonical float64 file, memory-mapped (as the
     worker reads it); "contiguous float32" = as benchmarks.core feeds the core.
  3. client time from request to last byte, uvicorn on loopback, keep-alive connection."""


def _fmt(value: float, unit: str) -> str:
    if unit == "samples/s":
        return f"{value / 1e6:.2f} M/s"
    if unit == "×":
        return f"{value:.3f}×"
    if unit == "ms":
        return f"{value:.1f} ms" if value < 1000 else f"{value / 1e3:.2f} s"
    return f"{value:.1f} {unit}"


def format_table(report: Report) -> str:
    lines: list[str] = []
    section = None
    for figure in report.figures:
        if figure.section != section:
            section = figure.section
            lines.append(f"\n{section}")
        goal, verdict = "", ""
        if figure.goal is not None:
            sign = "≥" if figure.at_least else "<"
            goal = f"[{sign} {_fmt(figure.goal, figure.unit)}]"
            verdict = "met" if figure.met else "NOT met"
        lines.append(
            f"  {figure.label:<58} {_fmt(figure.value, figure.unit):>12} {goal:>12} {verdict}"
        )
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.jobs",
        description=(__doc__ or "").split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="fewer jobs, rows and reads (<1 min)")
    parser.add_argument(
        "--database-url",
        help="an empty database to run on (the run leaves its rows; create and drop it around "
        "the run); default a temp SQLite file",
    )
    parser.add_argument(
        "--threads", type=int, default=1, help="BLAS threads of the worker and the core (default 1)"
    )
    parser.add_argument(
        "--only",
        choices=("throughput", "speed", "history"),
        action="append",
        help="run only this part (repeatable)",
    )
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    quick = args.quick
    parts = args.only or ["throughput", "speed", "history"]
    settings = {
        "quick": quick,
        "parts": parts,
        "threads": args.threads,
        "jobs": 40 if quick else 100,
        "throughput_repeats": 1 if quick else 2,
        "speed_rows": 100_000 if quick else 200_000,
        "speed_epochs": 5 if quick else 10,
        "speed_rounds": 2 if quick else 5,
        "batch_sizes": [32, 1024],
        "history_steps": 1_000_000,
        "history_reads": 7 if quick else 15,
        "history_full_reads": 3 if quick else 5,
    }
    report = Report(settings=settings, machine=machine.describe())
    load_before = os.getloadavg()[0]
    digest = source_digest()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="batchwise-bench-") as scratch:
        data_dir = Path(scratch)
        database_url = args.database_url or f"sqlite:///{(data_dir / 'batchwise.db').as_posix()}"
        upgrade(database_url)
        engine = create_engine_for(database_url)
        settings["database"] = engine.dialect.name
        try:
            with (
                _processes.serve(database_url, data_dir) as base_url,
                httpx.Client(base_url=base_url, timeout=120) as client,
            ):
                if "throughput" in parts:
                    bench_throughput(
                        report,
                        client,
                        engine,
                        database_url=database_url,
                        data_dir=data_dir,
                        n_jobs=settings["jobs"],
                        repeats=settings["throughput_repeats"],
                    )
                if "speed" in parts:
                    bench_speed(
                        report,
                        client,
                        engine,
                        database_url=database_url,
                        data_dir=data_dir,
                        n_rows=settings["speed_rows"],
                        epochs=settings["speed_epochs"],
                        rounds=settings["speed_rounds"],
                        batch_sizes=settings["batch_sizes"],
                        threads=args.threads,
                    )
                if "history" in parts:
                    bench_history(
                        report,
                        client,
                        engine,
                        total_steps=settings["history_steps"],
                        reads=settings["history_reads"],
                        full_reads=settings["history_full_reads"],
                    )
        finally:
            engine.dispose()
    settings["load_average_1min"] = [load_before, os.getloadavg()[0]]
    settings["seconds"] = time.perf_counter() - start

    print(
        f"batchwise jobs benchmark on {settings['database']}"
        f"{' (quick)' if quick else ''}: BLAS threads {args.threads} in the worker and in the "
        f"in-process core"
    )
    print(format_table(report))
    print(NOTES)
    print(
        f"\nload average (1 min) on {os.cpu_count()} cores: {load_before:.2f} before, "
        f"{settings['load_average_1min'][1]:.2f} after; took {settings['seconds']:.0f} s"
    )
    machine.print_machine()
    if source_digest() != digest:
        print(
            "\nWARNING: service/ changed during the run: processes started later ran other "
            "code than this one; run again on a quiet tree"
        )
    if args.json is not None:
        payload = asdict(report) | {"figures": [asdict(f) | {"met": f.met} for f in report.figures]}
        args.json.write_text(json.dumps(payload, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
