"""The probe page ``/ui/probes/{id}``: the critical batch at each checkpoint of a source job,
beside B_simple there, its plot, and a form that trains the source's config again with the
batch-size warmup the probe measured (``POST /v1/jobs`` with ``batch_size_schedule: {"kind":
"warmup", "probe_id": …}``).

Rendered from the same service functions as ``GET /v1/probes/{id}``; while branches run,
``static/dashboard.js`` polls that and swaps the page's live region in again.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from service.api.dashboard.access import PageTenant, signed_in
from service.api.dashboard.render import render_page
from service.api.deps import SessionDep
from service.datasets import service as datasets_service
from service.errors import NotFound
from service.jobs import service as jobs_service
from service.jobs.read_schemas import JobRead
from service.jobs.schemas import JobCreate
from service.probes import service as probes_service
from service.probes.schemas import FINISHED_PROBE_STATUSES, ProbeSummary

router = APIRouter(include_in_schema=False)

#: Probes have no filter by source job: the job page looks through this many of the newest.
PROBES_SCANNED = 100
#: What the warmup form sets itself (or must not copy from the source's stored config).
_WARMUP_OWN = frozenset(
    {"batch_size_schedule", "lr_scaling", "reference_batch_size", "name", "tags", "epochs"}
)


def warmup_base(source: JobRead) -> dict[str, Any]:
    """The body of a job like ``source`` (its dataset and every setting a client may send),
    without what the warmup form sets: the schedule, the rate's rule, epochs, name, tags."""
    fields = set(JobCreate.model_fields) - _WARMUP_OWN
    body = source.config.model_dump(mode="json", include=fields)
    body["dataset_id"] = source.dataset_id
    return body


def probes_of(session: SessionDep, job_id: str, *, tenant: str) -> list[ProbeSummary]:
    """``tenant``'s probes of ``job_id`` among the newest :data:`PROBES_SCANNED`."""
    page = probes_service.list_probes(session, tenant=tenant, limit=PROBES_SCANNED)
    return [probe for probe in page.items if probe.job_id == job_id]


def recent_probes(session: SessionDep, *, tenant: str, limit: int) -> list[ProbeSummary]:
    """``tenant``'s newest ``limit`` probes (the overview's table)."""
    return probes_service.list_probes(session, tenant=tenant, limit=limit).items


@router.get("/ui/probes/{probe_id}", response_class=HTMLResponse)
def probe_page(
    probe_id: str, request: Request, session: SessionDep, tenant: PageTenant
) -> HTMLResponse:
    who = signed_in(request, tenant)
    try:
        probe = probes_service.get_probe(session, probe_id, tenant=tenant)
        source = jobs_service.get_job(session, probe.job_id, tenant=tenant)
        dataset = datasets_service.get_dataset(session, probe.dataset_id, tenant=tenant)
    except NotFound as exc:
        return render_page(
            "not_found.html", status_code=404, title="Not found", detail=exc.detail, signed_in=who
        )
    finished = probe.status in FINISHED_PROBE_STATUSES
    points = probes_service.warmup_points(probe) if probe.status == "succeeded" else []
    source_batch = source.config.batch_size
    return render_page(
        "probe.html",
        title=f"Probe {probe.name or probe.id[:8]}",
        signed_in=who,
        probe=probe,
        source=source,
        dataset=dataset,
        jobs_done=probe.jobs.finished,
        jobs_total=probe.jobs.total,
        finished=finished,
        has_plot=any(c.samples_seen is not None for c in probe.checkpoints),
        warmup_points=points,
        warmup_base=json.dumps(warmup_base(source), separators=(",", ":")),
        source_batch=source_batch,
        source_epochs=source.config.epochs,
        # The rule the branches' rates followed; a searched rate moves with k like the linear
        # rule below the critical batch (benchmarks/critical_batch.py).
        lr_rule="linear" if probe.lr == "search" else probe.lr,
    )


__all__ = ["PROBES_SCANNED", "probes_of", "recent_probes", "router", "warmup_base"]
