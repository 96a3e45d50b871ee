"""Every migration keeps the rows already there (both backends).

SQLite cannot alter most of a table, so Alembic's batch mode copies it and drops the original;
with ``foreign_keys = ON`` (every connection of ours) that drop deletes, through ON DELETE
CASCADE, every child row. The migration environment turns foreign keys off around SQLite
migrations, as SQLite's own procedure for schema changes says, and checks them at the end.
This test fills the tables at the first revision with jobs and upgrades through every later one.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import MetaData, func, insert, select

from service.db import create_engine_for
from service.db import migrate as migrations

JOBS_REVISION = "671785aef51b"
T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
CHILD_TABLES = ("dataset_chunks", "job_epochs", "job_checkpoints", "job_models")


def test_upgrading_a_database_with_jobs_to_the_head_keeps_every_child_row(
    blank_db_url: str,
) -> None:
    migrations.upgrade(blank_db_url, JOBS_REVISION)
    engine = create_engine_for(blank_db_url)
    try:
        tables = MetaData()
        tables.reflect(bind=engine)
        with engine.begin() as connection:
            connection.execute(
                insert(tables.tables["datasets"]).values(
                    id="d1", name="old", n_rows=3, n_features=1, feature_names=["x"],
                    target_name="y", task="regression", stats={"features": []},
                    source_format="csv", dropped_rows=0, sha256="0" * 64, size_bytes=4,
                    chunk_count=1, created_at=T0,
                )
            )  # fmt: skip
            connection.execute(
                insert(tables.tables["dataset_chunks"]).values(dataset_id="d1", seq=0, data=b"x")
            )
            connection.execute(
                insert(tables.tables["jobs"]).values(
                    id="j1", dataset_id="d1", tags=[], config={}, status="succeeded",
                    epochs=1, created_at=T0,
                )
            )  # fmt: skip
            child = {"job_id": "j1"}
            connection.execute(
                insert(tables.tables["job_epochs"]).values(
                    child | {"epoch": 1, "record": {}, "step_losses": b"\x00\x00\x80\x3f"}
                )
            )
            connection.execute(
                insert(tables.tables["job_checkpoints"]).values(
                    child | {"epoch": 1, "attempt": 1, "data": b"ckpt"}
                )
            )
            connection.execute(
                insert(tables.tables["job_models"]).values(child | {"model": {}, "npz": b"npz"})
            )

        migrations.upgrade(blank_db_url)
        engine.dispose()  # forget the schema the pool's connections cached
        tables = MetaData()
        tables.reflect(bind=engine)
        with engine.connect() as connection:
            counts = {
                name: connection.scalar(select(func.count()).select_from(tables.tables[name]))
                for name in ("datasets", "jobs", *CHILD_TABLES)
            }
            foreign_keys = (
                connection.exec_driver_sql("PRAGMA foreign_keys").scalar()
                if (engine.dialect.name == "sqlite")
                else 1
            )
        assert counts == dict.fromkeys(("datasets", "jobs", *CHILD_TABLES), 1)
        assert foreign_keys == 1  # new connections still enforce them
    finally:
        engine.dispose()
