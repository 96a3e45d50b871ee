"""The noise scale measured in training: exact over every training row within the budget
(against per-row gradients computed here directly), sampled above it, and the lower bound a
sampled |G|² ≤ 0 reports."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any, Literal

import numpy as np
import pytest

from service.core import NoiseRecord, TrainConfig, train
from service.core.build import build_model
from service.core.measurements import EXACT_NOISE_MAX_ROW_PARAMS, EXACT_NOISE_MAX_ROWS

N_ROWS = 3000  # more than one block of EVALUATION_ROWS (2048), the last one partial


def features(n: int, d: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, d))


def last_record(X: np.ndarray, y: np.ndarray, **config: Any) -> tuple[NoiseRecord, np.ndarray]:
    """The noise record after 1 epoch (float64) and the θ it was measured at."""
    fields: dict[str, Any] = {
        "epochs": 1,
        "batch_size": 64,
        "noise_scale": True,
        "dtype": "float64",
    }
    training = train(X, y, TrainConfig(**{**fields, **config}))
    records = list(training)
    noise = records[-1].noise_scale
    assert noise is not None
    return noise, training.model.theta


def assert_population(noise: NoiseRecord, per_row: np.ndarray, loss: float) -> None:
    """The record is the population's: G = ḡ, tr(Σ) = Σ|g_i − ḡ|²/(N − 1), over all N rows."""
    n = per_row.shape[0]
    mean = per_row.mean(axis=0)
    trace = float(np.sum((per_row - mean) ** 2)) / (n - 1)
    grad_sq = float(mean @ mean)
    assert noise.exact is True
    assert noise.n_samples == n
    assert noise.trace_sigma == pytest.approx(trace, rel=1e-9)
    assert noise.grad_sq_norm == pytest.approx(grad_sq, rel=1e-9)
    assert noise.b_simple == pytest.approx(trace / grad_sq, rel=1e-9)
    assert noise.b_simple_corrected == pytest.approx(1 / (grad_sq / trace + 1 / n), rel=1e-9)
    assert noise.b_simple_lower_bound is None
    assert noise.loss_level == pytest.approx(loss, rel=1e-12)


def test_linear_mse_exact_noise_is_the_population_of_per_row_gradients() -> None:
    X = features(N_ROWS, 3, seed=1)
    y = X @ np.array([1.0, -2.0, 0.5]) + 0.3 + np.random.default_rng(2).standard_normal(N_ROWS)
    noise, theta = last_record(X, y, learning_rate=0.001)
    w, b = theta[:3], theta[3]
    r = X @ w + b - y
    per_row = 2.0 * r[:, None] * np.hstack([X, np.ones((N_ROWS, 1))])  # g_i = 2r_i [x_i; 1]
    assert_population(noise, per_row, float(np.mean(r**2)))


def test_logistic_exact_noise_is_the_population_of_per_row_gradients() -> None:
    X = features(N_ROWS, 4, seed=3)
    y = (X[:, 0] - X[:, 1] + np.random.default_rng(4).standard_normal(N_ROWS) > 0).astype(float)
    noise, theta = last_record(X, y, model="logistic", learning_rate=0.05)
    z = X @ theta[:4] + theta[4]
    p = 1.0 / (1.0 + np.exp(-z))
    per_row = (p - y)[:, None] * np.hstack([X, np.ones((N_ROWS, 1))])  # (σ(z_i) − y_i)[x_i; 1]
    loss = float(np.mean(np.logaddexp(0.0, z) - y * z))
    assert_population(noise, per_row, loss)


def test_softmax_exact_noise_is_the_population_of_per_row_gradients() -> None:
    k, d = 3, 4
    X = features(N_ROWS, d, seed=5)
    labels = np.argmax(X[:, :k] + np.random.default_rng(6).standard_normal((N_ROWS, k)), axis=1)
    noise, theta = last_record(X, labels, model="softmax", learning_rate=0.05)
    W, b = theta[: d * k].reshape(d, k), theta[d * k :]
    Z = X @ W + b
    P = np.exp(Z - Z.max(axis=1, keepdims=True))
    P /= P.sum(axis=1, keepdims=True)
    dz = P - np.eye(k)[labels]
    X1 = np.hstack([X, np.ones((N_ROWS, 1))])
    per_row = np.einsum("ij,ik->ijk", X1, dz).reshape(N_ROWS, -1)  # [x_i; 1] ⊗ (p_i − e_yi)
    loss = float(np.mean(-np.log(P[np.arange(N_ROWS), labels])))
    assert_population(noise, per_row, loss)


@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_mlp_exact_noise_is_the_population_of_per_row_gradients(activation: str) -> None:
    X = features(N_ROWS, 3, seed=7)
    y = np.sin(X[:, 0]) + X[:, 1] * X[:, 2]
    config = {"model": "mlp", "hidden_layers": (6, 4), "activation": activation}
    noise, theta = last_record(X, y, learning_rate=0.01, **config)
    model = build_model("mlp", task="regression", n_features=3, hidden_layers=(6, 4),
                        activation=activation)  # fmt: skip
    per_row = np.empty((N_ROWS, model.n_params))
    for i in range(N_ROWS):  # the mean gradient of one row is that row's gradient
        model.loss_and_grad(theta, X[i : i + 1], y[i : i + 1], per_row[i])
    assert_population(noise, per_row, model.loss(theta, X, y))


def test_the_exact_measurement_is_deterministic_and_leaves_the_training_alone() -> None:
    X = features(N_ROWS, 3, seed=8)
    y = X[:, 0] + np.random.default_rng(9).standard_normal(N_ROWS)
    config = TrainConfig(epochs=3, batch_size=32, learning_rate=0.01, seed=4)
    with_noise = list(train(X, y, replace(config, noise_scale=True)))
    again = list(train(X, y, replace(config, noise_scale=True)))
    without = list(train(X, y, config))
    assert [r.noise_scale for r in with_noise] == [r.noise_scale for r in again]
    assert all(r.noise_scale is not None and r.noise_scale.exact for r in with_noise)
    assert [r.step_losses.tobytes() for r in with_noise] == [
        r.step_losses.tobytes() for r in without
    ]


@pytest.mark.parametrize(
    ("model", "n_rows", "exact"),
    [
        ("linear", EXACT_NOISE_MAX_ROWS, True),
        ("linear", EXACT_NOISE_MAX_ROWS + 1, False),
        # 8 features, 512 hidden: 5,121 parameters, so 13,104 rows × 5,121 ≤ 2²⁶ < 13,105 × 5,121
        ("mlp", EXACT_NOISE_MAX_ROW_PARAMS // 5121, True),
        ("mlp", EXACT_NOISE_MAX_ROW_PARAMS // 5121 + 1, False),
    ],
)
def test_exact_up_to_the_budget_sampled_above(
    model: Literal["linear", "mlp"], n_rows: int, exact: bool
) -> None:
    d = 2 if model == "linear" else 8
    X = features(n_rows, d, seed=10)
    y = X[:, 0] + 0.5 * np.random.default_rng(11).standard_normal(n_rows)
    hidden = (512,) if model == "mlp" else ()
    assert build_model(model, task="regression", n_features=d, hidden_layers=hidden).n_params == (
        5121 if model == "mlp" else 3
    )
    config = TrainConfig(
        model=model, hidden_layers=hidden, epochs=1, batch_size=4096, learning_rate=0.001,
        noise_scale=True, noise_scale_samples=256,
    )  # fmt: skip
    noise = next(iter(train(X, y, config))).noise_scale
    assert noise is not None
    assert noise.exact is exact
    assert noise.n_samples == (n_rows if exact else 256)


def test_a_sampled_gradient_within_the_noise_reports_its_lower_bound() -> None:
    # Above the budget, 64 sampled rows, θ ≈ 0 on pure-noise targets: the mean gradient is
    # within the sample's noise, so |G|² ≈ |ḡ|² − tr(Σ)/64 comes out negative (this seed).
    n = EXACT_NOISE_MAX_ROWS + 4464
    rng = np.random.default_rng(1)
    X, y = rng.standard_normal((n, 2)), rng.standard_normal(n)
    config = TrainConfig(
        epochs=1, batch_size=8, learning_rate=1e-4, noise_scale=True, noise_scale_samples=64,
        seed=1,
    )  # fmt: skip
    noise = next(iter(train(X, y, config))).noise_scale
    assert noise is not None
    assert (noise.exact, noise.n_samples, noise.b_simple, noise.b_simple_corrected) == (
        False, 64, None, None,
    )  # fmt: skip
    assert noise.grad_sq_norm < 0.0
    mean_sq = noise.grad_sq_norm + noise.trace_sigma / 64  # |ḡ|² of the 64 rows
    assert noise.b_simple_lower_bound == pytest.approx(noise.trace_sigma / mean_sq, rel=1e-9)
    assert noise.b_simple_lower_bound is not None
    assert noise.b_simple_lower_bound >= 64  # |G|² ≤ 0 ⇔ tr(Σ)/|ḡ|² ≥ n
    assert math.isfinite(noise.b_simple_lower_bound)
