"""The dashboard's pages: ``/`` (overview and upload), ``/ui/datasets/{id}`` (statistics, its
jobs and sweeps, forms to start either), ``/ui/jobs/{id}`` and ``/ui/sweeps/{id}``.

Pages are rendered on the server from the same service functions the JSON API calls, so they
show exactly what the API says. What changes while one looks (status, progress, new epochs) is
refreshed by ``static/dashboard.js`` from the JSON API; the forms post to the JSON API too, so
the dashboard has no write path of its own. Not in the OpenAPI document: it is not an API.

Every page shows one tenant's objects (:mod:`service.api.dashboard.access`: with auth on, the
signed-in key's; a page asked for without one redirects to the sign-in page).
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, Path, Request
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from service.api.dashboard.access import PageTenant, install_access, signed_in
from service.api.dashboard.continue_training import continue_form
from service.api.dashboard.defaults import form_defaults
from service.api.dashboard.probes import probes_of, recent_probes
from service.api.dashboard.probes import router as probes_router
from service.api.dashboard.render import STATIC_DIR, STATIC_URL, render_page
from service.api.deps import SessionDep
from service.datasets import service as datasets_service
from service.errors import NotFound
from service.jobs import service as jobs_service
from service.jobs.read_schemas import JobRead
from service.jobs.schemas import FINISHED_STATUSES, SWEEP_TAG_PREFIX
from service.sweeps import service as sweeps_service
from service.sweeps.schemas import FINISHED_SWEEP_STATUSES

router = APIRouter(include_in_schema=False)

#: Rows per table on the overview, and per table on a dataset's page.
OVERVIEW_ROWS, DATASET_ROWS = 20, 50
#: Sweeps have no dataset filter, and jobs none for "not a sweep point": pages look through
#: this many of the newest (the API's largest page) and keep what they show.
SWEEPS_SCANNED = JOBS_SCANNED = 100
CURVE_AXES = ("step", "epoch", "samples", "time")

PageId = Annotated[str, Path(description="An id; an unknown one gets the 404 page.")]


def install_dashboard(app: FastAPI) -> None:
    """Serve the dashboard's pages and its static files (``/ui/static``) from ``app``."""
    app.mount(STATIC_URL, StaticFiles(directory=str(STATIC_DIR)), name="dashboard-static")
    install_access(app)
    app.include_router(router)
    app.include_router(probes_router)


def _not_found(exc: NotFound, signed_in_as: str | None) -> HTMLResponse:
    return render_page(
        "not_found.html",
        status_code=404,
        title="Not found",
        detail=exc.detail,
        signed_in=signed_in_as,
    )


def _sweep_plots(request: Request) -> dict[str, bool]:
    """Which of a sweep's plot routes the app serves (``curves``, ``scaling``), as its
    OpenAPI document lists them (built once, then cached by the app)."""
    paths: dict[str, Any] = request.app.openapi().get("paths", {})
    return {
        kind: any(re.fullmatch(rf"/v1/sweeps/\{{\w+\}}/plots/{kind}\.svg", p) for p in paths)
        for kind in ("curves", "scaling")
    }


def _sweep_of(job: JobRead) -> str | None:
    """The id of the sweep a job is a point of, from its ``sweep:<id>`` tag."""
    for tag in job.tags:
        if tag.startswith(SWEEP_TAG_PREFIX):
            return tag.removeprefix(SWEEP_TAG_PREFIX)
    return None


def _config_rows(config: dict[str, Any]) -> list[tuple[str, str]]:
    """A job's config as (field, value) rows; nested objects as compact JSON."""
    rows = []
    for key, value in sorted(config.items()):
        shown = value if isinstance(value, str) else json.dumps(value, separators=(", ", ": "))
        rows.append((key, shown))
    return rows


def _last(values: list[Any] | None) -> Any:
    """The last non-null entry of a per-epoch array, or None."""
    for value in reversed(values or []):
        if value is not None:
            return value
    return None


def _standalone(jobs: list[JobRead], limit: int) -> list[JobRead]:
    """Up to ``limit`` of ``jobs`` that are not sweep points (a sweep's page lists those)."""
    return [job for job in jobs if _sweep_of(job) is None][:limit]


@router.get("/", response_class=HTMLResponse)
def overview(request: Request, session: SessionDep, tenant: PageTenant) -> HTMLResponse:
    datasets = datasets_service.list_datasets(session, tenant=tenant, limit=OVERVIEW_ROWS).items
    jobs = _standalone(
        jobs_service.list_jobs(session, tenant=tenant, limit=JOBS_SCANNED).items, OVERVIEW_ROWS
    )
    sweeps = sweeps_service.list_sweeps(session, tenant=tenant, limit=OVERVIEW_ROWS).items
    return render_page(
        "overview.html",
        title="Overview",
        signed_in=signed_in(request, tenant),
        datasets=datasets,
        jobs=jobs,
        sweeps=sweeps,
        probes=recent_probes(session, tenant=tenant, limit=OVERVIEW_ROWS),
        dataset_names={dataset.id: dataset.name for dataset in datasets},
        finished=FINISHED_STATUSES,
        sweep_finished=FINISHED_SWEEP_STATUSES,
        poll_jobs=f"/v1/jobs?limit={JOBS_SCANNED}",
        poll_sweeps=f"/v1/sweeps?limit={OVERVIEW_ROWS}",
    )


@router.get("/ui/datasets/{dataset_id}", response_class=HTMLResponse)
def dataset_page(
    dataset_id: PageId, request: Request, session: SessionDep, tenant: PageTenant
) -> HTMLResponse:
    try:
        dataset = datasets_service.get_dataset(session, dataset_id, tenant=tenant)
    except NotFound as exc:
        return _not_found(exc, signed_in(request, tenant))
    jobs = _standalone(
        jobs_service.list_jobs(
            session, tenant=tenant, limit=JOBS_SCANNED, dataset_id=dataset.id
        ).items,
        DATASET_ROWS,
    )
    sweeps = [
        sweep
        for sweep in sweeps_service.list_sweeps(session, tenant=tenant, limit=SWEEPS_SCANNED).items
        if sweep.dataset_id == dataset.id
    ]
    return render_page(
        "dataset.html",
        title=f"Dataset {dataset.name}",
        signed_in=signed_in(request, tenant),
        dataset=dataset,
        jobs=jobs,
        sweeps=sweeps,
        dataset_names={dataset.id: dataset.name},
        defaults=form_defaults(dataset),
        finished=FINISHED_STATUSES,
        sweep_finished=FINISHED_SWEEP_STATUSES,
        poll_jobs=f"/v1/jobs?limit={JOBS_SCANNED}&dataset_id={dataset.id}",
        poll_sweeps=f"/v1/sweeps?limit={SWEEPS_SCANNED}",
    )


@router.get("/ui/jobs/{job_id}", response_class=HTMLResponse)
def job_page(
    job_id: PageId, request: Request, session: SessionDep, tenant: PageTenant
) -> HTMLResponse:
    try:
        job = jobs_service.get_job(session, job_id, tenant=tenant)
        # Two step points are enough here: the plot reads its own history.
        history = jobs_service.history(session, job.id, tenant=tenant, max_points=2)
        dataset = datasets_service.get_dataset(session, job.dataset_id, tenant=tenant)
    except NotFound as exc:
        return _not_found(exc, signed_in(request, tenant))
    # Each epoch's wall time is its own: the run's is their sum.
    wall_time_s = sum(t for t in history.wall_time_s if t is not None)
    samples = history.samples_seen[-1] if history.samples_seen else 0
    metrics = {
        "val_rmse": _last(history.val_rmse),
        "val_r2": _last(history.val_r2),
        "val_accuracy": _last(history.val_accuracy),
        "learning_rate": _last(history.learning_rate),
        "batch_size": _last(history.batch_size),
        "samples_per_s": samples / wall_time_s if wall_time_s > 0 else None,
        "wall_time_s": wall_time_s if history.epoch else None,
        "noise_scale": _last([n for n in history.noise_scale if n and n.b_simple is not None]),
        "total_steps": history.total_steps,
    }
    return render_page(
        "job.html",
        title=f"Job {job.name or job.id[:8]}",
        signed_in=signed_in(request, tenant),
        job=job,
        dataset=dataset,
        metrics=metrics,
        has_epochs=bool(history.epoch),
        advice=job.batch_size_advice,
        sweep_id=_sweep_of(job),
        probes=probes_of(session, job.id, tenant=tenant),
        config_rows=_config_rows(job.config.model_dump(mode="json")),
        finished=job.status in FINISHED_STATUSES,
        continue_form=continue_form(session, job, tenant=tenant),
    )


@router.get("/ui/sweeps/{sweep_id}", response_class=HTMLResponse)
def sweep_page(
    sweep_id: PageId, request: Request, session: SessionDep, tenant: PageTenant
) -> HTMLResponse:
    try:
        sweep = sweeps_service.get_sweep(session, sweep_id, tenant=tenant)
        dataset = datasets_service.get_dataset(session, sweep.dataset_id, tenant=tenant)
    except NotFound as exc:
        return _not_found(exc, signed_in(request, tenant))
    return render_page(
        "sweep.html",
        title=f"Sweep {sweep.name or sweep.id[:8]}",
        signed_in=signed_in(request, tenant),
        sweep=sweep,
        dataset=dataset,
        plots=_sweep_plots(request),
        curve_axes=CURVE_AXES,
        jobs_total=sweep.jobs.total,
        jobs_done=sweep.jobs.finished,
        finished=sweep.status in FINISHED_SWEEP_STATUSES,
    )


__all__ = ["install_dashboard", "router"]
