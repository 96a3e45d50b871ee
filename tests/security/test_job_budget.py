"""A budget on a job's size (``BATCHWISE_MAX_JOB_BYTES``): jobs and sweep points that would
need more memory in a worker than one job may use are refused at submit (422 naming the field
and the bytes), on both backends, and never reach the queue. The estimate behind it
(``service.core.estimate_job_bytes``) is checked against what the core really allocates: the
``tracemalloc`` peak of the worker's loop (train, serialize every checkpoint, store the model).

Before the budget, ``hidden_layers`` [65536] × 16 (≈ 6.4e10 parameters) was accepted, and
[16384, 16384] on a 2-feature dataset took the worker to 3.17 GB and beyond.
"""

from __future__ import annotations

import itertools
import json
import os
import time
import tracemalloc
from typing import Any

import numpy as np
import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from service.config import Settings
from service.core import Task, TrainConfig, Training, estimate_job_bytes, model_outputs
from service.core.finite import json_safe
from service.db import utcnow
from service.jobs import queue
from tests.support.problems import assert_problem, locs
from tests.support.tenants import ALPHA, api, jobs_by_status, sweep_count

INVALID = "/problems/invalid-input"
GiB = 1024**3
#: A worker's share on a small machine; the attacks below need far more.
BUDGET = 4 * GiB


def mlp_params(widths: list[int]) -> int:
    """Weights and biases of a fully connected net through ``widths`` (input … output)."""
    return sum(i * o + o for i, o in itertools.pairwise(widths))


def post_job(client: Any, dataset_id: str, **body: Any) -> tuple[Any, float]:
    """The response to ``POST /v1/jobs`` and how long it took, in seconds."""
    start = time.perf_counter()
    response = client.post(ALPHA, "/v1/jobs", json={"dataset_id": dataset_id, **body})
    return response, time.perf_counter() - start


# --- the attacks -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("hidden_layers", "n_params"),
    [
        ([65536] * 16, mlp_params([2, *[65536] * 16, 1])),  # ≈ 6.4e10
        ([16384, 16384], mlp_params([2, 16384, 16384, 1])),  # ≈ 2.7e8, 3.17 GB seen before
    ],
)
def test_a_model_too_large_for_a_worker_is_422_naming_hidden_layers(
    settings: Settings, engine: Engine, hidden_layers: list[int], n_params: int
) -> None:
    with api(settings, engine, max_job_bytes=BUDGET) as client:
        dataset_id = client.dataset(ALPHA)  # 100 rows × 2 features
        response, elapsed = post_job(client, dataset_id, model="mlp", hidden_layers=hidden_layers)
    problem = assert_problem(response, 422, INVALID)
    # An estimate from the config, not an allocation: answered at once whatever the size.
    assert elapsed < 5.0
    assert locs(problem)[0] == ["body", "hidden_layers"]
    first = problem["errors"][0]
    assert first["type"] == "job_too_large"
    assert f"{n_params:,} parameters × 4 bytes" in first["msg"]
    assert "more than the 4,294,967,296 bytes (4.0 GiB) one job may use" in first["msg"]
    assert first["msg"].endswith("(BATCHWISE_MAX_JOB_BYTES); use fewer or narrower hidden layers")
    # The bytes it needs: at least θ, gradient and optimizer work (3 × 4 bytes a parameter).
    needed = int(first["msg"].split(": ")[1].split(" bytes")[0].replace(",", ""))
    assert needed >= 12 * n_params
    assert problem["detail"].startswith("The job would need about ")
    assert "BATCHWISE_MAX_JOB_BYTES" in problem["detail"]
    assert jobs_by_status(engine, ALPHA) == {}


def test_a_batch_too_large_for_a_worker_is_422_naming_batch_size(
    settings: Settings, engine: Engine
) -> None:
    # [8192] on 2 features is 32,769 parameters; a batch of 2,000 rows needs activations,
    # their gradients and act′ of 2,000 × 8,192 float32 each: ≈ 197 MB.
    with api(settings, engine, max_job_bytes=64 * 1024**2) as client:
        dataset_id = client.dataset(ALPHA, n_rows=2000)
        mlp = {"model": "mlp", "hidden_layers": [8192]}
        response, _ = post_job(client, dataset_id, **mlp, batch_size=2000)
        whole_set, _ = post_job(client, dataset_id, **mlp, batch_size=None)
        small = client.job(ALPHA, dataset_id, **mlp, batch_size=32)
    problem = assert_problem(response, 422, INVALID)
    assert locs(problem) == [["body", "batch_size"]]
    msg = problem["errors"][0]["msg"]
    assert msg.startswith("the work arrays of a step at batch size 2,000, ")
    # per row: activations, their gradient and act′ (3 × 8,192 float32), and a few scalars
    per_row = int(msg.split(", ")[1].split(" bytes a row")[0].replace(",", ""))
    assert 3 * 8192 * 4 <= per_row <= 3 * 8192 * 4 + 64
    assert msg.endswith("(BATCHWISE_MAX_JOB_BYTES); use a smaller batch size")
    assert locs(assert_problem(whole_set, 422, INVALID)) == [["body", "batch_size"]]
    assert small["status"] == "queued"
    assert jobs_by_status(engine, ALPHA) == {"queued": 1}


@pytest.mark.parametrize(
    "schedule",
    [
        {"kind": "grow", "factor": 2, "max_batch_size": 2000},
        {"kind": "adaptive", "max_batch_size": 2000},
    ],
)
def test_a_schedule_that_grows_the_batch_is_checked_at_its_largest(
    settings: Settings, engine: Engine, schedule: dict[str, Any]
) -> None:
    body = {"model": "mlp", "hidden_layers": [8192], "batch_size": 32, "epochs": 10}
    with api(settings, engine, max_job_bytes=64 * 1024**2) as client:
        dataset_id = client.dataset(ALPHA, n_rows=2000)
        constant = client.job(ALPHA, dataset_id, **body)
        growing, _ = post_job(client, dataset_id, **body, batch_size_schedule=schedule)
    assert constant["status"] == "queued"
    problem = assert_problem(growing, 422, INVALID)
    # (the adaptive schedule measures the noise scale, which may be named too)
    (msg,) = [e["msg"] for e in problem["errors"] if e["loc"] == ["body", "batch_size"]]
    # 32 → 64 → … → 1,024 → 2,000 (the cap) within 10 epochs, whichever kind
    assert msg.startswith("the work arrays of a step at batch size 2,000 (the schedule's largest)")
    assert msg.endswith("use a smaller batch size or batch_size_schedule.max_batch_size")
    assert jobs_by_status(engine, ALPHA) == {"queued": 1}


def test_a_job_at_the_budget_is_accepted_and_one_byte_less_refuses_it(
    settings: Settings, engine: Engine
) -> None:
    body = {"model": "mlp", "hidden_layers": [512, 512], "batch_size": 64, "optimizer": "adam"}
    config = TrainConfig.from_dict(body)
    need = estimate_job_bytes(config, n_rows=100, n_features=2, n_outputs=1).total
    with api(settings, engine, max_job_bytes=need - 1) as client:
        dataset_id = client.dataset(ALPHA)
        over, _ = post_job(client, dataset_id, **body)
    with api(settings, engine, max_job_bytes=need) as client:
        at_budget = client.job(ALPHA, dataset_id, **body)
    problem = assert_problem(over, 422, INVALID)
    assert f"would need about {need:,} bytes" in problem["detail"]
    assert at_budget["status"] == "queued"


def test_a_refused_job_never_reaches_a_worker(
    settings: Settings, engine: Engine, session: Session
) -> None:
    with api(settings, engine, max_job_bytes=BUDGET) as client:
        dataset_id = client.dataset(ALPHA)
        response, _ = post_job(client, dataset_id, model="mlp", hidden_layers=[16384, 16384])
    assert_problem(response, 422, INVALID)
    claimed = queue.claim(session, worker_id="w1", lease_seconds=30.0, now=utcnow())
    session.commit()
    assert claimed is None
    assert jobs_by_status(engine, ALPHA) == {}


# --- sweeps ------------------------------------------------------------------------------------


def test_a_sweep_with_one_point_too_large_is_422_naming_it(
    settings: Settings, engine: Engine, session: Session
) -> None:
    # Sweep points evaluate the loss on up to 8,192 rows in pieces of 2,048, so every point
    # holds 2,048 rows of work arrays; the batch of 8,192 holds four times that.
    base = {"epochs": 3, "model": "mlp", "hidden_layers": [2048]}
    with api(settings, engine, max_job_bytes=128 * 1024**2) as client:
        dataset_id = client.dataset(ALPHA, n_rows=10_000)
        sweep = {"dataset_id": dataset_id, "learning_rates": [0.05], "base": base}
        batch = client.post(ALPHA, "/v1/sweeps", json=sweep | {"batch_sizes": [32, 8192]})
        model = client.post(
            ALPHA,
            "/v1/sweeps",
            json=sweep
            | {"batch_sizes": [32, 64], "base": base | {"hidden_layers": [16384, 16384]}},
        )
    batch_problem = assert_problem(batch, 422, INVALID)
    assert locs(batch_problem) == [["body", "batch_sizes", 1]]
    assert batch_problem["detail"].startswith(
        "The sweep cannot run: batch_sizes[1]: the work arrays of a step at batch size 8,192"
    )
    model_problem = assert_problem(model, 422, INVALID)
    assert locs(model_problem)[0] == ["body", "base", "hidden_layers"]
    assert f"{mlp_params([2, 16384, 16384, 1]):,} parameters" in model_problem["detail"]
    assert sweep_count(session) == 0
    assert jobs_by_status(engine, ALPHA) == {}


# --- the setting -------------------------------------------------------------------------------


def test_the_budget_defaults_to_a_quarter_of_physical_memory(settings: Settings) -> None:
    physical = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    assert settings.max_job_bytes is None
    assert settings.resolved_max_job_bytes == physical // 4
    assert settings.model_copy(update={"max_job_bytes": 123}).resolved_max_job_bytes == 123


# --- the estimate against what the core allocates -------------------------------------------------


def _dataset(n_rows: int, n_features: int, task: Task, n_classes: int) -> tuple[Any, Any]:
    rng = np.random.default_rng(0)
    X = rng.standard_normal((n_rows, n_features))
    if task == "regression":
        y = X @ np.linspace(1.0, 2.0, n_features) + 0.1 * rng.standard_normal(n_rows)
    else:
        y = rng.integers(0, n_classes, n_rows).astype(np.float64)
    return X, y


def _worker_peak(X: Any, y: Any, config: TrainConfig, task: Task) -> int:
    """``tracemalloc``'s peak over what the worker does with a job: train, serialize each
    epoch's checkpoint (the last one's bytes kept until the next), and store the model
    (``queue.finish``: its finite-checked dict, encoded as JSON, and its ``.npz`` bytes)."""
    tracemalloc.start()
    try:
        start = tracemalloc.get_traced_memory()[0]
        training = Training(X, y, config, task=task)
        checkpoint = b""
        for _ in training:
            checkpoint = training.checkpoint().to_bytes()
        model = training.model
        row = {"model": json_safe(model.to_dict()), "npz": model.to_npz_bytes()}
        stored = json.dumps(row["model"])
        peak = tracemalloc.get_traced_memory()[1] - start
    finally:
        tracemalloc.stop()
    assert checkpoint
    assert stored
    return peak


@pytest.mark.parametrize(
    ("config", "n_rows", "n_features", "task", "n_classes"),
    [
        ({"model": "linear", "batch_size": 32}, 50_000, 20, "regression", 0),
        ({"model": "linear", "batch_size": 512, "optimizer": "adam"}, 50_000, 20, "regression", 0),
        ({"model": "logistic", "batch_size": 16, "noise_scale": True}, 50_000, 20, "binary", 2),
        (
            {"model": "softmax", "batch_size": 4096, "validation_split": 0.2},
            30_000, 50, "multiclass", 10,
        ),
        (
            {"model": "mlp", "hidden_layers": [512, 512], "optimizer": "adam"},
            500, 10, "regression", 0,
        ),
        ({"model": "mlp", "hidden_layers": [512], "batch_size": 4096}, 20_000, 10, "binary", 2),
        (
            {"model": "mlp", "hidden_layers": [512, 512], "batch_size": 2048, "dtype": "float64",
             "validation_split": 0.25},
            8_000, 10, "multiclass", 5,
        ),
        (
            {"model": "mlp", "hidden_layers": [256, 256], "batch_size": 256, "noise_scale": True,
             "noise_scale_samples": 4096},
            5_000, 10, "regression", 0,
        ),
        (
            {"model": "mlp", "hidden_layers": [128], "batch_size": 64, "epochs": 4,
             "batch_size_schedule": {"kind": "grow", "factor": 4}},
            20_000, 10, "regression", 0,
        ),
    ],
)  # fmt: skip
def test_the_estimate_is_within_a_factor_of_what_the_worker_allocates(
    config: dict[str, Any], n_rows: int, n_features: int, task: Task, n_classes: int
) -> None:
    train_config = TrainConfig.from_dict({"epochs": 2} | config)
    X, y = _dataset(n_rows, n_features, task, n_classes)
    estimate = estimate_job_bytes(
        train_config,
        n_rows=n_rows,
        n_features=n_features,
        n_outputs=model_outputs(train_config, task, n_classes or None),
    )
    measured = _worker_peak(X, y, train_config, task)
    assert 0.8 * measured <= estimate.total <= 2.0 * measured, (estimate, measured)
