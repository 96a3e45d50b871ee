"""The gradient noise scale B_simple = tr(Σ)/|G|² (McCandlish et al. 2018, "An Empirical Model
of Large-Batch Training").

G is the full-batch gradient and Σ the covariance of per-example gradients. B_simple estimates
the critical batch size: below it doubling the batch halves the steps needed; above it returns
fade. Three estimators:

- the whole population (every one of the N training rows; ``ExactNoiseEstimator``): nothing
  is estimated, G = ḡ is the full-batch gradient and
      tr(Σ) = Σ_i |g_i − ḡ|² / (N − 1) = (Σ_i |g_i|² − N|ḡ|²) / (N − 1),     |G|² = |ḡ|²
  (the N − 1 makes the finite-population variance of a batch mean of B rows drawn without
  replacement exactly tr(Σ)(1/B − 1/N), so 1/(1/B_simple + 1/N) is exact); summed in blocks
  of rows, in float64;
- per-example gradients g_i of a sample of n rows (linear, logistic, softmax), unbiased:
      tr(Σ) ≈ S = Σ_i |g_i − ḡ|² / (n − 1),     |G|² ≈ |ḡ|² − S/n      (E|ḡ|² = |G|² + tr(Σ)/n)
- two batch sizes B_small < B_big (the paper's Appendix A.1, for MLPs): with E|G_B|² =
  |G|² + tr(Σ)/B,
      |G|² ≈ (B_big |G_big|² − B_small |G_small|²)/(B_big − B_small)
      tr(Σ) ≈ (|G_small|² − |G_big|²)/(1/B_small − 1/B_big)
  each averaged over steps separately, and only then their ratio (a ratio of noisy estimates
  per step would be biased).

When a sampled |G|² estimate is not positive (the gradient is not resolved above the noise),
B_simple is not measured but bounded below: the squared norm of the sample's mean gradient
over its n rows (|ḡ|², or |G_big|² with n = B_big) overestimates |G|² (E|ḡ|² = |G|² +
tr(Σ)/n), so

      B_simple ≳ tr(Σ)/|ḡ|²   (≥ n exactly when |G|² ≈ |ḡ|² − tr(Σ)/n ≤ 0),

a lower bound in expectation. ``b_simple`` is then None, ``lower_bound`` carries the bound and
``reason`` says why; no inf or NaN is ever returned.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from service.core.errors import CoreConfigError

__all__ = [
    "ExactNoiseEstimator",
    "NoiseEstimate",
    "TwoBatchNoiseEstimator",
    "noise_scale_from_per_example",
    "noise_scale_from_sq_norms",
]

_UNRESOLVED = (
    "the |G|² estimate is not positive: the gradient is below the noise (use more samples)"
)
_STATIONARY = "the full-batch gradient is zero: a stationary point, where B_simple is unbounded"


@dataclass(frozen=True)
class NoiseEstimate:
    """B_simple = trace_sigma / grad_sq_norm, or None (with ``reason``) when |G|² ≤ 0.

    ``n_samples``: the examples behind the estimate — the rows of the per-example gradients
    (all N training rows when ``exact``), or for the two-batch estimator the largest big batch.
    ``n_pairs``: (small, big) pairs averaged by the two-batch estimator (0 for the others).
    ``exact``: computed over the whole population (``ExactNoiseEstimator``), not estimated.
    ``lower_bound``: when the sampled |G|² is not positive, B_simple ≳ tr(Σ)/|ḡ|² (module
    docstring); None otherwise.
    """

    b_simple: float | None
    trace_sigma: float
    grad_sq_norm: float
    n_samples: int
    n_pairs: int = 0
    reason: str | None = None
    exact: bool = False
    lower_bound: float | None = None


def _estimate(
    trace_sigma: float,
    grad_sq_norm: float,
    n_samples: int,
    n_pairs: int,
    *,
    mean_sq_norm: float | None = None,
    exact: bool = False,
) -> NoiseEstimate:
    """The estimate from tr(Σ) and |G|²; ``mean_sq_norm``: the squared norm of the mean
    gradient the |G|² estimate came from (|ḡ|² or |G_big|²), for the lower bound."""
    if not (math.isfinite(trace_sigma) and math.isfinite(grad_sq_norm)):
        return NoiseEstimate(
            None, 0.0, 0.0, n_samples, n_pairs, reason="the gradients are not finite", exact=exact
        )
    if trace_sigma < 0.0:
        reason = "the tr(Σ) estimate is negative: the noise is not resolved (use more pairs)"
        return NoiseEstimate(None, trace_sigma, grad_sq_norm, n_samples, n_pairs, reason, exact)
    b_simple = trace_sigma / grad_sq_norm if grad_sq_norm > 0.0 else math.inf
    if math.isfinite(b_simple):
        return NoiseEstimate(b_simple, trace_sigma, grad_sq_norm, n_samples, n_pairs, exact=exact)
    lower_bound = None
    if mean_sq_norm is not None and mean_sq_norm > 0.0 and trace_sigma > 0.0:
        bound = trace_sigma / mean_sq_norm
        lower_bound = bound if math.isfinite(bound) else None
    return NoiseEstimate(
        None, trace_sigma, grad_sq_norm, n_samples, n_pairs, _UNRESOLVED, exact, lower_bound
    )


def noise_scale_from_per_example(per_example_grads: np.ndarray) -> NoiseEstimate:
    """The unbiased estimate from per-example gradients ``(n, P)``, n ≥ 2 (float64 maths)."""
    G = np.asarray(per_example_grads)
    if G.ndim != 2 or G.shape[0] < 2:
        raise CoreConfigError("per_example_grads", f"needs shape (n ≥ 2, n_params), not {G.shape}")
    n = int(G.shape[0])
    if not np.all(np.isfinite(G)):
        return _estimate(math.nan, math.nan, n, 0)
    mean = G.mean(axis=0, dtype=np.float64)
    # the centred sum of squares (not Σ|g_i|² − n|ḡ|²) avoids cancellation, in float64
    deviations = G - mean
    trace_sigma = float(np.einsum("ij,ij->", deviations, deviations)) / (n - 1)
    mean_sq = float(np.dot(mean, mean))
    return _estimate(trace_sigma, mean_sq - trace_sigma / n, n, 0, mean_sq_norm=mean_sq)


def noise_scale_from_sq_norms(sq_norms: np.ndarray, mean_grad: np.ndarray) -> NoiseEstimate:
    """The same unbiased estimate from the rows' squared norms |g_i|² ``(n,)`` and their mean
    gradient ḡ ``(P,)`` (``Model.per_example_sq_norms`` and ``loss_and_grad`` on the same rows),
    using Σ|g_i − ḡ|² = Σ|g_i|² − n|ḡ|²: memory O(n + P) instead of O(n·P)."""
    norms = np.asarray(sq_norms, dtype=np.float64)
    mean = np.asarray(mean_grad, dtype=np.float64)
    if norms.ndim != 1 or norms.shape[0] < 2:
        raise CoreConfigError("sq_norms", f"needs shape (n ≥ 2,), not {norms.shape}")
    if mean.ndim != 1:
        raise CoreConfigError("mean_grad", f"needs shape (n_params,), not {mean.shape}")
    n = int(norms.shape[0])
    if not (np.all(np.isfinite(norms)) and np.all(np.isfinite(mean))):
        return _estimate(math.nan, math.nan, n, 0)
    mean_sq = float(np.dot(mean, mean))
    # the sum of squared deviations cannot be negative; rounding could make it so
    trace_sigma = max(float(np.sum(norms)) - n * mean_sq, 0.0) / (n - 1)
    return _estimate(trace_sigma, mean_sq - trace_sigma / n, n, 0, mean_sq_norm=mean_sq)


class ExactNoiseEstimator:
    """tr(Σ) and |G|² over a whole population of rows, added in blocks (module docstring).

    Each block gives its rows' squared norms |g_i|² ``(m,)`` and their mean gradient ``(P,)``
    (``Model.per_example_sq_norms`` and ``loss_and_grad`` on the block); the sums Σ|g_i|² and
    Σ_i g_i = m·ḡ_block are kept in float64, so memory is O(P) whatever the population.
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Forget every block."""
        self._sq_norm_sum = 0.0
        self._grad_sum: np.ndarray | None = None
        self._rows = 0

    @property
    def n_rows(self) -> int:
        return self._rows

    def add(self, *, sq_norms: np.ndarray, mean_grad: np.ndarray) -> None:
        """One block of rows: their |g_i|² ``(m,)`` and mean gradient ``(P,)``."""
        norms = np.asarray(sq_norms)
        mean = np.asarray(mean_grad)
        if norms.ndim != 1 or norms.shape[0] < 1:
            raise CoreConfigError("sq_norms", f"needs shape (m ≥ 1,), not {norms.shape}")
        if self._grad_sum is None:
            if mean.ndim != 1:
                raise CoreConfigError("mean_grad", f"needs shape (n_params,), not {mean.shape}")
            self._grad_sum = np.zeros(mean.shape, dtype=np.float64)
        elif mean.shape != self._grad_sum.shape:
            raise CoreConfigError(
                "mean_grad", f"needs shape {self._grad_sum.shape} like the blocks before"
            )
        m = int(norms.shape[0])
        self._sq_norm_sum += float(np.sum(norms, dtype=np.float64))
        self._grad_sum += m * mean.astype(np.float64)
        self._rows += m

    def estimate(self) -> NoiseEstimate | None:
        """The exact tr(Σ), |G|² and B_simple over the rows added, or None before two rows."""
        n = self._rows
        if n < 2 or self._grad_sum is None:
            return None
        mean = self._grad_sum / n
        if not (math.isfinite(self._sq_norm_sum) and np.all(np.isfinite(mean))):
            return _estimate(math.nan, math.nan, n, 0, exact=True)
        mean_sq = float(np.dot(mean, mean))
        # the sum of squared deviations cannot be negative; rounding could make it so
        trace_sigma = max(self._sq_norm_sum - n * mean_sq, 0.0) / (n - 1)
        if mean_sq <= 0.0 or not math.isfinite(trace_sigma / mean_sq):
            return NoiseEstimate(None, trace_sigma, mean_sq, n, reason=_STATIONARY, exact=True)
        return _estimate(trace_sigma, mean_sq, n, 0, exact=True)


class TwoBatchNoiseEstimator:
    """Accumulates (|G_small|², B_small, |G_big|², B_big) pairs and estimates B_simple from the
    means of the per-pair |G|² and tr(Σ) estimates (see the module docstring)."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Forget every pair (e.g. at the start of an epoch)."""
        self._grad_sq_sum = 0.0
        self._trace_sum = 0.0
        self._big_sq_sum = 0.0
        self._pairs = 0
        self._max_big = 0

    @property
    def n_pairs(self) -> int:
        return self._pairs

    def add(self, *, small_sq_norm: float, b_small: int, big_sq_norm: float, b_big: int) -> None:
        """One pair: the squared norms of the mean gradient over B_small and B_big examples."""
        for field, size in (("b_small", b_small), ("b_big", b_big)):
            if not isinstance(size, int | np.integer) or isinstance(size, bool) or size < 1:
                raise CoreConfigError(field, f"must be an integer ≥ 1, not {size!r}")
        if b_big <= b_small:
            raise CoreConfigError("b_big", f"must exceed b_small ({b_small}), not {b_big}")
        for field, value in (("small_sq_norm", small_sq_norm), ("big_sq_norm", big_sq_norm)):
            if not (math.isfinite(value) and value >= 0.0):
                raise CoreConfigError(field, f"must be a finite number ≥ 0, not {value!r}")
        self._grad_sq_sum += (b_big * big_sq_norm - b_small * small_sq_norm) / (b_big - b_small)
        self._trace_sum += (small_sq_norm - big_sq_norm) / (1.0 / b_small - 1.0 / b_big)
        self._big_sq_sum += big_sq_norm
        self._pairs += 1
        self._max_big = max(self._max_big, int(b_big))

    def estimate(self) -> NoiseEstimate | None:
        """The estimate from the pairs so far, or None before the first pair."""
        if self._pairs == 0:
            return None
        return _estimate(
            self._trace_sum / self._pairs,
            self._grad_sq_sum / self._pairs,
            self._max_big,
            self._pairs,
            mean_sq_norm=self._big_sq_sum / self._pairs,
        )
