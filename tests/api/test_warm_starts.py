"""Warm starts, kept checkpoints and the warmup through the real app, a real database and a
real worker (run in this process until the queue is empty)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, func, select

from service.api import create_app
from service.config import Settings
from service.db import JobKeptCheckpoint, session_factory
from service.db.tables import JobStart
from service.errors import NotFound
from service.jobs import checkpoints
from service.jobs import service as jobs_service
from service.jobs.schemas import JobCreate
from service.worker.loop import run_worker
from service.worker.signals import StopFlag
from tests.support.factories import add_dataset
from tests.support.problems import assert_problem, locs

#: Small, but an MLP with momentum, noise scale and evaluations: everything a branch carries.
SOURCE: dict[str, Any] = {
    "model": "mlp",
    "hidden_layers": [8],
    "optimizer": "momentum",
    "learning_rate": 0.05,
    "batch_size": 16,
    "epochs": 5,
    "seed": 2,
    "validation_split": 0.2,
    "standardize": True,
    "noise_scale": True,
    "evaluation": {"per_decade": 4},
    "lr_schedule": {"kind": "cosine"},
}


def _data(n: int = 300) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(5)
    X = rng.normal(size=(n, 4))
    y = (X @ rng.normal(size=(4, 3))).argmax(axis=1)
    return X, y


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as client:
        yield client


def _drain(settings: Settings) -> None:
    """A real worker, in this process, until the queue is empty."""
    assert (
        run_worker(settings.model_copy(update={"lease_seconds": 5.0}), stop=StopFlag(), burst=True)
        == 0
    )


def _upload(client: TestClient) -> str:
    X, y = _data()
    response = client.post("/v1/datasets", json={"name": "d", "X": X.tolist(), "y": y.tolist()})
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def _submit(client: TestClient, **body: Any) -> dict[str, Any]:
    response = client.post("/v1/jobs", json=body)
    assert response.status_code == 202, response.text
    job: dict[str, Any] = response.json()
    return job


def _history(client: TestClient, job_id: str) -> dict[str, Any]:
    history: dict[str, Any] = client.get(f"/v1/jobs/{job_id}/history").json()
    return history


def _epoch(history: dict[str, Any], epoch: int) -> dict[str, Any]:
    i = history["epoch"].index(epoch)
    names = ("train_loss", "val_loss", "learning_rate", "batch_size", "samples_seen", "noise_scale")
    return {name: history[name][i] for name in names}


def _source(client: TestClient, settings: Settings, **changes: Any) -> tuple[str, str]:
    dataset_id = _upload(client)
    job = _submit(
        client, dataset_id=dataset_id, **{**SOURCE, "keep_checkpoints": [2, 3], **changes}
    )
    _drain(settings)
    assert client.get(f"/v1/jobs/{job['id']}").json()["status"] == "succeeded"
    return dataset_id, str(job["id"])


def test_a_branch_that_changes_nothing_continues_its_source_bit_for_bit(
    client: TestClient, settings: Settings
) -> None:
    dataset_id, source = _source(client, settings)
    listed = client.get(f"/v1/jobs/{source}/checkpoints").json()
    assert [(c["epoch"], c["kept"], c["latest"]) for c in listed["items"]] == [
        (2, True, False),
        (3, True, False),
        (5, False, True),
    ]
    original = _history(client, source)
    at_3 = listed["items"][1]
    assert at_3["samples_seen"] == original["samples_seen"][2]
    assert at_3["train_loss"] == original["train_loss"][2]

    branch = _submit(
        client, dataset_id=dataset_id, **SOURCE, init_from={"job_id": source, "epoch": 3}
    )
    assert branch["init_from"] == {"job_id": source, "epoch": 3, "reset_optimizer": False}
    assert branch["progress"]["epoch"] == 3
    assert branch["samples_seen"] == at_3["samples_seen"]
    _drain(settings)
    ours = _history(client, branch["id"])
    assert ours["epoch"] == [4, 5]
    for epoch in (4, 5):
        assert _epoch(ours, epoch) == _epoch(original, epoch)
    # Every step loss of epochs 4 and 5, and the evaluations after step 3's end.
    first_step = original["steps"]["step"].index(ours["steps"]["step"][0])
    assert ours["steps"]["loss"] == original["steps"]["loss"][first_step:]
    start = original["evaluations"]["step"].index(ours["evaluations"]["step"][0])
    assert ours["evaluations"]["loss"] == original["evaluations"]["loss"][start:]
    assert (
        client.get(f"/v1/jobs/{branch['id']}/model").json()["params"]
        == (client.get(f"/v1/jobs/{source}/model").json()["params"])
    )


def test_reset_optimizer_drops_the_momentum_the_source_carried(
    client: TestClient, settings: Settings
) -> None:
    dataset_id, source = _source(client, settings)
    original = _history(client, source)
    reset = _submit(
        client,
        dataset_id=dataset_id,
        **SOURCE,
        init_from={"job_id": source, "epoch": 2, "reset_optimizer": True},
    )
    _drain(settings)
    ours = _history(client, reset["id"])
    at = original["steps"]["step"].index(ours["steps"]["step"][0])
    # The same θ: the first step's loss is the original's; without the momentum, none after.
    assert ours["steps"]["loss"][0] == original["steps"]["loss"][at]
    assert ours["steps"]["loss"][1] != original["steps"]["loss"][at + 1]
    assert ours["train_loss"][0] != original["train_loss"][2]


def test_a_branch_may_change_batch_lr_seed_and_optimizer_with_reset(
    client: TestClient, settings: Settings
) -> None:
    dataset_id, source = _source(client, settings)
    body = {**SOURCE, "batch_size": 64, "learning_rate": 0.2, "seed": 9, "epochs": 6}
    body["optimizer"] = "adam"
    branch = _submit(
        client,
        dataset_id=dataset_id,
        **body,
        init_from={"job_id": source, "epoch": 5, "reset_optimizer": True},
    )
    # Another seed shuffles afresh on the source's rows: the split stays the source's.
    assert "split_seed" not in branch["config"]
    _drain(settings)
    job = client.get(f"/v1/jobs/{branch['id']}").json()
    assert job["status"] == "succeeded", job
    assert _history(client, branch["id"])["batch_size"] == [64]


def _refused(client: TestClient, body: dict[str, Any], status: int, loc: list[Any]) -> str:
    problem = assert_problem(client.post("/v1/jobs", json=body), status)
    assert loc in locs(problem), problem
    return str(problem["detail"])


def test_warm_starts_that_cannot_run_are_refused_naming_the_field(
    client: TestClient, settings: Settings, engine: Engine
) -> None:
    dataset_id, source = _source(client, settings)
    base = {"dataset_id": dataset_id, **SOURCE}

    def branch(epoch: int = 3, **changes: Any) -> dict[str, Any]:
        return {**base, "init_from": {"job_id": source, "epoch": epoch}, **changes}

    missing = {**base, "init_from": {"job_id": "no-such-job", "epoch": 3}}
    _refused(client, missing, 404, ["body", "init_from", "job_id"])
    detail = _refused(client, branch(epoch=4), 422, ["body", "init_from", "epoch"])
    assert "checkpoints after epochs [2, 3, 5]" in detail
    _refused(client, branch(hidden_layers=[9]), 422, ["body", "hidden_layers"])
    _refused(client, branch(standardize=False), 422, ["body", "standardize"])
    _refused(client, branch(validation_split=0.3), 422, ["body", "validation_split"])
    _refused(client, branch(optimizer="adam"), 422, ["body", "optimizer"])
    detail = _refused(client, branch(epochs=3), 422, ["body", "epochs"])
    assert "set epochs above it" in detail
    _refused(client, branch(keep_checkpoints=[3]), 422, ["body", "keep_checkpoints"])
    other = _upload(client)
    _refused(client, {**branch(), "dataset_id": other}, 422, ["body", "dataset_id"])
    # Another tenant's job is the same 404 as a missing one.
    with session_factory(engine)() as session:
        theirs_data = add_dataset(session, *_data(), settings.data_dir, tenant="other")
        theirs = jobs_service.submit(
            session, JobCreate(dataset_id=theirs_data, **SOURCE), tenant="other"
        )
        session.commit()
    foreign = {**base, "init_from": {"job_id": theirs.id, "epoch": 1}}
    _refused(client, foreign, 404, ["body", "init_from", "job_id"])


def test_kept_checkpoints_go_with_the_job(
    client: TestClient, settings: Settings, engine: Engine
) -> None:
    dataset_id, source = _source(client, settings, keep_checkpoints="all")
    listed = client.get(f"/v1/jobs/{source}/checkpoints").json()
    assert [c["epoch"] for c in listed["items"] if c["kept"]] == [1, 2, 3, 4, 5]
    assert listed["used_bytes"] == sum(c["size_bytes"] for c in listed["items"] if c["kept"])
    branch = _submit(
        client, dataset_id=dataset_id, **SOURCE, init_from={"job_id": source, "epoch": 1}
    )
    client.post(f"/v1/jobs/{branch['id']}/cancel")
    assert client.delete(f"/v1/jobs/{source}").status_code == 204
    with session_factory(engine)() as session:
        assert session.scalar(select(func.count()).select_from(JobKeptCheckpoint)) == 0
        # The branch's own copy of its start stays until the branch goes.
        assert session.scalar(select(func.count()).select_from(JobStart)) == 1
    assert client.delete(f"/v1/jobs/{branch['id']}").status_code == 204
    with session_factory(engine)() as session:
        assert session.scalar(select(func.count()).select_from(JobStart)) == 0


def test_the_checkpoint_budget_is_held_at_submit_and_at_run_time(
    settings: Settings,
) -> None:
    # Room for three checkpoints of this job (about 4 kB each; 5 kB as predicted).
    tight = settings.model_copy(update={"checkpoint_budget_bytes": 13_000})
    with TestClient(create_app(tight)) as client:
        dataset_id = _upload(client)
        problem = assert_problem(
            client.post(
                "/v1/jobs", json={"dataset_id": dataset_id, **SOURCE, "keep_checkpoints": "all"}
            ),
            422,
        )
        assert locs(problem) == [["body", "keep_checkpoints"]]
        assert "BATCHWISE_CHECKPOINT_BUDGET_BYTES" in problem["detail"]
        # Two jobs of two each fit at submit, one after the other; the worker finds it full.
        first = _submit(client, dataset_id=dataset_id, **SOURCE, keep_checkpoints=[1, 2])
        second = _submit(client, dataset_id=dataset_id, **SOURCE, keep_checkpoints=[1, 2])
        _drain(tight)
        kept = client.get(f"/v1/jobs/{first['id']}/checkpoints").json()["items"]
        assert [(c["epoch"], c["kept"]) for c in kept if c["epoch"] < 3] == [(1, True), (2, True)]
        late = client.get(f"/v1/jobs/{second['id']}/checkpoints").json()
        assert [(c["epoch"], c["kept"]) for c in late["items"] if c["epoch"] < 3] == [
            (1, True),
            (2, False),
        ]
        assert "not kept: the tenant's checkpoint budget" in late["items"][1]["note"]
        assert late["used_bytes"] <= 13_000
        # An epoch that was not kept cannot start a warm start.
        body = {
            "dataset_id": dataset_id,
            **SOURCE,
            "init_from": {"job_id": second["id"], "epoch": 2},
        }
        _refused(client, body, 422, ["body", "init_from", "epoch"])


def test_the_warmup_follows_its_points_through_the_service(
    client: TestClient, settings: Settings
) -> None:
    dataset_id = _upload(client)
    points = [[0, 8], [100, 16], [500, 64]]
    body = {
        **SOURCE,
        "batch_size_schedule": {"kind": "warmup", "points": points},
        "lr_scaling": "sqrt",
        "reference_batch_size": 8,
        "lr_schedule": {"kind": "constant"},
        "epochs": 3,
    }
    job = _submit(client, dataset_id=dataset_id, **body)
    assert job["config"]["batch_size_schedule"]["points"] == points
    _drain(settings)
    changes = _history(client, job["id"])["batch_size_changes"]
    # 240 training rows: 100 → 104 (13 steps of 8); 500 → 240 + 256 = 496 < 500 → 512.
    assert [(c["epoch"], c["samples"], c["batch_size"]) for c in changes] == [
        (1, 0, 8),
        (1, 104, 16),
        (3, 512, 64),
    ]
    for change in changes:
        assert change["learning_rate"] == pytest.approx(0.05 * (change["batch_size"] / 8) ** 0.5)
    assert "the warmup point [500, 64]" in changes[2]["reason"]


@pytest.mark.parametrize(
    ("schedule", "loc"),
    [
        ({"kind": "warmup"}, ["body", "batch_size_schedule"]),
        (
            {"kind": "warmup", "points": [[0, 8], [0, 16]]},
            ["body", "batch_size_schedule", "points", 1],
        ),
        ({"kind": "warmup", "points": [[0, 500]]}, ["body", "batch_size_schedule", "points", 0]),
        ({"kind": "constant", "points": [[0, 8]]}, ["body", "batch_size_schedule", "points"]),
    ],
)
def test_bad_warmups_are_refused_naming_the_field(
    client: TestClient, schedule: dict[str, Any], loc: list[Any]
) -> None:
    dataset_id = _upload(client)
    body = {"dataset_id": dataset_id, **SOURCE, "batch_size_schedule": schedule}
    _refused(client, body, 422, loc)


def test_the_probes_read_and_add_checkpoints_through_the_jobs_package(
    client: TestClient, settings: Settings, engine: Engine
) -> None:
    dataset_id, source = _source(client, settings)
    with session_factory(engine)() as session:
        at_3 = checkpoints.checkpoint_at(session, source, 3, tenant="default")
        assert at_3 is not None
        assert (at_3.kept, at_3.latest, at_3.samples_seen) == (True, False, 720)
        latest = checkpoints.checkpoint_at(session, source, 5, tenant="default")
        assert latest is not None
        assert latest.latest
        assert checkpoints.checkpoint_at(session, source, 4, tenant="default") is None
        with pytest.raises(NotFound):
            checkpoints.checkpoint_at(session, source, 3, tenant="other")
    # A queued job keeps more once asked: what a probe on a running job does.
    queued = _submit(client, dataset_id=dataset_id, **SOURCE, keep_checkpoints=[1])
    with session_factory(engine)() as session:
        checkpoints.keep_more(session, queued["id"], [4, 1, 2], tenant="default")
        session.commit()
        with pytest.raises(NotFound):
            checkpoints.keep_more(session, queued["id"], [3], tenant="other")
    assert client.get(f"/v1/jobs/{queued['id']}").json()["keep_checkpoints"] == [1, 2, 4]
    _drain(settings)
    listed = client.get(f"/v1/jobs/{queued['id']}/checkpoints").json()["items"]
    assert [c["epoch"] for c in listed if c["kept"]] == [1, 2, 4]
