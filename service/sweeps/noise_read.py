"""A sweep's noise-scale reads: each chosen run's late summary, and B_simple at the target.

For each batch size's chosen learning rate: the late-run summary of every run that measured it
(:func:`~service.science.noise.summarize_noise_scale`), and B_simple at the target's loss level
(:func:`~service.science.noise.b_simple_at_loss` per run, the geometric mean over a point's
seeds, the median across points), with the finite-population correction 1/(1/B_simple + 1/N).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from dataclasses import asdict

import numpy as np

from service.core.finite import json_safe
from service.science import (
    SweepDataError,
    b_simple_at_loss,
    epoch_noise,
    finite_population_corrected,
    summarize_noise_scale,
)
from service.sweeps.analysis import Analysis
from service.sweeps.read_schemas import NoiseAtPointRead, NoiseAtTargetRead, NoiseSummaryRead
from service.sweeps.runs import Run, best_rate

__all__ = ["noise_scale", "noise_scale_at_target"]

logger = logging.getLogger("service.sweeps")


def _chosen_runs(analysis: Analysis) -> Iterable[tuple[int, float, list[Run]]]:
    for batch_size, by_rate in sorted(analysis.grid.items()):
        chosen = best_rate(by_rate)
        yield batch_size, chosen, by_rate[chosen]


def noise_scale(analysis: Analysis, train_rows: int) -> list[NoiseSummaryRead]:
    """The late-run summary, per run of each batch size's chosen rate that measured it
    (``base.noise_scale``): B_simple over the last quarter of the run with its loss level,
    correction and trend."""
    out: list[NoiseSummaryRead] = []
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
                NoiseSummaryRead(
                    batch_size=batch_size,
                    learning_rate=chosen,
                    seed=run.seed,
                    job_id=run.job.id,
                    **json_safe(asdict(summary)),
                )
            )
    return out


def noise_scale_at_target(analysis: Analysis, train_rows: int) -> NoiseAtTargetRead | None:
    """B_simple at the target's loss level (:func:`~service.science.noise.b_simple_at_loss`
    per run, the geometric mean over a point's seeds, the median across points); None without
    a target or without any noise-scale measurement."""
    target = analysis.target

    def corrected(b_simple: float | None) -> float | None:
        return None if b_simple is None else finite_population_corrected(b_simple, train_rows)

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
                b_simple_corrected=corrected(b_simple),
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
        b_simple_corrected=corrected(median),
        spread=[min(known), max(known)] if known else None,
        points=points,
        reason=None if known else "no batch size's measurements bracket the target loss",
    )
