"""Steps, samples, epochs and wall time to a target loss, interpolated between evaluations.

A sweep point evaluates the target loss on a log-spaced step schedule plus every epoch end, so
the evaluations are sparse late in a run (steps 1000, 1778, 3162, …). Rounding the crossing up
to the next evaluation would bias steps to target by up to the schedule's ratio; instead the
first crossing is interpolated between the two evaluations that bracket it.

Interpolation is linear in step and in log-loss (``interpolation="log"``, the default): between
evaluations (s₀, L₀ > T) and (s₁, L₁ ≤ T),

    t = (ln L₀ − ln T) / (ln L₀ − ln L₁),    step = s₀ + t (s₁ − s₀)

and samples, epochs and wall time take the same fraction t of their own gaps (exact while the
batch size and the throughput are constant between the two evaluations). Log-loss because the
loss of a converging run falls roughly geometrically in steps, which is a straight line in
log-loss and a convex curve in loss — linear-in-loss interpolation would put the crossing late;
it also does not depend on the loss's units. ``interpolation="linear"`` interpolates the loss
itself; the log form falls back to it for a bracket with a loss ≤ 0 (no logarithm there).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "Evaluation",
    "SweepDataError",
    "TargetCrossing",
    "TargetOn",
    "steps_to_target",
    "sweep_target",
    "target_from_fraction",
]

Interpolation = Literal["log", "linear"]
#: The loss a target is set on: the training loss or the validation loss.
TargetOn = Literal["train", "validation"]


class SweepDataError(ValueError):
    """Sweep data the maths cannot use; ``field`` names it. ``str(e) == f"{field}: {message}"``."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True)
class Evaluation:
    """The target loss evaluated after ``step`` optimizer steps (step 0: the initial parameters).

    ``samples``: training examples consumed so far; ``epoch``: fractional epochs so far
    (samples / samples per epoch); ``wall_time_s``: training wall time so far.
    """

    step: int
    samples: int
    epoch: float
    wall_time_s: float
    loss: float


@dataclass(frozen=True)
class TargetCrossing:
    """Where a run first reached the target loss, interpolated (so fractional)."""

    steps: float
    samples: float
    epochs: float
    wall_time_s: float


def _check_target(target_loss: float) -> None:
    if not math.isfinite(target_loss):
        raise SweepDataError("target_loss", f"must be a finite number, not {target_loss!r}")


def _fraction_across(
    loss_before: float, loss_after: float, target: float, interpolation: Interpolation
) -> float:
    """t ∈ (0, 1] where the line from loss_before (> target) to loss_after (≤ target) crosses."""
    if interpolation == "log" and loss_after > 0.0 and target > 0.0:
        log_before, log_after = math.log(loss_before), math.log(loss_after)
        t = (log_before - math.log(target)) / (log_before - log_after)
    else:
        t = (loss_before - target) / (loss_before - loss_after)
    return min(max(t, 0.0), 1.0)  # rounding only: the bracket guarantees t ∈ (0, 1]


def steps_to_target(
    evaluations: Sequence[Evaluation],
    target_loss: float,
    *,
    interpolation: Interpolation = "log",
) -> TargetCrossing | None:
    """The first crossing of ``target_loss`` (loss ≤ target), or None when never reached.

    ``evaluations`` in strictly increasing step order. A non-finite loss never counts as
    reaching the target, and a crossing right after one is placed at the evaluation itself
    (no line to interpolate along). An evaluation already at or below the target gives its
    own values (e.g. step 0 when the target is above the initial loss).
    """
    _check_target(target_loss)
    if interpolation not in ("log", "linear"):
        raise SweepDataError("interpolation", f"must be 'log' or 'linear', not {interpolation!r}")
    for before, after in itertools.pairwise(evaluations):
        if after.step <= before.step:
            raise SweepDataError(
                "evaluations",
                f"steps must increase strictly, but step {after.step} follows {before.step}",
            )
    previous: Evaluation | None = None
    for evaluation in evaluations:
        if math.isfinite(evaluation.loss) and evaluation.loss <= target_loss:
            if previous is None or not math.isfinite(previous.loss):
                return TargetCrossing(
                    float(evaluation.step),
                    float(evaluation.samples),
                    float(evaluation.epoch),
                    float(evaluation.wall_time_s),
                )
            t = _fraction_across(previous.loss, evaluation.loss, target_loss, interpolation)
            return TargetCrossing(
                previous.step + t * (evaluation.step - previous.step),
                previous.samples + t * (evaluation.samples - previous.samples),
                previous.epoch + t * (evaluation.epoch - previous.epoch),
                previous.wall_time_s + t * (evaluation.wall_time_s - previous.wall_time_s),
            )
        previous = evaluation
    return None


def target_from_fraction(initial_loss: float, best_loss: float, fraction: float) -> float:
    """T = L₀ − f (L₀ − L_best): the loss that closes ``fraction`` f of the gap between the
    initial loss L₀ and the best loss L_best; 0 < f < 1 and L_best < L₀."""
    if not (math.isfinite(fraction) and 0.0 < fraction < 1.0):
        raise SweepDataError(
            "target_fraction",
            f"must lie strictly between 0 and 1 (1 is reached by the best run alone), "
            f"not {fraction!r}",
        )
    for field, value in (("initial_loss", initial_loss), ("best_loss", best_loss)):
        if not math.isfinite(value):
            raise SweepDataError(field, f"must be a finite number, not {value!r}")
    if best_loss >= initial_loss:
        raise SweepDataError(
            "best_loss",
            f"no run got below the initial loss {initial_loss:.6g} (best {best_loss:.6g}): "
            "there is no gap to close",
        )
    return initial_loss - fraction * (initial_loss - best_loss)


def sweep_target(runs: Sequence[Sequence[Evaluation]], fraction: float) -> float:
    """The target for a sweep from every run's evaluations (one sequence per point and seed).

    The initial loss L₀ is the loss at step 0 — the same for every run that shares a seed,
    since the seed alone sets the initial parameters — averaged over the runs (so over the
    seeds); L_best is the lowest finite loss any run reached at any evaluation.
    """
    if not runs:
        raise SweepDataError("runs", "needs at least one run")
    initial: list[float] = []
    best = math.inf
    for index, run in enumerate(runs):
        if not run or run[0].step != 0:
            raise SweepDataError(
                f"runs[{index}]", "needs an evaluation at step 0 (the initial loss)"
            )
        if not math.isfinite(run[0].loss):
            raise SweepDataError(f"runs[{index}]", "the loss at step 0 is not finite")
        initial.append(run[0].loss)
        best = min([best, *(e.loss for e in run if math.isfinite(e.loss))])
    return target_from_fraction(math.fsum(initial) / len(initial), best, fraction)
