"""Models with analytic gradients over one flat parameter vector ``theta``.

Every model keeps its parameters in ONE contiguous 1-D array ``theta`` (float32 or float64) and
exposes named views into it (``views``). Gradients are a flat array of the same shape, so the
optimizers are whole-array operations and a checkpoint is one array.

Shapes: ``X : (n, d)`` in theta's dtype; ``y : (n,)`` — float targets (regression), float 0/1
(binary), int class indices ``0..K-1`` (multiclass). Raw outputs ``z`` are ``(n,)`` for
regression and binary (the logit) and ``(n, K)`` logits for multiclass.

Losses (means over the n rows; weight decay is NOT here, the optimizer applies it):

- mse:      J = 1/n Σ (y − ŷ)²            dJ/dŷ = −2/n (y − ŷ)      (no ½, the seed formula)
- huber:    J = 1/n Σ ℓ_δ(ŷ − y), ℓ_δ(r) = ½r² if |r| ≤ δ else δ(|r| − ½δ)   (torch's HuberLoss)
            dJ/dŷ = clip(ŷ − y, −δ, δ)/n
- logistic: J = 1/n Σ softplus(z) − y·z   (binary cross-entropy in log-sigmoid form: stable for
            any |z|, softplus(z) = log(1 + eᶻ) = logaddexp(0, z))     dJ/dz = (σ(z) − y)/n,
            σ(z) = exp(z − softplus(z)), whose exponent is ≤ 0, so it never overflows
- softmax:  J = 1/n Σ logsumexp(z) − z_y  (stable: the row max is subtracted first)
            dJ/dz = (softmax(z) − onehot(y))/n

Layouts of theta (row-major blocks, in this order):

- linear / logistic: ``W (d,)`` then ``b (1,)``
- softmax:           ``W (d, K)`` then ``b (K,)``
- mlp:               ``W0 (d, h0), b0 (h0,), W1 (h0, h1), b1 (h1,), …, WL (h_last, m), bL (m,)``
                     with m = 1 for regression/binary heads and K for multiclass

``loss_and_grad`` is the hot path: work buffers are cached by (batch size, dtype) and reused,
every NumPy call writes with ``out=``, and no reference to X or y outlives a call.
``loss_and_scaled_grad`` writes factor · dJ/dθ (factor = −lr makes a plain SGD step one add);
``AugmentedSGD`` is the fused small-batch plain-SGD step of linear-mse and logistic models.
"""

from __future__ import annotations

import abc
import itertools
import math
from collections.abc import Callable, Sequence
from typing import Any, Literal

import numpy as np

from service.core.errors import CoreConfigError
from service.core.tasks import Task

__all__ = [
    "AUGMENTED_MAX_BATCH",
    "MODEL_KINDS",
    "AugmentedSGD",
    "LinearModel",
    "LogisticModel",
    "MLPModel",
    "Model",
    "SoftmaxModel",
    "Task",
    "augmented_sgd",
    "build_model",
]

ModelKind = Literal["linear", "logistic", "softmax", "mlp"]
MODEL_KINDS: tuple[str, ...] = ("linear", "logistic", "softmax", "mlp")
_TASKS: tuple[str, ...] = ("regression", "binary", "multiclass")
_ACTIVATIONS: tuple[str, ...] = ("relu", "tanh")

# Buffers for a few batch sizes are kept (the epoch's full batches plus a short last one,
# validation, a changing batch-size schedule); beyond that the oldest are dropped.
_MAX_CACHED_BATCH_SIZES = 8


# --------------------------------------------------------------------------------------------
# Heads: the loss on raw outputs z and its derivative, written in place.
# --------------------------------------------------------------------------------------------


class _Head(abc.ABC):
    """A loss on raw outputs z. ``loss_sum_and_dz`` writes ``dz = scale · ∂L_i/∂z_i`` and
    returns ``Σ_i L_i``; ``dz`` may be the same array as ``z`` (z is then overwritten).

    ``make_work`` preallocates the scratch for n rows, with ``scale`` (1/n for the mean
    gradient, 1 for per-example gradients) and the other constants as 0-d arrays of the dtype:
    NumPy converts a Python float on every call, a 0-d array it does not.
    """

    name: str

    @abc.abstractmethod
    def make_work(
        self, n: int, n_outputs: int, dtype: np.dtype, scale: float
    ) -> tuple[np.ndarray, ...]: ...

    @abc.abstractmethod
    def loss_sum_and_dz(
        self, z: np.ndarray, y: np.ndarray, dz: np.ndarray, work: tuple[np.ndarray, ...]
    ) -> float: ...

    def set_scale(self, work: tuple[np.ndarray, ...], scale: float) -> None:
        """Give ``work`` (from ``make_work``) another ``scale``, in place. Every head but mse
        keeps it as the last 0-d array."""
        work[-1][...] = scale

    @abc.abstractmethod
    def output(self, z: np.ndarray) -> np.ndarray:
        """Predictions from raw outputs: values, P(class 1) or class probabilities."""


def _const(value: float, dtype: np.dtype) -> np.ndarray:
    return np.array(value, dtype=dtype)


class _MSEHead(_Head):
    name = "mse"

    def make_work(
        self, n: int, n_outputs: int, dtype: np.dtype, scale: float
    ) -> tuple[np.ndarray, ...]:
        return (_const(2.0 * scale, dtype),)

    def set_scale(self, work: tuple[np.ndarray, ...], scale: float) -> None:
        work[0][...] = 2.0 * scale

    def loss_sum_and_dz(
        self, z: np.ndarray, y: np.ndarray, dz: np.ndarray, work: tuple[np.ndarray, ...]
    ) -> float:
        (two_scale,) = work
        np.subtract(z, y, dz)  # r = ŷ − y
        loss_sum = float(dz.dot(dz))
        np.multiply(dz, two_scale, dz)  # ∂(r²)/∂ŷ = 2r
        return loss_sum

    def output(self, z: np.ndarray) -> np.ndarray:
        return z


class _HuberHead(_Head):
    name = "huber"

    def __init__(self, delta: float) -> None:
        self.delta = delta

    def make_work(
        self, n: int, n_outputs: int, dtype: np.dtype, scale: float
    ) -> tuple[np.ndarray, ...]:
        return (
            np.empty(n, dtype),
            np.empty(n, dtype),
            _const(self.delta, dtype),
            _const(scale, dtype),
        )

    def loss_sum_and_dz(
        self, z: np.ndarray, y: np.ndarray, dz: np.ndarray, work: tuple[np.ndarray, ...]
    ) -> float:
        abs_r, q, delta, scale = work
        np.subtract(z, y, out=dz)  # r = ŷ − y
        np.abs(dz, out=abs_r)
        np.minimum(abs_r, delta, out=q)
        # q = min(|r|, δ) covers both regimes at once: ℓ = q·|r| − ½q², ∂ℓ/∂ŷ = sign(r)·q
        loss_sum = float(np.dot(q, abs_r)) - 0.5 * float(np.dot(q, q))
        np.copysign(q, dz, out=dz)
        np.multiply(dz, scale, out=dz)
        return loss_sum

    def output(self, z: np.ndarray) -> np.ndarray:
        return z


class _LogisticHead(_Head):
    name = "cross_entropy"

    def make_work(
        self, n: int, n_outputs: int, dtype: np.dtype, scale: float
    ) -> tuple[np.ndarray, ...]:
        return (np.empty(n, dtype), np.ones(n, dtype), _const(0.0, dtype), _const(scale, dtype))

    def loss_sum_and_dz(
        self, z: np.ndarray, y: np.ndarray, dz: np.ndarray, work: tuple[np.ndarray, ...]
    ) -> float:
        softplus, ones, zero, scale = work
        np.logaddexp(zero, z, out=softplus)  # log(1 + eᶻ) without overflow
        loss_sum = float(np.dot(softplus, ones)) - float(np.dot(y, z))
        np.subtract(z, softplus, out=dz)  # log σ(z) ≤ 0
        np.exp(dz, out=dz)  # σ(z)
        np.subtract(dz, y, out=dz)
        np.multiply(dz, scale, out=dz)
        return loss_sum

    def output(self, z: np.ndarray) -> np.ndarray:
        probs: np.ndarray = np.exp(z - np.logaddexp(0.0, z))
        return probs


class _SoftmaxHead(_Head):
    name = "cross_entropy"

    def make_work(
        self, n: int, n_outputs: int, dtype: np.dtype, scale: float
    ) -> tuple[np.ndarray, ...]:
        return (
            np.empty((n, 1), dtype),  # row max, then row sum of exp
            np.empty(n, np.intp),  # flat index of each row's true class
            np.empty(n, dtype),  # shifted logit of the true class
            np.arange(n, dtype=np.intp) * n_outputs,  # flat index of each row's start
            _const(scale, dtype),
        )

    def loss_sum_and_dz(
        self, z: np.ndarray, y: np.ndarray, dz: np.ndarray, work: tuple[np.ndarray, ...]
    ) -> float:
        row_stat, flat_idx, picked, row_offsets, scale = work
        np.max(z, axis=1, keepdims=True, out=row_stat)
        np.subtract(z, row_stat, out=dz)  # shifted logits, each row's max is 0
        np.add(row_offsets, y.astype(np.intp, copy=False), out=flat_idx)
        dz_flat = dz.reshape(-1)
        np.take(dz_flat, flat_idx, out=picked)
        np.exp(dz, out=dz)
        np.sum(dz, axis=1, keepdims=True, out=row_stat)
        np.divide(dz, row_stat, out=dz)  # softmax
        np.log(row_stat, out=row_stat)  # logsumexp of the shifted logits
        loss_sum = float(np.sum(row_stat)) - float(np.sum(picked))
        dz_flat[flat_idx] -= 1.0  # one true class per row, so no repeated indices
        np.multiply(dz, scale, out=dz)
        return loss_sum

    def output(self, z: np.ndarray) -> np.ndarray:
        shifted = z - z.max(axis=1, keepdims=True)
        e = np.exp(shifted)
        probs: np.ndarray = e / e.sum(axis=1, keepdims=True)
        return probs


# --------------------------------------------------------------------------------------------
# Work arrays and cached views
# --------------------------------------------------------------------------------------------


class _Workspace:
    """The work arrays for one (batch size n, dtype), and the head's constants for the gradient
    factor they were last set to (``loss_and_scaled_grad``'s ``factor``; head scale factor/n)."""

    __slots__ = ("arrays", "dtype", "factor", "head_work", "n")

    def __init__(
        self,
        n: int,
        dtype: np.dtype,
        arrays: tuple[np.ndarray, ...],
        head_work: tuple[np.ndarray, ...],
    ) -> None:
        self.n = n
        self.dtype = dtype
        self.arrays = arrays
        self.head_work: tuple[np.ndarray, ...] = head_work
        self.factor = 1.0


class _ViewCache:
    """Views into the flat array last seen, rebuilt only when another array comes in.

    The training loop passes the same theta and gradient arrays every step; building the views
    (slices and reshapes) costs about a microsecond a step for an MLP. The cache holds a
    reference to that one array, so its identity cannot be reused by another while cached.
    """

    __slots__ = ("_array", "_build", "_views")

    def __init__(self, build: Callable[[np.ndarray], Any]) -> None:
        self._build = build
        self._array: np.ndarray | None = None
        self._views: Any = None

    def get(self, array: np.ndarray) -> Any:
        if array is not self._array:
            self._views = self._build(array)
            self._array = array
        return self._views


# --------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------


class Model(abc.ABC):
    """A differentiable model over a flat parameter vector (see the module docstring)."""

    kind: str
    task: Task
    n_features: int
    n_outputs: int  # 1 for regression/binary, K for multiclass
    n_params: int
    loss_name: str  # "mse", "huber" or "cross_entropy"

    def __init__(self, *, task: Task, n_features: int, n_outputs: int, head: _Head) -> None:
        self.task = task
        self.n_features = n_features
        self.n_outputs = n_outputs
        self._head = head
        self.loss_name = head.name
        self._cache: dict[tuple[int, np.dtype], _Workspace] = {}
        # The last workspace used: a step reuses it without hashing a key (~0.6 µs saved).
        self._last: _Workspace | None = None

    @abc.abstractmethod
    def init_params(self, rng: np.random.Generator, dtype: np.dtype | type) -> np.ndarray:
        """A fresh flat theta of shape (n_params,)."""

    @abc.abstractmethod
    def views(self, theta: np.ndarray) -> dict[str, np.ndarray]:
        """Named views (no copies) into theta: "W", "b" or "W0", "b0", "W1", …"""

    @abc.abstractmethod
    def forward(self, theta: np.ndarray, X: np.ndarray) -> np.ndarray:
        """Raw outputs: (n,) values or logits, or (n, K) logits."""

    def loss_and_grad(
        self, theta: np.ndarray, X: np.ndarray, y: np.ndarray, grad_out: np.ndarray
    ) -> float:
        """Writes dJ/dθ (shape (n_params,)) into grad_out and returns the mean loss J."""
        return self.loss_and_scaled_grad(theta, X, y, grad_out, 1.0)

    @abc.abstractmethod
    def loss_and_scaled_grad(
        self,
        theta: np.ndarray,
        X: np.ndarray,
        y: np.ndarray,
        grad_out: np.ndarray,
        factor: float,
    ) -> float:
        """Writes factor · dJ/dθ into grad_out and returns the mean loss J.

        The factor rides on the head's scale (one multiply it makes anyway), so with
        factor = −lr a plain SGD step is ``θ += grad_out``: no separate multiply by lr.
        """

    def per_example_grads(self, theta: np.ndarray, X: np.ndarray, y: np.ndarray) -> np.ndarray:
        """(n, n_params): row i is ∂L_i/∂θ, so the rows' mean is loss_and_grad's gradient."""
        raise NotImplementedError(f"{self.kind} has no exact per-example gradients")

    def per_example_sq_norms(self, theta: np.ndarray, X: np.ndarray, y: np.ndarray) -> np.ndarray:
        """(n,) float64: |∂L_i/∂θ|² per row, without forming the (n, n_params) matrix."""
        raise NotImplementedError(f"{self.kind} has no exact per-example gradients")

    def predict_output(self, theta: np.ndarray, X: np.ndarray) -> np.ndarray:
        """Regression values (n,), P(class 1) (n,), or class probabilities (n, K) (softmax on a
        binary task included: (n, 2))."""
        output: np.ndarray = self._head.output(self.forward(theta, X))
        return output

    def loss(self, theta: np.ndarray, X: np.ndarray, y: np.ndarray) -> float:
        """Mean loss over the n rows (allocates; not for the hot path)."""
        z = self.forward(theta, X)
        n: int = z.shape[0]
        if n == 0:
            raise ValueError("loss of an empty batch")
        work = self._head.make_work(n, self.n_outputs, z.dtype, 1.0 / n)
        return self._head.loss_sum_and_dz(z, y, z, work) / n

    def _check_theta(self, theta: np.ndarray) -> None:
        if theta.shape != (self.n_params,):
            raise ValueError(f"theta has shape {theta.shape}, expected ({self.n_params},)")

    @abc.abstractmethod
    def _work_arrays(self, n: int, dtype: np.dtype) -> tuple[np.ndarray, ...]:
        """The model's own work arrays for n rows (the head's come from ``make_work``)."""

    def _workspace(self, n: int, dtype: np.dtype, factor: float) -> _Workspace:
        """The work arrays for n rows of dtype, the head's scale set to factor/n."""
        ws = self._last
        if ws is None or ws.n != n or ws.dtype is not dtype:
            ws = self._cache.get((n, dtype))
            if ws is None:
                if len(self._cache) >= _MAX_CACHED_BATCH_SIZES:
                    self._cache.pop(next(iter(self._cache)))
                work = self._head.make_work(n, self.n_outputs, dtype, 1.0 / n)
                ws = _Workspace(n, dtype, self._work_arrays(n, dtype), work)
                self._cache[(n, dtype)] = ws
            self._last = ws
        if ws.factor != factor:
            self._head.set_scale(ws.head_work, factor / n)
            ws.factor = factor
        return ws


class _GeneralizedLinear(Model):
    """z = X W + b with a head: linear (mse/huber), logistic, softmax. Zero init (convex)."""

    def __init__(self, *, task: Task, n_features: int, n_outputs: int, head: _Head) -> None:
        super().__init__(task=task, n_features=n_features, n_outputs=n_outputs, head=head)
        self.n_params = (n_features + 1) * n_outputs
        self._theta_views = _ViewCache(self._split)
        self._grad_views = _ViewCache(self._split)

    def init_params(self, rng: np.random.Generator, dtype: np.dtype | type) -> np.ndarray:
        # The loss is convex, so the deterministic zero start is as good as any.
        return np.zeros(self.n_params, dtype=dtype)

    def _split(self, a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(W, b) views of a flat array: W (d,) or (d, K), b (1,) or (K,)."""
        d, k = self.n_features, self.n_outputs
        W = a[: d * k] if k == 1 else a[: d * k].reshape(d, k)
        return W, a[d * k :]

    def views(self, theta: np.ndarray) -> dict[str, np.ndarray]:
        self._check_theta(theta)
        W, b = self._split(theta)
        return {"W": W, "b": b}

    def forward(self, theta: np.ndarray, X: np.ndarray) -> np.ndarray:
        v = self.views(theta)
        z: np.ndarray = np.asarray(X, dtype=theta.dtype) @ v["W"] + v["b"]
        return z

    def _work_arrays(self, n: int, dtype: np.dtype) -> tuple[np.ndarray, ...]:
        shape = (n,) if self.n_outputs == 1 else (n, self.n_outputs)
        return np.empty(shape, dtype), np.ones(n, dtype)

    def loss_and_scaled_grad(
        self,
        theta: np.ndarray,
        X: np.ndarray,
        y: np.ndarray,
        grad_out: np.ndarray,
        factor: float,
    ) -> float:
        """z = XW + b; dz = factor · dJ/dz from the head; Xᵀ dz and Σ_rows dz are then
        factor · dJ/dW and factor · dJ/db."""
        if X.dtype is not theta.dtype and X.dtype != theta.dtype:
            X = X.astype(theta.dtype)
        n: int = X.shape[0]
        ws = self._workspace(n, theta.dtype, factor)
        z, ones = ws.arrays
        W, b = self._theta_views.get(theta)
        dW, db = self._grad_views.get(grad_out)
        np.dot(X, W, out=z)
        np.add(z, b, out=z)
        loss_sum = self._head.loss_sum_and_dz(z, y, z, ws.head_work)
        if self.n_outputs == 1:
            np.dot(z, X, out=dW)
            db[0] = np.dot(z, ones)  # Σ_rows, faster than np.sum on short rows
        else:
            np.dot(X.T, z, out=dW)
            np.dot(ones, z, out=db)
        return loss_sum / n

    def per_example_grads(self, theta: np.ndarray, X: np.ndarray, y: np.ndarray) -> np.ndarray:
        """g_i = [x_i ⊗ ∂L_i/∂z_i, ∂L_i/∂z_i] in theta's layout: (n, (d + 1)·K)."""
        self._check_theta(theta)
        X = np.asarray(X, dtype=theta.dtype)
        n: int = X.shape[0]
        d, k = self.n_features, self.n_outputs
        z = self.forward(theta, X)
        work = self._head.make_work(n, k, theta.dtype, 1.0)
        self._head.loss_sum_and_dz(z, y, z, work)
        dz = z.reshape(n, k)
        # theta read as a (d + 1, K) matrix is W stacked on b; so is each row of G
        G = np.empty((n, d + 1, k), dtype=theta.dtype)
        np.multiply(X[:, :, None], dz[:, None, :], out=G[:, :d, :])
        G[:, d, :] = dz
        return G.reshape(n, self.n_params)

    def per_example_sq_norms(self, theta: np.ndarray, X: np.ndarray, y: np.ndarray) -> np.ndarray:
        """|g_i|² = |x_i ⊗ δ_i|² + |δ_i|² = |δ_i|²(|x_i|² + 1) with δ_i = ∂L_i/∂z_i: (n,) float64,
        memory O(n·(d + K)) where per_example_grads needs O(n·(d + 1)·K)."""
        self._check_theta(theta)
        X = np.asarray(X, dtype=theta.dtype)
        n: int = X.shape[0]
        z = self.forward(theta, X)
        self._head.loss_sum_and_dz(
            z, y, z, self._head.make_work(n, self.n_outputs, theta.dtype, 1.0)
        )
        dz = z.reshape(n, self.n_outputs).astype(np.float64)
        X64 = X.astype(np.float64, copy=False)
        sq: np.ndarray = np.einsum("ik,ik->i", dz, dz) * (np.einsum("ij,ij->i", X64, X64) + 1.0)
        return sq


class LinearModel(_GeneralizedLinear):
    """Linear regression ŷ = X·W + b with mse or huber loss."""

    kind = "linear"


class LogisticModel(_GeneralizedLinear):
    """Logistic regression: logit z = X·W + b, binary cross-entropy."""

    kind = "logistic"


class SoftmaxModel(_GeneralizedLinear):
    """Multinomial logistic regression: logits Z = X W + b (n, K), cross-entropy."""

    kind = "softmax"


# --------------------------------------------------------------------------------------------
# The small-batch plain-SGD fast path (linear mse, logistic)
# --------------------------------------------------------------------------------------------

#: Batches up to this size take ``AugmentedSGD``'s fused step. Above it the step's two gemv
#: calls dominate the per-call overhead it saves, and copying rows into the [x | 1 | y] layout
#: would cost more than it gains.
AUGMENTED_MAX_BATCH = 64


class AugmentedSGD:
    """Plain SGD (no weight decay, no clipping) for linear-mse and logistic models, stepping
    over rows E = [x | 1 | y] ``(m, d + 2)``.

    Why: at small batch sizes a step costs NumPy call overheads, not arithmetic. With
    θ_ext = [w, b, c], E_b θ_ext is the residual r = ŷ − y (c = −1) or the logit z (c = 0) in
    ONE gemv, and (k·E_b)ᵀ v gives k·[dw, db, ·] in one more, the step's scale k folded into
    a scaled copy of the rows made once per chunk: an mse step is 3 NumPy calls and a
    logistic one 5, where ``loss_and_grad`` + ``Optimizer.step`` make 12 or more. The maths
    are theirs, θ ← θ − lr · dJ/dθ:

        mse:       k = −2·lr/b,   [w, b] += ((k·E_b)ᵀ r)[:d + 1]
        logistic:  2(σ(z) − y) = tanh(z/2) + 1 − 2y, and the parameters are kept as φ = θ/2
                   (exact), so the gemv gives z/2 directly:
                   k = −lr/(4b),  φ += ((k·E_b)ᵀ (tanh(z/2) + 1 − 2y))[:d + 1]

    (tanh saturates at ±1: stable for any z, like the head's exp(z − softplus(z))). Each
    step's raw output (r, or z/2) is kept, and the step losses come per chunk of steps
    (``step_losses``), not per step. The parameters live here between ``load`` and ``store``.
    """

    def __init__(self, head: Literal["mse", "logistic"], n_features: int, dtype: np.dtype) -> None:
        d = n_features
        self.head = head
        self.dtype = np.dtype(dtype)
        self._theta_ext = np.zeros(d + 2, self.dtype)
        self._theta_ext[d + 1] = -1.0 if head == "mse" else 0.0
        self._params = self._theta_ext[: d + 1]  # [w, b] (logistic: halved); the last is fixed
        self._grad_ext = np.empty(d + 2, self.dtype)
        self._step = self._grad_ext[: d + 1]
        self._n_features = d
        self._z = np.empty(0, self.dtype)  # raw outputs of the rows last run (logistic: z/2)
        self._u = np.empty(0, self.dtype)  # logistic: 1 − 2y of those rows
        self._s = np.empty(0, self.dtype)
        self._scaled_rows = np.empty((0, d + 2), self.dtype)  # the rows last run × the scale

    def load(self, theta: np.ndarray) -> None:
        """Take θ = [w, b] (d + 1,) in."""
        if self.head == "mse":
            np.copyto(self._params, theta)
        else:
            np.multiply(theta, 0.5, out=self._params)

    def store(self, theta: np.ndarray) -> None:
        """Write [w, b] back into θ."""
        if self.head == "mse":
            np.copyto(theta, self._params)
        else:
            np.multiply(self._params, 2.0, out=theta)

    def run(
        self,
        rows: np.ndarray,
        batch_size: int,
        lr: float,
        should_stop: Callable[[], bool] | None,
    ) -> bool:
        """Steps over ``rows`` (m, d + 2) in batches of ``batch_size`` (the last one may be
        shorter). ``should_stop`` is asked after every step; returns False when it said stop."""
        m = rows.shape[0]
        if self._z.shape[0] < m:
            self._z = np.empty(m, self.dtype)
            self._u = np.empty(m, self.dtype)
            self._scaled_rows = np.empty((m, rows.shape[1]), self.dtype)
        if self._s.shape[0] < batch_size:
            self._s = np.empty(batch_size, self.dtype)
        if self.head == "logistic":  # 1 − 2y for the whole chunk at once
            u = self._u[:m]
            np.multiply(rows[:, self._n_features + 1], -2.0, out=u)
            np.add(u, 1.0, out=u)
        full = m - m % batch_size
        if full and not self._steps(rows[:full], batch_size, lr, should_stop, 0):
            return False
        if full < m:
            return self._steps(rows[full:], m - full, lr, should_stop, full)
        return True

    def _steps(
        self,
        rows: np.ndarray,
        b: int,
        lr: float,
        should_stop: Callable[[], bool] | None,
        offset: int,
    ) -> bool:
        """Steps of exactly b rows each over rows (a multiple of b); outputs at z[offset:]."""
        m = rows.shape[0]
        steps = m // b
        theta_ext, params, step = self._theta_ext, self._params, self._step
        # The step's scale is folded into a copy of the rows the backward gemv reads: one
        # multiply per chunk (in cache) instead of one per step.
        scale = -2.0 * lr / b if self.head == "mse" else -lr / (4.0 * b)
        scaled_rows = self._scaled_rows[offset : offset + m]
        np.multiply(rows, _const(scale, self.dtype), out=scaled_rows)
        # Per step: iterate views of (steps, b, …) reshapes (cheaper than slices), call bound
        # ``dot`` methods and pass ``out`` positionally: each saves ~0.1 µs a call.
        width = rows.shape[1]
        batches = rows.reshape(steps, b, width)
        scaled_batches = scaled_rows.reshape(steps, b, width)
        outputs = self._z[offset : offset + m].reshape(steps, b)
        grad_ext, add = self._grad_ext, np.add
        if self.head == "mse":
            for E_b, scaled_E_b, r in zip(batches, scaled_batches, outputs, strict=True):
                E_b.dot(theta_ext, r)  # r = ŷ − y
                r.dot(scaled_E_b, grad_ext)  # [dw, db, ·] = −(2·lr/b) E_bᵀ r
                add(params, step, params)
                if should_stop is not None and should_stop():
                    return False
            return True
        s = self._s[:b]
        s_dot = s.dot
        one_minus_2y = self._u[offset : offset + m].reshape(steps, b)
        tanh = np.tanh
        for E_b, scaled_E_b, z_half, u in zip(
            batches, scaled_batches, outputs, one_minus_2y, strict=True
        ):
            E_b.dot(theta_ext, z_half)  # z/2, as θ_ext holds θ/2
            tanh(z_half, s)
            add(s, u, s)  # 2(σ(z) − y)
            s_dot(scaled_E_b, grad_ext)
            add(params, step, params)
            if should_stop is not None and should_stop():
                return False
        return True

    def step_losses(self, rows: np.ndarray, batch_size: int) -> np.ndarray:
        """The mean loss of each step of the last ``run`` over ``rows``: (steps,) float64.

        Per-row losses in the model's dtype (so a float32 run overflows where the general
        step's loss does), summed per step in float64."""
        m = rows.shape[0]
        if self.head == "mse":
            per_row = np.square(self._z[:m])
        else:  # softplus(z) − y·z, softplus(z) = max(z, 0) + log1p(e^−|z|): stable, and
            # ~5× faster than np.logaddexp, whose float32 loop is not vectorised
            z = self._z[:m] * 2.0
            per_row = np.abs(z)
            np.negative(per_row, out=per_row)
            np.exp(per_row, out=per_row)
            np.log1p(per_row, out=per_row)
            per_row += np.maximum(z, 0.0)
            per_row -= rows[:, self._n_features + 1] * z
        full = m - m % batch_size
        steps = full // batch_size + (1 if full < m else 0)
        losses = np.empty(steps, dtype=np.float64)
        batches = per_row[:full].reshape(-1, batch_size)
        np.sum(batches, axis=1, dtype=np.float64, out=losses[: full // batch_size])
        losses[: full // batch_size] /= batch_size
        if full < m:
            losses[-1] = per_row[full:].sum(dtype=np.float64) / (m - full)
        return losses


def augmented_sgd(model: Model, dtype: np.dtype | type) -> AugmentedSGD | None:
    """The fused plain-SGD step for ``model`` (linear with mse, logistic), else None."""
    if isinstance(model, LinearModel) and model.loss_name == "mse":
        return AugmentedSGD("mse", model.n_features, np.dtype(dtype))
    if isinstance(model, LogisticModel):
        return AugmentedSGD("logistic", model.n_features, np.dtype(dtype))
    return None


# --------------------------------------------------------------------------------------------
# MLP
# --------------------------------------------------------------------------------------------


class MLPModel(Model):
    """Fully connected network: A₀ = X, Z_l = A_{l−1} W_l + b_l, A_l = act(Z_l) for the hidden
    layers, then a linear output layer into the task's head.

    Backward, with dZ_L = dJ/dz from the head:
        dW_l = A_{l−1}ᵀ dZ_l,  db_l = Σ_rows dZ_l,  dA_{l−1} = dZ_l W_lᵀ,
        dZ_{l−1} = dA_{l−1} ⊙ [Z_{l−1} > 0] (relu)  or  dA_{l−1} ⊙ (1 − A_{l−1}²) (tanh).

    Per-example squared norms (``per_example_sq_norms``, for the noise scale): row i's weight
    gradient of layer l is the outer product a_i δ_iᵀ (its input row and its row of dZ_l at
    the head's scale 1), so |g_i|² = Σ_l (|a_i|² + 1)|δ_i|², the + 1 from the bias.

    Init (from the rng, in layer order, drawn in float64 then cast, so float32 and float64
    start from the same values): hidden weights He-normal N(0, 2/fan_in) for relu,
    Glorot-uniform U(±√(6/(fan_in + fan_out))) for tanh; the output layer Glorot-uniform
    (its activation is the identity); all biases zero.
    """

    kind = "mlp"

    def __init__(
        self,
        *,
        task: Task,
        n_features: int,
        n_outputs: int,
        head: _Head,
        hidden_layers: Sequence[int],
        activation: str,
    ) -> None:
        super().__init__(task=task, n_features=n_features, n_outputs=n_outputs, head=head)
        self.hidden_layers = tuple(hidden_layers)
        self.activation = activation
        widths = (n_features, *self.hidden_layers, n_outputs)
        # (W offset, fan_in, fan_out, b offset) of each layer in theta
        self._layers: list[tuple[int, int, int, int]] = []
        offset = 0
        for fan_in, fan_out in itertools.pairwise(widths):
            w_offset = offset
            offset += fan_in * fan_out
            self._layers.append((w_offset, fan_in, fan_out, offset))
            offset += fan_out
        self.n_params = offset
        self._theta_views = _ViewCache(self._layer_views_and_transposes)
        self._grad_views = _ViewCache(self._layer_views)

    def init_params(self, rng: np.random.Generator, dtype: np.dtype | type) -> np.ndarray:
        theta = np.zeros(self.n_params, dtype=dtype)
        last = len(self._layers) - 1
        for index, (w_offset, fan_in, fan_out, _) in enumerate(self._layers):
            size = fan_in * fan_out
            if index < last and self.activation == "relu":
                W = rng.standard_normal(size) * math.sqrt(2.0 / fan_in)
            else:
                limit = math.sqrt(6.0 / (fan_in + fan_out))
                W = rng.uniform(-limit, limit, size)
            theta[w_offset : w_offset + size] = W
        return theta

    def _layer_views(
        self, a: np.ndarray
    ) -> tuple[tuple[np.ndarray, np.ndarray], ...]:  # (W, b) per layer of a flat array
        return tuple(
            (a[w : w + fi * fo].reshape(fi, fo), a[b : b + fo]) for w, fi, fo, b in self._layers
        )

    def views(self, theta: np.ndarray) -> dict[str, np.ndarray]:
        self._check_theta(theta)
        named: dict[str, np.ndarray] = {}
        for index, (W, b) in enumerate(self._layer_views(theta)):
            named[f"W{index}"] = W
            named[f"b{index}"] = b
        return named

    def forward(self, theta: np.ndarray, X: np.ndarray) -> np.ndarray:
        self._check_theta(theta)
        A = np.asarray(X, dtype=theta.dtype)
        layers = self._layer_views(theta)
        for W, b in layers[:-1]:
            Z = A @ W + b
            A = np.maximum(Z, 0.0) if self.activation == "relu" else np.tanh(Z)
        W, b = layers[-1]
        z: np.ndarray = A @ W + b
        return z[:, 0] if self.n_outputs == 1 else z

    def _work_arrays(self, n: int, dtype: np.dtype) -> tuple[np.ndarray, ...]:
        """(out, head_z, ones, zero, one, *activations, *activationsᵀ, *d_activations,
        *local_grads): the transposes are views, made once rather than every step."""
        hidden = self.hidden_layers
        activations = [np.empty((n, h), dtype) for h in hidden]
        d_activations = [np.empty((n, h), dtype) for h in hidden]
        local_grad = [np.empty((n, h), dtype) for h in hidden]  # act′(Z_l)
        out = np.empty((n, self.n_outputs), dtype)
        head_z = out[:, 0] if self.n_outputs == 1 else out
        # 0-d constants: NumPy converts a Python 0.0 or 1.0 on every ufunc call (~0.25 µs)
        zero, one = _const(0.0, dtype), _const(1.0, dtype)
        return (
            out,
            head_z,
            np.ones(n, dtype),
            zero,
            one,
            *activations,
            *(A.T for A in activations),
            *d_activations,
            *local_grad,
        )

    def _layer_views_and_transposes(
        self, a: np.ndarray
    ) -> tuple[tuple[tuple[np.ndarray, np.ndarray], ...], tuple[np.ndarray, ...]]:
        """((W, b) per layer, Wᵀ per layer) of a flat array."""
        layers = self._layer_views(a)
        return layers, tuple(W.T for W, _ in layers)

    def loss_and_scaled_grad(
        self,
        theta: np.ndarray,
        X: np.ndarray,
        y: np.ndarray,
        grad_out: np.ndarray,
        factor: float,
    ) -> float:
        # ``out`` is passed positionally and gemm goes through the arrays' own ``dot``: at
        # B = 32 a call costs ~0.5 µs, so ~0.1 µs saved on each of ~15 calls is worth it.
        if X.dtype is not theta.dtype and X.dtype != theta.dtype:
            X = X.astype(theta.dtype)
        n: int = X.shape[0]
        n_hidden = len(self.hidden_layers)
        ws = self._workspace(n, theta.dtype, factor)
        bufs = ws.arrays
        out, head_z, ones, zero, one = bufs[:5]
        activations = bufs[5 : 5 + n_hidden]
        activations_T = bufs[5 + n_hidden : 5 + 2 * n_hidden]
        d_activations = bufs[5 + 2 * n_hidden : 5 + 3 * n_hidden]
        local_grad = bufs[5 + 3 * n_hidden :]
        params, params_T = self._theta_views.get(theta)
        grads = self._grad_views.get(grad_out)
        relu = self.activation == "relu"
        add, multiply = np.add, np.multiply

        A_prev = X
        for (W, b), A in zip(params[:-1], activations, strict=True):
            A_prev.dot(W, A)
            add(A, b, A)
            if relu:
                np.maximum(A, zero, out=A)  # positional out is deprecated here
            else:
                np.tanh(A, A)
            A_prev = A
        W, b = params[-1]
        A_prev.dot(W, out)
        add(out, b, out)
        loss_sum = self._head.loss_sum_and_dz(head_z, y, head_z, ws.head_work)

        dZ = out
        for layer in range(n_hidden, 0, -1):
            dW, db = grads[layer]
            A_in = activations[layer - 1]
            activations_T[layer - 1].dot(dZ, dW)
            ones.dot(dZ, db)  # Σ_rows
            dA = d_activations[layer - 1]
            dZ.dot(params_T[layer], dA)
            slope = local_grad[layer - 1]
            if relu:
                np.greater(A_in, zero, slope)  # relu(Z) > 0 exactly where Z > 0
            else:
                multiply(A_in, A_in, slope)
                np.subtract(one, slope, slope)
            multiply(dA, slope, dA)
            dZ = dA
        dW, db = grads[0]
        X.T.dot(dZ, dW)
        ones.dot(dZ, db)
        return loss_sum / n

    def per_example_sq_norms(self, theta: np.ndarray, X: np.ndarray, y: np.ndarray) -> np.ndarray:
        """|g_i|² = Σ_l (|a_i,l−1|² + 1)|δ_i,l|² per row: (n,) float64, memory O(n·Σ widths).

        Row i's gradient of layer l is the outer product ∂L_i/∂W_l = a_i,l−1 δ_i,lᵀ and
        ∂L_i/∂b_l = δ_i,l, with a_i,l−1 the row's input to the layer (A_{l−1}[i], A₀ = X) and
        δ_i,l = ∂L_i/∂Z_l[i] its delta: the backward above with the head's scale 1, not 1/n,
        and no sum over rows. |a δᵀ|² = |a|²|δ|² (Frobenius), so the squared norm needs only
        the activations and deltas, never the (n, n_params) matrix of per-example gradients.
        """
        self._check_theta(theta)
        X = np.asarray(X, dtype=theta.dtype)
        n: int = X.shape[0]
        layers = self._layer_views(theta)
        relu = self.activation == "relu"
        inputs = [X]  # A₀ … A_{L−1}: the input of each layer
        for W, b in layers[:-1]:
            Z = inputs[-1] @ W + b
            inputs.append(np.maximum(Z, 0.0) if relu else np.tanh(Z))
        W, b = layers[-1]
        out = inputs[-1] @ W + b  # (n, m)
        head_z = out[:, 0] if self.n_outputs == 1 else out
        work = self._head.make_work(n, self.n_outputs, theta.dtype, 1.0)
        self._head.loss_sum_and_dz(head_z, y, head_z, work)
        delta = out  # δ_L = ∂L_i/∂z_i, written in place by the head
        sq = np.zeros(n, dtype=np.float64)
        for layer in range(len(layers) - 1, -1, -1):
            A_in = inputs[layer].astype(np.float64, copy=False)
            delta64 = delta.astype(np.float64, copy=False)
            sq += (np.einsum("ij,ij->i", A_in, A_in) + 1.0) * np.einsum(
                "ij,ij->i", delta64, delta64
            )
            if layer:
                # δ_{l−1} = (δ_l W_lᵀ) ⊙ act′(Z_{l−1}), act′ read from A_{l−1} as in backward
                A = inputs[layer]
                slope = (A > 0.0) if relu else 1.0 - A * A
                delta = (delta @ layers[layer][0].T) * slope
        return sq


# --------------------------------------------------------------------------------------------
# Construction
# --------------------------------------------------------------------------------------------


def _is_int(value: object) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def build_model(
    kind: str,
    *,
    task: str,
    n_features: int,
    n_classes: int | None = None,
    loss: str | None = None,
    huber_delta: float = 1.0,
    hidden_layers: Sequence[int] = (),
    activation: str = "relu",
) -> Model:
    """The model for ``kind`` on a ``task``; CoreConfigError (naming the field) on nonsense.

    - linear: regression only, loss "mse" (default) or "huber" (with huber_delta > 0).
    - logistic: binary only; softmax: multiclass (K = n_classes ≥ 2) or binary (K = 2).
    - mlp: any task, at least one hidden layer; the head follows the task (linear with
      mse/huber, logistic, softmax).
    - Classification losses are cross-entropy: ``loss`` must be None or "cross_entropy".
    - ``n_classes``: required (≥ 2) for multiclass; None or 2 for binary; None for regression.
    """
    if kind not in MODEL_KINDS:
        raise CoreConfigError("model", f"must be one of {', '.join(MODEL_KINDS)}, not {kind!r}")
    if task not in _TASKS:
        raise CoreConfigError("task", f"must be one of {', '.join(_TASKS)}, not {task!r}")
    if not _is_int(n_features) or n_features < 1:
        raise CoreConfigError("n_features", f"must be an integer ≥ 1, not {n_features!r}")
    if activation not in _ACTIVATIONS:
        raise CoreConfigError(
            "activation", f"must be one of {', '.join(_ACTIVATIONS)}, not {activation!r}"
        )
    hidden = tuple(hidden_layers)
    if kind == "mlp":
        if not hidden:
            raise CoreConfigError("hidden_layers", "the mlp model needs at least one hidden layer")
        if not all(_is_int(h) and h >= 1 for h in hidden):
            raise CoreConfigError("hidden_layers", f"widths must be integers ≥ 1, not {hidden!r}")
    elif hidden:
        raise CoreConfigError("hidden_layers", f"only the mlp model has hidden layers, not {kind}")

    n_outputs = 1
    if task == "multiclass":
        if n_classes is None or not _is_int(n_classes) or n_classes < 2:
            raise CoreConfigError(
                "n_classes", f"a multiclass task needs an integer ≥ 2, not {n_classes!r}"
            )
        n_outputs = int(n_classes)
    elif task == "binary":
        if n_classes is not None and n_classes != 2:
            raise CoreConfigError("n_classes", f"a binary task has 2 classes, not {n_classes!r}")
    elif n_classes is not None:
        raise CoreConfigError("n_classes", "a regression task has no classes")

    if kind == "linear" and task != "regression":
        raise CoreConfigError(
            "model", f"linear fits a regression target; use logistic or softmax for {task}"
        )
    if kind == "logistic" and task != "binary":
        raise CoreConfigError(
            "model", f"logistic fits a binary target; use softmax or linear for {task}"
        )
    if kind == "softmax":
        if task == "regression":
            raise CoreConfigError("model", "softmax fits a class target; use linear for regression")
        n_outputs = 2 if task == "binary" else n_outputs

    head: _Head
    if task == "regression":
        if loss is None or loss == "mse":
            head = _MSEHead()
        elif loss == "huber":
            if not isinstance(huber_delta, int | float) or not (
                math.isfinite(huber_delta) and huber_delta > 0
            ):
                raise CoreConfigError(
                    "huber_delta", f"must be a finite number > 0, not {huber_delta!r}"
                )
            head = _HuberHead(float(huber_delta))
        else:
            raise CoreConfigError("loss", f"must be mse or huber for regression, not {loss!r}")
    else:
        if loss is not None and loss != "cross_entropy":
            raise CoreConfigError(
                "loss", f"classification uses cross-entropy (leave loss unset), not {loss!r}"
            )
        head = _SoftmaxHead() if n_outputs > 1 else _LogisticHead()

    typed_task: Task = task  # type: ignore[assignment]  # checked against _TASKS above
    if kind == "mlp":
        return MLPModel(
            task=typed_task,
            n_features=int(n_features),
            n_outputs=n_outputs,
            head=head,
            hidden_layers=[int(h) for h in hidden],
            activation=activation,
        )
    cls = {"linear": LinearModel, "logistic": LogisticModel, "softmax": SoftmaxModel}[kind]
    return cls(task=typed_task, n_features=int(n_features), n_outputs=n_outputs, head=head)
