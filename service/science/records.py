"""A job's stored epoch records read as the science's inputs: its evaluations of a target
loss (:class:`~service.science.targets.Evaluation`) and its noise-scale measurements
(:class:`~service.science.noise.EpochNoise`).

Evaluations: a job run with ``evaluation`` (every sweep point is) records the loss at step 0,
every epoch end and log-spaced steps, on a fixed subsample, so steps to target are interpolated
between evaluations, within epochs; :func:`evaluations_of` reads them (and, for jobs run before
evaluations were recorded, falls back to the epoch ends) — the one place.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from service.core.finite import finite_or_none
from service.science.noise import EpochNoise
from service.science.targets import Evaluation, TargetOn

__all__ = ["epoch_noise", "evaluations_of"]


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


def epoch_noise(record: Mapping[str, Any]) -> EpochNoise | None:
    """An epoch record's noise-scale measurement, or None when it has none (or a malformed
    one: a missing or non-finite value, a B_simple ≤ 0)."""
    noise = record.get("noise_scale")
    if not isinstance(noise, Mapping):
        return None
    values = [finite_or_none(noise.get(k)) for k in ("trace_sigma", "grad_sq_norm", "loss_level")]
    b_simple = finite_or_none(noise.get("b_simple"))
    if any(v is None for v in values) or (b_simple is not None and b_simple <= 0.0):
        return None
    trace, grad_sq, loss = (float(v or 0.0) for v in values)
    n_samples = noise.get("n_samples")
    return EpochNoise(
        int(record["epoch"]), b_simple, trace, grad_sq, loss,
        n_samples=n_samples if isinstance(n_samples, int) and n_samples >= 1 else None,
        exact=noise.get("exact") is True,
    )  # fmt: skip
