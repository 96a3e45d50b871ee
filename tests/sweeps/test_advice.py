"""The sweep recommendation (fastest in wall time, the knee) and the per-job advice sentence."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from service.science import (
    CriticalBatchFit,
    Interval,
    NoiseScaleSummary,
    SweepDataError,
    SweepPoint,
    TargetCrossing,
    advise_batch_size,
    fit_critical_batch,
    recommend,
)

BATCH_SIZES = [2**k for k in range(3, 13)]


def point(batch_size: int, *wall_times: float | None) -> SweepPoint:
    """A point with one crossing per seed at the given wall times (None: never reached)."""
    return SweepPoint(
        batch_size,
        tuple(
            None if t is None else TargetCrossing(100.0, 100.0 * batch_size, 1.0, t)
            for t in wall_times
        ),
    )


def exact_fit(b_noise: float, s_min: float = 100.0) -> CriticalBatchFit:
    points = [
        SweepPoint(B, (TargetCrossing(s_min * (1 + b_noise / B), 0.0, 0.0, 0.0),))
        for B in BATCH_SIZES
    ]
    return fit_critical_batch(points, rng=np.random.default_rng(0), n_resamples=0)


def with_interval(fit: CriticalBatchFit, low: float | None, high: float | None) -> CriticalBatchFit:
    return dataclasses.replace(fit, b_noise_ci=Interval(low, high))


def test_the_fastest_is_the_least_mean_wall_time_among_points_every_seed_reached() -> None:
    points = [
        point(32, 9.0, 11.0),  # mean 10
        point(256, 3.5, 4.5),  # mean 4: the fastest
        point(1024, 1.0, None),  # faster, but one seed never reached
        point(512, 6.0, 6.0),  # mean 6
    ]
    fastest = recommend(points, exact_fit(300.0)).fastest
    assert fastest.batch_size == 256
    assert fastest.wall_time_s == pytest.approx(4.0)
    assert fastest.wall_time_range == (3.5, 4.5)
    assert fastest.seeds == 2
    assert fastest.reason == (
        "batch 256 reached the target in the least wall time, 4.00 s (mean of 2 seeds, "
        "range 3.50–4.50 s), 1.5× faster than the next, batch 512 (6.00 s)"
    )


def test_overlapping_seed_ranges_are_said_to_be_not_clearly_apart() -> None:
    fastest = recommend([point(64, 3.0, 5.0), point(128, 4.5, 4.0)], exact_fit(300.0)).fastest
    assert fastest.batch_size == 64
    assert fastest.reason.endswith("their seed ranges overlap, so the two are not clearly apart")


def test_a_single_seed_says_the_spread_is_not_measured() -> None:
    fastest = recommend([point(64, 2.0)], exact_fit(300.0)).fastest
    assert fastest.reason == (
        "batch 64 reached the target in the least wall time, 2.00 s (one seed, so the "
        "run-to-run spread is not measured)"
    )


def test_no_point_at_the_target_has_no_fastest() -> None:
    fastest = recommend([point(64, None), point(128, 1.0, None)], exact_fit(300.0)).fastest
    assert (fastest.batch_size, fastest.wall_time_s) == (None, None)
    assert fastest.reason == "no batch size reached the target with every seed"


def test_the_knee_is_the_measured_batch_nearest_b_noise_in_log_distance() -> None:
    fit = with_interval(exact_fit(300.0), 210.0, 460.0)
    knee = recommend([], fit).knee
    # |ln(300/256)| = 0.16 < |ln(512/300)| = 0.53
    assert (knee.batch_size, knee.position) == (256, "within")
    assert knee.b_noise == pytest.approx(300.0, rel=1e-3)
    assert knee.b_noise_ci == Interval(210.0, 460.0)
    assert knee.reason == (
        "batch 256 is the measured batch nearest the knee B_noise ≈ 300 (95% CI 210–460), "
        "where steps and samples are each about twice their minimum (S_min ≈ 100 steps, "
        "E_min ≈ 30,000 samples): smaller batches save samples, larger ones save steps"
    )


def test_a_knee_beyond_the_largest_batch_is_beyond_the_measured_range() -> None:
    knee = recommend([], with_interval(exact_fit(20_000.0), 9000.0, None)).knee
    assert (knee.batch_size, knee.position) == (None, "above")
    assert knee.reason.startswith(
        "the knee B_noise ≈ 20,000 (95% CI ≥ 9,000, unbounded above) lies beyond the largest "
        "batch measured (4096)"
    )


def test_a_knee_below_the_smallest_batch_is_beyond_the_measured_range() -> None:
    knee = recommend([], exact_fit(3.0)).knee
    assert (knee.batch_size, knee.position) == (None, "below")
    assert "lies below the smallest batch measured (8)" in knee.reason
    assert "no interval: no bootstrap" in knee.reason


def test_a_knee_within_a_factor_root_two_of_the_range_is_the_end_point() -> None:
    fit = with_interval(exact_fit(5000.0), 3000.0, 9000.0)
    knee = recommend([], fit).knee  # 5000 < 4096·√2 = 5793
    assert (knee.batch_size, knee.position) == (4096, "within")


def test_a_refused_fit_has_no_knee_and_says_why() -> None:
    refused = exact_fit(300.0, s_min=3.0)
    knee = recommend([], refused).knee
    assert (knee.batch_size, knee.b_noise, knee.position) == (None, None, None)
    assert knee.reason == f"no knee: {refused.reason}"


def summary(
    b_simple_corrected: float | None = 900.0,
    spread: float | None = 3.0,
    loss: float = 0.41,
    reason: str | None = None,
) -> NoiseScaleSummary:
    return NoiseScaleSummary(
        b_simple=None if b_simple_corrected is None else b_simple_corrected * 1.01,
        b_simple_corrected=b_simple_corrected,
        loss_level=loss,
        train_rows=100_000,
        window=(8, 10),
        window_epochs=3,
        estimates=3,
        spread_factor=spread,
        trend_slope=-1.5,
        fold_change=20.0,
        first=(1, 45.0, 2.0),
        last=(10, 950.0, 0.4),
        reason=reason,
    )


def test_advice_for_a_batch_well_below_the_noise_scale() -> None:
    advice = advise_batch_size(32, summary())
    assert advice.verdict == "well below"
    assert advice.ratio == pytest.approx(32 / 900)
    assert (advice.noise_scale, advice.uncertainty_factor, advice.loss_level) == (900.0, 3.0, 0.41)
    assert advice.message == (
        "batch 32 is well below the measured noise scale ≈ 900 (±3×) at training loss 0.41: "
        "a batch several times larger, with its learning rate re-tuned, would need fewer steps "
        "for about the same samples"
    )
    assert (advice.noise_scale_lower_bound, advice.exact) == (None, False)


def test_advice_on_an_exact_noise_scale_says_so() -> None:
    advice = advise_batch_size(32, dataclasses.replace(summary(), exact=True))
    assert advice.exact is True
    assert advice.message.startswith(
        "batch 32 is well below the exact noise scale ≈ 900 (±3×) at training loss 0.41: "
    )


def test_advice_for_a_batch_near_the_noise_scale() -> None:
    advice = advise_batch_size(1024, summary(spread=1.43))
    assert advice.verdict == "near"
    assert advice.message.startswith(
        "batch 1024 is near the measured noise scale ≈ 900 (±1.4×) at training loss 0.41: "
        "this is the knee"
    )


def test_advice_for_a_batch_above_and_well_above_the_noise_scale() -> None:
    above = advise_batch_size(3000, summary())
    assert above.verdict == "above"
    assert above.message.startswith("batch 3000 is above the measured noise scale ≈ 900")
    assert "a smaller batch" in above.message
    assert "fewer samples" in above.message
    well_above = advise_batch_size(8192, summary())
    assert well_above.verdict == "well above"
    assert "several times smaller" in well_above.message


@pytest.mark.parametrize(
    ("batch_size", "verdict"),
    [(24, "well below"), (25, "below"), (49, "below"), (50, "near"), (200, "near"),
     (201, "above"), (400, "above"), (401, "well above")],
)  # fmt: skip
def test_verdict_thresholds_at_a_quarter_a_half_twice_and_four_times(
    batch_size: int, verdict: str
) -> None:
    assert advise_batch_size(batch_size, summary(b_simple_corrected=100.0)).verdict == verdict


def test_a_single_estimate_says_its_spread_is_not_measured() -> None:
    advice = advise_batch_size(32, summary(spread=None))
    assert advice.uncertainty_factor is None
    assert "(one estimate, spread not measured)" in advice.message


def test_no_noise_scale_gives_no_verdict_and_the_reason() -> None:
    advice = advise_batch_size(32, summary(b_simple_corrected=None, reason="the gradient is odd"))
    assert (advice.verdict, advice.noise_scale, advice.ratio) == (None, None, None)
    assert advice.message == "no advice for batch 32: the gradient is odd"


def bounded(lower_bound: float) -> NoiseScaleSummary:
    """B_simple not resolved, the corrected noise scale bounded below by ``lower_bound``."""
    return dataclasses.replace(
        summary(b_simple_corrected=None, reason="not resolved"),
        b_simple_lower_bound=lower_bound * 1.01,
        b_simple_corrected_lower_bound=lower_bound,
    )


def test_a_lower_bound_that_decides_it_gives_the_verdict() -> None:
    # ρ = B/B̂ ≤ 32/900 < 1/4 whatever B̂ is above the bound: well below for sure
    advice = advise_batch_size(32, bounded(900.0))
    assert advice.verdict == "well below"
    assert (advice.noise_scale, advice.ratio, advice.noise_scale_lower_bound) == (None, None, 900.0)
    assert advice.loss_level == 0.41
    assert advice.message == (
        "batch 32 is well below the noise scale, which is at least ≈ 900 at training loss 0.41 "
        "(a lower bound: the mean gradient is within the sampled noise, so B_simple is not "
        "resolved): a batch several times larger, with its learning rate re-tuned, would need "
        "fewer steps for about the same samples"
    )


@pytest.mark.parametrize(
    ("batch_size", "at_most", "known"),
    [
        (300, "0.33", "below or well below it, so a larger batch"),
        (900, "1.0", "near it or below, not above"),
        (2000, "2.2", "the bound does not place the batch"),
    ],
)
def test_a_lower_bound_that_does_not_decide_it_says_what_is_known(
    batch_size: int, at_most: str, known: str
) -> None:
    advice = advise_batch_size(batch_size, bounded(900.0))
    assert advice.verdict is None
    assert advice.noise_scale_lower_bound == 900.0
    assert advice.message.startswith(
        f"batch {batch_size} is at most {at_most}× the noise scale, which is at least ≈ 900 at "
        "training loss 0.41 (a lower bound: "
    )
    assert "more noise_scale_samples would resolve it): " + known in advice.message


@pytest.mark.parametrize("batch_size", [0, -4, True, 2.5])
def test_advice_needs_a_positive_integer_batch_size(batch_size: int) -> None:
    with pytest.raises(SweepDataError, match="batch_size: must be an integer ≥ 1"):
        advise_batch_size(batch_size, summary())
