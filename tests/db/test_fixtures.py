"""The shared database fixtures of ``tests/conftest.py`` behave as later tests rely on."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import func, insert, inspect, select, text
from sqlalchemy.exc import OperationalError

from service.config import Settings
from service.db import Dataset, create_engine_for, is_sqlite
from service.db import migrate as migrations

from .factories import make_dataset

TESTS_DIR = Path(__file__).resolve().parents[1]


def dataset_row() -> dict[str, object]:
    dataset = make_dataset(dropped_rows=0)
    return {column.key: getattr(dataset, column.key) for column in Dataset.__table__.columns}


def test_db_url_is_migrated_and_marked_by_backend(
    db_url: str, request: pytest.FixtureRequest
) -> None:
    assert migrations.is_at_head(db_url)
    marked = request.node.get_closest_marker("postgres") is not None
    assert marked == (not is_sqlite(db_url))


def test_blank_db_url_has_no_tables(blank_db_url: str) -> None:
    engine = create_engine_for(blank_db_url)
    try:
        assert inspect(engine).get_table_names() == []
    finally:
        engine.dispose()


def test_settings_point_at_the_test_database(
    settings: Settings, db_url: str, tmp_path: Path
) -> None:
    assert settings.resolved_database_url == db_url
    assert settings.data_dir.is_dir()
    assert settings.data_dir.is_relative_to(tmp_path)
    assert settings.workers == 0


def run_probe(
    tmp_path: Path, env_changes: dict[str, str | None]
) -> subprocess.CompletedProcess[str]:
    """Run one PostgreSQL-parametrized probe test under our conftest, with ``env_changes``."""
    shutil.copyfile(TESTS_DIR / "conftest.py", tmp_path / "conftest.py")
    (tmp_path / "pytest.ini").write_text(
        "[pytest]\naddopts = -p no:cacheprovider -rs\nmarkers =\n    postgres: probe\n"
    )
    (tmp_path / "test_probe.py").write_text("def test_probe(db_url):\n    assert db_url\n")
    # The copied conftest imports tests.support: the repository's root must be importable.
    root = str(TESTS_DIR.parent)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])),
    }
    for name, value in env_changes.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-k", "postgresql", str(tmp_path)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_unset_postgres_url_skips_with_the_reason(tmp_path: Path) -> None:
    result = run_probe(tmp_path, {"BATCHWISE_TEST_POSTGRES_URL": None, "CI": None})
    assert result.returncode == 0, result.stdout
    assert "1 skipped" in result.stdout
    assert "BATCHWISE_TEST_POSTGRES_URL is not set" in result.stdout


def test_unset_postgres_url_fails_in_ci(tmp_path: Path) -> None:
    result = run_probe(tmp_path, {"BATCHWISE_TEST_POSTGRES_URL": None, "CI": "true"})
    assert result.returncode == 1, result.stdout
    assert "skipped" not in result.stdout
    assert "CI is set but BATCHWISE_TEST_POSTGRES_URL is not set" in result.stdout


def test_unreachable_postgres_url_fails(tmp_path: Path, free_port: int) -> None:
    url = f"postgresql+psycopg://postgres:sekret@127.0.0.1:{free_port}/test"
    result = run_probe(tmp_path, {"BATCHWISE_TEST_POSTGRES_URL": url, "CI": None})
    assert result.returncode == 1, result.stdout
    assert "skipped" not in result.stdout
    assert f"postgres:***@127.0.0.1:{free_port}/test is unreachable" in result.stdout
    assert "sekret" not in result.stdout


@pytest.mark.postgres
def test_postgres_reset_empties_tables_and_ends_leftover_sessions(postgres_database) -> None:
    url = postgres_database.reset()
    engine = create_engine_for(url)
    leftover = engine.connect()
    try:
        leftover.execute(insert(Dataset), [dataset_row()])
        leftover.commit()
        leftover.execute(text("LOCK TABLE datasets IN ACCESS EXCLUSIVE MODE"))  # left open

        assert postgres_database.reset() == url

        with pytest.raises(OperationalError, match="terminat"):
            leftover.execute(text("SELECT 1"))
        with engine.connect() as connection:
            assert connection.execute(select(func.count()).select_from(Dataset)).scalar() == 0
    finally:
        leftover.invalidate()
        engine.dispose()


@pytest.mark.postgres
def test_postgres_reset_reclones_a_database_whose_schema_changed(postgres_database) -> None:
    url = postgres_database.reset()
    migrations.downgrade(url, "base")

    assert postgres_database.reset() == url

    assert migrations.is_at_head(url)
    engine = create_engine_for(url)
    try:
        assert set(inspect(engine).get_table_names()) == postgres_database.expected_tables
    finally:
        engine.dispose()
