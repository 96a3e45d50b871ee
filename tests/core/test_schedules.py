"""Schedules: each kind gives its documented sequence, written out."""

import dataclasses
import math
from typing import Any

import pytest

from service.core.errors import CoreConfigError
from service.core.schedules import BatchSizeSchedule, LRSchedule, scale_lr


def _lrs(schedule: LRSchedule, base_lr: float, epochs: int) -> list[float]:
    return [schedule.lr_at(e, base_lr, epochs) for e in range(epochs)]


def test_constant() -> None:
    assert _lrs(LRSchedule(), 0.1, 4) == [0.1, 0.1, 0.1, 0.1]


def test_step() -> None:
    schedule = LRSchedule(kind="step", step_size=2, gamma=0.5)
    assert _lrs(schedule, 1.0, 6) == [1.0, 1.0, 0.5, 0.5, 0.25, 0.25]


def test_exponential() -> None:
    schedule = LRSchedule(kind="exponential", gamma=0.5)
    assert _lrs(schedule, 2.0, 4) == [2.0, 1.0, 0.5, 0.25]


def test_cosine_to_a_floor() -> None:
    # min_lr + (lr₀ − min_lr)(1 + cos(πe/E))/2 with lr₀ = 1.1, min_lr = 0.1, E = 4
    schedule = LRSchedule(kind="cosine", min_lr=0.1)
    expected = [1.1, 0.1 + (1 + math.sqrt(0.5)) / 2, 0.6, 0.1 + (1 - math.sqrt(0.5)) / 2]
    assert _lrs(schedule, 1.1, 4) == pytest.approx(expected, rel=1e-15)
    assert schedule.lr_at(4, 1.1, 4) == pytest.approx(0.1, rel=1e-15)


def test_linear_warmup_alone_and_combined() -> None:
    assert _lrs(LRSchedule(warmup_epochs=4), 1.0, 6) == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    # the decay runs from epoch 0; warmup multiplies it: [1·½, 0.5·1, 0.25, 0.125]
    combined = LRSchedule(kind="exponential", gamma=0.5, warmup_epochs=2)
    assert _lrs(combined, 1.0, 4) == [0.5, 0.5, 0.25, 0.125]
    cosine = LRSchedule(kind="cosine", warmup_epochs=2)
    assert _lrs(cosine, 1.0, 4) == pytest.approx(
        [0.5, (1 + math.sqrt(0.5)) / 2 * 1.0, 0.5, (1 - math.sqrt(0.5)) / 2], rel=1e-15
    )


def test_batch_size_grows_by_a_factor_every_k_epochs_up_to_the_cap() -> None:
    schedule = BatchSizeSchedule(kind="grow", factor=2, every_epochs=2, max_batch_size=100)
    sizes = [schedule.batch_size_at(e, 16, 1000) for e in range(8)]
    assert sizes == [16, 16, 32, 32, 64, 64, 100, 100]
    assert schedule.batch_size_at(10**9, 16, 1000) == 100  # a huge exponent costs nothing


def test_batch_size_never_exceeds_the_training_rows() -> None:
    grow = BatchSizeSchedule(kind="grow", factor=3)
    assert [grow.batch_size_at(e, 5, 50) for e in range(5)] == [5, 15, 45, 50, 50]
    constant = BatchSizeSchedule()
    assert [constant.batch_size_at(e, 32, 1000) for e in range(3)] == [32, 32, 32]
    assert constant.batch_size_at(0, 64, 40) == 40
    assert BatchSizeSchedule(max_batch_size=8).batch_size_at(0, 32, 100) == 8


def test_scale_lr_rules() -> None:
    assert scale_lr(0.1, 64, 32, "none") == 0.1
    assert scale_lr(0.1, 64, 32, "linear") == pytest.approx(0.2, rel=1e-15)
    assert scale_lr(0.1, 8, 32, "linear") == pytest.approx(0.025, rel=1e-15)
    assert scale_lr(0.1, 128, 32, "sqrt") == pytest.approx(0.2, rel=1e-15)
    assert scale_lr(0.1, 8, 32, "sqrt") == pytest.approx(0.05, rel=1e-15)


def test_the_learning_rate_in_force_combines_scaling_and_schedule() -> None:
    # B(e) = 32, 64, 128; linear scaling from B_ref = 32 gives 0.1, 0.2, 0.4; step halves each epoch
    batch = BatchSizeSchedule(kind="grow")
    lr = LRSchedule(kind="step", gamma=0.5)
    in_force = [
        lr.lr_at(e, scale_lr(0.1, batch.batch_size_at(e, 32, 10_000), 32, "linear"), 3)
        for e in range(3)
    ]
    assert in_force == pytest.approx([0.1, 0.1, 0.1], rel=1e-15)


def test_schedules_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        LRSchedule().gamma = 0.5  # type: ignore[misc]


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"kind": "linear"}, "kind"),
        ({"step_size": 0}, "step_size"),
        ({"step_size": 1.5}, "step_size"),
        ({"step_size": True}, "step_size"),
        ({"gamma": 0.0}, "gamma"),
        ({"gamma": 1.5}, "gamma"),
        ({"gamma": math.nan}, "gamma"),
        ({"kind": "cosine", "min_lr": -0.1}, "min_lr"),
        ({"kind": "cosine", "min_lr": math.inf}, "min_lr"),
        ({"kind": "step", "min_lr": 0.01}, "min_lr"),
        ({"warmup_epochs": -1}, "warmup_epochs"),
    ],
)
def test_lr_schedule_refuses_bad_values(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(CoreConfigError) as info:
        LRSchedule(**kwargs)
    assert info.value.field == field


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"kind": "shrink"}, "kind"),
        ({"factor": 1}, "factor"),
        ({"factor": 2.5}, "factor"),
        ({"every_epochs": 0}, "every_epochs"),
        ({"max_batch_size": 0}, "max_batch_size"),
        ({"max_batch_size": 10.0}, "max_batch_size"),
    ],
)
def test_batch_size_schedule_refuses_bad_values(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(CoreConfigError) as info:
        BatchSizeSchedule(**kwargs)
    assert info.value.field == field


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda: LRSchedule().lr_at(-1, 0.1, 5), "epoch"),
        (lambda: LRSchedule().lr_at(0, 0.1, 0), "epochs"),
        (lambda: BatchSizeSchedule().batch_size_at(0, 0, 10), "batch_size"),
        (lambda: BatchSizeSchedule().batch_size_at(0, 4, 0), "n_train"),
        (lambda: BatchSizeSchedule().batch_size_at(-2, 4, 10), "epoch"),
        (lambda: scale_lr(0.1, 32, 32, "cubic"), "lr_scaling"),
        (lambda: scale_lr(0.1, 0, 32, "linear"), "batch_size"),
        (lambda: scale_lr(0.1, 32, 0, "linear"), "reference_batch_size"),
    ],
)
def test_schedule_calls_refuse_bad_arguments(call: Any, field: str) -> None:
    with pytest.raises(CoreConfigError) as info:
        call()
    assert info.value.field == field


# --- the adaptive batch size ----------------------------------------------------------------

ADAPTIVE = BatchSizeSchedule(kind="adaptive", min_batch_size=16, max_batch_size=256)


def test_adaptive_starts_within_min_and_max() -> None:
    assert ADAPTIVE.batch_size_at(0, 8, 1000) == 16  # raised to the min
    assert ADAPTIVE.batch_size_at(0, 64, 1000) == 64
    assert ADAPTIVE.batch_size_at(0, 512, 1000) == 256  # held at the max
    assert ADAPTIVE.batch_size_at(0, 64, 40) == 40  # never above the rows


@pytest.mark.parametrize(
    ("batch_size", "noise_scale", "n_train", "expected", "says"),
    [
        (16, 23.4, 1000, 23, "grew 16 → 23 toward the noise scale B̂ ≈ 23.4"),
        (16, 900.0, 1000, 32, "held by the ×2 cap per change"),
        (200, 900.0, 1000, 256, "held by max_batch_size 256"),
        (200, 900.0, 220, 220, "held by the 220 training rows"),
        (64, 20.0, 1000, 64, "kept 64: the noise scale B̂ ≈ 20 measured after epoch 3 is not "),
        (256, 900.0, 1000, 256, "kept 256 (the noise scale B̂ ≈ 900"),
        (64, None, 1000, 64, "kept 64: the noise scale measured after epoch 3 was not resolved"),
    ],
)
def test_adaptive_moves_toward_the_noise_scale_within_its_bounds(
    batch_size: int, noise_scale: float | None, n_train: int, expected: int, says: str
) -> None:
    change = ADAPTIVE.adapt(batch_size, noise_scale, n_train, epoch=3)
    assert change.batch_size == expected
    assert says in change.reason


def test_adaptive_growth_cap_every_epochs_and_lower_bound() -> None:
    schedule = BatchSizeSchedule(kind="adaptive", every_epochs=2, max_growth=1.5)
    assert schedule.adapt(10, 900.0, 1000, epoch=1).batch_size == 10  # not a change epoch
    assert "changes every 2 epochs" in schedule.adapt(10, 900.0, 1000, epoch=1).reason
    assert schedule.adapt(10, 900.0, 1000, epoch=2).batch_size == 15  # ⌊1.5 · 10⌋
    bound = schedule.adapt(10, 12.0, 1000, epoch=2, lower_bound=True)
    assert bound.batch_size == 12
    assert "B̂ ≳ 12 (the mean gradient was within the sample's noise)" in bound.reason


def test_only_the_adaptive_schedule_adapts() -> None:
    with pytest.raises(CoreConfigError, match=r"^kind: only the adaptive schedule adapts"):
        BatchSizeSchedule(kind="grow").adapt(8, 100.0, 1000, epoch=1)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"kind": "grow", "min_batch_size": 8}, "min_batch_size"),
        ({"kind": "constant", "max_growth": 3.0}, "max_growth"),
        ({"kind": "adaptive", "factor": 4}, "factor"),
        ({"kind": "adaptive", "max_growth": 1.0}, "max_growth"),
        ({"kind": "adaptive", "max_growth": math.inf}, "max_growth"),
        ({"kind": "adaptive", "min_batch_size": 0}, "min_batch_size"),
        ({"kind": "adaptive", "min_batch_size": 64, "max_batch_size": 32}, "min_batch_size"),
    ],
)
def test_adaptive_schedule_refuses_bad_values(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(CoreConfigError) as info:
        BatchSizeSchedule(**kwargs)
    assert info.value.field == field
