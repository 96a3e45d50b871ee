"""Optimizers over one flat parameter vector: stateful wrappers around pure update functions.

Every step, in this order (g is the loss gradient, θ the parameters, λ the weight decay):

1. clip:  if clip_norm is set and ‖g‖₂ > clip_norm: g ← g · clip_norm/‖g‖₂   (the loss gradient)
2. decay: g ← g + λθ                       (coupled L2, as torch.optim.SGD/Adam ``weight_decay``)
3. update (torch.optim's formulas, dampening 0):

   - sgd:      θ ← θ − lr·g
   - momentum: b ← μb + g;  θ ← θ − lr·b                     (b starts at 0, so b₁ = g₁)
   - nesterov: b ← μb + g;  g ← g + μb;  θ ← θ − lr·g
   - adam:     t ← t + 1;  m ← β₁m + (1 − β₁)g;  v ← β₂v + (1 − β₂)g²
               θ ← θ − (lr/(1 − β₁ᵗ)) · m / (√v/√(1 − β₂ᵗ) + ε)

All arithmetic is in place on preallocated buffers of theta's dtype; ``step`` may overwrite
``grad``. ``state_dict`` holds arrays only (the step count as a 0-d int64 array), and a loaded
state continues bit-identically.

The training loop steps through the optimizer only: ``minibatch_step(model)`` (the loss, then
the update) and, where there is one, ``fused_kernel(model)`` run by ``run_fused``. Plain SGD
(``PlainSGD``: no weight decay, no clipping) takes both by shorter routes of its own.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, Literal

import numpy as np

from service.core.errors import CoreConfigError
from service.core.fused_sgd import AugmentedSGD, augmented_sgd
from service.core.models import Model
from service.core.validation import check_int, check_real

__all__ = [
    "OPTIMIZER_NAMES",
    "Optimizer",
    "PlainSGD",
    "StepFunction",
    "adam_update",
    "clip_and_decay",
    "make_optimizer",
    "momentum_update",
    "sgd_update",
]

OptimizerName = Literal["sgd", "momentum", "nesterov", "adam"]
OPTIMIZER_NAMES: tuple[str, ...] = ("sgd", "momentum", "nesterov", "adam")
#: One minibatch step: ``(θ, X, y, grad, lr) -> J`` (``Optimizer.minibatch_step``).
StepFunction = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray, float], float]


# --------------------------------------------------------------------------------------------
# Pure, keyword-only update functions (in place on their array arguments)
# --------------------------------------------------------------------------------------------


def clip_and_decay(
    *,
    theta: np.ndarray,
    grad: np.ndarray,
    weight_decay: float,
    clip_norm: float | None,
    work: np.ndarray,
) -> None:
    """g ← g · min(1, clip_norm/‖g‖₂), then g ← g + λθ. ``work`` is scratch of theta's shape.

    A non-finite norm is left alone: clipping it would turn a diverged gradient into zeros
    and hide the divergence from the training loop.
    """
    if clip_norm is not None:
        norm = math.sqrt(float(np.dot(grad, grad)))
        if math.isfinite(norm) and norm > clip_norm:
            np.multiply(grad, clip_norm / norm, out=grad)
    if weight_decay != 0.0:
        np.multiply(theta, weight_decay, out=work)
        np.add(grad, work, out=grad)


def sgd_update(*, theta: np.ndarray, grad: np.ndarray, lr: float) -> None:
    """θ ← θ − lr·g (overwrites grad)."""
    np.multiply(grad, lr, out=grad)
    np.subtract(theta, grad, out=theta)


def momentum_update(
    *,
    theta: np.ndarray,
    grad: np.ndarray,
    buf: np.ndarray,
    lr: float,
    momentum: float,
    nesterov: bool,
    work: np.ndarray,
) -> None:
    """b ← μb + g; θ ← θ − lr·(g + μb if nesterov else b) (overwrites grad and work)."""
    np.multiply(buf, momentum, out=buf)
    np.add(buf, grad, out=buf)
    if nesterov:
        np.multiply(buf, momentum, out=work)
        np.add(grad, work, out=grad)
        np.multiply(grad, lr, out=grad)
    else:
        np.multiply(buf, lr, out=grad)
    np.subtract(theta, grad, out=theta)


def adam_update(
    *,
    theta: np.ndarray,
    grad: np.ndarray,
    m: np.ndarray,
    v: np.ndarray,
    step: int,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    work: np.ndarray,
) -> None:
    """One Adam step with bias correction; ``step`` is t ≥ 1 after incrementing (overwrites
    grad and work)."""
    # m ← β₁m + (1 − β₁)g
    np.multiply(m, beta1, out=m)
    np.multiply(grad, 1.0 - beta1, out=work)
    np.add(m, work, out=m)
    # v ← β₂v + (1 − β₂)g²
    np.multiply(grad, grad, out=work)
    np.multiply(work, 1.0 - beta2, out=work)
    np.multiply(v, beta2, out=v)
    np.add(v, work, out=v)
    bias_correction1 = 1.0 - beta1**step
    bias_correction2 = 1.0 - beta2**step
    # denominator √v/√(1 − β₂ᵗ) + ε, as torch computes it
    np.sqrt(v, out=work)
    np.divide(work, math.sqrt(bias_correction2), out=work)
    np.add(work, eps, out=work)
    np.divide(m, work, out=grad)
    np.multiply(grad, lr / bias_correction1, out=grad)
    np.subtract(theta, grad, out=theta)


# --------------------------------------------------------------------------------------------
# The stateful wrapper
# --------------------------------------------------------------------------------------------


class Optimizer:
    """Holds the hyperparameters and the state (buffers of theta's shape and dtype) and applies
    one update in place per ``step``. Built by ``make_optimizer``."""

    def __init__(
        self,
        name: str,
        *,
        n_params: int,
        dtype: np.dtype,
        momentum: float,
        beta1: float,
        beta2: float,
        eps: float,
        weight_decay: float,
        clip_norm: float | None,
    ) -> None:
        self.name = name
        self.n_params = n_params
        self.dtype = dtype
        self.momentum = momentum
        self.beta1 = beta1
        self.beta2 = beta2
        self.eps = eps
        self.weight_decay = weight_decay
        self.clip_norm = clip_norm
        self._work = np.zeros(n_params, dtype)
        self._state: dict[str, np.ndarray] = {}
        if name in ("momentum", "nesterov"):
            self._state["momentum_buffer"] = np.zeros(n_params, dtype)
        elif name == "adam":
            self._state["m"] = np.zeros(n_params, dtype)
            self._state["v"] = np.zeros(n_params, dtype)
        self._step_count = 0

    @property
    def step_count(self) -> int:
        """Number of steps taken (Adam's t)."""
        return self._step_count

    def minibatch_step(self, model: Model[Any]) -> StepFunction:
        """``step(θ, X, y, grad, lr) -> J``: the mean loss J of ``model`` at θ on the batch
        (X, y), then θ ← update(θ, dJ/dθ) in place (``grad`` is the scratch)."""
        loss_and_grad, step = model.loss_and_grad, self.step

        def minibatch_step(
            theta: np.ndarray, X: np.ndarray, y: np.ndarray, grad: np.ndarray, lr: float
        ) -> float:
            loss = loss_and_grad(theta, X, y, grad)
            step(theta, grad, lr)
            return loss

        return minibatch_step

    def fused_kernel(self, model: Model[Any]) -> AugmentedSGD | None:
        """A kernel that takes this optimizer's steps on ``model`` many at a time
        (``run_fused``), or None: only plain SGD has one."""
        return None

    def run_fused(
        self,
        kernel: AugmentedSGD,
        rows: np.ndarray,
        batch_size: int,
        lr: float,
        should_stop: Callable[[], bool] | None,
    ) -> bool:
        """Steps over ``rows`` with ``fused_kernel``'s kernel (``AugmentedSGD.run``)."""
        raise TypeError(f"{self.name} has no fused kernel")

    def step(self, theta: np.ndarray, grad: np.ndarray, lr: float) -> None:
        """θ ← update(θ, g) in place; grad is overwritten."""
        if self.weight_decay != 0.0 or self.clip_norm is not None:  # a call saved per step
            clip_and_decay(
                theta=theta,
                grad=grad,
                weight_decay=self.weight_decay,
                clip_norm=self.clip_norm,
                work=self._work,
            )
        self._step_count += 1
        name = self.name
        if name == "sgd":
            sgd_update(theta=theta, grad=grad, lr=lr)
        elif name == "adam":
            adam_update(
                theta=theta,
                grad=grad,
                m=self._state["m"],
                v=self._state["v"],
                step=self._step_count,
                lr=lr,
                beta1=self.beta1,
                beta2=self.beta2,
                eps=self.eps,
                work=self._work,
            )
        else:
            momentum_update(
                theta=theta,
                grad=grad,
                buf=self._state["momentum_buffer"],
                lr=lr,
                momentum=self.momentum,
                nesterov=name == "nesterov",
                work=self._work,
            )

    def state_dict(self) -> dict[str, np.ndarray]:
        """Copies of the state: "step" (0-d int64) and the buffers ("momentum_buffer" or
        "m", "v")."""
        state = {key: value.copy() for key, value in self._state.items()}
        state["step"] = np.array(self._step_count, dtype=np.int64)
        return state

    def load_state_dict(self, state: Mapping[str, np.ndarray]) -> None:
        """Restore a ``state_dict`` (copied in; buffers keep this optimizer's dtype).

        Raises CoreConfigError("optimizer_state", ...) when keys or shapes do not match.
        """
        expected = {*self._state, "step"}
        if set(state) != expected:
            raise CoreConfigError(
                "optimizer_state",
                f"{self.name} expects keys {sorted(expected)}, got {sorted(state)}",
            )
        step = np.asarray(state["step"])
        if step.shape != () or step.dtype.kind not in "iu" or int(step) < 0:
            raise CoreConfigError("optimizer_state", "step must be a 0-d integer array ≥ 0")
        for key, buffer in self._state.items():
            value = np.asarray(state[key])
            if value.shape != buffer.shape:
                raise CoreConfigError(
                    "optimizer_state", f"{key} has shape {value.shape}, expected {buffer.shape}"
                )
            if value.dtype != buffer.dtype:
                raise CoreConfigError(
                    "optimizer_state", f"{key} has dtype {value.dtype}, expected {buffer.dtype}"
                )
        for key, buffer in self._state.items():
            np.copyto(buffer, state[key])
        self._step_count = int(step)


class PlainSGD(Optimizer):
    """sgd with no weight decay and no clipping: θ ← θ − lr·g and nothing else, so its steps
    take shorter routes, equal to ``step``'s up to rounding and as deterministic: the gradient
    comes scaled by −lr (``Model.loss_and_scaled_grad``) and the update is one add; and for
    linear-mse and logistic models, the fused ``AugmentedSGD`` over rows [x | 1 | y]."""

    def minibatch_step(self, model: Model[Any]) -> StepFunction:
        loss_and_scaled_grad, add = model.loss_and_scaled_grad, np.add

        def plain_sgd_step(
            theta: np.ndarray, X: np.ndarray, y: np.ndarray, grad: np.ndarray, lr: float
        ) -> float:
            loss = loss_and_scaled_grad(theta, X, y, grad, -lr)
            add(theta, grad, out=theta)
            self._step_count += 1
            return loss

        return plain_sgd_step

    def fused_kernel(self, model: Model[Any]) -> AugmentedSGD | None:
        return augmented_sgd(model, self.dtype)

    def run_fused(
        self,
        kernel: AugmentedSGD,
        rows: np.ndarray,
        batch_size: int,
        lr: float,
        should_stop: Callable[[], bool] | None,
    ) -> bool:
        if not kernel.run(rows, batch_size, lr, should_stop):
            return False
        self._step_count += -(-rows.shape[0] // batch_size)  # the last step may be short
        return True


def make_optimizer(
    name: str,
    *,
    n_params: int,
    dtype: np.dtype | type,
    momentum: float = 0.9,
    beta1: float = 0.9,
    beta2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    clip_norm: float | None = None,
) -> Optimizer:
    """An optimizer for ``n_params`` parameters of ``dtype`` (float32 or float64).

    Validated eagerly: momentum in [0, 1); beta1, beta2 in [0, 1); eps > 0; weight_decay ≥ 0;
    clip_norm None or > 0. Errors are CoreConfigError naming the field.
    """
    if name not in OPTIMIZER_NAMES:
        raise CoreConfigError(
            "optimizer", f"must be one of {', '.join(OPTIMIZER_NAMES)}, not {name!r}"
        )
    check_int("n_params", n_params, minimum=1)
    np_dtype = np.dtype(dtype)
    if np_dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise CoreConfigError("dtype", f"must be float32 or float64, not {np_dtype}")
    momentum = check_real("momentum", momentum, minimum=0.0, maximum=1.0, max_open=True)
    beta1 = check_real("beta1", beta1, minimum=0.0, maximum=1.0, max_open=True)
    beta2 = check_real("beta2", beta2, minimum=0.0, maximum=1.0, max_open=True)
    eps = check_real("eps", eps, minimum=0.0, min_open=True)
    weight_decay = check_real("weight_decay", weight_decay, minimum=0.0)
    if clip_norm is not None:
        clip_norm = check_real("clip_norm", clip_norm, minimum=0.0, min_open=True)
    plain = name == "sgd" and weight_decay == 0.0 and clip_norm is None
    return (PlainSGD if plain else Optimizer)(
        name,
        n_params=n_params,
        dtype=np_dtype,
        momentum=momentum,
        beta1=beta1,
        beta2=beta2,
        eps=eps,
        weight_decay=weight_decay,
        clip_norm=clip_norm,
    )
