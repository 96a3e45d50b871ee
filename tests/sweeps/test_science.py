"""The measured gradient noise scale B_simple against the sweep's fitted B_noise, on a synthetic
linear problem where theory says they should agree: isotropic standardized features, known noise.

Why they agree (McCandlish et al. 2018, "An Empirical Model of Large-Batch Training", §2.2 and
Appendix A). Near θ the loss is quadratic, L(θ − εg) ≈ L − ε GᵀG + ½ ε² (GᵀHG + tr(HΣ)/B) for a
minibatch gradient g of B examples (mean G, per-example covariance Σ, Hessian H). The best step
ε_opt(B) = ε_max / (1 + B_noise/B) gains ΔL_opt(B) = ΔL_max / (1 + B_noise/B), with

    B_noise = tr(HΣ) / (GᵀHG),    and for H = h·I:    B_noise = tr(Σ) / |G|² = B_simple.

Summed over training this gives S(B) = S_min (1 + B_noise/B) steps to a target (§2.3), which the
sweep fits. Here: x ∈ ℝᵈ standardized (zero mean, unit variance, independent), θ = (w, b) with
p = d + 1 parameters, J = mean (y − x̃·θ)² with x̃ = (x, 1), y = x̃·θ* + σ ε. Then H = 2 X̃ᵀX̃/N
= 2I up to the sample correlations (O(√(p/N)) ≈ 3 % here), so B_noise = B_simple. With e = θ − θ*
and Δ = L − L* = |e|² (the excess loss): G = 2e, |G|² = 4Δ, and for Gaussian x the per-example
gradients g = 2x̃(x̃·e − ε) have tr(Σ) ≈ 4[(p + 1)Δ + p σ²], so

    B_simple ≈ (p + 1) + p σ² / Δ,

small far from the optimum and growing as 1/Δ near it: it is only meaningful at a loss level.

How the test measures each side:

- B_simple at the target: a constant-rate SGD run settles where the loss it removes per step
  equals the noise it adds, E Δ' = (1 − 2η)² Δ + (4η²/B)[(p + 1)Δ + pσ²], i.e. at
  Δ∞ = ηpσ² / (B(1 − η) − η(p + 1)); the rate is chosen for Δ∞ = 0.2 σ², the run's noise scale
  (``noise_scale`` on the whole training set, exact) is averaged over its last quarter by
  ``summarize_noise_scale``, and the loss level it was measured at *is* the sweep's target
  (≈ 1.2 × the optimal loss, just above the noise floor).
- B_noise: a sweep over B = 8 … 2048 (three seeds each), the learning rate tuned per batch size on
  a 2^¼-spaced grid until the best rate is interior, steps to the target interpolated between
  evaluations (every step up to ≈ 14 steps, 32 per decade after), fitted by
  ``fit_critical_batch``.

What to expect. The per-step theory assumes the best step at every step; a run here keeps one
rate, so a small batch must choose a rate whose noise floor lies under the target, and pays for
the slow final approach. The fit therefore lands at ≈ 1.2–1.6 × B_simple(target): B_simple is
0.6–0.8 × B_noise (over eight problem seeds: 0.66–0.97, S_min 2.5–2.8), inside the issue's 2× band.

S_min is small by nature here: with H = 2I one full-batch step at rate ½ lands on the optimum,
so S_min ≈ 1–3 steps whatever the target (a deeper target lengthens the small batches' runs,
not the large ones'), and the service's S_min ≥ 10 guard — meant for runs whose steps are
rounded and whose warm-up dominates — refuses this problem. The evaluations resolve every step
here, so the test lowers the guard (``min_s_min``) and also checks that the default refuses.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest

from service.core import TrainConfig, Training, TrainingDiverged
from service.core.config import Evaluation as EvaluationConfig
from service.science import (
    MIN_S_MIN,
    CriticalBatchFit,
    EpochNoise,
    Evaluation,
    NoiseScaleSummary,
    SweepDataError,
    SweepPoint,
    TargetCrossing,
    fit_critical_batch,
    steps_to_target,
    summarize_noise_scale,
)

N_FEATURES = 16  # d; p = d + 1 parameters with the bias
N_ROWS = 16_384  # ≥ 8 × the largest batch: the without-replacement correction stays ≤ 13 %
NOISE_SD = 1.0  # σ
INITIAL_EXCESS = 1e4  # |θ*|²: the initial loss is ≈ 10⁴ σ², four decades above the floor
EXCESS_AT_TARGET = 0.2  # Δ∞ / σ² of the measuring run: the target sits ≈ 1.2 × L*
BATCH_SIZES = tuple(2**k for k in range(3, 12))  # 8 … 2048
SEEDS = (1, 2, 3)
RATE_FACTOR = 2**0.25
MAX_STEPS = 4000


def isotropic_problem(seed: int) -> tuple[np.ndarray, np.ndarray, float]:
    """``(X (N, d), y (N,), L*)``: standardized Gaussian features, y = x̃·θ* + σ ε with
    |θ*|² = INITIAL_EXCESS, and L* the least-squares (optimal) training loss."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((N_ROWS, N_FEATURES))
    X = (X - X.mean(axis=0)) / X.std(axis=0)
    theta_star = rng.standard_normal(N_FEATURES + 1)
    theta_star *= math.sqrt(INITIAL_EXCESS) / np.linalg.norm(theta_star)
    y = X @ theta_star[:-1] + theta_star[-1] + NOISE_SD * rng.standard_normal(N_ROWS)
    X1 = np.column_stack([X, np.ones(N_ROWS)])
    residual = y - X1 @ np.linalg.lstsq(X1, y, rcond=None)[0]
    return X, y, float(residual @ residual) / N_ROWS


def plateau_rate(batch_size: int, excess: float) -> float:
    """η with the stationary excess Δ∞ = ηpσ²/(B(1 − η) − η(p + 1)) equal to ``excess``·σ²."""
    p = N_FEATURES + 1
    return excess * batch_size / (p + excess * (batch_size + p + 1))


def measure_noise_scale(X: np.ndarray, y: np.ndarray, *, epochs: int = 16) -> NoiseScaleSummary:
    """B_simple over the last quarter of a constant-rate batch-8 run at its noise floor."""
    config = TrainConfig(
        model="linear",
        batch_size=8,
        learning_rate=plateau_rate(8, EXCESS_AT_TARGET),
        epochs=epochs,
        dtype="float64",
        noise_scale=True,
        noise_scale_samples=N_ROWS,  # the whole training set: the estimate is exact
    )
    records = []
    for record in Training(X, y, config):
        assert record.noise_scale is not None
        records.append(EpochNoise.from_record(record.epoch, record.noise_scale))
    return summarize_noise_scale(records, train_rows=N_ROWS)


def crossing(
    X: np.ndarray, y: np.ndarray, batch_size: int, rate: float, seed: int, target: float
) -> TargetCrossing | None:
    """Where one run first reaches ``target`` (None: diverged, or not within MAX_STEPS)."""
    config = TrainConfig(
        model="linear",
        batch_size=batch_size,
        learning_rate=rate,
        epochs=math.ceil(MAX_STEPS * batch_size / N_ROWS),
        seed=seed,
        dtype="float64",
        evaluation=EvaluationConfig(on="train", per_decade=32, max_rows=N_ROWS),
    )
    evaluations: list[Evaluation] = []
    try:
        for record in Training(X, y, config):
            evaluations += [
                Evaluation(e.step, e.samples, e.samples / N_ROWS, 0.0, e.loss)
                for e in record.evaluations
            ]
            if min(e.loss for e in evaluations) <= target:
                break  # the rest of the run cannot change the first crossing
    except TrainingDiverged:
        return None
    return steps_to_target(evaluations, target)


@dataclass(frozen=True)
class TunedPoint:
    """A batch size at its best rate (fewest steps, geometric mean over seeds), and the rates
    tried."""

    point: SweepPoint
    rate: float
    rates_tried: tuple[float, ...]


def tune(X: np.ndarray, y: np.ndarray, batch_size: int, start: float, target: float) -> TunedPoint:
    """Walk a 2^¼ grid from ``start`` toward fewer steps until the best rate is interior."""
    tried: dict[int, tuple[float, tuple[TargetCrossing | None, ...]]] = {}

    def steps(k: int) -> float:
        if k not in tried:
            crossings = tuple(
                crossing(X, y, batch_size, start * RATE_FACTOR**k, seed, target) for seed in SEEDS
            )
            reached = [c.steps for c in crossings if c is not None]
            mean = math.exp(np.mean(np.log(reached))) if len(reached) == len(SEEDS) else math.inf
            tried[k] = (mean, crossings)
        return tried[k][0]

    k = 0
    while not (steps(k) <= steps(k - 1) and steps(k) <= steps(k + 1)):
        k = k - 1 if steps(k - 1) < steps(k + 1) else k + 1
        assert abs(k) < 30, f"no interior best rate for batch {batch_size}"
    rates = tuple(sorted(start * RATE_FACTOR**j for j in tried))
    return TunedPoint(SweepPoint(batch_size, tried[k][1]), start * RATE_FACTOR**k, rates)


@dataclass(frozen=True)
class Study:
    optimal_loss: float
    noise: NoiseScaleSummary
    points: tuple[TunedPoint, ...]
    fit: CriticalBatchFit


@pytest.fixture(scope="module")
def study() -> Study:
    X, y, optimal_loss = isotropic_problem(seed=0)
    noise = measure_noise_scale(X, y)
    target = noise.loss_level
    points = []
    rate = 0.05
    for batch_size in BATCH_SIZES:  # each search starts from the previous batch's best rate
        tuned = tune(X, y, batch_size, rate, target)
        points.append(tuned)
        rate = tuned.rate
    fit = fit_critical_batch(
        [t.point for t in points], rng=np.random.default_rng(0), n_resamples=300, min_s_min=1.0
    )
    return Study(optimal_loss, noise, tuple(points), fit)


def test_core_noise_scale_matches_the_closed_form_at_the_target(study: Study) -> None:
    noise = study.noise
    assert noise.b_simple_corrected is not None
    p = N_FEATURES + 1
    excess = noise.loss_level - study.optimal_loss
    expected = (p + 1) + p * study.optimal_loss / excess  # σ² ≈ L*: the residual variance
    assert noise.b_simple_corrected == pytest.approx(expected, rel=0.1)
    # the measuring run sat just above the noise floor, where the target should be
    assert 1.1 < noise.loss_level / study.optimal_loss < 1.35
    assert noise.window_epochs == 4
    assert noise.spread_factor is not None
    assert noise.spread_factor < 3.0


def test_best_learning_rate_is_interior_and_grows_with_the_batch(study: Study) -> None:
    for tuned in study.points:
        assert tuned.point.reached
        assert tuned.rates_tried[0] < tuned.rate < tuned.rates_tried[-1]
    rates = [t.rate for t in study.points]
    # noise-limited small batches need small rates; the largest run near the 1/h = ½ limit
    assert rates[-1] / rates[0] > 4.0
    assert 0.25 < rates[-1] < 0.6


def test_measured_b_simple_agrees_with_fitted_b_noise_within_2x(study: Study) -> None:
    fit = study.fit
    assert fit.b_noise is not None, fit.reason
    assert fit.s_min is not None
    assert fit.r2_log is not None
    assert fit.r2_log > 0.95
    assert study.noise.b_simple_corrected is not None
    ratio = study.noise.b_simple_corrected / fit.b_noise
    assert 0.5 <= ratio <= 2.0, (study.noise.b_simple_corrected, fit.b_noise)
    # the knee lies inside the measured range, with a bootstrap interval around it
    assert BATCH_SIZES[0] < fit.b_noise < BATCH_SIZES[-1]
    assert fit.b_noise_ci is not None
    assert fit.b_noise_ci.low is not None
    assert fit.b_noise_ci.high is not None
    assert fit.b_noise_ci.low < fit.b_noise < fit.b_noise_ci.high


def test_isotropic_problem_has_small_s_min_and_the_default_guard_refuses(study: Study) -> None:
    assert study.fit.s_min is not None
    assert study.fit.s_min < MIN_S_MIN
    refused = fit_critical_batch(
        [t.point for t in study.points], rng=np.random.default_rng(0), n_resamples=0
    )
    assert refused.b_noise is None
    assert refused.reason is not None
    assert "too well-conditioned" in refused.reason
    assert "a deeper target may not help" in refused.reason


@pytest.mark.parametrize("bad", [-1.0, math.nan, math.inf])
def test_fit_refuses_a_bad_min_s_min(bad: float) -> None:
    points = [SweepPoint(b, (TargetCrossing(100.0, 100.0 * b, 1.0, 1.0),)) for b in (8, 16, 32)]
    with pytest.raises(SweepDataError, match="min_s_min"):
        fit_critical_batch(points, rng=np.random.default_rng(0), min_s_min=bad)
