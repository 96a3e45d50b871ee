"""The gradient noise scale B_simple = tr(Σ)/|G|² (McCandlish et al. 2018, "An Empirical Model
of Large-Batch Training").

G is the full-batch gradient and Σ the covariance of per-example gradients. B_simple estimates
the critical batch size: below it doubling the batch halves the steps needed; above it returns
fade. Two estimators:

- exact per-example gradients g_i (n rows; linear, logistic, softmax), unbiased:
      tr(Σ) ≈ S = Σ_i |g_i − ḡ|² / (n − 1),     |G|² ≈ |ḡ|² − S/n      (E|ḡ|² = |G|² + tr(Σ)/n)
- two batch sizes B_small < B_big (the paper's Appendix A.1, for MLPs): with E|G_B|² =
  |G|² + tr(Σ)/B,
      |G|² ≈ (B_big |G_big|² − B_small |G_small|²)/(B_big − B_small)
      tr(Σ) ≈ (|G_small|² − |G_big|²)/(1/B_small − 1/B_big)
  each averaged over steps separately, and only then their ratio (a ratio of noisy estimates
  per step would be biased).

When the |G|² estimate is not positive (the gradient is not resolved above the noise), there is
no B_simple: ``b_simple`` is None and ``reason`` says why; no inf or NaN is ever returned.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from service.core.errors import CoreConfigError

__all__ = [
    "NoiseEstimate",
    "TwoBatchNoiseEstimator",
    "noise_scale_from_per_example",
    "noise_scale_from_sq_norms",
]

_UNRESOLVED = (
    "the |G|² estimate is not positive: the gradient is below the noise (use more samples)"
)


@dataclass(frozen=True)
class NoiseEstimate:
    """B_simple = trace_sigma / grad_sq_norm, or None (with ``reason``) when |G|² ≤ 0.

    ``n_samples``: the examples behind the estimate — the rows of the per-example gradients,
    or for the two-batch estimator the largest big batch. ``n_pairs``: (small, big) pairs
    averaged by the two-batch estimator (0 for the per-example one).
    """

    b_simple: float | None
    trace_sigma: float
    grad_sq_norm: float
    n_samples: int
    n_pairs: int = 0
    reason: str | None = None


def _estimate(
    trace_sigma: float, grad_sq_norm: float, n_samples: int, n_pairs: int
) -> NoiseEstimate:
    if not (math.isfinite(trace_sigma) and math.isfinite(grad_sq_norm)):
        return NoiseEstimate(
            None, 0.0, 0.0, n_samples, n_pairs, reason="the gradients are not finite"
        )
    if trace_sigma < 0.0:
        reason = "the tr(Σ) estimate is negative: the noise is not resolved (use more pairs)"
        return NoiseEstimate(None, trace_sigma, grad_sq_norm, n_samples, n_pairs, reason)
    if grad_sq_norm <= 0.0:
        return NoiseEstimate(None, trace_sigma, grad_sq_norm, n_samples, n_pairs, _UNRESOLVED)
    b_simple = trace_sigma / grad_sq_norm
    if not math.isfinite(b_simple):
        return NoiseEstimate(None, trace_sigma, grad_sq_norm, n_samples, n_pairs, _UNRESOLVED)
    return NoiseEstimate(b_simple, trace_sigma, grad_sq_norm, n_samples, n_pairs)


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
    grad_sq_norm = float(np.dot(mean, mean)) - trace_sigma / n
    return _estimate(trace_sigma, grad_sq_norm, n, 0)


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
    return _estimate(trace_sigma, mean_sq - trace_sigma / n, n, 0)


class TwoBatchNoiseEstimator:
    """Accumulates (|G_small|², B_small, |G_big|², B_big) pairs and estimates B_simple from the
    means of the per-pair |G|² and tr(Σ) estimates (see the module docstring)."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Forget every pair (e.g. at the start of an epoch)."""
        self._grad_sq_sum = 0.0
        self._trace_sum = 0.0
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
        )
