"""Plain helpers for the fault tests: the training job they interrupt, its reference history,
jobs through the HTTP API, and the processes behind a ``run_server`` URL and a claim."""

from __future__ import annotations

import functools
import os
import re
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from worker.helpers import TIMING_FIELDS, StoredEpoch, WorkerProcess, regression_data

from service.core import TrainConfig, Training

#: A job long enough to be interrupted mid-run (~40 ms an epoch, ~1.2 s in all), short
#: enough that a few of them fit in a test: an MLP, since linear models take a fused fast
#: path that runs an epoch in a few milliseconds.
JOB: dict[str, Any] = {
    "model": "mlp",
    "hidden_layers": [64, 64],
    "batch_size": 8,
    "epochs": 30,
    "learning_rate": 0.005,
}
ROWS = 20_000


def job_data() -> tuple[np.ndarray, np.ndarray]:
    """The (X, y) every fault-test job trains on."""
    return regression_data(ROWS)


@functools.cache
def reference_history(seed: int) -> tuple[StoredEpoch, ...]:
    """What an uninterrupted in-process run of :data:`JOB` with ``seed`` stores (timing fields
    aside): the history every run of it must reproduce byte for byte."""
    X, y = job_data()
    training = Training(X, y, TrainConfig(**JOB, seed=seed), task="regression")
    return tuple(
        StoredEpoch(
            record={k: v for k, v in r.to_dict().items() if k not in TIMING_FIELDS},
            step_losses=r.step_losses.astype("<f4").tobytes(),
        )
        for r in training
    )


def upload(client: httpx.Client) -> str:
    """Upload :func:`job_data` through the API; the dataset's id."""
    X, y = job_data()
    created = client.post("/v1/datasets", json={"name": "faults", "X": X.tolist(), "y": y.tolist()})
    assert created.status_code == 201, created.text
    dataset_id: str = created.json()["id"]
    return dataset_id


def submit(client: httpx.Client, dataset_id: str, seed: int, **overrides: Any) -> str:
    """Queue :data:`JOB` (with ``seed`` and ``overrides``) through the API; the job's id."""
    submitted = client.post(
        "/v1/jobs", json={"dataset_id": dataset_id, **JOB, "seed": seed} | overrides
    )
    assert submitted.status_code == 202, submitted.text
    job_id: str = submitted.json()["id"]
    return job_id


def worker_dir(tmp_path: Path) -> Path:
    """A data dir of the workers' own (their logs and dataset cache), apart from the API's."""
    path = tmp_path / "workers"
    path.mkdir(exist_ok=True)
    return path


def claims(*started: WorkerProcess) -> list[str]:
    """The job ids the workers claimed, one entry per claim, from their logs."""
    return [
        job_id
        for worker in started
        for job_id in re.findall(r"claimed job (\S+) \(attempt", worker.output())
    ]


def worker_pid(worker_id: str) -> int:
    """The pid in a worker id (``host:pid:random``)."""
    return int(worker_id.split(":")[-2])


def server_pid(base_url: str) -> int:
    """The pid of this process's ``python -m service serve`` child listening at ``base_url``
    (``run_server`` yields the URL only): found by its command line in ``/proc``."""
    port = base_url.rsplit(":", 1)[1]
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            stat = (entry / "stat").read_text()
        except OSError:  # gone meanwhile
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        if parent != os.getpid():
            continue
        args = [a.decode() for a in argv]
        if "serve" in args and "--port" in args and args[args.index("--port") + 1] == port:
            return int(entry.name)
    raise AssertionError(f"no server process of ours listens at {base_url}")
