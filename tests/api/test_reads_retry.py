"""The API's reads run without a ping before each use of a pooled connection
(:mod:`service.api.reads`): a read whose connection the database dropped — a restart, an
administrator ending sessions — runs once more on a new connection; a read the database did
not answer within the timeout, and any other error, is raised after one run."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from service.api.app import create_app
from service.api.reads import Reads
from service.config import Settings
from service.db.session import AnswerTimeout
from tests.support.databases import PostgresTestDatabase, engine_on


@contextmanager
def reads_on(url: str, tmp_path: Path, timeout_s: float = 5.0) -> Iterator[Reads]:
    """The reads of the app ``batchwise serve`` runs on ``url``; its engines disposed after."""
    settings = Settings(
        database_url=url,
        data_dir=tmp_path / "data",
        workers=0,
        auth="off",
        database_timeout_s=timeout_s,
    )
    app = create_app(settings)
    try:
        yield app.state.reads
    finally:
        app.state.engine.dispose()
        app.state.read_session_factory.kw["bind"].dispose()


def backend_pid(session: Session) -> int:
    return int(session.scalar(text("select pg_backend_pid()")) or 0)


@pytest.mark.postgres
def test_a_read_whose_connection_the_server_ended_runs_again_on_a_new_one(
    postgres_database: PostgresTestDatabase, tmp_path: Path
) -> None:
    url = postgres_database.reset()
    runs: list[int] = []

    def read(session: Session) -> int:
        runs.append(1)
        return backend_pid(session)

    with reads_on(url, tmp_path) as reads:
        first = reads.run(backend_pid)  # its connection goes back to the pool
        with engine_on(url) as admin, admin.connect() as connection:
            assert connection.scalar(select(func.pg_terminate_backend(first))) is True
        second = reads.run(read)
        assert len(runs) == 2  # the first run met the ended connection
        assert second not in (0, first)
        assert reads.run(backend_pid) == second  # the new connection is pooled and reused


def test_a_read_that_fails_otherwise_runs_once(db_url: str, tmp_path: Path) -> None:
    runs: list[int] = []

    def read(session: Session) -> None:
        runs.append(1)
        session.execute(text("select * from no_such_table"))

    with reads_on(db_url, tmp_path) as reads, pytest.raises(DBAPIError) as caught:
        reads.run(read)
    assert not caught.value.connection_invalidated
    assert runs == [1]


@pytest.mark.postgres
def test_a_read_the_database_did_not_answer_in_time_runs_once(
    postgres_database: PostgresTestDatabase, tmp_path: Path
) -> None:
    """Run again, it would only wait out a second timeout on a server already too slow."""
    runs: list[int] = []

    def read(session: Session) -> None:
        runs.append(1)
        session.execute(text("select pg_sleep(3)"))

    url = postgres_database.reset()
    with reads_on(url, tmp_path, timeout_s=1.0) as reads, pytest.raises(DBAPIError) as caught:
        reads.run(read)
    assert isinstance(caught.value.orig, AnswerTimeout)
    assert caught.value.connection_invalidated  # what a lost connection is retried on
    assert runs == [1]
