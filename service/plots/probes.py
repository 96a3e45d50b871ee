"""A probe's plot: the critical batch measured at each checkpoint, with its bracket, beside
B_simple measured there, against the samples seen, log–log.

A bracket [largest batch that kept up, smallest that fell behind] is drawn as a vertical bar
from the one to the other at that checkpoint's samples, the critical batch (its lower end) as a
filled marker; an open-ended bracket (every multiplier kept up) as an upward arrow from it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from service.plots.render import PlotFormat, figure_bytes, new_figure

__all__ = ["CriticalPoint", "render_probe_critical"]


@dataclass(frozen=True)
class CriticalPoint:
    """One checkpoint: ``samples`` seen there; ``critical`` (None: not measured yet) and
    ``above`` (None: open-ended) its bracket; ``b_simple`` (None: not measured)."""

    samples: float
    critical: float | None
    above: float | None
    b_simple: float | None


def render_probe_critical(
    points: Sequence[CriticalPoint],
    *,
    fmt: PlotFormat,
    title: str = "Critical batch over training",
    note: str | None = None,
) -> bytes:
    """The critical batch (markers, brackets as bars, open-ended ones as arrows) and B_simple
    (a line of open squares) against samples seen, both axes logarithmic.

    SVG group ids: ``critical``, ``brackets``, ``open_ended``, ``b_simple``.
    """
    usable = [p for p in points if p.samples > 0]
    if not usable:
        raise ValueError("no checkpoint with samples seen to plot")
    figure = new_figure(4.8)
    ax = figure.subplots()
    measured = [p for p in usable if p.critical is not None and p.critical > 0]
    if measured:
        x = np.array([p.samples for p in measured], dtype=np.float64)
        y = np.array([p.critical for p in measured], dtype=np.float64)
        (line,) = ax.plot(
            x, y, marker="o", color="tab:blue", linewidth=1.4, label="critical batch (kept up)"
        )
        line.set_gid("critical")
        closed = [
            (p.samples, p.critical, p.above)
            for p in measured
            if p.critical is not None and p.above is not None
        ]
        if closed:
            bars = ax.vlines(
                [samples for samples, _, _ in closed],
                [low for _, low, _ in closed],
                [high for _, _, high in closed],
                color="tab:blue",
                alpha=0.45,
                linewidth=4.0,
                label="bracket (up to the first that fell behind)",
            )
            bars.set_gid("brackets")
        open_ = [(p.samples, p.critical) for p in measured if p.critical and p.above is None]
        if open_:
            (arrows,) = ax.plot(
                [samples for samples, _ in open_],
                [low * 1.6 for _, low in open_],
                linestyle="none",
                marker="^",
                color="tab:blue",
                label="every multiplier kept up (at least)",
            )
            arrows.set_gid("open_ended")
    noise = [p for p in usable if p.b_simple is not None and p.b_simple > 0]
    if noise:
        (b_line,) = ax.plot(
            [p.samples for p in noise],
            [p.b_simple or 0.0 for p in noise],
            marker="s",
            markerfacecolor="none",
            color="tab:red",
            linestyle="--",
            linewidth=1.2,
            label="B_simple (noise scale)",
        )
        b_line.set_gid("b_simple")
    if not measured and not noise:
        ax.set_ylim(1.0, 10.0)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("training samples seen (log scale)")
    ax.set_ylabel("batch size (log scale)")
    ax.grid(alpha=0.3)
    if measured or noise:
        ax.legend(loc="upper left", fontsize="small")
    ax.set_title(title if note is None else f"{title}\n{note}")
    return figure_bytes(figure, fmt)
