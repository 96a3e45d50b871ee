"""``/v1/sweeps`` through the real app and a real database (both backends), and one sweep run
end to end by a real ``batchwise serve`` and two real worker processes."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.api import create_app
from service.config import Settings
from tests.support.factories import job_counts, regression_data
from tests.support.problems import assert_problem
from tests.support.processes import workers


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as client:
        yield client


def upload(client: TestClient | httpx.Client, X: np.ndarray, y: np.ndarray) -> str:
    response = client.post("/v1/datasets", json={"name": "d", "X": X.tolist(), "y": y.tolist()})
    assert response.status_code == 201, response.text
    dataset_id: str = response.json()["id"]
    return dataset_id


def test_post_answers_202_with_the_sweep_and_its_location(client: TestClient) -> None:
    dataset_id = upload(client, *regression_data(100))
    response = client.post(
        "/v1/sweeps",
        json={
            "dataset_id": dataset_id,
            "base": {"epochs": 2},
            "batch_sizes": [8, 16],
            "learning_rates": [0.01, 0.02],
        },
    )
    assert response.status_code == 202, response.text
    sweep = response.json()
    assert response.headers["location"] == f"/v1/sweeps/{sweep['id']}"
    assert sweep["status"] == "running"
    assert sweep["partial"] is True
    assert sweep["lr_method"] == "given"
    assert sweep["jobs"] == job_counts(queued=4)
    assert [len(p["job_ids"]) for p in sweep["points"]] == [2, 2]
    assert sweep["target"]["method"] == "auto"
    assert sweep["fit"]["b_noise"] is None
    assert sweep["fit"]["reason"]

    jobs = client.get("/v1/jobs", params={"tag": f"sweep:{sweep['id']}"}).json()["items"]
    assert len(jobs) == 4
    assert client.get(sweep["links"]["self"]).json()["id"] == sweep["id"]
    listed = client.get("/v1/sweeps", params={"limit": 1}).json()
    assert [item["id"] for item in listed["items"]] == [sweep["id"]]


def test_a_batch_size_that_cannot_run_is_422_naming_it_and_queues_nothing(
    client: TestClient,
) -> None:
    dataset_id = upload(client, *regression_data(100))
    response = client.post(
        "/v1/sweeps",
        json={"dataset_id": dataset_id, "batch_sizes": [8, 16, 1000]},
    )
    body = assert_problem(response, 422)
    assert body["errors"][0]["loc"] == ["body", "batch_sizes", 2]
    assert client.get("/v1/jobs").json()["items"] == []
    assert client.get("/v1/sweeps").json()["items"] == []


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({"batch_sizes": [8]}, ["body", "batch_sizes"]),
        ({"batch_sizes": [8, 16], "base": {"batch_size": 8}}, ["body", "base", "batch_size"]),
        ({"batch_sizes": [8, 16], "base": {"lr_schedule": {"gamma": 2}}}, None),
        ({"batch_sizes": [8, 16], "target_fraction": 1.0}, ["body", "target_fraction"]),
        ({"batch_sizes": [8, 8]}, ["body", "batch_sizes", 1]),
    ],
)
def test_invalid_bodies_are_422_problems(
    client: TestClient, body: dict[str, Any], loc: list[Any] | None
) -> None:
    dataset_id = upload(client, *regression_data(100))
    problem = assert_problem(
        client.post("/v1/sweeps", json={"dataset_id": dataset_id, **body}), 422
    )
    if loc is not None:
        assert problem["errors"][0]["loc"] == loc
    else:
        assert problem["errors"][0]["loc"][:3] == ["body", "base", "lr_schedule"]


def test_unknown_ids_are_404_and_a_finished_sweep_cannot_be_cancelled(
    client: TestClient,
) -> None:
    assert_problem(
        client.post("/v1/sweeps", json={"dataset_id": "nope", "batch_sizes": [1, 2]}), 404
    )
    assert_problem(client.get("/v1/sweeps/nope"), 404)
    assert_problem(client.post("/v1/sweeps/nope/cancel"), 404)
    assert_problem(client.get("/v1/sweeps", params={"cursor": "garbage"}), 400)

    dataset_id = upload(client, *regression_data(100))
    sweep = client.post("/v1/sweeps", json={"dataset_id": dataset_id, "batch_sizes": [8, 16]})
    cancel_url = sweep.json()["links"]["cancel"]
    cancelled = client.post(cancel_url)
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "cancelled"
    assert cancelled.json()["jobs"] == job_counts(cancelled=2)
    assert_problem(client.post(cancel_url), 409)


def test_a_sweep_runs_to_succeeded_on_a_real_server_and_two_workers(
    serve_process: Any, settings: Settings, tmp_path: Path
) -> None:
    X, y = regression_data(240, seed=3)
    database_url = settings.resolved_database_url
    worker_dir = tmp_path / "workers"
    worker_dir.mkdir()
    with (
        serve_process(database_url=database_url, data_dir=settings.data_dir) as base_url,
        httpx.Client(base_url=base_url, timeout=30) as http,
        workers(database_url, worker_dir, count=2),
    ):
        dataset_id = upload(http, X, y)
        response = http.post(
            "/v1/sweeps",
            json={
                "dataset_id": dataset_id,
                "name": "end to end",
                "base": {"epochs": 4, "standardize": True},
                "batch_sizes": [8, 32, 64],
                "learning_rates": [0.02, 0.05],
                "target_fraction": 0.8,
            },
        )
        assert response.status_code == 202, response.text
        url = response.json()["links"]["self"]
        deadline = time.monotonic() + 120
        sweep = http.get(url).json()
        while sweep["status"] == "running":
            assert time.monotonic() < deadline, sweep
            time.sleep(0.2)
            sweep = http.get(url).json()

    assert sweep["status"] == "succeeded", sweep
    assert sweep["partial"] is False
    assert sweep["jobs"] == job_counts(succeeded=6)
    assert [p["batch_size"] for p in sweep["points"]] == [8, 32, 64]
    target = sweep["target"]["loss"]
    assert target is not None
    for point in sweep["points"]:
        assert len(point["job_ids"]) == 2
        assert point["complete"] is True
        assert point["learning_rate"] in (0.02, 0.05)
        assert point["final"]["train"] is not None
        assert point["samples_per_s"] > 0
        steps = point["to_target"]["steps"]
        if point["best"]["train"] <= target:
            assert steps is not None
            assert steps > 0
    fit = sweep["fit"]
    assert fit is not None
    # On tiny data the fit may be refused; then it says why.
    assert (fit["b_noise"] is not None) or fit["reason"]
