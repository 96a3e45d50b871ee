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

Seeds that never reached the target are right-censored, not dropped: a run that stopped after
c steps says ln S > ln c (``SweepPoint.steps_run``), and averaging only the seeds that reached
would bias the point low (the slow seeds are the missing ones). The fit is the maximum
likelihood for log-normal scatter σ with right-censoring (Tobit), by EM
(``service.sweeps.censored``): each censored ln S is replaced by E[ln S | ln S > ln c] under the
current curve and σ, the curve is refitted by the profile fit below, σ re-estimated with the
conditional variances, until nothing moves. Every batch size weighs the same (each of its m
observations 1/m), so without a censored observation this is exactly the fit above on each
point's geometric mean. A point enters when one of its seeds reached the target; a point where
none did enters with its censored runs only (a lower bound on S at that B) and does not count
toward ``MIN_POINTS``; a seed without a crossing or a step count carries no information and is
left out (then the point's S errs low: pass ``steps_run``).

Uncertainty: a bootstrap over points and seeds — whole batch-size points are resampled with
replacement, then each chosen point's seeds with replacement, censored runs like any other —
refitted per resample by the same fit (resamples with fewer than three distinct batch sizes
that reached the target are dropped); the interval is the percentile interval (2.5–97.5 % by
default). A resample whose optimum sits on the edge of the search range counts as B_noise = 0
or ∞, so an interval end may be unbounded (None). Resampling seeds inside resampled points
counts the seed scatter twice, so the interval errs wide: 96 of 100 synthetic replicates (B =
8 … 4096, 3 seeds, 15 % noise, 200 resamples) covered the true B_noise at 95 %, and 30 of 30
with ~30 % of the runs censored (``tests/sweeps/test_censored_fit.py``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache, partial

import numpy as np

from service.sweeps.censored import MAX_ITERATIONS, CensoredFit, censored_normal_em
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
"""Fewest batch sizes (a seed at the target) a fit accepts: two parameters, one check."""
MIN_S_MIN = 10.0
"""Smallest S_min (steps) a fit accepts: below it the target is reached in a handful of steps
at large batches, where steps are integers and warm-up effects dominate."""

EASY_STEPS = 5.0
"""Largest-batch steps to target at or under which a small S_min is blamed on the problem
(too well-conditioned: any target is a few full-batch steps away), not on the target."""

_SEARCH_SPAN = 100.0  # B_noise is searched in [B_min / 100, B_max · 100]
_GRID_PER_DECADE = 200
_EM_MAX_ITERATIONS = MAX_ITERATIONS
_WINDOW = 20  # grid points each side searched by the censored fit's later M-steps
_METHOD = "log-space least squares of ln S on ln S_min + ln(1 + B_noise/B)"
_METHOD_CENSORED = (
    "log-space maximum likelihood of ln S on ln S_min + ln(1 + B_noise/B), runs that never "
    "reached the target right-censored (Tobit, EM)"
)


@dataclass(frozen=True)
class SweepPoint:
    """One batch size of a sweep: its crossing of the target per seed (None: never reached),
    and optionally the optimizer steps each seed's run made (aligned with ``crossings``). A
    None crossing with ``steps_run[i]`` > 0 is a censored observation S > steps_run[i]; one
    without (no ``steps_run``, or 0) is left out of the fit. A reached seed's entry is unused."""

    batch_size: int
    crossings: tuple[TargetCrossing | None, ...]
    steps_run: tuple[float, ...] = ()

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
    ``rms_relative``: √mean((S/Ŝ − 1)²), S each point's geometric mean with every censored
    ln S at its fitted E[ln S | ln S > ln c]. ``batch_sizes``: the points that entered the fit
    (a seed reached, or censored runs only), ``reached_batch_sizes`` those where a seed
    reached the target; ``resamples``: bootstrap resamples used for the
    intervals; ``censored``: censored runs used; ``sigma_log``: the fitted seed scatter σ of
    ln S (maximum likelihood, so biased low by the two fitted parameters).
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
    censored: int = 0
    sigma_log: float | None = None
    reached_batch_sizes: tuple[int, ...] = ()

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
    points: Sequence[SweepPoint],
    fitted: Sequence[int],
    confidence: float,
    reason: str,
    censored: int = 0,
) -> CriticalBatchFit:
    return CriticalBatchFit(
        None, None, None, None, None, None, None, None, tuple(fitted), len(points), confidence, 0,
        reason=reason, censored=censored,
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
        if point.steps_run and len(point.steps_run) != len(point.crossings):
            raise SweepDataError(
                f"points[{index}].steps_run",
                f"needs one entry per seed ({len(point.crossings)}, as crossings) or none, "
                f"not {len(point.steps_run)}",
            )
        for seed, steps in enumerate(point.steps_run):
            number = isinstance(steps, int | float | np.integer | np.floating)
            if not number or isinstance(steps, bool) or not (math.isfinite(steps) and steps >= 0):
                raise SweepDataError(
                    f"points[{index}].steps_run[{seed}]",
                    f"must be a finite number of steps ≥ 0 (0: unknown), not {steps!r}",
                )


def _seed_observations(point: SweepPoint) -> tuple[list[float], list[float]]:
    """(steps to target of the seeds that reached it, steps run by those censored)."""
    reached = [c.steps for c in point.crossings if c is not None]
    steps_run = point.steps_run or (0.0,) * len(point.crossings)
    bounds = [
        float(n) for c, n in zip(point.crossings, steps_run, strict=True) if c is None and n > 0
    ]
    return reached, bounds


@dataclass(frozen=True)
class _Profile:
    """The log-space fit per resample: ln B_noise (±inf on an edge) and ln S_min, shape (R,),
    and the index of the best point of the ln B_noise grid (to search near it next time)."""

    log_b_noise: np.ndarray
    log_s_min: np.ndarray
    grid_index: np.ndarray


@lru_cache(maxsize=16)
def _grid(batch_sizes: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray]:
    """The ln B_noise grid (K,) over [B_min/100, B_max·100] and f_kp = ln(1 + B_noise_k / B_p),
    (K, n); read-only (shared by every call with these batch sizes)."""
    B = np.array(batch_sizes)
    lo = math.log10(float(B.min()) / _SEARCH_SPAN)
    hi = math.log10(float(B.max()) * _SEARCH_SPAN)
    K = max(math.ceil((hi - lo) * _GRID_PER_DECADE) + 1, 3)
    log_grid = np.linspace(lo, hi, K) * math.log(10.0)  # natural log of B_noise
    F = np.log1p(np.exp(log_grid)[:, None] / B[None, :])
    log_grid.flags.writeable = F.flags.writeable = False
    return log_grid, F


def _profile_fit(
    counts: np.ndarray,
    y_sums: np.ndarray,
    y_sq_sums: np.ndarray,
    batch_sizes: np.ndarray,
    near: np.ndarray | None = None,
) -> _Profile:
    """Fit R data sets at once. Data set r has ``counts[r, p]`` observations at batch size
    ``batch_sizes[p]`` whose ln S sum to ``y_sums[r, p]``; ``y_sq_sums[r]`` = Σ (ln S)².

    For a grid of B_noise, f_kp = ln(1 + B_noise_k / B_p) and the residual sum of squares after
    the optimal ln S_min = mean(y − f) is Σ(y − f)² − (Σ(y − f))² / n, all from matrix products:
    Σ(y − f)² = Σy² − 2 Y fᵀ + C (f²)ᵀ and Σ(y − f) = Σy − C fᵀ, shapes (R, K). With ``near``
    (R,) grid indices, only ±``_WINDOW`` grid points around each are searched (the censored
    fit's later iterations move little); a row whose best is on its window's edge is searched
    again over the whole grid, so the answer is the whole grid's when its optimum is unique.
    """
    log_grid, F = _grid(tuple(float(b) for b in batch_sizes))
    K = log_grid.size
    R = counts.shape[0]
    if near is None:
        index = np.broadcast_to(np.arange(K), (R, K))
        sum_c_f, sum_y_f, sum_c_f2 = counts @ F.T, y_sums @ F.T, counts @ (F * F).T
    else:
        centre = np.clip(near, _WINDOW, K - 1 - _WINDOW)
        index = centre[:, None] + np.arange(-_WINDOW, _WINDOW + 1)  # (R, L)
        local = F[index]  # (R, L, n)
        sum_c_f = np.einsum("rp,rlp->rl", counts, local)
        sum_y_f = np.einsum("rp,rlp->rl", y_sums, local)
        sum_c_f2 = np.einsum("rp,rlp->rl", counts, local * local)
    n_obs = counts.sum(axis=1)  # (R,)
    sum_resid = y_sums.sum(axis=1)[:, None] - sum_c_f  # (R, L)
    sum_sq = y_sq_sums[:, None] - 2.0 * sum_y_f + sum_c_f2
    objective = sum_sq - sum_resid**2 / n_obs[:, None]
    rows = np.arange(R)
    at = np.argmin(objective, axis=1)  # (R,), a position in the row's window
    best = index[rows, at]
    L = objective.shape[1]
    interior = (best > 0) & (best < K - 1)
    k = np.clip(at, 1, L - 2)
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
    if near is not None:
        again = np.flatnonzero(interior & ((at == 0) | (at == L - 1)))
        if again.size:
            whole = _profile_fit(counts[again], y_sums[again], y_sq_sums[again], batch_sizes)
            log_b[again], log_s[again] = whole.log_b_noise, whole.log_s_min
            best[again] = whole.grid_index
    return _Profile(log_b, log_s, best)


def _percentile_interval(values: np.ndarray, confidence: float) -> Interval:
    """The percentile interval (inverted CDF: order statistics, no interpolation across ±inf);
    an end at 0 or ∞ is unbounded (None)."""
    ordered = np.sort(values)
    alpha = (1.0 - confidence) / 2.0
    n = ordered.shape[0]
    ends = [ordered[min(max(math.ceil(q * n) - 1, 0), n - 1)] for q in (alpha, 1.0 - alpha)]
    low, high = (float(v) if math.isfinite(v) and v > 0.0 else None for v in ends)
    return Interval(low, high)


@dataclass(frozen=True)
class _Observations:
    """The points that entered the fit, by batch size, their seeds padded to the most, M:
    ``log_steps`` (P, M) ln S, or ln steps_run where ``censored``; ``seeds`` (P,) observations
    per point; ``centre`` their mean, subtracted in the fits (it keeps Σy² small)."""

    batch_sizes: np.ndarray
    log_steps: np.ndarray
    censored: np.ndarray
    seeds: np.ndarray
    centre: float

    @classmethod
    def of(cls, entered: Sequence[tuple[int, list[float], list[float]]]) -> _Observations:
        """From (batch size, steps to target, censored steps run) per point."""
        seeds = np.array([len(reached) + len(bounds) for _, reached, bounds in entered])
        log_steps = np.zeros((len(entered), int(seeds.max())))
        censored = np.zeros(log_steps.shape, dtype=bool)
        for p, (_, reached, bounds) in enumerate(entered):
            log_steps[p, : seeds[p]] = np.log([*reached, *bounds])
            censored[p, len(reached) : seeds[p]] = True
        centre = float(np.mean([row[:m].mean() for row, m in zip(log_steps, seeds, strict=True)]))
        B = np.array([size for size, _, _ in entered], dtype=np.float64)
        return cls(B, log_steps, censored, seeds, centre)


class _CurveModel:
    """μ = ln S_min + ln(1 + B_noise/B) for the censored fit (``service.sweeps.censored``):
    data set r's group j is the point ``point_index[r, j]``, its observations weigh
    ``weight`` (r, J, M), summing to 1 per group; params (ln S_min, ln B_noise). ``fit`` is
    the profile fit of each group's weighted mean ŷ, after the first time searching near each
    data set's previous B_noise."""

    def __init__(self, point_index: np.ndarray, weight: np.ndarray, batch_sizes: np.ndarray):
        R, P = point_index.shape[0], batch_sizes.size
        flat = (np.arange(R)[:, None] * P + point_index).ravel()
        self._counts = np.bincount(flat, minlength=R * P).reshape(R, P).astype(float)
        self._point_index, self._weight, self._batch_sizes = point_index, weight, batch_sizes
        self._grid_index: np.ndarray | None = None
        self._edges = (
            math.log(float(batch_sizes.min()) / _SEARCH_SPAN),
            math.log(float(batch_sizes.max()) * _SEARCH_SPAN),
        )

    def fit(self, rows: np.ndarray, completed: np.ndarray) -> np.ndarray:
        P = self._batch_sizes.size
        y = (self._weight[rows] * completed).sum(axis=2)  # (r, J): each group's mean
        groups = (np.arange(rows.size)[:, None] * P + self._point_index[rows]).ravel()
        y_sums = np.bincount(groups, weights=y.ravel(), minlength=rows.size * P)
        near = None if self._grid_index is None else self._grid_index[rows]
        profile = _profile_fit(
            self._counts[rows],
            y_sums.reshape(rows.size, P),
            (y**2).sum(axis=1),
            self._batch_sizes,
            near,
        )
        if self._grid_index is None:
            self._grid_index = np.zeros(self._counts.shape[0], dtype=np.int64)
        self._grid_index[rows] = profile.grid_index
        return np.column_stack([profile.log_s_min, profile.log_b_noise])

    def mean(self, rows: np.ndarray, params: np.ndarray) -> np.ndarray:
        log_b = np.clip(params[:, 1], *self._edges)  # on an edge, ln S_min was fitted there
        B = self._batch_sizes[self._point_index[rows]]  # (r, J)
        curve = params[:, :1] + np.log1p(np.exp(log_b)[:, None] / B)
        shape = (*curve.shape, self._weight.shape[2])
        return np.broadcast_to(curve[:, :, None], shape)


def _censored_fit(
    log_steps: np.ndarray,
    censored: np.ndarray,
    weight: np.ndarray,
    point_index: np.ndarray,
    batch_sizes: np.ndarray,
) -> CensoredFit:
    """S(B) fitted to R data sets (r, J, M) by the censored EM (``service.sweeps.censored``)."""
    model = _CurveModel(point_index, weight, batch_sizes)
    return censored_normal_em(log_steps, censored, weight, model, max_iterations=_EM_MAX_ITERATIONS)


def _bootstrap(
    observations: _Observations,
    rng: np.random.Generator,
    n_resamples: int,
    confidence: float,
) -> tuple[Interval, Interval, Interval, int] | None:
    """Intervals for (s_min, e_min, b_noise) and the resamples used, or None when no resample
    has three distinct batch sizes with a seed at the target; see the module docstring."""
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
    usable = (sizes.reshape(n_resamples, n) > 0).sum(axis=1) >= MIN_POINTS
    if not usable.any():
        return None
    fit = _censored_fit(
        y[usable],
        censored[usable],
        (used / seeds_chosen)[usable],
        chosen[usable],
        observations.batch_sizes,
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
    """Fit S(B) = S_min (1 + B_noise/B) to the points where a seed reached the target, the
    runs that did not right-censored at their ``steps_run`` (see the module docstring).

    Refused (values None, ``reason`` set) with fewer than three such points, when B_noise is
    not measurable in the range (the optimum on an edge of [B_min/100, B_max·100]), when the
    censored fit does not converge, or when S_min < ``min_s_min`` steps (default
    ``MIN_S_MIN`` = 10), suggesting ``deeper_target`` (see
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
    entered = []  # (batch size, steps to target, censored steps run) per point that enters
    for point in sorted(points, key=lambda p: p.batch_size):
        reached, bounds = _seed_observations(point)
        if reached or bounds:
            entered.append((int(point.batch_size), reached, bounds))
    fitted = [size for size, _, _ in entered]
    n_reached = sum(1 for _, reached, _ in entered if reached)
    n_censored = sum(len(bounds) for _, _, bounds in entered)
    refuse = partial(_refused, points, fitted, confidence, censored=n_censored)
    if n_reached < MIN_POINTS:
        bounds_only = len(entered) - n_reached
        also = (
            f" ({bounds_only} more entered only as lower bounds: no seed reached the target in "
            "the steps it ran)"
            if bounds_only
            else ""
        )
        return refuse(
            f"only {n_reached} of {len(points)} batch sizes reached the target with at least "
            f"one seed{also}: fitting a critical batch needs at least {MIN_POINTS}"
        )
    if any(steps <= 0.0 for _, reached, _ in entered for steps in reached):
        return refuse("the target is at or above the initial loss (step 0)")
    observations = _Observations.of(entered)
    B = observations.batch_sizes
    seeds = observations.seeds[None, :, None]
    weight = (np.arange(observations.log_steps.shape[1]) < seeds) / seeds  # 1/m per seed
    em = _censored_fit(
        (observations.log_steps - observations.centre)[None],
        observations.censored[None],
        weight,
        np.arange(B.size)[None, :],
        B,
    )
    if not em.converged[0]:
        return refuse(
            f"the censored fit did not converge in {_EM_MAX_ITERATIONS} iterations "
            f"({n_censored} runs never reached the target): let those runs train longer, so "
            "more of them reach it"
        )
    log_s, log_b = (float(v) for v in em.params[0])
    if log_b == -math.inf:
        return refuse(
            "no measurable critical batch in this range: steps to target barely fall as the "
            f"batch grows, so B_noise lies far below the smallest batch measured ({fitted[0]}) "
            "and every batch here is past the knee (larger batches buy no fewer steps); "
            "measure smaller batches to find it"
        )
    if log_b == math.inf:
        return refuse(
            "no measurable critical batch in this range: steps to target fall as 1/B across "
            "every batch measured (perfect scaling), so B_noise lies far above the largest "
            f"batch measured ({fitted[-1]}); measure larger batches to find the knee"
        )
    b_noise = math.exp(log_b)
    s_min = math.exp(log_s + observations.centre)
    if not (math.isfinite(b_noise) and math.isfinite(s_min) and b_noise > 0.0):
        return refuse("the fit did not converge to finite values")
    if s_min < min_s_min:
        largest, reached, _ = next(e for e in reversed(entered) if e[1])
        largest_steps = math.exp(float(np.mean(np.log(reached))))
        return refuse(_small_s_min_reason(s_min, min_s_min, largest_steps, largest, deeper_target))
    # each point's ln geometric mean, its censored seeds at E[ln S | ln S > ln c]
    y = (weight * em.completed)[0].sum(axis=1) + observations.centre
    log_fitted = np.log(s_min) + np.log1p(b_noise / B)
    ss_total = float(((y - y.mean()) ** 2).sum())
    ss_resid = float(((y - log_fitted) ** 2).sum())
    r2_log = 1.0 - ss_resid / ss_total if ss_total > 0.0 else None
    rms_relative = float(np.sqrt(np.mean((np.exp(y - log_fitted) - 1.0) ** 2)))
    intervals: tuple[Interval | None, Interval | None, Interval | None] = (None, None, None)
    used = 0
    if n_resamples > 0:
        boot = _bootstrap(observations, rng, n_resamples, confidence)
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
        method=_METHOD_CENSORED if n_censored else _METHOD,
        censored=n_censored,
        sigma_log=float(em.sigma[0]),
        reached_batch_sizes=tuple(size for size, reached, _ in entered if reached),
    )
