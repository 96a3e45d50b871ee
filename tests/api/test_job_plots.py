"""``GET /v1/jobs/{id}/plots/loss.svg|png`` through the real app on both databases. A worker's
writes are stood in for by rows written through the tables (``tests.jobs.factories``)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from service.api import create_app
from service.config import Settings
from service.db import session_factory
from service.plots import LOSS_PLOT_MAX_STEPS
from tests.support.factories import epoch_row, line_data, run_like_a_worker, set_job
from tests.support.images import markers, path_vertices, png_size, svg_group, svg_ids, svg_root
from tests.support.problems import assert_problem


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as client:
        yield client


def new_job(client: TestClient, **config: Any) -> tuple[str, np.ndarray, np.ndarray]:
    X, y = line_data(120)
    response = client.post("/v1/datasets", json={"name": "d", "X": X.tolist(), "y": y.tolist()})
    assert response.status_code == 201, response.text
    body = {"dataset_id": response.json()["id"], **config}
    response = client.post("/v1/jobs", json=body)
    assert response.status_code == 202, response.text
    return response.json()["id"], X, y


def test_a_trained_job_plots_as_svg_and_png(client: TestClient, engine: Engine) -> None:
    job_id, X, y = new_job(
        client, batch_size=16, epochs=4, learning_rate=0.05, validation_split=0.25
    )
    with session_factory(engine)() as session:
        run_like_a_worker(session, job_id, X, y)
        session.commit()

    response = client.get(f"/v1/jobs/{job_id}/plots/loss.svg")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/svg+xml"
    assert response.headers["cache-control"] == "no-cache"
    root = svg_root(response.content)
    assert {"train_loss", "val_loss", "step_loss"} <= svg_ids(response.content)
    train, val, steps = (svg_group(root, g) for g in ("train_loss", "val_loss", "step_loss"))
    assert train is not None
    assert val is not None
    assert steps is not None
    assert len(markers(train)) == 4
    assert len(markers(val)) == 4
    # 90 training rows at batch 16: 6 steps per epoch, every one drawn.
    assert len(path_vertices(steps)) == 4 * 6
    assert client.get(f"/v1/jobs/{job_id}/plots/loss.svg").content == response.content

    png = client.get(f"/v1/jobs/{job_id}/plots/loss.png")
    assert png.status_code == 200
    assert png.headers["content-type"] == "image/png"
    assert png_size(png.content) == (1200, 750)


def test_a_running_job_plots_its_epochs_so_far_with_downsampled_steps(
    client: TestClient, engine: Engine
) -> None:
    job_id, _, _ = new_job(client, batch_size=32, epochs=5)
    losses = np.linspace(2.0, 1.0, 3000).astype("<f4")
    with session_factory(engine)() as session:
        set_job(session, job_id, status="running", attempt=1, epoch=2)
        session.add(epoch_row(job_id, 1, losses[:1500]))
        session.add(epoch_row(job_id, 2, losses[1500:]))
        session.commit()

    svg = client.get(f"/v1/jobs/{job_id}/plots/loss.svg").content
    ids = svg_ids(svg)
    assert "val_loss" not in ids  # the rows carry no validation loss
    train, steps = svg_group(svg, "train_loss"), svg_group(svg, "step_loss")
    assert train is not None
    assert steps is not None
    epoch_x = [x for x, _ in markers(train)]
    step_x = [x for x, _ in path_vertices(steps)]
    assert len(step_x) <= LOSS_PLOT_MAX_STEPS
    # Min/max downsampling keeps the first and the last step: the last sits on epoch 2.
    assert step_x[-1] == pytest.approx(epoch_x[1], abs=1e-3)
    assert epoch_x[0] - step_x[0] == pytest.approx((epoch_x[1] - epoch_x[0]) * 1499 / 1500)


def test_before_the_first_epoch_the_plot_is_409(client: TestClient) -> None:
    job_id, _, _ = new_job(client, batch_size=32)
    for fmt in ("svg", "png"):
        problem = assert_problem(client.get(f"/v1/jobs/{job_id}/plots/loss.{fmt}"), 409)
        assert "no epochs recorded yet" in problem["detail"]
        assert job_id in problem["detail"]


def test_an_unknown_job_is_404(client: TestClient) -> None:
    problem = assert_problem(client.get("/v1/jobs/no-such-job/plots/loss.png"), 404)
    assert "no-such-job" in problem["detail"]


def test_an_unknown_extension_is_422_naming_svg_and_png(client: TestClient) -> None:
    job_id, _, _ = new_job(client, batch_size=32)
    problem = assert_problem(client.get(f"/v1/jobs/{job_id}/plots/loss.jpg"), 422)
    assert problem["errors"][0]["loc"] == ["path", "fmt"]
    assert "'svg'" in problem["errors"][0]["msg"]
    assert "'png'" in problem["errors"][0]["msg"]
    assert_problem(client.get(f"/v1/jobs/{job_id}/plots/accuracy.svg"), 404)
