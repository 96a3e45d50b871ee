"""A probe's branches as jobs: queueing one, and naming a refused one in the probe request's
terms.

Every branch is an ordinary job (``POST /v1/jobs``'s validation and row, via
:mod:`service.jobs.service`) warm-started from the source job's checkpoint at the end of
``epoch`` (``init_from``), tagged ``probe:<id>`` and named in ``probe_branches``. It keeps the
source's config but for what a branch sets: the batch (multiplier × the source's batch there,
held constant), a constant learning rate, the seed, ``epochs`` (enough to cover the window),
an evaluation of the compared loss at every epoch end, no early stopping, no noise scale.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError
from sqlalchemy.orm import Session

from service.db.tables import Probe, ProbeBranch
from service.errors import FieldError, InvalidInput, body_errors
from service.jobs import service as jobs_service
from service.jobs.limits import JobLimits
from service.jobs.schemas import JobCreate
from service.probes import repository

__all__ = ["BranchPlace", "branch_epochs", "dotted", "submit_branch", "tag_of"]

#: Source config fields a branch never copies: server-side, or set by the branch itself.
_NOT_COPIED = ("max_in_memory_bytes", "split_seed")


def tag_of(probe_id: str) -> str:
    """The tag every branch job of the probe carries."""
    return f"probe:{probe_id}"


def dotted(loc: Sequence[str | int]) -> str:
    """("body", "at_epochs", 2) → "at_epochs[2]"."""
    out = ""
    for part in loc[1:] if loc and loc[0] == "body" else loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def branch_epochs(epoch: int, window_samples: int, train_rows: int) -> int:
    """The epoch a branch from ``epoch`` ends at: enough whole epochs to cover the window."""
    return epoch + max(1, math.ceil(window_samples / train_rows))


def _per_decade(spec: Mapping[str, Any]) -> int:
    whole = int(spec["window_samples"]) % int(spec["train_rows"]) == 0
    return 1 if whole else 64


@dataclass(frozen=True)
class BranchPlace:
    """Where a branch's values come from in the request, to name them in a 422."""

    epoch_index: int
    multiplier_index: int | None


def _request_loc(loc: Sequence[str | int], place: BranchPlace) -> tuple[str | int, ...]:
    parts = list(loc[1:] if loc and loc[0] == "body" else loc)
    name = parts[0] if parts else ""
    if name == "init_from":
        return ("body", "at_epochs", place.epoch_index)
    if name == "batch_size" and place.multiplier_index is not None:
        return ("body", "multipliers", place.multiplier_index)
    if name == "learning_rate":
        return ("body", "lr")
    if name == "epochs":
        return ("body", "window_samples")
    return ("body", "job_id")


def _refused(errors: Iterable[FieldError], place: BranchPlace) -> InvalidInput:
    mapped = [FieldError(_request_loc(e.loc, place), e.msg, e.type) for e in errors]
    first = mapped[0]
    return InvalidInput(f"The probe cannot run: {dotted(first.loc)}: {first.msg}.", errors=mapped)


def submit_branch(
    session: Session,
    probe: Probe,
    source_config: Mapping[str, Any],
    *,
    epoch: int,
    multiplier: int,
    batch_size: int,
    learning_rate: float,
    seed: int,
    round_: int,
    ends_at_epoch: int,
    place: BranchPlace,
    limits: JobLimits | None = None,
) -> str:
    """Queue one branch (one seed) as an ordinary job of the probe's tenant; its job id."""
    spec = probe.spec
    fields = {k: v for k, v in source_config.items() if k not in _NOT_COPIED}
    label = probe.name or f"probe {probe.id[:8]}"
    fields |= {
        "dataset_id": probe.dataset_id,
        "init_from": {"job_id": probe.job_id, "epoch": epoch},
        "batch_size": batch_size,
        "batch_size_schedule": {"kind": "constant"},
        "learning_rate": learning_rate,
        "lr_schedule": {"kind": "constant"},
        "lr_scaling": "none",
        "seed": seed,
        "epochs": ends_at_epoch,
        "early_stopping": None,
        "noise_scale": False,
        # Every epoch end is evaluated; a window that ends mid-epoch needs log-spaced
        # evaluations near its end too (64 a decade: ~4% apart) to interpolate between.
        "evaluation": {"on": spec["loss_on"], "per_decade": _per_decade(spec)},
        "max_runtime_s": spec.get("max_runtime_s"),
        "name": f"{label}: epoch {epoch}, ×{multiplier}, lr {learning_rate:.4g}, seed {seed}"[
            -200:
        ],
        "tags": [tag_of(probe.id)],
    }
    try:
        body = JobCreate.model_validate(fields)
    except ValidationError as exc:
        raise _refused(body_errors(exc.errors()), place) from None
    try:
        job = jobs_service.submit(session, body, tenant=probe.tenant, limits=limits)
    except InvalidInput as exc:
        raise _refused(exc.errors, place) from None
    repository.attach_branch(
        session,
        ProbeBranch(
            job_id=job.id,
            probe_id=probe.id,
            epoch=epoch,
            multiplier=multiplier,
            learning_rate=learning_rate,
            seed=seed,
            round=round_,
        ),
    )
    return job.id
