"""Per-epoch schedules: learning rate, batch size, and learning-rate scaling with batch size.

The learning rate in force at epoch e (0-based) is

    lr(e) = lr_schedule.lr_at(e, scale_lr(base_lr, B(e), reference_batch_size, rule), epochs)

with B(e) = batch_size_schedule.batch_size_at(e, batch_size, n_train) — or, for the adaptive
batch size, the size ``BatchSizeSchedule.adapt`` chose from the noise scale measured so far.
Both schedules are frozen dataclasses validated at construction (CoreConfigError naming the
field). ``log_spaced_steps`` is the evaluation schedule: a pure function of the global step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from service.core.errors import CoreConfigError
from service.core.validation import is_int, is_real

__all__ = [
    "BATCH_SIZE_SCHEDULE_KINDS",
    "LR_SCALING_RULES",
    "LR_SCHEDULE_KINDS",
    "BatchSizeChange",
    "BatchSizeSchedule",
    "LRSchedule",
    "log_spaced_steps",
    "scale_lr",
]

LRScheduleKind = Literal["constant", "step", "exponential", "cosine"]
BatchSizeScheduleKind = Literal["constant", "grow", "adaptive", "warmup"]
LR_SCHEDULE_KINDS: tuple[str, ...] = ("constant", "step", "exponential", "cosine")
BATCH_SIZE_SCHEDULE_KINDS: tuple[str, ...] = ("constant", "grow", "adaptive", "warmup")
LR_SCALING_RULES: tuple[str, ...] = ("none", "linear", "sqrt")


def _check_epoch(epoch: int, epochs: int | None = None) -> None:
    if not is_int(epoch) or epoch < 0:
        raise CoreConfigError("epoch", f"must be an integer ≥ 0, not {epoch!r}")
    if epochs is not None and (not is_int(epochs) or epochs < 1):
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
        if not is_int(self.step_size) or self.step_size < 1:
            raise CoreConfigError("step_size", f"must be an integer ≥ 1, not {self.step_size!r}")
        if not is_real(self.gamma) or not (0.0 < self.gamma <= 1.0):
            raise CoreConfigError("gamma", f"must be a number in (0, 1], not {self.gamma!r}")
        if not is_real(self.min_lr) or not (math.isfinite(self.min_lr) and self.min_lr >= 0):
            raise CoreConfigError("min_lr", f"must be a finite number ≥ 0, not {self.min_lr!r}")
        if self.min_lr != 0 and self.kind != "cosine":
            raise CoreConfigError(
                "min_lr", f"only the cosine schedule has a floor, not {self.kind}"
            )
        if not is_int(self.warmup_epochs) or self.warmup_epochs < 0:
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
class BatchSizeChange:
    """What ``BatchSizeSchedule.adapt`` decided: the next epoch's ``batch_size`` and why."""

    batch_size: int
    reason: str


@dataclass(frozen=True)
class BatchSizeSchedule:
    """Batch size per epoch e (0-based) from a base size B₀:

    - constant: B₀
    - grow:     B₀ · factor^⌊e / every_epochs⌋, at most ``max_batch_size`` (None: no cap)
      (Smith et al. 2017, "Don't decay the learning rate, increase the batch size")
    - adaptive: the batch follows the measured gradient noise scale (McCandlish et al. 2018:
      below B_noise a larger batch takes fewer steps for the same samples). It starts at
      B₀ clamped into [``min_batch_size``, ``max_batch_size``] (None: B₀, n_train); after
      every ``every_epochs``-th epoch, with B̂ the corrected B_simple measured at that epoch's
      end, the next epochs run at

          B' = min(max(B, round(B̂)), ⌊max_growth · B⌋, max_batch_size, n_train)

      — it moves toward B̂, never shrinks, grows at most ``max_growth``× per change, and
      stays put when nothing was measured. When the |G|² estimate of S sampled rows is not
      positive (|ḡ|² ≤ tr(Σ)/S: the mean gradient is lost in the noise, as happens near
      convergence), B_simple is beyond what S rows resolve, and B̂ = 1/(1/L + 1/n_train)
      with L = tr(Σ)/|ḡ|² ≥ S (S itself when there is no L) is used as the lower bound it
      is (a training set within ``train``'s exact budget is measured over every row and never
      needs it). The training loop measures the noise scale for it and keeps B in
      its checkpoint (``adapt`` is the rule; ``batch_size_at`` gives the start).

    - warmup:   the batch follows ``points`` ((samples, batch), …; samples strictly
      increasing): B₀ until the first point's samples, then each point's batch from the first
      step boundary at or after its samples count (samples seen over the whole run, a warm
      start's source included), mid-epoch too (``warmup_batch_at``; Merrill et al. 2025's
      batch-size warmup). ``probe_id`` names the probe the points came from, if any.

    Never above the training set's n_train rows (nor, with a cap, above the cap — a cap below
    B₀ caps B₀ too). ``min_batch_size`` and ``max_growth`` belong to adaptive only, ``factor``
    to grow only: set with another kind they are refused rather than silently ignored.
    """

    kind: BatchSizeScheduleKind = "constant"
    factor: int = 2
    every_epochs: int = 1
    max_batch_size: int | None = None
    min_batch_size: int | None = None
    max_growth: float = 2.0
    points: tuple[tuple[int, int], ...] = ()
    probe_id: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in BATCH_SIZE_SCHEDULE_KINDS:
            raise CoreConfigError(
                "kind", f"must be one of {', '.join(BATCH_SIZE_SCHEDULE_KINDS)}, not {self.kind!r}"
            )
        self._check_points()
        if not is_int(self.factor) or self.factor < 2:
            raise CoreConfigError("factor", f"must be an integer ≥ 2, not {self.factor!r}")
        if not is_int(self.every_epochs) or self.every_epochs < 1:
            raise CoreConfigError(
                "every_epochs", f"must be an integer ≥ 1, not {self.every_epochs!r}"
            )
        for name in ("max_batch_size", "min_batch_size"):
            value = getattr(self, name)
            if value is not None and (not is_int(value) or value < 1):
                raise CoreConfigError(name, f"must be an integer ≥ 1 or null, not {value!r}")
        if (
            not is_real(self.max_growth)
            or not math.isfinite(self.max_growth)
            or self.max_growth <= 1.0
        ):
            raise CoreConfigError(
                "max_growth", f"must be a finite number > 1, not {self.max_growth!r}"
            )
        # Store as float so that a JSON round trip gives an equal object.
        object.__setattr__(self, "max_growth", float(self.max_growth))
        if self.kind != "adaptive":
            if self.min_batch_size is not None:
                raise CoreConfigError(
                    "min_batch_size", f"only the adaptive schedule has one, not {self.kind}"
                )
            if self.max_growth != 2.0:
                raise CoreConfigError(
                    "max_growth", f"only the adaptive schedule has one, not {self.kind}"
                )
        elif self.factor != 2:
            raise CoreConfigError(
                "factor", "the adaptive schedule grows by the noise scale, up to max_growth"
            )
        if (
            self.min_batch_size is not None
            and self.max_batch_size is not None
            and self.min_batch_size > self.max_batch_size
        ):
            raise CoreConfigError(
                "min_batch_size",
                f"{self.min_batch_size} is above max_batch_size {self.max_batch_size}",
            )

    def _check_points(self) -> None:
        if not isinstance(self.points, tuple | list):
            raise CoreConfigError("points", "must be a list of [samples, batch] pairs")
        points: list[tuple[int, int]] = []
        for i, point in enumerate(self.points):
            if not isinstance(point, tuple | list) or len(point) != 2:
                raise CoreConfigError(f"points[{i}]", f"must be [samples, batch], not {point!r}")
            samples, batch = point
            if not is_int(samples) or samples < 0:
                raise CoreConfigError(
                    f"points[{i}]", f"samples must be an integer ≥ 0, not {samples!r}"
                )
            if not is_int(batch) or batch < 1:
                raise CoreConfigError(
                    f"points[{i}]", f"batch must be an integer ≥ 1, not {batch!r}"
                )
            if points and samples <= points[-1][0]:
                raise CoreConfigError(
                    f"points[{i}]", f"samples must increase: {samples} is not above {points[-1][0]}"
                )
            points.append((int(samples), int(batch)))
        # Tuples, so that a JSON round trip (lists) gives an equal object.
        object.__setattr__(self, "points", tuple(points))
        if self.kind == "warmup" and not points:
            raise CoreConfigError("points", "the warmup schedule needs at least one point")
        if self.kind != "warmup" and (points or self.probe_id is not None):
            name = "points" if points else "probe_id"
            raise CoreConfigError(name, f"only the warmup schedule has {name}, not {self.kind}")
        if self.probe_id is not None and not isinstance(self.probe_id, str):
            raise CoreConfigError("probe_id", f"must be a string or null, not {self.probe_id!r}")

    def warmup_batch_at(self, samples: int, base: int, n_train: int) -> tuple[int, int | None]:
        """Warmup: ``(batch, point)`` for a step that starts with ``samples`` seen — the last
        point at or below ``samples`` (``base`` before the first; ``point`` its index, None
        then), never above ``n_train`` (nor ``max_batch_size``)."""
        batch, index = base, None
        for i, (at, size) in enumerate(self.points):
            if at > samples:
                break
            batch, index = size, i
        if self.max_batch_size is not None:
            batch = min(batch, self.max_batch_size)
        return min(batch, n_train), index

    def next_warmup_point(self, samples: int) -> int | None:
        """Warmup: the samples count of the first point above ``samples`` (None: none left)."""
        for at, _ in self.points:
            if at > samples:
                return at
        return None

    def batch_size_at(self, epoch: int, base: int, n_train: int) -> int:
        """The batch size for 0-based ``epoch``, from ``base`` rows, never above ``n_train``.

        Adaptive: the starting size, whatever the epoch (later sizes come from ``adapt``).
        """
        _check_epoch(epoch)
        if not is_int(base) or base < 1:
            raise CoreConfigError("batch_size", f"must be an integer ≥ 1, not {base!r}")
        if not is_int(n_train) or n_train < 1:
            raise CoreConfigError("n_train", f"must be an integer ≥ 1, not {n_train!r}")
        size = base
        if self.kind == "grow":
            growths = epoch // self.every_epochs
            # stop multiplying once past the bounds: the exponent may be large
            limit = n_train if self.max_batch_size is None else min(n_train, self.max_batch_size)
            while growths > 0 and size < limit:
                size *= self.factor
                growths -= 1
        elif self.kind == "adaptive" and self.min_batch_size is not None:
            size = max(size, self.min_batch_size)
        if self.max_batch_size is not None:
            size = min(size, self.max_batch_size)
        return min(size, n_train)

    def adapt(
        self,
        batch_size: int,
        noise_scale: float | None,
        n_train: int,
        *,
        epoch: int,
        lower_bound: bool = False,
    ) -> BatchSizeChange:
        """Adaptive: the batch size after 1-based ``epoch`` ran at ``batch_size`` and measured
        ``noise_scale`` (B̂, the corrected B_simple; None when nothing was measured;
        ``lower_bound``: B̂ is only a lower bound, see the class docstring). The rule is in the
        class docstring; ``reason`` says in words what moved it, or what held it."""
        if self.kind != "adaptive":
            raise CoreConfigError("kind", f"only the adaptive schedule adapts, not {self.kind}")
        if epoch % self.every_epochs:
            return BatchSizeChange(
                batch_size, f"kept {batch_size}: changes every {self.every_epochs} epochs"
            )
        where = f"measured after epoch {epoch}"
        if noise_scale is None or not math.isfinite(noise_scale) or noise_scale <= 0.0:
            return BatchSizeChange(
                batch_size, f"kept {batch_size}: the noise scale {where} was not resolved"
            )
        seen = f"the noise scale B̂ ≈ {noise_scale:.4g} {where}"
        if lower_bound:
            seen = (
                f"the noise scale {where}, B̂ ≳ {noise_scale:.4g} (the mean gradient was "
                "within the sample's noise)"
            )
        wanted = math.floor(noise_scale + 0.5)
        if wanted <= batch_size:
            return BatchSizeChange(
                batch_size, f"kept {batch_size}: {seen} is not above it (never shrinks)"
            )
        caps = [
            (math.floor(self.max_growth * batch_size), f"the ×{self.max_growth:g} cap per change"),
            (n_train, f"the {n_train} training rows"),
        ]
        if self.max_batch_size is not None:
            caps.append((self.max_batch_size, f"max_batch_size {self.max_batch_size}"))
        new_size, why = wanted, ""
        for cap, name in caps:
            if cap < new_size:
                new_size, why = cap, f", held by {name}"
        if new_size <= batch_size:
            return BatchSizeChange(batch_size, f"kept {batch_size} ({seen}){why}")
        return BatchSizeChange(new_size, f"grew {batch_size} → {new_size} toward {seen}{why}")


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
    if not is_int(batch_size) or batch_size < 1:
        raise CoreConfigError("batch_size", f"must be an integer ≥ 1, not {batch_size!r}")
    if not is_int(reference_batch_size) or reference_batch_size < 1:
        raise CoreConfigError(
            "reference_batch_size", f"must be an integer ≥ 1, not {reference_batch_size!r}"
        )
    if rule == "linear":
        return float(base_lr * batch_size / reference_batch_size)
    if rule == "sqrt":
        return float(base_lr * math.sqrt(batch_size / reference_batch_size))
    return float(base_lr)


def log_spaced_steps(per_decade: int, after: int, until: int) -> list[int]:
    """The evaluation schedule's steps s with ``after`` < s ≤ ``until``, ascending.

    The schedule is {round(10^(k / per_decade)) : k = 0, 1, 2, …} (round half up, duplicates
    once): ``per_decade`` steps per decade of global steps once they are distinct (1, 2, 3, 4,
    6, 7, 10, 13, 18, 24, 32, … for 8). A pure function of the step, so a resumed run
    evaluates where an uninterrupted one does. Step 0 and the epoch ends are added by the
    training loop.
    """
    if not is_int(per_decade) or per_decade < 1:
        raise CoreConfigError("per_decade", f"must be an integer ≥ 1, not {per_decade!r}")
    out: list[int] = []
    if until <= after or until < 1:
        return out
    # Start a little below the first k that can pass ``after``; round() only moves by ½.
    k = max(0, math.floor(per_decade * math.log10(max(after, 1))) - 2)
    while True:
        step = math.floor(10.0 ** (k / per_decade) + 0.5)
        if step > until:
            return out
        if step > after and (not out or step != out[-1]):
            out.append(step)
        k += 1
