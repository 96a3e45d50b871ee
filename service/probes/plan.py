"""What a probe request resolves to before anything is queued: the checkpoints (``at_epochs``,
``auto`` included), the multipliers, the window, and each branch's first learning rates.

Every refusal is a 422 naming the request's field and what to do. A checkpoint is usable when
the source job has one at that epoch (:func:`service.jobs.checkpoints.checkpoint_at`: kept, or
the latest). A finished source without one at an asked epoch is refused, with the epochs it has
and the fix (rerun it with ``keep_checkpoints``): re-running the source behind the user's back
would double the cost unannounced. A running source keeps the epochs it has not reached yet
(:func:`service.jobs.checkpoints.keep_more`); their branches are queued once it finishes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from service.db import Job
from service.errors import FieldError, InvalidInput
from service.probes.branches import dotted
from service.probes.schemas import (
    AUTO_CHECKPOINTS,
    MAX_MULTIPLIERS,
    MIN_WINDOW_STEPS,
    ProbeCreate,
)
from service.science.search import EXPAND

__all__ = ["Plan", "auto_epochs", "default_multipliers", "first_rates", "refuse"]


def refuse(loc: tuple[str | int, ...], message: str) -> InvalidInput:
    """A 422 naming ``loc`` (``at_epochs[2]``) and what to do."""
    return InvalidInput(
        f"The probe cannot run: {dotted(loc)}: {message}.",
        errors=[FieldError(loc, message, "value_error")],
    )


def auto_epochs(epochs: int, count: int = AUTO_CHECKPOINTS) -> list[int]:
    """About ``count`` log-spaced epochs from 1 to ``epochs``, distinct, ascending."""
    if epochs < 1:
        return []
    points = np.geomspace(1.0, float(epochs), num=min(count, epochs))
    return sorted({round(float(p)) for p in points})


def default_multipliers(batch_size: int, train_rows: int, window_samples: int) -> list[int]:
    """1, 2, 4, … while k × ``batch_size`` fits the training rows and the window still holds
    :data:`MIN_WINDOW_STEPS` steps at that batch (at most 12): a branch of a few steps cannot
    show an unstable rate, so it would "keep up" on no evidence."""
    out = [1]
    while len(out) < MAX_MULTIPLIERS:
        batch = out[-1] * 2 * batch_size
        if batch > train_rows or batch * MIN_WINDOW_STEPS > window_samples:
            break
        out.append(out[-1] * 2)
    return out


def first_rates(method: str, source_rate: float, multiplier: int) -> list[float]:
    """A branch's first round: ``search`` the guess (the source's rate × √k) ÷4, ×1, ×4;
    ``sqrt`` / ``linear`` the source's rate × √k / × k."""
    if method == "linear":
        return [source_rate * multiplier]
    guess = source_rate * math.sqrt(multiplier)
    if method == "sqrt":
        return [guess]
    return [guess / EXPAND, guess, guess * EXPAND]


@dataclass(frozen=True)
class Plan:
    """A probe request resolved: the epochs branched now, those waiting for a running source,
    the multipliers, the window and the training rows."""

    ready: list[int]
    pending: list[int]
    multipliers: list[int]
    window_samples: int
    train_rows: int


def resolve_epochs(
    body: ProbeCreate, source: Job, usable: Sequence[int]
) -> tuple[list[int], list[int]]:
    """(epochs branched now, epochs waiting for the running source), or a 422 on
    ``at_epochs`` (``at_epochs[i]``) naming the epochs the source has and the fix."""
    running = source.status in ("queued", "running")
    have = sorted(set(usable))
    fix = (
        f"the source job has checkpoints at epochs {have or 'none'}; name some of those, or "
        "rerun it with keep_checkpoints (e.g. keep_checkpoints: "
        f"{auto_epochs(source.epochs)}) and probe the new job"
    )
    if body.at_epochs == "auto":
        wanted = auto_epochs(source.epochs)
        missing = [e for e in wanted if e not in have and not (running and e > source.epoch)]
        if missing:
            raise refuse(
                ("body", "at_epochs"),
                f"'auto' branches epochs {wanted}, and the source kept no checkpoint at "
                f"{missing}; {fix}",
            )
        epochs = wanted
    else:
        epochs = []
        for index, epoch in enumerate(body.at_epochs):
            loc: tuple[str | int, ...] = ("body", "at_epochs", index)
            if epoch in epochs:
                raise refuse(loc, f"epoch {epoch} appears twice; list each once")
            if epoch > source.epochs:
                raise refuse(
                    loc, f"the source job runs {source.epochs} epochs; ask for at most that"
                )
            if epoch not in have and not (running and epoch > source.epoch):
                raise refuse(loc, f"no checkpoint at epoch {epoch}: {fix}")
            epochs.append(epoch)
        epochs.sort()
    ready = [e for e in epochs if e in have and not (running and e > source.epoch)]
    pending = [e for e in epochs if e not in ready]
    return ready, pending


def resolve_multipliers(
    body: ProbeCreate, batch_size: int, train_rows: int, window_samples: int
) -> list[int]:
    """The multipliers, ×1 included, ascending; a 422 on ``multipliers[i]`` for a duplicate
    or a batch beyond the training rows, or when no multiplier above 1 fits."""
    if body.multipliers is None:
        out = default_multipliers(batch_size, train_rows, window_samples)
    else:
        out = []
        for index, k in enumerate(body.multipliers):
            loc: tuple[str | int, ...] = ("body", "multipliers", index)
            if k in out:
                raise refuse(loc, f"{k} appears twice; list each once")
            if k * batch_size > train_rows:
                raise refuse(
                    loc,
                    f"{k} × the source's batch size {batch_size} is {k * batch_size}, more than "
                    f"the {train_rows} training rows; ask for at most {train_rows // batch_size}",
                )
            out.append(k)
        out = sorted(set(out) | {1})
    if len(out) < 2:
        raise refuse(
            ("body", "multipliers"),
            f"the source's batch size {batch_size} leaves no larger batch within the "
            f"{train_rows} training rows and {MIN_WINDOW_STEPS} steps of the "
            f"{window_samples}-sample window; give multipliers, a longer window_samples, or "
            "probe a source with a smaller batch",
        )
    return out
