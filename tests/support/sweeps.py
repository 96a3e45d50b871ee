"""Sweeps for the tests: a dataset, sweeps through the service, and point jobs'
results written directly through the tables, as a worker's queue operations write them (a real
database, not a mock)."""

from __future__ import annotations

import math
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy.orm import Session

from service.db import Job
from service.keys import DEFAULT_TENANT
from service.sweeps import service as sweeps_service
from service.sweeps.read_schemas import SweepRead
from service.sweeps.schemas import SweepCreate
from tests.support.factories import T0, epoch_row, line_data, make_dataset, set_job

STEPS_PER_EPOCH = 10
EPOCHS = 4


def dataset(session: Session, work_dir: Path, n_rows: int = 200) -> str:
    """A regression dataset of ``n_rows`` rows; its id."""
    return make_dataset(session, work_dir, *line_data(n_rows)).id


def create(session: Session, dataset_id: str, **fields: Any) -> SweepRead:
    """Create a sweep through the service (base defaults: 4 epochs)."""
    fields.setdefault("base", {"epochs": EPOCHS})
    return sweeps_service.create(
        session, SweepCreate(dataset_id=dataset_id, **fields), tenant=DEFAULT_TENANT
    )


def finish_with_crossing(
    session: Session,
    job: Job,
    crossing_step: float,
    *,
    initial_loss: float = 1.0,
    noise: dict[str, Any] | None = None,
) -> None:
    """Write ``EPOCHS`` epochs whose loss is L(s) = L0·exp(−s·ln 2 / crossing_step) at every
    epoch end s (so log-loss interpolation puts the crossing of L0/2 at exactly
    ``crossing_step``), the first step's loss L0, and mark the job succeeded. ``noise``: the
    ``noise_scale`` record of every epoch."""
    rate = math.log(2.0) / crossing_step
    set_job(session, job.id, status="running", attempt=1, worker_id="w1", started_at=T0)
    for epoch in range(1, EPOCHS + 1):
        step = epoch * STEPS_PER_EPOCH
        loss = initial_loss * math.exp(-rate * step)
        losses = np.full(STEPS_PER_EPOCH, loss, dtype=np.float32)
        if epoch == 1:
            losses[0] = initial_loss
        session.add(
            epoch_row(
                job.id,
                epoch,
                losses,
                train_loss=loss,
                total_steps=step,
                steps=STEPS_PER_EPOCH,
                samples_seen=step * 8,
                wall_time_s=0.5,  # per epoch, as the core records it
                noise_scale=noise,
            )
        )
    set_job(
        session,
        job.id,
        status="succeeded",
        epoch=EPOCHS,
        finished_at=T0 + timedelta(seconds=5),
    )
    session.flush()


def fail(session: Session, job: Job, message: str = "the loss is nan") -> None:
    """Mark the job failed (diverged) without any epoch."""
    set_job(
        session,
        job.id,
        status="failed",
        error_code="diverged",
        error_message=message,
        finished_at=T0 + timedelta(seconds=1),
    )
