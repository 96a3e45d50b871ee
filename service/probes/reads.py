"""The API's view of a probe (:func:`to_read`): per checkpoint, the source's place and loss,
each branch, the critical batch with its bracket, B_simple there and their ratio."""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

from sqlalchemy.orm import Session

from service.core.finite import finite_or_none
from service.db.tables import Probe
from service.jobs import service as jobs_service
from service.jobs.read_schemas import JobCounts
from service.links import links as resource_links
from service.probes import repository
from service.probes.analysis import (
    Group,
    Run,
    SourceEpoch,
    chosen_rate,
    critical_of,
    describe_rule,
    group_edge,
    groups_of,
    run_loss,
    source_epochs,
)
from service.probes.branches import tag_of
from service.probes.schemas import (
    BranchRead,
    CriticalRead,
    ProbeCheckpointRead,
    ProbeLinks,
    ProbeLR,
    ProbeRead,
    ProbeSpecRead,
    ProbeStatus,
    ProbeSummary,
)

__all__ = ["PROBES_PATH", "links", "load", "summary_fields", "to_read"]

PROBES_PATH = "/v1/probes"


def links(probe_id: str, job_id: str, dataset_id: str) -> ProbeLinks:
    """The URLs of a probe's resources."""
    return ProbeLinks(
        **resource_links(
            PROBES_PATH,
            probe_id,
            dataset_id=dataset_id,
            subresources=("cancel",),
            jobs=f"{jobs_service.JOBS_PATH}?tag={tag_of(probe_id)}",
            source=f"{jobs_service.JOBS_PATH}/{job_id}",
            plot=f"{PROBES_PATH}/{probe_id}/plots/critical.svg",
        )
    )


def _status(value: str) -> ProbeStatus:
    for status in ("running", "succeeded", "failed", "cancelled"):
        if value == status:
            return status
    raise ValueError(f"unknown probe status {value!r}")


def _lr(value: str) -> ProbeLR:
    for method in ("search", "sqrt", "linear"):
        if value == method:
            return method
    raise ValueError(f"unknown learning-rate method {value!r}")


def summary_fields(probe: Probe) -> dict[str, Any]:
    spec = probe.spec
    return {
        "id": probe.id,
        "job_id": probe.job_id,
        "dataset_id": probe.dataset_id,
        "name": probe.name,
        "status": _status(probe.status),
        "round": probe.round,
        "at_epochs": list(spec["at_epochs"]),
        "multipliers": list(spec["multipliers"]),
        "created_at": probe.created_at,
        "finished_at": probe.finished_at,
        "links": links(probe.id, probe.job_id, probe.dataset_id),
    }


def load(session: Session, probe: Probe) -> tuple[dict[int, SourceEpoch], list[Run]]:
    """The source's epochs and every branch run with its loss after the window."""
    pairs = repository.branches_of(session, probe.id)
    records = repository.epoch_records(session, [probe.job_id, *(job.id for _, job in pairs)])
    spec = probe.spec
    source = source_epochs(records[probe.job_id], spec["loss_on"], spec.get("source_evaluated_on"))
    window = int(spec["window_samples"])
    runs = []
    for branch, job in pairs:
        start = source.get(branch.epoch)
        loss = None
        if start is not None and start.samples_seen is not None:
            loss = run_loss(job, records[job.id], start.samples_seen + window)
        runs.append(Run(branch, job, loss))
    return source, runs


def _branch_read(
    group: Group, base_batch: int, reference: float | None, tolerance: float, searched: bool
) -> BranchRead:
    rate = chosen_rate(group)
    runs = sorted(
        group.by_rate.get(rate, []) if rate is not None else [], key=lambda r: r.branch.seed
    )
    losses = [None if r.loss is None or not math.isfinite(r.loss) else r.loss for r in runs]
    loss = None
    if runs and all(value is not None for value in losses):
        loss = math.fsum(v for v in losses if v is not None) / len(losses)
    gap = None if loss is None or not reference else loss / reference - 1.0
    failed = any(r.failed for r in runs)
    kept_up = None
    if gap is not None:
        kept_up = gap <= tolerance
    elif failed and reference:
        kept_up = False
    edge = group_edge(group, searched)
    return BranchRead(
        multiplier=group.multiplier,
        batch_size=group.multiplier * base_batch,
        job_ids=[r.job.id for runs_ in group.by_rate.values() for r in runs_],
        complete=group.finished,
        learning_rate=rate,
        learning_rates_tried=sorted(group.by_rate),
        lr_edge="low" if edge == "low" else ("high" if edge == "high" else None),
        loss=finite_or_none(loss),
        losses=losses,
        relative_gap=finite_or_none(gap),
        kept_up=kept_up,
    )


def _checkpoint(
    probe: Probe, epoch: int, source: SourceEpoch | None, groups: dict[int, Group]
) -> ProbeCheckpointRead:
    spec = probe.spec
    tolerance = float(spec["tolerance"])
    base = int(spec["batch_sizes"].get(str(epoch)) or (source.batch_size if source else 0) or 0)
    critical = critical_of(groups, tolerance)
    reference = None
    if 1 in groups and (rate := chosen_rate(groups[1])) is not None:
        ref_runs = groups[1].by_rate[rate]
        if all(r.loss is not None and math.isfinite(r.loss) for r in ref_runs):
            reference = math.fsum(r.loss for r in ref_runs if r.loss is not None) / len(ref_runs)
    searched = spec["lr"] == "search"
    branches = [
        _branch_read(groups[k], base, reference, tolerance, searched) for k in sorted(groups)
    ]
    low = critical.kept_up
    high = critical.fell_behind
    reason = critical.reason
    if epoch in spec.get("pending", []):
        reason = "waiting for the running source job to reach and finish this epoch"
    reason = spec.get("dropped", {}).get(str(epoch), reason)
    batch = None if low is None else low * base
    b_simple = source.b_simple if source else None
    b_reason = None
    if b_simple is None:
        b_reason = (
            "the source job did not measure the noise scale at this epoch: run it with "
            "noise_scale: true"
        )
    ratio = None if batch is None or not b_simple else batch / b_simple
    return ProbeCheckpointRead(
        epoch=epoch,
        samples_seen=source.samples_seen if source else None,
        loss=source.loss if source else None,
        batch_size=base or None,
        learning_rate=source.learning_rate if source else None,
        branches=branches,
        critical=CriticalRead(
            batch_size=batch,
            bracket=[batch, None if high is None else high * base],
            multipliers=[low, high],
            open_ended=critical.open_ended,
            monotone=critical.monotone,
            unanimous=critical.unanimous,
            rule=describe_rule(probe),
            reason=reason,
        ),
        b_simple=b_simple,
        b_simple_corrected=source.b_simple_corrected if source else None,
        b_simple_reason=b_reason,
        ratio=finite_or_none(ratio),
    )


def to_read(session: Session, probe: Probe) -> ProbeRead:
    """The API's view of a probe, analysed from its jobs' histories as they are now."""
    source, runs = load(session, probe)
    by_epoch = groups_of(runs)
    spec = probe.spec
    checkpoints = [
        _checkpoint(probe, int(epoch), source.get(int(epoch)), by_epoch.get(int(epoch), {}))
        for epoch in spec["at_epochs"]
    ]
    return ProbeRead(
        **summary_fields(probe),
        partial=probe.status == "running",
        window_samples=int(spec["window_samples"]),
        tolerance=float(spec["tolerance"]),
        lr=_lr(spec["lr"]),
        seeds=int(spec["seeds"]),
        jobs=JobCounts(**Counter(run.job.status for run in runs)),
        checkpoints=checkpoints,
        error=probe.error_message,
        spec=ProbeSpecRead.model_validate(spec),
    )


def summary(probe: Probe) -> ProbeSummary:
    return ProbeSummary(**summary_fields(probe))
