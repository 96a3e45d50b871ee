"""Probes' lifecycle: create (validate the request, queue the first round of its checkpoints),
list, get (with the critical batch per checkpoint), cancel; and the warmup a job's
``batch_size_schedule: {"kind": "warmup", "probe_id": …}`` follows (:func:`warmup_points_for`).

Every branch is an ordinary job with ``init_from`` (:mod:`service.probes.branches`); the probe
row and its first round are inserted in the caller's transaction, so a refused branch leaves
nothing behind. Resolving the request is :mod:`service.probes.plan`, reading it
:mod:`service.probes.reads`, the later rounds :mod:`service.probes.orchestration`; the maths is
:mod:`service.science.critical`.
"""

from __future__ import annotations

import math
import uuid
from dataclasses import replace

from sqlalchemy.orm import Session

from service.core import split_sizes
from service.datasets import service as datasets_service
from service.db import utcnow
from service.db.tables import Probe
from service.errors import Conflict, NotFound
from service.jobs import groups
from service.jobs import service as jobs_service
from service.jobs.checkpoints import available_epochs, keep_more
from service.jobs.limits import JobLimits, queue_room
from service.pagination import decode_cursor, page_of
from service.probes import repository
from service.probes.analysis import source_epochs
from service.probes.orchestration import advance, submit_first_round
from service.probes.plan import refuse, resolve_epochs, resolve_multipliers
from service.probes.reads import PROBES_PATH, summary, to_read
from service.probes.schemas import (
    FINISHED_PROBE_STATUSES,
    MAX_FIRST_ROUND_JOBS,
    ProbeCreate,
    ProbePage,
    ProbeRead,
)
from service.science.critical import warmup_points as warmup_from_measurements

__all__ = [
    "PROBES_PATH",
    "cancel",
    "create",
    "get_probe",
    "list_probes",
    "warmup_points",
    "warmup_points_for",
]


def create(
    session: Session, body: ProbeCreate, *, tenant: str, limits: JobLimits | None = None
) -> ProbeRead:
    """Create ``tenant``'s probe of ``body.job_id`` and queue the first round of every
    checkpoint the source has (the rest wait for a running source): 404 for an unknown source
    (another tenant's included); 409 for a source that has not started; 422 naming the field
    for anything a branch could not run with, or a checkpoint the source did not keep."""
    source = jobs_service.get_row(session, body.job_id, tenant=tenant)
    if limits is not None:
        limits = limits.for_tenant(session, tenant)
    if source.status == "queued" or (source.epoch < 1 and source.status == "running"):
        raise Conflict(
            f"Job {source.id!r} has no finished epoch yet ({source.status}): probe it once "
            "its first epoch has ended."
        )
    config = source.config
    if config.get("batch_size") is None:
        raise refuse(
            ("body", "job_id"),
            "the source job trains on the whole training set at once (batch_size null): "
            "there is no larger batch to branch at; probe a minibatch job",
        )
    if body.loss_on == "validation" and float(config["validation_split"]) <= 0.0:
        raise refuse(
            ("body", "loss_on"),
            "'validation' needs a source with a validation split (validation_split > 0); "
            "use 'train'",
        )
    dataset = datasets_service.get_dataset(session, source.dataset_id, tenant=tenant)
    train_rows = split_sizes(dataset.n_rows, float(config["validation_split"]))[0]
    ready, pending = resolve_epochs(body, source, available_epochs(session, source))
    records = repository.epoch_records(session, [source.id])[source.id]
    evaluated_on = (config.get("evaluation") or {}).get("on")
    epochs = source_epochs(records, body.loss_on, evaluated_on)
    batch_sizes = {
        str(e): int(epochs[e].batch_size or config["batch_size"]) if e in epochs else None
        for e in ready
    }
    largest = max([b for b in batch_sizes.values() if b] or [int(config["batch_size"])])
    window = body.window_samples if body.window_samples is not None else train_rows
    multipliers = resolve_multipliers(body, largest, train_rows, window)
    rates = 3 if body.lr == "search" else 1
    jobs = len(ready) * len(multipliers) * rates * body.seeds
    cap = MAX_FIRST_ROUND_JOBS
    if limits is not None and limits.max_queued_jobs is not None:
        cap = min(cap, limits.max_queued_jobs)
    if jobs > cap:
        raise refuse(
            ("body", "multipliers"),
            f"checkpoints × multipliers × first rates × seeds is {jobs} jobs, more than the "
            f"{cap} one probe may queue at once; ask for fewer",
        )
    spec = body.model_dump(mode="json", exclude={"job_id", "name"}) | {
        "at_epochs": sorted(ready + pending),
        "multipliers": multipliers,
        "asked_multipliers": body.multipliers,
        "window_samples": window,
        "train_rows": train_rows,
        "batch_sizes": {**batch_sizes, **{str(e): int(config["batch_size"]) for e in pending}},
        "pending": pending,
        "dropped": {},
        "max_runtime_s": None,
        "source_evaluated_on": evaluated_on,
    }
    branch_limits = None
    if limits is not None:
        spec["max_runtime_s"] = limits.runtime_for(None)
        branch_limits = replace(limits, max_queued_jobs=None)  # counted once, for the round
    probe = Probe(
        id=str(uuid.uuid4()),
        tenant=tenant,
        job_id=source.id,
        dataset_id=source.dataset_id,
        name=body.name,
        status="running",
        spec=spec,
        round=0,
        created_at=utcnow(),
    )
    if pending:
        keep_more(session, source.id, pending, tenant=tenant)
    with queue_room(session, tenant, limits, adding=jobs, what=f"this probe's {jobs} branches"):
        repository.add(session, probe)
        for epoch in ready:
            submit_first_round(
                session, probe, source, epoch, epochs.get(epoch), round_=0, limits=branch_limits
            )
    return to_read(session, probe)


def _row(session: Session, probe_id: str, *, tenant: str) -> Probe:
    probe = repository.get(session, probe_id, tenant=tenant)
    if probe is None:
        raise NotFound(f"No probe with id {probe_id!r}.")
    return probe


def get_probe(session: Session, probe_id: str, *, tenant: str, settle: bool = True) -> ProbeRead:
    """``tenant``'s probe (404 otherwise), with the critical batch per checkpoint. ``settle``:
    a running probe whose branches have all finished is advanced first (a branch cancelled
    while queued ends without a worker to advance it)."""
    probe = _row(session, probe_id, tenant=tenant)
    if settle and probe.status == "running" and repository.count_unfinished(session, probe_id) == 0:
        advance(session, probe_id)
        probe = _row(session, probe_id, tenant=tenant)
    return to_read(session, probe)


def list_probes(
    session: Session, *, tenant: str, limit: int, cursor: str | None = None
) -> ProbePage:
    """A page of up to ``limit`` of ``tenant``'s probes, newest first, after ``cursor``."""
    after = decode_cursor(cursor) if cursor is not None else None
    rows = repository.list_page(session, tenant=tenant, limit=limit + 1, after=after)
    rows, next_cursor = page_of(rows, limit)
    return ProbePage(items=[summary(row) for row in rows], next_cursor=next_cursor)


def cancel(session: Session, probe_id: str, *, tenant: str) -> ProbeRead:
    """Cancel a running probe: its queued branches at once, its running ones flagged for
    their workers, the probe ``cancelled``; 409 once finished
    (:func:`service.jobs.groups.cancel`)."""
    probe = _row(session, probe_id, tenant=tenant)
    locked = groups.cancel(
        session, probe, repository, kind="Probe", finished=FINISHED_PROBE_STATUSES
    )
    return to_read(session, locked)


# --- the warmup a job follows ----------------------------------------------------------------


def warmup_points(probe: ProbeRead) -> list[tuple[int, int]]:
    """The batch-size warmup the probe measured (Merrill et al. 2025): start at the first
    measured critical batch rounded down to the source's batch × 2^j; double where the
    measured critical batch has grown past twice the current one. An open-ended bracket counts
    as its lower end. Empty when no checkpoint has a critical batch."""
    measured = [
        (float(c.samples_seen), float(c.critical.batch_size), int(c.batch_size))
        for c in probe.checkpoints
        if c.samples_seen is not None and c.critical.batch_size and c.batch_size
    ]
    if not measured:
        return []
    measured.sort()
    base = measured[0][2]
    start = base * 2 ** math.floor(math.log2(max(measured[0][1] / base, 1.0)) + 1e-9)
    train_rows = probe.spec.train_rows
    return warmup_from_measurements(
        [(samples, critical) for samples, critical, _ in measured],
        start_batch=start,
        max_batch=max(train_rows, start),
    )


def warmup_points_for(session: Session, probe_id: str, *, tenant: str) -> list[tuple[int, int]]:
    """:func:`warmup_points` of ``tenant``'s probe: 404 for an unknown probe (another tenant's
    included); 422 on ``batch_size_schedule.probe_id`` while it runs or when it measured
    nothing."""
    probe = get_probe(session, probe_id, tenant=tenant)
    loc = ("body", "batch_size_schedule", "probe_id")
    if probe.status == "running":
        raise refuse(loc, f"probe {probe_id} is still running; use it once it has finished")
    points = warmup_points(probe)
    if not points:
        raise refuse(
            loc, f"probe {probe_id} measured no critical batch ({probe.status}); run another"
        )
    return points
