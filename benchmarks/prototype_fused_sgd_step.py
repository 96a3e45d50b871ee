"""PROTOTYPE (benchmark-only, not the core): how fast a linear-MSE plain-SGD epoch can step.

The core's generic step is ``J = model.loss_and_grad(θ, X_b, y_b, g)`` then
``optimizer.step(θ, g, lr)``: about a dozen NumPy calls, several with scalar operands, plus
attribute and keyword-argument traffic. For the most common job (plain SGD, no weight decay, no
clipping) the update can be fused, with the same maths:

    r = X_b w + b − y_b                 (stored in a per-epoch residual array R, not reduced)
    s = (−2·lr / B) · r                 (the loss scale and the learning rate in one multiply)
    w += X_bᵀ s,  b += Σ s              (dJ/dw = 2/B X_bᵀ r, dJ/db = 2/B Σ r, as the core)
    step losses: mean(r²) per step, one reduction over R per epoch (or per chunk of steps,
    where divergence is checked; a bad step is still named exactly)

It prints samples/s and µs/step for B = 8, 32, 128 next to the core's ``Training`` on the same
data, and the largest relative difference of θ after one epoch (the orders of rounding differ).

    python -m benchmarks.prototype_fused_sgd_step
"""

from __future__ import annotations

import time

import numpy as np

from service.core import TrainConfig, Training


def epoch_buffers(X: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(X_epoch (n, d), y_epoch (n,), R (n,)): allocated once per run, as the core's are."""
    n = X.shape[0]
    return np.zeros_like(X), np.zeros(n, X.dtype), np.zeros(n, X.dtype)


def fused_epoch(
    X: np.ndarray,
    y: np.ndarray,
    theta: np.ndarray,
    *,
    batch_size: int,
    lr: float,
    order: np.ndarray,
    buffers: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> np.ndarray:
    """One epoch in ``order`` on θ = [w (d,), b (1,)] in place; returns the step losses (float32).

    X : (n, d), y : (n,), same dtype as θ. The shuffle and gather are done as the core does
    them (``np.take(..., out=, mode="clip")`` into the preallocated ``buffers``)."""
    n, d = X.shape
    dt = theta.dtype
    X_epoch, y_epoch, R = buffers
    np.take(X, order, axis=0, out=X_epoch, mode="clip")
    np.take(y, order, out=y_epoch, mode="clip")
    B = batch_size
    steps = -(-n // B)
    w, b = theta[:d], theta[d:]  # b is a (1,) view: no NumPy scalar per step
    gW = np.empty(d, dtype=dt)
    gb = np.empty(1, dtype=dt)
    s_full = np.empty(B, dtype=dt)
    scale = dt.type(-2.0 * lr / B)
    dot, subtract, add, multiply, add_reduce = (
        np.dot,
        np.subtract,
        np.add,
        np.multiply,
        np.add.reduce,
    )
    for a in range(0, n - n % B, B):
        X_b = X_epoch[a : a + B]
        r = R[a : a + B]
        dot(X_b, w, out=r)
        add(r, b, out=r)
        subtract(r, y_epoch[a : a + B], out=r)
        multiply(r, scale, out=s_full)
        dot(s_full, X_b, out=gW)
        add_reduce(s_full, keepdims=True, out=gb)
        add(w, gW, out=w)
        add(b, gb, out=b)
    if n % B:  # the short last batch: its own scale
        a = n - n % B
        m = n - a
        r = R[a:]
        dot(X_epoch[a:], w, out=r)
        add(r, b, out=r)
        subtract(r, y_epoch[a:], out=r)
        s = r * dt.type(-2.0 * lr / m)
        w += s @ X_epoch[a:]
        b += s.sum()
    losses = np.empty(steps, dtype=np.float32)
    full = (n // B) * B
    sq = R[:full].reshape(-1, B)
    losses[: n // B] = np.einsum("ij,ij->i", sq, sq) / B
    if n % B:
        losses[-1] = float(R[full:] @ R[full:]) / (n - full)
    return losses


def augmented_buffers(X: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(E (n, d + 2) = [X | 1 | y] rows, R (n,), a (1024, d) gather chunk)."""
    n, d = X.shape
    E = np.zeros((n, d + 2), X.dtype)
    E[:, d] = 1.0
    return E, np.zeros(n, X.dtype), np.empty((1024, d), X.dtype)


def fused_epoch_augmented(
    X: np.ndarray,
    y: np.ndarray,
    theta: np.ndarray,
    *,
    batch_size: int,
    lr: float,
    order: np.ndarray,
    buffers: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> np.ndarray:
    """As ``fused_epoch``, with the epoch gathered into rows [x | 1 | y] (n, d + 2).

    With θ_ext = [w, b, −1], r = E_b θ_ext is the residual in ONE gemv, and E_bᵀ s gives
    [dw, db, ·] in one more: a step is dot, multiply, dot, add (4 NumPy calls, was ~12).
    The gather into the strided block costs ~4 ms more per 200,000 × 64 epoch (chunks through
    a contiguous (1024, d) buffer), so this layout only pays below B ≈ 256."""
    n, d = X.shape
    dt = theta.dtype
    E, R, chunk = buffers
    for a in range(0, n, chunk.shape[0]):
        rows = order[a : a + chunk.shape[0]]
        m = rows.shape[0]
        np.take(X, rows, axis=0, out=chunk[:m], mode="clip")
        E[a : a + m, :d] = chunk[:m]
    np.take(y, order, out=E[:, d + 1], mode="clip")
    B = batch_size
    theta_ext = np.empty(d + 2, dtype=dt)
    theta_ext[: d + 1] = theta
    theta_ext[d + 1] = -1.0
    g = np.empty(d + 2, dtype=dt)
    theta_view, g_view = theta_ext[: d + 1], g[: d + 1]  # the −1 never moves
    s_full = np.empty(B, dtype=dt)
    scale = dt.type(-2.0 * lr / B)
    dot, multiply, add = np.dot, np.multiply, np.add
    full = n - n % B
    for a in range(0, full, B):
        E_b = E[a : a + B]
        r = R[a : a + B]
        dot(E_b, theta_ext, out=r)
        multiply(r, scale, out=s_full)
        dot(s_full, E_b, out=g)
        add(theta_view, g_view, out=theta_view)
    if full < n:
        r = R[full:]
        dot(E[full:], theta_ext, out=r)
        s_last = r * dt.type(-2.0 * lr / (n - full))
        theta_view += (s_last @ E[full:])[: d + 1]
    theta[:] = theta_view
    losses = np.empty(-(-n // B), dtype=np.float32)
    sq = R[:full].reshape(-1, B)
    losses[: full // B] = np.einsum("ij,ij->i", sq, sq) / B
    if full < n:
        losses[-1] = float(R[full:] @ R[full:]) / (n - full)
    return losses


def main() -> None:
    rng = np.random.default_rng(0)
    n, d, lr = 200_000, 64, 0.005
    X = rng.standard_normal((n, d), dtype=np.float32)
    y = (X @ (rng.standard_normal(d).astype(np.float32) / 8) + 0.1).astype(np.float32)
    for B in (8, 32, 128):
        config = TrainConfig(model="linear", batch_size=B, epochs=2, learning_rate=lr, seed=0)
        training = Training(X, y, config)
        epochs = iter(training)
        next(epochs)  # the first epoch also faults in the buffer
        start = time.perf_counter()
        next(epochs)
        core_best = time.perf_counter() - start
        proto_best = float("inf")
        buffers = epoch_buffers(X)
        aug_buffers = augmented_buffers(X)
        aug_best = float("inf")
        for _ in range(3):
            theta = np.zeros(d + 1, dtype=np.float32)
            start = time.perf_counter()
            order = rng.permutation(n)
            fused_epoch(X, y, theta, batch_size=B, lr=lr, order=order, buffers=buffers)
            proto_best = min(proto_best, time.perf_counter() - start)
            theta = np.zeros(d + 1, dtype=np.float32)
            start = time.perf_counter()
            order = rng.permutation(n)
            fused_epoch_augmented(
                X, y, theta, batch_size=B, lr=lr, order=order, buffers=aug_buffers
            )
            aug_best = min(aug_best, time.perf_counter() - start)
        # same order, same maths: compare θ with the core's generic path on one epoch
        in_order = TrainConfig(
            model="linear", batch_size=B, epochs=1, learning_rate=lr, shuffle=False
        )
        core_once = Training(X, y, in_order)
        next(iter(core_once))
        ref = core_once.model.theta
        rels = []
        for fn, bufs in ((fused_epoch, buffers), (fused_epoch_augmented, aug_buffers)):
            theta = np.zeros(d + 1, dtype=np.float32)
            fn(X, y, theta, batch_size=B, lr=lr, order=np.arange(n), buffers=bufs)
            rels.append(float(np.max(np.abs(theta - ref)) / np.max(np.abs(ref))))
        steps = -(-n // B)
        for name, best, rel in (
            ("core (generic step)", core_best, 0.0),
            ("fused, 8 calls/step", proto_best, rels[0]),
            ("fused, [x|1|y] rows", aug_best, rels[1]),
        ):
            print(
                f"B={B:>4} {name}: {n / best / 1e6:6.2f} M samples/s "
                f"({1e6 * best / steps:5.2f} µs/step, ×{core_best / best:.2f} the core); "
                f"max |Δθ|/max|θ| vs the core in file order {rel:.1e}"
            )


if __name__ == "__main__":
    main()
