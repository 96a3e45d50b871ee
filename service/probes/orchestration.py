"""Orchestration: queueing a checkpoint's first round (:func:`submit_first_round`),
:func:`advance` — once a round has finished, the next learning-rate round, the checkpoints
that waited for a running source, or the end — and :func:`job_finished`, the worker's hook.

The learning rate per branch (``lr``): ``search`` brackets each (checkpoint, multiplier)'s
best rate with :func:`service.science.search.next_rates` (×4 beyond an edge, then √2 and 2^¼)
ranked by the mean loss after the window, a diverged seed ranking below every rate that ran,
at most ``max_rounds`` rounds; ``sqrt`` / ``linear`` run one rate, scaled from the source's.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from typing import Any

from sqlalchemy.orm import Session

from service.db import Job, utcnow
from service.db.tables import Probe
from service.jobs.checkpoints import available_epochs
from service.jobs.limits import JobLimits
from service.jobs.schemas import FINISHED_STATUSES
from service.probes import repository
from service.probes.analysis import SourceEpoch, groups_of, ranks
from service.probes.branches import BranchPlace, branch_epochs, submit_branch
from service.probes.plan import first_rates
from service.probes.reads import load
from service.science.search import next_rates

__all__ = ["advance", "job_finished", "submit_first_round"]

logger = logging.getLogger("service.probes")


def _submit(
    session: Session,
    probe: Probe,
    source: Job,
    epoch: int,
    multiplier: int,
    rate: float,
    round_: int,
    limits: JobLimits | None,
) -> int:
    """One (checkpoint, multiplier, rate), one job per seed; how many were queued."""
    spec = probe.spec
    epoch_index = list(spec["at_epochs"]).index(epoch)
    multiplier_index = None
    asked = spec.get("asked_multipliers")
    if asked and multiplier in asked:
        multiplier_index = asked.index(multiplier)
    base = int(spec["batch_sizes"][str(epoch)])
    first_seed = int(source.config["seed"])
    for seed in range(first_seed, first_seed + int(spec["seeds"])):
        submit_branch(
            session,
            probe,
            source.config,
            epoch=epoch,
            multiplier=multiplier,
            batch_size=multiplier * base,
            learning_rate=rate,
            seed=seed,
            round_=round_,
            ends_at_epoch=branch_epochs(
                epoch, int(spec["window_samples"]), int(spec["train_rows"])
            ),
            place=BranchPlace(epoch_index, multiplier_index),
            limits=limits,
        )
    return int(spec["seeds"])


def submit_first_round(
    session: Session,
    probe: Probe,
    source: Job,
    epoch: int,
    at: SourceEpoch | None,
    *,
    round_: int,
    limits: JobLimits | None = None,
) -> int:
    """Queue every multiplier's first rates from the checkpoint at ``epoch``; the jobs queued."""
    spec = probe.spec
    rate = at.learning_rate if at is not None and at.learning_rate else None
    source_rate = float(rate if rate is not None else source.config["learning_rate"])
    queued = 0
    for multiplier in spec["multipliers"]:
        for first in first_rates(spec["lr"], source_rate, int(multiplier)):
            queued += _submit(session, probe, source, epoch, int(multiplier), first, round_, limits)
    return queued


def _failure_summary(jobs: Sequence[Job]) -> str:
    kinds = Counter(job.error_code or job.status for job in jobs)
    counts = ", ".join(f"{count} {kind}" for kind, count in sorted(kinds.items()))
    example = next((job for job in jobs if job.error_message), None)
    detail = f"; e.g. job {example.id}: {example.error_message}" if example else ""
    return f"no branch succeeded ({counts}){detail}"


def _batch_of(source: Job, at: SourceEpoch | None) -> int:
    batch = at.batch_size if at is not None and at.batch_size else source.config["batch_size"]
    return int(batch)


def _release_pending(session: Session, probe: Probe, source: Job) -> bool:
    """Queue the checkpoints that waited for the source, now finished; drop (with the reason)
    those it never reached or did not keep. Whether anything was queued."""
    spec: dict[str, Any] = dict(probe.spec)
    usable = set(available_epochs(session, source))
    epochs, _ = load(session, probe)
    dropped = dict(spec.get("dropped", {}))
    batch_sizes = dict(spec["batch_sizes"])
    ready = []
    for epoch in spec.get("pending", []):
        if epoch in usable and epoch in epochs:
            batch = _batch_of(source, epochs[epoch])
            if max(spec["multipliers"]) * batch > int(spec["train_rows"]):
                dropped[str(epoch)] = (
                    f"the source's batch size there ({batch}) × {max(spec['multipliers'])} "
                    "is more than the training rows"
                )
                continue
            batch_sizes[str(epoch)] = batch
            ready.append(epoch)
        else:
            dropped[str(epoch)] = (
                f"the source job ended ({source.status}) without a checkpoint at epoch {epoch}"
            )
    spec |= {"pending": [], "dropped": dropped, "batch_sizes": batch_sizes}
    repository.set_state(session, probe, spec=spec)
    for epoch in ready:
        submit_first_round(session, probe, source, epoch, epochs[epoch], round_=probe.round)
    return bool(ready)


def advance(session: Session, probe_id: str) -> bool:
    """Move the probe on once every branch job has finished: queue the checkpoints that
    waited for a source that has now finished, the next learning-rate round, or end it —
    ``succeeded``, or ``failed`` with the reason when no branch succeeded. Whether anything
    changed. Idempotent; runs in the caller's transaction, holding the probe's lock."""
    probe = repository.lock(session, probe_id)
    if probe is None or probe.status != "running":
        return False
    if repository.count_unfinished(session, probe_id):
        return False
    source = session.get(Job, probe.job_id, populate_existing=True)
    if source is None:
        return False
    if probe.spec.get("pending"):
        if source.status not in FINISHED_STATUSES:
            return False  # the source's finish advances it again
        if _release_pending(session, probe, source):
            return True
    _, runs = load(session, probe)
    proposals: list[tuple[int, int, float]] = []
    if probe.spec["lr"] == "search":
        for epoch, groups in sorted(groups_of(runs).items()):
            for multiplier, group in sorted(groups.items()):
                if group.rounds >= int(probe.spec["max_rounds"]):
                    continue
                proposals += [(epoch, multiplier, r) for r in next_rates(ranks(group))]
    if proposals:
        next_round = probe.round + 1
        for epoch, multiplier, rate in proposals:
            _submit(session, probe, source, epoch, multiplier, rate, next_round, None)
        repository.set_state(session, probe, round=next_round)
        logger.info("probe %s: round %d, %d branches", probe_id, next_round, len(proposals))
        return True
    jobs = [run.job for run in runs]
    succeeded = any(job.status == "succeeded" for job in jobs)
    repository.set_state(
        session,
        probe,
        status="succeeded" if succeeded else "failed",
        error_message=None if succeeded else _failure_summary(jobs),
        finished_at=utcnow(),
    )
    logger.info("probe %s: %s after round %d", probe_id, probe.status, probe.round)
    return True


def job_finished(session: Session, job_id: str) -> bool:
    """The worker's hook after it finished ``job_id`` (same transaction): advance the probe
    it is a branch of, and every running probe whose source it is. Whether anything changed."""
    changed = False
    probe_id = repository.probe_of_job(session, job_id)
    if probe_id is not None:
        changed = advance(session, probe_id)
    for source_probe in repository.running_probes_of_source(session, job_id):
        changed = advance(session, source_probe) or changed
    return changed
