"""The warmup's probe as the jobs package resolves it: through the route (B's probes answer
for an unknown one), and refused where no resolver is given (a sweep's points, say)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from service.api import create_app
from service.config import Settings
from service.errors import InvalidInput
from service.jobs import service as jobs_service
from service.jobs.schemas import JobCreate
from tests.support.factories import line_data, make_dataset
from tests.support.problems import assert_problem


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as client:
        yield client


def test_an_unknown_probe_is_refused_at_submit(client: TestClient) -> None:
    X, y = line_data(100)
    dataset = client.post("/v1/datasets", json={"name": "d", "X": X.tolist(), "y": y.tolist()})
    body = {
        "dataset_id": dataset.json()["id"],
        "batch_size_schedule": {"kind": "warmup", "probe_id": "no-such-probe"},
    }
    problem = assert_problem(client.post("/v1/jobs", json=body), 404)
    assert "no-such-probe" in problem["detail"]


def test_a_probe_without_a_resolver_is_refused_naming_the_field(
    session: Session, settings: Settings
) -> None:
    dataset = make_dataset(session, settings.data_dir, *line_data(100))
    body = JobCreate(dataset_id=dataset.id, batch_size_schedule={"kind": "warmup", "probe_id": "p"})
    with pytest.raises(InvalidInput) as caught:
        jobs_service.submit(session, body, tenant="default")
    assert [list(error.loc) for error in caught.value.errors] == [
        ["body", "batch_size_schedule", "probe_id"]
    ]
