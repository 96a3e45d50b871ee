"""Orchestration: :func:`advance`, the step that, once a sweep's learning-rate round has
finished, submits the next round or ends the sweep; and :func:`job_finished`, the worker's hook
that calls it.

The learning rate per batch size (Shallue et al. 2018: it must be re-tuned per batch size):

- ``given``: every rate of ``learning_rates`` runs; each batch size keeps its best.
- ``searched``: round 0 runs start/√2, start, start·√2. When a round has finished, every batch
  size whose best rate is the lowest or highest it has run gets one more √2 step beyond that
  edge in the next round (at most ``max_rounds`` rounds), so the search ends with the best
  rate interior — or says it is not (``lr_interior`` = false) when the rounds ran out.
- ``scaled``: one run per batch size at ``base.lr_scaling`` from ``base.reference_batch_size``
  (the cheap alternative: not tuned per batch size, and reported as such).

Round 0 is queued by :func:`service.sweeps.service.create`; the best rate is
:func:`service.sweeps.analysis.best_rate`.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from typing import Any

from sqlalchemy.orm import Session

from service.db import Job, utcnow
from service.jobs.schemas import FINISHED_STATUSES
from service.sweeps import repository
from service.sweeps.analysis import analyse, best_rate, is_interior
from service.sweeps.points import SQRT2, PointPlace, submit_point
from service.sweeps.schemas import SweepStatus

__all__ = ["advance", "job_finished"]

logger = logging.getLogger("service.sweeps")


def _failure_summary(jobs: Sequence[Job]) -> str:
    kinds = Counter(job.error_code or job.status for job in jobs)
    counts = ", ".join(f"{count} {kind}" for kind, count in sorted(kinds.items()))
    example = next((job for job in jobs if job.error_message), None)
    detail = f"; e.g. job {example.id}: {example.error_message}" if example else ""
    return f"every point failed ({counts}){detail}"


def advance(session: Session, sweep_id: str) -> bool:
    """Move the sweep on once every job of its last round has finished: submit the next
    learning-rate round (searched rates whose best is at an edge), or end it — ``succeeded``,
    or ``failed`` with the reason when no point succeeded. Whether anything changed.

    Idempotent: with a round still running, or the sweep already finished, nothing happens.
    Runs in the caller's transaction (the worker's finish, or a read), holding the sweep's row
    lock, so concurrent callers take turns and the second sees the first's work.
    """
    sweep = repository.lock(session, sweep_id)
    if sweep is None or sweep.status != "running":
        return False
    jobs = repository.jobs_of(session, sweep_id)
    if any(job.status not in FINISHED_STATUSES for job in jobs):
        return False
    analysis = analyse(session, sweep, jobs)
    state: dict[str, Any] = {}
    extend: list[tuple[int, float]] = []
    for batch_size, by_rate in sorted(analysis.grid.items()):
        chosen = best_rate(by_rate)
        interior = is_interior(chosen, by_rate)
        state[str(batch_size)] = {
            "rates": sorted(by_rate),
            "chosen": chosen,
            "interior": interior,
        }
        if not interior and len(by_rate) > 1:
            beyond = chosen * SQRT2 if chosen >= max(by_rate) else chosen / SQRT2
            extend.append((batch_size, beyond))
    spec = sweep.spec
    search = spec.get("lr_search")
    next_round = sweep.round + 1
    if sweep.lr_method == "searched" and search and extend and next_round < search["max_rounds"]:
        batch_sizes = list(spec["batch_sizes"])
        for batch_size, rate in extend:
            for k in range(int(spec["seeds"])):
                submit_point(
                    session,
                    sweep,
                    spec,
                    batch_size=batch_size,
                    learning_rate=rate,
                    seed=int(spec["base"]["seed"]) + k,
                    round_=next_round,
                    place=PointPlace(batch_sizes.index(batch_size), 0, "searched"),
                )
        repository.set_state(session, sweep, round=next_round, lr_state=state)
        logger.info(
            "sweep %s: round %d, %d batch sizes extended", sweep_id, next_round, len(extend)
        )
        return True
    succeeded = any(job.status == "succeeded" for job in jobs)
    status: SweepStatus = "succeeded" if succeeded else "failed"
    repository.set_state(
        session,
        sweep,
        status=status,
        lr_state=state,
        error_message=None if succeeded else _failure_summary(jobs),
        finished_at=utcnow(),
    )
    logger.info("sweep %s: %s after round %d", sweep_id, status, sweep.round)
    return True


def job_finished(session: Session, job_id: str) -> bool:
    """The worker's hook after it finished ``job_id`` (same transaction): advance the job's
    sweep, if it has one. Whether anything changed."""
    sweep_id = repository.sweep_of_job(session, job_id)
    return advance(session, sweep_id) if sweep_id is not None else False
