"""Gradient noise scale: the estimators against closed forms and known covariances."""

import math
from typing import Any

import numpy as np
import pytest

from service.core.build import build_model
from service.core.errors import CoreConfigError
from service.core.noise import (
    ExactNoiseEstimator,
    NoiseEstimate,
    TwoBatchNoiseEstimator,
    noise_scale_from_per_example,
    noise_scale_from_sq_norms,
)


def test_per_example_estimator_by_hand() -> None:
    # ḡ = [2, 0]; Σ|g_i − ḡ|² = 1 + 1 + 4 + 4 = 10, so tr(Σ) = 10/3
    # |G|² = |ḡ|² − tr(Σ)/n = 4 − 10/12 = 19/6; B_simple = (10/3)/(19/6) = 20/19
    grads = np.array([[1.0, 0.0], [3.0, 0.0], [2.0, 2.0], [2.0, -2.0]])
    estimate = noise_scale_from_per_example(grads)
    assert estimate.trace_sigma == pytest.approx(10 / 3, rel=1e-15)
    assert estimate.grad_sq_norm == pytest.approx(19 / 6, rel=1e-15)
    assert estimate.b_simple == pytest.approx(20 / 19, rel=1e-14)
    assert (estimate.n_samples, estimate.n_pairs, estimate.reason) == (4, 0, None)


def test_linear_regression_per_example_grads_match_the_closed_form() -> None:
    # y = x·w* + ε, x ~ N(0, I_d), ε ~ N(0, σ²), evaluated at w = w* + Δ, b = b* = 0.
    # Per-example mse gradient: g = 2r·[x, 1] with r = x·Δ − ε, so G = E g = [2Δ, 0].
    # Isserlis: E[(x·Δ)² x xᵀ] = |Δ|² I + 2ΔΔᵀ, so E|g_w|² = 4((d + 2)|Δ|² + dσ²) and
    # E g_b² = 4(|Δ|² + σ²). Hence tr(Σ) = 4((d + 2)|Δ|² + (d + 1)σ²), |G|² = 4|Δ|², and
    # B_simple = (d + 2) + (d + 1)σ²/|Δ|² = 6 + 5 = 11 for d = 4, |Δ| = 1, σ = 1.
    d, n, sigma = 4, 20_000, 1.0
    rng = np.random.default_rng(12)
    w_star = rng.standard_normal(d)
    delta = np.full(d, 0.5)
    X = rng.standard_normal((n, d))
    y = X @ w_star + sigma * rng.standard_normal(n)
    model = build_model("linear", task="regression", n_features=d)
    theta = np.concatenate([w_star + delta, [0.0]])
    estimate = noise_scale_from_per_example(model.per_example_grads(theta, X, y))
    assert estimate.trace_sigma == pytest.approx(4 * 11, rel=0.05)
    assert estimate.grad_sq_norm == pytest.approx(4.0, rel=0.1)
    assert estimate.b_simple == pytest.approx(11.0, rel=0.1)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"kind": "linear", "task": "regression"},
        {"kind": "linear", "task": "regression", "loss": "huber"},
        {"kind": "logistic", "task": "binary"},
        {"kind": "softmax", "task": "multiclass", "n_classes": 4},
    ],
)
def test_squared_norm_route_equals_the_per_example_matrix(kwargs: dict[str, Any]) -> None:
    rng = np.random.default_rng(8)
    model = build_model(n_features=3, **kwargs)
    X = rng.standard_normal((50, 3))
    y = rng.standard_normal(50) if model.task == "regression" else rng.integers(0, 2, 50)
    if model.n_outputs > 1:
        y = rng.integers(0, model.n_outputs, 50)
    elif model.task == "binary":
        y = y.astype(np.float64)
    theta = 0.3 * rng.standard_normal(model.n_params)
    G = model.per_example_grads(theta, X, y)
    sq = model.per_example_sq_norms(theta, X, y)
    np.testing.assert_allclose(sq, np.einsum("ij,ij->i", G, G), rtol=1e-12)
    mean_grad = np.empty(model.n_params)
    model.loss_and_grad(theta, X, y, mean_grad)
    via_norms = noise_scale_from_sq_norms(sq, mean_grad)
    direct = noise_scale_from_per_example(G)
    assert via_norms.trace_sigma == pytest.approx(direct.trace_sigma, rel=1e-9)
    assert via_norms.grad_sq_norm == pytest.approx(direct.grad_sq_norm, rel=1e-9)
    assert via_norms.b_simple == pytest.approx(direct.b_simple, rel=1e-9)


def test_squared_norm_route_refuses_bad_shapes() -> None:
    with pytest.raises(CoreConfigError) as info:
        noise_scale_from_sq_norms(np.ones(1), np.ones(3))
    assert info.value.field == "sq_norms"
    with pytest.raises(CoreConfigError) as info:
        noise_scale_from_sq_norms(np.ones(4), np.ones((2, 2)))
    assert info.value.field == "mean_grad"
    assert noise_scale_from_sq_norms(np.array([1.0, np.nan]), np.ones(2)).b_simple is None


@pytest.mark.parametrize("activation", ["relu", "tanh"])
@pytest.mark.parametrize(
    ("task", "n_classes"), [("regression", None), ("binary", None), ("multiclass", 4)]
)
def test_mlp_per_example_sq_norms_equal_the_per_row_gradients(
    task: str, n_classes: int | None, activation: str
) -> None:
    # The reference: each row alone through loss_and_grad (the mean over one row is g_i).
    rng = np.random.default_rng(21)
    model = build_model(
        "mlp", task=task, n_features=5, n_classes=n_classes, hidden_layers=(7, 4),
        activation=activation,
    )  # fmt: skip
    X = rng.standard_normal((40, 5))
    y: np.ndarray
    if task == "regression":
        y = rng.standard_normal(40)
    elif task == "binary":
        y = rng.integers(0, 2, 40).astype(np.float64)
    else:
        y = rng.integers(0, 4, 40)
    theta = model.init_params(rng, np.float64) + 0.2 * rng.standard_normal(model.n_params)
    g = np.empty(model.n_params)
    per_row = []
    for i in range(40):
        model.loss_and_grad(theta, X[i : i + 1], y[i : i + 1], g)
        per_row.append(float(g @ g))
    sq = model.per_example_sq_norms(theta, X, y)
    assert sq.dtype == np.float64
    assert sq.shape == (40,)
    np.testing.assert_allclose(sq, per_row, rtol=1e-12)
    # float32 parameters: the same norms to float32's precision, summed in float64
    sq32 = model.per_example_sq_norms(theta.astype(np.float32), X.astype(np.float32), y)
    assert sq32.dtype == np.float64
    np.testing.assert_allclose(sq32, per_row, rtol=1e-4)


def test_exact_estimator_by_hand_in_blocks() -> None:
    # the four gradients of the first test as a whole population: ḡ = [2, 0] is G itself,
    # tr(Σ) = Σ|g_i − ḡ|²/(N − 1) = 10/3, |G|² = 4, B_simple = (10/3)/4 = 5/6
    grads = np.array([[1.0, 0.0], [3.0, 0.0], [2.0, 2.0], [2.0, -2.0]])
    estimator = ExactNoiseEstimator()
    assert estimator.estimate() is None
    for block in (grads[:1], grads[1:]):  # blocks of 1 and 3 rows
        estimator.add(sq_norms=np.einsum("ij,ij->i", block, block), mean_grad=block.mean(axis=0))
    estimate = estimator.estimate()
    assert estimate is not None
    assert estimator.n_rows == 4
    assert estimate.trace_sigma == pytest.approx(10 / 3, rel=1e-15)
    assert estimate.grad_sq_norm == pytest.approx(4.0, rel=1e-15)
    assert estimate.b_simple == pytest.approx(5 / 6, rel=1e-14)
    assert (estimate.n_samples, estimate.exact, estimate.lower_bound) == (4, True, None)
    estimator.reset()
    assert estimator.estimate() is None


def test_exact_estimator_at_a_stationary_point_and_on_bad_input() -> None:
    estimator = ExactNoiseEstimator()
    estimator.add(sq_norms=np.array([1.0, 1.0]), mean_grad=np.zeros(2))  # g = ±[1, 0]
    stationary = estimator.estimate()
    assert stationary is not None
    assert stationary.b_simple is None
    assert stationary.trace_sigma == pytest.approx(2.0)
    assert stationary.grad_sq_norm == 0.0
    assert stationary.reason is not None
    assert "stationary point" in stationary.reason
    estimator.add(sq_norms=np.array([np.inf]), mean_grad=np.ones(2))
    not_finite = estimator.estimate()
    assert not_finite is not None
    assert not_finite.reason == "the gradients are not finite"
    with pytest.raises(CoreConfigError) as info:
        estimator.add(sq_norms=np.ones(2), mean_grad=np.ones(3))
    assert info.value.field == "mean_grad"
    with pytest.raises(CoreConfigError) as info:
        ExactNoiseEstimator().add(sq_norms=np.ones((2, 1)), mean_grad=np.ones(3))
    assert info.value.field == "sq_norms"
    with pytest.raises(CoreConfigError) as info:
        ExactNoiseEstimator().add(sq_norms=np.ones(2), mean_grad=np.ones((3, 1)))
    assert info.value.field == "mean_grad"


def test_an_unresolved_sampled_estimate_carries_its_lower_bound() -> None:
    # The first test's deviations around ḡ = [0.1, 0]: tr(Σ) = 10.5/3 = 3.5, |ḡ|² = 0.01,
    # |G|² ≈ 0.01 − 3.5/4 < 0: B_simple ≳ tr(Σ)/|ḡ|² = 350 (≥ n = 4, as it must be).
    grads = np.array([[1.1, 2.0], [-0.9, -2.0], [0.6, 0.0], [-0.4, 0.0]])
    estimate = noise_scale_from_per_example(grads)
    assert estimate.b_simple is None
    assert estimate.grad_sq_norm == pytest.approx(0.01 - 3.5 / 4, rel=1e-12)
    assert estimate.lower_bound == pytest.approx(350.0, rel=1e-12)
    via_norms = noise_scale_from_sq_norms(np.einsum("ij,ij->i", grads, grads), grads.mean(0))
    assert via_norms.lower_bound == pytest.approx(350.0, rel=1e-9)
    # two batches: |G|² ≈ (2·0.9 − 1·2)/(2 − 1) = −0.2, tr(Σ) ≈ (2 − 0.9)/(1 − 1/2) = 2.2,
    # B_simple ≳ tr(Σ)/|G_big|² = 2.2/0.9 (≥ B_big = 2)
    estimator = TwoBatchNoiseEstimator()
    estimator.add(small_sq_norm=2.0, b_small=1, big_sq_norm=0.9, b_big=2)
    two_batch = estimator.estimate()
    assert two_batch is not None
    assert two_batch.b_simple is None
    assert two_batch.lower_bound == pytest.approx(2.2 / 0.9, rel=1e-12)
    # resolved estimates carry no bound
    assert noise_scale_from_per_example(grads + 5.0).lower_bound is None


def _synthetic_gradients(
    rng: np.random.Generator, shape: tuple[int, ...]
) -> tuple[np.ndarray, float]:
    """g = G + ξ with ξ ~ N(0, Σ), Σ = diag(s): returns the draws and B_simple = tr(Σ)/|G|²."""
    n_params = shape[-1]
    G = np.linspace(-1.0, 1.0, n_params)
    s = np.linspace(0.5, 3.5, n_params)
    draws = G + np.sqrt(s) * rng.standard_normal(shape)
    return draws, float(s.sum() / (G @ G))


def test_per_example_estimator_on_gradients_with_known_covariance() -> None:
    draws, b_true = _synthetic_gradients(np.random.default_rng(1), (4000, 10))
    estimate = noise_scale_from_per_example(draws)
    assert estimate.b_simple == pytest.approx(b_true, rel=0.1)


def test_two_batch_estimator_recovers_the_same_on_synthetic_draws() -> None:
    b_small, b_big, pairs = 4, 64, 3000
    draws, b_true = _synthetic_gradients(np.random.default_rng(2), (pairs, b_big, 10))
    small = draws[:, :b_small].mean(axis=1)  # the small batch is part of the big one
    big = draws.mean(axis=1)
    estimator = TwoBatchNoiseEstimator()
    for g_small, g_big in zip(small, big, strict=True):
        estimator.add(
            small_sq_norm=float(g_small @ g_small),
            b_small=b_small,
            big_sq_norm=float(g_big @ g_big),
            b_big=b_big,
        )
    estimate = estimator.estimate()
    assert estimate is not None
    assert estimate.b_simple == pytest.approx(b_true, rel=0.1)
    assert (estimate.n_pairs, estimate.n_samples) == (pairs, b_big)


def test_two_batch_averages_each_estimate_before_the_ratio() -> None:
    # pair 1: |G|² = (64·1.5 − 4·6)/60 = 1.2, tr(Σ) = (6 − 1.5)/(1/4 − 1/64) = 19.2
    # pair 2: |G|² = (4·2 − 2·5)/2 = −1,     tr(Σ) = (5 − 2)/(1/2 − 1/4) = 12
    # means: |G|² = 0.1, tr(Σ) = 15.6, B_simple = 156 (the mean of per-pair ratios would differ)
    estimator = TwoBatchNoiseEstimator()
    assert estimator.estimate() is None
    estimator.add(small_sq_norm=6.0, b_small=4, big_sq_norm=1.5, b_big=64)
    first = estimator.estimate()
    assert first is not None
    assert first.b_simple == pytest.approx(16.0, rel=1e-14)
    estimator.add(small_sq_norm=5.0, b_small=2, big_sq_norm=2.0, b_big=4)
    estimate = estimator.estimate()
    assert estimate == NoiseEstimate(
        b_simple=pytest.approx(156.0, rel=1e-12),  # type: ignore[arg-type]
        trace_sigma=pytest.approx(15.6, rel=1e-14),  # type: ignore[arg-type]
        grad_sq_norm=pytest.approx(0.1, rel=1e-12),  # type: ignore[arg-type]
        n_samples=64,
        n_pairs=2,
    )
    estimator.reset()
    assert estimator.estimate() is None
    assert estimator.n_pairs == 0


def test_unresolved_gradient_gives_no_b_simple_and_a_reason() -> None:
    # mean exactly zero: |G|² = 0 − tr(Σ)/n < 0
    grads = np.array([[1.0, 2.0], [-1.0, -2.0], [0.5, 0.0], [-0.5, 0.0]])
    estimate = noise_scale_from_per_example(grads)
    assert estimate.b_simple is None
    assert estimate.reason is not None
    assert "not positive" in estimate.reason
    assert estimate.grad_sq_norm < 0
    assert math.isfinite(estimate.trace_sigma)

    estimator = TwoBatchNoiseEstimator()
    estimator.add(small_sq_norm=1.0, b_small=1, big_sq_norm=1.0, b_big=2)  # |G|² = 1, tr = 0
    result = estimator.estimate()
    assert result is not None
    assert result.b_simple == 0.0
    estimator.reset()
    estimator.add(small_sq_norm=1.0, b_small=1, big_sq_norm=2.0, b_big=2)  # tr(Σ) = −2
    negative = estimator.estimate()
    assert negative is not None
    assert negative.b_simple is None
    assert negative.reason is not None
    assert "tr(Σ)" in negative.reason


def test_non_finite_gradients_give_no_b_simple() -> None:
    estimate = noise_scale_from_per_example(np.array([[np.inf, 0.0], [1.0, 0.0]]))
    assert estimate.b_simple is None
    assert estimate.reason == "the gradients are not finite"


def test_per_example_estimator_accepts_float32() -> None:
    draws, b_true = _synthetic_gradients(np.random.default_rng(3), (4000, 10))
    estimate = noise_scale_from_per_example(draws.astype(np.float32))
    assert estimate.b_simple == pytest.approx(b_true, rel=0.1)
    assert isinstance(estimate.b_simple, float)


@pytest.mark.parametrize("shape", [(1, 3), (5,), (2, 3, 4)])
def test_per_example_estimator_refuses_bad_shapes(shape: tuple[int, ...]) -> None:
    with pytest.raises(CoreConfigError) as info:
        noise_scale_from_per_example(np.ones(shape))
    assert info.value.field == "per_example_grads"


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"b_small": 0}, "b_small"),
        ({"b_small": 2.0}, "b_small"),
        ({"b_big": 4}, "b_big"),
        ({"b_big": 3}, "b_big"),
        ({"small_sq_norm": -1.0}, "small_sq_norm"),
        ({"big_sq_norm": math.nan}, "big_sq_norm"),
    ],
)
def test_two_batch_add_refuses_bad_values(kwargs: dict[str, float], field: str) -> None:
    args = {"small_sq_norm": 2.0, "b_small": 4, "big_sq_norm": 1.0, "b_big": 16, **kwargs}
    with pytest.raises(CoreConfigError) as info:
        TwoBatchNoiseEstimator().add(**args)  # type: ignore[arg-type]
    assert info.value.field == field
