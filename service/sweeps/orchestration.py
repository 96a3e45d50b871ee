"""Orchestration: :func:`advance`, the step that, once a sweep's learning-rate round has
finished, submits the next round or ends the sweep; and :func:`job_finished`, the worker's hook
that calls it.

The learning rate per batch size (Shallue et al. 2018: it must be re-tuned per batch size):

- ``given``: every rate of ``learning_rates`` runs; each batch size keeps its best.
- ``searched``: each batch size brackets its best rate (×4 a round beyond an edge, or a jump to
  a tuned neighbour's rate scaled by ``lr_search.scaling``), then refines it by √2 and 2^¼
  (:mod:`service.science.search`), at most ``max_rounds`` rounds — or says it did not bracket
  (``lr_interior`` false, the point left out of the fit) when the rounds ran out.
- ``scaled``: one run per batch size at ``base.lr_scaling`` from ``base.reference_batch_size``
  (the cheap alternative: not tuned per batch size, and reported as such).

Round 0 is queued by :func:`service.sweeps.service.create`; the best rate is
:func:`service.sweeps.runs.best_rate`.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Sequence
from typing import Any

from sqlalchemy.orm import Session

from service.db import Job, utcnow
from service.jobs.schemas import FINISHED_STATUSES
from service.science.search import ScalingRule, next_rates, scaled_rate
from service.sweeps import repository
from service.sweeps.analysis import analyse
from service.sweeps.points import PointPlace, submit_point
from service.sweeps.runs import Grid, best_rate, lr_edge, ranks
from service.sweeps.schemas import SweepStatus

__all__ = ["advance", "job_finished"]

logger = logging.getLogger("service.sweeps")


def _failure_summary(jobs: Sequence[Job]) -> str:
    kinds = Counter(job.error_code or job.status for job in jobs)
    counts = ", ".join(f"{count} {kind}" for kind, count in sorted(kinds.items()))
    example = next((job for job in jobs if job.error_message), None)
    detail = f"; e.g. job {example.id}: {example.error_message}" if example else ""
    return f"every point failed ({counts}){detail}"


def _hint(grid: Grid, batch_size: int, lr_method: str, rule: ScalingRule) -> float | None:
    """The best rate of the nearest batch size (in log distance) whose search has bracketed
    its best, scaled to ``batch_size`` by ``rule``; None while none has."""
    tuned = [
        b for b, by_rate in grid.items() if b != batch_size and lr_edge(by_rate, lr_method) is None
    ]
    if not tuned:
        return None
    nearest = min(tuned, key=lambda b: (abs(math.log(b / batch_size)), b))
    return scaled_rate(best_rate(grid[nearest]), nearest, batch_size, rule)


def _next_round(grid: Grid, lr_method: str, rule: ScalingRule) -> list[tuple[int, float]]:
    """(batch size, rate) of every run the next search round needs (empty: all done)."""
    proposals: list[tuple[int, float]] = []
    for batch_size, by_rate in sorted(grid.items()):
        hint = _hint(grid, batch_size, lr_method, rule)
        proposals += [(batch_size, rate) for rate in next_rates(ranks(by_rate), hint=hint)]
    return proposals


def advance(session: Session, sweep_id: str) -> bool:
    """Move the sweep on once every job of its last round has finished: submit the next
    learning-rate round (searched rates not yet bracketed or refined), or end it —
    ``succeeded``, or ``failed`` with the reason when no point succeeded. Whether anything
    changed.

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
    for batch_size, by_rate in sorted(analysis.grid.items()):
        state[str(batch_size)] = {
            "rates": sorted(by_rate),
            "chosen": best_rate(by_rate),
            "edge": lr_edge(by_rate, sweep.lr_method),
        }
    spec = sweep.spec
    search = spec.get("lr_search")
    next_round = sweep.round + 1
    proposals: list[tuple[int, float]] = []
    if sweep.lr_method == "searched" and search and next_round < search["max_rounds"]:
        proposals = _next_round(analysis.grid, sweep.lr_method, search.get("scaling", "sqrt"))
    if proposals:
        batch_sizes = list(spec["batch_sizes"])
        for batch_size, rate in proposals:
            submit_point(
                session,
                sweep,
                spec,
                batch_size=batch_size,
                learning_rate=rate,
                round_=next_round,
                place=PointPlace(batch_sizes.index(batch_size), 0, "searched"),
            )
        repository.set_state(session, sweep, round=next_round, lr_state=state)
        logger.info(
            "sweep %s: round %d, %d runs", sweep_id, next_round, len(proposals) * int(spec["seeds"])
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
