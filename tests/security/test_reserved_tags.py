"""``sweep:`` tags are the service's (issue 11, finding 6): a user's job or sweep base may not
carry one (422 naming the tag), while a sweep still tags its own points ``sweep:<id>``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from service.api import create_app
from service.config import Settings
from tests.support.factories import line_data


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as client:
        yield client


@pytest.fixture
def dataset_id(client: TestClient) -> str:
    X, y = line_data(100)
    response = client.post("/v1/datasets", json={"name": "d", "X": X.tolist(), "y": y.tolist()})
    assert response.status_code == 201, response.text
    created: str = response.json()["id"]
    return created


def assert_reserved(response: Any, loc: list[str | int]) -> None:
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    (error,) = response.json()["errors"]
    assert error["loc"] == loc
    assert "reserved" in error["msg"]
    assert "sweep:" in error["msg"]


@pytest.mark.parametrize("tag", ["sweep:0c6f2b9e", "SWEEP:x", "  sweep:padded", "sweep:"])
def test_a_job_may_not_carry_a_sweep_tag(client: TestClient, dataset_id: str, tag: str) -> None:
    response = client.post(
        "/v1/jobs", json={"dataset_id": dataset_id, "tags": ["mine", tag, "also-mine"]}
    )
    assert_reserved(response, ["body", "tags", 1])
    assert client.get("/v1/jobs").json()["items"] == []  # nothing was queued


def test_a_sweep_base_may_not_carry_a_sweep_tag(client: TestClient, dataset_id: str) -> None:
    body = {
        "dataset_id": dataset_id,
        "base": {"epochs": 2, "tags": ["sweep:someone-elses"]},
        "batch_sizes": [8, 16],
        "learning_rates": [0.01],
    }
    assert_reserved(client.post("/v1/sweeps", json=body), ["body", "base", "tags", 0])
    assert client.get("/v1/sweeps").json()["items"] == []


def test_other_tags_pass_and_a_sweep_still_tags_its_points(
    client: TestClient, dataset_id: str
) -> None:
    job = client.post(
        "/v1/jobs", json={"dataset_id": dataset_id, "tags": ["sweeps", "not-sweep:x", "sweep"]}
    )
    assert job.status_code == 202, job.text
    assert job.json()["tags"] == ["sweeps", "not-sweep:x", "sweep"]

    body = {
        "dataset_id": dataset_id,
        "base": {"epochs": 2, "tags": ["mine"]},
        "batch_sizes": [8, 16],
        "learning_rates": [0.01],
    }
    sweep = client.post("/v1/sweeps", json=body)
    assert sweep.status_code == 202, sweep.text
    sweep_id = sweep.json()["id"]
    points = client.get("/v1/jobs", params={"tag": f"sweep:{sweep_id}"}).json()["items"]
    assert len(points) == 2
    assert all(point["tags"] == ["mine", f"sweep:{sweep_id}"] for point in points)
