"""The profile fit of S(B) = S_min (1 + B_noise / B) in log space, and its censored form.

For a fixed B_noise the best ln S_min of min Σ (ln S − ln Ŝ(B))² is the mean of
ln S − ln(1 + B_noise/B), so the fit is a one-dimensional search over ln B_noise: a grid of
200 points per decade over [B_min/100, B_max·100], refined by a parabola, vectorised across
data sets (the bootstrap's resamples). An optimum on an edge of the grid is an unmeasurable
B_noise (0 or ∞). Log space because the scatter of S is multiplicative: each point's relative
error counts the same, and S_min, B_noise > 0 hold by construction.

Seeds that never reached the target are right-censored: :func:`censored_curve_fit` runs the
Tobit EM of ``service.science.censored`` with this profile fit as its M-step.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from service.science.censored import CensoredFit, censored_normal_em

__all__ = ["Observations", "censored_curve_fit"]

_SEARCH_SPAN = 100.0  # B_noise is searched in [B_min / 100, B_max · 100]
_GRID_PER_DECADE = 200
_WINDOW = 20  # grid points each side searched by the censored fit's later M-steps


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


@dataclass(frozen=True)
class Observations:
    """The points that entered the fit, by batch size, their seeds padded to the most, M:
    ``log_steps`` (P, M) ln S, or ln steps_run where ``censored``; ``seeds`` (P,) observations
    per point; ``centre`` their mean, subtracted in the fits (it keeps Σy² small)."""

    batch_sizes: np.ndarray
    log_steps: np.ndarray
    censored: np.ndarray
    seeds: np.ndarray
    centre: float

    @classmethod
    def of(cls, entered: Sequence[tuple[int, list[float], list[float]]]) -> Observations:
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
    """μ = ln S_min + ln(1 + B_noise/B) for the censored fit (``service.science.censored``):
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


def censored_curve_fit(
    log_steps: np.ndarray,
    censored: np.ndarray,
    weight: np.ndarray,
    point_index: np.ndarray,
    batch_sizes: np.ndarray,
    *,
    max_iterations: int,
) -> CensoredFit:
    """S(B) fitted to R data sets (r, J, M) by the censored EM (``service.science.censored``):
    data set r's group j is the point ``point_index[r, j]`` of ``batch_sizes``, its
    observations ``log_steps`` (ln S, or ln steps run where ``censored``) weigh ``weight``."""
    model = _CurveModel(point_index, weight, batch_sizes)
    return censored_normal_em(log_steps, censored, weight, model, max_iterations=max_iterations)
