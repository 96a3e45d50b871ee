"""Steps, samples, epochs and wall time to a target loss, and the target from a fraction."""

from __future__ import annotations

import dataclasses
import math

import pytest

from service.science import (
    Evaluation,
    SweepDataError,
    TargetCrossing,
    steps_to_target,
    sweep_target,
    target_from_fraction,
)

BATCH = 16
ROWS = 100  # samples per epoch


def evaluation(step: int, loss: float) -> Evaluation:
    """Batch 16, 100 rows per epoch, 0.01 s per step."""
    return Evaluation(step, step * BATCH, step * BATCH / ROWS, step * 0.01, loss)


def test_log_interpolation_is_exact_on_a_curve_piecewise_linear_in_log_loss() -> None:
    # ln L falls by ln 2 per 10 steps from 0 to 10, then by 2 ln 2 over 20 steps: the target
    # 0.25 is one halving after step 10, half-way to step 30.
    evaluations = [evaluation(0, 1.0), evaluation(10, 0.5), evaluation(30, 0.125)]
    crossing = steps_to_target(evaluations, 0.25)
    assert crossing is not None
    assert dataclasses.astuple(crossing) == pytest.approx((20.0, 320.0, 3.2, 0.2))


@pytest.mark.parametrize("target", [0.9, 0.5, 0.3, 0.1, 0.01])
def test_linear_interpolation_is_exact_on_a_piecewise_linear_curve(target: float) -> None:
    # L(s) = 1 − s/100 for s ≤ 50, then 0.5 − (s − 50)/200; sampled at log-spaced steps,
    # every knot of the curve being an evaluation.
    def loss(s: float) -> float:
        return 1.0 - s / 100 if s <= 50 else 0.5 - (s - 50) / 200

    steps = [0, 1, 2, 4, 8, 16, 32, 50, 64, 128, 150]
    evaluations = [evaluation(s, loss(s)) for s in steps]
    expected = 100 * (1.0 - target) if target >= 0.5 else 50 + 200 * (0.5 - target)
    crossing = steps_to_target(evaluations, target, interpolation="linear")
    assert crossing is not None
    assert crossing.steps == pytest.approx(expected, rel=1e-12)
    assert crossing.samples == pytest.approx(expected * BATCH, rel=1e-12)
    assert crossing.epochs == pytest.approx(expected * BATCH / ROWS, rel=1e-12)
    assert crossing.wall_time_s == pytest.approx(expected * 0.01, rel=1e-12)


def test_log_and_linear_interpolation_differ_on_a_geometric_decay() -> None:
    # L = 2^(−s/10): the crossing of 0.25 is at s = 20 exactly; linear in loss puts it later.
    evaluations = [evaluation(0, 1.0), evaluation(30, 0.125)]
    log_crossing = steps_to_target(evaluations, 0.25)
    linear_crossing = steps_to_target(evaluations, 0.25, interpolation="linear")
    assert log_crossing is not None
    assert linear_crossing is not None
    assert log_crossing.steps == pytest.approx(20.0)
    assert linear_crossing.steps == pytest.approx(30 * 0.75 / 0.875)


def test_never_reached_is_none() -> None:
    evaluations = [evaluation(0, 1.0), evaluation(10, 0.6), evaluation(100, 0.5001)]
    assert steps_to_target(evaluations, 0.5) is None
    assert steps_to_target([], 0.5) is None


def test_the_first_crossing_counts_when_the_loss_rises_again() -> None:
    evaluations = [
        evaluation(0, 1.0),
        evaluation(10, 0.4),  # first crossing of 0.5, between steps 0 and 10
        evaluation(20, 0.7),
        evaluation(30, 0.2),
    ]
    crossing = steps_to_target(evaluations, 0.5, interpolation="linear")
    assert crossing is not None
    assert crossing.steps == pytest.approx(10 * 0.5 / 0.6)


def test_a_target_met_at_step_zero_gives_step_zero() -> None:
    crossing = steps_to_target([evaluation(0, 1.0), evaluation(10, 0.5)], 1.5)
    assert crossing == TargetCrossing(0.0, 0.0, 0.0, 0.0)


def test_a_crossing_just_after_a_non_finite_loss_is_placed_at_the_evaluation() -> None:
    evaluations = [evaluation(0, 1.0), evaluation(10, math.nan), evaluation(20, 0.1)]
    crossing = steps_to_target(evaluations, 0.5)
    assert crossing is not None
    assert crossing.steps == 20.0
    # and a non-finite loss never reaches the target
    assert steps_to_target([evaluation(0, 1.0), evaluation(10, -math.inf)], 0.5) is None


def test_log_interpolation_falls_back_to_linear_for_a_zero_loss() -> None:
    crossing = steps_to_target([evaluation(0, 1.0), evaluation(10, 0.0)], 0.5)
    assert crossing is not None
    assert crossing.steps == pytest.approx(5.0)


def test_steps_must_increase_strictly() -> None:
    with pytest.raises(SweepDataError, match="evaluations: steps must increase strictly"):
        steps_to_target([evaluation(0, 1.0), evaluation(10, 0.9), evaluation(10, 0.8)], 0.5)


@pytest.mark.parametrize("target", [math.nan, math.inf])
def test_a_non_finite_target_is_refused(target: float) -> None:
    with pytest.raises(SweepDataError, match="target_loss"):
        steps_to_target([evaluation(0, 1.0)], target)


def test_an_unknown_interpolation_is_refused() -> None:
    with pytest.raises(SweepDataError, match="interpolation"):
        steps_to_target([evaluation(0, 1.0)], 0.5, interpolation="cubic")  # type: ignore[arg-type]


def test_target_from_fraction_closes_that_fraction_of_the_gap() -> None:
    assert target_from_fraction(1.0, 0.2, 0.9) == pytest.approx(0.28)
    assert target_from_fraction(3.0, 1.0, 0.5) == pytest.approx(2.0)


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5, math.nan])
def test_target_fraction_must_lie_strictly_between_zero_and_one(fraction: float) -> None:
    with pytest.raises(SweepDataError, match="target_fraction"):
        target_from_fraction(1.0, 0.2, fraction)


def test_no_gap_to_close_is_refused() -> None:
    with pytest.raises(SweepDataError, match="best_loss: no run got below the initial loss"):
        target_from_fraction(1.0, 1.0, 0.9)
    with pytest.raises(SweepDataError, match="initial_loss"):
        target_from_fraction(math.inf, 1.0, 0.9)


def test_sweep_target_averages_the_initial_loss_over_seeds_and_takes_the_best_loss() -> None:
    runs = [
        [evaluation(0, 1.0), evaluation(10, 0.5), evaluation(20, 0.3)],  # seed 0, batch 16
        [evaluation(0, 1.0), evaluation(10, 0.1), evaluation(20, math.nan)],  # seed 0, batch 64
        [evaluation(0, 1.2), evaluation(10, 0.4)],  # seed 1
    ]
    # L₀ = (1.0 + 1.0 + 1.2)/3, L_best = 0.1 (the NaN ignored)
    initial = 3.2 / 3
    assert sweep_target(runs, 0.9) == pytest.approx(initial - 0.9 * (initial - 0.1))


def test_sweep_target_needs_runs_with_a_finite_loss_at_step_zero() -> None:
    with pytest.raises(SweepDataError, match="runs: needs at least one run"):
        sweep_target([], 0.9)
    with pytest.raises(SweepDataError, match=r"runs\[1\]: needs an evaluation at step 0"):
        sweep_target([[evaluation(0, 1.0)], [evaluation(5, 1.0)]], 0.9)
    with pytest.raises(SweepDataError, match=r"runs\[0\]: needs an evaluation at step 0"):
        sweep_target([[]], 0.9)
    with pytest.raises(SweepDataError, match=r"runs\[0\]: the loss at step 0 is not finite"):
        sweep_target([[evaluation(0, math.nan), evaluation(5, 0.5)]], 0.9)
