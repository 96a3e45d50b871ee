"""Models: gradients against finite differences, the seed formula by hand, stability, layouts."""

import gc
import math
import weakref
from typing import Any

import numpy as np
import pytest

from service.core.build import build_model
from service.core.errors import CoreConfigError
from service.core.fused_sgd import augmented_sgd
from service.core.models import Model
from service.core.optim import make_optimizer

N_ROWS, N_FEATURES, N_CLASSES = 9, 4, 3


def _targets(model: Model, rng: np.random.Generator, n: int) -> np.ndarray:
    if model.task == "regression":
        return rng.standard_normal(n) * 2.0
    if model.task == "binary" and model.n_outputs == 1:
        return (rng.random(n) < 0.5).astype(np.float64)
    return rng.integers(0, model.n_outputs, n).astype(np.int64)


def _central_differences(
    model: Model, theta: np.ndarray, X: np.ndarray, y: np.ndarray, h: float = 1e-6
) -> np.ndarray:
    numeric = np.empty_like(theta)
    for i in range(theta.size):
        plus, minus = theta.copy(), theta.copy()
        plus[i] += h
        minus[i] -= h
        numeric[i] = (model.loss(plus, X, y) - model.loss(minus, X, y)) / (2 * h)
    return numeric


MODEL_CASES: list[dict[str, Any]] = [
    {"kind": "linear", "task": "regression"},
    {"kind": "linear", "task": "regression", "loss": "huber", "huber_delta": 0.7},
    {"kind": "logistic", "task": "binary"},
    {"kind": "softmax", "task": "multiclass", "n_classes": N_CLASSES},
    {"kind": "softmax", "task": "binary"},
    {"kind": "mlp", "task": "regression", "hidden_layers": (5, 3), "activation": "relu"},
    {"kind": "mlp", "task": "regression", "hidden_layers": (5,), "activation": "tanh"},
    {"kind": "mlp", "task": "regression", "hidden_layers": (6,), "loss": "huber"},
    {"kind": "mlp", "task": "binary", "hidden_layers": (5, 4), "activation": "relu"},
    {"kind": "mlp", "task": "binary", "hidden_layers": (5,), "activation": "tanh"},
    {
        "kind": "mlp",
        "task": "multiclass",
        "n_classes": 3,
        "hidden_layers": (6,),
        "activation": "relu",
    },
    {
        "kind": "mlp",
        "task": "multiclass",
        "n_classes": 4,
        "hidden_layers": (5, 3),
        "activation": "tanh",
    },
]


def _case_id(case: dict[str, Any]) -> str:
    return "-".join(str(v) for v in case.values())


@pytest.mark.parametrize("case", MODEL_CASES, ids=_case_id)
def test_gradient_matches_central_differences_in_float64(case: dict[str, Any]) -> None:
    rng = np.random.default_rng(7)
    model = build_model(n_features=N_FEATURES, **case)
    X = rng.standard_normal((N_ROWS, N_FEATURES))
    y = _targets(model, rng, N_ROWS)
    # away from the zero init, so every unit and every class contributes
    theta = model.init_params(rng, np.float64) + 0.5 * rng.standard_normal(model.n_params)
    grad = np.full(model.n_params, np.nan)
    loss = model.loss_and_grad(theta, X, y, grad)
    numeric = _central_differences(model, theta, X, y)
    assert np.linalg.norm(grad - numeric) / np.linalg.norm(numeric) < 1e-6
    assert loss == pytest.approx(model.loss(theta, X, y), rel=1e-12)


def test_huber_gradient_is_checked_in_both_regimes() -> None:
    model = build_model("linear", task="regression", n_features=2, loss="huber", huber_delta=1.0)
    X = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [2.0, -1.0], [0.5, 0.5]])
    y = np.array([0.1, -3.0, 4.0, 0.5, -0.2])
    theta = np.array([0.3, -0.2, 0.1])
    residuals = model.forward(theta, X) - y
    assert (np.abs(residuals) < 1.0).sum() >= 2
    assert (np.abs(residuals) > 1.0).sum() >= 2
    grad = np.empty(3)
    model.loss_and_grad(theta, X, y, grad)
    numeric = _central_differences(model, theta, X, y)
    assert np.linalg.norm(grad - numeric) / np.linalg.norm(numeric) < 1e-6
    # the loss by hand: ½r² inside δ, δ(|r| − ½δ) outside
    r = residuals
    expected = np.where(np.abs(r) <= 1.0, 0.5 * r**2, np.abs(r) - 0.5).mean()
    assert model.loss(theta, X, y) == pytest.approx(expected, rel=1e-14)


def test_seed_formula_by_hand_on_three_rows_then_one_sgd_step() -> None:
    # ŷ = Xw + b = [-1.25, -0.75, 2.75]; y − ŷ = [2.25, 0.75, −0.75]
    # J = (2.25² + 0.75² + 0.75²)/3 = 6.1875/3 = 2.0625
    # dJ/dw = −2/3 · (2.25·[1, 2] + 0.75·[0, 1] − 0.75·[3, −1]) = −2/3 · [0, 6] = [0, −4]
    # dJ/db = −2/3 · (2.25 + 0.75 − 0.75) = −1.5
    model = build_model("linear", task="regression", n_features=2)
    X = np.array([[1.0, 2.0], [0.0, 1.0], [3.0, -1.0]])
    y = np.array([1.0, 0.0, 2.0])
    theta = np.array([0.5, -1.0, 0.25])
    grad = np.empty(3)
    assert model.loss_and_grad(theta, X, y, grad) == 2.0625
    np.testing.assert_array_equal(grad, [0.0, -4.0, -1.5])
    # θ ← θ − 0.1·g = [0.5, −1 + 0.4, 0.25 + 0.15]
    make_optimizer("sgd", n_params=3, dtype=np.float64).step(theta, grad, 0.1)
    np.testing.assert_allclose(theta, [0.5, -0.6, 0.4], rtol=0, atol=1e-15)


@pytest.mark.parametrize("case", [c for c in MODEL_CASES if c["kind"] != "mlp"], ids=_case_id)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_per_example_grads_average_to_the_batch_gradient(case: dict[str, Any], dtype: type) -> None:
    rng = np.random.default_rng(3)
    model = build_model(n_features=N_FEATURES, **case)
    X = rng.standard_normal((N_ROWS, N_FEATURES)).astype(dtype)
    y = _targets(model, rng, N_ROWS)
    y = y.astype(dtype) if y.dtype.kind == "f" else y
    theta = rng.standard_normal(model.n_params).astype(dtype)
    G = model.per_example_grads(theta, X, y)
    assert G.shape == (N_ROWS, model.n_params)
    assert G.dtype == dtype
    grad = np.empty(model.n_params, dtype)
    model.loss_and_grad(theta, X, y, grad)
    tol = 1e-5 if dtype == np.float32 else 1e-13
    np.testing.assert_allclose(G.mean(axis=0), grad, rtol=tol, atol=tol)
    # and each row is that row's own gradient
    row_grad = np.empty(model.n_params, dtype)
    model.loss_and_grad(theta, X[4:5], y[4:5], row_grad)
    np.testing.assert_allclose(G[4], row_grad, rtol=tol, atol=tol)


@pytest.mark.parametrize("case", MODEL_CASES, ids=_case_id)
def test_scaled_gradient_is_the_gradient_times_the_factor(case: dict[str, Any]) -> None:
    rng = np.random.default_rng(5)
    model = build_model(n_features=N_FEATURES, **case)
    X = rng.standard_normal((N_ROWS, N_FEATURES))
    y = _targets(model, rng, N_ROWS)
    theta = model.init_params(rng, np.float64) + 0.5 * rng.standard_normal(model.n_params)
    grad, scaled, again = (np.empty(model.n_params) for _ in range(3))
    loss = model.loss_and_grad(theta, X, y, grad)
    assert model.loss_and_scaled_grad(theta, X, y, scaled, -0.3) == loss
    np.testing.assert_allclose(scaled, -0.3 * grad, rtol=1e-14, atol=1e-16)
    # the cached work arrays go back to the plain gradient afterwards
    assert model.loss_and_grad(theta, X, y, again) == loss
    np.testing.assert_array_equal(again, grad)


@pytest.mark.parametrize(
    ("kind", "task"), [("linear", "regression"), ("logistic", "binary")], ids=["mse", "logistic"]
)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_augmented_sgd_takes_the_same_steps_as_loss_and_grad(
    kind: str, task: str, dtype: type
) -> None:
    rng = np.random.default_rng(6)
    model = build_model(kind, task=task, n_features=N_FEATURES)
    n, B, lr = 23, 5, 0.1  # four steps of 5 rows, then one of 3
    X = rng.standard_normal((n, N_FEATURES)).astype(dtype)
    y = _targets(model, rng, n).astype(dtype)
    rows = np.column_stack([X, np.ones(n), y]).astype(dtype)
    theta = rng.standard_normal(model.n_params).astype(dtype)
    kernel = augmented_sgd(model, dtype)
    assert kernel is not None
    kernel.load(theta)
    assert kernel.run(rows, B, lr, None)
    fused = np.empty_like(theta)
    kernel.store(fused)
    expected_losses = []
    grad = np.empty_like(theta)
    for a in range(0, n, B):
        expected_losses.append(model.loss_and_grad(theta, X[a : a + B], y[a : a + B], grad))
        theta -= dtype(lr) * grad
    tol = 1e-5 if dtype == np.float32 else 1e-13
    np.testing.assert_allclose(fused, theta, rtol=tol, atol=tol)
    np.testing.assert_allclose(kernel.step_losses(rows, B), expected_losses, rtol=tol)
    assert rows[:, N_FEATURES].tolist() == [1.0] * n  # the rows are read, never written


def test_augmented_sgd_stops_after_the_step_should_stop_ends() -> None:
    rng = np.random.default_rng(8)
    model = build_model("linear", task="regression", n_features=2)
    X, y = rng.standard_normal((12, 2)), rng.standard_normal(12)
    rows = np.column_stack([X, np.ones(12), y])
    kernel = augmented_sgd(model, np.float64)
    assert kernel is not None
    calls = []
    kernel.load(np.zeros(3))
    assert not kernel.run(rows, 3, 0.1, lambda: calls.append(1) or len(calls) == 2)
    stopped = np.empty(3)
    kernel.store(stopped)
    kernel.load(np.zeros(3))
    assert kernel.run(rows[:6], 3, 0.1, None)  # the same two steps, no more
    two_steps = np.empty(3)
    kernel.store(two_steps)
    assert len(calls) == 2
    np.testing.assert_array_equal(stopped, two_steps)


@pytest.mark.parametrize(
    "case",
    [c for c in MODEL_CASES if (c["kind"], c.get("loss")) not in (("linear", None),)]
    + [{"kind": "logistic", "task": "binary"}],
    ids=_case_id,
)
def test_only_linear_mse_and_logistic_have_the_fused_sgd_step(case: dict[str, Any]) -> None:
    model = build_model(n_features=N_FEATURES, **case)
    kernel = augmented_sgd(model, np.float64)
    assert (kernel is not None) == (case["kind"] == "logistic")


def test_mlp_has_no_per_example_grads() -> None:
    model = build_model("mlp", task="regression", n_features=2, hidden_layers=(3,))
    theta = model.init_params(np.random.default_rng(0), np.float64)
    with pytest.raises(NotImplementedError, match="mlp"):
        model.per_example_grads(theta, np.ones((2, 2)), np.ones(2))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_logistic_is_stable_for_logits_of_a_thousand(dtype: type) -> None:
    model = build_model("logistic", task="binary", n_features=1)
    theta = np.array([1.0, 0.0], dtype)
    X = np.array([[1000.0], [-1000.0], [1000.0], [-1000.0]], dtype)
    y = np.array([0.0, 1.0, 1.0, 0.0], dtype)
    grad = np.empty(2, dtype)
    # two rows wrong by a logit of 1000 each (loss 1000), two right (loss e^-1000 ≈ 0)
    loss = model.loss_and_grad(theta, X, y, grad)
    assert loss == pytest.approx(500.0, rel=1e-6)
    # dJ/dz = σ(z) − y = [1, −1, 0, 0]; dJ/dw = (1000 + 1000)/4, dJ/db = 0
    np.testing.assert_allclose(grad, [500.0, 0.0], atol=1e-6)
    probs = model.predict_output(theta, X)
    np.testing.assert_array_equal(probs, [1.0, 0.0, 1.0, 0.0])


def test_softmax_is_stable_for_logits_of_a_thousand() -> None:
    model = build_model("softmax", task="multiclass", n_features=1, n_classes=3)
    W = np.array([[1000.0, -1000.0, 0.0]])
    theta = np.concatenate([W.ravel(), np.zeros(3)])
    X = np.array([[1.0], [-1.0]])
    y = np.array([0, 2])
    grad = np.empty(6)
    # row 0: logits [1000, −1000, 0], true class 0: loss ≈ 0; row 1: [−1000, 1000, 0], class 2:
    # loss ≈ 1000
    loss = model.loss_and_grad(theta, X, y, grad)
    assert loss == pytest.approx(500.0, rel=1e-12)
    assert np.all(np.isfinite(grad))
    probs = model.predict_output(theta, X)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-15)
    np.testing.assert_allclose(probs, [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], atol=1e-300)


def test_softmax_binary_matches_logistic_on_the_logit_difference() -> None:
    rng = np.random.default_rng(5)
    softmax = build_model("softmax", task="binary", n_features=3)
    logistic = build_model("logistic", task="binary", n_features=3)
    X = rng.standard_normal((6, 3))
    y = np.array([0.0, 1.0, 1.0, 0.0, 1.0, 0.0])
    theta_s = rng.standard_normal(softmax.n_params)
    views = softmax.views(theta_s)
    theta_l = np.concatenate([views["W"][:, 1] - views["W"][:, 0], views["b"][1:] - views["b"][:1]])
    assert softmax.loss(theta_s, X, y) == pytest.approx(logistic.loss(theta_l, X, y), rel=1e-12)
    np.testing.assert_allclose(
        softmax.predict_output(theta_s, X)[:, 1], logistic.predict_output(theta_l, X), rtol=1e-12
    )


@pytest.mark.parametrize("case", MODEL_CASES, ids=_case_id)
def test_float32_follows_float64(case: dict[str, Any]) -> None:
    rng = np.random.default_rng(11)
    model = build_model(n_features=N_FEATURES, **case)
    X = rng.standard_normal((N_ROWS, N_FEATURES))
    y = _targets(model, rng, N_ROWS)
    theta = model.init_params(rng, np.float64) + 0.3 * rng.standard_normal(model.n_params)
    grad64 = np.empty(model.n_params)
    loss64 = model.loss_and_grad(theta, X, y, grad64)
    grad32 = np.empty(model.n_params, np.float32)
    y32 = y.astype(np.float32) if y.dtype.kind == "f" else y
    loss32 = model.loss_and_grad(theta.astype(np.float32), X.astype(np.float32), y32, grad32)
    assert loss32 == pytest.approx(loss64, rel=1e-5)
    np.testing.assert_allclose(grad32, grad64, rtol=1e-4, atol=1e-5)
    assert model.forward(theta.astype(np.float32), X.astype(np.float32)).dtype == np.float32


def test_buffers_are_reused_safely_across_batch_sizes_and_inputs_are_not_written() -> None:
    rng = np.random.default_rng(2)
    model = build_model("mlp", task="multiclass", n_classes=3, n_features=4, hidden_layers=(5,))
    theta = model.init_params(rng, np.float64)
    X = rng.standard_normal((10, 4))
    y = rng.integers(0, 3, 10)
    X.setflags(write=False)
    y.setflags(write=False)
    X_before, y_before = X.copy(), y.copy()
    results = []
    for rows in (slice(0, 6), slice(6, 10), slice(2, 8), slice(0, 6)):
        grad = np.empty(model.n_params)
        fresh = build_model("mlp", task="multiclass", n_classes=3, n_features=4, hidden_layers=(5,))
        fresh_grad = np.empty(model.n_params)
        loss = model.loss_and_grad(theta, X[rows], y[rows], grad)
        fresh_loss = fresh.loss_and_grad(theta, X[rows], y[rows], fresh_grad)
        assert loss == fresh_loss
        np.testing.assert_array_equal(grad, fresh_grad)
        results.append(grad)
    np.testing.assert_array_equal(results[0], results[3])
    np.testing.assert_array_equal(X, X_before)
    np.testing.assert_array_equal(y, y_before)


@pytest.mark.parametrize("kind", ["linear", "mlp"])
def test_no_reference_to_the_inputs_survives_a_call(kind: str) -> None:
    hidden = (3,) if kind == "mlp" else ()
    model = build_model(kind, task="regression", n_features=2, hidden_layers=hidden)
    theta = model.init_params(np.random.default_rng(0), np.float64)
    X, y = np.ones((4, 2)), np.ones(4)
    refs = [weakref.ref(X), weakref.ref(y)]
    model.loss_and_grad(theta, X, y, np.empty(model.n_params))
    del X, y
    gc.collect()
    assert all(ref() is None for ref in refs)


def test_views_are_named_views_into_theta() -> None:
    model = build_model("mlp", task="multiclass", n_classes=3, n_features=4, hidden_layers=(5, 2))
    theta = np.arange(model.n_params, dtype=np.float64)
    views = model.views(theta)
    shapes = {name: v.shape for name, v in views.items()}
    assert shapes == {
        "W0": (4, 5), "b0": (5,), "W1": (5, 2), "b1": (2,), "W2": (2, 3), "b2": (3,),
    }  # fmt: skip
    assert model.n_params == 4 * 5 + 5 + 5 * 2 + 2 + 2 * 3 + 3
    assert views["W0"][0, 0] == 0
    assert views["b0"][0] == 20
    assert views["b2"][-1] == model.n_params - 1
    views["W1"][0, 0] = -1.0
    assert theta[25] == -1.0
    linear = build_model("softmax", task="multiclass", n_classes=3, n_features=2)
    lv = linear.views(np.arange(9.0))
    np.testing.assert_array_equal(lv["W"], [[0, 1, 2], [3, 4, 5]])
    np.testing.assert_array_equal(lv["b"], [6, 7, 8])
    with pytest.raises(ValueError, match=r"expected \(9,\)"):
        linear.views(np.zeros(8))


def test_generalized_linear_models_start_at_zero() -> None:
    for model in (
        build_model("linear", task="regression", n_features=3),
        build_model("logistic", task="binary", n_features=3),
        build_model("softmax", task="multiclass", n_classes=4, n_features=3),
    ):
        theta = model.init_params(np.random.default_rng(0), np.float32)
        assert theta.dtype == np.float32
        np.testing.assert_array_equal(theta, np.zeros(model.n_params))


def test_mlp_init_he_for_relu_glorot_for_tanh_zero_biases_seeded() -> None:
    relu = build_model("mlp", task="regression", n_features=200, hidden_layers=(300,))
    theta = relu.init_params(np.random.default_rng(1), np.float64)
    views = relu.views(theta)
    assert np.std(views["W0"]) == pytest.approx(math.sqrt(2 / 200), rel=0.02)
    assert abs(np.mean(views["W0"])) < 0.003
    np.testing.assert_array_equal(views["b0"], 0.0)
    np.testing.assert_array_equal(views["b1"], 0.0)
    out_limit = math.sqrt(6 / (300 + 1))
    assert np.max(np.abs(views["W1"])) <= out_limit
    assert np.max(np.abs(views["W1"])) > 0.9 * out_limit

    tanh = build_model(
        "mlp", task="regression", n_features=200, hidden_layers=(300,), activation="tanh"
    )
    W0 = tanh.views(tanh.init_params(np.random.default_rng(1), np.float64))["W0"]
    limit = math.sqrt(6 / (200 + 300))
    assert np.max(np.abs(W0)) <= limit
    assert np.std(W0) == pytest.approx(limit / math.sqrt(3), rel=0.02)  # uniform's std

    same = relu.init_params(np.random.default_rng(1), np.float64)
    np.testing.assert_array_equal(same, theta)
    other = relu.init_params(np.random.default_rng(2), np.float64)
    assert not np.array_equal(other, theta)
    as32 = relu.init_params(np.random.default_rng(1), np.float32)
    assert as32.dtype == np.float32
    np.testing.assert_array_equal(as32, theta.astype(np.float32))


def test_predict_output_by_task() -> None:
    rng = np.random.default_rng(4)
    X = rng.standard_normal((5, 2))
    regression = build_model("mlp", task="regression", n_features=2, hidden_layers=(3,))
    theta = regression.init_params(rng, np.float64)
    np.testing.assert_array_equal(regression.predict_output(theta, X), regression.forward(theta, X))
    assert regression.forward(theta, X).shape == (5,)

    binary = build_model("mlp", task="binary", n_features=2, hidden_layers=(3,))
    theta = binary.init_params(rng, np.float64)
    z = binary.forward(theta, X)
    np.testing.assert_allclose(binary.predict_output(theta, X), 1 / (1 + np.exp(-z)), rtol=1e-14)

    multi = build_model("softmax", task="multiclass", n_classes=3, n_features=2)
    theta = rng.standard_normal(multi.n_params)
    Z = multi.forward(theta, X)
    assert Z.shape == (5, 3)
    expected = np.exp(Z) / np.exp(Z).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(multi.predict_output(theta, X), expected, rtol=1e-14)


def test_mse_loss_is_the_seed_formula_without_a_half() -> None:
    model = build_model("linear", task="regression", n_features=1)
    theta = np.array([2.0, 1.0])
    X = np.array([[1.0], [2.0]])
    y = np.array([0.0, 0.0])
    # ŷ = [3, 5]: J = (9 + 25)/2
    assert model.loss(theta, X, y) == 17.0
    assert model.loss_name == "mse"


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"kind": "tree", "task": "regression"}, "model"),
        ({"kind": "linear", "task": "ranking"}, "task"),
        ({"kind": "linear", "task": "regression", "n_features": 0}, "n_features"),
        ({"kind": "linear", "task": "regression", "n_features": 2.5}, "n_features"),
        ({"kind": "linear", "task": "regression", "activation": "gelu"}, "activation"),
        ({"kind": "mlp", "task": "regression"}, "hidden_layers"),
        ({"kind": "mlp", "task": "regression", "hidden_layers": (4, 0)}, "hidden_layers"),
        ({"kind": "linear", "task": "regression", "hidden_layers": (4,)}, "hidden_layers"),
        ({"kind": "softmax", "task": "multiclass"}, "n_classes"),
        ({"kind": "softmax", "task": "multiclass", "n_classes": 1}, "n_classes"),
        ({"kind": "logistic", "task": "binary", "n_classes": 3}, "n_classes"),
        ({"kind": "linear", "task": "regression", "n_classes": 3}, "n_classes"),
        ({"kind": "linear", "task": "binary"}, "model"),
        ({"kind": "logistic", "task": "multiclass", "n_classes": 3}, "model"),
        ({"kind": "softmax", "task": "regression"}, "model"),
        ({"kind": "linear", "task": "regression", "loss": "hinge"}, "loss"),
        ({"kind": "logistic", "task": "binary", "loss": "mse"}, "loss"),
        (
            {"kind": "linear", "task": "regression", "loss": "huber", "huber_delta": 0},
            "huber_delta",
        ),
        (
            {"kind": "linear", "task": "regression", "loss": "huber", "huber_delta": math.inf},
            "huber_delta",
        ),
    ],
)
def test_build_model_refuses_nonsense_naming_the_field(kwargs: dict[str, Any], field: str) -> None:
    kwargs = {"n_features": 3, **kwargs}
    with pytest.raises(CoreConfigError) as info:
        build_model(**kwargs)
    assert info.value.field == field
    assert str(info.value).startswith(f"{field}: ")


def test_core_errors_carry_their_fields() -> None:
    from service.core.errors import CoreError, TrainingDiverged

    error = CoreConfigError("batch_size", "must be ≥ 1")
    assert str(error) == "batch_size: must be ≥ 1"
    assert (error.field, error.message) == ("batch_size", "must be ≥ 1")
    assert isinstance(error, CoreError)
    diverged = TrainingDiverged(epoch=3, step=17, loss=math.inf, message="loss is inf")
    assert (diverged.epoch, diverged.step, diverged.loss) == (3, 17, math.inf)
    assert str(diverged) == "loss is inf"
    assert isinstance(diverged, CoreError)
