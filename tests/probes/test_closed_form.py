"""The probe recovers a critical batch known in closed form: a noisy quadratic.

Linear regression with Gaussian features x ~ N(0, C) (C diagonal, condition number 100), a
bias, and label noise σ² is a noisy quadratic: the population loss is σ² + δᵀC̃δ (δ = θ − θ*,
C̃ = diag(C, 1)), its Hessian H = 2C̃, and the per-example gradient 2x̃(x̃ᵀδ − ε) has the
covariance Σ(δ) = 4[(δᵀC̃δ + σ²)C̃ + C̃δδᵀC̃ − 2δ_b² e_b e_bᵀ] (Gaussian fourth moments).
One-pass SGD — each branch trains on a window of fresh rows, once — then moves the second
moment D = E[δδᵀ] exactly by D ← (I − εH) D (I − εH) + ε² Σ(D) / B, so the expected loss of
every (batch, rate) after the window is known in closed form, and with it the critical batch
the keep-up criterion must find (the rate of each batch the best of the same grid).

The source run and every branch are the core's real training (``Training`` with
``init_from``, float64); the verdict is :func:`service.science.critical.critical_batch` over
32 seeds. Two tolerances: 4% (a tight one: the critical batch is 2-4 × B₀, far below B_noise),
and the tolerance that allows half the ×1 branch's progress
(:func:`~service.science.critical.tolerance_for_progress`), where the bracket holds
B₀ + B_noise, B_noise = tr(HΣ)/GᵀHG measured at the checkpoint (McCandlish et al. 2018: the
batch at which the progress per sample halves).
"""

from __future__ import annotations

import numpy as np
import pytest

from service.core import TrainConfig, Training, TrainingDiverged
from service.science.critical import critical_batch, tolerance_for_progress

D_FEATURES, SIGMA, COND, B0, WINDOW, SEEDS = 16, 1.0, 100.0, 4, 1024, 32
MULTIPLIERS = [1, 2, 4, 8, 16, 32, 64]
RATE_GRID = 2.0 ** np.arange(-12, 1, 0.25)


class NoisyQuadratic:
    """The population of the regression problem, and the closed-form SGD expectation."""

    def __init__(self, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.scales = np.geomspace(1.0, 1.0 / np.sqrt(COND), D_FEATURES)
        self.theta_star = np.r_[rng.normal(size=D_FEATURES) / self.scales, 0.5]
        self.C = np.diag(np.r_[self.scales**2, 1.0])
        self.H = 2.0 * self.C
        self.e_bias = np.zeros(D_FEATURES + 1)
        self.e_bias[-1] = 1.0

    def sample(self, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng(seed)
        X = rng.normal(size=(n, D_FEATURES)) * self.scales
        y = X @ self.theta_star[:-1] + self.theta_star[-1] + SIGMA * rng.normal(size=n)
        return X, y

    def loss(self, theta: np.ndarray) -> float:
        delta = theta - self.theta_star
        return float(SIGMA**2 + delta @ self.C @ delta)

    def sigma(self, D: np.ndarray) -> np.ndarray:
        """E over δ (second moment D) of the per-example gradient covariance Σ(δ)."""
        C = self.C
        bias = 2.0 * D[-1, -1] * np.outer(self.e_bias, self.e_bias)
        return 4.0 * ((np.trace(C @ D) + SIGMA**2) * C + C @ D @ C - bias)

    def b_noise(self, delta: np.ndarray) -> float:
        G = self.H @ delta
        S = self.sigma(np.outer(delta, delta))
        return float(np.trace(self.H @ S) / (G @ self.H @ G))

    def expected_loss(self, delta: np.ndarray, batch: int, rate: float) -> float:
        D = np.outer(delta, delta)
        A = np.eye(len(delta)) - rate * self.H
        for _ in range(WINDOW // batch):
            D = A @ D @ A + rate * rate * self.sigma(D) / batch
            if np.trace(D) > 1e6:
                return float("inf")
        return float(SIGMA**2 + np.trace(self.C @ D))


@pytest.fixture(scope="module")
def probe() -> dict[str, object]:
    problem = NoisyQuadratic()
    X, y = problem.sample(4096, seed=1)
    source = Training(
        X,
        y,
        TrainConfig.from_dict(
            {"model": "linear", "batch_size": B0, "learning_rate": 0.02, "epochs": 1}
            | {"dtype": "float64"}
        ),
    )
    for _ in source:
        pass
    checkpoint = source.checkpoint()
    delta = checkpoint.theta - problem.theta_star
    best_rate = {
        k: min(RATE_GRID, key=lambda r: problem.expected_loss(delta, k * B0, r))
        for k in MULTIPLIERS
    }
    predicted = {k: problem.expected_loss(delta, k * B0, best_rate[k]) for k in MULTIPLIERS}

    def branch(k: int, rate: float, seed: int) -> float | None:
        Xw, yw = problem.sample(WINDOW, seed=100 + seed)  # the window: fresh rows, once
        config = {"model": "linear", "batch_size": k * B0, "learning_rate": rate, "epochs": 2}
        run = Training(
            Xw, yw, TrainConfig.from_dict(config | {"dtype": "float64"}), init_from=checkpoint
        )
        try:
            for _ in run:
                pass
        except TrainingDiverged:
            return None  # a failed branch: it never keeps up
        return problem.loss(run.checkpoint().theta)

    measured: dict[int, list[float | None]] = {}
    for k in MULTIPLIERS:
        # The branch's rate searched on a √2 grid around the closed form's best.
        runs = {
            rate: [branch(k, rate, s) for s in range(SEEDS)]
            for rate in best_rate[k] * 2.0 ** np.arange(-1.0, 1.5, 0.5)
        }
        chosen = min(runs, key=lambda rate: _mean(runs[rate]))
        measured[k] = list(runs[chosen])
    return {
        "start_loss": problem.loss(checkpoint.theta),
        "b_noise": problem.b_noise(delta),
        "predicted": predicted,
        "measured": measured,
    }


def _mean(losses: list[float | None]) -> float:
    return float("inf") if None in losses else float(np.mean([v for v in losses if v]))


def _bracket(losses: dict[int, list[float | None]], tolerance: float) -> tuple[int | None, ...]:
    result = critical_batch(losses, tolerance=tolerance)
    return result.kept_up, result.fell_behind


def test_the_bracket_is_the_closed_forms_at_a_tight_tolerance(probe: dict) -> None:
    predicted = {k: [v] for k, v in probe["predicted"].items()}
    assert _bracket(predicted, 0.04) == (2, 4)
    gaps = [probe["predicted"][k] / probe["predicted"][1] - 1 for k in (2, 4)]
    assert gaps[0] < 0.04 * 0.7
    assert gaps[1] > 0.04 * 1.5
    assert _bracket(probe["measured"], 0.04) == (2, 4)


def test_at_half_the_progress_the_bracket_holds_b0_plus_b_noise(probe: dict) -> None:
    reference = probe["predicted"][1]
    tolerance = tolerance_for_progress(
        0.5, reference_loss=reference, reference_gain=probe["start_loss"] - reference
    )
    predicted = {k: [v] for k, v in probe["predicted"].items()}
    low, high = _bracket(probe["measured"], tolerance)
    assert (low, high) == _bracket(predicted, tolerance) == (16, 32)
    assert 80.0 < probe["b_noise"] < 110.0
    assert low * B0 <= B0 + probe["b_noise"] < high * B0
