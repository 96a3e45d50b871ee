"""A probe of a running job: the epochs it has passed are branched at once, the rest are kept
by the source (``keep_checkpoints`` grows) and branched when it finishes — by a real worker
process, whose finish of the source advances the probe."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.api import create_app
from service.config import Settings
from tests.support.factories import LONG_JOB, job_counts
from tests.support.processes import wait_for, worker_dir, workers
from tests.support.tenants import inline

ROWS = 4000


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as client:
        yield client


def test_later_checkpoints_wait_for_the_source_and_are_branched_when_it_finishes(
    client: TestClient, settings: Settings, tmp_path: Path
) -> None:
    # ~20 ms an epoch, 60 epochs: still running when the probe comes, even on an idle machine.
    dataset = client.post("/v1/datasets", json=inline(ROWS, 3)).json()["id"]
    source = {**LONG_JOB, "epochs": 60, "keep_checkpoints": [1]}
    job = client.post("/v1/jobs", json={"dataset_id": dataset, **source}).json()
    with workers(settings.resolved_database_url, worker_dir(tmp_path), count=1):
        wait_for(
            lambda: client.get(f"/v1/jobs/{job['id']}").json()["progress"]["epoch"] >= 1,
            timeout=120,
            what="the source's first epoch",
        )
        body = {"job_id": job["id"], "at_epochs": [1, 45], "multipliers": [2], "lr": "sqrt"}
        response = client.post("/v1/probes", json=body)
        assert response.status_code == 202, response.text
        probe = response.json()
        assert client.get(f"/v1/jobs/{job['id']}").json()["status"] == "running"
        assert probe["spec"]["pending"] == [45]
        waiting = probe["checkpoints"][1]
        assert waiting["branches"] == []
        assert "waiting for the running source" in waiting["critical"]["reason"]
        assert client.get(f"/v1/jobs/{job['id']}").json()["keep_checkpoints"] == [1, 45]

        done = wait_for(
            lambda: (
                (p := client.get(f"/v1/probes/{probe['id']}").json())["status"] != "running" and p
            ),
            timeout=300,
            interval=0.2,
            what="the probe's end",
        )
    assert done["status"] == "succeeded", done
    assert done["spec"]["pending"] == []
    assert done["jobs"] == job_counts(succeeded=4)
    for checkpoint in done["checkpoints"]:
        assert [b["multiplier"] for b in checkpoint["branches"]] == [1, 2]
        assert checkpoint["critical"]["batch_size"] in (8, 16)
        assert checkpoint["samples_seen"] == ROWS * checkpoint["epoch"]
