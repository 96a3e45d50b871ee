"""PROTOTYPE (benchmark-only, not the core): batch-size-1 SGD for linear MSE, k steps per solve.

Per-sample SGD on J_i = (y_i − x̃_iᵀθ)², x̃ = [x, 1], θ = [w, b], step η:

    θ_{i+1} = θ_i + 2η r_i x̃_i,   r_i = y_i − x̃_iᵀθ_i   (the residual before step i)

Over a block of k rows starting from θ_0, θ_i = θ_0 + 2η Σ_{j<i} r_j x̃_j, so

    r_i = e_i − 2η Σ_{j<i} (x̃_iᵀx̃_j) r_j,   e = y − X̃θ_0
    ⇔ (I + 2η·tril(X̃X̃ᵀ, −1)) r = e        (unit lower triangular, k × k)
    θ_k = θ_0 + 2η X̃ᵀ r,   step losses r_i²

Exactly the per-sample updates, in exact arithmetic; in floating point they differ only by
rounding. NumPy has no triangular solve, so the core would use ``np.linalg.solve`` (LU, k³);
``scipy.linalg.solve_triangular`` is timed beside it to show what a true trsv gives.

    python -m benchmarks.prototype_bs1_block_solve [--rows 200000] [--steps 20000]
"""

from __future__ import annotations

import argparse
import time
from functools import partial

import numpy as np


def naive_epoch(X: np.ndarray, y: np.ndarray, lr: float) -> tuple[np.ndarray, np.ndarray]:
    """Reference: one NumPy step per row (the shape of a per-step loop). Returns θ, losses."""
    n, d = X.shape
    theta = np.zeros(d + 1, dtype=X.dtype)
    w, b = theta[:d], theta[d:]
    losses = np.empty(n, dtype=np.float32)
    for i in range(n):
        x = X[i]
        r = y[i] - (np.dot(x, w) + b[0])
        losses[i] = r * r
        w += (2 * lr * r) * x
        b += 2 * lr * r
    return theta, losses


def block_epoch(
    X: np.ndarray, y: np.ndarray, lr: float, k: int, *, use_scipy: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """The same epoch, k rows per triangular solve. X : (n, d), y : (n,). Returns θ, losses."""
    if use_scipy:
        from scipy.linalg import solve_triangular  # type: ignore[import-untyped]
    n, d = X.shape
    dt = X.dtype
    theta = np.zeros(d + 1, dtype=dt)
    w, b = theta[:d], theta[d:]
    losses = np.empty(n, dtype=np.float32)
    two_lr = dt.type(2 * lr)
    strict_lower = np.tril(np.ones((k, k), dtype=dt), -1) * two_lr  # 2η on j < i, 0 elsewhere
    eye = np.eye(k, dtype=dt)
    G = np.empty((k, k), dtype=dt)
    e = np.empty(k, dtype=dt)
    gw = np.empty(d, dtype=dt)
    for start in range(0, n, k):
        Xb, yb = X[start : start + k], y[start : start + k]
        m = Xb.shape[0]
        if m != k:  # the short last block
            Gm, em = np.empty((m, m), dt), np.empty(m, dt)
            sl, ey = strict_lower[:m, :m], eye[:m, :m]
        else:
            Gm, em, sl, ey = G, e, strict_lower, eye
        np.dot(Xb, Xb.T, out=Gm)  # x_iᵀx_j (NumPy calls syrk for A·Aᵀ)
        np.add(Gm, 1, out=Gm)  # + the bias column's 1·1
        np.multiply(Gm, sl, out=Gm)
        np.add(Gm, ey, out=Gm)  # I + 2η·tril(X̃X̃ᵀ, −1)
        np.dot(Xb, w, out=em)
        np.subtract(yb, em, out=em)
        np.subtract(em, b, out=em)  # e = y − X̃θ_0
        if use_scipy:
            r = solve_triangular(Gm, em, lower=True, unit_diagonal=True, check_finite=False)
        else:
            r = np.linalg.solve(Gm, em)
        np.multiply(r, r, out=losses[start : start + m])
        np.dot(r, Xb, out=gw[:d])
        w += two_lr * gw
        b += two_lr * r.sum()
    return theta, losses


def block_epoch_batched(
    X: np.ndarray, y: np.ndarray, lr: float, k: int, *, group: int = 256
) -> tuple[np.ndarray, np.ndarray]:
    """The same epoch with everything that does not depend on θ done for many blocks at once.

    T_b = I + 2η·tril(X̃_bX̃_bᵀ, −1) depends only on the block's rows, so for a group of blocks
    one batched ``np.linalg.solve`` gives ỹ_b = T_b⁻¹y_b and Z_b = T_b⁻¹X̃_b; the sequential part
    per block is then r = ỹ_b − Z_bθ and θ += 2η X̃_bᵀr: two gemv. Memory: a group's copy.
    Rows past the last whole block go through ``block_epoch``'s short-block path.
    """
    n, d = X.shape
    dt = X.dtype
    theta = np.zeros(d + 1, dtype=dt)
    losses = np.empty(n, dtype=np.float32)
    two_lr = dt.type(2 * lr)
    strict_lower = np.tril(np.ones((k, k), dtype=dt), -1) * two_lr
    eye = np.eye(k, dtype=dt)
    n_whole = (n // k) * k
    r = np.empty(k, dtype=dt)
    step = np.empty(d + 1, dtype=dt)
    for g0 in range(0, n_whole, k * group):
        g1 = min(n_whole, g0 + k * group)
        nb = (g1 - g0) // k
        rhs = np.empty((nb, k, d + 2), dtype=dt)  # [y | X | 1] per block
        rhs[:, :, 0] = y[g0:g1].reshape(nb, k)
        rhs[:, :, 1 : d + 1] = X[g0:g1].reshape(nb, k, d)
        rhs[:, :, d + 1] = 1
        Xt = rhs[:, :, 1:]
        T = Xt @ Xt.transpose(0, 2, 1)
        T *= strict_lower
        T += eye
        S = np.linalg.solve(T, rhs)  # batched LU: ỹ_b and Z_b for every block of the group
        ytil, Z = S[:, :, 0], S[:, :, 1:]
        for j in range(nb):
            np.dot(Z[j], theta, out=r)
            np.subtract(ytil[j], r, out=r)
            np.multiply(r, r, out=losses[g0 + j * k : g0 + (j + 1) * k])
            np.dot(r, Xt[j], out=step)
            step *= two_lr
            theta += step
    if n_whole < n:  # the tail, continuing from θ
        tail_theta, tail_losses = _continue(X[n_whole:], y[n_whole:], lr, theta)
        theta, losses[n_whole:] = tail_theta, tail_losses
    return theta, losses


def _continue(
    X: np.ndarray, y: np.ndarray, lr: float, theta: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    theta = theta.copy()
    d = X.shape[1]
    losses = np.empty(X.shape[0], dtype=np.float32)
    for i in range(X.shape[0]):
        r = y[i] - (np.dot(X[i], theta[:d]) + theta[d])
        losses[i] = r * r
        theta[:d] += (2 * lr * r) * X[i]
        theta[d] += 2 * lr * r
    return theta, losses


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--steps", type=int, default=20_000, help="rows for the naive loop")
    parser.add_argument("--lr", type=float, default=0.005)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    d = 64
    X64 = rng.standard_normal((args.rows, d))
    y64 = X64 @ (rng.standard_normal(d) / 8) + 0.1 * rng.standard_normal(args.rows)
    X32, y32 = X64.astype(np.float32), y64.astype(np.float32)

    # exactness: the block form against the per-step loop on the same rows, float64 and float32
    m = min(args.steps, args.rows)
    for X, y, name in ((X64, y64, "float64"), (X32, y32, "float32")):
        start = time.perf_counter()
        ref_theta, ref_losses = naive_epoch(X[:m], y[:m], args.lr)
        naive_s = time.perf_counter() - start
        print(f"{name}: naive per-step NumPy loop {m / naive_s / 1e3:7.1f} k samples/s")
        for how, fn in (("block", block_epoch), ("batched", block_epoch_batched)):
            blk_theta, blk_losses = fn(X[: m + 7], y[: m + 7], args.lr, 64)
            ref_theta, ref_losses = naive_epoch(X[: m + 7], y[: m + 7], args.lr)
            rel = np.linalg.norm(blk_theta - ref_theta) / np.linalg.norm(ref_theta)
            loss_rel = np.max(np.abs(blk_losses - ref_losses)) / np.max(ref_losses)
            print(
                f"  {how} k=64 vs naive over {m + 7:,} steps: |Δθ|/|θ| = {rel:.1e}, "
                f"max |Δloss|/max loss = {loss_rel:.1e}"
            )

    for k in (8, 16, 32, 64, 128):
        variants = (
            ("np.linalg.solve per block", partial(block_epoch, X32, y32, args.lr, k)),
            (
                "scipy trsv per block     ",
                partial(block_epoch, X32, y32, args.lr, k, use_scipy=True),
            ),
            ("batched NumPy solve      ", partial(block_epoch_batched, X32, y32, args.lr, k)),
        )
        for how, run in variants:
            best = float("inf")
            for _ in range(3):
                start = time.perf_counter()
                run()
                best = min(best, time.perf_counter() - start)
            print(
                f"float32 k={k:>4} {how}: {args.rows / best / 1e6:6.2f} M samples/s "
                f"({1e9 * best / args.rows:6.0f} ns/sample)"
            )


if __name__ == "__main__":
    main()
