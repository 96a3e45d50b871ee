"""Migrations: the head matches the models, and upgrade → downgrade → upgrade works."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Column, Engine, Integer, MetaData, inspect

from service.db import Base, create_engine_for
from service.db import migrate as migrations

DATA_TABLES = {
    "api_keys",
    "datasets",
    "dataset_chunks",
    "jobs",
    "tenant_limits",
    "job_epochs",
    "job_checkpoints",
    "job_kept_checkpoints",
    "job_starts",
    "job_models",
    "sweeps",
    "probes",
    "probe_branches",
}


def schema_diff(engine: Engine, metadata: MetaData) -> list[object]:
    with engine.connect() as connection:
        context = MigrationContext.configure(
            connection, opts={"compare_type": True, "compare_server_default": True}
        )
        return list(compare_metadata(context, metadata))


def test_models_and_migration_head_agree(engine: Engine) -> None:
    assert schema_diff(engine, Base.metadata) == []


def test_schema_comparison_detects_a_column_missing_from_the_migrations(engine: Engine) -> None:
    metadata = MetaData(naming_convention=Base.metadata.naming_convention)
    for table in Base.metadata.tables.values():
        table.to_metadata(metadata)
    metadata.tables["datasets"].append_column(Column("not_migrated", Integer, nullable=True))

    diff = schema_diff(engine, metadata)

    assert [(op[0], op[2], op[3].name) for op in diff] == [  # type: ignore[index]
        ("add_column", "datasets", "not_migrated")
    ]


def test_constraints_carry_the_naming_convention(engine: Engine) -> None:
    inspector = inspect(engine)
    assert inspector.get_pk_constraint("datasets")["name"] == "pk_datasets"
    assert inspector.get_pk_constraint("dataset_chunks")["name"] == "pk_dataset_chunks"
    (foreign_key,) = inspector.get_foreign_keys("dataset_chunks")
    assert foreign_key["name"] == "fk_dataset_chunks_dataset_id_datasets"
    assert foreign_key["referred_table"] == "datasets"
    assert foreign_key["options"].get("ondelete") == "CASCADE"
    assert [
        (index["name"], index["column_names"]) for index in inspector.get_indexes("datasets")
    ] == [("ix_datasets_tenant_created_at_id", ["tenant", "created_at", "id"])]


def test_upgrade_downgrade_upgrade(blank_db_url: str) -> None:
    engine = create_engine_for(blank_db_url)
    try:
        assert migrations.current_revision(blank_db_url) is None
        assert not migrations.is_at_head(blank_db_url)

        migrations.upgrade(blank_db_url)
        assert set(inspect(engine).get_table_names()) == DATA_TABLES | {"alembic_version"}
        assert migrations.current_revision(engine) == migrations.head_revision()

        migrations.downgrade(blank_db_url, "base")
        assert set(inspect(engine).get_table_names()) == {"alembic_version"}
        assert migrations.current_revision(blank_db_url) is None

        migrations.upgrade(blank_db_url)
        assert migrations.is_at_head(engine)
        assert schema_diff(engine, Base.metadata) == []
    finally:
        engine.dispose()


def test_upgrade_at_head_changes_nothing(db_url: str) -> None:
    head = migrations.head_revision()
    assert migrations.current_revision(db_url) == head
    migrations.upgrade(db_url)
    assert migrations.current_revision(db_url) == head


def test_migration_files_are_date_prefixed_and_form_one_line() -> None:
    names = sorted(p.name for p in (migrations.migrations_dir() / "versions").glob("*.py"))
    assert names
    for name in names:
        assert re.fullmatch(r"\d{4}_\d{2}_\d{2}_\d{4}-[0-9a-f]{12}_\w+\.py", name), name
    assert names[-1].split("-")[1].startswith(migrations.head_revision())


def test_alembic_command_line_reads_pyproject() -> None:
    # `alembic` from the repository root finds the scripts through [tool.alembic].
    result = subprocess.run(
        [sys.executable, "-m", "alembic", "heads"],
        cwd=migrations.migrations_dir().parent,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[:2] == [migrations.head_revision(), "(head)"]


def test_missing_migration_scripts_are_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(migrations, "MIGRATIONS_PACKAGE", "service._no_such_migrations")
    migrations.migrations_dir.cache_clear()
    try:
        with pytest.raises(RuntimeError, match="migration scripts not found"):
            migrations.alembic_config()
    finally:
        migrations.migrations_dir.cache_clear()
