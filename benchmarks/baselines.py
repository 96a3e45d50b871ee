"""The contenders the core is measured against, each timed for one epoch in this process.

- PyTorch CPU, written the idiomatic way: (a) a manual loop over a pre-shuffled tensor,
  (b) ``DataLoader(TensorDataset, shuffle=True)``; ``zero_grad / backward / step`` and one
  ``loss.item()`` per step (the core records every step's loss too).
- scikit-learn's compiled per-sample SGD: ``SGDRegressor`` / ``SGDClassifier(loss="log_loss")``,
  ``fit(max_iter=1, tol=None, shuffle=True)`` with a constant learning rate.
- The epoch's memory bound: what an epoch must at least do to X with NumPy primitives (index
  shuffle, one shuffled gather, two reads), at the rates those reach in this process.

Benchmark-only: torch and scikit-learn are the ``bench`` extra, never runtime dependencies.
Every function returns wall seconds (``time.perf_counter``) and a final training loss measured
outside the timed region, so a reader can see each contender did the same work.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning  # type: ignore[import-untyped]
from sklearn.linear_model import SGDClassifier, SGDRegressor  # type: ignore[import-untyped]
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

ModelKind = Literal["linear", "logistic", "mlp"]

HIDDEN = 32  # the MLP is 64-32-1 (n_features-HIDDEN-1), ReLU


@dataclass(frozen=True)
class EpochTiming:
    """One timed epoch: ``seconds`` of wall time for ``steps`` steps over ``samples`` rows."""

    seconds: float
    steps: int
    samples: int
    final_loss: float  # mean training loss on the epoch's rows after the epoch (untimed)

    @property
    def samples_per_s(self) -> float:
        return self.samples / self.seconds

    @property
    def us_per_step(self) -> float:
        return 1e6 * self.seconds / self.steps


def _torch_model(kind: ModelKind, n_features: int, seed: int) -> nn.Module:
    torch.manual_seed(seed)  # the module's own init; torch has no per-module generator argument
    if kind == "mlp":
        return nn.Sequential(nn.Linear(n_features, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, 1))
    return nn.Linear(n_features, 1)


def _torch_loss(kind: ModelKind) -> nn.Module:
    return nn.BCEWithLogitsLoss() if kind == "logistic" else nn.MSELoss()


def _torch_final_loss(
    model: nn.Module, loss_fn: nn.Module, X: torch.Tensor, y: torch.Tensor
) -> float:
    with torch.no_grad():
        return float(loss_fn(model(X).view(-1), y))


def torch_manual_epoch(
    kind: ModelKind, X: np.ndarray, y: np.ndarray, *, batch_size: int, lr: float, seed: int = 0
) -> EpochTiming:
    """PyTorch (a): shuffle once (``randperm`` + index), then step over contiguous slices.

    X : (n, d) float32, y : (n,) float32. Steps = ceil(n / batch_size) (last batch short).
    """
    X_t, y_t = torch.from_numpy(X), torch.from_numpy(y)
    model = _torch_model(kind, X.shape[1], seed)
    loss_fn = _torch_loss(kind)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    n = X.shape[0]
    steps = -(-n // batch_size)
    start = time.perf_counter()
    perm = torch.randperm(n, generator=gen)
    X_shuf, y_shuf = X_t[perm], y_t[perm]
    loss_sum = 0.0
    for i in range(steps):
        xb = X_shuf[i * batch_size : (i + 1) * batch_size]
        yb = y_shuf[i * batch_size : (i + 1) * batch_size]
        opt.zero_grad()
        loss = loss_fn(model(xb).view(-1), yb)
        loss.backward()
        opt.step()
        loss_sum += loss.item()
    seconds = time.perf_counter() - start
    return EpochTiming(seconds, steps, n, _torch_final_loss(model, loss_fn, X_t, y_t))


def torch_dataloader_epoch(
    kind: ModelKind, X: np.ndarray, y: np.ndarray, *, batch_size: int, lr: float, seed: int = 0
) -> EpochTiming:
    """PyTorch (b): ``DataLoader(TensorDataset(X, y), batch_size, shuffle=True)``, num_workers=0."""
    X_t, y_t = torch.from_numpy(X), torch.from_numpy(y)
    model = _torch_model(kind, X.shape[1], seed)
    loss_fn = _torch_loss(kind)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    loader = DataLoader(
        TensorDataset(X_t, y_t),
        batch_size=batch_size,
        shuffle=True,
        generator=torch.Generator().manual_seed(seed),
    )
    steps = 0
    start = time.perf_counter()
    loss_sum = 0.0
    for xb, yb in loader:
        opt.zero_grad()
        loss = loss_fn(model(xb).view(-1), yb)
        loss.backward()
        opt.step()
        loss_sum += loss.item()
        steps += 1
    seconds = time.perf_counter() - start
    return EpochTiming(seconds, steps, X.shape[0], _torch_final_loss(model, loss_fn, X_t, y_t))


def sklearn_epoch(
    kind: ModelKind, X: np.ndarray, y: np.ndarray, *, lr: float, seed: int = 0
) -> EpochTiming:
    """scikit-learn's per-sample SGD, one shuffled epoch: ``fit(max_iter=1, tol=None)``.

    SGDRegressor's squared loss is ½(y − ŷ)², so eta0 = 2·lr gives the same step as the
    core's and torch's J = (y − ŷ)². X stays float32 (scikit-learn ≥ 1.3 runs SGD in float32).
    Logistic: SGDClassifier(loss="log_loss"), the same binary cross-entropy as the others.
    """
    common = {
        "penalty": None,
        "learning_rate": "constant",
        "max_iter": 1,
        "tol": None,
        "shuffle": True,
        "random_state": seed,
    }
    est: SGDRegressor | SGDClassifier
    if kind == "logistic":
        est = SGDClassifier(loss="log_loss", eta0=lr, **common)
    elif kind == "linear":
        est = SGDRegressor(loss="squared_error", eta0=2 * lr, **common)
    else:
        raise ValueError(f"kind: scikit-learn has no per-sample SGD for {kind!r}")
    with warnings.catch_warnings():
        # max_iter=1 is the point here, not a convergence failure
        warnings.simplefilter("ignore", ConvergenceWarning)
        start = time.perf_counter()
        est.fit(X, y)
        seconds = time.perf_counter() - start
    z = X.astype(np.float64) @ est.coef_.reshape(-1) + est.intercept_[0]
    if kind == "logistic":
        loss = float(np.mean(np.logaddexp(0.0, z) - y * z))
    else:
        loss = float(np.mean((y - z) ** 2))
    return EpochTiming(seconds, X.shape[0], X.shape[0], loss)


@dataclass(frozen=True)
class MemoryBound:
    """Best-of-repeats seconds of the primitives one epoch over X (n, d) needs at least.

    epoch_s = permutation + min(gather, chunked gather) + read_forward + read_backward, where
    the reads are the two gemv passes a linear model's step makes (X·w and rᵀ·X).
    """

    n: int
    row_bytes: int
    permutation_s: float
    gather_s: float
    gather_chunked_s: float
    gather_buffered_s: float
    chunk_rows: int
    read_forward_s: float
    read_backward_s: float
    sum_s: float

    @property
    def epoch_s(self) -> float:
        gather = min(self.gather_s, self.gather_chunked_s)
        return self.permutation_s + gather + self.read_forward_s + self.read_backward_s

    @property
    def samples_per_s(self) -> float:
        return self.n / self.epoch_s

    def gb_per_s(self, seconds: float, passes: float = 1.0) -> float:
        return passes * self.n * self.row_bytes / seconds / 1e9


def best_of_bounds(*bounds: MemoryBound) -> MemoryBound:
    """Per primitive, the fastest of several measurements (e.g. before and after the runs):
    on a shared machine a slow figure is interference, never the primitive's rate."""
    first = bounds[0]
    timed = {
        name: min(getattr(b, name) for b in bounds)
        for name in (
            "permutation_s",
            "gather_s",
            "gather_chunked_s",
            "gather_buffered_s",
            "read_forward_s",
            "read_backward_s",
            "sum_s",
        )
    }
    return MemoryBound(n=first.n, row_bytes=first.row_bytes, chunk_rows=first.chunk_rows, **timed)


def _best_of(repeats: int, fn) -> float:  # type: ignore[no-untyped-def]
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def memory_bound(X: np.ndarray, *, repeats: int = 5, seed: int = 0) -> MemoryBound:
    """Time the epoch's unavoidable memory traffic on X (n, d) in this process (best of repeats).

    The gathers use ``mode="clip"``: with the default ``mode="raise"`` NumPy writes into a
    temporary and copies it to ``out`` (documented: "out is always buffered if mode='raise'"),
    about 2.4x slower here; that figure is kept as ``gather_buffered_s`` for comparison. The
    chunked gather takes rows in blocks of 256 KiB of output, half a 512 KiB L2.
    """
    n, d = X.shape
    rng = np.random.default_rng(seed)
    perm: np.ndarray = rng.permutation(n)
    buf = np.empty_like(X)
    chunk_rows = max(1, (256 * 1024) // X[0].nbytes)
    w = np.ones(d, dtype=X.dtype)
    r = np.ones(n, dtype=X.dtype)
    out_n = np.empty(n, dtype=X.dtype)
    out_d = np.empty(d, dtype=X.dtype)

    def gather_chunked() -> None:
        for s in range(0, n, chunk_rows):
            np.take(X, perm[s : s + chunk_rows], axis=0, out=buf[s : s + chunk_rows], mode="clip")

    return MemoryBound(
        n=n,
        row_bytes=X[0].nbytes,
        permutation_s=_best_of(repeats, lambda: rng.permutation(n)),
        gather_s=_best_of(repeats, lambda: np.take(X, perm, axis=0, out=buf, mode="clip")),
        gather_chunked_s=_best_of(repeats, gather_chunked),
        gather_buffered_s=_best_of(repeats, lambda: np.take(X, perm, axis=0, out=buf)),
        chunk_rows=chunk_rows,
        read_forward_s=_best_of(repeats, lambda: np.dot(buf, w, out=out_n)),
        read_backward_s=_best_of(repeats, lambda: np.dot(r, buf, out=out_d)),
        sum_s=_best_of(repeats, lambda: buf.sum(axis=0)),
    )
