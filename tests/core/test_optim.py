"""Optimizers: first steps against hand-computed values and torch.optim's formulas written out."""

import math
from typing import Any

import numpy as np
import pytest

from service.core.build import build_model
from service.core.errors import CoreConfigError
from service.core.fused_sgd import augmented_sgd
from service.core.optim import OPTIMIZER_NAMES, make_optimizer

THETA0 = [1.0, -2.0]
G1 = [0.5, 0.25]
G2 = [-1.0, 2.0]


def _run(name: str, grads: list[list[float]], lr: float = 0.1, **kwargs: Any) -> np.ndarray:
    theta = np.array(THETA0)
    optimizer = make_optimizer(name, n_params=2, dtype=np.float64, **kwargs)
    for g in grads:
        optimizer.step(theta, np.array(g), lr)
    return theta


def test_sgd_step() -> None:
    # θ − 0.1·g = [1 − 0.05, −2 − 0.025]
    np.testing.assert_allclose(_run("sgd", [G1]), [0.95, -2.025], rtol=1e-15)


def test_momentum_first_two_steps() -> None:
    # step 1: b = g1 = [0.5, 0.25];                 θ = [0.95, −2.025]
    # step 2: b = 0.9·b + g2 = [−0.55, 2.225];      θ = [0.95 + 0.055, −2.025 − 0.2225]
    np.testing.assert_allclose(_run("momentum", [G1]), [0.95, -2.025], rtol=1e-15)
    np.testing.assert_allclose(_run("momentum", [G1, G2]), [1.005, -2.2475], rtol=1e-15)


def test_nesterov_first_two_steps() -> None:
    # step 1: b = g1; d = g1 + 0.9·b = [0.95, 0.475];           θ = [0.905, −2.0475]
    # step 2: b = [−0.55, 2.225]; d = g2 + 0.9·b = [−1.495, 4.0025]; θ = [1.0545, −2.44775]
    np.testing.assert_allclose(_run("nesterov", [G1]), [0.905, -2.0475], rtol=1e-15)
    np.testing.assert_allclose(_run("nesterov", [G1, G2]), [1.0545, -2.44775], rtol=1e-14)


def _torch_adam(
    grads: list[list[float]], lr: float, b1: float, b2: float, eps: float
) -> list[float]:
    """torch.optim.Adam's documented algorithm, one scalar parameter at a time."""
    out = []
    for i, theta in enumerate(THETA0):
        m = v = 0.0
        for t, g in enumerate(grads, start=1):
            m = b1 * m + (1 - b1) * g[i]
            v = b2 * v + (1 - b2) * g[i] ** 2
            m_hat = m / (1 - b1**t)
            v_hat = v / (1 - b2**t)
            theta -= lr * m_hat / (math.sqrt(v_hat) + eps)
        out.append(theta)
    return out


def test_adam_first_steps() -> None:
    # step 1: m̂ = g, v̂ = g², so θ moves by lr·g/(|g| + ε) ≈ lr·sign(g)
    np.testing.assert_allclose(_run("adam", [G1]), [0.9, -2.1], rtol=1e-8)
    # step 2 by hand for θ₀: m = 0.9·0.05 − 0.1 = −0.055, v = 0.999·0.00025 + 0.001 = 0.00124975
    # m̂ = −0.055/0.19, v̂ = 0.00124975/0.001999; θ₀ = 0.9 − 0.1·m̂/√v̂
    expected0 = 0.9 - 0.1 * (-0.055 / 0.19) / math.sqrt(0.00124975 / 0.001999)
    theta = _run("adam", [G1, G2])
    assert theta[0] == pytest.approx(expected0, rel=1e-7)
    grads = [G1, G2, [0.3, -0.7], [2.0, 0.1], [-0.4, -0.4]]
    np.testing.assert_allclose(
        _run("adam", grads, lr=0.05, beta1=0.8, beta2=0.99, eps=1e-3),
        _torch_adam(grads, lr=0.05, b1=0.8, b2=0.99, eps=1e-3),
        rtol=1e-13,
    )


def test_clip_then_decay_order() -> None:
    # ‖[3, 4]‖ = 5 > 1: g = [0.6, 0.8]; then + 0.5·θ = [1.1, 0.8]; θ − 1·g = [−0.1, −0.8]
    theta = np.array([1.0, 0.0])
    optimizer = make_optimizer("sgd", n_params=2, dtype=np.float64, clip_norm=1.0, weight_decay=0.5)
    optimizer.step(theta, np.array([3.0, 4.0]), 1.0)
    np.testing.assert_allclose(theta, [-0.1, -0.8], rtol=1e-15)


def test_clip_leaves_a_small_or_non_finite_gradient_alone() -> None:
    theta = np.array([0.0, 0.0])
    optimizer = make_optimizer("sgd", n_params=2, dtype=np.float64, clip_norm=10.0)
    optimizer.step(theta, np.array([3.0, 4.0]), 1.0)
    np.testing.assert_array_equal(theta, [-3.0, -4.0])
    optimizer.step(theta, np.array([np.inf, 1.0]), 1.0)
    assert theta[0] == -np.inf  # the divergence stays visible


def test_weight_decay_is_coupled_into_momentum() -> None:
    # g1 + λθ = [0.5 + 0.1, 0.25 − 0.2] = [0.6, 0.05]; b = that; θ = [0.94, −2.005]
    np.testing.assert_allclose(_run("momentum", [G1], weight_decay=0.1), [0.94, -2.005], rtol=1e-15)


@pytest.mark.parametrize("name", OPTIMIZER_NAMES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_state_round_trip_continues_bit_identically(name: str, dtype: type) -> None:
    rng = np.random.default_rng(0)
    grads = rng.standard_normal((10, 5)).astype(dtype)
    kwargs = {"weight_decay": 0.01, "clip_norm": 1.5}
    theta = rng.standard_normal(5).astype(dtype)
    first = make_optimizer(name, n_params=5, dtype=dtype, **kwargs)
    for g in grads[:5]:
        first.step(theta, g.copy(), 0.05)
    state = first.state_dict()
    assert all(isinstance(v, np.ndarray) for v in state.values())
    assert state["step"].shape == ()
    assert int(state["step"]) == 5
    resumed_theta = theta.copy()
    for g in grads[5:]:
        first.step(theta, g.copy(), 0.05)
    second = make_optimizer(name, n_params=5, dtype=dtype, **kwargs)
    # the saved state must be a snapshot, not a live view of the first optimizer
    second.load_state_dict({k: v.copy() for k, v in state.items()})
    for g in grads[5:]:
        second.step(resumed_theta, g.copy(), 0.05)
    assert resumed_theta.dtype == dtype
    assert resumed_theta.tobytes() == theta.tobytes()
    assert second.step_count == 10


def test_state_dict_is_a_snapshot() -> None:
    optimizer = make_optimizer("adam", n_params=2, dtype=np.float64)
    theta = np.zeros(2)
    optimizer.step(theta, np.array([1.0, 2.0]), 0.1)
    state = optimizer.state_dict()
    saved = {k: v.copy() for k, v in state.items()}
    optimizer.step(theta, np.array([1.0, 2.0]), 0.1)
    for key in saved:
        np.testing.assert_array_equal(state[key], saved[key])
    assert set(state) == {"m", "v", "step"}
    assert set(make_optimizer("momentum", n_params=2, dtype=np.float64).state_dict()) == {
        "momentum_buffer",
        "step",
    }
    assert set(make_optimizer("sgd", n_params=2, dtype=np.float64).state_dict()) == {"step"}


@pytest.mark.parametrize(
    ("state", "match"),
    [
        ({"step": np.array(1)}, "expects keys"),
        ({"m": np.zeros(3), "v": np.zeros(3), "step": np.array(1)}, "shape"),
        ({"m": np.zeros(2, np.float32), "v": np.zeros(2), "step": np.array(1)}, "dtype"),
        ({"m": np.zeros(2), "v": np.zeros(2), "step": np.array([1])}, "step"),
        ({"m": np.zeros(2), "v": np.zeros(2), "step": np.array(1.5)}, "step"),
        ({"m": np.zeros(2), "v": np.zeros(2), "step": np.array(-1)}, "step"),
    ],
)
def test_load_state_dict_refuses_a_foreign_state(state: dict[str, np.ndarray], match: str) -> None:
    optimizer = make_optimizer("adam", n_params=2, dtype=np.float64)
    with pytest.raises(CoreConfigError, match=match) as info:
        optimizer.load_state_dict(state)
    assert info.value.field == "optimizer_state"


def test_float32_stays_float32() -> None:
    theta = np.ones(3, np.float32)
    optimizer = make_optimizer("adam", n_params=3, dtype=np.float32, weight_decay=0.1)
    optimizer.step(theta, np.ones(3, np.float32), 0.1)
    assert theta.dtype == np.float32
    assert all(v.dtype == np.float32 for k, v in optimizer.state_dict().items() if k != "step")
    np.testing.assert_allclose(theta, 0.9, rtol=1e-6)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"name": "rmsprop"}, "optimizer"),
        ({"n_params": 0}, "n_params"),
        ({"dtype": np.int64}, "dtype"),
        ({"momentum": 1.0}, "momentum"),
        ({"momentum": -0.1}, "momentum"),
        ({"beta1": 1.0}, "beta1"),
        ({"beta2": math.nan}, "beta2"),
        ({"eps": 0.0}, "eps"),
        ({"weight_decay": -1e-4}, "weight_decay"),
        ({"weight_decay": True}, "weight_decay"),
        ({"clip_norm": 0.0}, "clip_norm"),
        ({"clip_norm": math.inf}, "clip_norm"),
    ],
)
def test_make_optimizer_refuses_bad_values_naming_the_field(
    kwargs: dict[str, Any], field: str
) -> None:
    args: dict[str, Any] = {"name": "adam", "n_params": 3, "dtype": np.float64, **kwargs}
    with pytest.raises(CoreConfigError) as info:
        make_optimizer(args.pop("name"), **args)
    assert info.value.field == field


@pytest.mark.parametrize(
    ("name", "kwargs", "plain"),
    [
        ("sgd", {}, True),
        ("sgd", {"weight_decay": 0.1}, False),
        ("sgd", {"clip_norm": 1.0}, False),
        ("momentum", {"momentum": 0.0}, False),
        ("adam", {}, False),
    ],
)
def test_only_plain_sgd_has_a_fused_kernel_and_every_route_counts_its_steps(
    name: str, kwargs: dict[str, Any], plain: bool
) -> None:
    optimizer = make_optimizer(name, n_params=3, dtype=np.float64, **kwargs)
    model = build_model("linear", task="regression", n_features=2)
    kernel = optimizer.fused_kernel(model)
    assert (kernel is not None) is plain
    step = optimizer.minibatch_step(model)
    step(np.zeros(3), np.ones((4, 2)), np.ones(4), np.empty(3), 0.1)
    assert optimizer.step_count == 1
    rows = np.ones((5, 4))  # [x | 1 | y]
    if kernel is not None:
        kernel.load(np.zeros(3))
        assert optimizer.run_fused(kernel, rows, 2, 0.1, None)
        assert int(optimizer.state_dict()["step"]) == optimizer.step_count == 1 + 3
    else:
        other = augmented_sgd(model, np.float64)
        assert other is not None
        with pytest.raises(TypeError, match=f"^{name} has no fused kernel"):
            optimizer.run_fused(other, rows, 2, 0.1, None)
        assert optimizer.step_count == 1
