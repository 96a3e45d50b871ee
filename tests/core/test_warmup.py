"""The batch-size warmup: the batch follows its points exactly (a change at the first step
boundary at or after each point's samples, mid-epoch too), the learning rate by its rule."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from service.core import BatchSizeSchedule, CoreConfigError, TrainConfig, Training
from service.core.records import EpochRecord

N = 250


def _data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    X = rng.normal(size=(N, 4))
    y = (X @ rng.normal(size=(4, 3))).argmax(axis=1)
    return X, y


def _records(config: TrainConfig) -> tuple[list[EpochRecord], Training]:
    X, y = _data()
    training = Training(X, y, config)
    return list(training), training


def _warmup(points: tuple[tuple[int, int], ...], **changes: object) -> TrainConfig:
    config = TrainConfig(
        model="softmax",
        learning_rate=0.1,
        batch_size=4,
        epochs=5,
        batch_size_schedule=BatchSizeSchedule(kind="warmup", points=points),
    )
    return dataclasses.replace(config, **changes)


def _batch_per_step(records: list[EpochRecord], base: int) -> list[tuple[int, int]]:
    """(samples before the step, batch) for every step, rebuilt from the records."""
    out: list[tuple[int, int]] = []
    batch = base
    samples = 0
    for record in records:
        changes = {change.step: change for change in record.batch_changes}
        first = record.total_steps - record.steps
        done = 0
        for step in range(first, record.total_steps):
            if step in changes:
                batch = changes[step].batch_size
                assert changes[step].samples == samples
            out.append((samples, batch))
            taken = min(batch, N - done)
            samples += taken
            done += taken
        assert samples == record.samples_seen
    return out


def test_the_batch_changes_at_the_first_step_boundary_at_or_after_each_point() -> None:
    points = ((0, 4), (30, 8), (250, 16), (333, 32), (800, 64))
    records, _ = _records(_warmup(points))
    steps = _batch_per_step(records, base=4)
    for samples, batch in steps:
        # The batch in force is that of the last point at or below the samples seen.
        expected = max((b for at, b in points if at <= samples), default=4)
        assert batch == expected, (samples, batch)
    # Each change is at the first step boundary at or after its point: the step before it
    # started below the point.
    starts = [samples for samples, _ in steps]
    for at, _ in points[1:]:
        first = min(s for s in starts if s >= at)
        assert starts[starts.index(first) - 1] < at
    changes = [c for r in records for c in r.batch_changes]
    assert [(c.samples, c.batch_size) for c in changes] == [
        (0, 4),
        (32, 8),  # 30 → the boundary at 32 (mid-epoch 1, after 8 steps of 4)
        (250, 16),  # epoch 1 ends at 250 (a partial step of 2): a boundary on the point
        (346, 32),  # 333 → 250 + 6 × 16 (mid-epoch 2)
        (814, 64),  # 800 → 750 + 2 × 32 (mid-epoch 4)
    ]
    assert [c.step for c in changes] == [0, 8, 36, 42, 57]
    assert "grew 16 → 32 at 346 samples (step 42)" in changes[3].reason
    assert "the warmup point [333, 32]" in changes[3].reason
    assert records[1].batch_size == 16  # the epoch's first step's
    assert records[1].batch_size_reason == changes[2].reason
    assert records[2].batch_size_reason == changes[3].reason  # in force at its start


@pytest.mark.parametrize("rule", ["none", "linear", "sqrt"])
def test_the_learning_rate_moves_by_its_rule_at_every_change(rule: str) -> None:
    points = ((0, 4), (100, 16), (600, 64))
    records, _ = _records(_warmup(points, lr_scaling=rule, reference_batch_size=4))
    factor = {"none": lambda b: 1.0, "linear": lambda b: b / 4, "sqrt": lambda b: math.sqrt(b / 4)}
    changes = [c for r in records for c in r.batch_changes]
    assert [c.batch_size for c in changes] == [4, 16, 64]
    for change in changes:
        assert change.learning_rate == pytest.approx(0.1 * factor[rule](change.batch_size))
    for record in records:
        assert record.learning_rate == pytest.approx(0.1 * factor[rule](record.batch_size))


def test_a_single_point_is_the_constant_batch_bit_for_bit() -> None:
    constant = TrainConfig(model="softmax", learning_rate=0.1, batch_size=8, epochs=3)
    warm, _ = _records(_warmup(((0, 8),), batch_size=8, epochs=3))
    plain, _ = _records(constant)
    for ours, theirs in zip(warm, plain, strict=True):
        assert ours.step_losses.tobytes() == theirs.step_losses.tobytes()
        assert ours.train_loss == theirs.train_loss


def test_batches_straddling_chunked_windows_are_the_in_memory_ones() -> None:
    points = ((0, 3), (40, 7), (260, 25))
    in_memory, a = _records(_warmup(points, shuffle=False, epochs=3))
    # A budget of a few rows: the epoch comes in windows that cut batches in two.
    chunked, b = _records(_warmup(points, shuffle=False, epochs=3, max_in_memory_bytes=600))
    for ours, theirs in zip(chunked, in_memory, strict=True):
        assert ours.step_losses.tobytes() == theirs.step_losses.tobytes()
    assert a.model.theta.tobytes() == b.model.theta.tobytes()


def test_drop_last_drops_the_partial_batch_of_the_phase_that_ends_the_epoch() -> None:
    records, _ = _records(_warmup(((0, 4), (100, 32)), drop_last=True, epochs=2))
    # Epoch 1: 25 steps of 4, then 4 of 32 (128 rows); 22 rows dropped.
    assert records[0].steps == 29
    assert records[0].samples_seen == 228


@pytest.mark.parametrize(
    ("schedule", "field"),
    [
        ({"kind": "warmup"}, "points"),
        ({"kind": "warmup", "points": ((10, 4), (10, 8))}, "points[1]"),
        ({"kind": "warmup", "points": ((0, 0),)}, "points[0]"),
        ({"kind": "warmup", "points": ((-1, 4),)}, "points[0]"),
        ({"kind": "warmup", "points": ((0, 4, 1),)}, "points[0]"),
        ({"kind": "constant", "points": ((0, 4),)}, "points"),
        ({"kind": "grow", "probe_id": "p"}, "probe_id"),
    ],
)
def test_bad_points_are_refused_naming_the_field(schedule: dict[str, object], field: str) -> None:
    with pytest.raises(CoreConfigError) as caught:
        BatchSizeSchedule(**schedule)  # type: ignore[arg-type]
    assert caught.value.field == field


def test_points_round_trip_through_json_as_an_equal_config() -> None:
    config = _warmup(((0, 4), (30, 8)))
    back = TrainConfig.from_dict(
        {
            **config.to_dict(),
            "batch_size_schedule": {
                "kind": "warmup",
                "points": [[0, 4], [30, 8]],
                "probe_id": None,
            },
        }
    )
    assert back == config
