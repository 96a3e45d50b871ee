"""``/v1/probes`` through the real app and a real database (both backends), with a real worker
in-process (``run_worker(burst=True)``: claim, train, finish, advance, until the queue is
empty) for the source job and the probe's branches."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from service.api import create_app
from service.config import Settings
from service.keys import DEFAULT_TENANT
from service.tenants import limits as tenant_limits
from service.worker.loop import EXIT_OK, run_worker
from service.worker.signals import StopFlag
from tests.support.factories import job_counts
from tests.support.problems import assert_problem
from tests.support.tenants import ALPHA, BETA, api, inline

SOURCE: dict[str, Any] = {
    "model": "linear",
    "batch_size": 4,
    "learning_rate": 0.01,
    "epochs": 4,
    "standardize": True,
    "noise_scale": True,
    "keep_checkpoints": [1, 2, 4],
}


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as client:
        yield client


def drain(settings: Settings) -> None:
    """Run every queued job (and every job they queue) with a real worker, in-process."""
    assert run_worker(settings, stop=StopFlag(), burst=True) == EXIT_OK


def source_job(client: TestClient, settings: Settings, rows: int = 256, **config: Any) -> str:
    dataset = client.post("/v1/datasets", json=inline(rows, 3))
    assert dataset.status_code == 201, dataset.text
    body = {"dataset_id": dataset.json()["id"], **SOURCE, **config}
    job = client.post("/v1/jobs", json=body)
    assert job.status_code == 202, job.text
    drain(settings)
    assert client.get(f"/v1/jobs/{job.json()['id']}").json()["status"] == "succeeded"
    job_id: str = job.json()["id"]
    return job_id


def test_a_probe_runs_end_to_end_and_reads_the_critical_batch(
    client: TestClient, settings: Settings
) -> None:
    job_id = source_job(client, settings)
    response = client.post(
        "/v1/probes",
        json={"job_id": job_id, "at_epochs": [1, 4], "multipliers": [1, 4, 16], "lr": "sqrt"},
    )
    assert response.status_code == 202, response.text
    probe = response.json()
    assert response.headers["location"] == f"/v1/probes/{probe['id']}"
    assert probe["status"] == "running"
    assert probe["window_samples"] == 256
    assert probe["jobs"] == job_counts(queued=6)
    branches = client.get("/v1/jobs", params={"tag": f"probe:{probe['id']}"}).json()["items"]
    assert len(branches) == 6
    assert {b["init_from"]["epoch"] for b in branches} == {1, 4}
    assert sorted(b["config"]["batch_size"] for b in branches) == [4, 4, 16, 16, 64, 64]

    drain(settings)
    probe = client.get(f"/v1/probes/{probe['id']}").json()
    assert probe["status"] == "succeeded", probe
    assert probe["partial"] is False
    assert probe["jobs"] == job_counts(succeeded=6)
    for checkpoint in probe["checkpoints"]:
        assert checkpoint["samples_seen"] == 256 * checkpoint["epoch"]
        assert checkpoint["batch_size"] == 4
        assert checkpoint["b_simple"] is not None
        critical = checkpoint["critical"]
        low, high = critical["multipliers"]
        assert low in (1, 4, 16)
        assert critical["batch_size"] == 4 * low
        assert critical["bracket"] == [4 * low, None if high is None else 4 * high]
        assert checkpoint["ratio"] == pytest.approx(critical["batch_size"] / checkpoint["b_simple"])
        by_k = {b["multiplier"]: b for b in checkpoint["branches"]}
        assert by_k[1]["relative_gap"] == 0.0
        assert by_k[4]["learning_rate"] == pytest.approx(0.02)  # 0.01 × √4
        for branch in by_k.values():
            assert branch["kept_up"] == (branch["relative_gap"] <= 0.01)
    svg = client.get(probe["links"]["plot"])
    assert svg.status_code == 200
    assert svg.headers["content-type"] == "image/svg+xml"
    assert b'id="critical"' in svg.content
    png = client.get(probe["links"]["plot"].replace(".svg", ".png"))
    assert png.content.startswith(b"\x89PNG")


def test_the_x1_branch_continues_the_source_bit_for_bit(
    client: TestClient, settings: Settings
) -> None:
    job_id = source_job(client, settings)
    probe = client.post(
        "/v1/probes",
        json={"job_id": job_id, "at_epochs": [2], "multipliers": [1, 2], "lr": "linear"},
    ).json()
    drain(settings)
    probe = client.get(f"/v1/probes/{probe['id']}").json()
    x1 = probe["checkpoints"][0]["branches"][0]
    branch = client.get(f"/v1/jobs/{x1['job_ids'][0]}/history").json()
    source = client.get(f"/v1/jobs/{job_id}/history").json()
    assert branch["epoch"] == [3]
    assert branch["train_loss"] == [source["train_loss"][2]]


def test_a_lr_search_brackets_each_branch(client: TestClient, settings: Settings) -> None:
    job_id = source_job(client, settings)
    probe = client.post(
        "/v1/probes",
        json={"job_id": job_id, "at_epochs": [2], "multipliers": [1, 8], "max_rounds": 4},
    ).json()
    assert probe["jobs"] == job_counts(queued=6)  # ÷4, ×1, ×4 the √k-scaled rate, per multiplier
    drain(settings)
    probe = client.get(f"/v1/probes/{probe['id']}").json()
    assert probe["status"] == "succeeded"
    assert probe["round"] >= 1
    for branch in probe["checkpoints"][0]["branches"]:
        rates = branch["learning_rates_tried"]
        assert len(rates) >= 4
        assert min(rates) < branch["learning_rate"] < max(rates) or branch["lr_edge"]


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({"at_epochs": [3]}, ["body", "at_epochs", 0]),
        ({"at_epochs": [1, 1]}, ["body", "at_epochs", 1]),
        ({"at_epochs": [9]}, ["body", "at_epochs", 0]),
        ({"at_epochs": "auto"}, ["body", "at_epochs"]),
        ({"at_epochs": [1], "multipliers": [2, 2]}, ["body", "multipliers", 1]),
        ({"at_epochs": [1], "multipliers": [1, 128]}, ["body", "multipliers", 1]),
        ({"at_epochs": [1], "tolerance": 1.5}, ["body", "tolerance"]),
        ({"at_epochs": [1], "lr": "cubic"}, ["body", "lr"]),
        ({"at_epochs": [1], "loss_on": "validation"}, ["body", "loss_on"]),
        ({"at_epochs": [1], "seeds": 0}, ["body", "seeds"]),
    ],
)
def test_invalid_bodies_are_422_problems_naming_the_field(
    client: TestClient, settings: Settings, body: dict[str, Any], loc: list[Any]
) -> None:
    job_id = source_job(client, settings)
    problem = assert_problem(client.post("/v1/probes", json={"job_id": job_id, **body}), 422)
    assert problem["errors"][0]["loc"] == loc
    assert client.get("/v1/probes").json()["items"] == []


def test_a_checkpoint_the_source_did_not_keep_names_the_fix(
    client: TestClient, settings: Settings
) -> None:
    job_id = source_job(client, settings)
    problem = assert_problem(client.post("/v1/probes", json={"job_id": job_id}), 422)
    message = problem["errors"][0]["msg"]
    assert "[1, 2, 4]" in message  # the epochs it has
    assert "keep_checkpoints" in message


def test_unknown_queued_and_full_batch_sources_are_refused(
    client: TestClient, settings: Settings
) -> None:
    assert_problem(client.post("/v1/probes", json={"job_id": "nope"}), 404)
    assert_problem(client.get("/v1/probes/nope"), 404)
    assert_problem(client.post("/v1/probes/nope/cancel"), 404)
    assert_problem(client.get("/v1/probes/nope/plots/critical.svg"), 404)
    assert_problem(client.get("/v1/probes", params={"cursor": "garbage"}), 400)
    dataset = client.post("/v1/datasets", json=inline(64, 3)).json()["id"]
    queued = client.post("/v1/jobs", json={"dataset_id": dataset, **SOURCE}).json()["id"]
    assert_problem(client.post("/v1/probes", json={"job_id": queued}), 409)
    full = client.post("/v1/jobs", json={"dataset_id": dataset, "batch_size": None}).json()["id"]
    drain(settings)
    problem = assert_problem(client.post("/v1/probes", json={"job_id": full}), 422)
    assert problem["errors"][0]["loc"] == ["body", "job_id"]


def test_cancel_and_listing(client: TestClient, settings: Settings) -> None:
    job_id = source_job(client, settings)
    ids = []
    for _ in range(3):
        response = client.post(
            "/v1/probes", json={"job_id": job_id, "at_epochs": [1], "lr": "sqrt"}
        )
        assert response.status_code == 202, response.text
        ids.append(response.json()["id"])
    first = client.get("/v1/probes", params={"limit": 2}).json()
    assert [p["id"] for p in first["items"]] == ids[::-1][:2]
    second = client.get("/v1/probes", params={"limit": 2, "cursor": first["next_cursor"]}).json()
    assert [p["id"] for p in second["items"]] == [ids[0]]
    assert second["next_cursor"] is None

    cancelled = client.post(f"/v1/probes/{ids[0]}/cancel")
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "cancelled"
    counts = cancelled.json()["jobs"]
    assert {status for status, count in counts.items() if count} == {"cancelled"}
    assert_problem(client.post(f"/v1/probes/{ids[0]}/cancel"), 409)


def test_another_tenants_probe_is_404(settings: Settings, engine: Engine) -> None:
    with api(settings, engine) as tenants:
        dataset = tenants.dataset(ALPHA, n_rows=128)
        job = tenants.job(ALPHA, dataset, **SOURCE)
        drain(settings)
        assert_problem(tenants.post(BETA, "/v1/probes", json={"job_id": job["id"]}), 404)
        body = {"job_id": job["id"], "at_epochs": [1], "lr": "sqrt", "multipliers": [2]}
        response = tenants.post(ALPHA, "/v1/probes", json=body)
        assert response.status_code == 202, response.text
        probe_id = response.json()["id"]
        assert_problem(tenants.get(BETA, f"/v1/probes/{probe_id}"), 404)
        assert_problem(tenants.post(BETA, f"/v1/probes/{probe_id}/cancel"), 404)
        assert_problem(tenants.get(BETA, f"/v1/probes/{probe_id}/plots/critical.svg"), 404)
        assert tenants.get(BETA, "/v1/probes").json()["items"] == []
        assert [p["id"] for p in tenants.get(ALPHA, "/v1/probes").json()["items"]] == [probe_id]
        branches = tenants.get(ALPHA, "/v1/jobs", params={"tag": f"probe:{probe_id}"}).json()
        assert len(branches["items"]) == 2  # ×1 (always) and ×2


def test_a_job_follows_the_warmup_a_finished_probe_measured(
    client: TestClient, settings: Settings
) -> None:
    job_id = source_job(client, settings)
    body = {"job_id": job_id, "at_epochs": [1, 2, 4], "multipliers": [1, 2, 4, 8], "lr": "sqrt"}
    probe = client.post("/v1/probes", json=body).json()
    dataset_id = probe["dataset_id"]
    warmup = {"kind": "warmup", "probe_id": probe["id"]}
    running = assert_problem(
        client.post("/v1/jobs", json={"dataset_id": dataset_id, "batch_size_schedule": warmup}),
        422,
    )
    assert running["errors"][0]["loc"] == ["body", "batch_size_schedule", "probe_id"]
    assert "still running" in running["errors"][0]["msg"]
    unknown = {"kind": "warmup", "probe_id": "nope"}
    assert_problem(
        client.post("/v1/jobs", json={"dataset_id": dataset_id, "batch_size_schedule": unknown}),
        404,
    )

    drain(settings)
    probe = client.get(f"/v1/probes/{probe['id']}").json()
    measured = [(c["samples_seen"], c["critical"]["batch_size"]) for c in probe["checkpoints"]]
    job = client.post(
        "/v1/jobs",
        json={"dataset_id": dataset_id, "batch_size": 4, "batch_size_schedule": warmup},
    )
    assert job.status_code == 202, job.text
    points = job.json()["config"]["batch_size_schedule"]["points"]
    # Starts at the first critical batch rounded down to 4 × 2^j; then doubles only where a
    # checkpoint measured a critical batch of at least twice the batch in force.
    first = measured[0][1]
    assert points[0] == [0, max(b for b in (4, 8, 16, 32) if b <= first)]
    for (samples, batch), (_, before) in zip(points[1:], points, strict=False):
        critical = dict(measured)[samples]
        assert batch >= 2 * before
        assert batch <= critical


def test_a_window_shorter_than_an_epoch_is_read_between_evaluations(
    client: TestClient, settings: Settings
) -> None:
    job_id = source_job(client, settings)
    body = {"job_id": job_id, "at_epochs": [2], "multipliers": [1, 2], "lr": "sqrt"}
    probe = client.post("/v1/probes", json=body | {"window_samples": 100}).json()
    branches = client.get("/v1/jobs", params={"tag": f"probe:{probe['id']}"}).json()["items"]
    assert {b["config"]["evaluation"]["per_decade"] for b in branches} == {64}
    assert {b["config"]["epochs"] for b in branches} == {3}  # one epoch covers 100 samples
    drain(settings)
    checkpoint = client.get(f"/v1/probes/{probe['id']}").json()["checkpoints"][0]
    x1 = checkpoint["branches"][0]
    history = client.get(f"/v1/jobs/{x1['job_ids'][0]}/history").json()
    evaluations = list(
        zip(history["evaluations"]["samples"], history["evaluations"]["loss"], strict=True)
    )
    target = checkpoint["samples_seen"] + 100
    below = max((e for e in evaluations if e[0] <= target), default=None)
    above = min((e for e in evaluations if e[0] >= target), default=None)
    assert below is not None
    assert above is not None
    assert above[0] - below[0] < 40  # log-spaced evaluations close around the window's end
    low, high = sorted((below[1], above[1]))
    assert low <= x1["loss"] <= high


def test_auto_branches_log_spaced_epochs_the_source_kept(
    client: TestClient, settings: Settings
) -> None:
    job_id = source_job(client, settings, keep_checkpoints="all")
    response = client.post("/v1/probes", json={"job_id": job_id, "lr": "linear"})
    assert response.status_code == 202, response.text
    probe = response.json()
    assert probe["at_epochs"] == [1, 2, 3, 4]  # about 6 log-spaced points of 4 epochs
    # One-epoch window of 256 rows at batch 4: multipliers while k·4·32 ≤ 256.
    assert probe["multipliers"] == [1, 2]
    assert probe["jobs"] == job_counts(queued=8)


def test_a_probe_follows_its_tenants_own_runtime_limit(
    client: TestClient, settings: Settings, engine: Engine
) -> None:
    """Its branches get the tenant's own limit, not the default, which would be refused."""
    job_id = source_job(client, settings)
    with Session(engine) as session, session.begin():
        tenant_limits.set_limits(session, DEFAULT_TENANT, {"max_job_runtime_s": 3600.0})
    response = client.post(
        "/v1/probes", json={"job_id": job_id, "at_epochs": [1], "multipliers": [1, 2], "lr": "sqrt"}
    )
    assert response.status_code == 202, response.text
    branches = client.get("/v1/jobs", params={"tag": f"probe:{response.json()['id']}"})
    assert [job["max_runtime_s"] for job in branches.json()["items"]] == [3600.0, 3600.0]
