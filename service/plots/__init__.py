"""Plots as bytes: a job's loss curves, a sweep's overlaid curves and its scaling fit.

Pure functions from plain data (dataclasses of sequences) to SVG or PNG bytes, drawn with
matplotlib's object API and its Agg/SVG canvases (never ``pyplot``), so they are safe to call
from the API's thread pool; the same data always gives the same bytes. Nothing here knows
about the database or the web: the API turns a job's history into a :class:`LossHistory`.

Modules: ``render`` (formats, figure, bytes), ``loss`` (a job's loss), ``sweeps`` (a sweep's
curves and scaling), ``probes`` (a probe's critical batch).
"""

from service.plots.loss import (
    LOSS_PLOT_MAX_STEPS,
    LossHistory,
    epoch_positions,
    render_job_loss,
    steps_per_epoch,
)
from service.plots.probes import CriticalPoint, render_probe_critical
from service.plots.render import MEDIA_TYPES, PLOT_FORMATS, PlotFormat
from service.plots.sweeps import (
    CURVE_AXES,
    CurveAxis,
    ScalingFit,
    ScalingPoint,
    SweepCurve,
    render_sweep_curves,
    render_sweep_scaling,
)

__all__ = [
    "CURVE_AXES",
    "LOSS_PLOT_MAX_STEPS",
    "MEDIA_TYPES",
    "PLOT_FORMATS",
    "CriticalPoint",
    "CurveAxis",
    "LossHistory",
    "PlotFormat",
    "ScalingFit",
    "ScalingPoint",
    "SweepCurve",
    "epoch_positions",
    "render_job_loss",
    "render_probe_critical",
    "render_sweep_curves",
    "render_sweep_scaling",
    "steps_per_epoch",
]
