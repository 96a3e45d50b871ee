"""The analysis of a sweep's jobs, as their histories stand now: each job's evaluations of the
target's loss, the target (:mod:`service.sweeps.target_choice`), each run's crossing of it, the
grid batch size → learning rate → runs (:mod:`service.sweeps.runs`), the best rate of each batch
size, S(B) fitted to the tuned points' crossings and the recommendation; and the read schemas
built from them. The noise-scale reads are :mod:`service.sweeps.noise_read`.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from sqlalchemy.orm import Session

from service.core.finite import json_safe
from service.db import Job
from service.db.tables import Sweep
from service.errors import NotFound
from service.jobs.schemas import FINISHED_STATUSES
from service.science import (
    CriticalBatchFit,
    Evidence,
    Exclusion,
    SweepPoint,
    TargetCrossing,
    TargetOn,
    evaluations_of,
    fit_critical_batch,
    recommend,
)
from service.sweeps import repository
from service.sweeps.read_schemas import (
    FitRead,
    LossPairRead,
    PointRead,
    RecommendationRead,
    TargetRead,
    ToTargetRead,
)
from service.sweeps.runs import (
    Grid,
    Run,
    best_rate,
    grid_of,
    lr_edge,
    mean_finite,
    sweep_points,
    tuned_points,
)
from service.sweeps.target_choice import choose_target, deeper_target

__all__ = [
    "Analysis",
    "analyse",
    "analyse_sweep",
    "critical_fit",
    "fit_and_recommendation",
    "get_row",
    "point_read",
]

#: Bootstrap resamples for the fit's intervals, from a fixed seed: the same data read twice
#: gives the same intervals.
FIT_RESAMPLES = 1000
FIT_SEED = 0
#: Fewer resamples while a sweep runs: its figures change with every job that finishes.
PARTIAL_RESAMPLES = 200
#: Finished sweeps' fits, most recent last: a finished sweep's fit never changes, and the
#: bootstrap (a censored one especially) is the costliest part of a read.
_FINISHED_FITS: OrderedDict[tuple[str, str, int], CriticalBatchFit] = OrderedDict()
_FINISHED_FITS_SIZE = 64
_FINISHED_FITS_LOCK = threading.Lock()


@dataclass(frozen=True)
class Analysis:
    """A sweep's runs as their histories stand now, with its target and their grid."""

    target: TargetRead
    runs: list[Run]
    # batch size → learning rate → the runs at that rate (one per seed)
    grid: Grid
    lr_method: str
    spec: Mapping[str, Any]
    running: bool
    # (sweep id, finished at, jobs) once finished: its fit changes only if a job is deleted
    finished_key: tuple[str, str, int] | None


def analyse(session: Session, sweep: Sweep, jobs: Sequence[Job]) -> Analysis:
    on: TargetOn = sweep.spec["target_on"]
    histories = repository.epoch_records(session, [job.id for job in jobs])
    runs: list[Run] = []
    for job in jobs:
        point = job.sweep_point or {}
        runs.append(
            Run(
                job=job,
                batch_size=int(point["batch_size"]),
                learning_rate=float(point["learning_rate"]),
                seed=int(point["seed"]),
                round=int(point["round"]),
                evaluations=evaluations_of(histories[job.id], on=on),
                records=[record for _, record, _ in histories[job.id]],
                crossing=None,
            )
        )
    target, runs = choose_target(sweep.spec, runs, sweep.lr_method)
    return Analysis(
        target=target,
        runs=runs,
        grid=grid_of(runs),
        lr_method=sweep.lr_method,
        spec=sweep.spec,
        running=sweep.status == "running",
        finished_key=(
            None
            if sweep.status == "running" or sweep.finished_at is None
            else (sweep.id, sweep.finished_at.isoformat(), len(runs))
        ),
    )


def get_row(session: Session, sweep_id: str, *, tenant: str) -> Sweep:
    """``tenant``'s sweep; another tenant's is the same :class:`NotFound` as a missing one."""
    sweep = repository.get(session, sweep_id, tenant=tenant)
    if sweep is None:
        raise NotFound(f"No sweep with id {sweep_id!r}.")
    return sweep


def analyse_sweep(session: Session, sweep_id: str, *, tenant: str) -> tuple[Sweep, Analysis]:
    """``tenant``'s sweep row (404 otherwise) and its runs as their histories stand now: the
    target, each run's evaluations and crossing, and the grid batch size → rate → runs."""
    sweep = get_row(session, sweep_id, tenant=tenant)
    return sweep, analyse(session, sweep, repository.jobs_of(session, sweep.id))


def _to_target(crossings: Sequence[TargetCrossing | None]) -> ToTargetRead:
    if not crossings or any(c is None for c in crossings):
        return ToTargetRead(steps=None, samples=None, epochs=None, wall_time_s=None)
    reached = [c for c in crossings if c is not None]
    return ToTargetRead(
        steps=mean_finite(c.steps for c in reached),
        samples=mean_finite(c.samples for c in reached),
        epochs=mean_finite(c.epochs for c in reached),
        wall_time_s=mean_finite(c.wall_time_s for c in reached),
    )


def _last(values: Sequence[float]) -> float | None:
    return values[-1] if values else None


def point_read(
    batch_size: int, by_rate: Mapping[float, Sequence[Run]], lr_method: str
) -> PointRead:
    every = [run for runs in by_rate.values() for run in runs]
    complete = all(run.job.status in FINISHED_STATUSES for run in every)
    chosen = best_rate(by_rate)
    runs = by_rate[chosen]
    edge = lr_edge(by_rate, lr_method)
    interior = None if lr_method == "scaled" or len(by_rate) < 3 else edge is None
    best = LossPairRead(
        train=mean_finite(min(r.column("train_loss"), default=None) for r in runs),
        validation=mean_finite(min(r.column("val_loss"), default=None) for r in runs),
    )
    final = LossPairRead(
        train=mean_finite(_last(r.column("train_loss")) for r in runs),
        validation=mean_finite(_last(r.column("val_loss")) for r in runs),
    )
    gap = None
    if final.train is not None and final.validation is not None:
        gap = final.validation - final.train
    return PointRead(
        batch_size=batch_size,
        job_ids=[run.job.id for run in every],
        complete=complete,
        learning_rate=chosen,
        learning_rates_tried=sorted(by_rate),
        lr_interior=interior,
        lr_edge=edge,
        rounds=len({run.round for run in every}),
        best=best,
        final=final,
        gap=gap,
        to_target=_to_target([run.crossing for run in runs]),
        samples_per_s=mean_finite(mean_finite(r.column("samples_per_s")) for r in runs),
    )


def _excluded(analysis: Analysis) -> list[Exclusion]:
    """The batch sizes left out of the fit: their best rate is at an edge of those tried."""
    out: list[Exclusion] = []
    search = analysis.spec.get("lr_search") or {}
    for batch_size, by_rate in sorted(analysis.grid.items()):
        edge = lr_edge(by_rate, analysis.lr_method)
        if edge is None:
            continue
        chosen = best_rate(by_rate)
        side = "highest" if edge == "high" else "lowest"
        rounds = len({run.round for runs in by_rate.values() for run in runs})
        reason = (
            f"its best learning rate, {chosen:.3g}, is the {side} of the {len(by_rate)} tried "
            f"(in {rounds} round{'s' if rounds != 1 else ''}), so its best may lie beyond and "
            "its steps to target are not the tuned ones"
        )
        if analysis.lr_method == "searched" and analysis.running:
            action = "wait: the search is still running for it"
        elif analysis.lr_method == "searched":
            action = (
                f"raise lr_search.max_rounds (this sweep allowed {search.get('max_rounds')}) or "
                f"start nearer: lr_search.start {'above' if edge == 'high' else 'below'} "
                f"{search.get('start'):.3g}"
            )
        else:
            action = f"add learning rates {'above' if edge == 'high' else 'below'} {chosen:.3g}"
        out.append(Exclusion(batch_size, reason, action))
    return out


def critical_fit(
    analysis: Analysis,
) -> tuple[list[SweepPoint], CriticalBatchFit, list[Exclusion]] | None:
    """The points (each tuned batch size's crossings at its chosen rate, never-reaching seeds
    censored at the steps they ran), S(B) fitted to them from the fixed bootstrap seed, and
    the batch sizes left out; None before the sweep has any point."""
    if not analysis.grid:
        return None
    points = sweep_points(tuned_points(analysis.grid, analysis.lr_method))
    key = analysis.finished_key
    with _FINISHED_FITS_LOCK:
        fitted = _FINISHED_FITS.get(key) if key is not None else None
    if fitted is None:
        fitted = fit_critical_batch(
            points,
            rng=np.random.default_rng(FIT_SEED),
            n_resamples=PARTIAL_RESAMPLES if analysis.running else FIT_RESAMPLES,
            deeper_target=deeper_target(analysis.target),
        )
        if key is not None:
            with _FINISHED_FITS_LOCK:
                _FINISHED_FITS[key] = fitted
                while len(_FINISHED_FITS) > _FINISHED_FITS_SIZE:
                    _FINISHED_FITS.popitem(last=False)
    return points, fitted, _excluded(analysis)


def fit_and_recommendation(
    analysis: Analysis, *, sweep_failed: bool = False
) -> tuple[FitRead | None, RecommendationRead | None]:
    """(fit, recommendation): S(B) fitted to the tuned points' crossings — refused, with the
    reason, while too few reached the target (or there is no target yet), with the batch sizes
    left out in ``excluded`` — and the fastest batch size and the knee built from it, each with
    its confidence. No recommendation on a failed sweep."""
    analysed = critical_fit(analysis)
    if analysed is None:
        return None, None
    _, fitted, excluded = analysed
    fit = FitRead.model_validate(
        json_safe(asdict(fitted)) | {"excluded": [asdict(e) for e in excluded]}
    )
    if sweep_failed:
        return fit, None
    evidence = Evidence(
        seeds=int(analysis.spec.get("seeds") or 1),
        excluded=tuple(e.batch_size for e in excluded),
        tuned=analysis.lr_method != "scaled",
        fewest_rates=min(len(by_rate) for by_rate in analysis.grid.values()),
    )
    every_point = sweep_points(
        (batch_size, by_rate[best_rate(by_rate)])
        for batch_size, by_rate in sorted(analysis.grid.items())
    )
    recommendation = json_safe(asdict(recommend(every_point, fitted, evidence)))
    return fit, RecommendationRead.model_validate(recommendation)
