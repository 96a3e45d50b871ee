"""Per-epoch schedules: learning rate, batch size, and learning-rate scaling with batch size.

The learning rate in force at epoch e (0-based) is

    lr(e) = lr_schedule.lr_at(e, scale_lr(base_lr, B(e), reference_batch_size, rule), epochs)

with B(e) = batch_size_schedule.batch_size_at(e, batch_size, n_train). Both schedules are frozen
dataclasses validated at construction (CoreConfigError naming the field).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from service.core.errors import CoreConfigError

__all__ = [
    "BATCH_SIZE_SCHEDULE_KINDS",
    "LR_SCALING_RULES",
    "LR_SCHEDULE_KINDS",
    "BatchSizeSchedule",
    "LRSchedule",
    "scale_lr",
]

LRScheduleKind = Literal["constant", "step", "exponential", "cosine"]
BatchSizeScheduleKind = Literal["constant", "grow"]
LRScalingRule = Literal["none", "linear", "sqrt"]
LR_SCHEDULE_KINDS: tuple[str, ...] = ("constant", "step", "exponential", "cosine")
BATCH_SIZE_SCHEDULE_KINDS: tuple[str, ...] = ("constant", "grow")
LR_SCALING_RULES: tuple[str, ...] = ("none", "linear", "sqrt")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_epoch(epoch: int, epochs: int | None = None) -> None:
    if not _is_int(epoch) or epoch < 0:
        raise CoreConfigError("epoch", f"must be an integer ≥ 0, not {epoch!r}")
    if epochs is not None and (not _is_int(epochs) or epochs < 1):
        raise CoreConfigError("epochs", f"must be an integer ≥ 1, not {epochs!r}")


@dataclass(frozen=True)
class LRSchedule:
    """Learning rate per epoch e (0-based) of a run of E epochs, from a base rate lr₀:

    - constant:    lr₀
    - step:        lr₀ · γ^⌊e / step_size⌋
    - exponential: lr₀ · γ^e
    - cosine:      min_lr + (lr₀ − min_lr)(1 + cos(π e / E))/2   (lr₀ at e = 0, towards min_lr)

    Linear warmup combines with any kind: for e < warmup_epochs the value above is multiplied
    by (e + 1)/warmup_epochs (the decay runs from epoch 0; warmup does not shift it).
    ``gamma`` must lie in (0, 1] (a decay); ``min_lr`` (the floor) is used by cosine only, so
    a non-zero one with another kind is refused rather than silently ignored.
    """

    kind: LRScheduleKind = "constant"
    step_size: int = 1
    gamma: float = 0.1
    min_lr: float = 0.0
    warmup_epochs: int = 0

    def __post_init__(self) -> None:
        if self.kind not in LR_SCHEDULE_KINDS:
            raise CoreConfigError(
                "kind", f"must be one of {', '.join(LR_SCHEDULE_KINDS)}, not {self.kind!r}"
            )
        if not _is_int(self.step_size) or self.step_size < 1:
            raise CoreConfigError("step_size", f"must be an integer ≥ 1, not {self.step_size!r}")
        if not _is_number(self.gamma) or not (0.0 < self.gamma <= 1.0):
            raise CoreConfigError("gamma", f"must be a number in (0, 1], not {self.gamma!r}")
        if not _is_number(self.min_lr) or not (math.isfinite(self.min_lr) and self.min_lr >= 0):
            raise CoreConfigError("min_lr", f"must be a finite number ≥ 0, not {self.min_lr!r}")
        if self.min_lr != 0 and self.kind != "cosine":
            raise CoreConfigError(
                "min_lr", f"only the cosine schedule has a floor, not {self.kind}"
            )
        if not _is_int(self.warmup_epochs) or self.warmup_epochs < 0:
            raise CoreConfigError(
                "warmup_epochs", f"must be an integer ≥ 0, not {self.warmup_epochs!r}"
            )

    def lr_at(self, epoch: int, base_lr: float, epochs: int) -> float:
        """The learning rate for 0-based ``epoch`` of a run of ``epochs`` epochs."""
        _check_epoch(epoch, epochs)
        if self.kind == "step":
            lr = base_lr * self.gamma ** (epoch // self.step_size)
        elif self.kind == "exponential":
            lr = base_lr * self.gamma**epoch
        elif self.kind == "cosine":
            lr = (
                self.min_lr
                + (base_lr - self.min_lr) * (1.0 + math.cos(math.pi * epoch / epochs)) / 2
            )
        else:
            lr = base_lr
        if epoch < self.warmup_epochs:
            lr *= (epoch + 1) / self.warmup_epochs
        return float(lr)


@dataclass(frozen=True)
class BatchSizeSchedule:
    """Batch size per epoch e (0-based) from a base size B₀ (Smith et al. 2017, "Don't decay
    the learning rate, increase the batch size"):

    - constant: B₀
    - grow:     B₀ · factor^⌊e / every_epochs⌋, at most ``max_batch_size`` (None: no cap)

    Never above the training set's n_train rows (nor, with a cap, above the cap — a cap below
    B₀ caps B₀ too).
    """

    kind: BatchSizeScheduleKind = "constant"
    factor: int = 2
    every_epochs: int = 1
    max_batch_size: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in BATCH_SIZE_SCHEDULE_KINDS:
            raise CoreConfigError(
                "kind", f"must be one of {', '.join(BATCH_SIZE_SCHEDULE_KINDS)}, not {self.kind!r}"
            )
        if not _is_int(self.factor) or self.factor < 2:
            raise CoreConfigError("factor", f"must be an integer ≥ 2, not {self.factor!r}")
        if not _is_int(self.every_epochs) or self.every_epochs < 1:
            raise CoreConfigError(
                "every_epochs", f"must be an integer ≥ 1, not {self.every_epochs!r}"
            )
        if self.max_batch_size is not None and (
            not _is_int(self.max_batch_size) or self.max_batch_size < 1
        ):
            raise CoreConfigError(
                "max_batch_size", f"must be an integer ≥ 1 or null, not {self.max_batch_size!r}"
            )

    def batch_size_at(self, epoch: int, base: int, n_train: int) -> int:
        """The batch size for 0-based ``epoch``, from ``base`` rows, never above ``n_train``."""
        _check_epoch(epoch)
        if not _is_int(base) or base < 1:
            raise CoreConfigError("batch_size", f"must be an integer ≥ 1, not {base!r}")
        if not _is_int(n_train) or n_train < 1:
            raise CoreConfigError("n_train", f"must be an integer ≥ 1, not {n_train!r}")
        size = base
        if self.kind == "grow":
            growths = epoch // self.every_epochs
            # stop multiplying once past the bounds: the exponent may be large
            limit = n_train if self.max_batch_size is None else min(n_train, self.max_batch_size)
            while growths > 0 and size < limit:
                size *= self.factor
                growths -= 1
        if self.max_batch_size is not None:
            size = min(size, self.max_batch_size)
        return min(size, n_train)


def scale_lr(
    base_lr: float, batch_size: int, reference_batch_size: int, rule: str = "none"
) -> float:
    """The learning rate for ``batch_size`` given ``base_lr`` tuned at ``reference_batch_size``:

    - none:   lr₀
    - linear: lr₀ · B / B_ref        (Goyal et al. 2017)
    - sqrt:   lr₀ · √(B / B_ref)     (the variance-preserving rule for SGD; Krizhevsky 2014)
    """
    if rule not in LR_SCALING_RULES:
        raise CoreConfigError(
            "lr_scaling", f"must be one of {', '.join(LR_SCALING_RULES)}, not {rule!r}"
        )
    if not _is_int(batch_size) or batch_size < 1:
        raise CoreConfigError("batch_size", f"must be an integer ≥ 1, not {batch_size!r}")
    if not _is_int(reference_batch_size) or reference_batch_size < 1:
        raise CoreConfigError(
            "reference_batch_size", f"must be an integer ≥ 1, not {reference_batch_size!r}"
        )
    if rule == "linear":
        return float(base_lr * batch_size / reference_batch_size)
    if rule == "sqrt":
        return float(base_lr * math.sqrt(batch_size / reference_batch_size))
    return float(base_lr)
