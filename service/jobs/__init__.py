"""Training jobs: submit, follow, cancel and delete them; read their history, model, predictions.

Modules: ``schemas`` (what a client sends), ``read_schemas`` (what it reads back),
``repository`` (the request side's SQL), ``service`` (the rules; import it as
``from service.jobs import service as jobs_service``), ``predictions`` (the trained model and
predicting with it), ``advice`` (a job's batch-size advice, from :mod:`service.science`),
``history`` (per-epoch tables, step-loss downsampling, CSV), ``limits`` (steps, runtime and
queued jobs per tenant). The worker's queue
operations (claim, lease, fenced writes, the per-tenant running limit) live in ``queue``.
"""

from service.jobs.read_schemas import HistoryRead, JobPage, JobRead, ModelRead, PredictResponse
from service.jobs.schemas import FINISHED_STATUSES, JobCreate, JobStatus, PredictRequest

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
