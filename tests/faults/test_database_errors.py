"""Which database errors mean "the database is away, try again" — real errors from a real
PostgreSQL server (the private one) and a real SQLite file, as SQLAlchemy raises them.

The API answers those with 503 and ``Retry-After`` (anything else stays a 500); the worker
retries its writes on them while its lease lasts. The worker's test is broader on purpose: a
busy SQLite or a cancelled statement is worth one more try for a job, not for a request.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError

from service.api.problems import is_database_unreachable
from service.db import create_engine_for
from service.worker.database_outage import is_transient
from tests.support.databases import sqlite_url
from tests.support.private_postgres import PrivatePostgres
from tests.support.processes import find_free_port

pytestmark = pytest.mark.postgres


def raised(engine: Engine, *statements: str) -> DBAPIError:
    """The error the last of ``statements`` raises on one connection of ``engine``."""
    try:
        with engine.connect() as connection:
            for statement in statements:
                connection.execute(text(statement))
    except DBAPIError as error:
        return error
    raise AssertionError(f"{statements} raised nothing")


@pytest.fixture
def postgres(private_postgres: PrivatePostgres) -> Iterator[Engine]:
    engine = create_engine_for(private_postgres.url())
    try:
        yield engine
    finally:
        engine.dispose()


def once(url: str, *statements: str, **engine_options: object) -> DBAPIError:
    """The error of ``statements`` on a new engine for ``url``, disposed after."""
    engine = create_engine_for(url, **engine_options)
    try:
        return raised(engine, *statements)
    finally:
        engine.dispose()


def refused() -> DBAPIError:
    return once(f"postgresql+psycopg://postgres@127.0.0.1:{find_free_port()}/x", "SELECT 1")


def terminated(postgres: Engine) -> DBAPIError:
    return raised(postgres, "SELECT pg_terminate_backend(pg_backend_pid())")


def cancelled(postgres: Engine) -> DBAPIError:
    return raised(postgres, "SET statement_timeout = 1", "SELECT pg_sleep(1)")


def divided_by_zero(postgres: Engine) -> DBAPIError:
    return raised(postgres, "SELECT 1 / 0")


def sqlite_missing_table(tmp_path: Path) -> DBAPIError:
    return once(sqlite_url(tmp_path / "empty.db"), "SELECT * FROM nowhere")


def sqlite_locked(tmp_path: Path) -> DBAPIError:
    url = sqlite_url(tmp_path / "busy.db")
    holder = create_engine_for(url)
    try:
        with holder.connect() as connection:
            connection.exec_driver_sql("BEGIN IMMEDIATE")  # the write lock, held
            return once(url, "PRAGMA busy_timeout = 50", "BEGIN IMMEDIATE")
    finally:
        holder.dispose()


Case = Callable[[Engine, Path], DBAPIError]
CASES: dict[str, tuple[Case, bool, bool]] = {
    # name: (how to get it, the API's 503, the worker's retry)
    "connection refused": (lambda pg, tmp: refused(), True, True),
    "backend terminated (57P01)": (lambda pg, tmp: terminated(pg), True, True),
    "statement cancelled (57014)": (lambda pg, tmp: cancelled(pg), False, True),
    "division by zero (22012)": (lambda pg, tmp: divided_by_zero(pg), False, False),
    "sqlite: no such table": (lambda pg, tmp: sqlite_missing_table(tmp), False, True),
    "sqlite: database is locked": (lambda pg, tmp: sqlite_locked(tmp), False, True),
}


@pytest.mark.parametrize("name", list(CASES))
def test_database_errors_are_told_apart_as_the_api_and_the_worker_need(
    name: str, postgres: Engine, tmp_path: Path
) -> None:
    make, unreachable, transient = CASES[name]
    error = make(postgres, tmp_path)
    assert (is_database_unreachable(error), is_transient(error)) == (unreachable, transient)


def test_terminated_backend_is_an_invalidated_connection(postgres: Engine) -> None:
    # SQLAlchemy itself recognises the disconnect: the pool drops the connection.
    assert terminated(postgres).connection_invalidated
