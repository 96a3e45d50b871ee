"""The analysis of a sweep's jobs, as their histories stand now: each job's evaluations of the
target's loss, the target (as asked, or the deepest the data supports), each run's crossing of
it, the grid batch size → learning rate → runs, the best rate of each batch size, S(B) fitted to
the tuned points' crossings, the noise scale at the target and late in each run, and the
recommendation; and the read schemas built from them.

The best rate of a batch size: any seed failed (diverged) ranks below every rate whose seeds
all ran; then the lowest steps to target (mean over seeds; a rate counts as reaching the target
only when every seed did), ties and never-reached broken by the lowest best loss reached (mean
over seeds), then by the lower rate (so a batch size whose every rate diverged searches
downward). A batch size whose best rate is at an edge of those tried is not tuned: it is left
out of the fit and named in ``fit.excluded``.

Evaluations: every point job runs with ``evaluation`` on the sweep's ``target_on`` (the loss at
step 0, every epoch end and log-spaced steps, on a fixed subsample), so steps to target are
interpolated between evaluations, within epochs; :func:`evaluations_of` reads them (and, for
jobs run before evaluations were recorded, falls back to the epoch ends) — the one place.
"""

from __future__ import annotations

import logging
import math
import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
from sqlalchemy.orm import Session

from service.db import Job
from service.db.tables import Sweep
from service.errors import NotFound
from service.jobs.history import finite_or_none
from service.jobs.schemas import FINISHED_STATUSES
from service.sweeps import repository
from service.sweeps.fit import (
    MIN_POINTS,
    MIN_S_MIN,
    CriticalBatchFit,
    SweepPoint,
    deeper_target_advice,
    fit_critical_batch,
)
from service.sweeps.noise import EpochNoise, b_simple_at_loss, summarize_noise_scale
from service.sweeps.recommendation import Evidence, Exclusion, recommend
from service.sweeps.schemas import (
    TARGET_LADDER,
    LossPairRead,
    NoiseAtPointRead,
    NoiseAtTargetRead,
    PointRead,
    TargetCandidateRead,
    TargetOn,
    TargetRead,
    ToTargetRead,
)
from service.sweeps.search import Edge, Rank, best_of, edge_of
from service.sweeps.targets import Evaluation, SweepDataError, TargetCrossing, steps_to_target
from service.sweeps.targets import sweep_target as fraction_target

__all__ = [
    "Grid",
    "analyse",
    "analyse_sweep",
    "best_rate",
    "critical_fit",
    "epoch_noise",
    "evaluations_of",
    "get_row",
    "lr_edge",
    "noise_scale",
    "noise_scale_at_target",
    "point_read",
    "rank",
    "ranks",
    "science",
]

logger = logging.getLogger("service.sweeps")

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


def evaluations_of(
    records: Sequence[tuple[int, Mapping[str, Any], bytes]], *, on: TargetOn
) -> list[Evaluation]:
    """A job's evaluations of the ``on`` loss, from its stored epochs ``(epoch, record,
    step_losses)`` in epoch order.

    Recorded (a job run with ``evaluation``, on ``on`` — as every sweep point is): each
    epoch's ``evaluations`` (step, samples, loss), step 0 the loss at the initial parameters;
    ``epoch`` = epochs before + the fraction of the epoch's samples seen, and ``wall_time_s``
    = the earlier epochs' wall time + the fraction of this epoch's steps done × its wall time
    (constant throughput within an epoch; a record's ``wall_time_s`` is its own epoch's).

    Fallback, for jobs run before evaluations were recorded: step 0 is the first step's
    minibatch loss (at the initial parameters, but a noisy estimate of the initial loss at
    small batches; also used for ``validation``), then one evaluation per epoch end with the
    epoch's mean training loss (Keras convention; it lags the end-of-epoch loss a little) or
    its validation loss. A non-finite or missing loss is NaN (never reaches).
    """
    if not records:
        return []
    if any(record.get("evaluations") for _, record, _ in records):
        return _recorded_evaluations(records)
    first_steps = np.frombuffer(records[0][2], dtype="<f4")
    initial = float(first_steps[0]) if first_steps.size else math.nan
    evaluations = [Evaluation(step=0, samples=0, epoch=0.0, wall_time_s=0.0, loss=initial)]
    key = "train_loss" if on == "train" else "val_loss"
    wall_time = 0.0
    for epoch, record, _ in records:
        wall_time += finite_or_none(record.get("wall_time_s")) or 0.0
        step = int(record.get("total_steps") or 0)
        if step <= evaluations[-1].step:
            continue  # a malformed record; steps must increase
        loss = finite_or_none(record.get(key))
        evaluations.append(
            Evaluation(
                step=step,
                samples=int(record.get("samples_seen") or 0),
                epoch=float(epoch),
                wall_time_s=wall_time,
                loss=math.nan if loss is None else loss,
            )
        )
    return evaluations


def _recorded_evaluations(
    records: Sequence[tuple[int, Mapping[str, Any], bytes]],
) -> list[Evaluation]:
    """The recorded evaluations as ``Evaluation``s (see :func:`evaluations_of`)."""
    evaluations: list[Evaluation] = []
    steps_before = samples_before = 0
    wall_before = 0.0
    for epoch, record, _ in records:
        steps_after = int(record.get("total_steps") or 0)
        samples_after = int(record.get("samples_seen") or 0)
        wall = finite_or_none(record.get("wall_time_s")) or 0.0
        epoch_steps = max(steps_after - steps_before, 1)
        epoch_samples = max(samples_after - samples_before, 1)
        for point in record.get("evaluations") or ():
            step, samples = int(point["step"]), int(point["samples"])
            if evaluations and step <= evaluations[-1].step:
                continue  # a malformed record; steps must increase
            loss = finite_or_none(point.get("loss"))
            evaluations.append(
                Evaluation(
                    step=step,
                    samples=samples,
                    epoch=epoch - 1 + (samples - samples_before) / epoch_samples,
                    wall_time_s=wall_before + wall * (step - steps_before) / epoch_steps,
                    loss=math.nan if loss is None else loss,
                )
            )
        steps_before, samples_before = steps_after, samples_after
        wall_before += wall
    return evaluations


@dataclass(frozen=True)
class _Run:
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

    def at_target(self, target_loss: float | None) -> _Run:
        """This run with its crossing of ``target_loss`` (None: none, or the run failed)."""
        crossing = None
        if target_loss is not None and not self.failed:
            crossing = steps_to_target(self.evaluations, target_loss)
        return replace(self, crossing=crossing)


def _mean(values: Iterable[float | None]) -> float | None:
    kept = [v for v in values if v is not None and math.isfinite(v)]
    return math.fsum(kept) / len(kept) if kept else None


Grid = dict[int, dict[float, list[_Run]]]


@dataclass(frozen=True)
class _Analysis:
    target: TargetRead
    runs: list[_Run]
    # batch size → learning rate → the runs at that rate (one per seed)
    grid: Grid
    lr_method: str
    spec: Mapping[str, Any]
    running: bool
    # (sweep id, finished at, jobs) once finished: its fit changes only if a job is deleted
    finished_key: tuple[str, str, int] | None


def _grid(runs: Iterable[_Run]) -> Grid:
    grid: Grid = {}
    for run in runs:
        grid.setdefault(run.batch_size, {}).setdefault(run.learning_rate, []).append(run)
    return grid


def rank(runs: Sequence[_Run]) -> Rank:
    """How one rate did (:data:`~service.sweeps.search.Rank`): (any seed failed, mean steps
    to target or inf unless every seed reached it, mean best loss or inf)."""
    failed = int(any(run.failed for run in runs))
    steps = [run.crossing.steps if run.crossing else None for run in runs]
    best = [run.best_loss for run in runs]
    return failed, _mean_or_inf(steps), _mean_or_inf(best)


def _mean_or_inf(values: Sequence[float | None]) -> float:
    """The mean, or inf unless every value is there (a missing one ranks as infinitely bad)."""
    mean = None if any(v is None for v in values) else _mean(values)
    return math.inf if mean is None else mean


def ranks(by_rate: Mapping[float, Sequence[_Run]]) -> dict[float, Rank]:
    return {rate: rank(runs) for rate, runs in by_rate.items()}


def best_rate(by_rate: Mapping[float, Sequence[_Run]]) -> float:
    """The best learning rate of one batch size (see the module docstring)."""
    return best_of(ranks(by_rate))


def lr_edge(by_rate: Mapping[float, Sequence[_Run]], lr_method: str) -> Edge | None:
    """The edge of the tried rates the best one is on, when interiority is known: a search, or
    three given rates or more (None: interior, or unknown)."""
    if lr_method == "scaled" or len(by_rate) < 3:
        return None
    return edge_of(ranks(by_rate))


def _tuned_points(grid: Grid, lr_method: str) -> list[tuple[int, list[_Run]]]:
    """(batch size, its chosen rate's runs) of every batch size whose best rate is not at an
    edge of those tried: the points a fit may use."""
    return [
        (batch_size, by_rate[best_rate(by_rate)])
        for batch_size, by_rate in sorted(grid.items())
        if lr_edge(by_rate, lr_method) is None
    ]


def _sweep_points(tuned: Iterable[tuple[int, Sequence[_Run]]]) -> list[SweepPoint]:
    return [
        SweepPoint(
            batch_size=batch_size,
            crossings=tuple(run.crossing for run in runs),
            steps_run=tuple(run.steps_run or 0.0 for run in runs),
        )
        for batch_size, runs in tuned
    ]


def _quick_s_min(points: Sequence[SweepPoint]) -> float | None:
    fitted = fit_critical_batch(points, rng=np.random.default_rng(FIT_SEED), n_resamples=0)
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


def _choose_target(
    spec: Mapping[str, Any], runs: Sequence[_Run], lr_method: str
) -> tuple[TargetRead, list[_Run]]:
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
    initial = _mean(run[0].loss for run in usable)
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
    runs: Sequence[_Run],
    lr_method: str,
) -> tuple[float, float, list[_Run], list[TargetCandidateRead]]:
    """(fraction, loss, runs at it, candidates) of the ``auto`` target chosen among
    ``fractions``, shallowest first: see :func:`_choose_target`."""
    candidates: list[TargetCandidateRead] = []
    tried: list[tuple[float, float, list[_Run], bool]] = []
    chosen: int | None = None
    # The batch sizes tuned at the shallowest target must stay tuned and reach a deeper one:
    # a batch size whose every rate misses a deep target would otherwise fall to an edge of
    # its rates and out of the check, instead of ruling that target out.
    shallowest = _grid([run.at_target(losses[0]) for run in runs])
    tuned_sizes = {batch_size for batch_size, _ in _tuned_points(shallowest, lr_method)}
    for index in reversed(range(len(fractions))):
        at = [run.at_target(losses[index]) for run in runs]
        tuned = [t for t in _tuned_points(_grid(at), lr_method) if t[0] in tuned_sizes]
        reached = (
            len(tuned_sizes) >= MIN_POINTS
            and len(tuned) == len(tuned_sizes)
            and all(all(run.crossing is not None for run in point_runs) for _, point_runs in tuned)
        )
        s_min = _quick_s_min(_sweep_points(tuned)) if reached else None
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


def analyse(session: Session, sweep: Sweep, jobs: Sequence[Job]) -> _Analysis:
    on: TargetOn = sweep.spec["target_on"]
    histories = repository.epoch_records(session, [job.id for job in jobs])
    runs: list[_Run] = []
    for job in jobs:
        point = job.sweep_point or {}
        runs.append(
            _Run(
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
    target, runs = _choose_target(sweep.spec, runs, sweep.lr_method)
    return _Analysis(
        target=target,
        runs=runs,
        grid=_grid(runs),
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


def analyse_sweep(session: Session, sweep_id: str, *, tenant: str) -> tuple[Sweep, _Analysis]:
    """``tenant``'s sweep row (404 otherwise) and its runs as their histories stand now: the
    target, each run's evaluations and crossing, and the grid batch size → rate → runs."""
    sweep = get_row(session, sweep_id, tenant=tenant)
    return sweep, analyse(session, sweep, repository.jobs_of(session, sweep.id))


def _to_target(crossings: Sequence[TargetCrossing | None]) -> ToTargetRead:
    if not crossings or any(c is None for c in crossings):
        return ToTargetRead(steps=None, samples=None, epochs=None, wall_time_s=None)
    reached = [c for c in crossings if c is not None]
    return ToTargetRead(
        steps=_mean(c.steps for c in reached),
        samples=_mean(c.samples for c in reached),
        epochs=_mean(c.epochs for c in reached),
        wall_time_s=_mean(c.wall_time_s for c in reached),
    )


def _last(values: Sequence[float]) -> float | None:
    return values[-1] if values else None


def point_read(
    batch_size: int, by_rate: Mapping[float, Sequence[_Run]], lr_method: str
) -> PointRead:
    every = [run for runs in by_rate.values() for run in runs]
    complete = all(run.job.status in FINISHED_STATUSES for run in every)
    chosen = best_rate(by_rate)
    runs = by_rate[chosen]
    edge = lr_edge(by_rate, lr_method)
    interior = None if lr_method == "scaled" or len(by_rate) < 3 else edge is None
    best = LossPairRead(
        train=_mean(min(r.column("train_loss"), default=None) for r in runs),
        validation=_mean(min(r.column("val_loss"), default=None) for r in runs),
    )
    final = LossPairRead(
        train=_mean(_last(r.column("train_loss")) for r in runs),
        validation=_mean(_last(r.column("val_loss")) for r in runs),
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
        samples_per_s=_mean(_mean(r.column("samples_per_s")) for r in runs),
    )


def _json_safe(value: Any) -> Any:
    """``value`` with tuples as lists and every non-finite float as None (JSON carries neither
    NaN nor infinity)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(item) for item in value]
    return value


def _excluded(analysis: _Analysis) -> list[Exclusion]:
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
    analysis: _Analysis,
) -> tuple[list[SweepPoint], CriticalBatchFit, list[Exclusion]] | None:
    """The points (each tuned batch size's crossings at its chosen rate, never-reaching seeds
    censored at the steps they ran), S(B) fitted to them from the fixed bootstrap seed, and
    the batch sizes left out; None before the sweep has any point."""
    if not analysis.grid:
        return None
    points = _sweep_points(_tuned_points(analysis.grid, analysis.lr_method))
    key = analysis.finished_key
    with _FINISHED_FITS_LOCK:
        fitted = _FINISHED_FITS.get(key) if key is not None else None
    if fitted is None:
        fitted = fit_critical_batch(
            points,
            rng=np.random.default_rng(FIT_SEED),
            n_resamples=PARTIAL_RESAMPLES if analysis.running else FIT_RESAMPLES,
            deeper_target=_deeper_target(analysis.target),
        )
        if key is not None:
            with _FINISHED_FITS_LOCK:
                _FINISHED_FITS[key] = fitted
                while len(_FINISHED_FITS) > _FINISHED_FITS_SIZE:
                    _FINISHED_FITS.popitem(last=False)
    return points, fitted, _excluded(analysis)


def _deeper_target(target: TargetRead) -> str:
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


def science(
    analysis: _Analysis, *, sweep_failed: bool = False
) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """(fit, recommendation): S(B) fitted to the tuned points' crossings — refused, with the
    reason, while too few reached the target (or there is no target yet), with the batch sizes
    left out in ``excluded`` — and the fastest batch size and the knee built from it, each with
    its confidence. No recommendation on a failed sweep."""
    science = critical_fit(analysis)
    if science is None:
        return None, None
    _, fitted, excluded = science
    fit: dict[str, Any] = _json_safe(asdict(fitted))
    fit["excluded"] = [asdict(e) for e in excluded]
    if sweep_failed:
        return fit, None
    evidence = Evidence(
        seeds=int(analysis.spec.get("seeds") or 1),
        excluded=tuple(e.batch_size for e in excluded),
        tuned=analysis.lr_method != "scaled",
        fewest_rates=min(len(by_rate) for by_rate in analysis.grid.values()),
    )
    every_point = _sweep_points(
        (batch_size, by_rate[best_rate(by_rate)])
        for batch_size, by_rate in sorted(analysis.grid.items())
    )
    recommendation: dict[str, Any] = _json_safe(asdict(recommend(every_point, fitted, evidence)))
    return fit, recommendation


def epoch_noise(record: Mapping[str, Any]) -> EpochNoise | None:
    noise = record.get("noise_scale")
    if not isinstance(noise, Mapping):
        return None
    values = [finite_or_none(noise.get(k)) for k in ("trace_sigma", "grad_sq_norm", "loss_level")]
    b_simple = finite_or_none(noise.get("b_simple"))
    if any(v is None for v in values) or (b_simple is not None and b_simple <= 0.0):
        return None
    trace, grad_sq, loss = (float(v or 0.0) for v in values)
    n_samples = noise.get("n_samples")
    return EpochNoise(
        int(record["epoch"]), b_simple, trace, grad_sq, loss,
        n_samples=n_samples if isinstance(n_samples, int) and n_samples >= 1 else None,
        exact=noise.get("exact") is True,
    )  # fmt: skip


def _chosen_runs(analysis: _Analysis) -> Iterable[tuple[int, float, list[_Run]]]:
    for batch_size, by_rate in sorted(analysis.grid.items()):
        chosen = best_rate(by_rate)
        yield batch_size, chosen, by_rate[chosen]


def noise_scale(analysis: _Analysis, train_rows: int) -> list[dict[str, Any]]:
    """The late-run summary, per run of each batch size's chosen rate that measured it
    (``base.noise_scale``): B_simple over the last quarter of the run with its loss level,
    correction and trend."""
    out: list[dict[str, Any]] = []
    for batch_size, chosen, runs in _chosen_runs(analysis):
        for run in runs:
            epochs = [e for e in map(epoch_noise, run.records) if e is not None]
            if not epochs:
                continue
            try:
                summary = summarize_noise_scale(epochs, train_rows=train_rows)
            except SweepDataError as exc:
                logger.warning("sweep point job %s: noise scale skipped: %s", run.job.id, exc)
                continue
            out.append(
                {
                    "batch_size": batch_size,
                    "learning_rate": chosen,
                    "seed": run.seed,
                    "job_id": run.job.id,
                    **_json_safe(asdict(summary)),
                }
            )
    return out


def noise_scale_at_target(analysis: _Analysis, train_rows: int) -> NoiseAtTargetRead | None:
    """B_simple at the target's loss level (:func:`~service.sweeps.noise.b_simple_at_loss`
    per run, the geometric mean over a point's seeds, the median across points); None without
    a target or without any noise-scale measurement."""
    target = analysis.target
    measured = [
        (batch_size, [[e for e in map(epoch_noise, run.records) if e is not None] for run in runs])
        for batch_size, _, runs in _chosen_runs(analysis)
    ]
    if target.loss is None or not any(any(epochs) for _, runs in measured for epochs in runs):
        return None
    points: list[NoiseAtPointRead] = []
    for batch_size, runs in measured:
        values: list[float] = []
        reasons: list[str] = []
        for epochs in runs:
            if target.on != "train":
                reasons.append(
                    "the noise scale is measured on the training loss, the target is not"
                )
                continue
            value, why = b_simple_at_loss(epochs, target.loss)
            if value is None:
                reasons.append(why or "not measured")
            else:
                values.append(value)
        b_simple = math.exp(math.fsum(map(math.log, values)) / len(values)) if values else None
        points.append(
            NoiseAtPointRead(
                batch_size=batch_size,
                b_simple=b_simple,
                b_simple_corrected=None if b_simple is None else _corrected(b_simple, train_rows),
                runs=len(values),
                reason=None if values else (reasons[0] if reasons else "no measurement"),
            )
        )
    known = [p.b_simple for p in points if p.b_simple is not None]
    median = float(np.median(known)) if known else None
    return NoiseAtTargetRead(
        loss_level=target.loss,
        on=target.on,
        b_simple=median,
        b_simple_corrected=None if median is None else _corrected(median, train_rows),
        spread=[min(known), max(known)] if known else None,
        points=points,
        reason=None if known else "no batch size's measurements bracket the target loss",
    )


def _corrected(b_simple: float, train_rows: int) -> float:
    """The finite-population correction 1/(1/B_simple + 1/N)."""
    return 1.0 / (1.0 / b_simple + 1.0 / train_rows)
