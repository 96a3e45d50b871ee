"""Every ORM class of the service (SQLAlchemy 2.0 typed mappings).

Datetimes are timezone-aware UTC on both databases (:class:`UTCDateTime`). Table names are plural
nouns; child tables are ``<parent>_<children>`` (``dataset_chunks``; later ``job_epochs``).

Datasets, jobs and sweeps belong to a tenant (``tenant``, the name an API key carries): no server
default, so every insert names its owner; lists page by ``(tenant, created_at, id)``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    false,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

from service.db.base import Base


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """``DateTime(timezone=True)`` that always returns aware UTC datetimes.

    PostgreSQL stores ``timestamptz`` and returns it in the session's time zone; SQLite stores
    text without an offset and returns naive values. Binding converts to UTC (naive input is
    refused: its meaning is ambiguous); results are converted to, or labelled as, UTC.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value!r}: pass a timezone-aware datetime")
        value = value.astimezone(UTC)
        # SQLite keeps no offset; store the UTC wall time so text order is time order.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


#: A tenant's name: what an API key and every dataset, job and sweep carry.
TENANT_LENGTH = 64


class Dataset(Base):
    """An uploaded dataset's metadata; its bytes live in :class:`DatasetChunk` rows.

    ``feature_names``: list of ``n_features`` str; ``classes``: list of class labels
    (classification only); ``stats``: per-column summary statistics as JSON.
    """

    __tablename__ = "datasets"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(TENANT_LENGTH))
    name: Mapped[str] = mapped_column(String(200))
    n_rows: Mapped[int] = mapped_column(BigInteger)
    n_features: Mapped[int] = mapped_column(Integer)
    feature_names: Mapped[list[str]] = mapped_column(JSON)
    target_name: Mapped[str] = mapped_column(String(200))
    task: Mapped[str] = mapped_column(String(16))  # regression | binary | multiclass
    # none_as_null: a regression dataset's missing classes are SQL NULL, not JSON 'null'.
    classes: Mapped[list[Any] | None] = mapped_column(JSON(none_as_null=True), nullable=True)
    stats: Mapped[dict[str, Any]] = mapped_column(JSON)
    source_format: Mapped[str] = mapped_column(String(8))  # csv | npy | npz | json
    dropped_rows: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    sha256: Mapped[str] = mapped_column(String(64))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    chunk_count: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    chunks: Mapped[list[DatasetChunk]] = relationship(
        back_populates="dataset",
        order_by="DatasetChunk.seq",
        cascade="all, delete-orphan",
        passive_deletes=True,  # the database's ON DELETE CASCADE removes the bytes
        lazy="raise",  # chunk bytes are large: load them only on purpose
    )

    # A tenant's newest-first keyset pagination: WHERE tenant = ? ORDER BY created_at DESC, id DESC.
    __table_args__ = (Index("ix_datasets_tenant_created_at_id", "tenant", "created_at", "id"),)


class DatasetChunk(Base):
    """One slice of a dataset's stored bytes; ``seq`` counts from 0, concatenated in order."""

    __tablename__ = "dataset_chunks"

    dataset_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("datasets.id", ondelete="CASCADE"), primary_key=True
    )
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    data: Mapped[bytes] = mapped_column(LargeBinary)

    dataset: Mapped[Dataset] = relationship(back_populates="chunks", lazy="raise")


class Job(Base):
    """A training job: its resolved config, its queue state (lease, attempts) and its progress.

    ``status``: queued | running | succeeded | failed | cancelled. ``attempt`` counts claims so far;
    every worker write is fenced on (``id``, ``attempt``, ``worker_id``, ``status = 'running'``).
    ``epoch`` counts completed epochs; ``step`` is the step within the running epoch (heartbeats).
    Losses are finite or NULL: JSON cannot carry NaN or infinity.
    """

    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(TENANT_LENGTH))
    dataset_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("datasets.id", ondelete="RESTRICT"), index=True
    )
    name: Mapped[str | None] = mapped_column(String(200), nullable=True)
    tags: Mapped[list[str]] = mapped_column(JSON)
    config: Mapped[dict[str, Any]] = mapped_column(JSON)  # the resolved TrainConfig.to_dict()
    max_runtime_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    status: Mapped[str] = mapped_column(String(16))
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    attempt: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    max_attempts: Mapped[int] = mapped_column(Integer, default=3, server_default="3")
    # Attempts in a row that checkpointed no new epoch (the running one included): the job
    # fails as poison at max_attempts of them; a new epoch resets it.
    stalled_attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    worker_id: Mapped[str | None] = mapped_column(String(100), nullable=True)
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    epoch: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    epochs: Mapped[int] = mapped_column(Integer)
    step: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    steps_per_epoch: Mapped[int | None] = mapped_column(Integer, nullable=True)
    samples_seen: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    latest_train_loss: Mapped[float | None] = mapped_column(Float, nullable=True)
    latest_val_loss: Mapped[float | None] = mapped_column(Float, nullable=True)
    best_train_loss: Mapped[float | None] = mapped_column(Float, nullable=True)
    best_val_loss: Mapped[float | None] = mapped_column(Float, nullable=True)
    error_code: Mapped[str | None] = mapped_column(String(40), nullable=True)
    error_message: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # A sweep's point: {batch_size, learning_rate, seed, round}; both NULL for a lone job.
    sweep_id: Mapped[str | None] = mapped_column(
        String(36), ForeignKey("sweeps.id", ondelete="CASCADE"), nullable=True, index=True
    )
    sweep_point: Mapped[dict[str, Any] | None] = mapped_column(
        JSON(none_as_null=True), nullable=True
    )
    # A warm start: {job_id, epoch, reset_optimizer}; NULL for a job that starts afresh.
    init_from: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True), nullable=True)
    # The epochs whose checkpoints the job keeps: a list of epochs or "all"; NULL for none.
    keep_checkpoints: Mapped[list[int] | str | None] = mapped_column(
        JSON(none_as_null=True), nullable=True
    )

    __table_args__ = (
        # The claim: the oldest queued job (and expired running ones) by status, then age.
        Index("ix_jobs_status_created_at", "status", "created_at"),
        # A tenant's newest-first keyset pagination (status, dataset and tag filter the scan).
        Index("ix_jobs_tenant_created_at_id", "tenant", "created_at", "id"),
    )


class Sweep(Base):
    """One job config run over several batch sizes (and learning rates, and seeds); its points
    are ordinary :class:`Job` rows carrying ``sweep_id`` and ``sweep_point``.

    ``status``: running | succeeded | failed | cancelled. ``spec`` is the validated request
    (``SweepCreate`` without ``dataset_id``); ``lr_method`` given | searched | scaled;
    ``round`` the learning-rate round submitted last (0 first); ``lr_state`` the search's
    memory, per batch size (``{"<B>": {"rates": [...], "done": bool}}``).
    """

    __tablename__ = "sweeps"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(TENANT_LENGTH))
    # CASCADE: a dataset can only be deleted once it has no jobs, and a sweep without its jobs
    # and data means nothing.
    dataset_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("datasets.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str | None] = mapped_column(String(200), nullable=True)
    status: Mapped[str] = mapped_column(String(16))
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    lr_method: Mapped[str] = mapped_column(String(16))
    round: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    lr_state: Mapped[dict[str, Any]] = mapped_column(JSON)
    error_message: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)

    # A tenant's newest-first keyset pagination: WHERE tenant = ? ORDER BY created_at DESC, id DESC.
    __table_args__ = (Index("ix_sweeps_tenant_created_at_id", "tenant", "created_at", "id"),)


class JobEpoch(Base):
    """One completed epoch of a job: ``record`` is ``EpochRecord.to_dict()`` (finite values only);
    ``step_losses`` the epoch's per-step losses as float32 little-endian bytes, (steps,)."""

    __tablename__ = "job_epochs"

    job_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True
    )
    epoch: Mapped[int] = mapped_column(Integer, primary_key=True)
    record: Mapped[dict[str, Any]] = mapped_column(JSON)
    step_losses: Mapped[bytes] = mapped_column(LargeBinary)


class JobCheckpoint(Base):
    """A job's latest checkpoint (``Checkpoint.to_bytes()``), taken after ``epoch``."""

    __tablename__ = "job_checkpoints"

    job_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True
    )
    epoch: Mapped[int] = mapped_column(Integer)
    attempt: Mapped[int] = mapped_column(Integer)
    data: Mapped[bytes] = mapped_column(LargeBinary)


class JobKeptCheckpoint(Base):
    """A checkpoint a job keeps (``Job.keep_checkpoints``), taken after ``epoch``, with the
    samples seen and train loss there. ``data`` NULL: not kept, ``note`` says why (the tenant's
    checkpoint budget was full)."""

    __tablename__ = "job_kept_checkpoints"

    job_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True
    )
    epoch: Mapped[int] = mapped_column(Integer, primary_key=True)
    samples_seen: Mapped[int] = mapped_column(BigInteger)
    train_loss: Mapped[float | None] = mapped_column(Float, nullable=True)
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    data: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    note: Mapped[str | None] = mapped_column(Text, nullable=True)


class JobStart(Base):
    """The checkpoint a warm-started job starts from (``Job.init_from``), copied at submit so
    that the source's later epochs or its deletion cannot change it."""

    __tablename__ = "job_starts"

    job_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True
    )
    data: Mapped[bytes] = mapped_column(LargeBinary)


class JobModel(Base):
    """A succeeded job's fitted model: ``model`` is ``FittedModel.to_dict()``; ``npz`` its
    ``to_npz_bytes()``."""

    __tablename__ = "job_models"

    job_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True
    )
    model: Mapped[dict[str, Any]] = mapped_column(JSON)
    npz: Mapped[bytes] = mapped_column(LargeBinary)


class ApiKey(Base):
    """An API key of a tenant. The key itself (``bw_<id>_<secret>``) is shown once, when it is
    made; only ``key_hash``, the SHA-256 hex of the whole key, is stored. A fast hash is right
    here, unlike for passwords: the secret carries 256 random bits, so there is nothing to
    guess from the hash, and checking a key stays cheap on every request."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(TENANT_LENGTH))
    name: Mapped[str | None] = mapped_column(String(200), nullable=True)
    key_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class TenantLimits(Base):
    """One tenant's own limits, overriding the configured defaults (``Settings``); a NULL
    column keeps the default. Set with ``batchwise tenants set-limits``."""

    __tablename__ = "tenant_limits"

    tenant: Mapped[str] = mapped_column(String(TENANT_LENGTH), primary_key=True)
    max_running_jobs: Mapped[int | None] = mapped_column(Integer, nullable=True)
    max_queued_jobs: Mapped[int | None] = mapped_column(Integer, nullable=True)
    max_stored_bytes: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    max_steps_per_job: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    max_job_runtime_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    max_job_bytes: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Probe(Base):
    """A probe of a source job's critical batch size (Merrill et al. 2025): branches from its
    checkpoints at several batch multipliers; its branches are ordinary :class:`Job` rows named
    in :class:`ProbeBranch`.

    ``status``: running | succeeded | failed | cancelled. ``spec`` is the validated request with
    its defaults resolved (``at_epochs``, ``multipliers``, ``window_samples``); ``round`` the
    learning-rate round submitted last (0 first).
    """

    __tablename__ = "probes"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(TENANT_LENGTH))
    # CASCADE: a probe without its source job means nothing.
    job_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("jobs.id", ondelete="CASCADE"), index=True
    )
    dataset_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("datasets.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str | None] = mapped_column(String(200), nullable=True)
    status: Mapped[str] = mapped_column(String(16))
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    round: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    error_message: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)

    # A tenant's newest-first keyset pagination: WHERE tenant = ? ORDER BY created_at DESC, id DESC.
    __table_args__ = (Index("ix_probes_tenant_created_at_id", "tenant", "created_at", "id"),)


class ProbeBranch(Base):
    """One branch job of a probe: the checkpoint ``epoch`` it starts from, its batch
    ``multiplier``, ``learning_rate``, ``seed`` and the learning-rate ``round`` it ran in."""

    __tablename__ = "probe_branches"

    job_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True
    )
    probe_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("probes.id", ondelete="CASCADE"), index=True
    )
    epoch: Mapped[int] = mapped_column(Integer)
    multiplier: Mapped[int] = mapped_column(Integer)
    learning_rate: Mapped[float] = mapped_column(Float)
    seed: Mapped[int] = mapped_column(BigInteger)
    round: Mapped[int] = mapped_column(Integer)


__all__ = [
    "TENANT_LENGTH",
    "ApiKey",
    "Base",
    "Dataset",
    "DatasetChunk",
    "Job",
    "JobCheckpoint",
    "JobEpoch",
    "JobKeptCheckpoint",
    "JobModel",
    "JobStart",
    "Probe",
    "ProbeBranch",
    "Sweep",
    "TenantLimits",
    "UTCDateTime",
    "utcnow",
]
