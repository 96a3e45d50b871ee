"""The Batchwise client: HTTP only (an import-linter contract holds that), so it needs no
settings, database or web stack and works the same against the embedded default and a
deployment.

- :class:`BatchwiseClient` and its errors: the typed Python client (:mod:`.http`);
- :mod:`.formatting` and :mod:`.progress`: the terminal's tables, numbers and progress line;
- :mod:`.demo`: ``batchwise demo``, the batch-size story told through this client.
"""

from service.client.errors import (
    BatchwiseAPIError,
    BatchwiseConnectionError,
    BatchwiseError,
    BatchwiseTimeoutError,
)
from service.client.http import API_KEY_ENV, BatchwiseClient
from service.client.schemas import (
    FINISHED_JOB_STATUSES,
    FINISHED_PROBE_STATUSES,
    FINISHED_SWEEP_STATUSES,
    Dataset,
    DatasetPage,
    FieldErrorDict,
    History,
    Job,
    JobErrorDict,
    JobPage,
    Losses,
    LossPair,
    Model,
    Prediction,
    Probe,
    ProbeBranch,
    ProbeCheckpoint,
    ProbeCritical,
    ProbePage,
    ProbeSummary,
    Progress,
    Steps,
    Sweep,
    SweepPage,
    SweepPoint,
    SweepSummary,
    SweepTarget,
    ToTarget,
)

__all__ = [
    "API_KEY_ENV",
    "FINISHED_JOB_STATUSES",
    "FINISHED_PROBE_STATUSES",
    "FINISHED_SWEEP_STATUSES",
    "BatchwiseAPIError",
    "BatchwiseClient",
    "BatchwiseConnectionError",
    "BatchwiseError",
    "BatchwiseTimeoutError",
    "Dataset",
    "DatasetPage",
    "FieldErrorDict",
    "History",
    "Job",
    "JobErrorDict",
    "JobPage",
    "LossPair",
    "Losses",
    "Model",
    "Prediction",
    "Probe",
    "ProbeBranch",
    "ProbeCheckpoint",
    "ProbeCritical",
    "ProbePage",
    "ProbeSummary",
    "Progress",
    "Steps",
    "Sweep",
    "SweepPage",
    "SweepPoint",
    "SweepSummary",
    "SweepTarget",
    "ToTarget",
]
