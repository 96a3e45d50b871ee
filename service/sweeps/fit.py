"""The critical batch size: fit S(B) = S_min (1 + B_noise / B) to a sweep's steps to target.

McCandlish et al. 2018 ("An Empirical Model of Large-Batch Training", §2.3): with the learning
rate re-tuned per batch size, the steps S and samples E = B·S needed to reach a given loss trade
off as S/S_min − 1 = (E/E_min − 1)⁻¹, i.e.

    S(B) = S_min (1 + B_noise / B),    E(B) = E_min (1 + B / B_noise),    E_min = S_min · B_noise.

Below B_noise doubling the batch nearly halves the steps; above it, it nearly doubles the samples.

How it is fitted, and why: the measured S spans one to three decades (8 … 4096 samples per step)
with errors that are multiplicative (seed-to-seed scatter of a few to tens of percent), so each
point's *relative* error must count equally. A plain least squares of S on 1/B is dominated by the
smallest batches' large S and returns nonsense (B = 8 … 4096, 3 seeds, 10 % noise, B_noise = 2000:
within 20 % in 1 of 20 replicates, negative in 3, median error 1.9×; this fit: 20 of 20, median
error 5 % — ``tests/sweeps/test_fit.py`` shows it). Two relative fits were compared on synthetic
data (B = 8 … 4096, 3 seeds, 5–30 % log-normal noise, B_noise = 30 … 3000, 500 replicates each):
least squares of S on 1/B with weights 1/S, and least squares in log space, min Σ (ln S − ln Ŝ(B))².
Their accuracy is the same within a few percent (median |ln(B̂/B)| 0.02–0.19, no bias); log space is
kept because it is better behaved: S_min > 0 and B_noise > 0 hold by construction (the weighted
linear fit returns a negative S_min or B_noise when a critical batch lies outside the range, and
must then be patched), it is the maximum-likelihood fit for log-normal scatter, its weights are not
the noisy observations themselves, and an unmeasurable B_noise shows as the optimum pinned to the
edge of the search range. For a fixed B_noise the best ln S_min is the mean of ln S − ln(1 +
B_noise/B), so the fit is a one-dimensional search over ln B_noise (a grid of 200 points per decade
over [B_min/100, B_max·100], refined by a parabola), vectorised across the bootstrap's resamples.

A point's S is the geometric mean over its seeds, and a point counts only when every seed
reached the target (a run that never reached it has an unknown, larger S; averaging only the
others would bias the point low).

Uncertainty: a bootstrap over points and seeds — whole batch-size points are resampled with
replacement, then each chosen point's seeds with replacement — refitted per resample (resamples
with fewer than three distinct batch sizes are dropped); the interval is the percentile interval
(2.5–97.5 % by default). A resample whose optimum sits on the edge of the search range counts as
B_noise = 0 or ∞, so an interval end may be unbounded (None). Resampling seeds inside resampled
points counts the seed scatter twice, so the interval errs wide: 96 of 100 synthetic replicates
(B = 8 … 4096, 3 seeds, 15 % noise, 200 resamples) covered the true B_noise at 95 %.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from service.sweeps.targets import SweepDataError, TargetCrossing

__all__ = [
    "EASY_STEPS",
    "MIN_POINTS",
    "MIN_S_MIN",
    "CriticalBatchFit",
    "Interval",
    "SweepPoint",
    "deeper_target_advice",
    "fit_critical_batch",
]

MIN_POINTS = 3
"""Fewest batch sizes (every seed at the target) a fit accepts: two parameters, one check."""
MIN_S_MIN = 10.0
"""Smallest S_min (steps) a fit accepts: below it the target is reached in a handful of steps
at large batches, where steps are integers and warm-up effects dominate."""

EASY_STEPS = 5.0
"""Largest-batch steps to target at or under which a small S_min is blamed on the problem
(too well-conditioned: any target is a few full-batch steps away), not on the target."""

_SEARCH_SPAN = 100.0  # B_noise is searched in [B_min / 100, B_max · 100]
_GRID_PER_DECADE = 200
_METHOD = "log-space least squares of ln S on ln S_min + ln(1 + B_noise/B)"


@dataclass(frozen=True)
class SweepPoint:
    """One batch size of a sweep: its crossing of the target per seed (None: never reached)."""

    batch_size: int
    crossings: tuple[TargetCrossing | None, ...]

    @property
    def reached(self) -> bool:
        """Every seed reached the target."""
        return bool(self.crossings) and all(c is not None for c in self.crossings)


@dataclass(frozen=True)
class Interval:
    """A confidence interval; an end is None when the resamples put it out of reach of the
    data (B_noise below B_min/100 or above B_max·100)."""

    low: float | None
    high: float | None


@dataclass(frozen=True)
class CriticalBatchFit:
    """The fitted S(B) = s_min (1 + b_noise / B) and E(B) = e_min (1 + B / b_noise).

    ``s_min`` in steps, ``e_min`` in samples, ``b_noise`` in samples per step; all None with
    ``reason`` when the fit is refused. ``r2_log``: 1 − Σ(ln S − ln Ŝ)² / Σ(ln S − mean ln S)²;
    ``rms_relative``: √mean((S/Ŝ − 1)²). ``batch_sizes``: the points fitted (every seed
    reached); ``resamples``: bootstrap resamples used for the intervals.
    """

    s_min: float | None
    e_min: float | None
    b_noise: float | None
    s_min_ci: Interval | None
    e_min_ci: Interval | None
    b_noise_ci: Interval | None
    r2_log: float | None
    rms_relative: float | None
    batch_sizes: tuple[int, ...]
    n_points: int
    confidence: float
    resamples: int
    method: str = _METHOD
    reason: str | None = None

    def steps_at(self, batch_size: np.ndarray | float) -> np.ndarray:
        """Ŝ(B) = s_min (1 + b_noise / B), steps; shape of ``batch_size``."""
        if self.s_min is None or self.b_noise is None:
            raise SweepDataError("fit", f"was refused: {self.reason}")
        B = np.asarray(batch_size, dtype=np.float64)
        steps: np.ndarray = self.s_min * (1.0 + self.b_noise / B)
        return steps

    def samples_at(self, batch_size: np.ndarray | float) -> np.ndarray:
        """Ê(B) = B · Ŝ(B) = e_min (1 + B / b_noise), samples; shape of ``batch_size``."""
        samples: np.ndarray = np.asarray(batch_size, dtype=np.float64) * self.steps_at(batch_size)
        return samples


def _refused(
    points: Sequence[SweepPoint], fitted: Sequence[int], confidence: float, reason: str
) -> CriticalBatchFit:
    return CriticalBatchFit(
        None, None, None, None, None, None, None, None, tuple(fitted), len(points), confidence, 0,
        reason=reason,
    )  # fmt: skip


def _check_points(points: Sequence[SweepPoint]) -> None:
    seen: set[int] = set()
    for index, point in enumerate(points):
        size = point.batch_size
        if not isinstance(size, int | np.integer) or isinstance(size, bool) or size < 1:
            raise SweepDataError(f"points[{index}].batch_size", f"must be an integer ≥ 1: {size!r}")
        if size in seen:
            raise SweepDataError(
                f"points[{index}].batch_size", f"{size} appears twice (put its seeds together)"
            )
        seen.add(int(size))
        if not point.crossings:
            raise SweepDataError(f"points[{index}].crossings", "needs one entry per seed")
        for crossing in point.crossings:
            if crossing is not None and not math.isfinite(crossing.steps):
                raise SweepDataError(f"points[{index}].crossings", "steps must be finite")


@dataclass(frozen=True)
class _Profile:
    """The log-space fit per resample: ln B_noise (±inf on an edge) and ln S_min, shape (R,)."""

    log_b_noise: np.ndarray
    log_s_min: np.ndarray


def _profile_fit(
    counts: np.ndarray, y_sums: np.ndarray, y_sq_sums: np.ndarray, batch_sizes: np.ndarray
) -> _Profile:
    """Fit R data sets at once. Data set r has ``counts[r, p]`` observations at batch size
    ``batch_sizes[p]`` whose ln S sum to ``y_sums[r, p]``; ``y_sq_sums[r]`` = Σ (ln S)².

    For a grid of B_noise, f_kp = ln(1 + B_noise_k / B_p) and the residual sum of squares after
    the optimal ln S_min = mean(y − f) is Σ(y − f)² − (Σ(y − f))² / n, all from matrix products:
    Σ(y − f)² = Σy² − 2 Y fᵀ + C (f²)ᵀ and Σ(y − f) = Σy − C fᵀ, shapes (R, K).
    """
    lo = math.log10(float(batch_sizes.min()) / _SEARCH_SPAN)
    hi = math.log10(float(batch_sizes.max()) * _SEARCH_SPAN)
    K = max(math.ceil((hi - lo) * _GRID_PER_DECADE) + 1, 3)
    log_grid = np.linspace(lo, hi, K) * math.log(10.0)  # natural log of B_noise
    F = np.log1p(np.exp(log_grid)[:, None] / batch_sizes[None, :])  # (K, n)
    n_obs = counts.sum(axis=1)  # (R,)
    sum_resid = y_sums.sum(axis=1)[:, None] - counts @ F.T  # (R, K)
    sum_sq = y_sq_sums[:, None] - 2.0 * (y_sums @ F.T) + counts @ (F * F).T
    objective = sum_sq - sum_resid**2 / n_obs[:, None]
    best = np.argmin(objective, axis=1)  # (R,)
    interior = (best > 0) & (best < K - 1)
    k = np.clip(best, 1, K - 2)
    rows = np.arange(best.shape[0])
    o_left, o_mid, o_right = objective[rows, k - 1], objective[rows, k], objective[rows, k + 1]
    curvature = o_left - 2.0 * o_mid + o_right
    with np.errstate(divide="ignore", invalid="ignore"):
        shift = np.where(curvature > 0.0, 0.5 * (o_left - o_right) / curvature, 0.0)
    step = log_grid[1] - log_grid[0]
    log_b = np.where(interior, log_grid[best] + np.clip(shift, -1.0, 1.0) * step, log_grid[best])
    # ln S_min at the refined B_noise: mean over observations of y − ln(1 + B_noise / B)
    f_refined = np.log1p(np.exp(log_b)[:, None] / batch_sizes[None, :])  # (R, n)
    log_s = (y_sums.sum(axis=1) - (counts * f_refined).sum(axis=1)) / n_obs
    log_b = np.where(best == 0, -np.inf, np.where(best == K - 1, np.inf, log_b))
    return _Profile(log_b, log_s)


def _percentile_interval(values: np.ndarray, confidence: float) -> Interval:
    """The percentile interval (inverted CDF: order statistics, no interpolation across ±inf);
    an end at 0 or ∞ is unbounded (None)."""
    ordered = np.sort(values)
    alpha = (1.0 - confidence) / 2.0
    n = ordered.shape[0]
    ends = [ordered[min(max(math.ceil(q * n) - 1, 0), n - 1)] for q in (alpha, 1.0 - alpha)]
    low, high = (float(v) if math.isfinite(v) and v > 0.0 else None for v in ends)
    return Interval(low, high)


def _bootstrap(
    log_steps: Sequence[np.ndarray],
    batch_sizes: np.ndarray,
    rng: np.random.Generator,
    n_resamples: int,
    confidence: float,
) -> tuple[Interval, Interval, Interval, int] | None:
    """Intervals for (s_min, e_min, b_noise) and the resamples used, or None when no resample
    has three distinct batch sizes; see the module docstring."""
    n = len(log_steps)
    seeds = np.array([len(s) for s in log_steps])
    padded = np.zeros((n, int(seeds.max())))
    for p, values in enumerate(log_steps):
        padded[p, : values.shape[0]] = values
    chosen = rng.integers(0, n, size=(n_resamples, n))  # points, with replacement
    seeds_chosen = seeds[chosen][..., None]  # (R, n, 1)
    draws = rng.integers(0, seeds_chosen, size=(n_resamples, n, padded.shape[1]))
    used = np.arange(padded.shape[1]) < seeds_chosen  # only the first m draws of an m-seed point
    y = np.where(used, padded[chosen[..., None], draws], 0.0).sum(axis=2) / seeds_chosen[..., 0]
    flat = (np.arange(n_resamples)[:, None] * n + chosen).ravel()
    counts = np.bincount(flat, minlength=n_resamples * n).reshape(n_resamples, n).astype(float)
    y_sums = np.bincount(flat, weights=y.ravel(), minlength=n_resamples * n).reshape(n_resamples, n)
    usable = (counts > 0).sum(axis=1) >= MIN_POINTS
    if not usable.any():
        return None
    centre = float(np.mean([values.mean() for values in log_steps]))
    y_centred = y - centre  # the shift cancels in the fit; it keeps Σy² small (no cancellation)
    profile = _profile_fit(
        counts[usable],
        y_sums[usable] - centre * counts[usable],
        (y_centred**2).sum(axis=1)[usable],
        batch_sizes,
    )
    b_noise = np.exp(profile.log_b_noise)  # 0 or inf on an edge
    s_min = np.where(np.isposinf(profile.log_b_noise), 0.0, np.exp(profile.log_s_min + centre))
    with np.errstate(invalid="ignore"):
        e_min = np.where(
            np.isfinite(profile.log_b_noise),
            np.exp(profile.log_s_min + centre + profile.log_b_noise),
            np.where(np.isneginf(profile.log_b_noise), 0.0, np.inf),
        )
    return (
        _percentile_interval(s_min, confidence),
        _percentile_interval(e_min, confidence),
        _percentile_interval(b_noise, confidence),
        int(usable.sum()),
    )


def deeper_target_advice(
    *, target_fraction: float | None = None, target_loss: float | None = None
) -> str:
    """How to ask for a deeper target than the one a sweep used, for the shallow-target
    refusal: an absolute ``target_loss`` → a lower one; a ``target_fraction`` f below 0.95 →
    0.95; from 0.95 up → halve the gap left, 1 − (1 − f)/2 (0.95 → 0.975), or an absolute
    target near the best loss."""
    if target_loss is not None:
        return f"a lower target_loss than {target_loss:.4g}"
    if target_fraction is None or target_fraction < 0.95:
        return "target_fraction 0.95"
    deeper = 1.0 - (1.0 - target_fraction) / 2.0
    return (
        f"target_fraction {deeper:.6g} (this sweep used {target_fraction:g}), or an absolute "
        "target_loss nearer the best loss reached"
    )


def _small_s_min_reason(
    s_min: float, min_s_min: float, largest_steps: float, largest_batch: int, deeper_target: str
) -> str:
    """Why S_min < ``min_s_min`` refuses the fit. When the largest batch reaches the target in
    at most ``EASY_STEPS`` steps the problem is likely too easy: on a well-conditioned loss
    (Hessian ∝ I) a large batch reaches *any* target in a few steps, so a deeper target mostly
    lengthens the small batches' runs and may not lift S_min over the guard."""
    head = f"S_min ≈ {s_min:.3g} steps, under the {min_s_min:g} a fit needs"
    if largest_steps <= EASY_STEPS:
        return (
            f"{head}: the largest batch ({largest_batch}) reaches the target in "
            f"{largest_steps:.2g} steps, so the problem is too well-conditioned (too easy) for "
            "a critical batch to be measurable — large batches reach any target in a few steps "
            "there, and a deeper target may not help; harder data would (ill-conditioned or "
            "correlated features, not standardized away). If the target is only too shallow, "
            f"ask for a deeper one, e.g. {deeper_target}"
        )
    return (
        f"{head}: the target is too shallow to measure a critical batch (the largest batch, "
        f"{largest_batch}, reaches it in {largest_steps:.3g} steps); ask for a deeper target, "
        f"e.g. {deeper_target}"
    )


def fit_critical_batch(
    points: Sequence[SweepPoint],
    *,
    rng: np.random.Generator,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    deeper_target: str = "target_fraction 0.95",
    min_s_min: float = MIN_S_MIN,
) -> CriticalBatchFit:
    """Fit S(B) = S_min (1 + B_noise/B) to the points where every seed reached the target.

    Refused (values None, ``reason`` set) with fewer than three such points, when B_noise is
    not measurable in the range (the optimum on an edge of [B_min/100, B_max·100]), or when
    S_min < ``min_s_min`` steps (default ``MIN_S_MIN`` = 10), suggesting ``deeper_target`` (see
    :func:`deeper_target_advice`). Lower ``min_s_min`` only where S_min is small by nature and
    steps are resolved to the step: an isotropic quadratic reaches its optimum in about one
    full-batch step whatever the target (``tests/sweeps/test_science.py``).
    ``rng`` drives the bootstrap (``n_resamples`` = 0: no intervals).
    Raises :class:`SweepDataError` on malformed points.
    """
    _check_points(points)
    if not isinstance(n_resamples, int) or n_resamples < 0:
        raise SweepDataError("n_resamples", f"must be an integer ≥ 0, not {n_resamples!r}")
    if not (math.isfinite(confidence) and 0.0 < confidence < 1.0):
        raise SweepDataError("confidence", f"must lie strictly between 0 and 1: {confidence!r}")
    if not (math.isfinite(min_s_min) and min_s_min >= 0.0):
        raise SweepDataError("min_s_min", f"must be a finite number ≥ 0, not {min_s_min!r}")
    reached = sorted((p for p in points if p.reached), key=lambda p: p.batch_size)
    fitted = [int(p.batch_size) for p in reached]
    if len(reached) < MIN_POINTS:
        return _refused(
            points,
            fitted,
            confidence,
            f"only {len(reached)} of {len(points)} batch sizes reached the target with every "
            f"seed: fitting a critical batch needs at least {MIN_POINTS}",
        )
    steps = [np.array([c.steps for c in p.crossings if c is not None]) for p in reached]
    if any(np.any(s <= 0.0) for s in steps):
        return _refused(
            points, fitted, confidence, "the target is at or above the initial loss (step 0)"
        )
    log_steps = [np.log(s) for s in steps]
    B = np.array(fitted, dtype=np.float64)
    y = np.array([float(s.mean()) for s in log_steps])  # ln of each point's geometric mean
    centre = float(y.mean())
    profile = _profile_fit(
        np.ones((1, B.size)), (y - centre)[None, :], np.array([((y - centre) ** 2).sum()]), B
    )
    log_b = float(profile.log_b_noise[0])
    if log_b == -math.inf:
        return _refused(
            points,
            fitted,
            confidence,
            "no measurable critical batch in this range: steps to target barely fall as the "
            f"batch grows, so B_noise lies far below the smallest batch measured ({fitted[0]}) "
            "and every batch here is past the knee (larger batches buy no fewer steps); "
            "measure smaller batches to find it",
        )
    if log_b == math.inf:
        return _refused(
            points,
            fitted,
            confidence,
            "no measurable critical batch in this range: steps to target fall as 1/B across "
            "every batch measured (perfect scaling), so B_noise lies far above the largest "
            f"batch measured ({fitted[-1]}); measure larger batches to find the knee",
        )
    b_noise = math.exp(log_b)
    s_min = math.exp(float(profile.log_s_min[0]) + centre)
    if not (math.isfinite(b_noise) and math.isfinite(s_min) and b_noise > 0.0):
        return _refused(points, fitted, confidence, "the fit did not converge to finite values")
    if s_min < min_s_min:
        return _refused(points, fitted, confidence, _small_s_min_reason(
            s_min, min_s_min, math.exp(float(y[-1])), fitted[-1], deeper_target
        ))  # fmt: skip
    log_fitted = np.log(s_min) + np.log1p(b_noise / B)
    ss_total = float(((y - y.mean()) ** 2).sum())
    ss_resid = float(((y - log_fitted) ** 2).sum())
    r2_log = 1.0 - ss_resid / ss_total if ss_total > 0.0 else None
    rms_relative = float(np.sqrt(np.mean((np.exp(y - log_fitted) - 1.0) ** 2)))
    intervals: tuple[Interval | None, Interval | None, Interval | None] = (None, None, None)
    used = 0
    if n_resamples > 0:
        boot = _bootstrap(log_steps, B, rng, n_resamples, confidence)
        if boot is not None:
            intervals, used = boot[:3], boot[3]
    return CriticalBatchFit(
        s_min=s_min,
        e_min=s_min * b_noise,
        b_noise=b_noise,
        s_min_ci=intervals[0],
        e_min_ci=intervals[1],
        b_noise_ci=intervals[2],
        r2_log=r2_log,
        rms_relative=rms_relative,
        batch_sizes=tuple(fitted),
        n_points=len(points),
        confidence=confidence,
        resamples=used,
    )
