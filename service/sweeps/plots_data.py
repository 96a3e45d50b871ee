"""A sweep's plots as plain data: what ``service.plots`` draws, built from the sweep's jobs.

Both plots show, for each batch size, its runs at its chosen learning rate (one per seed; the
other rates a search tried are left out, as in ``GET /v1/sweeps/{id}``'s points), and only the
runs that have finished at least one epoch.

- curves: each run's loss on ``target_on`` at its evaluations (step 0, the initial loss, then
  every epoch end), on every x axis at once (epoch, optimizer step, samples seen, wall time),
  and the target loss.
- scaling: each run's steps and samples to the target (None: not reached, or not yet), and
  the fit S(B) = S_min (1 + B_noise/B) of ``GET /v1/sweeps/{id}``. The fit exposes bootstrap
  intervals of its parameters, not pointwise percentiles of S(B), so the band is S(B) over
  B_noise's interval [low, high] with S_min held — drawn only when both ends are bounded.

A sweep with no epoch recorded yet has nothing to draw: :class:`Conflict` (409).
"""

from __future__ import annotations

import math
import textwrap
from dataclasses import dataclass

from sqlalchemy.orm import Session

from service.db.tables import Sweep
from service.errors import Conflict
from service.plots import ScalingFit, ScalingPoint, SweepCurve
from service.science import CriticalBatchFit
from service.sweeps.analysis import analyse_sweep, critical_fit
from service.sweeps.runs import best_rate

__all__ = ["CurvesPlotData", "ScalingPlotData", "curves_data", "scaling_data"]

#: Characters per line of the note under the scaling plot's title (the figure is 800 px wide).
NOTE_WIDTH = 80


@dataclass(frozen=True)
class CurvesPlotData:
    """The arguments of :func:`service.plots.render_sweep_curves` but ``x`` and ``fmt``."""

    curves: list[SweepCurve]
    target: float | None
    title: str
    loss_label: str


@dataclass(frozen=True)
class ScalingPlotData:
    """The arguments of :func:`service.plots.render_sweep_scaling` but ``fmt``."""

    points: list[ScalingPoint]
    fit: ScalingFit | None
    title: str
    note: str | None


def _label(sweep: Sweep) -> str:
    name = sweep.name or sweep.id[:8]
    return f"sweep {name}" + (" (partial: still running)" if sweep.status == "running" else "")


def _no_epochs(sweep: Sweep) -> Conflict:
    return Conflict(
        f"Sweep {sweep.id!r} has no epochs recorded yet ({sweep.status}): its plots exist once "
        "a point has finished its first epoch."
    )


def curves_data(session: Session, sweep_id: str, *, tenant: str) -> CurvesPlotData:
    """Every chosen-rate run's loss curve with at least one epoch, and the target loss;
    :class:`NotFound` (404) for an unknown sweep (or another tenant's), :class:`Conflict` (409)
    before any epoch."""
    sweep, analysis = analyse_sweep(session, sweep_id, tenant=tenant)
    curves: list[SweepCurve] = []
    for batch_size, by_rate in sorted(analysis.grid.items()):
        for run in sorted(by_rate[best_rate(by_rate)], key=lambda run: run.seed):
            if len(run.evaluations) < 2:  # step 0 alone: no epoch has finished
                continue
            evaluations = run.evaluations
            curves.append(
                SweepCurve(
                    batch_size=batch_size,
                    # no finite loss at an evaluation (stored as NaN): a gap in the curve
                    loss=[e.loss if math.isfinite(e.loss) else None for e in evaluations],
                    x={
                        "epoch": [e.epoch for e in evaluations],
                        "step": [float(e.step) for e in evaluations],
                        "samples": [float(e.samples) for e in evaluations],
                        "time": [e.wall_time_s for e in evaluations],
                    },
                    seed=run.seed,
                )
            )
    if not curves:
        raise _no_epochs(sweep)
    on = analysis.target.on
    return CurvesPlotData(
        curves=curves,
        target=analysis.target.loss,
        title=f"{on.capitalize()} loss by batch size, {_label(sweep)}",
        loss_label=f"{on} loss",
    )


def _scaling_fit(fit: CriticalBatchFit) -> tuple[ScalingFit | None, str | None]:
    """The fit as the plot takes it, and a note when there is no fit or no band."""
    if fit.s_min is None or fit.b_noise is None:
        return None, f"no fit: {fit.reason}"
    interval = fit.b_noise_ci
    if interval is not None and interval.low is not None and interval.high is not None:
        band = ScalingFit(fit.s_min, fit.b_noise, interval.low, interval.high, fit.confidence)
        return band, None
    if interval is None:
        note = "no band: no bootstrap interval"
    else:
        side = (
            "both ways"
            if interval.low is None and interval.high is None
            else ("below" if interval.low is None else "above")
        )
        note = f"no band: B_noise's {fit.confidence:.0%} interval is unbounded {side}"
    return ScalingFit(fit.s_min, fit.b_noise, ci_level=fit.confidence), note


def scaling_data(session: Session, sweep_id: str, *, tenant: str) -> ScalingPlotData:
    """Steps and samples to target of every chosen-rate run with at least one epoch, and the
    sweep's fit; :class:`NotFound` (404) for an unknown sweep (or another tenant's),
    :class:`Conflict` (409) before any epoch."""
    sweep, analysis = analyse_sweep(session, sweep_id, tenant=tenant)
    points: list[ScalingPoint] = []
    for batch_size, by_rate in sorted(analysis.grid.items()):
        for run in sorted(by_rate[best_rate(by_rate)], key=lambda run: run.seed):
            if len(run.evaluations) < 2:
                continue
            crossing = run.crossing
            points.append(
                ScalingPoint(
                    batch_size=batch_size,
                    steps_to_target=None if crossing is None else crossing.steps,
                    samples_to_target=None if crossing is None else crossing.samples,
                )
            )
    if not points:
        raise _no_epochs(sweep)
    science = critical_fit(analysis)
    fit, note = (None, None) if science is None else _scaling_fit(science[1])
    if note is not None:  # printed under the title, which matplotlib does not wrap
        note = textwrap.fill(note, NOTE_WIDTH)
    target = analysis.target
    reached = "" if target.loss is None else f" {target.loss:.4g}"
    return ScalingPlotData(
        points=points,
        fit=fit,
        title=f"Steps and samples to the {target.on} target{reached}, {_label(sweep)}",
        note=note,
    )
