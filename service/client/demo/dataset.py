"""The demo's dataset, generated deterministically: linear regression y = X·w + b + ε with
independent normal features whose variances are log-spaced over a condition number of 30 (not
standardized: on isotropic features S_min is a step or two and no critical batch can be
fitted), b = 0.5 and ε ~ N(0, 1) — the best possible mean squared error is the noise
variance, 1."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

DATASET_SEED = 20_241_126


@dataclass(frozen=True, eq=False)
class DemoDataset:
    """y = X·w + b + ε: ``X`` (n_rows, n_features) with independent N(0, s_j²) columns,
    ``feature_scales`` s (n_features,) log-spaced from 1 down to 1/√κ (κ = ``condition_number``,
    the ratio of the largest to the smallest feature variance), ``weights`` w (n_features,) with
    w_j s_j = ±√(signal_variance / n_features) (every direction carries the same share of the
    signal), ``bias`` b, ε ~ N(0, noise_std²); ``y`` (n_rows,)."""

    X: np.ndarray
    y: np.ndarray
    weights: np.ndarray
    feature_scales: np.ndarray
    bias: float
    noise_std: float
    signal_variance: float
    seed: int

    @property
    def condition_number(self) -> float:
        """κ = max s_j² / min s_j²: of the feature covariance, so of the loss's Hessian in w."""
        return float((self.feature_scales.max() / self.feature_scales.min()) ** 2)

    @property
    def name(self) -> str:
        n_rows, n_features = self.X.shape
        return f"demo-linear-{n_rows}x{n_features}"

    def describe(self) -> str:
        """Where the data comes from, in words (printed by the demo)."""
        n_rows, n_features = self.X.shape
        return (
            f"synthetic linear regression, generated here (numpy default_rng, seed "
            f"{self.seed}; the same bytes every run): y = X·w + {self.bias:g} + ε with X "
            f"{n_rows:,} × {n_features} independent normal columns whose standard deviations "
            f"are log-spaced from 1 down to {self.feature_scales.min():.3g} (condition number "
            f"{self.condition_number:.3g}, deliberately not standardized: the slow, "
            f"low-variance directions are what make even full-batch steps add up), every "
            f"direction carrying an equal share of the signal variance "
            f"{self.signal_variance:g}, and noise ε ~ N(0, {self.noise_std:g}²), so the best "
            f"possible mean squared error is {self.noise_std**2:g}"
        )


def make_dataset(
    n_rows: int,
    n_features: int = 16,
    *,
    condition_number: float = 30.0,
    signal_variance: float = 4.0,
    noise_std: float = 1.0,
    bias: float = 0.5,
    seed: int = DATASET_SEED,
) -> DemoDataset:
    """The demo's dataset: deterministic in its arguments (see :class:`DemoDataset`).

    Why ill-conditioned: with isotropic features (Hessian ∝ I) one full-batch step at the
    best rate lands on the optimum, so S_min is a step or two whatever the target and the
    critical batch cannot be fitted. With feature variances spanning κ, the best large-batch
    rate is set by the largest variance while the smallest decays by (1 − 2η s_min²) a step,
    so even full-batch gradient descent needs ≈ κ/4 · ln(excess/gap) steps (κ = 30, target 5 %
    above the floor: ≈ 20)."""
    if n_rows < 2 or n_features < 1:
        raise ValueError(f"need n_rows ≥ 2 and n_features ≥ 1, not {n_rows} × {n_features}")
    if not (math.isfinite(condition_number) and condition_number >= 1.0):
        raise ValueError(f"condition_number must be a finite number ≥ 1, not {condition_number}")
    rng = np.random.default_rng(seed)
    scales = np.logspace(0.0, -0.5 * math.log10(condition_number), n_features)
    X = rng.standard_normal((n_rows, n_features)) * scales
    signs = rng.choice(np.array([-1.0, 1.0]), n_features)
    weights = signs * math.sqrt(signal_variance / n_features) / scales
    y = X @ weights + bias + noise_std * rng.standard_normal(n_rows)
    return DemoDataset(
        X=X,
        y=y,
        weights=weights,
        feature_scales=scales,
        bias=bias,
        noise_std=noise_std,
        signal_variance=signal_variance,
        seed=seed,
    )
