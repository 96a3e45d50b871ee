"""The migration after tenants (786c068b3a7d) on both backends: unfinished jobs queued before
the runtime limit get the limit in force (``BATCHWISE_MAX_JOB_RUNTIME_S``, stored on the row,
so the API shows what the worker enforces); finished jobs and jobs that asked for a limit keep
theirs. Unfinished jobs start with ``stalled_attempts = attempt`` (no job gains retries)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import MetaData, insert, select

from service.db import create_engine_for
from service.db import migrate as migrations

BEFORE = "ebe499a38c96"  # tenants and API keys: the head before this migration
T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)

#: id → (status, attempt, max_runtime_s) as stored before the migration.
OLD_JOBS = {
    "queued-none": ("queued", 0, None),
    "running-none": ("running", 2, None),
    "queued-asked": ("queued", 1, 30.0),
    "succeeded-none": ("succeeded", 1, None),
    "failed-none": ("failed", 3, None),
}


def test_old_unfinished_jobs_get_the_configured_runtime_limit(
    blank_db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    migrations.upgrade(blank_db_url, BEFORE)
    engine = create_engine_for(blank_db_url)
    try:
        tables = MetaData()
        tables.reflect(bind=engine)
        with engine.begin() as connection:
            connection.execute(
                insert(tables.tables["datasets"]).values(
                    id="d1", tenant="default", name="old", n_rows=3, n_features=1,
                    feature_names=["x"], target_name="y", task="regression",
                    stats={"features": []}, source_format="csv", dropped_rows=0,
                    sha256="0" * 64, size_bytes=4, chunk_count=1, created_at=T0,
                )
            )  # fmt: skip
            for job_id, (status, attempt, runtime) in OLD_JOBS.items():
                connection.execute(
                    insert(tables.tables["jobs"]).values(
                        id=job_id, tenant="default", dataset_id="d1", tags=[], config={},
                        status=status, attempt=attempt, epochs=1, max_runtime_s=runtime,
                        created_at=T0,
                    )
                )  # fmt: skip

        monkeypatch.setenv("BATCHWISE_MAX_JOB_RUNTIME_S", "1234.5")
        migrations.upgrade(blank_db_url)
        engine.dispose()
        tables = MetaData()
        tables.reflect(bind=engine)
        jobs = tables.tables["jobs"]
        with engine.connect() as connection:
            rows = {
                row.id: (row.max_runtime_s, row.stalled_attempts)
                for row in connection.execute(
                    select(jobs.c.id, jobs.c.max_runtime_s, jobs.c.stalled_attempts)
                )
            }
    finally:
        engine.dispose()
    assert rows == {
        "queued-none": (1234.5, 0),
        "running-none": (1234.5, 2),
        "queued-asked": (30.0, 1),
        "succeeded-none": (None, 0),
        "failed-none": (None, 0),
    }
