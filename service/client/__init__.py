"""The Batchwise client: HTTP only (an import-linter contract holds that), so it needs no
settings, database or web stack and works the same against the embedded default and a
deployment.

- :class:`BatchwiseClient` and its errors: the typed Python client (:mod:`.http`);
- :mod:`.formatting` and :mod:`.progress`: the terminal's tables, numbers and progress line;
- :mod:`.demo`: ``batchwise demo``, the batch-size story told through this client.

The client and its errors load on first use (``from service.client import BatchwiseClient``
works as usual): every ``batchwise`` command imports this package for its schemas, and only
the remote ones need the HTTP stack.
"""

import importlib
from typing import TYPE_CHECKING

from service.client.environment import API_KEY_ENV
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

if TYPE_CHECKING:
    from service.client.errors import (
        BatchwiseAPIError,
        BatchwiseConnectionError,
        BatchwiseError,
        BatchwiseTimeoutError,
    )
    from service.client.http import BatchwiseClient

_ON_FIRST_USE = {
    "BatchwiseClient": "service.client.http",
    "BatchwiseAPIError": "service.client.errors",
    "BatchwiseConnectionError": "service.client.errors",
    "BatchwiseError": "service.client.errors",
    "BatchwiseTimeoutError": "service.client.errors",
}


def __getattr__(name: str) -> object:
    if name not in _ON_FIRST_USE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_ON_FIRST_USE[name]), name)


def __dir__() -> list[str]:
    return sorted(__all__)


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
