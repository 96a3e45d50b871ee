"""A sweep's point jobs as runs, and how the learning rates of one batch size rank.

The best rate of a batch size: any seed failed (diverged) ranks below every rate whose seeds
all ran; then the lowest steps to target (mean over seeds; a rate counts as reaching the target
only when every seed did), ties and never-reached broken by the lowest best loss reached (mean
over seeds), then by the lower rate (so a batch size whose every rate diverged searches
downward). A batch size whose best rate is at an edge of those tried is not tuned: it is left
out of the fit and named in ``fit.excluded``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from service.core.finite import finite_or_none
from service.db import Job
from service.science import Evaluation, SweepPoint, TargetCrossing, steps_to_target
from service.science.search import Edge, Rank, best_of, edge_of

__all__ = [
    "Grid",
    "Run",
    "best_rate",
    "grid_of",
    "lr_edge",
    "mean_finite",
    "rank",
    "ranks",
    "sweep_points",
    "tuned_points",
]


@dataclass(frozen=True)
class Run:
    """One point job with what its history says. A failed run (diverged, or any other error)
    never reaches the target and has no best loss: it ranks below every run that did not fail,
    and no recommendation comes from it."""

    job: Job
    batch_size: int
    learning_rate: float
    seed: int
    round: int
    evaluations: list[Evaluation]
    records: list[Mapping[str, Any]]
    crossing: TargetCrossing | None

    @property
    def failed(self) -> bool:
        return self.job.status == "failed"

    @property
    def best_loss(self) -> float | None:
        """Lowest finite loss on ``target_on`` at any evaluation after step 0 (None: failed)."""
        if self.failed:
            return None
        losses = [e.loss for e in self.evaluations[1:] if math.isfinite(e.loss)]
        return min(losses) if losses else None

    @property
    def steps_run(self) -> float | None:
        """Optimizer steps the run made (a run that never reached the target needs more: a
        censored observation); None for a failed run, whose steps say nothing of the target."""
        if self.failed or not self.evaluations:
            return None
        return float(self.evaluations[-1].step)

    def column(self, name: str) -> list[float]:
        values = (finite_or_none(record.get(name)) for record in self.records)
        return [value for value in values if value is not None]

    def at_target(self, target_loss: float | None) -> Run:
        """This run with its crossing of ``target_loss`` (None: none, or the run failed)."""
        crossing = None
        if target_loss is not None and not self.failed:
            crossing = steps_to_target(self.evaluations, target_loss)
        return replace(self, crossing=crossing)


def mean_finite(values: Iterable[float | None]) -> float | None:
    """The mean of the finite values (None: there are none)."""
    kept = [v for v in values if v is not None and math.isfinite(v)]
    return math.fsum(kept) / len(kept) if kept else None


Grid = dict[int, dict[float, list[Run]]]


def grid_of(runs: Iterable[Run]) -> Grid:
    """Batch size → learning rate → the runs at that rate (one per seed)."""
    grid: Grid = {}
    for run in runs:
        grid.setdefault(run.batch_size, {}).setdefault(run.learning_rate, []).append(run)
    return grid


def rank(runs: Sequence[Run]) -> Rank:
    """How one rate did (:data:`~service.science.search.Rank`): (any seed failed, mean steps
    to target or inf unless every seed reached it, mean best loss or inf)."""
    failed = int(any(run.failed for run in runs))
    steps = [run.crossing.steps if run.crossing else None for run in runs]
    best = [run.best_loss for run in runs]
    return failed, _mean_or_inf(steps), _mean_or_inf(best)


def _mean_or_inf(values: Sequence[float | None]) -> float:
    """The mean, or inf unless every value is there (a missing one ranks as infinitely bad)."""
    mean = None if any(v is None for v in values) else mean_finite(values)
    return math.inf if mean is None else mean


def ranks(by_rate: Mapping[float, Sequence[Run]]) -> dict[float, Rank]:
    return {rate: rank(runs) for rate, runs in by_rate.items()}


def best_rate(by_rate: Mapping[float, Sequence[Run]]) -> float:
    """The best learning rate of one batch size (see the module docstring)."""
    return best_of(ranks(by_rate))


def lr_edge(by_rate: Mapping[float, Sequence[Run]], lr_method: str) -> Edge | None:
    """The edge of the tried rates the best one is on, when interiority is known: a search, or
    three given rates or more (None: interior, or unknown)."""
    if lr_method == "scaled" or len(by_rate) < 3:
        return None
    return edge_of(ranks(by_rate))


def tuned_points(grid: Grid, lr_method: str) -> list[tuple[int, list[Run]]]:
    """(batch size, its chosen rate's runs) of every batch size whose best rate is not at an
    edge of those tried: the points a fit may use."""
    return [
        (batch_size, by_rate[best_rate(by_rate)])
        for batch_size, by_rate in sorted(grid.items())
        if lr_edge(by_rate, lr_method) is None
    ]


def sweep_points(tuned: Iterable[tuple[int, Sequence[Run]]]) -> list[SweepPoint]:
    return [
        SweepPoint(
            batch_size=batch_size,
            crossings=tuple(run.crossing for run in runs),
            steps_run=tuple(run.steps_run or 0.0 for run in runs),
        )
        for batch_size, runs in tuned
    ]
