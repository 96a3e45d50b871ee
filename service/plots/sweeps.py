"""A sweep's plots: every point's loss curve overlaid, and steps and samples to target against
batch size with the fitted critical-batch model.

The fit drawn is McCandlish et al. (2018, §2.3): steps S(B) = S_min (1 + B_noise / B) and
samples E(B) = B·S(B) = E_min (1 + B / B_noise), with E_min = S_min·B_noise. Its band holds
S_min and varies B_noise over its confidence interval: S_min (1 + [B_low, B_high] / B).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import numpy as np

from service.plots.render import (
    PlotFormat,
    figure_bytes,
    load_matplotlib,
    new_figure,
    spans_decades,
)

if TYPE_CHECKING:
    from matplotlib.axes import Axes

CurveAxis = Literal["epoch", "step", "samples", "time"]
CURVE_AXES: tuple[CurveAxis, ...] = ("epoch", "step", "samples", "time")
AXIS_LABELS: dict[CurveAxis, str] = {
    "epoch": "epoch",
    "step": "optimizer step",
    "samples": "training samples seen",
    "time": "wall time (s)",
}
#: Batch sizes are coloured along this sequential colormap, smallest first; the palest end
#: is left out so every curve stays visible on white.
COLORMAP, COLOR_RANGE = "viridis", (0.0, 0.85)


@dataclass(frozen=True)
class SweepCurve:
    """One run of a sweep point: ``loss`` (n,) (``None`` where not finite) and its positions
    ``x[axis]`` (n,) on each axis available (``"epoch"``, ``"step"``, ``"samples"``,
    ``"time"``); ``seed`` tells repeated runs of one batch size apart."""

    batch_size: int
    loss: Sequence[float | None]
    x: Mapping[CurveAxis, Sequence[float]] = field(default_factory=dict)
    seed: int | None = None


@dataclass(frozen=True)
class ScalingPoint:
    """One run's cost to reach the target: ``None`` where it never reached it.
    ``samples_to_target`` defaults to ``batch_size × steps_to_target``."""

    batch_size: int
    steps_to_target: float | None
    samples_to_target: float | None = None

    @property
    def samples(self) -> float | None:
        if self.samples_to_target is not None:
            return self.samples_to_target
        if self.steps_to_target is None:
            return None
        return self.batch_size * self.steps_to_target


@dataclass(frozen=True)
class ScalingFit:
    """A fitted S(B) = S_min (1 + B_noise / B): ``s_min`` (steps), ``b_noise`` (samples),
    and optionally B_noise's confidence interval ``[b_noise_low, b_noise_high]`` at
    ``ci_level``."""

    s_min: float
    b_noise: float
    b_noise_low: float | None = None
    b_noise_high: float | None = None
    ci_level: float = 0.95

    def __post_init__(self) -> None:
        for name in ("s_min", "b_noise", "b_noise_low", "b_noise_high"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value > 0.0):
                raise ValueError(f"{name} must be a positive finite number, got {value!r}")
        if (self.b_noise_low is None) != (self.b_noise_high is None):
            raise ValueError("give both b_noise_low and b_noise_high, or neither")

    @property
    def e_min(self) -> float:
        """E_min = S_min · B_noise, the fewest samples to target (at B → 0)."""
        return self.s_min * self.b_noise

    def steps(self, batch_size: np.ndarray, b_noise: float | None = None) -> np.ndarray:
        """S(B) = S_min (1 + B_noise / B) at each batch size (any shape)."""
        return self.s_min * (1.0 + (self.b_noise if b_noise is None else b_noise) / batch_size)


def short_number(value: float) -> str:
    """Three significant figures, thousands separated: 1234.5 → '1,230', 0.04567 → '0.0457'."""
    rounded = float(f"{value:.3g}")
    return f"{rounded:,.0f}" if abs(rounded) >= 100 else f"{rounded:.3g}"


def batch_colors(batch_sizes: Sequence[int]) -> dict[int, tuple[float, float, float, float]]:
    """One RGBA colour per distinct batch size, evenly spaced along :data:`COLORMAP` in order
    of size (sweeps use geometric batch sizes, so rank spacing is log spacing)."""
    load_matplotlib()
    from matplotlib import colormaps

    ordered = sorted(set(batch_sizes))
    cmap = colormaps[COLORMAP]
    lo, hi = COLOR_RANGE
    n = len(ordered)
    return {
        b: cmap(lo + (hi - lo) * (i / (n - 1) if n > 1 else 0.0)) for i, b in enumerate(ordered)
    }


def render_sweep_curves(
    curves: Sequence[SweepCurve],
    *,
    x: CurveAxis = "epoch",
    target: float | None = None,
    fmt: PlotFormat,
    title: str = "Loss curves by batch size",
    loss_label: str = "loss",
) -> bytes:
    """Every curve overlaid against ``x``, one colour per batch size (legend "B = 32", once
    per batch size), the ``target`` loss as a dashed horizontal line.

    SVG group ids: ``curve_B{batch}`` for each curve (``curve_B{batch}_{i}`` for repeats,
    i from 2), ``target``. Axes other than epoch are logarithmic when their positive
    values span more than two decades (steps do, across batch sizes 8 … 4,096): points at
    x ≤ 0 are then left out. The y axis is logarithmic on the same rule.
    """
    if x not in CURVE_AXES:
        raise ValueError(f"unknown x axis {x!r}; expected one of {', '.join(CURVE_AXES)}")
    if not curves:
        raise ValueError("no curves to plot")
    columns: list[tuple[SweepCurve, np.ndarray, np.ndarray]] = []
    for curve in curves:
        if x not in curve.x:
            have = ", ".join(curve.x) or "none"
            raise ValueError(
                f"the curve of batch size {curve.batch_size} has no {x!r} axis (it has: {have})"
            )
        xs = np.asarray(curve.x[x], dtype=np.float64)
        loss = np.array([np.nan if v is None else v for v in curve.loss], dtype=np.float64)
        if xs.shape != loss.shape:
            raise ValueError(
                f"the curve of batch size {curve.batch_size} has {loss.shape[0]} losses and "
                f"{xs.shape[0]} {x!r} positions"
            )
        columns.append((curve, xs, loss))

    every_x = [float(v) for _, xs, _ in columns for v in xs if v > 0]
    log_x = x != "epoch" and spans_decades(every_x)
    every_loss = [float(v) for _, _, loss in columns for v in loss if np.isfinite(v)]
    if target is not None:
        every_loss.append(target)
    log_y = spans_decades(every_loss)

    colors = batch_colors([curve.batch_size for curve in curves])
    figure = new_figure(5.5)
    ax = figure.add_subplot()
    seen: dict[int, int] = {}
    for curve, xs, loss in sorted(columns, key=lambda column: column[0].batch_size):
        if log_x:
            keep = xs > 0
            xs, loss = xs[keep], loss[keep]
        b = curve.batch_size
        seen[b] = seen.get(b, 0) + 1
        (line,) = ax.plot(
            xs,
            loss,
            color=colors[b],
            linewidth=1.6,
            label=f"B = {b}" if seen[b] == 1 else "_nolegend_",
        )
        line.set_gid(f"curve_B{b}" if seen[b] == 1 else f"curve_B{b}_{seen[b]}")
    if target is not None:
        target_line = ax.axhline(
            target,
            color="black",
            linestyle="--",
            linewidth=1.2,
            label=f"target {short_number(target)}",
            zorder=5,
        )
        target_line.set_gid("target")
    if log_x:
        ax.set_xscale("log")
    if log_y:
        ax.set_yscale("log")
    ax.set_xlabel(AXIS_LABELS[x] + (" (log scale)" if log_x else ""))
    ax.set_ylabel(loss_label + (" (log scale)" if log_y else ""))
    ax.set_title(title)
    ax.grid(alpha=0.3)
    entries = len(colors) + (target is not None)
    ax.legend(loc="upper right", ncols=1 if entries <= 6 else 2, fontsize="small")
    return figure_bytes(figure, fmt)


def _scaling_panel(
    ax: Axes,
    *,
    batch: np.ndarray,
    cost: list[float | None],
    fit: ScalingFit | None,
    kind: Literal["steps", "samples"],
) -> None:
    reached = np.array([c is not None for c in cost], dtype=bool)
    values = np.array([np.nan if c is None else c for c in cost], dtype=np.float64)
    grid = np.geomspace(float(batch.min()) / 1.5, float(batch.max()) * 1.5, 200)
    scale = grid if kind == "samples" else np.ones_like(grid)
    if fit is not None:
        if fit.b_noise_low is not None and fit.b_noise_high is not None:
            band = ax.fill_between(
                grid,
                fit.steps(grid, fit.b_noise_low) * scale,
                fit.steps(grid, fit.b_noise_high) * scale,
                color="tab:blue",
                alpha=0.18,
                linewidth=0,
                label=f"{fit.ci_level:.0%} band (B_noise interval)",
            )
            band.set_gid(f"band_{kind}")
        (curve,) = ax.plot(
            grid,
            fit.steps(grid) * scale,
            color="tab:blue",
            linewidth=1.8,
            label="fit S = S_min(1 + B_noise/B)"
            if kind == "steps"
            else "fit E = E_min(1 + B/B_noise)",
        )
        curve.set_gid(f"fit_{kind}")
        floor, floor_name = (fit.s_min, "S_min") if kind == "steps" else (fit.e_min, "E_min")
        asymptote = ax.axhline(
            floor,
            color="tab:blue",
            linestyle=":",
            linewidth=1.0,
            label=f"{floor_name} ≈ {short_number(floor)} {kind}",
        )
        asymptote.set_gid(f"{floor_name.lower()}")
        interval = ""
        if fit.b_noise_low is not None and fit.b_noise_high is not None:
            interval = (
                f" ({fit.ci_level:.0%} CI {short_number(fit.b_noise_low)}"
                f"–{short_number(fit.b_noise_high)})"
            )
        knee = ax.axvline(
            fit.b_noise,
            color="tab:red",
            linestyle="--",
            linewidth=1.2,
            label=f"B_noise ≈ {short_number(fit.b_noise)}{interval}",
        )
        knee.set_gid(f"b_noise_{kind}")
    if reached.any():
        (points,) = ax.plot(
            batch[reached],
            values[reached],
            linestyle="none",
            marker="o",
            markersize=6,
            color="black",
            label="measured",
            zorder=5,
        )
        points.set_gid(f"points_{kind}")
    if (~reached).any():
        # x in data, y in axes coordinates: at the top edge, whatever the y range.
        (missed,) = ax.plot(
            batch[~reached],
            np.full(int((~reached).sum()), 0.96),
            linestyle="none",
            marker="o",
            markersize=7,
            markerfacecolor="none",
            markeredgecolor="tab:gray",
            transform=ax.get_xaxis_transform(),
            clip_on=False,
            label="never reached the target",
            zorder=5,
        )
        missed.set_gid(f"unreached_{kind}")
    if not reached.any() and fit is None:
        ax.set_ylim(1.0, 10.0)  # nothing positive to scale a log axis on
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_ylabel(f"{kind} to target (log scale)")
    ax.grid(alpha=0.3)
    # Steps fall and samples rise with B: those corners stay clear of the data, and of the
    # never-reached markers along the top edge at large B.
    ax.legend(loc="lower left" if kind == "steps" else "upper left", fontsize="small")


def render_sweep_scaling(
    points: Sequence[ScalingPoint],
    fit: ScalingFit | None,
    *,
    fmt: PlotFormat,
    title: str = "Steps and samples to target",
    note: str | None = None,
) -> bytes:
    """Steps (top) and samples (bottom) to target against batch size, log-log, one marker per
    run; runs that never reached the target as open markers at the top edge. With a ``fit``:
    the fitted S(B) and E(B), their band over B_noise's interval, the S_min and E_min
    asymptotes, and B_noise as a vertical line. ``note`` (e.g. why there is no fit) is
    printed under the title.

    SVG group ids, per panel (``steps``, ``samples``): ``points_*``, ``unreached_*``,
    ``fit_*``, ``band_*``, ``b_noise_*``; and ``s_min``, ``e_min``.
    """
    load_matplotlib()
    from matplotlib.ticker import FuncFormatter, LogLocator, NullLocator

    if not points:
        raise ValueError("no sweep points to plot")
    if any(p.batch_size < 1 for p in points):
        raise ValueError("batch sizes must be at least 1")
    batch = np.array([p.batch_size for p in points], dtype=np.float64)
    figure = new_figure(7.0)
    steps_ax, samples_ax = figure.subplots(2, 1, sharex=True)
    _scaling_panel(
        steps_ax, batch=batch, cost=[p.steps_to_target for p in points], fit=fit, kind="steps"
    )
    _scaling_panel(
        samples_ax, batch=batch, cost=[p.samples for p in points], fit=fit, kind="samples"
    )
    # Powers of two, written out: the batch sizes a sweep uses, readable as they are.
    samples_ax.set_xlim(float(batch.min()) / 1.5, float(batch.max()) * 1.5)
    samples_ax.xaxis.set_major_locator(LogLocator(base=2, numticks=16))
    samples_ax.xaxis.set_minor_locator(NullLocator())
    samples_ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _pos: f"{value:g}"))
    samples_ax.set_xlabel("batch size B (log scale)")
    steps_ax.set_title(title if note is None else f"{title}\n{note}")
    return figure_bytes(figure, fmt)


__all__ = [
    "AXIS_LABELS",
    "CURVE_AXES",
    "CurveAxis",
    "ScalingFit",
    "ScalingPoint",
    "SweepCurve",
    "batch_colors",
    "render_sweep_curves",
    "render_sweep_scaling",
    "short_number",
]
