"""The ``batchwise`` command line, run as a real process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from pathlib import Path

import pytest

from service.db import migrate as migrations
from tests.support.processes import run_batchwise


def run_cli(*args: str, env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m service ARGS`` with only the given ``BATCHWISE_*`` variables."""
    return run_batchwise(*args, env=env, timeout=60)


def test_help_describes_the_commands_and_environment() -> None:
    result = run_cli("--help")
    assert result.returncode == 0
    for words in ("serve", "migrate", "BATCHWISE_DATABASE_URL", "BATCHWISE_DATA_DIR"):
        assert words in result.stdout


def test_serve_help_explains_flags_migration_and_environment() -> None:
    result = run_cli("serve", "--help")
    assert result.returncode == 0
    for words in ("--host", "--port", "batchwise migrate", "BATCHWISE_WORKERS", "SQLite"):
        assert words in result.stdout


def test_migrate_help_explains_what_it_does() -> None:
    result = run_cli("migrate", "--help")
    assert result.returncode == 0
    assert "Upgrade the database schema to the newest migration" in result.stdout
    assert "BATCHWISE_DATABASE_URL" in result.stdout


def test_console_script_is_installed() -> None:
    script = Path(sys.executable).with_name("batchwise")
    result = subprocess.run([script, "--version"], capture_output=True, text=True, check=False)
    assert result.returncode == 0
    assert result.stdout.startswith("batchwise ")


def test_a_command_is_required() -> None:
    result = run_cli()
    assert result.returncode == 2
    assert "required: COMMAND" in result.stderr


def test_migrate_brings_a_blank_database_to_head(blank_db_url: str) -> None:
    head = migrations.head_revision()

    first = run_cli("migrate", env={"BATCHWISE_DATABASE_URL": blank_db_url})
    assert first.returncode == 0, first.stderr
    assert migrations.current_revision(blank_db_url) == head
    assert f"migrated from empty to {head}" in first.stderr

    again = run_cli("migrate", env={"BATCHWISE_DATABASE_URL": blank_db_url})
    assert again.returncode == 0, again.stderr
    assert f"already at head {head}" in again.stderr


def test_migrate_defaults_to_sqlite_in_the_data_dir(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    result = run_cli("migrate", env={"BATCHWISE_DATA_DIR": str(data_dir)})
    assert result.returncode == 0, result.stderr
    assert migrations.is_at_head(f"sqlite:///{(data_dir / 'batchwise.db').as_posix()}")


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("mysql://root:hunter2@db/bw", "error: unsupported database URL 'mysql://root:***@db/bw'"),
        ("not a url", "error: cannot parse database URL 'not a url'"),
        ("postgresql://postgres@127.0.0.1:{free_port}/bw", "database error: connection failed"),
    ],
)
def test_bad_database_url_fails_with_one_clear_line(url: str, message: str, free_port: int) -> None:
    url = url.format(free_port=free_port)  # nothing listens there
    for command in ("migrate", "serve"):
        result = run_cli(command, env={"BATCHWISE_DATABASE_URL": url})
        assert result.returncode == 1
        assert f"batchwise {command}: {message}" in result.stderr
        assert "Traceback" not in result.stderr
        assert "hunter2" not in result.stderr


def test_invalid_settings_fail_with_the_field_named() -> None:
    result = run_cli("serve", "--port", "70000")
    assert result.returncode == 1
    assert (
        "batchwise serve: invalid settings: port: Input should be less than or equal to 65535"
        in (result.stderr)
    )
    assert "Traceback" not in result.stderr


@pytest.mark.postgres
def test_serve_refuses_a_postgres_database_behind_head(postgres_server, free_port: int) -> None:
    name = f"bw_cli_{os.getpid()}_{free_port}"
    url = postgres_server.create(name)
    try:
        result = run_cli("serve", env={"BATCHWISE_DATABASE_URL": url})
        assert result.returncode == 1
        assert "no revision (empty)" in result.stderr
        assert "run `batchwise migrate` first" in result.stderr
        assert migrations.current_revision(url) is None  # serve did not migrate it
    finally:
        postgres_server.drop(name)


def test_serve_process_reports_a_server_that_cannot_start(
    serve_process: Callable[..., AbstractContextManager[str]], tmp_path: Path
) -> None:
    with (
        pytest.raises(AssertionError, match="exited with 1 before answering /healthz") as caught,
        serve_process(database_url="mysql://x/y", data_dir=tmp_path),
    ):
        pytest.fail("the server must not come up")
    assert "unsupported database URL" in str(caught.value)


def test_serve_migrates_a_blank_sqlite_database_then_answers(
    serve_process: Callable[..., AbstractContextManager[str]], tmp_path: Path
) -> None:
    url = f"sqlite:///{(tmp_path / 'fresh' / 'batchwise.db').as_posix()}"
    with serve_process(database_url=url, data_dir=tmp_path / "data") as base_url:
        assert migrations.is_at_head(url)
        with urllib.request.urlopen(f"{base_url}/healthz", timeout=5) as response:
            assert response.status == 200
            assert json.loads(response.read()) == {"status": "ok"}


def test_serve_starts_on_a_migrated_database(live_server: str) -> None:
    with urllib.request.urlopen(f"{live_server}/readyz", timeout=5) as response:
        assert response.status == 200
