"""The critical-batch fit S(B) = S_min (1 + B_noise/B): recovery, the unweighted trap,
refusals, the bootstrap interval's coverage, and input errors."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from service.science import (
    CriticalBatchFit,
    SweepDataError,
    SweepPoint,
    TargetCrossing,
    fit_critical_batch,
)
from service.science.fit import deeper_target_advice

BATCH_SIZES = [2**k for k in range(3, 13)]  # 8 … 4096


def crossing(steps: float, batch_size: int) -> TargetCrossing:
    return TargetCrossing(steps, steps * batch_size, steps * batch_size / 10_000, steps * 0.01)


def synthetic_points(
    rng: np.random.Generator | None,
    *,
    s_min: float,
    b_noise: float,
    sigma: float = 0.1,
    seeds: int = 3,
    batch_sizes: list[int] = BATCH_SIZES,
) -> list[SweepPoint]:
    """S = s_min (1 + b_noise/B) · exp(ε), ε ~ N(0, sigma²) per seed (no noise without rng)."""
    points = []
    for B in batch_sizes:
        noise = rng.normal(0.0, sigma, seeds) if rng is not None else np.zeros(seeds)
        steps = s_min * (1.0 + b_noise / B) * np.exp(noise)
        points.append(SweepPoint(B, tuple(crossing(float(s), B) for s in steps)))
    return points


def unweighted_b_noise(points: list[SweepPoint]) -> float:
    """The trap: ordinary least squares of S (each point's mean) on 1/B, S = a + b/B,
    B_noise = b/a — the largest S (smallest B) dominate the squared residuals."""
    B = np.array([p.batch_size for p in points], dtype=float)
    S = np.array([np.mean([c.steps for c in p.crossings if c is not None]) for p in points])
    a, b = np.linalg.lstsq(np.stack([np.ones_like(B), 1.0 / B], axis=1), S, rcond=None)[0]
    return float(b / a)


def test_noise_free_points_give_the_exact_curve() -> None:
    fit = fit_critical_batch(
        synthetic_points(None, s_min=120.0, b_noise=300.0), rng=np.random.default_rng(0)
    )
    assert fit.reason is None
    assert fit.b_noise == pytest.approx(300.0, rel=1e-3)
    assert fit.s_min == pytest.approx(120.0, rel=1e-3)
    assert fit.e_min == pytest.approx(120.0 * 300.0, rel=2e-3)
    assert fit.r2_log == pytest.approx(1.0, abs=1e-6)
    assert fit.rms_relative == pytest.approx(0.0, abs=1e-3)
    assert fit.batch_sizes == tuple(BATCH_SIZES)
    assert fit.n_points == len(BATCH_SIZES)
    assert fit.steps_at(np.array([8.0, 300.0])) == pytest.approx(
        [120 * (1 + 300 / 8), 240.0], rel=2e-3
    )
    assert float(fit.samples_at(300.0)) == pytest.approx(2 * 120 * 300, rel=2e-3)


@pytest.mark.parametrize("b_noise", [50.0, 300.0, 2000.0])
@pytest.mark.parametrize("seed", range(4))
def test_fit_recovers_b_noise_within_20_percent_from_noisy_points(
    b_noise: float, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    fit = fit_critical_batch(
        synthetic_points(rng, s_min=100.0, b_noise=b_noise, sigma=0.1), rng=rng, n_resamples=200
    )
    assert fit.reason is None
    assert fit.b_noise == pytest.approx(b_noise, rel=0.2)
    assert fit.s_min == pytest.approx(100.0, rel=0.2)
    assert fit.r2_log is not None
    assert fit.r2_log > 0.95


def test_the_unweighted_fit_on_the_same_points_does_much_worse() -> None:
    """A plain least squares of S on 1/B is dominated by the smallest batch's S ≈ 25,000 steps
    (against ≈ 150 at B = 4096), so it misses B_noise; the relative fit does not."""
    rng = np.random.default_rng(7)
    ours, unweighted = [], []
    for _ in range(20):
        points = synthetic_points(rng, s_min=100.0, b_noise=2000.0, sigma=0.1)
        fit = fit_critical_batch(points, rng=rng, n_resamples=0)
        assert fit.b_noise is not None
        ours.append(abs(math.log(fit.b_noise / 2000.0)))
        b = unweighted_b_noise(points)
        unweighted.append(abs(math.log(b / 2000.0)) if b > 0 else math.inf)
    assert sum(e < math.log(1.2) for e in ours) >= 19
    assert sum(e < math.log(1.2) for e in unweighted) <= 6
    assert np.median(unweighted) > 5 * np.median(ours)


def weighted_linear_fit(points: list[SweepPoint]) -> tuple[float, float]:
    """The alternative relative fit: least squares of S on 1/B with weights 1/S, i.e.
    min Σ (1 − a/S − b/(B·S))²; (S_min, B_noise) = (a, b/a)."""
    B = np.array([p.batch_size for p in points], dtype=float)
    S = np.array([np.exp(np.mean(np.log([c.steps for c in p.crossings if c]))) for p in points])
    design = np.stack([1.0 / S, 1.0 / (B * S)], axis=1)
    a, b = np.linalg.lstsq(design, np.ones_like(S), rcond=None)[0]
    return float(a), float(b / a)


def test_the_log_fit_matches_the_weighted_linear_fit_in_range_and_stays_positive_out_of_it() -> (
    None
):
    """Why log space was kept (see the fit module's docstring): as accurate as the weighted
    linear fit when the knee is in range, and never a negative B_noise when it is not."""
    rng = np.random.default_rng(3)
    ours, weighted = [], []
    for _ in range(50):
        points = synthetic_points(rng, s_min=100.0, b_noise=300.0, sigma=0.2)
        fit = fit_critical_batch(points, rng=rng, n_resamples=0)
        assert fit.b_noise is not None
        ours.append(abs(math.log(fit.b_noise / 300.0)))
        weighted.append(abs(math.log(weighted_linear_fit(points)[1] / 300.0)))
    assert np.median(ours) <= 1.1 * np.median(weighted)
    # a knee far below the smallest batch (B_noise = 0.1, B ≥ 8): the weighted fit's
    # B_noise or S_min comes out ≤ 0 in many replicates; the log fit refuses or places it
    # below the range
    nonsense = 0
    for _ in range(50):
        points = synthetic_points(rng, s_min=100.0, b_noise=0.1, sigma=0.1)
        s_min, b_noise = weighted_linear_fit(points)
        nonsense += s_min <= 0.0 or b_noise <= 0.0
        fit = fit_critical_batch(points, rng=rng, n_resamples=0)
        assert fit.reason is not None or (fit.b_noise is not None and 0.0 < fit.b_noise < 8.0)
    assert nonsense >= 10


def test_bootstrap_interval_covers_the_true_b_noise_in_a_clear_majority_of_replicates() -> None:
    rng = np.random.default_rng(2024)
    covered = 0
    for _ in range(100):
        points = synthetic_points(rng, s_min=100.0, b_noise=300.0, sigma=0.15)
        fit = fit_critical_batch(points, rng=rng, n_resamples=200)
        assert fit.b_noise_ci is not None
        assert fit.s_min_ci is not None
        assert fit.e_min_ci is not None
        low, high = fit.b_noise_ci.low or 0.0, fit.b_noise_ci.high or math.inf
        covered += low <= 300.0 <= high
    assert covered >= 80


def test_the_interval_brackets_the_estimates_and_is_reproducible_from_the_seed() -> None:
    points = synthetic_points(np.random.default_rng(3), s_min=100.0, b_noise=300.0, sigma=0.1)
    first = fit_critical_batch(points, rng=np.random.default_rng(11), n_resamples=300)
    again = fit_critical_batch(points, rng=np.random.default_rng(11), n_resamples=300)
    assert first == again
    assert first.resamples == 300  # ten points: every resample has three distinct sizes
    assert first.confidence == 0.95
    for value, interval in (
        (first.b_noise, first.b_noise_ci),
        (first.s_min, first.s_min_ci),
        (first.e_min, first.e_min_ci),
    ):
        assert value is not None
        assert interval is not None
        assert interval.low is not None
        assert interval.high is not None
        assert interval.low < value < interval.high


def test_without_resamples_there_is_no_interval() -> None:
    fit = fit_critical_batch(
        synthetic_points(None, s_min=100.0, b_noise=300.0), rng=np.random.default_rng(0),
        n_resamples=0,
    )  # fmt: skip
    assert fit.b_noise is not None
    assert (fit.b_noise_ci, fit.s_min_ci, fit.e_min_ci, fit.resamples) == (None, None, None, 0)


def test_three_points_drop_the_resamples_with_fewer_than_three_distinct_sizes() -> None:
    points = synthetic_points(
        np.random.default_rng(5), s_min=100.0, b_noise=300.0, batch_sizes=[32, 256, 2048]
    )
    fit = fit_critical_batch(points, rng=np.random.default_rng(0), n_resamples=1000)
    assert fit.b_noise is not None
    # P(three distinct of three draws) = 3!/3³ = 2/9
    assert 150 < fit.resamples < 300


def assert_refused(fit: CriticalBatchFit, *fragments: str) -> None:
    assert fit.reason is not None
    for fragment in fragments:
        assert fragment in fit.reason
    assert (fit.s_min, fit.e_min, fit.b_noise, fit.b_noise_ci, fit.r2_log) == (None,) * 5


def test_a_shallow_target_is_refused_with_advice() -> None:
    # the largest batch (4096) needs 8 (1 + 300/4096) ≈ 8.6 steps: more than a well-conditioned
    # problem's few, so the target is blamed
    fit = fit_critical_batch(
        synthetic_points(None, s_min=8.0, b_noise=300.0), rng=np.random.default_rng(0)
    )
    assert_refused(fit, "S_min ≈ 8 steps", "too shallow", "8.59 steps", "target_fraction 0.95")
    assert "well-conditioned" not in (fit.reason or "")


def test_a_problem_too_easy_for_a_critical_batch_says_a_deeper_target_may_not_help() -> None:
    # the largest batch reaches the target in 3 (1 + 300/4096) ≈ 3.2 steps ≤ EASY_STEPS
    fit = fit_critical_batch(
        synthetic_points(None, s_min=3.0, b_noise=300.0), rng=np.random.default_rng(0)
    )
    assert_refused(
        fit,
        "S_min ≈ 3 steps",
        "largest batch (4096) reaches the target in 3.2 steps",
        "too well-conditioned",
        "a deeper target may not help",
        "e.g. target_fraction 0.95",
    )


@pytest.mark.parametrize(
    ("target", "advice"),
    [
        ({"target_fraction": 0.9}, "e.g. target_fraction 0.95"),
        ({}, "e.g. target_fraction 0.95"),
        ({"target_fraction": 0.95}, "e.g. target_fraction 0.975 (this sweep used 0.95)"),
        ({"target_fraction": 0.99}, "e.g. target_fraction 0.995 (this sweep used 0.99)"),
        ({"target_loss": 0.125}, "e.g. a lower target_loss than 0.125"),
    ],
)
def test_the_shallow_target_advice_never_suggests_what_the_sweep_already_used(
    target: dict[str, float], advice: str
) -> None:
    fit = fit_critical_batch(
        synthetic_points(None, s_min=3.0, b_noise=300.0),
        rng=np.random.default_rng(0),
        deeper_target=deeper_target_advice(**target),
    )
    assert_refused(fit, "too shallow", advice)
    if target.get("target_fraction", 0.0) >= 0.95 or "target_loss" in target:
        assert "target_fraction 0.95," not in (fit.reason or "")


def test_fewer_than_three_points_at_the_target_are_refused() -> None:
    points = synthetic_points(None, s_min=100.0, b_noise=300.0)
    # all but two points have no seed at the target (and no step counts: no information)
    unreached = [
        p if i < 2 else dataclasses.replace(p, crossings=(None,) * len(p.crossings))
        for i, p in enumerate(points)
    ]
    fit = fit_critical_batch(unreached, rng=np.random.default_rng(0))
    assert_refused(
        fit,
        "only 2 of 10 batch sizes reached the target with at least one seed: fitting a "
        "critical batch needs at least 3",
    )
    assert fit.batch_sizes == (8, 16)
    assert fit.censored == 0


def test_a_seed_without_a_crossing_or_a_step_count_is_left_out_of_its_point() -> None:
    points = synthetic_points(None, s_min=100.0, b_noise=300.0)
    points[-1] = dataclasses.replace(points[-1], crossings=(None, *points[-1].crossings[1:]))
    fit = fit_critical_batch(points, rng=np.random.default_rng(0), n_resamples=0)
    assert fit.batch_sizes == tuple(BATCH_SIZES)  # the point keeps its two other seeds
    assert not points[-1].reached
    assert fit.n_points == len(BATCH_SIZES)
    assert fit.censored == 0
    assert fit.b_noise == pytest.approx(300.0, rel=1e-3)


def test_flat_steps_mean_the_knee_is_below_the_range() -> None:
    fit = fit_critical_batch(
        synthetic_points(None, s_min=100.0, b_noise=0.001), rng=np.random.default_rng(0)
    )
    assert_refused(fit, "no measurable critical batch", "far below the smallest batch measured (8)")


def test_perfect_scaling_means_the_knee_is_above_the_range() -> None:
    fit = fit_critical_batch(
        synthetic_points(None, s_min=0.01, b_noise=1e8), rng=np.random.default_rng(0)
    )
    assert_refused(fit, "perfect scaling", "far above the largest batch measured (4096)")


def test_a_target_reached_at_step_zero_is_refused() -> None:
    points = synthetic_points(None, s_min=100.0, b_noise=300.0)
    points[0] = SweepPoint(8, (crossing(0.0, 8),) * 3)
    fit = fit_critical_batch(points, rng=np.random.default_rng(0))
    assert_refused(fit, "at or above the initial loss")


def test_a_refused_fit_has_no_curve() -> None:
    fit = fit_critical_batch([], rng=np.random.default_rng(0))
    assert_refused(fit, "only 0 of 0")
    with pytest.raises(SweepDataError, match="fit: was refused"):
        fit.steps_at(64)


@pytest.mark.parametrize(
    ("points", "match"),
    [
        ([SweepPoint(0, (crossing(10.0, 1),))], r"points\[0\].batch_size: must be an integer"),
        ([SweepPoint(True, (crossing(10.0, 1),))], r"points\[0\].batch_size"),
        ([SweepPoint(8, ())], r"points\[0\].crossings: needs one entry per seed"),
        ([SweepPoint(8, (crossing(math.nan, 8),))], r"points\[0\].crossings: steps must be finite"),
        (
            [SweepPoint(8, (crossing(10.0, 8),)), SweepPoint(8, (crossing(12.0, 8),))],
            r"points\[1\].batch_size: 8 appears twice",
        ),
    ],
)
def test_malformed_points_are_refused(points: list[SweepPoint], match: str) -> None:
    with pytest.raises(SweepDataError, match=match):
        fit_critical_batch(points, rng=np.random.default_rng(0))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_resamples": -1}, "n_resamples"),
        ({"confidence": 1.0}, "confidence"),
        ({"confidence": 0.0}, "confidence"),
    ],
)
def test_bad_bootstrap_settings_are_refused(kwargs: dict[str, float], match: str) -> None:
    points = synthetic_points(None, s_min=100.0, b_noise=300.0)
    with pytest.raises(SweepDataError, match=match):
        fit_critical_batch(points, rng=np.random.default_rng(0), **kwargs)  # type: ignore[arg-type]
