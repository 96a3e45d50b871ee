"""Persistence: the ORM tables, engines and sessions, and schema migrations (Alembic)."""

from service.db.base import Base
from service.db.ownership import owned
from service.db.session import (
    DatabaseUrlError,
    create_engine_for,
    is_sqlite,
    normalize_url,
    session_factory,
)
from service.db.tables import (
    Dataset,
    DatasetChunk,
    Job,
    JobCheckpoint,
    JobEpoch,
    JobKeptCheckpoint,
    JobModel,
    UTCDateTime,
    utcnow,
)

__all__ = [
    "Base",
    "DatabaseUrlError",
    "Dataset",
    "DatasetChunk",
    "Job",
    "JobCheckpoint",
    "JobEpoch",
    "JobKeptCheckpoint",
    "JobModel",
    "UTCDateTime",
    "create_engine_for",
    "is_sqlite",
    "normalize_url",
    "owned",
    "session_factory",
    "utcnow",
]
