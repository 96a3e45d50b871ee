"""The critical batch from branch losses, and the warmup rule (pure science, no training)."""

from __future__ import annotations

import math

import pytest

from service.science.critical import (
    RULE,
    critical_batch,
    tolerance_for_progress,
    warmup_points,
)


def test_the_largest_multiplier_that_keeps_up_with_every_smaller_one() -> None:
    result = critical_batch({1: [1.00], 2: [1.005], 4: [1.0099], 8: [1.02], 16: [1.5]})
    assert (result.kept_up, result.fell_behind) == (4, 8)
    assert not result.open_ended
    assert result.monotone
    assert result.unanimous
    gaps = [round(v.relative_gap, 4) for v in result.verdicts]
    assert gaps == [0.0, 0.005, 0.0099, 0.02, 0.5]
    assert [v.kept_up for v in result.verdicts] == [True, True, True, False, False]


def test_the_tolerance_moves_the_bracket() -> None:
    losses = {1: [2.0], 2: [2.03], 4: [2.1], 8: [2.5]}
    assert critical_batch(losses, tolerance=0.01).kept_up == 1
    twice = critical_batch(losses, tolerance=0.02)
    assert (twice.kept_up, twice.fell_behind) == (2, 4)
    wide = critical_batch(losses, tolerance=0.06)
    assert (wide.kept_up, wide.fell_behind) == (4, 8)
    assert critical_batch(losses, tolerance=0.5).open_ended


def test_every_multiplier_keeps_up_the_bracket_is_open_above() -> None:
    result = critical_batch({1: [1.0], 2: [0.99], 4: [1.0]})
    assert (result.kept_up, result.fell_behind, result.open_ended) == (4, None, True)


def test_none_keeps_up_the_critical_batch_is_below_twice_the_source_batch() -> None:
    result = critical_batch({1: [1.0], 2: [1.2], 4: [1.5]})
    assert (result.kept_up, result.fell_behind, result.open_ended) == (1, 2, False)


def test_a_multiplier_that_keeps_up_again_after_one_fell_behind_is_not_monotone() -> None:
    result = critical_batch({1: [1.0], 2: [1.02], 4: [1.0]})
    assert (result.kept_up, result.fell_behind) == (1, 2)
    assert result.monotone is False


def test_seeds_are_judged_on_their_mean_and_each_seed_is_reported() -> None:
    # Seed 0 of ×2 trails its ×1 seed by 1.5%, seed 1 leads; the means differ by 0.25%.
    result = critical_batch({1: [1.0, 1.0], 2: [1.015, 0.99]}, tolerance=0.01)
    verdict = result.verdicts[1]
    assert verdict.loss == pytest.approx(1.0025)
    assert verdict.kept_up is True
    assert verdict.seed_verdicts == (False, True)
    assert result.unanimous is False
    assert "mean over seeds" in RULE


def test_a_failed_seed_never_keeps_up() -> None:
    result = critical_batch({1: [1.0, 1.0], 2: [1.0, None], 4: [1.0, math.nan]})
    assert (result.kept_up, result.fell_behind) == (1, 2)
    assert math.isinf(result.verdicts[1].loss)


def test_without_a_finite_reference_there_is_no_answer() -> None:
    for losses in ({2: [1.0]}, {1: [None], 2: [1.0]}, {1: [], 2: [1.0]}):
        result = critical_batch(losses)
        assert result.kept_up is None
        assert result.fell_behind is None
        assert result.reason is not None
        assert "×1" in result.reason


def test_multipliers_not_yet_run_are_left_out() -> None:
    result = critical_batch({1: [1.0], 2: [1.0], 4: []})
    assert [v.multiplier for v in result.verdicts] == [1, 2]
    assert result.open_ended


@pytest.mark.parametrize("tolerance", [0.0, 1.0, -0.1, math.nan])
def test_a_tolerance_outside_zero_one_is_refused(tolerance: float) -> None:
    with pytest.raises(ValueError, match="tolerance"):
        critical_batch({1: [1.0]}, tolerance=tolerance)


def test_tolerance_for_progress() -> None:
    # Half of a gain of 0.2 on a loss of 1.0 is 10% of the loss.
    assert tolerance_for_progress(0.5, reference_loss=1.0, reference_gain=0.2) == 0.1
    with pytest.raises(ValueError, match="made progress"):
        tolerance_for_progress(0.5, reference_loss=1.0, reference_gain=0.0)
    with pytest.raises(ValueError, match="fraction_lost"):
        tolerance_for_progress(1.5, reference_loss=1.0, reference_gain=0.1)


def test_warmup_doubles_when_the_critical_batch_has_grown_past_twice_the_batch() -> None:
    measured = [(1000.0, 40.0), (3000.0, 70.0), (9000.0, 300.0), (20000.0, 500.0)]
    points = warmup_points(measured, start_batch=32)
    # 40 < 64: stay; 70 ≥ 64: 64; 300 ≥ 256: 256 (two doublings at once); 500 < 512: stay.
    assert points == [(0, 32), (3000, 64), (9000, 256)]


def test_warmup_stops_at_the_cap_and_skips_empty_measurements() -> None:
    measured = [(5000.0, 10_000.0), (100.0, math.nan), (200.0, 0.0)]
    assert warmup_points(measured, start_batch=16, max_batch=100) == [(0, 16), (5000, 64)]


def test_warmup_sorts_measurements_and_a_change_at_zero_replaces_the_start() -> None:
    assert warmup_points([(500.0, 64.0), (0.0, 32.0)], start_batch=8) == [(0, 32), (500, 64)]


def test_warmup_refuses_a_bad_start() -> None:
    with pytest.raises(ValueError, match="start_batch"):
        warmup_points([], start_batch=0)
    with pytest.raises(ValueError, match="max_batch"):
        warmup_points([], start_batch=8, max_batch=4)
