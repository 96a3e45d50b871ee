"""``/v1/jobs`` through the real app and a real database (both backends). A worker's writes are
stood in for by rows written directly through the tables (``tests.jobs.factories``)."""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from service.api import create_app
from service.config import Settings
from service.core import FittedModel
from service.db import Job, session_factory
from tests.support.factories import binary_data, epoch_row, line_data, run_like_a_worker, set_job
from tests.support.problems import assert_problem, locs


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as client:
        yield client


def worker_session(engine: Engine) -> Session:
    """A session standing in for a worker: it commits its own writes."""
    return session_factory(engine)()


def upload(client: TestClient, X: np.ndarray, y: np.ndarray) -> str:
    response = client.post("/v1/datasets", json={"name": "d", "X": X.tolist(), "y": y.tolist()})
    assert response.status_code == 201, response.text
    dataset_id: str = response.json()["id"]
    return dataset_id


def post_job(client: TestClient, **body: Any) -> dict[str, Any]:
    response = client.post("/v1/jobs", json=body)
    assert response.status_code == 202, response.text
    job: dict[str, Any] = response.json()
    return job


def test_submit_answers_202_with_location_links_and_the_resolved_config(
    client: TestClient,
) -> None:
    dataset_id = upload(client, *line_data(200))
    response = client.post("/v1/jobs", json={"dataset_id": dataset_id, "batch_size": 32})
    assert response.status_code == 202
    job = response.json()
    assert response.headers["location"] == f"/v1/jobs/{job['id']}"
    assert job["status"] == "queued"
    assert job["config"]["optimizer"] == "sgd"
    assert job["config"]["learning_rate"] == 0.01
    assert job["config"]["lr_schedule"] == {
        "kind": "constant",
        "step_size": 1,
        "gamma": 0.1,
        "min_lr": 0.0,
        "warmup_epochs": 0,
    }
    assert set(job["links"]) >= {"self", "history", "model", "cancel"}
    assert job["links"]["history"] == f"/v1/jobs/{job['id']}/history"
    # The resolved config posts back as it is.
    again = post_job(client, dataset_id=dataset_id, **job["config"])
    assert again["config"] == job["config"]
    assert client.get(job["links"]["self"]).json()["id"] == job["id"]


def test_seed_example_configs_are_accepted(client: TestClient) -> None:
    dataset_id = upload(client, *line_data(200))
    small = post_job(client, dataset_id=dataset_id, batch_size=32, epochs=10)
    large = post_job(client, dataset_id=dataset_id, batch_size=128, epochs=5)
    assert (small["config"]["batch_size"], small["progress"]["epochs"]) == (32, 10)
    assert (large["config"]["batch_size"], large["progress"]["epochs"]) == (128, 5)


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({"batch_size": 201}, ["body", "batch_size"]),
        ({"model": "softmax"}, ["body", "model"]),
        ({"optimizer": "adagrad"}, ["body", "optimizer"]),
        ({"lr_schedule": {"kind": "step", "gamma": 1.5}}, ["body", "lr_schedule", "gamma"]),
        ({"lr_schedule": {"kind": "zigzag"}}, ["body", "lr_schedule", "kind"]),
        (
            {"batch_size_schedule": {"kind": "grow", "factor": 1}},
            ["body", "batch_size_schedule", "factor"],
        ),
        ({"epochs": 0}, ["body", "epochs"]),
        ({"learning_rate": -1}, ["body", "learning_rate"]),
        ({"optimiser": "sgd"}, ["body", "optimiser"]),
        ({"batch_size": True}, ["body", "batch_size"]),
        ({"epochs": "3"}, ["body", "epochs"]),
        ({"shuffle": "yes"}, ["body", "shuffle"]),
        ({"validation_split": 1.0}, ["body", "validation_split"]),
        ({"tags": [""]}, ["body", "tags", 0]),
    ],
)
def test_submit_refuses_what_cannot_run_with_422_naming_the_field(
    client: TestClient, engine: Engine, body: dict[str, Any], loc: list[Any]
) -> None:
    dataset_id = upload(client, *line_data(200))
    problem = assert_problem(client.post("/v1/jobs", json={"dataset_id": dataset_id, **body}), 422)
    assert loc in locs(problem)
    with engine.connect() as connection:
        assert connection.scalar(select(func.count()).select_from(Job)) == 0


def test_submit_refuses_nan_learning_rate(client: TestClient) -> None:
    dataset_id = upload(client, *line_data(20))
    raw = f'{{"dataset_id": "{dataset_id}", "learning_rate": NaN}}'
    response = client.post("/v1/jobs", content=raw, headers={"content-type": "application/json"})
    assert ["body", "learning_rate"] in locs(assert_problem(response, 422))


def test_submit_to_unknown_dataset_is_404(client: TestClient) -> None:
    assert_problem(client.post("/v1/jobs", json={"dataset_id": "nope"}), 404)


def test_missing_dataset_id_is_422(client: TestClient) -> None:
    assert ["body", "dataset_id"] in locs(assert_problem(client.post("/v1/jobs", json={}), 422))


def test_unknown_job_is_404_on_every_route(client: TestClient) -> None:
    for method, path, body in [
        ("GET", "/v1/jobs/nope", None),
        ("POST", "/v1/jobs/nope/cancel", None),
        ("DELETE", "/v1/jobs/nope", None),
        ("GET", "/v1/jobs/nope/history", None),
        ("GET", "/v1/jobs/nope/history.csv", None),
        ("GET", "/v1/jobs/nope/history?format=csv", None),
        ("GET", "/v1/jobs/nope/model", None),
        ("GET", "/v1/jobs/nope/model.npz", None),
        ("GET", "/v1/jobs/nope/model?format=npz", None),
        ("POST", "/v1/jobs/nope/predict", {"X": [[1.0]]}),
    ]:
        assert_problem(client.request(method, path, json=body), 404)


def test_list_filters_paginates_and_refuses_bad_queries(client: TestClient, engine: Engine) -> None:
    a = upload(client, *line_data(50))
    b = upload(client, *line_data(50))
    ids = [post_job(client, dataset_id=a, tags=["fast"] if i % 2 else [])["id"] for i in range(4)]
    ids.append(post_job(client, dataset_id=b, tags=["fast"])["id"])
    with worker_session(engine) as session:
        set_job(session, ids[0], status="running")
        session.commit()

    walked: list[str] = []
    url = "/v1/jobs?limit=2"
    while True:
        page = client.get(url).json()
        walked += [job["id"] for job in page["items"]]
        if page["next_cursor"] is None:
            break
        url = f"/v1/jobs?limit=2&cursor={page['next_cursor']}"
    assert sorted(walked) == sorted(ids)
    created = [client.get(f"/v1/jobs/{i}").json()["created_at"] for i in walked]
    assert created == sorted(created, reverse=True)

    def ids_of(query: str) -> set[str]:
        response = client.get(f"/v1/jobs?{query}")
        assert response.status_code == 200, response.text
        return {job["id"] for job in response.json()["items"]}

    assert ids_of("tag=fast") == {ids[1], ids[3], ids[4]}
    assert ids_of(f"dataset_id={b}") == {ids[4]}
    assert ids_of("status=running") == {ids[0]}
    assert ids_of(f"status=queued&tag=fast&dataset_id={a}") == {ids[1], ids[3]}
    assert_problem(client.get("/v1/jobs?status=sleeping"), 422)
    assert_problem(client.get("/v1/jobs?limit=0"), 422)
    assert_problem(client.get("/v1/jobs?cursor=garbage"), 400)


def test_cancel_queued_running_and_finished(client: TestClient, engine: Engine) -> None:
    dataset_id = upload(client, *line_data(50))
    queued, running = (post_job(client, dataset_id=dataset_id)["id"] for _ in range(2))
    with worker_session(engine) as session:
        set_job(session, running, status="running", attempt=1, worker_id="w")
        session.commit()

    response = client.post(f"/v1/jobs/{queued}/cancel")
    assert response.status_code == 200
    assert response.json()["status"] == "cancelled"
    assert client.get(f"/v1/jobs/{queued}").json()["status"] == "cancelled"

    response = client.post(f"/v1/jobs/{running}/cancel")
    assert response.status_code == 202
    assert response.json()["cancel_requested"] is True
    with engine.connect() as connection:
        flag = connection.scalar(select(Job.cancel_requested).where(Job.id == running))
    assert flag is True

    assert_problem(client.post(f"/v1/jobs/{queued}/cancel"), 409)


def test_delete_finished_only(client: TestClient, engine: Engine) -> None:
    dataset_id = upload(client, *line_data(50))
    job_id = post_job(client, dataset_id=dataset_id)["id"]
    assert_problem(client.delete(f"/v1/jobs/{job_id}"), 409)
    assert_problem(client.delete(f"/v1/datasets/{dataset_id}"), 409)  # in use
    assert client.post(f"/v1/jobs/{job_id}/cancel").status_code == 200
    response = client.delete(f"/v1/jobs/{job_id}")
    assert response.status_code == 204
    assert response.content == b""
    assert_problem(client.get(f"/v1/jobs/{job_id}"), 404)
    assert client.delete(f"/v1/datasets/{dataset_id}").status_code == 204


def test_history_while_running_json_and_csv(client: TestClient, engine: Engine) -> None:
    dataset_id = upload(client, *line_data(50))
    job_id = post_job(client, dataset_id=dataset_id, epochs=3)["id"]
    empty = client.get(f"/v1/jobs/{job_id}/history").json()
    assert empty["epoch"] == []
    assert empty["steps"] == {"step": [], "loss": []}

    losses = np.linspace(2.0, 1.0, 10_000).astype("<f4")
    losses[4321] = 50.0
    with worker_session(engine) as session:
        set_job(session, job_id, status="running", epoch=1, step=7, steps_per_epoch=10_000)
        session.add(epoch_row(job_id, 1, losses, val_rmse=1.25, val_r2=0.5))
        session.commit()

    history = client.get(f"/v1/jobs/{job_id}/history?max_points=100").json()
    assert history["status"] == "running"
    assert history["epoch"] == [1]
    assert history["val_rmse"] == [1.25]
    assert history["val_accuracy"] is None
    assert len(history["steps"]["step"]) <= 100
    assert history["downsampled"] is True
    assert 50.0 in history["steps"]["loss"]
    assert history["steps"]["step"][history["steps"]["loss"].index(50.0)] == 4322
    full = client.get(f"/v1/jobs/{job_id}/history").json()
    assert len(full["steps"]["loss"]) == 10_000
    assert_problem(client.get(f"/v1/jobs/{job_id}/history?max_points=1"), 422)
    assert_problem(client.get(f"/v1/jobs/{job_id}/history?format=xml"), 422)

    response = client.get(f"/v1/jobs/{job_id}/history.csv")
    assert response.status_code == 200
    assert response.headers["content-disposition"] == (
        f'attachment; filename="job-{job_id}-epochs.csv"'
    )
    # The form from before history.csv had its own operation answers the same bytes.
    assert client.get(f"/v1/jobs/{job_id}/history?format=csv").content == response.content
    assert response.headers["content-type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(response.text)))
    assert rows[0][:3] == ["epoch", "train_loss", "val_loss"]
    assert len(rows) == 2
    assert len(rows[1]) == len(rows[0])

    steps = client.get(f"/v1/jobs/{job_id}/history.csv?table=steps&max_points=100")
    old_form = client.get(f"/v1/jobs/{job_id}/history?format=csv&table=steps&max_points=100")
    assert old_form.content == steps.content
    assert_problem(client.get(f"/v1/jobs/{job_id}/history.csv?table=rows"), 422)
    rows = list(csv.reader(io.StringIO(steps.text)))
    assert rows[0] == ["step", "loss"]
    assert 2 <= len(rows) - 1 <= 100
    assert ["4322", "50.0"] in rows


def test_model_and_predict_after_success(client: TestClient, engine: Engine) -> None:
    X, y = binary_data(120)
    dataset_id = upload(client, X, y)
    job_id = post_job(
        client,
        dataset_id=dataset_id,
        model="logistic",
        epochs=20,
        learning_rate=0.5,
        standardize=True,
    )["id"]
    assert_problem(client.get(f"/v1/jobs/{job_id}/model"), 409)
    assert_problem(client.get(f"/v1/jobs/{job_id}/model.npz"), 409)
    assert_problem(client.get(f"/v1/jobs/{job_id}/model?format=npz"), 409)
    assert_problem(client.post(f"/v1/jobs/{job_id}/predict", json={"X": [[1.0, 1.0]]}), 409)

    with worker_session(engine) as session:
        run_like_a_worker(session, job_id, X, y)
        session.commit()
    job = client.get(f"/v1/jobs/{job_id}").json()
    assert job["status"] == "succeeded"
    assert job["progress"]["fraction"] == 1.0

    model = client.get(f"/v1/jobs/{job_id}/model").json()
    assert model["task"] == "binary"
    assert model["classes"] == [5.0, 7.0]
    assert model["feature_names"] == ["x0", "x1"]
    assert len(model["standardization"]["mean"]) == 2

    npz = client.get(f"/v1/jobs/{job_id}/model.npz")
    assert npz.status_code == 200
    assert client.get(f"/v1/jobs/{job_id}/model?format=npz").content == npz.content
    assert npz.headers["content-type"] == "application/octet-stream"
    assert "attachment" in npz.headers["content-disposition"]
    fitted = FittedModel.from_npz_bytes(npz.content)

    rows = [[2.0, 2.0], [-2.0, -2.0], [0.1, 0.3]]
    answer = client.post(f"/v1/jobs/{job_id}/predict", json={"X": rows}).json()
    assert answer["predictions"] == fitted.predict(np.array(rows)).tolist()
    assert answer["predictions"][:2] == [7.0, 5.0]
    assert np.allclose(answer["probabilities"], fitted.predict_proba(np.array(rows)))

    wrong = assert_problem(client.post(f"/v1/jobs/{job_id}/predict", json={"X": [[1.0]]}), 422)
    assert "must have 2 values" in wrong["detail"]
    assert locs(wrong) == [["body", "X", 0]]
    assert_problem(client.post(f"/v1/jobs/{job_id}/predict", json={"X": []}), 422)
    assert_problem(client.post(f"/v1/jobs/{job_id}/predict", json={"rows": [[1, 2]]}), 422)


def test_a_failed_job_serves_its_error_and_only_finite_numbers(
    client: TestClient, engine: Engine
) -> None:
    dataset_id = upload(client, *line_data(50))
    job_id = post_job(client, dataset_id=dataset_id)["id"]
    with worker_session(engine) as session:
        set_job(
            session,
            job_id,
            status="failed",
            error_code="diverged",
            error_message="training diverged at epoch 2, step 1: the loss is inf",
            latest_train_loss=0.5,
            best_train_loss=0.25,
        )
        session.add(epoch_row(job_id, 1, np.array([1.0, np.inf, np.nan, 0.5]), train_loss=0.75))
        session.commit()
    job = client.get(f"/v1/jobs/{job_id}").json()
    assert job["error"] == {
        "code": "diverged",
        "message": "training diverged at epoch 2, step 1: the loss is inf",
    }
    assert job["latest"]["train_loss"] == 0.5
    assert job["best"]["train_loss"] == 0.25
    response = client.get(f"/v1/jobs/{job_id}/history")
    body = json.loads(response.text, parse_constant=lambda c: pytest.fail(f"served {c}"))
    assert body["steps"] == {"step": [1, 4], "loss": [1.0, 0.5]}
    assert all(math.isfinite(v) for v in body["train_loss"])


def test_every_jobs_route_is_documented(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    paths = {p: ops for p, ops in schema["paths"].items() if p.startswith("/v1/jobs")}
    expected = {
        ("/v1/jobs", "post"),
        ("/v1/jobs", "get"),
        ("/v1/jobs/{job_id}", "get"),
        ("/v1/jobs/{job_id}", "delete"),
        ("/v1/jobs/{job_id}/cancel", "post"),
        ("/v1/jobs/{job_id}/history", "get"),
        ("/v1/jobs/{job_id}/history.csv", "get"),
        ("/v1/jobs/{job_id}/model", "get"),
        ("/v1/jobs/{job_id}/model.npz", "get"),
        ("/v1/jobs/{job_id}/predict", "post"),
        ("/v1/jobs/{job_id}/plots/loss.svg", "get"),
        ("/v1/jobs/{job_id}/plots/loss.png", "get"),
        ("/v1/jobs/{job_id}/checkpoints", "get"),
    }
    found = {(p, m) for p, ops in paths.items() for m in ops}
    assert found == expected
    for path, method in expected:
        operation = paths[path][method]
        assert operation["summary"]
        assert len(operation["description"]) > 40
        problems = [s for s in operation["responses"] if s[0] in "45"]
        assert problems, (path, method)
        for status in problems:
            assert "application/problem+json" in operation["responses"][status]["content"]
    examples = schema["paths"]["/v1/jobs"]["post"]["requestBody"]["content"]["application/json"]
    assert {"seed-32", "seed-128"} <= set(examples["examples"])
