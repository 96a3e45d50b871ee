"""A sweep's points as jobs: queueing one, and naming a refused one in the sweep request's terms.

Every point is an ordinary job (``POST /v1/jobs``'s validation and row, via
:mod:`service.jobs.service`) tagged ``sweep:<id>`` and carrying ``sweep_id`` and
``sweep_point`` = {batch_size, learning_rate, seed, round}. A point the jobs refuse is a 422
naming the field as the sweep request spells it (``batch_sizes[2]``, ``base.lr_schedule.gamma``,
…). The lifecycle (:mod:`service.sweeps.service`) queues the first round through here, the
orchestration (:mod:`service.sweeps.orchestration`) the later ones.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError
from sqlalchemy.orm import Session

from service.db.tables import Sweep
from service.errors import FieldError, InvalidInput, body_errors
from service.jobs import service as jobs_service
from service.jobs.limits import JobLimits
from service.jobs.schemas import JobCreate
from service.sweeps import repository
from service.sweeps.schemas import LRMethod

__all__ = ["PointPlace", "dotted", "submit_point", "tag_of"]


def tag_of(sweep_id: str) -> str:
    """The tag every point job of the sweep carries."""
    return f"sweep:{sweep_id}"


def dotted(loc: Sequence[str | int]) -> str:
    """("body", "base", "lr_schedule", "gamma") → "base.lr_schedule.gamma"; indexes as [i]."""
    out = ""
    for part in loc[1:] if loc and loc[0] == "body" else loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


@dataclass(frozen=True)
class PointPlace:
    """Where a point's values come from in the request, to name them in a 422."""

    batch_index: int
    rate_index: int
    method: LRMethod


def _request_loc(loc: Sequence[str | int], place: PointPlace) -> tuple[str | int, ...]:
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


def _point_refused(errors: Iterable[FieldError], place: PointPlace) -> InvalidInput:
    mapped = [FieldError(_request_loc(e.loc, place), e.msg, e.type) for e in errors]
    first = mapped[0]
    return InvalidInput(f"The sweep cannot run: {dotted(first.loc)}: {first.msg}.", errors=mapped)


def submit_point(
    session: Session,
    sweep: Sweep,
    spec: Mapping[str, Any],
    *,
    batch_size: int,
    learning_rate: float,
    round_: int,
    place: PointPlace,
    limits: JobLimits | None = None,
) -> None:
    """Queue one point as ordinary jobs, one per seed of the sweep (the base's seed, then the
    next ``spec["seeds"] - 1``), and attach them."""
    first_seed = int(spec["base"]["seed"])
    for seed in range(first_seed, first_seed + int(spec["seeds"])):
        _submit_run(session, sweep, spec, batch_size, learning_rate, seed, round_, place, limits)


def _submit_run(
    session: Session,
    sweep: Sweep,
    spec: Mapping[str, Any],
    batch_size: int,
    learning_rate: float,
    seed: int,
    round_: int,
    place: PointPlace,
    limits: JobLimits | None,
) -> None:
    """One seed of a point, as an ordinary job (jobs' own validation, and ``limits``' steps
    and runtime; the sweep counts its queue room itself), attached to the sweep."""
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
        raise _point_refused(body_errors(exc.errors()), place) from None
    try:
        # The sweep's tenant owns its points (the worker submits later rounds: no request).
        job = jobs_service.submit(session, body, tenant=sweep.tenant, limits=limits)
    except InvalidInput as exc:
        raise _point_refused(exc.errors, place) from None
    point = {
        "batch_size": batch_size,
        "learning_rate": learning_rate,
        "seed": seed,
        "round": round_,
    }
    repository.attach_job(session, job.id, sweep.id, point)
