"""Right-censored normal observations: the inverse Mills ratio and a Tobit fit by EM.

A run stopped after c steps without reaching the target says only S > c. With y = ln S ~
N(μ, σ²) (the log-normal seed scatter around the curve of ``service.science.fit``) and
a = (c − μ)/σ, an observed y adds ln φ((y − μ)/σ) − ln σ to the log-likelihood and a censored
one ln(1 − Φ(a)) (the Tobit model, Tobin 1958). Expectation maximisation (Dempster, Laird &
Rubin 1977) maximises it by alternating

    E-step: each censored y → its conditional mean and variance under the current (μ, σ),
                E[y | y > c] = μ + σ λ(a),    Var[y | y > c] = σ² δ(a),    δ = 1 + a λ − λ²,
            λ(a) = φ(a) / (1 − Φ(a)) the inverse Mills ratio; an observed y stays (Var 0);
    M-step: the mean model fitted to the completed ŷ by weighted least squares (the caller's
            fit: for S(B), the profile fit over ln B_noise), then
                σ² = Σ w [(ŷ − μ)² + Var] / Σ w,

no step lowering the (weighted) likelihood, until an EM step moves no parameter by more than
``TOLERANCE`` (ln units; σ relative) or ``MAX_ITERATIONS`` steps pass. Plain EM crawls along a
ridge when most of a data set is censored (a bootstrap resample with most large batches
censored: ~900 steps); so each cycle is SQUAREM (Varadhan & Roland 2008): two EM steps
θ₀ → θ₁ → θ₂, a jump along them, one EM step from the jump, kept only if its likelihood is no
lower than θ₂'s — the same fixed point in a fraction of the steps (~150 on that resample).
Without a censored observation the first M-step is the answer. The E-step uses
max(σ, ``SIGMA_FLOOR``): with one seed per point and a perfect fit σ → 0 (each step multiplies
the censored part of σ² by δ < 1), and a = (c − μ)/σ would divide by zero; 1 % is below any
real seed-to-seed scatter of steps to target, which are only known to the step and to the
evaluation interval.

λ for every a to double precision (1 − Φ(a) underflows near a = 38, where λ ≈ a + 1/a is
tame), and u = λ − a computed directly, not as a difference, so that δ = 1 − λu keeps its
precision where a ≫ 1 (δ ≈ 1/a²):

    a ≥ 2:    u = 1/(a + 2/(a + 3/(a + 4/(a + …)))), Laplace's continued fraction for the Mills
              ratio (1 − Φ)/φ = 1/(a + 1/(a + 2/(a + …))), 80 levels (32 from a = 3.5);
    |a| < 2:  1 − Φ(a) = (1 − erf(a/√2))/2, erf(x) = 2/√π · e^{−x²} Σₙ (2x²)ⁿ x / (2n+1)!!
              (all terms positive; 30 terms);
    a ≤ −2:   1 − Φ(a) = 1 − φ(a)/λ(−a), λ(−a) from the first branch (φ is even).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import numpy as np

__all__ = [
    "MAX_ITERATIONS",
    "SIGMA_FLOOR",
    "TOLERANCE",
    "CensoredFit",
    "MeanModel",
    "censored_normal_em",
    "inverse_mills_ratio",
    "log_survival",
    "truncated_normal_factors",
]

SIGMA_FLOOR = 0.01
"""Smallest σ (ln units) the E-step uses; see the module docstring."""
TOLERANCE = 1e-6
"""EM stops when no parameter (ln units) and not σ (relative) moves by more than this."""
MAX_ITERATIONS = 2000
"""EM steps at most per data set (heavy censoring converges slowly)."""

_BRANCH = 2.0  # |a| where the continued fraction takes over from the erf series
_FRACTION_TERMS = 80  # the continued fraction's error at a = 2 is ~1e-13, less beyond
_FAST_FROM, _FAST_TERMS = 3.5, 32  # … and with 32 levels ~1e-13 from a = 3.5
_SERIES_TERMS = 30  # the erf series' last term at |x| = √2 is ~1e-24
_SQRT_2 = math.sqrt(2.0)
_LN_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)


def _excess_by_continued_fraction(a: np.ndarray) -> np.ndarray:
    """u = λ(a) − a for a ≥ 2, evaluated from the deepest level up (fewer levels from a ≥ 3.5,
    where the fraction converges faster)."""
    excess = np.empty_like(a)
    for group, terms in ((a < _FAST_FROM, _FRACTION_TERMS), (a >= _FAST_FROM, _FAST_TERMS)):
        x = a[group]
        t = x.copy()
        for k in range(terms, 1, -1):
            t = x + k / t
        excess[group] = 1.0 / t
    return excess


def _erf_series(x: np.ndarray) -> np.ndarray:
    """erf(x) for |x| < √2 (every term has the sign of x: no cancellation)."""
    two_x2 = 2.0 * x * x
    term = x.copy()
    total = x.copy()
    for n in range(1, _SERIES_TERMS):
        term = term * two_x2 / (2 * n + 1)
        total = total + term
    erf: np.ndarray = 2.0 / math.sqrt(math.pi) * np.exp(-x * x) * total
    return erf


def _phi(a: np.ndarray) -> np.ndarray:
    density: np.ndarray = np.exp(-0.5 * a * a) / math.sqrt(2.0 * math.pi)
    return density


def truncated_normal_factors(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(λ(a), δ(a)) elementwise: for y ~ N(μ, σ²) and a = (c − μ)/σ,
    E[y | y > c] = μ + σ λ(a) and Var[y | y > c] = σ² δ(a), δ = 1 + a λ − λ² ∈ (0, 1]."""
    a = np.asarray(a, dtype=np.float64)
    hazard = np.empty_like(a)
    excess = np.empty_like(a)  # u = λ − a
    high = a >= _BRANCH
    low = a <= -_BRANCH
    middle = ~(high | low)
    u = _excess_by_continued_fraction(a[high])
    excess[high], hazard[high] = u, a[high] + u
    a_mid = a[middle]
    survival = 0.5 * (1.0 - _erf_series(a_mid / _SQRT_2))  # 1 − Φ(a)
    hazard[middle] = _phi(a_mid) / survival
    excess[middle] = hazard[middle] - a_mid
    a_low = a[low]
    mirrored = -a_low + _excess_by_continued_fraction(-a_low)  # λ(−a) = λ(|a|)
    hazard[low] = _phi(a_low) / (1.0 - _phi(a_low) / mirrored)
    excess[low] = hazard[low] - a_low
    variance = np.clip(1.0 - hazard * excess, 0.0, 1.0)
    return hazard, variance


def log_survival(a: np.ndarray) -> np.ndarray:
    """ln(1 − Φ(a)) elementwise, for every finite a: ln φ(a) − ln λ(a) above a = −2 and
    log1p(−Φ(a)), Φ(a) = φ(a)/λ(−a), below (where φ(a) may underflow to 0)."""
    a = np.asarray(a, dtype=np.float64)
    out = np.empty_like(a)
    low = a <= -_BRANCH
    rest = a[~low]
    out[~low] = -0.5 * rest * rest - _LN_SQRT_2PI - np.log(inverse_mills_ratio(rest))
    out[low] = np.log1p(-_phi(a[low]) / inverse_mills_ratio(-a[low]))
    return out


def inverse_mills_ratio(a: np.ndarray) -> np.ndarray:
    """λ(a) = φ(a) / (1 − Φ(a)) elementwise, to double precision for every finite a."""
    return truncated_normal_factors(a)[0]


class MeanModel(Protocol):
    """The mean μ of R data sets of J groups of up to M observations, a function of k
    parameters per data set, fitted by weighted least squares."""

    def fit(self, rows: np.ndarray, completed: np.ndarray) -> np.ndarray:
        """The parameters (r, k) fitted to the completed observations (r, J, M) of data sets
        ``rows``; ±inf allowed (an edge of a search: equal infinities count as no movement)."""
        ...

    def mean(self, rows: np.ndarray, params: np.ndarray) -> np.ndarray:
        """μ (r, J, M) of data sets ``rows`` at ``params`` (r, k)."""
        ...


@dataclass(frozen=True)
class CensoredFit:
    """The fit of R data sets. ``completed``: ŷ, each censored y replaced by E[y | y > c] at
    the last E-step, (R, J, M); ``params`` (R, k), fitted to it; ``sigma``: σ, (R,);
    ``iterations`` (EM steps) and ``converged`` per data set."""

    completed: np.ndarray
    params: np.ndarray
    sigma: np.ndarray
    iterations: np.ndarray
    converged: np.ndarray


def _sigma(weight: np.ndarray, residual: np.ndarray, variance: np.ndarray) -> np.ndarray:
    """σ = √(Σ w (r² + Var) / Σ w) per data set, shape (R,)."""
    total = (weight * (residual * residual + variance)).sum(axis=(1, 2))
    sigma: np.ndarray = np.sqrt(total / weight.sum(axis=(1, 2)))
    return sigma


def _movement(new: np.ndarray, old: np.ndarray) -> np.ndarray:
    """Largest move per row of θ = (params, σ), (r, k + 1): |Δ| of the parameters (equal
    values, also ±inf, move 0; NaN moves ∞) and |Δσ| / max(σ, floor)."""
    with np.errstate(invalid="ignore"):
        moved = np.where(new == old, 0.0, np.abs(new - old))
    moved[:, -1] /= np.maximum(old[:, -1], SIGMA_FLOOR)
    movement: np.ndarray = np.nan_to_num(moved, nan=np.inf).max(axis=1)
    return movement


@dataclass(frozen=True)
class _Censored:
    """The data (R, J, M) and the mean model; θ = (params, σ) per data set, (r, k + 1)."""

    y: np.ndarray
    censored: np.ndarray
    weight: np.ndarray
    model: MeanModel

    def _standardised(self, rows: np.ndarray, theta: np.ndarray) -> tuple[np.ndarray, ...]:
        s = np.maximum(theta[:, -1], SIGMA_FLOOR)[:, None, None]
        mean = self.model.mean(rows, theta[:, :-1])
        return (self.y[rows] - mean) / s, mean, np.broadcast_to(s, mean.shape)

    def step(self, rows: np.ndarray, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One EM step from θ: (θ', the completed observations ŷ it was fitted to)."""
        z, mean, s = self._standardised(rows, theta)
        cens = self.censored[rows]
        hazard, delta = truncated_normal_factors(z[cens])
        completed = self.y[rows].copy()
        completed[cens] = mean[cens] + s[cens] * hazard
        variance = np.zeros_like(completed)
        variance[cens] = s[cens] ** 2 * delta
        params = self.model.fit(rows, completed)
        residual = completed - self.model.mean(rows, params)
        sigma = _sigma(self.weight[rows], residual, variance)
        return np.column_stack([params, sigma]), completed

    def log_likelihood(self, rows: np.ndarray, theta: np.ndarray) -> np.ndarray:
        """Σ w ℓ per data set: ℓ = ln φ(z) − ln σ observed, ln(1 − Φ(z)) censored (σ floored
        as in the E-step)."""
        z, _, s = self._standardised(rows, theta)
        cens, weight = self.censored[rows], self.weight[rows]
        terms = -np.log(s) - 0.5 * z * z - _LN_SQRT_2PI
        terms[cens] = log_survival(z[cens])
        total: np.ndarray = (weight * terms).sum(axis=(1, 2))
        return total


def censored_normal_em(
    y: np.ndarray,
    censored: np.ndarray,
    weight: np.ndarray,
    model: MeanModel,
    *,
    tolerance: float = TOLERANCE,
    max_iterations: int = MAX_ITERATIONS,
) -> CensoredFit:
    """Fit R data sets of J groups of up to M observations with normal scatter, right-censored
    where ``censored`` (then ``y`` is the bound c); ``weight`` (R, J, M), 0 on padding, is each
    observation's weight in the likelihood. EM as in the module docstring, accelerated by
    SQUAREM, vectorised over the data sets still moving (each stops on its own)."""
    data = _Censored(y, censored, weight, model)
    R = y.shape[0]
    everyone = np.arange(R)
    completed = y.copy()  # a censored y starts at its bound
    params = model.fit(everyone, completed)
    sigma = _sigma(weight, completed - model.mean(everyone, params), np.zeros_like(y))
    theta = np.column_stack([params, sigma])
    iterations = np.zeros(R, dtype=np.int64)
    converged = np.asarray(~censored.any(axis=(1, 2)), dtype=bool)
    while (rows := np.flatnonzero(~converged & (iterations < max_iterations))).size:
        theta_0 = theta[rows]
        theta_1, completed_1 = data.step(rows, theta_0)
        theta[rows], completed[rows] = theta_1, completed_1
        iterations[rows] += 1
        still = _movement(theta_1, theta_0) > tolerance
        converged[rows[~still]] = True
        jump = still & (iterations[rows] + 2 <= max_iterations)
        rows, theta_0, theta_1 = rows[jump], theta_0[jump], theta_1[jump]
        if rows.size == 0:
            continue
        theta_2, completed_2 = data.step(rows, theta_1)
        theta_3, completed_3 = data.step(rows, _extrapolated(theta_0, theta_1, theta_2))
        with np.errstate(invalid="ignore"):
            better = data.log_likelihood(rows, theta_3) >= data.log_likelihood(rows, theta_2)
        keep = better & np.isfinite(theta_3[:, -1])
        theta[rows] = np.where(keep[:, None], theta_3, theta_2)
        completed[rows] = np.where(keep[:, None, None], completed_3, completed_2)
        iterations[rows] += 2
    return CensoredFit(completed, theta[:, :-1], theta[:, -1], iterations, converged)


def _extrapolated(theta_0: np.ndarray, theta_1: np.ndarray, theta_2: np.ndarray) -> np.ndarray:
    """SQUAREM's jump (Varadhan & Roland 2008, SqS3) from three EM iterates θ₀ → θ₁ → θ₂:
    r = θ₁ − θ₀, v = θ₂ − θ₁ − r, α = min(−‖r‖/‖v‖, −1), θ' = θ₀ − 2αr + α²v (α = −1 is
    θ₂ itself); θ₂ where an iterate is not finite (an edge of the mean model's search)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        r = theta_1 - theta_0
        v = theta_2 - theta_1 - r
        alpha = -np.sqrt((r * r).sum(axis=1) / (v * v).sum(axis=1))
        alpha = np.minimum(np.nan_to_num(alpha, nan=-1.0, neginf=-1.0), -1.0)[:, None]
        jumped = theta_0 - 2.0 * alpha * r + alpha * alpha * v
    finite = np.isfinite(jumped).all(axis=1) & np.isfinite(theta_2).all(axis=1)
    jumped[:, -1] = np.maximum(jumped[:, -1], 0.0)
    return np.where(finite[:, None], jumped, theta_2)
