"""What a run reports: one ``EpochRecord`` per epoch, with its noise scale and evaluations."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np

__all__ = ["BatchChange", "EpochRecord", "EvaluationPoint", "NoiseRecord", "StopReason"]

StopReason = Literal["completed", "early_stopping", "stopped", "diverged"]


@dataclass(frozen=True)
class NoiseRecord:
    """Gradient noise scale at the end of an epoch (McCandlish et al. 2018).

    ``b_simple = tr(Σ)/|G|²`` (None when the |G|² estimate is not positive);
    ``b_simple_corrected = 1/(1/b_simple + 1/N)`` for sampling N training rows without
    replacement; ``loss_level`` the loss on the same rows at the same θ. ``exact``: computed
    over all N training rows (``n_samples`` = N, nothing estimated), else on a sample.
    ``b_simple_lower_bound``: when the sampled |G|² is not positive, B_simple ≳ tr(Σ)/|ḡ|²
    (``service.core.noise``), a lower bound; None otherwise.
    """

    b_simple: float | None
    b_simple_corrected: float | None
    trace_sigma: float
    grad_sq_norm: float
    loss_level: float
    n_samples: int
    exact: bool = False
    b_simple_lower_bound: float | None = None


@dataclass(frozen=True)
class EvaluationPoint:
    """The loss evaluated after ``step`` optimizer steps of the run (0: the initial θ), when
    ``samples`` training examples had been consumed (``config.evaluation``)."""

    step: int
    samples: int
    loss: float


@dataclass(frozen=True)
class BatchChange:
    """The batch size changed (the warmup schedule): from the run's global step ``step``
    (0-based: the steps done before the first one at the new size), when ``samples`` training
    examples had been consumed, the steps take ``batch_size`` rows at ``learning_rate``;
    ``reason`` says why in words."""

    step: int
    samples: int
    batch_size: int
    learning_rate: float
    reason: str


@dataclass(frozen=True, eq=False)
class EpochRecord:
    """One epoch's results. ``step_losses`` (steps,) float32, one per minibatch step.

    ``evaluations``: the evaluations made during the epoch, in step order (epoch 1's starts at
    step 0; each epoch's ends at its last step); empty without ``config.evaluation``.
    ``batch_size_reason``: with the adaptive batch size, why the epoch ran at ``batch_size``
    (with the warmup, why its first step did). ``batch_size`` and ``learning_rate`` are the
    first step's; ``batch_changes``: the warmup's changes within the epoch, in step order
    (the first step's own when the epoch starts with one).
    """

    epoch: int
    train_loss: float
    val_loss: float | None
    val_rmse: float | None
    val_r2: float | None
    val_accuracy: float | None
    learning_rate: float
    batch_size: int
    steps: int
    total_steps: int
    samples_seen: int
    wall_time_s: float
    samples_per_s: float
    noise_scale: NoiseRecord | None
    step_losses: np.ndarray
    evaluations: tuple[EvaluationPoint, ...] = ()
    batch_size_reason: str | None = None
    batch_changes: tuple[BatchChange, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON-able fields without ``step_losses`` (store those as ``step_losses.tobytes()``);
        ``evaluations`` as a list of ``{step, samples, loss}``."""
        out = {name: value for name, value in asdict(self).items() if name != "step_losses"}
        out["evaluations"] = [asdict(point) for point in self.evaluations]
        if self.batch_changes:  # absent otherwise: older records and other schedules alike
            out["batch_changes"] = [asdict(change) for change in self.batch_changes]
        else:
            out.pop("batch_changes")
        return out
