"""Sweeps: create, read (with the batch-size analysis), list, cancel, and ``advance`` — the step
that, once a learning-rate round has finished, submits the next round or ends the sweep.

Every point is an ordinary job (``POST /v1/jobs``'s validation and row, via
:mod:`service.jobs.service`) tagged ``sweep:<id>`` and carrying ``sweep_id`` and
``sweep_point`` = {batch_size, learning_rate, seed, round}; the sweep row and its first round
are inserted in the caller's transaction, so a refused point leaves nothing behind.

The learning rate per batch size (Shallue et al. 2018: it must be re-tuned per batch size):

- ``given``: every rate of ``learning_rates`` runs; each batch size keeps its best.
- ``searched``: round 0 runs start/√2, start, start·√2. When a round has finished, every batch
  size whose best rate is the lowest or highest it has run gets one more √2 step beyond that
  edge in the next round (at most ``max_rounds`` rounds), so the search ends with the best
  rate interior — or says it is not (``lr_interior`` = false) when the rounds ran out.
- ``scaled``: one run per batch size at ``base.lr_scaling`` from ``base.reference_batch_size``
  (the cheap alternative: not tuned per batch size, and reported as such).

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
import uuid
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from pydantic import ValidationError
from sqlalchemy.orm import Session

from service.core import split_sizes
from service.core.schedules import scale_lr
from service.datasets import service as datasets_service
from service.db import Job, utcnow
from service.db.tables import Sweep
from service.errors import Conflict, FieldError, InvalidInput, NotFound
from service.jobs import service as jobs_service
from service.jobs.history import finite_or_none
from service.jobs.schemas import FINISHED_STATUSES, BatchSizeAdviceRead, JobCreate, JobRead
from service.pagination import decode_cursor, encode_cursor
from service.sweeps import repository
from service.sweeps.advice import advise_batch_size, recommend
from service.sweeps.fit import (
    CriticalBatchFit,
    SweepPoint,
    deeper_target_advice,
    fit_critical_batch,
)
from service.sweeps.noise import EpochNoise, summarize_noise_scale
from service.sweeps.schemas import (
    DEFAULT_TARGET_FRACTION,
    FINISHED_SWEEP_STATUSES,
    MAX_FIRST_ROUND_JOBS,
    LossPairRead,
    LRMethod,
    PointRead,
    RunRead,
    SweepCreate,
    SweepLinks,
    SweepPage,
    SweepRead,
    SweepStatus,
    SweepSummary,
    TargetOn,
    TargetRead,
    ToTargetRead,
)
from service.sweeps.targets import Evaluation, SweepDataError, TargetCrossing, steps_to_target
from service.sweeps.targets import sweep_target as fraction_target

logger = logging.getLogger("service.sweeps")

SWEEPS_PATH = "/v1/sweeps"
SQRT2 = math.sqrt(2.0)
#: Bootstrap resamples for the fit's intervals, from a fixed seed: the same data read twice
#: gives the same intervals.
FIT_RESAMPLES = 1000
FIT_SEED = 0


def tag_of(sweep_id: str) -> str:
    """The tag every point job of the sweep carries."""
    return f"sweep:{sweep_id}"


def links(sweep_id: str, dataset_id: str) -> SweepLinks:
    """The URLs of a sweep's resources."""
    base = f"{SWEEPS_PATH}/{sweep_id}"
    return SweepLinks(
        self=base,
        cancel=f"{base}/cancel",
        jobs=f"{jobs_service.JOBS_PATH}?tag={tag_of(sweep_id)}",
        dataset=f"/v1/datasets/{dataset_id}",
    )


# --- creating -------------------------------------------------------------------------------


def _lr_method(body: SweepCreate) -> LRMethod:
    if body.learning_rates is not None:
        return "given"
    if body.lr_search is not None:
        return "searched"
    return "scaled"


def _refuse(loc: tuple[str | int, ...], message: str) -> InvalidInput:
    return InvalidInput(
        f"The sweep cannot run: {_dotted(loc)}: {message}.",
        errors=[FieldError(loc, message, "value_error")],
    )


def _dotted(loc: Sequence[str | int]) -> str:
    """("body", "base", "lr_schedule", "gamma") → "base.lr_schedule.gamma"; indexes as [i]."""
    out = ""
    for part in loc[1:] if loc and loc[0] == "body" else loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _check_request(body: SweepCreate) -> None:
    """The cross-field rules, each a 422 naming the exact field."""
    for name, values in (
        ("batch_sizes", body.batch_sizes),
        ("learning_rates", body.learning_rates),
    ):
        seen: set[float] = set()
        for index, value in enumerate(values or ()):
            if value in seen:
                raise _refuse(("body", name, index), f"{value} appears twice; list each once")
            seen.add(value)
    if body.learning_rates is not None and body.lr_search is not None:
        raise _refuse(("body", "lr_search"), "give either learning_rates or lr_search, not both")
    if body.target_loss is not None and body.target_fraction is not None:
        raise _refuse(
            ("body", "target_loss"), "give either target_fraction or target_loss, not both"
        )
    if body.target_on == "validation" and body.base.model_dump()["validation_split"] <= 0.0:
        raise _refuse(
            ("body", "target_on"),
            "'validation' needs a validation set: set base.validation_split > 0",
        )
    evaluation = body.base.model_dump()["evaluation"]
    if evaluation is not None and evaluation["on"] != body.target_on:
        raise _refuse(
            ("body", "base", "evaluation", "on"),
            f"every point evaluates the target's loss ({body.target_on!r}); leave it out or "
            "set it to target_on",
        )
    if _lr_method(body) != "scaled" and body.base.model_dump()["lr_scaling"] != "none":
        raise _refuse(
            ("body", "base", "lr_scaling"),
            "applies only when neither learning_rates nor lr_search is given (each point then "
            "runs its own rate unscaled); leave it 'none'",
        )
    rates = len(body.learning_rates) if body.learning_rates is not None else 1
    rates = 3 if body.lr_search is not None else rates
    jobs = len(body.batch_sizes) * rates * body.seeds
    if jobs > MAX_FIRST_ROUND_JOBS:
        raise _refuse(
            ("body", "batch_sizes"),
            f"batch sizes × learning rates × seeds is {jobs} jobs, over the "
            f"{MAX_FIRST_ROUND_JOBS} one sweep may queue; ask for fewer",
        )


def _first_rates(body: SweepCreate, batch_size: int) -> list[float]:
    if body.learning_rates is not None:
        return list(body.learning_rates)
    if body.lr_search is not None:
        start = body.lr_search.start
        return [start / SQRT2, start, start * SQRT2]
    base = body.base.model_dump()
    return [
        scale_lr(
            base["learning_rate"], batch_size, base["reference_batch_size"], base["lr_scaling"]
        )
    ]


@dataclass(frozen=True)
class _PointPlace:
    """Where a point's values come from in the request, to name them in a 422."""

    batch_index: int
    rate_index: int
    method: LRMethod


def _request_loc(loc: Sequence[str | int], place: _PointPlace) -> tuple[str | int, ...]:
    """A job's field path (``("body", "batch_size")``) as the sweep request spells it."""
    parts = list(loc[1:] if loc and loc[0] == "body" else loc)
    if not parts:
        return ("body",)
    name, rest = parts[0], parts[1:]
    if name == "batch_size":
        return ("body", "batch_sizes", place.batch_index)
    if name == "learning_rate" and place.method == "given":
        return ("body", "learning_rates", place.rate_index)
    if name == "learning_rate" and place.method == "searched":
        return ("body", "lr_search", "start")
    if name == "dataset_id":
        return ("body", "dataset_id")
    return ("body", "base", name, *rest)


def _point_refused(errors: Iterable[FieldError], place: _PointPlace) -> InvalidInput:
    mapped = [FieldError(_request_loc(e.loc, place), e.msg, e.type) for e in errors]
    first = mapped[0]
    return InvalidInput(f"The sweep cannot run: {_dotted(first.loc)}: {first.msg}.", errors=mapped)


def _submit_point(
    session: Session,
    sweep: Sweep,
    spec: Mapping[str, Any],
    *,
    batch_size: int,
    learning_rate: float,
    seed: int,
    round_: int,
    place: _PointPlace,
) -> str:
    """Queue one point as an ordinary job (jobs' own validation) and attach it; its id."""
    base = dict(spec["base"])
    label = sweep.name or f"sweep {sweep.id[:8]}"
    fields = base | {
        "dataset_id": sweep.dataset_id,
        "batch_size": batch_size,
        "seed": seed,
        "name": f"{label}: batch {batch_size}, lr {learning_rate:.4g}, seed {seed}"[-200:],
        "tags": list(dict.fromkeys([*base.get("tags", []), tag_of(sweep.id)])),
        # Steps to target are interpolated between evaluations of the target's loss.
        "evaluation": dict(base.get("evaluation") or {}) | {"on": spec["target_on"]},
    }
    if sweep.lr_method != "scaled":
        fields["learning_rate"] = learning_rate
    try:
        body = JobCreate.model_validate(fields)
    except ValidationError as exc:
        raise _point_refused(
            (
                FieldError(("body", *error["loc"]), error["msg"], error["type"])
                for error in exc.errors()
            ),
            place,
        ) from None
    try:
        job = jobs_service.submit(session, body)
    except InvalidInput as exc:
        raise _point_refused(exc.errors, place) from None
    point = {
        "batch_size": batch_size,
        "learning_rate": learning_rate,
        "seed": seed,
        "round": round_,
    }
    repository.attach_job(session, job.id, sweep.id, point)
    return job.id


def create(session: Session, body: SweepCreate) -> SweepRead:
    """Create a sweep and queue its first round (batch sizes × rates × seeds jobs) in the
    caller's transaction: 404 for an unknown dataset; 422 naming the field (``batch_sizes[2]``,
    ``base.lr_schedule.gamma``, …) for anything a point could not run with."""
    datasets_service.get_dataset(session, body.dataset_id)  # 404 before anything else
    _check_request(body)
    method = _lr_method(body)
    spec = body.model_dump(mode="json", exclude={"dataset_id", "name"})
    if body.target_loss is None and body.target_fraction is None:
        spec["target_fraction"] = DEFAULT_TARGET_FRACTION
    sweep = Sweep(
        id=str(uuid.uuid4()),
        dataset_id=body.dataset_id,
        name=body.name,
        status="running",
        spec=spec,
        lr_method=method,
        round=0,
        lr_state={},
        created_at=utcnow(),
    )
    repository.add(session, sweep)
    first_seed = int(spec["base"]["seed"])
    for batch_index, batch_size in enumerate(body.batch_sizes):
        for rate_index, rate in enumerate(_first_rates(body, batch_size)):
            for k in range(body.seeds):
                _submit_point(
                    session,
                    sweep,
                    spec,
                    batch_size=batch_size,
                    learning_rate=rate,
                    seed=first_seed + k,
                    round_=0,
                    place=_PointPlace(batch_index, rate_index, method),
                )
    return get_sweep(session, sweep.id, settle=False)


# --- evaluations and analysis ---------------------------------------------------------------


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


def _analyse(session: Session, sweep: Sweep, jobs: Sequence[Job]) -> _Analysis:
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


def _is_interior(rate: float, rates: Iterable[float]) -> bool:
    tried = list(rates)
    return min(tried) < rate < max(tried)


# --- advancing ------------------------------------------------------------------------------


def _failure_summary(jobs: Sequence[Job]) -> str:
    kinds = Counter(job.error_code or job.status for job in jobs)
    counts = ", ".join(f"{count} {kind}" for kind, count in sorted(kinds.items()))
    example = next((job for job in jobs if job.error_message), None)
    detail = f"; e.g. job {example.id}: {example.error_message}" if example else ""
    return f"every point failed ({counts}){detail}"


def advance(session: Session, sweep_id: str) -> bool:
    """Move the sweep on once every job of its last round has finished: submit the next
    learning-rate round (searched rates whose best is at an edge), or end it — ``succeeded``,
    or ``failed`` with the reason when no point succeeded. Whether anything changed.

    Idempotent: with a round still running, or the sweep already finished, nothing happens.
    Runs in the caller's transaction (the worker's finish, or a read), holding the sweep's row
    lock, so concurrent callers take turns and the second sees the first's work.
    """
    sweep = repository.lock(session, sweep_id)
    if sweep is None or sweep.status != "running":
        return False
    jobs = repository.jobs_of(session, sweep_id)
    if any(job.status not in FINISHED_STATUSES for job in jobs):
        return False
    analysis = _analyse(session, sweep, jobs)
    state: dict[str, Any] = {}
    extend: list[tuple[int, float]] = []
    for batch_size, by_rate in sorted(analysis.grid.items()):
        chosen = best_rate(by_rate)
        interior = _is_interior(chosen, by_rate)
        state[str(batch_size)] = {
            "rates": sorted(by_rate),
            "chosen": chosen,
            "interior": interior,
        }
        if not interior and len(by_rate) > 1:
            beyond = chosen * SQRT2 if chosen >= max(by_rate) else chosen / SQRT2
            extend.append((batch_size, beyond))
    spec = sweep.spec
    search = spec.get("lr_search")
    next_round = sweep.round + 1
    if sweep.lr_method == "searched" and search and extend and next_round < search["max_rounds"]:
        batch_sizes = list(spec["batch_sizes"])
        for batch_size, rate in extend:
            for k in range(int(spec["seeds"])):
                _submit_point(
                    session,
                    sweep,
                    spec,
                    batch_size=batch_size,
                    learning_rate=rate,
                    seed=int(spec["base"]["seed"]) + k,
                    round_=next_round,
                    place=_PointPlace(batch_sizes.index(batch_size), 0, "searched"),
                )
        repository.set_state(session, sweep, round=next_round, lr_state=state)
        logger.info(
            "sweep %s: round %d, %d batch sizes extended", sweep_id, next_round, len(extend)
        )
        return True
    succeeded = any(job.status == "succeeded" for job in jobs)
    status: SweepStatus = "succeeded" if succeeded else "failed"
    repository.set_state(
        session,
        sweep,
        status=status,
        lr_state=state,
        error_message=None if succeeded else _failure_summary(jobs),
        finished_at=utcnow(),
    )
    logger.info("sweep %s: %s after round %d", sweep_id, status, sweep.round)
    return True


def job_finished(session: Session, job_id: str) -> bool:
    """The worker's hook after it finished ``job_id`` (same transaction): advance the job's
    sweep, if it has one. Whether anything changed."""
    sweep_id = repository.sweep_of_job(session, job_id)
    return advance(session, sweep_id) if sweep_id is not None else False


# --- reading --------------------------------------------------------------------------------


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


def _run_read(run: _Run) -> RunRead:
    return RunRead(
        job_id=run.job.id,
        learning_rate=run.learning_rate,
        seed=run.seed,
        round=run.round,
        status=run.job.status,
        best_loss=run.best_loss,
        to_target=_to_target([run.crossing]),
    )


def _last(values: Sequence[float]) -> float | None:
    return values[-1] if values else None


def _point_read(batch_size: int, by_rate: Mapping[float, Sequence[_Run]]) -> PointRead:
    every = [run for runs in by_rate.values() for run in runs]
    complete = all(run.job.status in FINISHED_STATUSES for run in every)
    chosen = best_rate(by_rate)
    runs = by_rate[chosen]
    interior = _is_interior(chosen, by_rate) if len(by_rate) >= 3 else None
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


def _science(analysis: _Analysis) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
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


def _epoch_noise(record: Mapping[str, Any]) -> EpochNoise | None:
    noise = record.get("noise_scale")
    if not isinstance(noise, Mapping):
        return None
    values = [finite_or_none(noise.get(k)) for k in ("trace_sigma", "grad_sq_norm", "loss_level")]
    b_simple = finite_or_none(noise.get("b_simple"))
    if any(v is None for v in values) or (b_simple is not None and b_simple <= 0.0):
        return None
    trace, grad_sq, loss = (float(v or 0.0) for v in values)
    return EpochNoise(int(record["epoch"]), b_simple, trace, grad_sq, loss)


def _noise_scale(analysis: _Analysis, train_rows: int) -> list[dict[str, Any]]:
    """Per run of each batch size's chosen rate that measured it (``base.noise_scale``):
    B_simple over the last quarter of the run with its loss level, correction and trend."""
    out: list[dict[str, Any]] = []
    for batch_size, by_rate in sorted(analysis.grid.items()):
        chosen = best_rate(by_rate)
        for run in by_rate[chosen]:
            epochs = [e for e in map(_epoch_noise, run.records) if e is not None]
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


def advice_for_job(session: Session, job: JobRead) -> BatchSizeAdviceRead | None:
    """Where ``job``'s batch size sits against its own late noise scale
    (:func:`~service.sweeps.advice.advise_batch_size` over
    :func:`~service.sweeps.noise.summarize_noise_scale` of its measured epochs, N = its
    training rows); None while no epoch carries a noise-scale record. Lives here, not in
    ``service.jobs``, because the advice maths is the sweeps' and jobs sit below sweeps."""
    rows = repository.epoch_records(session, [job.id])[job.id]
    measured = [
        (noise, record) for _, record, _ in rows if (noise := _epoch_noise(record)) is not None
    ]
    if not measured:
        return None
    dataset = datasets_service.get_dataset(session, job.dataset_id)
    train_rows = split_sizes(dataset.n_rows, float(job.config.get("validation_split") or 0.0))[0]
    try:
        summary = summarize_noise_scale([noise for noise, _ in measured], train_rows=train_rows)
    except SweepDataError as exc:  # a malformed record written by hand: no advice, say why
        logger.warning("job %s: no batch-size advice: %s", job.id, exc)
        return None
    # The batch in force when the late noise scale was measured (a schedule may have grown it).
    last_batch = measured[-1][1].get("batch_size") or job.config.get("batch_size")
    batch_size = int(last_batch) if last_batch else train_rows
    advice = advise_batch_size(batch_size, summary)
    return BatchSizeAdviceRead(
        batch_size=advice.batch_size,
        message=advice.message,
        verdict=advice.verdict,
        noise_scale=advice.noise_scale,
        b_simple=summary.b_simple,
        loss_level=finite_or_none(advice.loss_level),
        uncertainty_factor=advice.uncertainty_factor,
        ratio=advice.ratio,
        window=list(summary.window),
    )


def _summary_fields(sweep: Sweep) -> dict[str, Any]:
    return {
        "id": sweep.id,
        "dataset_id": sweep.dataset_id,
        "name": sweep.name,
        "status": _status(sweep.status),
        "lr_method": _method(sweep.lr_method),
        "round": sweep.round,
        "batch_sizes": list(sweep.spec["batch_sizes"]),
        "created_at": sweep.created_at,
        "finished_at": sweep.finished_at,
        "links": links(sweep.id, sweep.dataset_id),
    }


def _status(value: str) -> SweepStatus:
    for status in ("running", "succeeded", "failed", "cancelled"):
        if value == status:
            return status
    raise ValueError(f"unknown sweep status {value!r}")


def _method(value: str) -> LRMethod:
    for method in ("given", "searched", "scaled"):
        if value == method:
            return method
    raise ValueError(f"unknown learning-rate method {value!r}")


def to_read(session: Session, sweep: Sweep) -> SweepRead:
    """The API's view of a sweep, analysed from its jobs' histories as they are now."""
    jobs = repository.jobs_of(session, sweep.id)
    analysis = _analyse(session, sweep, jobs)
    points = [_point_read(b, by_rate) for b, by_rate in sorted(analysis.grid.items())]
    fit, recommendation = _science(analysis)
    dataset = datasets_service.get_dataset(session, sweep.dataset_id)
    validation_split = float(sweep.spec["base"]["validation_split"])
    train_rows = split_sizes(dataset.n_rows, validation_split)[0]
    return SweepRead(
        **_summary_fields(sweep),
        partial=sweep.status == "running",
        seeds=int(sweep.spec["seeds"]),
        jobs=dict(Counter(job.status for job in jobs)),
        target=analysis.target,
        points=points,
        fit=fit,
        noise_scale=_noise_scale(analysis, train_rows),
        recommendation=recommendation,
        error=sweep.error_message,
        spec=sweep.spec,
    )


def _get_row(session: Session, sweep_id: str) -> Sweep:
    sweep = repository.get(session, sweep_id)
    if sweep is None:
        raise NotFound(f"No sweep with id {sweep_id!r}.")
    return sweep


def analyse_sweep(session: Session, sweep_id: str) -> tuple[Sweep, _Analysis]:
    """The sweep row (404 otherwise) and its runs as their histories stand now: the target,
    each run's evaluations and crossing, and the grid batch size → rate → runs."""
    sweep = _get_row(session, sweep_id)
    return sweep, _analyse(session, sweep, repository.jobs_of(session, sweep.id))


def get_sweep(session: Session, sweep_id: str, *, settle: bool = True) -> SweepRead:
    """The sweep with ``sweep_id`` (404 otherwise), with points and analysis.

    ``settle``: a running sweep whose jobs have all finished is advanced first — a point
    cancelled through ``POST /v1/jobs/{id}/cancel`` while queued ends without a worker, so no
    worker's finish would have advanced it.
    """
    sweep = _get_row(session, sweep_id)
    if settle and sweep.status == "running" and repository.count_unfinished(session, sweep_id) == 0:
        advance(session, sweep_id)
        sweep = _get_row(session, sweep_id)
    return to_read(session, sweep)


def list_sweeps(session: Session, *, limit: int, cursor: str | None = None) -> SweepPage:
    """A page of up to ``limit`` sweeps, newest first, after ``cursor`` (400 if malformed)."""
    after = decode_cursor(cursor) if cursor is not None else None
    rows = repository.list_page(session, limit=limit + 1, after=after)
    has_more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = encode_cursor(rows[-1].created_at, rows[-1].id) if has_more else None
    return SweepPage(
        items=[SweepSummary(**_summary_fields(row)) for row in rows], next_cursor=next_cursor
    )


def cancel(session: Session, sweep_id: str) -> SweepRead:
    """Cancel a running sweep: its queued jobs at once, its running ones flagged for their
    workers (as ``POST /v1/jobs/{id}/cancel``), the sweep ``cancelled``. 409 once finished.

    Order matters on PostgreSQL: the jobs first, then the sweep's lock — a worker finishing a
    job holds that job's row and then waits for the sweep's, so taking the sweep's first and
    then waiting for the job would deadlock. A round submitted in between is cancelled after
    the lock (skipping rows a finishing worker holds).
    """
    sweep = _get_row(session, sweep_id)
    if sweep.status in FINISHED_SWEEP_STATUSES:
        raise Conflict(
            f"Sweep {sweep_id!r} has already finished ({sweep.status}); nothing to cancel."
        )
    seen_round = sweep.round
    now = utcnow()
    repository.cancel_unfinished_jobs(session, sweep_id, now=now)
    locked = repository.lock(session, sweep_id)
    if locked is None:
        raise NotFound(f"No sweep with id {sweep_id!r}.")
    if locked.status in FINISHED_SWEEP_STATUSES:
        raise Conflict(
            f"Sweep {sweep_id!r} has just finished ({locked.status}); nothing to cancel."
        )
    if locked.round != seen_round:
        repository.cancel_unfinished_jobs(session, sweep_id, now=now, skip_locked=True)
    repository.set_state(session, locked, status="cancelled", finished_at=now)
    return to_read(session, locked)


__all__ = [
    "SWEEPS_PATH",
    "advance",
    "advice_for_job",
    "analyse_sweep",
    "best_rate",
    "cancel",
    "create",
    "critical_fit",
    "evaluations_of",
    "get_sweep",
    "job_finished",
    "links",
    "list_sweeps",
    "tag_of",
    "to_read",
]
