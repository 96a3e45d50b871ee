"""Datasets: upload, validate, store in the database in chunks, read back.

Modules: ``schemas`` (request and read shapes), ``ingest`` and ``arrays`` (parsing and the
canonical stored form, pure), ``repository`` (all SQL), ``service`` (the rules; import it as
``from service.datasets import service as datasets_service``).
"""

from service.datasets.schemas import (
    DatasetCreateJSON,
    DatasetPage,
    DatasetRead,
    DatasetUploadForm,
    FeatureStatsRead,
)

__all__ = [
    "DatasetCreateJSON",
    "DatasetPage",
    "DatasetRead",
    "DatasetUploadForm",
    "FeatureStatsRead",
]
