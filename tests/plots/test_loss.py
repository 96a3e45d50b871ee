"""A job's loss plot: step positions on the epoch axis, steps per epoch, and the rendered
SVG/PNG (series present, geometry, log axis, deterministic bytes)."""

from __future__ import annotations

import itertools
import math
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from service.plots import LossHistory, epoch_positions, render_job_loss, steps_per_epoch
from tests.support.images import markers, path_vertices, png_size, svg_group, svg_ids, svg_root


def history(**overrides: object) -> LossHistory:
    """Three epochs of 4, 4 and 2 steps (the batch grew), with validation."""
    step_loss = [2.0, 1.8, 1.5, 1.4, 1.2, 1.1, 1.0, 0.95, 0.9, 0.85]
    values: dict[str, object] = {
        "epoch": [1, 2, 3],
        "train_loss": [1.675, 1.0625, 0.875],
        "val_loss": [1.7, 1.1, 0.9],
        "steps_per_epoch": [4, 4, 2],
        "step": list(range(1, 11)),
        "step_loss": step_loss,
    }
    values.update(overrides)
    return LossHistory(**values)  # type: ignore[arg-type]


def test_step_k_of_epoch_e_sits_at_e_minus_one_plus_k_over_its_steps() -> None:
    x = epoch_positions([1, 2, 3, 4, 5, 6], [1, 2], [4, 2])
    assert x.tolist() == [0.25, 0.5, 0.75, 1.0, 1.5, 2.0]


def test_steps_outside_the_epochs_get_nan_and_empty_epochs_are_skipped() -> None:
    x = epoch_positions([0, 1, 2, 3, 4, 5], [1, 2, 3], [2, 0, 2])
    assert np.isnan(x[0])
    assert np.isnan(x[5])
    assert x[1:5].tolist() == [0.5, 1.0, 2.5, 3.0]
    assert np.isnan(epoch_positions([1, 2], [], [])).all()


def test_steps_per_epoch_is_the_ceiling_of_new_samples_over_the_batch_size() -> None:
    # 100 rows: batch 32 → 3 full steps and a partial one; then batch 64 on 64 samples.
    assert steps_per_epoch([100, 200, 264], [32, 32, 64], total_steps=9) == [4, 4, 1]


def test_steps_per_epoch_spreads_evenly_when_the_counts_do_not_add_up() -> None:
    assert steps_per_epoch([100, 200, 264], [32, 32, 64], total_steps=10) == [3, 3, 4]
    assert steps_per_epoch([100, 200], [0, 32], total_steps=8) == [4, 4]
    assert steps_per_epoch([], [], total_steps=0) == []
    with pytest.raises(ValueError, match="samples_seen has 2 values, batch_size has 1"):
        steps_per_epoch([100, 200], [32], total_steps=8)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"epoch": [], "train_loss": [], "val_loss": [], "steps_per_epoch": []}, "no epochs"),
        ({"train_loss": [1.0]}, "train_loss has 1 values, epoch has 3"),
        ({"steps_per_epoch": [4, 4]}, "steps_per_epoch has 2 values"),
        ({"step": [1, 2]}, "step has 2 values, step_loss has 10"),
        ({"steps_per_epoch": [4, -1, 2]}, "must not be negative"),
    ],
)
def test_loss_history_refuses_inconsistent_data(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        history(**overrides)


def test_svg_holds_train_validation_and_step_series() -> None:
    svg = render_job_loss(history(), "svg")
    root = svg_root(svg)
    assert {"train_loss", "val_loss", "step_loss"} <= svg_ids(svg)
    train, val, steps = (svg_group(root, gid) for gid in ("train_loss", "val_loss", "step_loss"))
    assert train is not None
    assert val is not None
    assert steps is not None
    assert len(markers(train)) == 3  # one marker per epoch
    assert len(markers(val)) == 3
    assert len(path_vertices(steps)) == 10  # every step


def test_steps_fill_their_epoch_up_to_the_epoch_marker() -> None:
    root = svg_root(render_job_loss(history(), "svg"))
    train, steps = svg_group(root, "train_loss"), svg_group(root, "step_loss")
    assert train is not None
    assert steps is not None
    epoch_x = [x for x, _ in markers(train)]
    step_x = [x for x, _ in path_vertices(steps)]
    # The last step of epochs 1, 2, 3 (steps 4, 8, 10) is drawn at the epoch's own x.
    assert [step_x[3], step_x[7], step_x[9]] == pytest.approx(epoch_x, abs=1e-3)
    # Equal spacing within an epoch; epoch 3's two steps are twice as far apart.
    gap1, gap3 = step_x[1] - step_x[0], step_x[9] - step_x[8]
    assert gap3 == pytest.approx(2 * gap1, rel=1e-4)


def test_without_validation_or_steps_those_series_are_left_out() -> None:
    svg = render_job_loss(history(val_loss=[None, None, None], step=[], step_loss=[]), "svg")
    ids = svg_ids(svg)
    assert "train_loss" in ids
    assert "val_loss" not in ids
    assert "step_loss" not in ids


def test_a_missing_epoch_loss_leaves_a_gap() -> None:
    train = svg_group(render_job_loss(history(train_loss=[1.6, None, 0.9]), "svg"), "train_loss")
    assert train is not None
    assert len(markers(train)) == 2


def y_gaps(losses: list[float]) -> list[float]:
    n = len(losses)
    svg = render_job_loss(
        LossHistory(
            epoch=list(range(1, n + 1)),
            train_loss=losses,
            val_loss=[None] * n,
            steps_per_epoch=[1] * n,
        ),
        "svg",
    )
    train = svg_group(svg, "train_loss")
    assert train is not None
    ys = [y for _, y in markers(train)]
    return [b - a for a, b in itertools.pairwise(ys)]


def test_a_loss_spanning_three_decades_is_drawn_on_a_log_axis() -> None:
    gaps = y_gaps([1.0, 0.1, 0.01, 0.001])
    assert gaps == pytest.approx([gaps[0]] * 3, rel=1e-4)  # equal ratios → equal steps


def test_a_loss_within_two_decades_stays_on_a_linear_axis() -> None:
    gaps = y_gaps([1.0, 0.5, 0.25, 0.125])
    assert gaps[0] == pytest.approx(2 * gaps[1], rel=1e-4)  # equal differences → equal steps


def test_png_is_1200_pixels_wide() -> None:
    assert png_size(render_job_loss(history(), "png")) == (1200, 750)


@pytest.mark.parametrize("fmt", ["svg", "png"])
def test_same_history_gives_the_same_bytes_even_from_concurrent_threads(fmt: str) -> None:
    first = render_job_loss(history(), fmt)  # type: ignore[arg-type]
    with ThreadPoolExecutor(max_workers=4) as pool:
        again = list(pool.map(lambda _: render_job_loss(history(), fmt), range(4)))  # type: ignore[arg-type]
    assert all(image == first for image in again)
    other = render_job_loss(history(train_loss=[1.675, 1.0625, 0.8]), fmt)  # type: ignore[arg-type]
    assert other != first


def test_steps_at_nan_are_not_drawn() -> None:
    losses = [2.0, math.nan, 1.5, 1.4, 1.2, 1.1, 1.0, 0.95, 0.9, 0.85]
    steps = svg_group(render_job_loss(history(step_loss=losses), "svg"), "step_loss")
    assert steps is not None
    assert len(path_vertices(steps)) == 9
