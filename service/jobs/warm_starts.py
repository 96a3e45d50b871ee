"""Submit side of warm starts (``init_from``) and of the warmup's probe: what a job starts from,
refused with the field named when it cannot.

- the source: one of the tenant's jobs (another's is the same 404 as a missing one), on the
  same dataset (422 ``dataset_id``), with a checkpoint at the epoch (422 ``init_from.epoch``,
  listing the epochs it has);
- the config: the model and its rows as the source's (422 naming the field,
  :data:`service.core.warm_start.FIXED_FIELDS`), the same optimizer unless
  ``reset_optimizer`` (422 ``optimizer``), ``epochs`` past the epoch (422 ``epochs``). A seed
  other than the source's keeps the source's split (``split_seed``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from service.core import Checkpoint, CoreConfigError, TrainConfig
from service.core.warm_start import warm_start_config_error
from service.errors import FieldError, InvalidInput, NotFound
from service.jobs import checkpoints, repository
from service.jobs.schemas import JobCreate

__all__ = ["ProbeResolver", "WarmStart", "resolve_probe_points", "resolve_warm_start"]

#: The probes' ``warmup_points_for(session, probe_id, tenant=…)``, bound to a request.
ProbeResolver = Callable[[str], list[tuple[int, int]]]


@dataclass(frozen=True)
class WarmStart:
    """What a warm-started job starts from: its ``config`` (``split_seed`` set when needed),
    the checkpoint ``data``, and the ``epoch`` and ``samples_seen`` there."""

    config: TrainConfig
    data: bytes
    epoch: int
    samples_seen: int
    init_from: dict[str, Any]


def _refuse(loc: tuple[str | int, ...], message: str) -> InvalidInput:
    where = ".".join(str(part) for part in loc[1:])
    return InvalidInput(f"{where}: {message}.", errors=[FieldError(loc, message, "value_error")])


def resolve_probe_points(body: JobCreate, resolve: ProbeResolver | None) -> JobCreate:
    """``body`` with a warmup's ``probe_id`` turned into its points (the id kept)."""
    schedule = body.batch_size_schedule
    if schedule.kind != "warmup" or schedule.probe_id is None or schedule.points is not None:
        return body
    if resolve is None:
        raise _refuse(
            ("body", "batch_size_schedule", "probe_id"),
            "a probe cannot be resolved here; give the warmup's points instead",
        )
    points = [(int(samples), int(batch)) for samples, batch in resolve(schedule.probe_id)]
    return body.model_copy(
        update={"batch_size_schedule": schedule.model_copy(update={"points": points})}
    )


def resolve_warm_start(
    session: Session, body: JobCreate, config: TrainConfig, *, tenant: str
) -> WarmStart:
    """The checkpoint and config ``body.init_from`` asks for (refusals: module docstring)."""
    init = body.init_from
    assert init is not None
    source = repository.get(session, init.job_id, tenant=tenant)
    if source is None:
        raise NotFound(
            f"No job with id {init.job_id!r} to start from.",
            errors=[
                FieldError(("body", "init_from", "job_id"), "no such job of yours", "not_found")
            ],
        )
    if source.dataset_id != body.dataset_id:
        raise _refuse(
            ("body", "dataset_id"),
            f"job {source.id!r} trained on dataset {source.dataset_id!r}; a warm start trains "
            "on the same dataset: set dataset_id to it",
        )
    data = checkpoints.source_checkpoint(session, source, init.epoch)
    if data is None:
        have = checkpoints.available_epochs(session, source)
        has = f"it has checkpoints after epochs {have}" if have else "it has no checkpoint yet"
        reached = "" if init.epoch <= source.epoch else f" (it has run {source.epoch} epochs)"
        raise _refuse(
            ("body", "init_from", "epoch"),
            f"job {source.id!r} has no checkpoint after epoch {init.epoch}{reached}; {has}. "
            "Start from one of those, or keep more with keep_checkpoints on the source",
        )
    checkpoint = Checkpoint.from_bytes(data)
    theirs = checkpoint.config
    if config.seed != theirs.data_seed:  # another shuffle, the source's rows
        config = dataclasses.replace(config, split_seed=theirs.data_seed)
    error = warm_start_config_error(theirs, config)
    if error is None and not init.reset_optimizer and theirs.optimizer != config.optimizer:
        error = CoreConfigError(
            "optimizer",
            f"job {source.id!r} ran {theirs.optimizer!r}: keep it, or set "
            "init_from.reset_optimizer to start another optimizer afresh",
        )
    if error is None and config.epochs <= init.epoch:
        error = CoreConfigError(
            "epochs",
            f"a warm start counts epochs on from epoch {init.epoch}: set epochs above it "
            f"({init.epoch + 3} trains 3 more)",
        )
    if error is not None:
        raise _refuse(("body", *error.field.split(".")), error.message)
    return WarmStart(
        config=config,
        data=data,
        epoch=checkpoint.epoch,
        samples_seen=checkpoint.samples_seen,
        init_from={
            "job_id": source.id,
            "epoch": init.epoch,
            "reset_optimizer": init.reset_optimizer,
        },
    )
