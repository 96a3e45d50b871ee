"""Training jobs: submit, follow, cancel and delete them; read their history, model, predictions.

Modules: ``schemas`` (request and read shapes), ``repository`` (the request side's SQL),
``service`` (the rules; import it as ``from service.jobs import service as jobs_service``),
``history`` (per-epoch tables, step-loss downsampling, CSV), ``limits`` (steps, runtime and
queued jobs per tenant). The worker's queue operations (claim, lease, fenced writes, the
per-tenant running limit) live in ``queue``.
"""

from service.jobs.schemas import (
    FINISHED_STATUSES,
    HistoryRead,
    JobCreate,
    JobPage,
    JobRead,
    JobStatus,
    ModelRead,
    PredictRequest,
    PredictResponse,
)

__all__ = [
    "FINISHED_STATUSES",
    "HistoryRead",
    "JobCreate",
    "JobPage",
    "JobRead",
    "JobStatus",
    "ModelRead",
    "PredictRequest",
    "PredictResponse",
]
