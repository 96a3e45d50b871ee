"""One job's batch-size advice (``batch_size_advice`` of ``GET /v1/jobs/{id}``, the dashboard's
job page): where its batch size sits against its own late gradient noise scale — the science's
:func:`~service.science.advice.advise_batch_size` over
:func:`~service.science.noise.summarize_noise_scale` of its measured epochs, N = its training
rows.
"""

from __future__ import annotations

import logging

from sqlalchemy.orm import Session

from service.core import split_sizes
from service.core.finite import finite_or_none
from service.datasets import service as datasets_service
from service.jobs import repository
from service.jobs.read_schemas import BatchSizeAdviceRead, JobRead
from service.science import (
    SweepDataError,
    advise_batch_size,
    epoch_noise,
    summarize_noise_scale,
)

__all__ = ["batch_size_advice"]

logger = logging.getLogger("service.jobs")


def batch_size_advice(session: Session, job: JobRead) -> BatchSizeAdviceRead | None:
    """Where ``job``'s batch size sits against its own late noise scale; None while no epoch
    carries a noise-scale record."""
    if not job.config.noise_scale and job.config.batch_size_schedule.kind != "adaptive":
        return None  # never measured (adaptive measures it): no need to read the epochs
    measured = [
        (noise, record)
        for record in repository.epoch_records(session, job.id)
        if (noise := epoch_noise(record)) is not None
    ]
    if not measured:
        return None
    dataset = datasets_service.get_dataset(session, job.dataset_id)
    train_rows = split_sizes(dataset.n_rows, job.config.validation_split)[0]
    try:
        summary = summarize_noise_scale([noise for noise, _ in measured], train_rows=train_rows)
    except SweepDataError as exc:  # a malformed record written by hand: no advice, say why
        logger.warning("job %s: no batch-size advice: %s", job.id, exc)
        return None
    # The batch in force when the late noise scale was measured (a schedule may have grown it).
    last_batch = measured[-1][1].get("batch_size") or job.config.batch_size
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
        noise_scale_lower_bound=advice.noise_scale_lower_bound,
        exact=advice.exact,
    )
