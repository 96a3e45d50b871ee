"""Plots as images: ``GET /v1/jobs/{id}/plots/loss.svg|png``.

Thin: read the job's history through :mod:`service.jobs.service`, hand it to
:mod:`service.plots` as plain data, answer the bytes. The sweep plots join here once sweeps
have an API.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Response

from service.api.deps import SessionDep
from service.api.problems import problem_responses
from service.errors import Conflict
from service.jobs import HistoryRead
from service.jobs import service as jobs_service
from service.jobs.schemas import EXAMPLE_JOB_ID
from service.plots import (
    LOSS_PLOT_MAX_STEPS,
    MEDIA_TYPES,
    LossHistory,
    PlotFormat,
    render_job_loss,
    steps_per_epoch,
)

router = APIRouter(prefix=jobs_service.JOBS_PATH, tags=["jobs"])

JobId = Annotated[str, Path(description="The job's id.", examples=[EXAMPLE_JOB_ID])]
Format = Annotated[
    PlotFormat, Path(description="`svg` (scalable, text as paths) or `png` (1,200 px wide).")
]

_IMAGE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The plot, as SVG or PNG according to the extension.",
        "content": {media: {"schema": {"type": "string"}} for media in MEDIA_TYPES.values()},
    }
}


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


@router.get(
    "/{job_id}/plots/loss.{fmt}",
    response_class=Response,
    summary="Plot a job's loss",
    description=(
        "Train and validation loss against epoch, with the training loss of every step "
        f"(min/max-downsampled to {LOSS_PLOT_MAX_STEPS:,} points) drawn faintly behind: step "
        "k of an epoch of n steps sits at epoch − 1 + k/n. The y axis is logarithmic when the "
        "loss spans more than two decades. `loss.svg` or `loss.png`; the same history always "
        "gives the same bytes. Readable while the job runs; 409 before its first epoch."
    ),
    responses={**_IMAGE_RESPONSES, **problem_responses(404, 409, 422)},
)
def job_loss_plot(job_id: JobId, fmt: Format, session: SessionDep) -> Response:
    history = jobs_service.history(session, job_id, max_points=LOSS_PLOT_MAX_STEPS)
    image = render_job_loss(loss_history(history), fmt)
    # A running job's plot changes with every epoch: caches must ask again.
    return Response(image, media_type=MEDIA_TYPES[fmt], headers={"Cache-Control": "no-cache"})
