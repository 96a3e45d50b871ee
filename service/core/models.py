"""Models with analytic gradients over one flat parameter vector ``theta``.

Every model keeps its parameters in ONE contiguous 1-D array ``theta`` (float32 or float64) and
exposes named views into it (``views``). Gradients are a flat array of the same shape, so the
optimizers are whole-array operations and a checkpoint is one array.

Shapes: ``X : (n, d)`` in theta's dtype; ``y : (n,)`` — float targets (regression), float 0/1
(binary), int class indices ``0..K-1`` (multiclass). Raw outputs ``z`` are ``(n,)`` for
regression and binary (the logit) and ``(n, K)`` logits for multiclass. The losses on z and
their derivatives are the heads' (``losses``).

Layouts of theta (row-major blocks, in this order):

- linear / logistic: ``W (d,)`` then ``b (1,)``
- softmax:           ``W (d, K)`` then ``b (K,)``
- mlp:               ``W0 (d, h0), b0 (h0,), W1 (h0, h1), b1 (h1,), …, WL (h_last, m), bL (m,)``
                     with m = 1 for regression/binary heads and K for multiclass (``mlp``)

``loss_and_grad`` is the hot path: work buffers are cached by (batch size, dtype) and reused
(``workspace``), every NumPy call writes with ``out=``, and no reference to X or y outlives a
call. ``loss_and_scaled_grad`` writes factor · dJ/dθ (factor = −lr makes a plain SGD step one
add); ``fused_sgd`` holds the fused small-batch plain-SGD step of linear-mse and logistic models.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar

import numpy as np

from service.core.losses import Head
from service.core.tasks import Task
from service.core.workspace import ViewCache, WorkspaceCache

__all__ = [
    "MODEL_KINDS",
    "LinearModel",
    "LogisticModel",
    "Model",
    "ModelKind",
    "SoftmaxModel",
]

ModelKind = Literal["linear", "logistic", "softmax", "mlp"]
MODEL_KINDS: tuple[str, ...] = ("linear", "logistic", "softmax", "mlp")

A = TypeVar("A")


class Model(abc.ABC, Generic[A]):
    """A differentiable model over a flat parameter vector (see the module docstring)."""

    kind: str
    task: Task
    n_features: int
    n_outputs: int  # 1 for regression/binary, K for multiclass
    n_params: int
    loss_name: str  # "mse", "huber" or "cross_entropy"

    def __init__(self, *, task: Task, n_features: int, n_outputs: int, head: Head[Any]) -> None:
        self.task = task
        self.n_features = n_features
        self.n_outputs = n_outputs
        self._head = head
        self.loss_name = head.name
        self._workspaces = WorkspaceCache(head, n_outputs, self._work_arrays)

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
    def _work_arrays(self, n: int, dtype: np.dtype) -> A:
        """The model's own work arrays for n rows (the head's come from ``make_work``)."""


@dataclass(slots=True)
class LinearWork:
    z: np.ndarray  # (n,) or (n, K): the raw outputs, then dJ/dz in place
    ones: np.ndarray  # (n,): Σ_rows as a dot product


class _GeneralizedLinear(Model[LinearWork]):
    """z = X W + b with a head: linear (mse/huber), logistic, softmax. Zero init (convex)."""

    def __init__(self, *, task: Task, n_features: int, n_outputs: int, head: Head[Any]) -> None:
        super().__init__(task=task, n_features=n_features, n_outputs=n_outputs, head=head)
        self.n_params = (n_features + 1) * n_outputs
        self._theta_views = ViewCache(self._split)
        self._grad_views = ViewCache(self._split)

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

    def _work_arrays(self, n: int, dtype: np.dtype) -> LinearWork:
        shape = (n,) if self.n_outputs == 1 else (n, self.n_outputs)
        return LinearWork(z=np.empty(shape, dtype), ones=np.ones(n, dtype))

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
        ws = self._workspaces.get(n, theta.dtype, factor)
        z, ones = ws.arrays.z, ws.arrays.ones
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
