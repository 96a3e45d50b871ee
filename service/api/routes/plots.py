"""Plots as images: ``GET /v1/jobs/{id}/plots/loss.svg|png``, and a sweep's
``GET /v1/sweeps/{id}/plots/curves.svg|png?x=…`` and ``GET /v1/sweeps/{id}/plots/scaling.svg|png``,
each format its own operation (:mod:`service.api.images`).

Thin: read the job's history through :mod:`service.jobs.service`, or a sweep's plot data through
:mod:`service.sweeps.plots_data`, hand it to :mod:`service.plots` as plain data, answer the
bytes. Every plot may change while its job or sweep runs, so none is cached without asking.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Response

from service.api.auth import REQUIRE_TENANT
from service.api.deps import SessionDep, TenantDep
from service.api.images import add_image_routes, image_response
from service.api.problems import problem_responses
from service.errors import Conflict
from service.jobs import HistoryRead
from service.jobs import service as jobs_service
from service.jobs.schemas import EXAMPLE_JOB_ID
from service.plots import (
    LOSS_PLOT_MAX_STEPS,
    CurveAxis,
    LossHistory,
    PlotFormat,
    render_job_loss,
    render_sweep_curves,
    render_sweep_scaling,
    steps_per_epoch,
)
from service.sweeps import plots_data
from service.sweeps import service as sweeps_service
from service.sweeps.schemas import EXAMPLE_SWEEP_ID

router = APIRouter(dependencies=[REQUIRE_TENANT], responses=problem_responses(401))

JobId = Annotated[str, Path(description="The job's id.", examples=[EXAMPLE_JOB_ID])]
SweepId = Annotated[str, Path(description="The sweep's id.", examples=[EXAMPLE_SWEEP_ID])]
Format = Annotated[
    PlotFormat, Path(description="`svg` (scalable, text as paths) or `png` (1,200 px wide).")
]
XAxis = Annotated[
    CurveAxis,
    Query(
        description="What the curves are drawn against: `epoch` (default), optimizer `step`, "
        "training `samples` seen, or wall `time` in seconds."
    ),
]


def loss_history(history: HistoryRead) -> LossHistory:
    """The plain data of a job's loss plot; :class:`Conflict` (409) before its first epoch."""
    if not history.epoch:
        raise Conflict(
            f"Job {history.job_id!r} has no epochs recorded yet ({history.status}): its loss "
            "plot exists once the first epoch has finished."
        )
    return LossHistory(
        epoch=history.epoch,
        train_loss=history.train_loss,
        val_loss=history.val_loss,
        steps_per_epoch=steps_per_epoch(
            history.samples_seen, history.batch_size, history.total_steps
        ),
        step=history.steps.step,
        step_loss=history.steps.loss,
        steps_downsampled=history.downsampled,
        title=f"Loss of job {history.job_id} ({history.status})",
    )


def job_loss_plot(job_id: JobId, fmt: Format, session: SessionDep, tenant: TenantDep) -> Response:
    history = jobs_service.history(session, job_id, tenant=tenant, max_points=LOSS_PLOT_MAX_STEPS)
    return image_response(render_job_loss(loss_history(history), fmt), fmt)


def sweep_curves_plot(
    sweep_id: SweepId, fmt: Format, session: SessionDep, tenant: TenantDep, x: XAxis = "epoch"
) -> Response:
    data = plots_data.curves_data(session, sweep_id, tenant=tenant)
    image = render_sweep_curves(
        data.curves, x=x, target=data.target, fmt=fmt, title=data.title, loss_label=data.loss_label
    )
    return image_response(image, fmt)


def sweep_scaling_plot(
    sweep_id: SweepId, fmt: Format, session: SessionDep, tenant: TenantDep
) -> Response:
    data = plots_data.scaling_data(session, sweep_id, tenant=tenant)
    image = render_sweep_scaling(data.points, data.fit, fmt=fmt, title=data.title, note=data.note)
    return image_response(image, fmt)


add_image_routes(
    router,
    jobs_service.JOBS_PATH + "/{job_id}/plots/loss.{fmt}",
    job_loss_plot,
    operation_id="getJobLossPlot",
    tags=["jobs"],
    summary="Plot a job's loss",
    description=(
        "Train and validation loss against epoch, with the training loss of every step "
        f"(min/max-downsampled to {LOSS_PLOT_MAX_STEPS:,} points) drawn faintly behind: step "
        "k of an epoch of n steps sits at epoch − 1 + k/n. The y axis is logarithmic when the "
        "loss spans more than two decades. The same history always gives the same bytes. "
        "Readable while the job runs; 409 before its first epoch."
    ),
)
add_image_routes(
    router,
    sweeps_service.SWEEPS_PATH + "/{sweep_id}/plots/curves.{fmt}",
    sweep_curves_plot,
    operation_id="getSweepCurvesPlot",
    tags=["sweeps"],
    summary="Plot a sweep's loss curves",
    description=(
        "Every point's loss curve overlaid (the loss the target is on: train or validation), "
        "one colour per batch size along viridis, smallest darkest, and the target loss as a "
        "dashed line. Each batch size shows its runs at its chosen learning rate, one curve "
        "per seed, at step 0 (the initial loss) and every epoch end. `x` = `epoch`, `step`, "
        "`samples` or `time`; step, samples and time axes, and the loss axis, are logarithmic "
        "when they span more than two decades. Readable while the sweep runs; 409 before any "
        "point has finished an epoch, 422 for another `x`."
    ),
)
add_image_routes(
    router,
    sweeps_service.SWEEPS_PATH + "/{sweep_id}/plots/scaling.{fmt}",
    sweep_scaling_plot,
    operation_id="getSweepScalingPlot",
    tags=["sweeps"],
    summary="Plot a sweep's steps and samples to target",
    description=(
        "Steps (top) and samples (bottom) to the target against batch size, log-log, one "
        "marker per run at each batch size's chosen learning rate; runs that have not reached "
        "the target as open markers along the top edge. With the sweep's fit (as in `GET "
        "/v1/sweeps/{id}`): S(B) = S_min (1 + B_noise/B) and E(B) = E_min (1 + B/B_noise), "
        "their band over B_noise's bootstrap interval (S_min held), the S_min and E_min "
        "asymptotes and B_noise as a dashed vertical line; without one, the reason under the "
        "title. Readable while the sweep runs; 409 before any point has finished an epoch."
    ),
)
