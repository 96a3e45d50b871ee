"""What one demo run trains: the seed comparison's two jobs and the sweep's batch sizes,
epochs, learning-rate search and target, full size or ``--quick``."""

from __future__ import annotations

import math
from dataclasses import dataclass


def sweep_batch_sizes(
    train_rows: int, *, smallest: int = 8, largest: int = 4096, stride: int = 1
) -> list[int]:
    """Powers of two from ``smallest`` to ``largest`` below ``train_rows`` (every
    ``stride``-th of them): 8, 16, …, 4096 for 16,000 training rows."""
    sizes: list[int] = []
    size = smallest
    while size <= largest and size < train_rows:
        sizes.append(size)
        size *= 2
    return sizes[::stride]


@dataclass(frozen=True)
class DemoPlan:
    """The sizes of one demo run."""

    n_rows: int
    validation_split: float
    smallest_batch: int
    batch_size_stride: int
    sweep_epochs: int
    lr_start: float
    lr_max_rounds: int
    target_excess: float
    seeds: int
    comparison_lr: float = 0.01

    @property
    def train_rows(self) -> int:
        """Training rows after the validation split (the service rounds n_val to nearest)."""
        return self.n_rows - math.floor(self.n_rows * self.validation_split + 0.5)

    @property
    def batch_sizes(self) -> list[int]:
        """The sweep's batch sizes."""
        return sweep_batch_sizes(
            self.train_rows, smallest=self.smallest_batch, stride=self.batch_size_stride
        )

    def target_loss(self, noise_std: float) -> float:
        """The sweep's target: the training loss ``target_excess`` above the noise floor σ²
        (the mean squared error of the true w and b)."""
        return noise_std**2 * (1.0 + self.target_excess)

    def describe(self, noise_std: float) -> str:
        rounds = f"at most {self.lr_max_rounds} rounds"
        return (
            f"{self.sweep_epochs} epochs per point, {self.seeds} seed(s), learning rate "
            f"searched per batch size from a guess of {self.lr_start:g} at batch "
            f"{self.smallest_batch} ({rounds}); target: "
            f"training loss {self.target_loss(noise_std):.4g}, {self.target_excess:.0%} above "
            f"the noise floor σ² = {noise_std**2:g}"
        )


#: The full demo: 20,000 rows so batch 4,096 is still 4 steps an epoch, and 8 epochs so it
#: reaches the target (≈ 20 steps); the best rates run from ≈ 0.05 (batch 8) to ≈ 0.8 (the
#: stability edge, 1/s_max² = 1), so the search's guess at batch 8 is 0.05 (scaled by √B).
FULL = DemoPlan(
    n_rows=20_000,
    validation_split=0.2,
    smallest_batch=8,
    batch_size_stride=1,
    sweep_epochs=8,
    lr_start=0.05,
    lr_max_rounds=8,
    target_excess=0.05,
    seeds=2,
)
#: ``--quick``: a tenth of the rows, batch sizes 8, 32, 128, 512, a shallower target.
QUICK = DemoPlan(
    n_rows=2_000,
    validation_split=0.2,
    smallest_batch=8,
    batch_size_stride=2,
    sweep_epochs=12,
    lr_start=0.05,
    lr_max_rounds=6,
    target_excess=0.10,
    seeds=2,
)

COMPARISON = ((32, 10), (128, 5))  # (batch size, epochs): the seed comparison
