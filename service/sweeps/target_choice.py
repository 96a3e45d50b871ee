"""A sweep's target loss: as asked (absolute, or a fraction of the gap closed), or ``auto``,
the deepest of the ladder the data supports; and how to ask for a deeper one.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from service.science import (
    MIN_POINTS,
    MIN_S_MIN,
    SweepDataError,
    SweepPoint,
    TargetOn,
    deeper_target_advice,
    fit_critical_batch,
)
from service.science import sweep_target as fraction_target
from service.sweeps.read_schemas import TargetCandidateRead, TargetRead
from service.sweeps.runs import Run, grid_of, mean_finite, sweep_points, tuned_points
from service.sweeps.schemas import TARGET_LADDER

__all__ = ["QUICK_FIT_SEED", "choose_target", "deeper_target"]

#: The seed of the quick fits that judge a candidate target (no bootstrap: the seed is unused).
QUICK_FIT_SEED = 0


def _quick_s_min(points: Sequence[SweepPoint]) -> float | None:
    fitted = fit_critical_batch(points, rng=np.random.default_rng(QUICK_FIT_SEED), n_resamples=0)
    return fitted.s_min


def _absolute_target(spec: Mapping[str, Any]) -> TargetRead:
    on: TargetOn = spec["target_on"]
    absolute = float(spec["target_loss"])
    return TargetRead(
        loss=absolute,
        on=on,
        method="absolute",
        fraction=None,
        initial_loss=None,
        best_loss=None,
        description=f"the absolute {on} loss {absolute:.6g}, as asked",
    )


def choose_target(
    spec: Mapping[str, Any], runs: Sequence[Run], lr_method: str
) -> tuple[TargetRead, list[Run]]:
    """The sweep's target and the runs with their crossings of it.

    ``target_loss``: as given. ``target_fraction`` f: L0 − f (L0 − L_best). ``auto``: the
    deepest f of :data:`TARGET_LADDER` that every tuned batch size reaches with every seed and
    a quick fit's S_min ≥ :data:`MIN_S_MIN` steps; failing that, the deepest every tuned batch
    size reaches (the fit then says what is wrong); failing that, the shallowest.
    """
    on: TargetOn = spec["target_on"]
    if spec.get("target_loss") is not None:
        target = _absolute_target(spec)
        return target, [run.at_target(target.loss) for run in runs]
    asked = spec.get("target_fraction")
    auto = asked in (None, "auto")
    # L_best from runs that did not fail: a target set by a run that then blew up is not one
    # the sweep can stand behind.
    usable = [run.evaluations for run in runs if run.evaluations and not run.failed]
    usable = [run for run in usable if math.isfinite(run[0].loss)]
    initial = mean_finite(run[0].loss for run in usable)
    best = min((e.loss for run in usable for e in run[1:] if math.isfinite(e.loss)), default=None)
    how = (
        f"the {on} loss closing {'f' if auto else f'{asked:g}'} of the gap between the initial "
        f"loss (the {on} loss "
        f"evaluated at step 0, the initial parameters, mean over {len(usable)} runs) and the "
        f"best {on} loss any run that did not fail reached: L0 − f (L0 − L_best)"
    )
    fractions = TARGET_LADDER if auto else (float(asked or 0.0),)
    loss: float | None = None
    fraction: float | None = fractions[0]
    candidates: list[TargetCandidateRead] = []
    chosen_runs = [run.at_target(None) for run in runs]
    if not usable:
        how += "; not derivable until a run that did not fail has finished an epoch"
    else:
        try:
            losses = [fraction_target(usable, f) for f in fractions]
        except SweepDataError as exc:
            how += f"; not derivable yet: {exc.message}"
        else:
            if auto:
                fraction, loss, chosen_runs, candidates = _deepest(
                    fractions, losses, runs, lr_method
                )
                how += _auto_reason(candidates)
            else:
                fraction, loss = fractions[0], losses[0]
                chosen_runs = [run.at_target(loss) for run in runs]
    return TargetRead(
        loss=loss,
        on=on,
        method="auto" if auto else "fraction",
        fraction=fraction,
        initial_loss=initial,
        best_loss=best,
        description=how,
        candidates=candidates,
    ), chosen_runs


def _deepest(
    fractions: Sequence[float],
    losses: Sequence[float],
    runs: Sequence[Run],
    lr_method: str,
) -> tuple[float, float, list[Run], list[TargetCandidateRead]]:
    """(fraction, loss, runs at it, candidates) of the ``auto`` target chosen among
    ``fractions``, shallowest first: see :func:`choose_target`."""
    candidates: list[TargetCandidateRead] = []
    tried: list[tuple[float, float, list[Run], bool]] = []
    chosen: int | None = None
    # The batch sizes tuned at the shallowest target must stay tuned and reach a deeper one:
    # a batch size whose every rate misses a deep target would otherwise fall to an edge of
    # its rates and out of the check, instead of ruling that target out.
    shallowest = grid_of([run.at_target(losses[0]) for run in runs])
    tuned_sizes = {batch_size for batch_size, _ in tuned_points(shallowest, lr_method)}
    for index in reversed(range(len(fractions))):
        at = [run.at_target(losses[index]) for run in runs]
        tuned = [t for t in tuned_points(grid_of(at), lr_method) if t[0] in tuned_sizes]
        reached = (
            len(tuned_sizes) >= MIN_POINTS
            and len(tuned) == len(tuned_sizes)
            and all(all(run.crossing is not None for run in point_runs) for _, point_runs in tuned)
        )
        s_min = _quick_s_min(sweep_points(tuned)) if reached else None
        tried.append((fractions[index], losses[index], at, reached))
        candidates.append(
            TargetCandidateRead(
                fraction=fractions[index],
                loss=losses[index],
                reached_by_all=reached,
                s_min=s_min,
                chosen=False,
            )
        )
        if reached and s_min is not None and s_min >= MIN_S_MIN:
            chosen = len(tried) - 1
            break
    if chosen is None:  # the deepest every tuned point reached, else the shallowest
        chosen = next((i for i, t in enumerate(tried) if t[3]), len(tried) - 1)
    candidates[chosen] = candidates[chosen].model_copy(update={"chosen": True})
    fraction, loss, at, _ = tried[chosen]
    return fraction, loss, at, candidates


def _auto_reason(candidates: Sequence[TargetCandidateRead]) -> str:
    chosen = next(c for c in candidates if c.chosen)
    deeper = [c for c in candidates if c.fraction > chosen.fraction]
    why = ""
    if deeper:
        shallowest_deeper = min(deeper, key=lambda c: c.fraction)
        why = (
            f" ({shallowest_deeper.fraction:g} was not reached by every tuned batch size with "
            "every seed)"
            if not shallowest_deeper.reached_by_all
            else f" (at {shallowest_deeper.fraction:g} the quick fit's S_min was "
            f"{_fmt_opt(shallowest_deeper.s_min)})"
        )
    if chosen.reached_by_all and chosen.s_min is not None and chosen.s_min >= MIN_S_MIN:
        return (
            f"; auto chose f = {chosen.fraction:g}, the deepest of the ladder that every tuned "
            f"batch size reached with S_min ≥ {MIN_S_MIN:g} steps{why}"
        )
    if chosen.reached_by_all:
        return (
            f"; auto chose f = {chosen.fraction:g}, the deepest every tuned batch size reached, "
            f"though no target of the ladder gave S_min ≥ {MIN_S_MIN:g} steps"
        )
    return (
        f"; auto fell back to f = {chosen.fraction:g}: no target of the ladder was reached by "
        f"every tuned batch size (at least {MIN_POINTS} needed)"
    )


def _fmt_opt(value: float | None) -> str:
    return "not measurable" if value is None else f"{value:.3g} steps"


def deeper_target(target: TargetRead) -> str:
    """How to ask for a deeper target than ``target``, for a fit refused as too shallow."""
    if target.method != "auto" or target.fraction is None:
        return deeper_target_advice(
            target_fraction=target.fraction if target.method == "fraction" else None,
            target_loss=target.loss if target.method == "absolute" else None,
        )
    deeper = [f for f in TARGET_LADDER if f > target.fraction]
    if not deeper:
        return "an absolute target_loss nearer the best loss reached"
    return (
        f"more epochs, so that every batch size reaches target_fraction {deeper[0]:g} (auto "
        f"chose {target.fraction:g}, the deepest every batch size reached)"
    )
