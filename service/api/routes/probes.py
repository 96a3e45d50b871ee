"""``/v1/probes``: create, list, get (the critical batch per checkpoint), cancel, and the plot.

Thin: parse the request, call :mod:`service.probes.service`, return its read schema. The
branches are ordinary jobs run by the workers; nothing here waits for them.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response

from service.api.auth import REQUIRE_TENANT
from service.api.deps import PageCursor, PageLimit, SessionDep, SettingsDep, TenantDep
from service.api.images import add_image_routes, image_response
from service.api.problems import created_responses, problem_responses
from service.jobs.limits import JobLimits
from service.jobs.schemas import EXAMPLE_JOB_ID
from service.plots import PlotFormat, render_probe_critical
from service.probes import plots_data
from service.probes import service as probes_service
from service.probes.schemas import EXAMPLE_PROBE_ID, ProbeCreate, ProbePage, ProbeRead

router = APIRouter(
    prefix=probes_service.PROBES_PATH,
    tags=["probes"],
    dependencies=[REQUIRE_TENANT],
    responses=problem_responses(401),
)

ProbeId = Annotated[str, Path(description="The probe's id.", examples=[EXAMPLE_PROBE_ID])]
Format = Annotated[
    PlotFormat, Path(description="`svg` (scalable, text as paths) or `png` (1,200 px wide).")
]

_CREATE_EXAMPLES = {
    "auto": {
        "summary": "About 6 log-spaced checkpoints, rates searched per branch",
        "value": {"job_id": EXAMPLE_JOB_ID},
    },
    "chosen": {
        "summary": "Three checkpoints, ×1 to ×16, the rate scaled by √k, two seeds",
        "value": {
            "job_id": EXAMPLE_JOB_ID,
            "at_epochs": [1, 4, 16],
            "multipliers": [1, 2, 4, 8, 16],
            "lr": "sqrt",
            "tolerance": 0.02,
            "seeds": 2,
        },
    },
}

_READ = (
    "**checkpoints**: per epoch branched — the source's samples seen, loss and batch size "
    "there; each multiplier's `branches` (job ids, the rate chosen: the lowest mean loss after "
    "the window, the rates tried, the loss per seed and its mean, the gap to ×1 and whether it "
    "kept up); the `critical` batch — the largest batch that kept up with every smaller "
    "multiplier too — with its `bracket` [that, the smallest that fell behind] (open above "
    "when every multiplier kept up), the `rule` across seeds, `monotone` and `unanimous`; "
    "B_simple measured by the source at that epoch and the ratio critical / B_simple.\n\n"
    "While `status` is `running`, `partial` is true and every figure comes from the branches "
    "finished so far."
)


@router.post(
    "",
    operation_id="createProbe",
    status_code=202,
    summary="Probe a job's critical batch size",
    description=(
        'Measure the critical batch size directly (Merrill et al. 2025, "Critical Batch Size '
        "Revisited\"): from the source job's checkpoints (`at_epochs`, or `auto`: about 6 "
        "log-spaced epochs), branch ordinary jobs (`init_from`) at `multipliers` × the batch "
        "size in force there (default 1, 2, 4, … within the training rows), each for "
        "`window_samples` (default one epoch), with the learning rate searched per branch "
        "(`lr: search`, default) or scaled (`sqrt`, `linear`), `seeds` times. A multiplier "
        "keeps up when its loss after the window is at most (1 + `tolerance`) × the ×1 "
        "branch's (means over seeds).\n\n"
        "The source must keep the checkpoints asked for (`keep_checkpoints` on its job); a "
        "finished source without one is refused with 422 on `at_epochs` listing those it has "
        "and the fix. A running source keeps the epochs it has not reached yet; their branches "
        "are queued when it finishes. An unknown source is 404, one with no finished epoch "
        "409. Answers 202 with the probe and its `Location`; `GET /v1/jobs?tag=probe:<id>` "
        "lists its branches."
    ),
    responses=created_responses("The probe, its first branches queued.", status=202)
    | problem_responses(400, 404, 409, 422, 429),
    openapi_extra={
        "requestBody": {"content": {"application/json": {"examples": _CREATE_EXAMPLES}}}
    },
)
def create_probe(
    body: ProbeCreate,
    response: Response,
    session: SessionDep,
    settings: SettingsDep,
    tenant: TenantDep,
) -> ProbeRead:
    limits = JobLimits.from_settings(settings)
    probe = probes_service.create(session, body, tenant=tenant, limits=limits)
    response.headers["Location"] = probe.links.self
    return probe


@router.get(
    "",
    operation_id="listProbes",
    summary="List probes",
    description="Probes, newest first, one page at a time (no analysis: get a probe for "
    "that). Pass a page's `next_cursor` as `cursor` to get the next; null on the last page.",
    responses=problem_responses(400, 422),
)
def list_probes(
    session: SessionDep, tenant: TenantDep, limit: PageLimit = 20, cursor: PageCursor = None
) -> ProbePage:
    return probes_service.list_probes(session, tenant=tenant, limit=limit, cursor=cursor)


@router.get(
    "/{probe_id}",
    operation_id="getProbe",
    summary="Get a probe and the critical batch at each checkpoint",
    description="The probe's `status` (running, succeeded, failed with `error`, cancelled), "
    "the learning-rate `round`, job counts per status, and per checkpoint:\n\n" + _READ,
    responses=problem_responses(404),
)
def get_probe(probe_id: ProbeId, session: SessionDep, tenant: TenantDep) -> ProbeRead:
    return probes_service.get_probe(session, probe_id, tenant=tenant)


@router.post(
    "/{probe_id}/cancel",
    operation_id="cancelProbe",
    summary="Cancel a probe",
    description="Cancel every unfinished branch job as `POST /v1/jobs/{id}/cancel` does and "
    "mark the probe `cancelled`; its finished branches stay readable. A finished probe cannot "
    "be cancelled (409).",
    responses=problem_responses(404, 409),
)
def cancel_probe(probe_id: ProbeId, session: SessionDep, tenant: TenantDep) -> ProbeRead:
    return probes_service.cancel(session, probe_id, tenant=tenant)


def critical_plot(
    probe_id: ProbeId, fmt: Format, session: SessionDep, tenant: TenantDep
) -> Response:
    data = plots_data.critical_data(session, probe_id, tenant=tenant)
    return image_response(
        render_probe_critical(data.points, fmt=fmt, title=data.title, note=data.note), fmt
    )


add_image_routes(
    router,
    "/{probe_id}/plots/critical.{fmt}",
    critical_plot,
    operation_id="getProbeCriticalPlot",
    summary="Plot a probe's critical batch over training",
    description="The critical batch at each checkpoint (its bracket as a bar up to the "
    "smallest batch that fell behind; an arrow when every multiplier kept up) and B_simple "
    "measured there, against the samples seen, log–log. Readable while the probe runs; 409 "
    "before any checkpoint has samples seen.",
)
