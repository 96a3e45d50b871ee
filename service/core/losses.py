"""Loss heads: a loss on a model's raw outputs z and its derivative, written in place.

Shapes: ``z : (n,)`` for regression and binary (the logit), ``(n, K)`` logits for multiclass;
``y : (n,)`` float targets, float 0/1, or int class indices ``0..K-1``. Means are over the n
rows (weight decay is NOT here, the optimizer applies it):

- mse:      J = 1/n Σ (y − ŷ)²            dJ/dŷ = −2/n (y − ŷ)      (no ½, the seed formula)
- huber:    J = 1/n Σ ℓ_δ(ŷ − y), ℓ_δ(r) = ½r² if |r| ≤ δ else δ(|r| − ½δ)   (torch's HuberLoss)
            dJ/dŷ = clip(ŷ − y, −δ, δ)/n
- logistic: J = 1/n Σ softplus(z) − y·z   (binary cross-entropy in log-sigmoid form: stable for
            any |z|, softplus(z) = log(1 + eᶻ) = logaddexp(0, z))     dJ/dz = (σ(z) − y)/n,
            σ(z) = exp(z − softplus(z)), whose exponent is ≤ 0, so it never overflows
- softmax:  J = 1/n Σ logsumexp(z) − z_y  (stable: the row max is subtracted first)
            dJ/dz = (softmax(z) − onehot(y))/n

Each head preallocates its scratch for n rows as a named dataclass (``make_work``), with the
scale (1/n for the mean gradient, 1 for per-example gradients, factor/n for a scaled one) and
the other constants as 0-d arrays of the dtype: NumPy converts a Python float on every call,
a 0-d array it does not.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np

__all__ = [
    "Head",
    "HuberHead",
    "HuberWork",
    "LogisticHead",
    "LogisticWork",
    "MSEHead",
    "MSEWork",
    "SoftmaxHead",
    "SoftmaxWork",
    "const",
]


def const(value: float, dtype: np.dtype) -> np.ndarray:
    """A 0-d array of ``dtype``: a constant NumPy need not convert on every call."""
    return np.array(value, dtype=dtype)


@dataclass(slots=True)
class MSEWork:
    two_scale: np.ndarray  # 0-d: 2 · scale


@dataclass(slots=True)
class HuberWork:
    abs_r: np.ndarray  # (n,) |r|
    q: np.ndarray  # (n,) min(|r|, δ)
    delta: np.ndarray  # 0-d
    scale: np.ndarray  # 0-d


@dataclass(slots=True)
class LogisticWork:
    softplus: np.ndarray  # (n,)
    ones: np.ndarray  # (n,) for Σ as a dot product
    zero: np.ndarray  # 0-d
    scale: np.ndarray  # 0-d


@dataclass(slots=True)
class SoftmaxWork:
    row_stat: np.ndarray  # (n, 1) row max, then row sum of exp
    flat_idx: np.ndarray  # (n,) intp: flat index of each row's true class
    picked: np.ndarray  # (n,) shifted logit of the true class
    row_offsets: np.ndarray  # (n,) intp: flat index of each row's start
    scale: np.ndarray  # 0-d


W = TypeVar("W", MSEWork, HuberWork, LogisticWork, SoftmaxWork)


class Head(abc.ABC, Generic[W]):
    """A loss on raw outputs z. ``loss_sum_and_dz`` writes ``dz = scale · ∂L_i/∂z_i`` and
    returns ``Σ_i L_i``; ``dz`` may be the same array as ``z`` (z is then overwritten)."""

    name: str

    @abc.abstractmethod
    def make_work(self, n: int, n_outputs: int, dtype: np.dtype, scale: float) -> W:
        """The scratch for n rows, at ``scale``."""

    @abc.abstractmethod
    def loss_sum_and_dz(self, z: np.ndarray, y: np.ndarray, dz: np.ndarray, work: W) -> float: ...

    def set_scale(self, work: W, scale: float) -> None:
        """Give ``work`` (from ``make_work``) another ``scale``, in place."""
        work.scale[...] = scale  # type: ignore[attr-defined]  # all but mse have one

    @abc.abstractmethod
    def output(self, z: np.ndarray) -> np.ndarray:
        """Predictions from raw outputs: values, P(class 1) or class probabilities."""


class MSEHead(Head[MSEWork]):
    name = "mse"

    def make_work(self, n: int, n_outputs: int, dtype: np.dtype, scale: float) -> MSEWork:
        return MSEWork(const(2.0 * scale, dtype))

    def set_scale(self, work: MSEWork, scale: float) -> None:
        work.two_scale[...] = 2.0 * scale

    def loss_sum_and_dz(self, z: np.ndarray, y: np.ndarray, dz: np.ndarray, work: MSEWork) -> float:
        np.subtract(z, y, dz)  # r = ŷ − y
        loss_sum = float(dz.dot(dz))
        np.multiply(dz, work.two_scale, dz)  # ∂(r²)/∂ŷ = 2r
        return loss_sum

    def output(self, z: np.ndarray) -> np.ndarray:
        return z


class HuberHead(Head[HuberWork]):
    name = "huber"

    def __init__(self, delta: float) -> None:
        self.delta = delta

    def make_work(self, n: int, n_outputs: int, dtype: np.dtype, scale: float) -> HuberWork:
        return HuberWork(
            abs_r=np.empty(n, dtype),
            q=np.empty(n, dtype),
            delta=const(self.delta, dtype),
            scale=const(scale, dtype),
        )

    def loss_sum_and_dz(
        self, z: np.ndarray, y: np.ndarray, dz: np.ndarray, work: HuberWork
    ) -> float:
        abs_r, q = work.abs_r, work.q
        np.subtract(z, y, out=dz)  # r = ŷ − y
        np.abs(dz, out=abs_r)
        np.minimum(abs_r, work.delta, out=q)
        # q = min(|r|, δ) covers both regimes at once: ℓ = q·|r| − ½q², ∂ℓ/∂ŷ = sign(r)·q
        loss_sum = float(np.dot(q, abs_r)) - 0.5 * float(np.dot(q, q))
        np.copysign(q, dz, out=dz)
        np.multiply(dz, work.scale, out=dz)
        return loss_sum

    def output(self, z: np.ndarray) -> np.ndarray:
        return z


class LogisticHead(Head[LogisticWork]):
    name = "cross_entropy"

    def make_work(self, n: int, n_outputs: int, dtype: np.dtype, scale: float) -> LogisticWork:
        return LogisticWork(
            softplus=np.empty(n, dtype),
            ones=np.ones(n, dtype),
            zero=const(0.0, dtype),
            scale=const(scale, dtype),
        )

    def loss_sum_and_dz(
        self, z: np.ndarray, y: np.ndarray, dz: np.ndarray, work: LogisticWork
    ) -> float:
        softplus = work.softplus
        np.logaddexp(work.zero, z, out=softplus)  # log(1 + eᶻ) without overflow
        loss_sum = float(np.dot(softplus, work.ones)) - float(np.dot(y, z))
        np.subtract(z, softplus, out=dz)  # log σ(z) ≤ 0
        np.exp(dz, out=dz)  # σ(z)
        np.subtract(dz, y, out=dz)
        np.multiply(dz, work.scale, out=dz)
        return loss_sum

    def output(self, z: np.ndarray) -> np.ndarray:
        probs: np.ndarray = np.exp(z - np.logaddexp(0.0, z))
        return probs


class SoftmaxHead(Head[SoftmaxWork]):
    name = "cross_entropy"

    def make_work(self, n: int, n_outputs: int, dtype: np.dtype, scale: float) -> SoftmaxWork:
        return SoftmaxWork(
            row_stat=np.empty((n, 1), dtype),
            flat_idx=np.empty(n, np.intp),
            picked=np.empty(n, dtype),
            row_offsets=np.arange(n, dtype=np.intp) * n_outputs,
            scale=const(scale, dtype),
        )

    def loss_sum_and_dz(
        self, z: np.ndarray, y: np.ndarray, dz: np.ndarray, work: SoftmaxWork
    ) -> float:
        row_stat, flat_idx, picked = work.row_stat, work.flat_idx, work.picked
        np.max(z, axis=1, keepdims=True, out=row_stat)
        np.subtract(z, row_stat, out=dz)  # shifted logits, each row's max is 0
        np.add(work.row_offsets, y.astype(np.intp, copy=False), out=flat_idx)
        dz_flat = dz.reshape(-1)
        np.take(dz_flat, flat_idx, out=picked)
        np.exp(dz, out=dz)
        np.sum(dz, axis=1, keepdims=True, out=row_stat)
        np.divide(dz, row_stat, out=dz)  # softmax
        np.log(row_stat, out=row_stat)  # logsumexp of the shifted logits
        loss_sum = float(np.sum(row_stat)) - float(np.sum(picked))
        dz_flat[flat_idx] -= 1.0  # one true class per row, so no repeated indices
        np.multiply(dz, work.scale, out=dz)
        return loss_sum

    def output(self, z: np.ndarray) -> np.ndarray:
        shifted = z - z.max(axis=1, keepdims=True)
        e = np.exp(shifted)
        probs: np.ndarray = e / e.sum(axis=1, keepdims=True)
        return probs
