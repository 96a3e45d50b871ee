"""A job's loss plot: train and validation loss per epoch, the step losses faintly behind.

Everything is on one epoch axis: epoch e's mean losses sit at x = e (the end of the epoch),
and step k of the steps_e steps of epoch e at x = e − 1 + k / steps_e, so the step losses of
an epoch fill the interval (e − 1, e] whatever the batch size in force.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from service.plots.render import (
    PlotFormat,
    figure_bytes,
    load_matplotlib,
    new_figure,
    spans_decades,
)

#: Step losses kept for the plot: ~1.5 points per pixel column at 800 px is more than enough,
#: and the min/max downsampling keeps every spike (pass it as the history's ``max_points``).
LOSS_PLOT_MAX_STEPS = 1200

TRAIN_COLOR, VAL_COLOR = "tab:blue", "tab:orange"


@dataclass(frozen=True)
class LossHistory:
    """A job's losses as plain sequences.

    ``epoch``, ``train_loss``, ``val_loss``, ``steps_per_epoch``: (n_epochs,), epochs
    numbered from 1; ``None`` where a loss does not exist (no validation split) or was not
    finite. ``step``, ``step_loss``: (n_steps,), global step numbers from 1 (possibly a
    downsampled subset, ``steps_downsampled``) and the minibatch loss at each.
    """

    epoch: Sequence[int]
    train_loss: Sequence[float | None]
    val_loss: Sequence[float | None]
    steps_per_epoch: Sequence[int]
    step: Sequence[int] = ()
    step_loss: Sequence[float] = ()
    steps_downsampled: bool = False
    title: str = "Training loss"

    def __post_init__(self) -> None:
        n = len(self.epoch)
        if n == 0:
            raise ValueError("no epochs to plot: a loss plot needs at least one epoch")
        for name in ("train_loss", "val_loss", "steps_per_epoch"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"{name} has {len(getattr(self, name))} values, epoch has {n}")
        if len(self.step) != len(self.step_loss):
            raise ValueError(
                f"step has {len(self.step)} values, step_loss has {len(self.step_loss)}"
            )
        if any(count < 0 for count in self.steps_per_epoch):
            raise ValueError("steps_per_epoch must not be negative")


def steps_per_epoch(
    samples_seen: Sequence[int], batch_size: Sequence[int], total_steps: int
) -> list[int]:
    """Steps of each epoch from the cumulative samples seen (n_epochs,) and the batch size in
    force: steps_e = ⌈(samples_e − samples_{e−1}) / B_e⌉ (a last partial batch is one step).

    When these do not add up to ``total_steps`` (the steps stored), the steps are spread
    evenly instead (the last epoch takes the remainder), so every stored step still lands in
    some epoch.
    """
    if len(samples_seen) != len(batch_size):
        raise ValueError(
            f"samples_seen has {len(samples_seen)} values, batch_size has {len(batch_size)}"
        )
    counts: list[int] = []
    previous = 0
    for seen, size in zip(samples_seen, batch_size, strict=True):
        counts.append(math.ceil((seen - previous) / size) if size > 0 else -1)
        previous = seen
    if counts and all(c >= 0 for c in counts) and sum(counts) == total_steps:
        return counts
    n = len(samples_seen)
    if n == 0:
        return []
    even = [total_steps // n] * n
    even[-1] += total_steps - sum(even)
    return even


def epoch_positions(
    step: Sequence[int] | np.ndarray,
    epoch: Sequence[int] | np.ndarray,
    steps_per_epoch: Sequence[int] | np.ndarray,
) -> np.ndarray:
    """x positions (n_steps,) on the epoch axis of global steps ``step`` (n_steps,):
    x = epoch_e − 1 + k / steps_e for step k (from 1) of epoch e; NaN for a step outside the
    epochs given (below 1 or past the last epoch's steps)."""
    step_arr = np.asarray(step, dtype=np.int64)
    epoch_arr = np.asarray(epoch, dtype=np.float64)
    counts = np.asarray(steps_per_epoch, dtype=np.int64)
    if counts.shape[0] == 0:
        return np.full(step_arr.shape, np.nan)
    ends = np.cumsum(counts)
    # First epoch whose last step is at or after the step: epochs with no steps are skipped.
    index = np.searchsorted(ends, step_arr, side="left")
    inside = (step_arr >= 1) & (index < ends.shape[0])
    safe = np.minimum(index, ends.shape[0] - 1)
    starts = ends - counts
    within = step_arr - starts[safe]
    x = epoch_arr[safe] - 1.0 + within / np.maximum(counts[safe], 1)
    return np.where(inside, x, np.nan)


def _values(losses: Sequence[float | None]) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in losses], dtype=np.float64)


def render_job_loss(history: LossHistory, fmt: PlotFormat) -> bytes:
    """The loss plot of ``history`` as SVG or PNG bytes (same history, same bytes).

    Series (SVG group ids): ``step_loss`` (faint, behind), ``train_loss``, ``val_loss`` (only
    when some validation loss exists). The y axis is logarithmic when the positive losses
    span more than two decades.
    """
    load_matplotlib()
    from matplotlib.ticker import MaxNLocator

    epoch = np.asarray(history.epoch, dtype=np.float64)
    train = _values(history.train_loss)
    val = _values(history.val_loss)
    step_x = epoch_positions(history.step, history.epoch, history.steps_per_epoch)
    step_loss = np.asarray(history.step_loss, dtype=np.float64)
    shown = np.isfinite(step_x) & np.isfinite(step_loss)
    step_x, step_loss = step_x[shown], step_loss[shown]

    figure = new_figure(5.0)
    ax = figure.add_subplot()
    if step_loss.shape[0]:
        label = "train loss per step" + (
            " (min and max kept per bucket)" if history.steps_downsampled else ""
        )
        (steps_line,) = ax.plot(
            step_x, step_loss, color=TRAIN_COLOR, alpha=0.25, linewidth=0.7, label=label, zorder=1
        )
        steps_line.set_gid("step_loss")
    (train_line,) = ax.plot(
        epoch,
        train,
        color=TRAIN_COLOR,
        linewidth=2.0,
        marker="o",
        markersize=4,
        label="train loss (epoch mean)",
        zorder=3,
    )
    train_line.set_gid("train_loss")
    if np.isfinite(val).any():
        (val_line,) = ax.plot(
            epoch,
            val,
            color=VAL_COLOR,
            linewidth=2.0,
            marker="s",
            markersize=4,
            label="validation loss",
            zorder=4,
        )
        val_line.set_gid("val_loss")

    every_loss = [*train.tolist(), *val.tolist(), *step_loss.tolist()]
    log_y = spans_decades(v for v in every_loss if not math.isnan(v))
    if log_y:
        ax.set_yscale("log")
    ax.set_xlim(0.0, float(np.nanmax(epoch)) * 1.02 + 0.02)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss (log scale)" if log_y else "loss")
    ax.set_title(history.title)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right")
    return figure_bytes(figure, fmt)


__all__ = [
    "LOSS_PLOT_MAX_STEPS",
    "LossHistory",
    "epoch_positions",
    "render_job_loss",
    "steps_per_epoch",
]
