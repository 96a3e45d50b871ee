"""History helpers, pure: joining step blobs, min/max downsampling, CSV."""

from __future__ import annotations

import csv
import io

import numpy as np
import pytest

from service.jobs.history import (
    EPOCH_COLUMNS,
    Steps,
    downsample_min_max,
    epochs_csv,
    join_steps,
    steps_csv,
)


def steps_of(losses: np.ndarray) -> Steps:
    return join_steps([np.asarray(losses, dtype="<f4").tobytes()])


def brute_force(loss: np.ndarray, max_points: int) -> list[int]:
    """The indices min/max downsampling keeps, with a Python loop over buckets (0-based)."""
    n, k = loss.shape[0], max_points // 2
    keep: list[int] = []
    for b in range(k):
        lo, hi = (b * n) // k, ((b + 1) * n) // k
        bucket = loss[lo:hi]
        i, j = lo + int(np.argmin(bucket)), lo + int(np.argmax(bucket))
        keep.extend(sorted({i, j}))
    return keep


def test_join_steps_concatenates_epochs_and_numbers_steps_from_one() -> None:
    blobs = [np.array([3, 2], "<f4").tobytes(), b"", np.array([1.5], "<f4").tobytes()]
    steps = join_steps(blobs)
    assert steps.step.tolist() == [1, 2, 3]
    assert steps.loss.tolist() == [3.0, 2.0, 1.5]
    assert steps.total == 3
    assert not steps.downsampled


def test_join_steps_drops_non_finite_losses_but_keeps_numbering() -> None:
    steps = steps_of(np.array([1.0, np.nan, 2.0, np.inf]))
    assert steps.step.tolist() == [1, 3]
    assert steps.loss.tolist() == [1.0, 2.0]
    assert steps.total == 4


def test_downsampling_keeps_a_single_step_spike() -> None:
    loss = np.full(100_000, 0.5, dtype="<f4")
    loss[77_777] = 1000.0
    loss[12_345] = -1.0
    small = downsample_min_max(steps_of(loss), 100)
    assert small.loss.shape[0] <= 100
    assert 1000.0 in small.loss.tolist()
    assert -1.0 in small.loss.tolist()
    assert small.step[small.loss.tolist().index(1000.0)] == 77_778
    assert small.step[small.loss.tolist().index(-1.0)] == 12_346
    assert small.downsampled
    assert small.total == 100_000


@pytest.mark.parametrize(("n", "max_points"), [(1001, 10), (10, 3), (997, 200), (5000, 2)])
def test_downsampling_keeps_each_buckets_min_and_max_in_step_order(n: int, max_points: int) -> None:
    loss = np.random.default_rng(n).standard_normal(n).astype("<f4")
    small = downsample_min_max(steps_of(loss), max_points)
    expected = brute_force(loss, max_points)
    assert (small.step - 1).tolist() == expected
    assert small.loss.tolist() == loss[expected].tolist()
    assert len(expected) <= max_points
    assert np.all(np.diff(small.step) > 0)


def test_downsampling_a_constant_series_keeps_one_point_per_bucket() -> None:
    small = downsample_min_max(steps_of(np.ones(1000)), 20)
    assert small.step.tolist() == [1 + 100 * b for b in range(10)]


def test_downsampling_short_series_is_unchanged() -> None:
    steps = steps_of(np.arange(10.0))
    assert downsample_min_max(steps, 10) is steps


def test_epochs_csv_has_one_header_and_one_row_per_epoch() -> None:
    records = [
        {
            "epoch": 1,
            "train_loss": 0.5,
            "val_loss": None,
            "batch_size": 32,
            "noise_scale": {"b_simple": 12.5, "b_simple_corrected": 12.0, "loss_level": 0.4},
        },
        {"epoch": 2, "train_loss": 0.1, "val_loss": 0.2, "batch_size": 64, "noise_scale": None},
    ]
    rows = list(csv.reader(io.StringIO(epochs_csv(records))))
    assert rows[0] == list(EPOCH_COLUMNS)
    assert len(rows) == 3
    assert all(len(row) == len(EPOCH_COLUMNS) for row in rows)
    first = dict(zip(rows[0], rows[1], strict=True))
    assert first["epoch"] == "1"
    assert float(first["train_loss"]) == 0.5
    assert first["val_loss"] == ""
    assert first["noise_scale_b_simple"] == "12.5"
    assert dict(zip(rows[0], rows[2], strict=True))["batch_size"] == "64"


def test_steps_csv_round_trips_the_float32_values() -> None:
    loss = np.array([0.1, 2.5, 1e-7], dtype="<f4")
    rows = list(csv.reader(io.StringIO(steps_csv(steps_of(loss)))))
    assert rows[0] == ["step", "loss"]
    assert [int(r[0]) for r in rows[1:]] == [1, 2, 3]
    assert np.array([float(r[1]) for r in rows[1:]], dtype="<f4").tobytes() == loss.tobytes()
