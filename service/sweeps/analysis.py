"""The analysis of a sweep's jobs, as their histories stand now: each job's evaluations of the
target's loss, the target, each run's crossing of it, the grid batch size → learning rate →
runs, the best rate of each batch size, S(B) fitted to the chosen rates' crossings, and the late
gradient noise scale of each run; and the read schemas built from them.

The best rate of a batch size: the lowest steps to target (mean over seeds; a rate counts as
reaching the target only when every seed did), ties and never-reached broken by the lowest best
loss reached (mean over seeds; a run without a finite loss counts as infinitely bad), then by
the lower rate (so a batch size whose every rate diverged searches downward).

Evaluations: every point job runs with ``evaluation`` on the sweep's ``target_on`` (the loss at
step 0, every epoch end and log-spaced steps, on a fixed subsample), so steps to target are
interpolated between evaluations, within epochs; :func:`evaluations_of` reads them (and, for
jobs run before evaluations were recorded, falls back to the epoch ends) — the one place.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from sqlalchemy.orm import Session

from service.db import Job
from service.db.tables import Sweep
from service.errors import NotFound
from service.jobs.history import finite_or_none
from service.jobs.schemas import FINISHED_STATUSES
from service.sweeps import repository
from service.sweeps.advice import recommend
from service.sweeps.fit import (
    CriticalBatchFit,
    SweepPoint,
    deeper_target_advice,
    fit_critical_batch,
)
from service.sweeps.noise import EpochNoise, summarize_noise_scale
from service.sweeps.schemas import (
    LossPairRead,
    PointRead,
    TargetOn,
    TargetRead,
    ToTargetRead,
)
from service.sweeps.targets import Evaluation, SweepDataError, TargetCrossing, steps_to_target
from service.sweeps.targets import sweep_target as fraction_target

__all__ = [
    "analyse",
    "analyse_sweep",
    "best_rate",
    "critical_fit",
    "epoch_noise",
    "evaluations_of",
    "get_row",
    "is_interior",
    "noise_scale",
    "point_read",
    "science",
]

logger = logging.getLogger("service.sweeps")

#: Bootstrap resamples for the fit's intervals, from a fixed seed: the same data read twice
#: gives the same intervals.
FIT_RESAMPLES = 1000
FIT_SEED = 0


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
    """One point job with what its history says."""

    job: Job
    batch_size: int
    learning_rate: float
    seed: int
    round: int
    evaluations: list[Evaluation]
    records: list[Mapping[str, Any]]
    crossing: TargetCrossing | None

    @property
    def best_loss(self) -> float | None:
        """Lowest finite loss on ``target_on`` at any evaluation after step 0."""
        losses = [e.loss for e in self.evaluations[1:] if math.isfinite(e.loss)]
        return min(losses) if losses else None

    def column(self, name: str) -> list[float]:
        values = (finite_or_none(record.get(name)) for record in self.records)
        return [value for value in values if value is not None]


def _mean(values: Iterable[float | None]) -> float | None:
    kept = [v for v in values if v is not None and math.isfinite(v)]
    return math.fsum(kept) / len(kept) if kept else None


@dataclass(frozen=True)
class _Analysis:
    target: TargetRead
    runs: list[_Run]
    # batch size → learning rate → the runs at that rate (one per seed)
    grid: dict[int, dict[float, list[_Run]]]


def _target(spec: Mapping[str, Any], evaluations: list[list[Evaluation]]) -> TargetRead:
    on: TargetOn = spec["target_on"]
    if spec.get("target_loss") is not None:
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
    fraction = float(spec["target_fraction"])
    runs = [run for run in evaluations if run and math.isfinite(run[0].loss)]
    initial = _mean(run[0].loss for run in runs)
    best = min((e.loss for run in runs for e in run[1:] if math.isfinite(e.loss)), default=None)
    how = (
        f"the {on} loss closing {fraction:g} of the gap between the initial loss (the {on} loss "
        f"evaluated at step 0, the initial parameters, mean over {len(runs)} runs) and the best "
        f"{on} loss any run reached at an evaluation: L0 − f (L0 − L_best)"
    )
    loss: float | None = None
    if runs:
        try:
            loss = fraction_target(runs, fraction)
        except SweepDataError as exc:
            how += f"; not derivable yet: {exc.message}"
    else:
        how += "; not derivable until a run has finished an epoch"
    return TargetRead(
        loss=loss,
        on=on,
        method="fraction",
        fraction=fraction,
        initial_loss=initial,
        best_loss=best,
        description=how,
    )


def analyse(session: Session, sweep: Sweep, jobs: Sequence[Job]) -> _Analysis:
    on: TargetOn = sweep.spec["target_on"]
    histories = repository.epoch_records(session, [job.id for job in jobs])
    evaluations = {job.id: evaluations_of(histories[job.id], on=on) for job in jobs}
    target = _target(sweep.spec, [evaluations[job.id] for job in jobs])
    runs: list[_Run] = []
    grid: dict[int, dict[float, list[_Run]]] = {}
    for job in jobs:
        point = job.sweep_point or {}
        crossing = None
        if target.loss is not None:
            crossing = steps_to_target(evaluations[job.id], target.loss)
        run = _Run(
            job=job,
            batch_size=int(point["batch_size"]),
            learning_rate=float(point["learning_rate"]),
            seed=int(point["seed"]),
            round=int(point["round"]),
            evaluations=evaluations[job.id],
            records=[record for _, record, _ in histories[job.id]],
            crossing=crossing,
        )
        runs.append(run)
        grid.setdefault(run.batch_size, {}).setdefault(run.learning_rate, []).append(run)
    return _Analysis(target=target, runs=runs, grid=grid)


def _rank(runs: Sequence[_Run]) -> tuple[float, float]:
    """(mean steps to target, or inf unless every seed reached it; mean best loss, or inf)."""
    steps = [run.crossing.steps if run.crossing else None for run in runs]
    mean_steps = math.inf if any(s is None for s in steps) else _mean(steps) or math.inf
    best = [run.best_loss for run in runs]
    mean_best = math.inf if any(b is None for b in best) else _mean(best) or math.inf
    return mean_steps, mean_best


def best_rate(by_rate: Mapping[float, Sequence[_Run]]) -> float:
    """The best learning rate of one batch size (see the module docstring)."""
    return min(by_rate, key=lambda rate: (*_rank(by_rate[rate]), rate))


def is_interior(rate: float, rates: Iterable[float]) -> bool:
    tried = list(rates)
    return min(tried) < rate < max(tried)


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


def point_read(batch_size: int, by_rate: Mapping[float, Sequence[_Run]]) -> PointRead:
    every = [run for runs in by_rate.values() for run in runs]
    complete = all(run.job.status in FINISHED_STATUSES for run in every)
    chosen = best_rate(by_rate)
    runs = by_rate[chosen]
    interior = is_interior(chosen, by_rate) if len(by_rate) >= 3 else None
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


def critical_fit(analysis: _Analysis) -> tuple[list[SweepPoint], CriticalBatchFit] | None:
    """The points (each batch size's crossings at its chosen rate) and S(B) fitted to them,
    from the fixed bootstrap seed; None before the sweep has any point."""
    if not analysis.grid:
        return None
    points = [
        SweepPoint(
            batch_size=batch_size,
            crossings=tuple(run.crossing for run in by_rate[best_rate(by_rate)]),
        )
        for batch_size, by_rate in sorted(analysis.grid.items())
    ]
    fitted = fit_critical_batch(
        points,
        rng=np.random.default_rng(FIT_SEED),
        n_resamples=FIT_RESAMPLES,
        deeper_target=deeper_target_advice(
            target_fraction=analysis.target.fraction,
            target_loss=analysis.target.loss if analysis.target.method == "absolute" else None,
        ),
    )
    return points, fitted


def science(analysis: _Analysis) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """(fit, recommendation): S(B) fitted to the chosen rate's crossings per batch size —
    refused, with the reason, while too few points reached the target (or there is no target
    yet) — and the fastest batch size and the knee built from it."""
    science = critical_fit(analysis)
    if science is None:
        return None, None
    points, fitted = science
    fit: dict[str, Any] = _json_safe(asdict(fitted))
    recommendation: dict[str, Any] = _json_safe(asdict(recommend(points, fitted)))
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
    return EpochNoise(int(record["epoch"]), b_simple, trace, grad_sq, loss)


def noise_scale(analysis: _Analysis, train_rows: int) -> list[dict[str, Any]]:
    """Per run of each batch size's chosen rate that measured it (``base.noise_scale``):
    B_simple over the last quarter of the run with its loss level, correction and trend."""
    out: list[dict[str, Any]] = []
    for batch_size, by_rate in sorted(analysis.grid.items()):
        chosen = best_rate(by_rate)
        for run in by_rate[chosen]:
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
