"""Sweeps' lifecycle: create (validate the request, queue its first round), list, get (with the
batch-size analysis), cancel, and :func:`to_read`, the API's view of a sweep.

Every point is an ordinary job (see :mod:`service.sweeps.points`); the sweep row and its first
round are inserted in the caller's transaction, so a refused point leaves nothing behind. The
analysis of the points' histories lives in :mod:`service.sweeps.analysis` (its noise-scale
reads in :mod:`service.sweeps.noise_read`), the later learning-rate rounds in
:mod:`service.sweeps.orchestration`; the maths is :mod:`service.science`.
"""

from __future__ import annotations

import uuid
from collections import Counter
from dataclasses import replace
from typing import Any

from sqlalchemy.orm import Session

from service.core import split_sizes
from service.core.schedules import scale_lr
from service.datasets import service as datasets_service
from service.db import utcnow
from service.db.tables import Sweep
from service.errors import FieldError, InvalidInput
from service.jobs import groups
from service.jobs import service as jobs_service
from service.jobs.limits import JobLimits, queue_room
from service.jobs.read_schemas import JobCounts
from service.links import links as resource_links
from service.pagination import decode_cursor, page_of
from service.science import first_rates
from service.sweeps import repository
from service.sweeps.analysis import analyse, fit_and_recommendation, get_row, point_read
from service.sweeps.noise_read import noise_scale, noise_scale_at_target
from service.sweeps.orchestration import advance
from service.sweeps.points import PointPlace, dotted, submit_point, tag_of
from service.sweeps.read_schemas import SweepLinks, SweepPage, SweepRead, SweepSummary
from service.sweeps.schemas import (
    DEFAULT_TARGET_FRACTION,
    FINISHED_SWEEP_STATUSES,
    MAX_FIRST_ROUND_JOBS,
    LRMethod,
    SweepCreate,
    SweepSpec,
    SweepStatus,
)

__all__ = ["SWEEPS_PATH", "cancel", "create", "get_sweep", "links", "list_sweeps", "to_read"]

SWEEPS_PATH = "/v1/sweeps"


def links(sweep_id: str, dataset_id: str) -> SweepLinks:
    """The URLs of a sweep's resources."""
    jobs = f"{jobs_service.JOBS_PATH}?tag={tag_of(sweep_id)}"
    return SweepLinks(
        **resource_links(
            SWEEPS_PATH, sweep_id, dataset_id=dataset_id, subresources=("cancel",), jobs=jobs
        )
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
        f"The sweep cannot run: {dotted(loc)}: {message}.",
        errors=[FieldError(loc, message, "value_error")],
    )


def _check_request(body: SweepCreate) -> int:
    """The cross-field rules, each a 422 naming the exact field; the first round's jobs."""
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
    return jobs


def _first_rates(body: SweepCreate, batch_size: int) -> list[float]:
    if body.learning_rates is not None:
        return list(body.learning_rates)
    if body.lr_search is not None:
        search = body.lr_search
        return first_rates(search.start, batch_size, min(body.batch_sizes), search.scaling)
    base = body.base.model_dump()
    return [
        scale_lr(
            base["learning_rate"], batch_size, base["reference_batch_size"], base["lr_scaling"]
        )
    ]


def create(
    session: Session, body: SweepCreate, *, tenant: str, limits: JobLimits | None = None
) -> SweepRead:
    """Create ``tenant``'s sweep and queue its first round (batch sizes × rates × seeds jobs,
    the tenant's too) in the caller's transaction: 404 for an unknown dataset (another
    tenant's included); 422 naming the field (``batch_sizes[2]``, ``base.lr_schedule.gamma``,
    …) for anything a point could not run with.

    ``limits`` (None checks none): every point is held to the steps and runtime limits (422
    naming ``base.epochs`` and ``batch_sizes[i]``, or ``base.max_runtime_s``); without a
    ``base.max_runtime_s`` the spec gets the limit, so later rounds inherit it. A first round
    larger than the queued-jobs limit is a 422 (it could never fit), one larger than the room
    left a 429. Later rounds, queued by the worker once a round has finished, are not counted
    against the room: refusing them would strand a half-run sweep, and each is at most
    batch sizes × seeds jobs.
    """
    # 404 before anything else.
    datasets_service.get_dataset(session, body.dataset_id, tenant=tenant)
    if limits is not None:
        limits = limits.for_tenant(session, tenant)
    first_round = _check_request(body)
    max_queued = None if limits is None else limits.max_queued_jobs
    if max_queued is not None and first_round > max_queued:
        raise _refuse(
            ("body", "batch_sizes"),
            f"batch sizes × learning rates × seeds is {first_round} jobs, more than the "
            f"{max_queued} queued jobs a tenant may have (BATCHWISE_TENANT_MAX_QUEUED_JOBS); "
            "ask for fewer",
        )
    method = _lr_method(body)
    spec = body.model_dump(mode="json", exclude={"dataset_id", "name"})
    if body.target_loss is None and body.target_fraction is None:
        spec["target_fraction"] = DEFAULT_TARGET_FRACTION
    point_limits = None
    if limits is not None:
        try:
            spec["base"]["max_runtime_s"] = limits.runtime_for(spec["base"]["max_runtime_s"])
        except InvalidInput as exc:
            raise _refuse(("body", "base", "max_runtime_s"), exc.errors[0].msg) from None
        point_limits = replace(limits, max_queued_jobs=None)  # counted once, for the round
    sweep = Sweep(
        id=str(uuid.uuid4()),
        tenant=tenant,
        dataset_id=body.dataset_id,
        name=body.name,
        status="running",
        spec=spec,
        lr_method=method,
        round=0,
        lr_state={},
        created_at=utcnow(),
    )
    what = f"this sweep's first round of {first_round} jobs"
    with queue_room(session, tenant, limits, adding=first_round, what=what):
        repository.add(session, sweep)
        for batch_index, batch_size in enumerate(body.batch_sizes):
            for rate_index, rate in enumerate(_first_rates(body, batch_size)):
                submit_point(
                    session,
                    sweep,
                    spec,
                    batch_size=batch_size,
                    learning_rate=rate,
                    round_=0,
                    place=PointPlace(batch_index, rate_index, method),
                    limits=point_limits,
                )
    return get_sweep(session, sweep.id, tenant=tenant, settle=False)


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
    analysis = analyse(session, sweep, jobs)
    points = [
        point_read(b, by_rate, sweep.lr_method) for b, by_rate in sorted(analysis.grid.items())
    ]
    fit, recommendation = fit_and_recommendation(analysis, sweep_failed=sweep.status == "failed")
    dataset = datasets_service.get_dataset(session, sweep.dataset_id)
    validation_split = float(sweep.spec["base"]["validation_split"])
    train_rows = split_sizes(dataset.n_rows, validation_split)[0]
    return SweepRead(
        **_summary_fields(sweep),
        partial=sweep.status == "running",
        seeds=int(sweep.spec["seeds"]),
        jobs=JobCounts(**Counter(job.status for job in jobs)),
        target=analysis.target,
        points=points,
        fit=fit,
        noise_scale=noise_scale(analysis, train_rows),
        noise_scale_at_target=noise_scale_at_target(analysis, train_rows),
        recommendation=recommendation,
        error=sweep.error_message,
        spec=SweepSpec.model_validate(sweep.spec),
    )


def get_sweep(session: Session, sweep_id: str, *, tenant: str, settle: bool = True) -> SweepRead:
    """``tenant``'s sweep with ``sweep_id`` (404 otherwise, another tenant's included), with
    points and analysis.

    ``settle``: a running sweep whose jobs have all finished is advanced first — a point
    cancelled through ``POST /v1/jobs/{id}/cancel`` while queued ends without a worker, so no
    worker's finish would have advanced it.
    """
    sweep = get_row(session, sweep_id, tenant=tenant)
    if settle and sweep.status == "running" and repository.count_unfinished(session, sweep_id) == 0:
        advance(session, sweep_id)
        sweep = get_row(session, sweep_id, tenant=tenant)
    return to_read(session, sweep)


def list_sweeps(
    session: Session, *, tenant: str, limit: int, cursor: str | None = None
) -> SweepPage:
    """A page of up to ``limit`` of ``tenant``'s sweeps, newest first, after ``cursor`` (400
    if malformed)."""
    after = decode_cursor(cursor) if cursor is not None else None
    rows = repository.list_page(session, tenant=tenant, limit=limit + 1, after=after)
    rows, next_cursor = page_of(rows, limit)
    return SweepPage(
        items=[SweepSummary(**_summary_fields(row)) for row in rows], next_cursor=next_cursor
    )


def cancel(session: Session, sweep_id: str, *, tenant: str) -> SweepRead:
    """Cancel a running sweep: its queued jobs at once, its running ones flagged for their
    workers, the sweep ``cancelled``; 409 once finished (:func:`service.jobs.groups.cancel`)."""
    sweep = get_row(session, sweep_id, tenant=tenant)
    locked = groups.cancel(
        session, sweep, repository, kind="Sweep", finished=FINISHED_SWEEP_STATUSES
    )
    return to_read(session, locked)
