"""What the exact noise-scale measurement costs, as a multiple of one epoch of training.

    python -m benchmarks.noise_cost            # ~1 minute
    python -m benchmarks.noise_cost --epochs 3 # quicker, noisier

Within the exact budget (``service.core.train``: 65,536 rows for the linear models, 2²⁶
rows × parameters for an MLP) every epoch end computes tr(Σ) and |G|² over all N training rows:
a gradient and the per-example squared norms over the whole set, about two gradients' work.
Each case trains the same config twice, with and without ``noise_scale`` (the steps are the
same bits either way), interleaved epoch by epoch in this one process; the measurement's cost is
the best (least) epoch wall time with it minus the best without, reported beside the epoch's
own. Cases sit at the budget's edge: linear regression 65,536 × 20, and a 64-64-10 ReLU MLP
(4,810 parameters) on 13,951 rows (13,951 × 4,810 ≤ 2²⁶), each at batch 32 (the fused
small-batch path for linear) and 1024 (where an epoch is cheapest, so the ratio is largest).
BLAS runs ``--threads`` threads, 1 by default as in a worker (``BATCHWISE_WORKER_THREADS``).
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from dataclasses import dataclass, replace

import numpy as np
from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

from benchmarks.machine import print_machine
from service.core import EpochRecord, TrainConfig, Training
from service.core.measurements import EXACT_NOISE_MAX_ROW_PARAMS, EXACT_NOISE_MAX_ROWS

MLP_FEATURES, MLP_HIDDEN, MLP_CLASSES = 64, (64,), 10
MLP_PARAMS = MLP_FEATURES * 64 + 64 + 64 * MLP_CLASSES + MLP_CLASSES  # 4,810


@dataclass(frozen=True)
class Case:
    label: str
    config: TrainConfig
    X: np.ndarray
    y: np.ndarray


def cases(batch_sizes: tuple[int, ...]) -> Iterator[Case]:
    rng = np.random.default_rng(0)
    X = rng.standard_normal((EXACT_NOISE_MAX_ROWS, 20))
    y = X @ rng.standard_normal(20) + rng.standard_normal(EXACT_NOISE_MAX_ROWS)
    for batch in batch_sizes:
        config = TrainConfig(batch_size=batch, learning_rate=0.001 * min(batch, 32))
        yield Case(f"linear {EXACT_NOISE_MAX_ROWS:,} × 20, B = {batch}", config, X, y)
    rows = EXACT_NOISE_MAX_ROW_PARAMS // MLP_PARAMS
    centres = rng.standard_normal((MLP_CLASSES, MLP_FEATURES))
    labels = rng.integers(0, MLP_CLASSES, rows)
    X_mlp = centres[labels] + rng.standard_normal((rows, MLP_FEATURES))
    for batch in batch_sizes:
        config = TrainConfig(
            model="mlp", hidden_layers=MLP_HIDDEN, batch_size=batch, learning_rate=0.01
        )
        label = f"mlp 64-64-10 ({MLP_PARAMS:,} params) on {rows:,} rows, B = {batch}"
        yield Case(label, config, X_mlp, labels)


def measure(case: Case, epochs: int) -> tuple[float, float, bool]:
    """(best epoch wall time without the measurement, with it, whether it was exact)."""
    base = replace(case.config, epochs=epochs, noise_scale=False)
    plain = iter(Training(case.X, case.y, base))
    noisy = iter(Training(case.X, case.y, replace(base, noise_scale=True)))
    without: list[EpochRecord] = []
    with_noise: list[EpochRecord] = []
    for _ in range(epochs):  # interleaved, so a burst of load hits both alike
        without.append(next(plain))
        with_noise.append(next(noisy))
    noise = with_noise[-1].noise_scale
    exact = noise is not None and noise.exact
    # the first epoch also faults in the epoch buffers: steady state is the rest
    return (
        min(r.wall_time_s for r in without[1:]),
        min(r.wall_time_s for r in with_noise[1:]),
        exact,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--epochs", type=int, default=6, help="epochs per run (≥ 2)")
    parser.add_argument(
        "--threads", type=int, default=1, help="BLAS threads (a worker's default: 1)"
    )
    args = parser.parse_args(argv)
    print_machine()
    print(f"BLAS threads: {args.threads}; best of {args.epochs - 1} steady-state epochs\n")
    print(f"{'case':<52} {'epoch':>9} {'measurement':>12} {'ratio':>7}  exact")
    with threadpool_limits(args.threads):
        for case in cases((32, 1024)):
            epoch, with_noise, exact = measure(case, max(2, args.epochs))
            cost = with_noise - epoch
            print(
                f"{case.label:<52} {epoch * 1e3:7.1f} ms {cost * 1e3:9.1f} ms "
                f"{cost / epoch:6.2f}×  {exact}"
            )


if __name__ == "__main__":
    main()
