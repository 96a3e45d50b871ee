"""Bootstrap intervals for the critical-batch fit's S_min, E_min and B_noise.

A bootstrap over points and seeds: whole batch-size points are resampled with replacement,
then each chosen point's seeds with replacement, censored runs like any other, and each
resample is refitted by the same censored profile fit (``service.science.profile``);
resamples with fewer than ``min_points`` distinct batch sizes that reached the target are
dropped. The interval is the percentile interval (2.5–97.5 % at 95 %). A resample whose optimum
sits on the edge of the search range counts as B_noise = 0 or ∞, so an interval end may be
unbounded (None). Resampling seeds inside resampled points counts the seed scatter twice, so
the interval errs wide (coverage measured in ``tests/sweeps/test_censored_fit.py``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from service.science.profile import Observations, censored_curve_fit

__all__ = ["Interval", "bootstrap_intervals"]


@dataclass(frozen=True)
class Interval:
    """A confidence interval; an end is None when the resamples put it out of reach of the
    data (B_noise below B_min/100 or above B_max·100)."""

    low: float | None
    high: float | None


def _percentile_interval(values: np.ndarray, confidence: float) -> Interval:
    """The percentile interval (inverted CDF: order statistics, no interpolation across ±inf);
    an end at 0 or ∞ is unbounded (None)."""
    ordered = np.sort(values)
    alpha = (1.0 - confidence) / 2.0
    n = ordered.shape[0]
    ends = [ordered[min(max(math.ceil(q * n) - 1, 0), n - 1)] for q in (alpha, 1.0 - alpha)]
    low, high = (float(v) if math.isfinite(v) and v > 0.0 else None for v in ends)
    return Interval(low, high)


def bootstrap_intervals(
    observations: Observations,
    rng: np.random.Generator,
    n_resamples: int,
    confidence: float,
    *,
    min_points: int,
    max_iterations: int,
) -> tuple[Interval, Interval, Interval, int] | None:
    """Intervals for (s_min, e_min, b_noise) and the resamples used, or None when no resample
    has ``min_points`` distinct batch sizes with a seed at the target; see the module
    docstring. ``max_iterations``: the censored fit's EM steps per resample."""
    n, M = observations.log_steps.shape
    chosen = rng.integers(0, n, size=(n_resamples, n))  # points, with replacement
    seeds_chosen = observations.seeds[chosen][..., None]  # (R, n, 1)
    draws = rng.integers(0, seeds_chosen, size=(n_resamples, n, M))
    used = np.arange(M) < seeds_chosen  # only the first m draws of an m-seed point
    y = observations.log_steps[chosen[..., None], draws] - observations.centre  # (R, n, M)
    censored = observations.censored[chosen[..., None], draws] & used
    reached = (used & ~censored).any(axis=2)  # (R, n): this draw of the point has a crossing
    flat = (np.arange(n_resamples)[:, None] * n + chosen).ravel()
    sizes = np.bincount(flat, weights=reached.ravel(), minlength=n_resamples * n)
    usable = (sizes.reshape(n_resamples, n) > 0).sum(axis=1) >= min_points
    if not usable.any():
        return None
    fit = censored_curve_fit(
        y[usable],
        censored[usable],
        (used / seeds_chosen)[usable],
        chosen[usable],
        observations.batch_sizes,
        max_iterations=max_iterations,
    )
    log_s_min = fit.params[:, 0] + observations.centre
    log_b_noise = fit.params[:, 1]
    b_noise = np.exp(log_b_noise)  # 0 or inf on an edge
    s_min = np.where(np.isposinf(log_b_noise), 0.0, np.exp(log_s_min))
    with np.errstate(invalid="ignore"):
        e_min = np.where(
            np.isfinite(log_b_noise),
            np.exp(log_s_min + log_b_noise),
            np.where(np.isneginf(log_b_noise), 0.0, np.inf),
        )
    return (
        _percentile_interval(s_min, confidence),
        _percentile_interval(e_min, confidence),
        _percentile_interval(b_noise, confidence),
        int(usable.sum()),
    )
