"""Reading a probe: each branch's loss after the window, the chosen rate per (checkpoint,
multiplier), the critical batch per checkpoint (:func:`service.science.critical.critical_batch`)
and B_simple there, from the source's and the branches' stored epochs.

The loss after the window is the evaluated loss (``evaluation`` on ``loss_on``, the same fixed
subsample for every branch) at the checkpoint's samples + ``window_samples``, interpolated
linearly in samples between the evaluations around it (exact at an epoch end, where the
default window ends). A failed branch (diverged) has an infinite loss; a queued, running or
cancelled one none yet.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

from service.core.finite import finite_or_none
from service.db import Job
from service.db.tables import Probe, ProbeBranch
from service.jobs.schemas import FINISHED_STATUSES
from service.science.critical import RULE, CriticalBatch, critical_batch
from service.science.search import Rank, best_of, edge_of

__all__ = [
    "Group",
    "Run",
    "SourceEpoch",
    "chosen_rate",
    "critical_of",
    "describe_rule",
    "group_edge",
    "groups_of",
    "loss_after",
    "rank",
    "ranks",
    "run_loss",
    "source_epochs",
]


@dataclass(frozen=True)
class SourceEpoch:
    """What the source job recorded at the end of one epoch."""

    epoch: int
    samples_seen: int | None
    loss: float | None
    batch_size: int | None
    learning_rate: float | None
    b_simple: float | None
    b_simple_corrected: float | None


def source_epochs(
    records: Sequence[tuple[int, Mapping[str, Any]]],
    loss_on: str,
    evaluated_on: str | None = None,
) -> dict[int, SourceEpoch]:
    """The source's epochs by number, with the compared loss (``loss_on``): its evaluation at
    the epoch's end when the source evaluated that loss (``evaluated_on``), else the epoch's
    mean train loss or its validation loss."""
    out: dict[int, SourceEpoch] = {}
    for epoch, record in records:
        noise = record.get("noise_scale") or {}
        loss = record.get("val_loss" if loss_on == "validation" else "train_loss")
        evaluations = record.get("evaluations") or []
        if evaluations and evaluated_on == loss_on:
            loss = evaluations[-1].get("loss", loss)
        samples = record.get("samples_seen")
        out[epoch] = SourceEpoch(
            epoch=epoch,
            samples_seen=int(samples) if samples is not None else None,
            loss=finite_or_none(loss),
            batch_size=record.get("batch_size"),
            learning_rate=finite_or_none(record.get("learning_rate")),
            b_simple=finite_or_none(noise.get("b_simple")),
            b_simple_corrected=finite_or_none(noise.get("b_simple_corrected")),
        )
    return out


def loss_after(
    records: Sequence[tuple[int, Mapping[str, Any]]], target_samples: float
) -> float | None:
    """The evaluated loss at ``target_samples`` (samples seen, counted as the branch counts
    them), interpolated between the evaluations around it; None when none reach it."""
    points: list[tuple[float, float]] = []
    for _epoch, record in records:
        for point in record.get("evaluations") or []:
            loss = finite_or_none(point.get("loss"))
            if loss is None:
                return None
            points.append((float(point["samples"]), loss))
    points.sort()
    for (s0, l0), (s1, l1) in pairwise(points):
        if s0 <= target_samples <= s1:
            if s1 == s0:
                return l1
            return l0 + (l1 - l0) * (target_samples - s0) / (s1 - s0)
    if points and math.isclose(points[-1][0], target_samples, rel_tol=1e-12):
        return points[-1][1]
    return None


@dataclass(frozen=True)
class Run:
    """One branch job: its place in the probe and its loss after the window (inf: failed;
    None: not finished, cancelled, or no evaluation reached the window's end)."""

    branch: ProbeBranch
    job: Job
    loss: float | None

    @property
    def finished(self) -> bool:
        return self.job.status in FINISHED_STATUSES

    @property
    def failed(self) -> bool:
        return self.job.status == "failed"


@dataclass
class Group:
    """The runs of one (checkpoint epoch, multiplier): learning rate → runs (one per seed)."""

    epoch: int
    multiplier: int
    by_rate: dict[float, list[Run]] = field(default_factory=dict)

    @property
    def rounds(self) -> int:
        return len({run.branch.round for runs in self.by_rate.values() for run in runs})

    @property
    def finished(self) -> bool:
        return all(run.finished for runs in self.by_rate.values() for run in runs)


def run_loss(
    job: Job, records: Sequence[tuple[int, Mapping[str, Any]]], target: float
) -> float | None:
    if job.status == "failed":
        return math.inf
    if job.status != "succeeded":
        return None
    loss = loss_after(records, target)
    return math.inf if loss is None else loss


def rank(runs: Sequence[Run]) -> Rank:
    """(any seed failed, mean loss after the window, same): lower is better; a seed without a
    loss ranks as infinitely bad."""
    failed = int(any(run.failed for run in runs))
    losses = [run.loss for run in runs]
    if any(loss is None or not math.isfinite(loss) for loss in losses):
        return failed, math.inf, math.inf
    mean = math.fsum(loss for loss in losses if loss is not None) / len(losses)
    return failed, mean, mean


def ranks(group: Group) -> dict[float, Rank]:
    return {rate: rank(runs) for rate, runs in group.by_rate.items()}


def chosen_rate(group: Group) -> float | None:
    """The rate with the lowest mean loss among those whose runs have all finished."""
    done = {
        rate: rank(runs) for rate, runs in group.by_rate.items() if all(r.finished for r in runs)
    }
    return best_of(done) if done else None


def group_edge(group: Group, searched: bool) -> str | None:
    """The edge of the tried rates the chosen one is on (a search; None: interior/unknown)."""
    if not searched or not group.by_rate:
        return None
    return edge_of(ranks(group))


def groups_of(
    runs: Sequence[Run],
) -> dict[int, dict[int, Group]]:
    """epoch → multiplier → group."""
    out: dict[int, dict[int, Group]] = {}
    for run in runs:
        b = run.branch
        group = out.setdefault(b.epoch, {}).setdefault(b.multiplier, Group(b.epoch, b.multiplier))
        group.by_rate.setdefault(b.learning_rate, []).append(run)
    return out


def critical_of(groups: Mapping[int, Group], tolerance: float) -> CriticalBatch:
    """The critical multiplier at one checkpoint, from each multiplier's chosen rate's seeds."""
    losses: dict[int, list[float | None]] = {}
    for multiplier, group in groups.items():
        rate = chosen_rate(group)
        if rate is None:
            continue
        runs = sorted(group.by_rate[rate], key=lambda run: run.branch.seed)
        losses[multiplier] = [run.loss for run in runs]
    return critical_batch(losses, tolerance=tolerance)


def describe_rule(probe: Probe) -> str:
    return f"{RULE}; tolerance {probe.spec['tolerance']:g}"
