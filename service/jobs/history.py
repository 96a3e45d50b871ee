"""A job's history from its stored epochs: per-epoch arrays, step losses, downsampling, CSV.

Step losses are stored per epoch as float32 little-endian bytes; they are read with
``np.frombuffer`` (no copy) and joined once. Downsampling splits the N steps into
``max_points // 2`` contiguous buckets and keeps each bucket's minimum and maximum (in step
order), so a one-step spike survives any reduction; all of it is a few vectorised passes
(``np.minimum.reduceat``), no Python loop over steps.

Nothing non-finite leaves this module: JSON cannot carry NaN or infinity, so such a value in a
record becomes ``None`` and such a step loss is dropped.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from service.core.finite import finite_or_none

STEP_DTYPE = np.dtype("<f4")

#: Per-epoch columns of the CSV export, in order (the noise scale flattened).
EPOCH_COLUMNS = (
    "epoch",
    "train_loss",
    "val_loss",
    "val_rmse",
    "val_r2",
    "val_accuracy",
    "learning_rate",
    "batch_size",
    "steps",
    "samples_seen",
    "wall_time_s",
    "samples_per_s",
    "noise_scale_b_simple",
    "noise_scale_b_simple_corrected",
    "noise_scale_loss_level",
)


@dataclass(frozen=True)
class Steps:
    """Step losses: ``step`` (n,) int64 global step numbers from 1, ``loss`` (n,) float32."""

    step: np.ndarray
    loss: np.ndarray
    total: int  # steps stored, before dropping non-finite values or downsampling

    @property
    def downsampled(self) -> bool:
        return int(self.step.shape[0]) < self.total


@dataclass(frozen=True)
class Evaluations:
    """Evaluations of a run in step order: ``step`` and ``samples`` int, ``loss`` float."""

    step: list[int]
    samples: list[int]
    loss: list[float]


def join_evaluations(records: Iterable[Mapping[str, Any]]) -> Evaluations:
    """Every epoch record's ``evaluations`` (``[{step, samples, loss}]``), joined in order.

    Kept only when finite and after the previous kept step (a record written by hand may break
    either); records without evaluations (a job run without them) add nothing."""
    out = Evaluations(step=[], samples=[], loss=[])
    for record in records:
        points = record.get("evaluations")
        if not isinstance(points, list):
            continue
        for point in points:
            if not isinstance(point, Mapping):
                continue
            step, samples = point.get("step"), point.get("samples")
            loss = finite_or_none(point.get("loss"))
            if loss is None or not isinstance(step, int) or not isinstance(samples, int):
                continue
            if out.step and step <= out.step[-1]:
                continue
            out.step.append(step)
            out.samples.append(samples)
            out.loss.append(loss)
    return out


def join_steps(blobs: Sequence[bytes], first: int = 1) -> Steps:
    """All step losses of a run, in order, from per-epoch float32 blobs, numbered from
    ``first`` (a warm start's count on from its source's); non-finite dropped."""
    parts = [np.frombuffer(blob, dtype=STEP_DTYPE) for blob in blobs]
    loss = np.concatenate(parts) if parts else np.empty(0, dtype=STEP_DTYPE)
    step = np.arange(first, first + loss.shape[0], dtype=np.int64)
    total = int(loss.shape[0])
    finite = np.isfinite(loss)
    if not finite.all():
        step, loss = step[finite], loss[finite]
    return Steps(step=step, loss=loss, total=total)


def downsample_min_max(steps: Steps, max_points: int) -> Steps:
    """At most ``max_points`` (≥ 2) points: each of ``max_points // 2`` contiguous buckets
    keeps the indices of its minimum and of its maximum (the first of ties), in step order;
    one point when they coincide. Unchanged when there are no more points than ``max_points``.
    """
    n = int(steps.loss.shape[0])
    if n <= max_points:
        return steps
    n_buckets = max_points // 2
    starts = (np.arange(n_buckets, dtype=np.int64) * n) // n_buckets
    sizes = np.diff(np.append(starts, n))
    loss = steps.loss
    index = np.arange(n, dtype=np.int64)
    # First index of each bucket's extreme: mask the positions equal to it, reduce the indices.
    lo = np.repeat(np.minimum.reduceat(loss, starts), sizes)
    hi = np.repeat(np.maximum.reduceat(loss, starts), sizes)
    argmin = np.minimum.reduceat(np.where(loss == lo, index, n), starts)
    argmax = np.minimum.reduceat(np.where(loss == hi, index, n), starts)
    first, second = np.minimum(argmin, argmax), np.maximum(argmin, argmax)
    keep = np.stack([first, second], axis=1).ravel()
    # Drop the second copy where min and max are the same point (a constant bucket).
    keep = keep[np.append(True, np.diff(keep) != 0)]
    return Steps(step=steps.step[keep], loss=loss[keep], total=steps.total)


def epochs_csv(records: Iterable[Mapping[str, Any]]) -> str:
    """The per-epoch table as CSV: a header of :data:`EPOCH_COLUMNS`, one row per epoch; an
    empty cell where a value does not apply (e.g. ``val_accuracy`` for regression)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(EPOCH_COLUMNS)
    for record in records:
        noise = record.get("noise_scale") or {}
        row = [record.get(name) for name in EPOCH_COLUMNS[:12]]
        row += [noise.get("b_simple"), noise.get("b_simple_corrected"), noise.get("loss_level")]
        writer.writerow(["" if value is None else _cell(value) for value in row])
    return buffer.getvalue()


def steps_csv(steps: Steps) -> str:
    """The step losses as CSV: ``step,loss``, one row per kept step."""
    lines = ["step,loss"]
    lines.extend(
        f"{s},{_cell(float(v))}"
        for s, v in zip(steps.step.tolist(), steps.loss.tolist(), strict=True)
    )
    return "\n".join(lines) + "\n"


def _cell(value: Any) -> str:
    # repr of a float is the shortest string that reads back to the same float.
    return repr(value) if isinstance(value, float) else str(value)


__all__ = [
    "EPOCH_COLUMNS",
    "STEP_DTYPE",
    "Evaluations",
    "Steps",
    "downsample_min_max",
    "epochs_csv",
    "join_evaluations",
    "join_steps",
    "steps_csv",
]
