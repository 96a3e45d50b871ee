"""The tenants migration on a database that already holds data (both backends): every row and
every child row survives (no table is copied, so nothing is deleted through ON DELETE CASCADE),
existing rows go to the tenant ``default``, no server default is left (an insert must name its
tenant), and the downgrade keeps the data too."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine, MetaData, func, insert, inspect, select
from sqlalchemy.exc import IntegrityError

from service.db import create_engine_for
from service.db import migrate as migrations

BEFORE_TENANTS = "de29c8f57210"
T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
COUNTED = ("datasets", "dataset_chunks", "sweeps", "jobs", "job_epochs", "job_checkpoints")
OWNED = ("datasets", "jobs", "sweeps")
#: A sweep row of dataset d1, at the schema before tenants.
SWEEP = {
    "dataset_id": "d1",
    "status": "running",
    "spec": {},
    "lr_method": "given",
    "round": 0,
    "lr_state": {},
    "created_at": T0,
}


def fill(engine: Engine) -> None:
    """One dataset with a chunk, a sweep, a job of the sweep with an epoch and a checkpoint,
    and a lone job: rows in every table that hangs off datasets, sweeps or jobs."""
    tables = MetaData()
    tables.reflect(bind=engine)
    with engine.begin() as connection:
        connection.execute(
            insert(tables.tables["datasets"]).values(
                id="d1",
                name="old",
                n_rows=3,
                n_features=1,
                feature_names=["x"],
                target_name="y",
                task="regression",
                stats={"features": []},
                source_format="csv",
                dropped_rows=0,
                sha256="0" * 64,
                size_bytes=4,
                chunk_count=1,
                created_at=T0,
            )
        )
        connection.execute(
            insert(tables.tables["dataset_chunks"]).values(dataset_id="d1", seq=0, data=b"\x00")
        )
        connection.execute(insert(tables.tables["sweeps"]).values(id="s1", **SWEEP))
        for job_id, sweep_id in (("j1", "s1"), ("j2", None)):
            connection.execute(
                insert(tables.tables["jobs"]).values(
                    id=job_id,
                    dataset_id="d1",
                    tags=[],
                    config={},
                    status="running",
                    cancel_requested=False,
                    attempt=1,
                    max_attempts=3,
                    epoch=1,
                    epochs=2,
                    step=0,
                    samples_seen=0,
                    created_at=T0,
                    sweep_id=sweep_id,
                )
            )
        connection.execute(
            insert(tables.tables["job_epochs"]).values(
                job_id="j1", epoch=1, record={}, step_losses=b"\x00\x00\x80\x3f"
            )
        )
        connection.execute(
            insert(tables.tables["job_checkpoints"]).values(
                job_id="j1", epoch=1, attempt=1, data=b"ckpt"
            )
        )


def counts(engine: Engine) -> dict[str, int]:
    tables = MetaData()
    tables.reflect(bind=engine)
    with engine.connect() as connection:
        return {
            name: connection.scalar(select(func.count()).select_from(tables.tables[name])) or 0
            for name in COUNTED
        }


def test_the_tenants_migration_keeps_every_row_and_gives_it_the_default_tenant(
    blank_db_url: str,
) -> None:
    migrations.upgrade(blank_db_url, BEFORE_TENANTS)
    engine = create_engine_for(blank_db_url)
    try:
        fill(engine)
        before = counts(engine)
        assert before == {
            "datasets": 1,
            "dataset_chunks": 1,
            "sweeps": 1,
            "jobs": 2,
            "job_epochs": 1,
            "job_checkpoints": 1,
        }

        migrations.upgrade(blank_db_url)
        engine.dispose()  # forget the schema the pool's connections cached
        assert counts(engine) == before
        tables = MetaData()
        tables.reflect(bind=engine)
        with engine.connect() as connection:
            for name in OWNED:
                table = tables.tables[name]
                assert set(connection.scalars(select(table.c.tenant))) == {"default"}, name
                column = next(
                    c for c in inspect(connection).get_columns(name) if c["name"] == "tenant"
                )
                assert column["default"] is None, name
                assert column["nullable"] is False, name
        # No default left: an insert that names no tenant fails.
        with pytest.raises(IntegrityError), engine.begin() as connection:
            connection.execute(insert(tables.tables["sweeps"]).values(id="s2", **SWEEP))

        migrations.downgrade(blank_db_url, BEFORE_TENANTS)
        engine.dispose()
        assert counts(engine) == before
        inspector = inspect(engine)
        for name in OWNED:
            assert "tenant" not in {c["name"] for c in inspector.get_columns(name)}, name
        assert "api_keys" not in inspector.get_table_names()
        assert [index["name"] for index in inspector.get_indexes("datasets")] == [
            "ix_datasets_created_at_id"
        ]

        migrations.upgrade(blank_db_url)
        engine.dispose()
        assert counts(engine) == before
    finally:
        engine.dispose()
