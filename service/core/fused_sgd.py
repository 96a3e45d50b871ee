"""The fused small-batch plain-SGD step of linear-mse and logistic models (``AugmentedSGD``).

Plain SGD (no weight decay, no clipping) at small batch sizes costs NumPy call overheads, not
arithmetic; stepping over augmented rows [x | 1 | y] folds each step into two gemv calls. It
takes the same steps as ``Model.loss_and_grad`` + ``Optimizer.step``, equal up to rounding and
as deterministic; ``optim.PlainSGD.fused_kernel`` offers it and ``data.AugmentedEpochs`` serves
its rows.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import numpy as np

from service.core.losses import const
from service.core.models import LinearModel, LogisticModel, Model

__all__ = ["AUGMENTED_MAX_BATCH", "AugmentedSGD", "augmented_sgd"]

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
        np.multiply(rows, const(scale, self.dtype), out=scaled_rows)
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


def augmented_sgd(model: Model[Any], dtype: np.dtype | type) -> AugmentedSGD | None:
    """The fused plain-SGD step for ``model`` (linear with mse, logistic), else None."""
    if isinstance(model, LinearModel) and model.loss_name == "mse":
        return AugmentedSGD("mse", model.n_features, np.dtype(dtype))
    if isinstance(model, LogisticModel):
        return AugmentedSGD("logistic", model.n_features, np.dtype(dtype))
    return None
