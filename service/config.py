"""Settings: the one place that reads the environment (prefix ``BATCHWISE_``).

Entry points build a :class:`Settings` once and pass it down; tests build their own.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

GiB = 1024**3


@functools.cache
def physical_memory_bytes() -> int | None:
    """This machine's physical memory (read once per process), None where sysconf lacks it."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


class Settings(BaseSettings):
    """Everything an operator can set, with the defaults of the embedded quick start."""

    model_config = SettingsConfigDict(env_prefix="BATCHWISE_", extra="ignore", frozen=True)

    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL; default a SQLite file `batchwise.db` in the data dir. "
        "PostgreSQL: postgresql+psycopg://user:password@host:5432/dbname",
    )
    database_timeout_s: Annotated[float, Field(gt=0, le=300)] = Field(
        default=5.0,
        description="PostgreSQL, in the API: the longest wait for a new connection (libpq: at "
        "least 2 s) or for any one answer of the server; past it the request is answered 503 "
        "with `Retry-After`. Bounds what a stalled server costs a request.",
    )
    data_dir: Path = Field(
        default=Path("./batchwise-data"),
        description="Where the SQLite database, upload spool files and the worker's dataset "
        "cache live.",
    )
    host: str = Field(default="127.0.0.1", description="Address `batchwise serve` listens on.")
    port: Annotated[int, Field(ge=0, le=65535)] = Field(
        default=8000, description="Port `batchwise serve` listens on."
    )
    api_processes: Annotated[int, Field(ge=1)] = Field(
        default=1,
        description="API processes `batchwise serve` runs (uvicorn workers sharing its port, "
        "each with its own database pool); more use more cores for requests. The embedded "
        "workers are started once, whatever this is.",
    )
    metrics_token: SecretStr | None = Field(
        default=None,
        description="When set, `GET /metrics` needs `Authorization: Bearer <this token>` (401 "
        "with `WWW-Authenticate: Bearer` without it); unset, `/metrics` is open to anyone who "
        "reaches the port. Give it to the Prometheus scrape job (`authorization.credentials`).",
    )
    auth: Literal["on", "off"] = Field(
        default="on",
        description="`on`: every `/v1` request needs an API key (`Authorization: Bearer`; "
        "`batchwise keys create`). `off`: every request acts as the tenant `default`, allowed "
        "only when `batchwise serve` listens on a loopback address.",
    )
    workers: Annotated[int, Field(ge=0)] = Field(
        default=1,
        description="Worker processes `batchwise serve` starts beside the API (0 for none).",
    )
    lease_seconds: Annotated[float, Field(gt=0)] = Field(
        default=30.0,
        description="How long a worker's claim on a job lasts without a heartbeat.",
    )
    poll_seconds: Annotated[float, Field(gt=0)] = Field(
        default=1.0,
        description="Longest wait of an idle worker between two looks at the queue (it backs "
        "off from 50 ms to this while the queue stays empty).",
    )
    worker_threads: Annotated[int, Field(ge=1)] = Field(
        default=1,
        description="BLAS/OpenMP threads per worker process, so N workers do not oversubscribe "
        "the cores.",
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        default="info", description="Log level of the API and the workers."
    )
    log_format: Literal["auto", "json", "text"] = Field(
        default="auto",
        description="Log line format: `json` (one object per line: time, level, logger, "
        "message, request_id, job_id, worker_id, exception), `text`, or `auto` (text on a "
        "terminal, JSON otherwise).",
    )
    max_upload_bytes: Annotated[int, Field(ge=1)] = Field(
        default=GiB, description="Largest dataset upload accepted, in bytes (413 above it)."
    )
    max_request_bytes: Annotated[int, Field(ge=1024)] = Field(
        default=16 * 1024**2,
        description="Largest body of any other request (JSON: jobs, sweeps, predictions), in "
        "bytes (413 above it, cut off while streaming).",
    )
    max_rows: Annotated[int, Field(ge=2)] = Field(
        default=50_000_000, description="Most rows a dataset may have."
    )
    max_features: Annotated[int, Field(ge=1)] = Field(
        default=10_000, description="Most feature columns a dataset may have."
    )
    max_cells: Annotated[int, Field(ge=1)] = Field(
        default=100_000_000,
        description="Most cells (rows × features) a dataset may have, 413 above it: 100 M "
        "float64 cells store as 800 MB and a worker holds them in memory.",
    )
    max_decompressed_bytes: Annotated[int, Field(ge=1)] = Field(
        default=GiB,
        description="Most bytes the arrays of an NPZ upload may hold once decompressed (`X`, "
        "`y` and `feature_names` summed), judged from the archive's headers before any is "
        "decompressed; 413 above it. The default matches the upload limit: an NPZ file unpacks "
        "to no more than an uncompressed upload may carry.",
    )
    tenant_max_stored_bytes: Annotated[int, Field(ge=0)] = Field(
        default=10 * GiB,
        description="Most bytes of stored datasets per tenant (the sum of their `size_bytes`); "
        "an upload that would pass it is refused with 413 and nothing is stored.",
    )
    tenant_max_queued_jobs: Annotated[int, Field(ge=1)] = Field(
        default=1_000,
        description="Most queued jobs per tenant; a job or sweep that would pass it is refused "
        "with 429 and Retry-After.",
    )
    checkpoint_budget_bytes: Annotated[int, Field(ge=0)] = Field(
        default=256 * 1024**2,
        description="Most bytes of kept checkpoints (a job's `keep_checkpoints`) per tenant. A "
        "job whose checkpoints would pass it is refused at submit with 422; an epoch that "
        "finds it full anyway (other jobs filled it meanwhile) is not kept, with a note.",
    )
    tenant_max_running_jobs: Annotated[int, Field(ge=1)] = Field(
        default=4,
        description="Most jobs of one tenant running at once; its other jobs stay queued while "
        "workers take other tenants' jobs.",
    )
    max_steps_per_job: Annotated[int, Field(ge=1)] = Field(
        default=10_000_000,
        description="Most optimizer steps one job may take (epochs × steps per epoch, over the "
        "batch-size schedule); 422 above it.",
    )
    max_job_runtime_s: Annotated[float, Field(gt=0)] = Field(
        default=86_400.0,
        description="`max_runtime_s` of a job that sets none, and the most one may ask for "
        "(422 above it); a job past it ends `failed` with `time_limit`.",
    )
    max_job_bytes: Annotated[int, Field(ge=1)] | None = Field(
        default=None,
        description="Most bytes one job may need in a worker (parameters, gradient, optimizer "
        "state, checkpoints, a step's work arrays at its largest batch, the rows it holds, the "
        "stored model), estimated at submit from the config and the dataset's shape; 422 "
        "above it. Unset: a quarter of this machine's physical memory, read at start; set it "
        "to the workers' share when they run on other machines.",
    )

    @property
    def resolved_max_job_bytes(self) -> int | None:
        """The job budget in force: the configured one, else a quarter of the physical memory
        (None, unchecked, where the platform cannot tell it)."""
        if self.max_job_bytes is not None:
            return self.max_job_bytes
        memory = physical_memory_bytes()
        return None if memory is None else memory // 4

    @property
    def resolved_database_url(self) -> str:
        """The database URL in force: the configured one, or the embedded SQLite file."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'batchwise.db').as_posix()}"
