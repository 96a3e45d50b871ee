"""Warm starts: a branch that changes nothing continues its source bit for bit; what it may
change, and what it may not."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from service.core import (
    BatchSizeSchedule,
    Checkpoint,
    CoreConfigError,
    EarlyStopping,
    Evaluation,
    LRSchedule,
    TrainConfig,
    Training,
)
from service.core.records import EpochRecord


def _data(n: int = 240) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    X = rng.normal(size=(n, 5))
    y = (X @ rng.normal(size=(5, 3))).argmax(axis=1) + rng.integers(0, 2, size=n) % 2
    return X, y


def _config(**changes: object) -> TrainConfig:
    base = TrainConfig(
        model="mlp",
        hidden_layers=(8,),
        optimizer="momentum",
        learning_rate=0.05,
        batch_size=16,
        epochs=6,
        seed=3,
        validation_split=0.2,
        standardize=True,
        noise_scale=True,
        evaluation=Evaluation(per_decade=4),
        lr_schedule=LRSchedule(kind="cosine"),
        early_stopping=EarlyStopping(monitor="val_loss", patience=50),
    )
    return dataclasses.replace(base, **changes)


def _run(config: TrainConfig, **kwargs: object) -> tuple[list[EpochRecord], list[bytes], Training]:
    X, y = _data()
    training = Training(X, y, config, **kwargs)  # type: ignore[arg-type]
    records, checkpoints = [], []
    for record in training:
        records.append(record)
        checkpoints.append(training.checkpoint().to_bytes())
    return records, checkpoints, training


def _same(a: EpochRecord, b: EpochRecord) -> None:
    """Equal in everything but the clock."""
    left, right = a.to_dict(), b.to_dict()
    for timed in ("wall_time_s", "samples_per_s"):
        left.pop(timed), right.pop(timed)
    assert left == right
    assert a.step_losses.tobytes() == b.step_losses.tobytes()


@pytest.mark.parametrize(
    "schedule",
    [
        BatchSizeSchedule(),
        BatchSizeSchedule(kind="adaptive"),
        BatchSizeSchedule(kind="warmup", points=((0, 8), (500, 16), (1000, 48))),
    ],
    ids=["constant", "adaptive", "warmup"],
)
def test_a_branch_that_changes_nothing_continues_bit_for_bit(schedule: BatchSizeSchedule) -> None:
    config = _config(batch_size_schedule=schedule)
    records, checkpoints, original = _run(config)
    assert len(records) == 6
    start = Checkpoint.from_bytes(checkpoints[2])  # after epoch 3
    branch_records, _, branch = _run(config, init_from=start)
    assert [r.epoch for r in branch_records] == [4, 5, 6]
    for ours, theirs in zip(branch_records, records[3:], strict=True):
        _same(ours, theirs)
    assert branch.model.theta.tobytes() == original.model.theta.tobytes()
    assert branch.val_rows.tolist() == original.val_rows.tolist()


def test_reset_optimizer_is_the_same_branch_from_fresh_momentum() -> None:
    config = _config()
    records, checkpoints, _ = _run(config)
    start = Checkpoint.from_bytes(checkpoints[2])
    reset, _, _ = _run(config, init_from=start, reset_optimizer=True)
    # The first step runs from the same θ, so its loss is the original's; the momentum the
    # original carried in moves every step after it.
    assert reset[0].step_losses[0] == records[3].step_losses[0]
    assert reset[0].step_losses[1] != records[3].step_losses[1]
    # Exactly a branch from the checkpoint with its momentum zeroed and its step count 0.
    zeroed = dataclasses.replace(
        start,
        optimizer_state={
            "momentum_buffer": np.zeros_like(start.optimizer_state["momentum_buffer"]),
            "step": np.array(0, dtype=np.int64),
        },
    )
    by_hand, _, _ = _run(config, init_from=zeroed)
    for ours, theirs in zip(reset, by_hand, strict=True):
        _same(ours, theirs)


def test_a_branch_may_change_batch_lr_optimizer_with_reset_and_seed() -> None:
    config = _config()
    _, checkpoints, original = _run(config)
    start = Checkpoint.from_bytes(checkpoints[1])
    changed = _config(
        batch_size=64, learning_rate=0.1, optimizer="adam", seed=11, split_seed=3, epochs=4
    )
    records, _, branch = _run(changed, init_from=start, reset_optimizer=True)
    assert [(r.epoch, r.batch_size) for r in records] == [(3, 64), (4, 64)]
    assert records[0].samples_seen == start.samples_seen + 192
    assert records[0].total_steps == start.total_steps + 3
    # Another seed shuffles afresh but keeps the source's validation rows.
    assert branch.val_rows.tolist() == original.val_rows.tolist()


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"hidden_layers": (9,)}, "hidden_layers"),
        ({"model": "softmax", "hidden_layers": ()}, "model"),
        ({"dtype": "float64"}, "dtype"),
        ({"validation_split": 0.25}, "validation_split"),
        ({"standardize": False}, "standardize"),
        ({"seed": 4}, "split_seed"),  # another seed must keep the source's split
        ({"optimizer": "adam"}, "optimizer"),  # another optimizer needs reset_optimizer
        ({"epochs": 3}, "epochs"),  # epochs count on from the checkpoint's 3
    ],
)
def test_a_branch_refuses_what_it_cannot_change(changes: dict[str, object], field: str) -> None:
    _, checkpoints, _ = _run(_config())
    start = Checkpoint.from_bytes(checkpoints[2])
    X, y = _data()
    with pytest.raises(CoreConfigError) as caught:
        Training(X, y, _config(**changes), init_from=start)
    assert caught.value.field == field


def test_a_branch_of_a_finished_run_goes_on_and_resumes_like_any_run() -> None:
    config = _config(epochs=3, early_stopping=None)
    _, checkpoints, _ = _run(config)
    end = Checkpoint.from_bytes(checkpoints[-1])
    assert end.finished == "completed"
    longer = _config(epochs=6, early_stopping=None)
    records, branch_checkpoints, _ = _run(longer, init_from=end)
    assert [r.epoch for r in records] == [4, 5, 6]
    # The branch's own checkpoints resume it (its config, its counters) bit for bit.
    resumed, _, _ = _run(longer, resume_from=Checkpoint.from_bytes(branch_checkpoints[0]))
    for ours, theirs in zip(resumed, records[1:], strict=True):
        _same(ours, theirs)
    X, y = _data()
    with pytest.raises(CoreConfigError) as caught:
        Training(X, y, longer, init_from=end, resume_from=end)
    assert caught.value.field == "init_from"
