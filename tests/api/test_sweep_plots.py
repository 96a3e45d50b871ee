"""``GET /v1/sweeps/{id}/plots/curves.svg|png`` and ``scaling.svg|png`` through the real app on
both databases. The points' results are written through the tables (``tests/support/sweeps``):
every point's loss is L(s) = exp(−s·ln 2 / c_B), so with the absolute target 0.5 it reaches the
target at exactly c_B steps, and c_B = S_min (1 + B_noise / B) is the fit's model exactly."""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from service.api import create_app
from service.config import Settings
from service.db import Job, session_factory
from service.sweeps.repository import jobs_of
from tests.support.factories import line_data
from tests.support.images import markers, path_vertices, png_size, svg_group, svg_ids, svg_root
from tests.support.problems import assert_problem
from tests.support.sweeps import EPOCHS, finish_with_crossing

BATCH_SIZES = [8, 16, 32, 64]
S_MIN, B_NOISE = 12.0, 16.0


def steps_to_target(batch_size: int) -> float:
    """c_B = S_min (1 + B_noise / B): 36, 24, 18 and 15 steps (all within the 40 written)."""
    return S_MIN * (1.0 + B_NOISE / batch_size)


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as client:
        yield client


def new_sweep(client: TestClient, **fields: Any) -> str:
    X, y = line_data(200)
    response = client.post("/v1/datasets", json={"name": "d", "X": X.tolist(), "y": y.tolist()})
    assert response.status_code == 201, response.text
    body = {
        "dataset_id": response.json()["id"],
        "base": {"epochs": EPOCHS},
        "batch_sizes": BATCH_SIZES,
        "learning_rates": [0.01],
        "target_loss": 0.5,
        **fields,
    }
    response = client.post("/v1/sweeps", json=body)
    assert response.status_code == 202, response.text
    sweep_id: str = response.json()["id"]
    return sweep_id


def finish(engine: Engine, sweep_id: str, *, only: list[tuple[int, int]] | None = None) -> None:
    """Write every point's results, or only those of the (batch size, seed) pairs given."""
    with session_factory(engine)() as session:
        for job in jobs_of(session, sweep_id):
            point = job.sweep_point or {}
            if only is None or (point["batch_size"], point["seed"]) in only:
                finish_with_crossing(session, job, steps_to_target(point["batch_size"]))
        session.commit()


def test_curves_overlay_every_batch_size_with_the_target(
    client: TestClient, engine: Engine
) -> None:
    sweep_id = new_sweep(client)
    finish(engine, sweep_id)

    response = client.get(f"/v1/sweeps/{sweep_id}/plots/curves.svg")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/svg+xml"
    assert response.headers["cache-control"] == "no-cache"
    root = svg_root(response.content)
    ids = svg_ids(response.content)
    assert {f"curve_B{b}" for b in BATCH_SIZES} | {"target"} <= ids
    assert not any(i.startswith("curve_B") and i.count("_") > 1 for i in ids)  # one seed each

    target = svg_group(root, "target")
    assert target is not None
    target_y = path_vertices(target)[0][1]
    for b in BATCH_SIZES:
        group = svg_group(root, f"curve_B{b}")
        assert group is not None
        vertices = path_vertices(group)
        # x = epoch: step 0 (the initial loss) and the 4 epoch ends, evenly spaced
        assert len(vertices) == EPOCHS + 1
        xs = [x for x, _ in vertices]
        gaps = [right - left for left, right in itertools.pairwise(xs)]
        assert gaps == pytest.approx([gaps[0]] * EPOCHS, abs=1e-3)
        # A linear loss axis (1.0 down to ≥ 0.46): the target 0.5 sits where the pixel
        # scale through the curve's first two points puts it.
        (_, y0), (_, y1) = vertices[0], vertices[1]
        loss1 = math.exp(-10 * math.log(2.0) / steps_to_target(b))
        per_unit = (y1 - y0) / (loss1 - 1.0)
        assert target_y == pytest.approx(y0 + (0.5 - 1.0) * per_unit, abs=0.05)
    assert client.get(f"/v1/sweeps/{sweep_id}/plots/curves.svg").content == response.content

    png = client.get(f"/v1/sweeps/{sweep_id}/plots/curves.png", params={"x": "time"})
    assert png.status_code == 200
    assert png.headers["content-type"] == "image/png"
    assert png_size(png.content) == (1200, 825)


@pytest.mark.parametrize("x", ["epoch", "step", "samples", "time"])
def test_every_x_axis_draws_the_same_curves(client: TestClient, engine: Engine, x: str) -> None:
    sweep_id = new_sweep(client)
    finish(engine, sweep_id)
    response = client.get(f"/v1/sweeps/{sweep_id}/plots/curves.svg", params={"x": x})
    assert response.status_code == 200, response.text
    group = svg_group(response.content, "curve_B8")
    assert group is not None
    # The helpers write steps, samples and time in proportion to the epoch: every axis is
    # linear here (positions 0 … 4 units), so the five points are evenly spaced on each.
    xs = [px for px, _ in path_vertices(group)]
    assert len(xs) == EPOCHS + 1
    assert xs[4] - xs[0] == pytest.approx(4 * (xs[1] - xs[0]), abs=1e-3)


def test_repeated_seeds_share_a_colour_and_a_partial_sweep_plots_what_it_has(
    client: TestClient, engine: Engine
) -> None:
    sweep_id = new_sweep(client, seeds=2)
    finish(engine, sweep_id, only=[(8, 0), (8, 1), (32, 0)])

    svg = client.get(f"/v1/sweeps/{sweep_id}/plots/curves.svg").content
    ids = {i for i in svg_ids(svg) if i.startswith("curve_")}
    assert ids == {"curve_B8", "curve_B8_2", "curve_B32"}

    scaling = client.get(f"/v1/sweeps/{sweep_id}/plots/scaling.svg")
    assert scaling.status_code == 200, scaling.text
    ids = svg_ids(scaling.content)
    # Two batch sizes reached the target: too few to fit, so no fit is drawn.
    assert not {"fit_steps", "band_steps", "b_noise_steps"} & ids
    points = svg_group(scaling.content, "points_steps")
    assert points is not None
    assert len(markers(points)) == 3  # one per run with an epoch: B=8 twice, B=32 once
    # The second seed of B=32 is queued: not "never reached", just not drawn.
    assert "unreached_steps" not in ids
    sweep = client.get(f"/v1/sweeps/{sweep_id}").json()
    assert sweep["fit"]["b_noise"] is None


def test_scaling_marks_the_points_the_fit_its_band_and_b_noise(
    client: TestClient, engine: Engine
) -> None:
    sweep_id = new_sweep(client)
    finish(engine, sweep_id)
    sweep = client.get(f"/v1/sweeps/{sweep_id}").json()
    fit = sweep["fit"]
    assert fit["b_noise"] == pytest.approx(B_NOISE, rel=1e-3)
    assert fit["s_min"] == pytest.approx(S_MIN, rel=1e-3)

    response = client.get(f"/v1/sweeps/{sweep_id}/plots/scaling.svg")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/svg+xml"
    root = svg_root(response.content)
    expected = {"points", "fit", "band", "b_noise"}
    assert {f"{g}_{kind}" for g in expected for kind in ("steps", "samples")} <= svg_ids(
        response.content
    )
    assert {"s_min", "e_min"} <= svg_ids(response.content)
    assert "unreached_steps" not in svg_ids(response.content)

    points = svg_group(root, "points_steps")
    assert points is not None
    (x8, y8), (x16, y16), (x32, y32), (x64, y64) = markers(points)
    # log-log: doublings of B evenly spaced; y gaps in the ratio of the log step ratios
    assert x16 - x8 == pytest.approx(x32 - x16, abs=1e-3)
    assert x64 - x32 == pytest.approx(x32 - x16, abs=1e-3)
    s = [steps_to_target(b) for b in BATCH_SIZES]
    assert (y16 - y8) / (y32 - y16) == pytest.approx(
        math.log(s[1] / s[0]) / math.log(s[2] / s[1]), rel=1e-3
    )
    assert y8 < y16 < y32 < y64  # SVG y points down: steps fall as B grows
    # B_noise = 16 is drawn through the B = 16 point
    knee = svg_group(root, "b_noise_steps")
    assert knee is not None
    assert path_vertices(knee)[0][0] == pytest.approx(x16, abs=0.1)

    samples = svg_group(root, "points_samples")
    assert samples is not None
    # the samples each run reports (the helpers write 8 samples per step whatever B is)
    e = [point["to_target"]["samples"] for point in sweep["points"]]
    assert e == pytest.approx([8 * c for c in s])
    sy = [y for _, y in markers(samples)]
    assert (sy[1] - sy[0]) / (sy[2] - sy[1]) == pytest.approx(
        math.log(e[1] / e[0]) / math.log(e[2] / e[1]), rel=1e-3
    )

    png = client.get(f"/v1/sweeps/{sweep_id}/plots/scaling.png")
    assert png.status_code == 200
    assert png.headers["content-type"] == "image/png"
    assert png_size(png.content) == (1200, 1050)


def test_a_run_that_never_reaches_the_target_is_an_open_marker(
    client: TestClient, engine: Engine
) -> None:
    sweep_id = new_sweep(client)
    with session_factory(engine)() as session:
        for job in jobs_of(session, sweep_id):
            b = (job.sweep_point or {})["batch_size"]
            # B = 64 halves its loss only after 80 steps: not within the 40 written
            finish_with_crossing(session, job, 80.0 if b == 64 else steps_to_target(b))
        session.commit()
    svg = client.get(f"/v1/sweeps/{sweep_id}/plots/scaling.svg").content
    unreached = svg_group(svg, "unreached_steps")
    reached = svg_group(svg, "points_steps")
    assert unreached is not None
    assert reached is not None
    assert len(markers(unreached)) == 1
    assert len(markers(reached)) == 3


def test_before_any_epoch_both_plots_are_409(client: TestClient) -> None:
    sweep_id = new_sweep(client)
    for name in ("curves", "scaling"):
        for fmt in ("svg", "png"):
            problem = assert_problem(client.get(f"/v1/sweeps/{sweep_id}/plots/{name}.{fmt}"), 409)
            assert "no epochs recorded yet" in problem["detail"]
            assert sweep_id in problem["detail"]


def test_a_failed_point_without_epochs_still_leaves_the_sweep_at_409(
    client: TestClient, engine: Engine
) -> None:
    sweep_id = new_sweep(client)
    with session_factory(engine)() as session:
        job = session.get(Job, jobs_of(session, sweep_id)[0].id)
        assert job is not None
        job.status, job.error_code, job.error_message = "failed", "diverged", "the loss is nan"
        session.commit()
    assert_problem(client.get(f"/v1/sweeps/{sweep_id}/plots/curves.svg"), 409)


def test_an_unknown_sweep_is_404(client: TestClient) -> None:
    for name in ("curves", "scaling"):
        problem = assert_problem(client.get(f"/v1/sweeps/no-such-sweep/plots/{name}.svg"), 404)
        assert "no-such-sweep" in problem["detail"]


def test_an_unknown_x_is_422_naming_the_accepted_values(client: TestClient, engine: Engine) -> None:
    sweep_id = new_sweep(client)
    finish(engine, sweep_id)
    problem = assert_problem(
        client.get(f"/v1/sweeps/{sweep_id}/plots/curves.svg", params={"x": "loss"}), 422
    )
    error = problem["errors"][0]
    assert error["loc"] == ["query", "x"]
    for accepted in ("'epoch'", "'step'", "'samples'", "'time'"):
        assert accepted in error["msg"]


def test_an_unknown_extension_or_plot_is_refused(client: TestClient) -> None:
    sweep_id = new_sweep(client)
    problem = assert_problem(client.get(f"/v1/sweeps/{sweep_id}/plots/scaling.pdf"), 422)
    assert problem["errors"][0]["loc"] == ["path", "fmt"]
    assert_problem(client.get(f"/v1/sweeps/{sweep_id}/plots/histogram.svg"), 404)
