"""``/v1/sweeps``: create, list, get (points, fit, noise scale, recommendation), cancel.

Thin: parse the request, call :mod:`service.sweeps.service`, return its read schema. The points
are ordinary jobs run by the workers; nothing here waits for them.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response

from service.api.auth import REQUIRE_TENANT
from service.api.deps import PageCursor, PageLimit, SessionDep, SettingsDep, TenantDep
from service.api.problems import created_responses, problem_responses
from service.jobs.limits import JobLimits
from service.jobs.schemas import EXAMPLE_DATASET_ID
from service.sweeps import service as sweeps_service
from service.sweeps.read_schemas import SweepPage, SweepRead
from service.sweeps.schemas import EXAMPLE_SWEEP_ID, SweepCreate

router = APIRouter(
    prefix=sweeps_service.SWEEPS_PATH,
    tags=["sweeps"],
    dependencies=[REQUIRE_TENANT],
    responses=problem_responses(401),
)

SweepId = Annotated[str, Path(description="The sweep's id.", examples=[EXAMPLE_SWEEP_ID])]

_CREATE_EXAMPLES = {
    "searched": {
        "summary": "Batch 8 to 512, learning rate searched per batch size",
        "value": {
            "dataset_id": EXAMPLE_DATASET_ID,
            "base": {"model": "linear", "epochs": 10, "standardize": True},
            "batch_sizes": [8, 32, 128, 512],
            "lr_search": {"start": 0.01},
        },
    },
    "given": {
        "summary": "Three batch sizes, each at three given rates, two seeds",
        "value": {
            "dataset_id": EXAMPLE_DATASET_ID,
            "base": {"model": "logistic", "epochs": 5, "validation_split": 0.2},
            "batch_sizes": [16, 64, 256],
            "learning_rates": [0.01, 0.03, 0.1],
            "target_on": "validation",
            "seeds": 2,
        },
    },
    "scaled": {
        "summary": "The cheap alternative: the rate scaled with √B, no tuning",
        "value": {
            "dataset_id": EXAMPLE_DATASET_ID,
            "base": {
                "learning_rate": 0.01,
                "lr_scaling": "sqrt",
                "reference_batch_size": 32,
                "epochs": 10,
            },
            "batch_sizes": [8, 32, 128, 512],
            "target_loss": 0.05,
        },
    },
}

_ANALYSIS = (
    "**points**: per batch size, its job ids, the chosen learning rate — the lowest steps to "
    "target (mean over seeds; a rate reaches the target only when every seed did), ties and "
    "never-reached broken by the lowest best loss reached (mean over seeds), then the lower "
    "rate — the rates tried and whether the chosen one is interior, best and final train and "
    "validation loss, the validation − train gap, steps / samples / epochs / wall time to the "
    "target (interpolated; null where never reached) and samples/s.\n\n"
    "**target**: the loss value and how it was derived (`target_fraction` f: L0 − f (L0 − "
    "L_best), L0 the loss at the initial parameters, L_best the best loss any run that did "
    "not fail reached; `auto`, the default: the deepest f of a ladder that every tuned batch "
    "size reaches with S_min ≥ 10 steps, with the `candidates` considered).\n\n"
    "**fit**: S(B) = S_min (1 + B_noise / B) (McCandlish et al. 2018, §2.3) fitted in log "
    "space to the tuned points (a seed that never reached the target is censored at the "
    "steps it ran), with `s_min`, `e_min`, `b_noise`, bootstrap intervals over points and "
    "seeds, the fit quality and `excluded` (batch sizes whose best rate is at an edge); or "
    "values null with `reason` (fewer than three points reached the target, S_min under 10 "
    "steps, no measurable knee in the range).\n\n"
    "**noise_scale_at_target**: B_simple where the runs crossed the target's loss level, per "
    "point and the median. **noise_scale**: the late-run summary per run.\n\n"
    "**recommendation**: `fastest` and `knee`, each with `confidence` and its reasons; a "
    "knee only at medium confidence or better, never from a failed run.\n\n"
    "While `status` is `running`, `partial` is true and every figure comes from the "
    "histories so far."
)


@router.post(
    "",
    operation_id="createSweep",
    status_code=202,
    summary="Start a sweep over batch sizes",
    description=(
        "Run one job config (`base`: the fields of `POST /v1/jobs` except `dataset_id`, "
        "`batch_size` and `name`) at each of `batch_sizes` (2 to 12, distinct), `seeds` "
        "times each, with the learning rate per batch size either given (`learning_rates`: "
        "every batch size runs each and keeps its best), searched (`lr_search`: from a guess "
        "`start` at the smallest batch size, scaled to the others by `scaling`, ×4 a round "
        "until each batch size's best rate is bracketed, then refined by √2 and 2^¼, at most "
        "`max_rounds` rounds) or, with neither, scaled from "
        "`base.learning_rate` by `base.lr_scaling` (none / linear / sqrt) from "
        "`base.reference_batch_size` — the cheap alternative, reported as `lr_method` = "
        "`scaled`. The target is `target_fraction` (default `auto`: the deepest of a ladder "
        "that every tuned batch size reaches with S_min ≥ 10 steps) or an absolute "
        "`target_loss`, on the `train` or `validation` loss (`validation` needs "
        "`base.validation_split` > 0).\n\n"
        "Every point is an ordinary job (`GET /v1/jobs?tag=sweep:<id>` lists them; each can "
        "be followed and cancelled on its own), queued in the same transaction as the sweep: "
        "a config that cannot run at one batch size is refused with 422 naming it "
        "(`batch_sizes[2]`, `base.lr_schedule.gamma`, `learning_rates[1]`) and nothing is "
        "queued; an unknown dataset is 404. Each point is held to the jobs' limits (steps, "
        "runtime); a first round that does not fit the tenant's room for queued jobs is "
        "429 with `Retry-After`. Answers 202 with the sweep and its `Location`."
    ),
    responses=created_responses("The sweep, its first jobs queued.", status=202)
    | problem_responses(400, 404, 422, 429),
    openapi_extra={
        "requestBody": {"content": {"application/json": {"examples": _CREATE_EXAMPLES}}}
    },
)
def create_sweep(
    body: SweepCreate,
    response: Response,
    session: SessionDep,
    settings: SettingsDep,
    tenant: TenantDep,
) -> SweepRead:
    limits = JobLimits.from_settings(settings)
    sweep = sweeps_service.create(session, body, tenant=tenant, limits=limits)
    session.commit()  # the tenant's queue lock is held to it: see submit_job's
    response.headers["Location"] = sweep.links.self
    return sweep


@router.get(
    "",
    operation_id="listSweeps",
    summary="List sweeps",
    description="Sweeps, newest first, one page at a time (no analysis: get a sweep for "
    "that). Pass a page's `next_cursor` as `cursor` to get the next; null on the last page.",
    responses=problem_responses(400, 422),
)
def list_sweeps(
    session: SessionDep, tenant: TenantDep, limit: PageLimit = 20, cursor: PageCursor = None
) -> SweepPage:
    return sweeps_service.list_sweeps(session, tenant=tenant, limit=limit, cursor=cursor)


@router.get(
    "/{sweep_id}",
    operation_id="getSweep",
    summary="Get a sweep and its batch-size analysis",
    description="The sweep's `status` (running, succeeded, failed with `error`, cancelled), "
    "`lr_method`, the learning-rate `round`, job counts per status, and its analysis.\n\n"
    + _ANALYSIS,
    responses=problem_responses(404),
)
def get_sweep(sweep_id: SweepId, session: SessionDep, tenant: TenantDep) -> SweepRead:
    return sweeps_service.get_sweep(session, sweep_id, tenant=tenant)


@router.post(
    "/{sweep_id}/cancel",
    operation_id="cancelSweep",
    summary="Cancel a sweep",
    description="Cancel every unfinished point job as `POST /v1/jobs/{id}/cancel` does (a "
    "queued one at once, a running one flagged: its worker stops within about a second) and "
    "mark the sweep `cancelled`; its finished points and analysis stay readable. A finished "
    "sweep cannot be cancelled (409).",
    responses=problem_responses(404, 409),
)
def cancel_sweep(sweep_id: SweepId, session: SessionDep, tenant: TenantDep) -> SweepRead:
    return sweeps_service.cancel(session, sweep_id, tenant=tenant)
