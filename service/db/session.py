"""Engines and sessions for SQLite (the embedded default) and PostgreSQL (psycopg 3).

SQLite connections get WAL (readers never block the writer), foreign keys on (SQLite's default
is off, which would silently disable ON DELETE CASCADE) and a busy timeout, so concurrent
writers from the API and workers wait instead of failing at once.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Generator
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.orm import Session, sessionmaker

SQLITE_BUSY_TIMEOUT_MS = 5_000


class DatabaseUrlError(ValueError):
    """The database URL cannot be used: malformed, or not SQLite / PostgreSQL."""


def normalize_url(url: str | URL) -> URL:
    """Parse ``url`` and pin the driver: ``postgresql://`` → ``postgresql+psycopg://``.

    Raises :class:`DatabaseUrlError` for anything but ``sqlite`` (pysqlite) or ``postgresql``.
    """
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise DatabaseUrlError(
            f"cannot parse database URL {str(url)!r}: expected sqlite:///path/to/file.db or "
            "postgresql+psycopg://user:password@host:5432/dbname"
        ) from exc
    backend, _, driver = parsed.drivername.partition("+")
    if backend == "postgresql" and driver in ("", "psycopg"):
        return parsed.set(drivername="postgresql+psycopg")
    if backend == "sqlite" and driver in ("", "pysqlite"):
        return parsed.set(drivername="sqlite")
    raise DatabaseUrlError(
        f"unsupported database URL {parsed.render_as_string(hide_password=True)!r}: "
        "use sqlite:///path/to/file.db or postgresql+psycopg://user:password@host:5432/dbname"
    )


def is_sqlite(url: str | URL) -> bool:
    """Whether ``url`` names a SQLite database."""
    return normalize_url(url).get_backend_name() == "sqlite"


def _sqlite_file(url: URL) -> Path | None:
    database = url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database)


def _on_sqlite_connect(dbapi_connection: sqlite3.Connection, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA journal_mode = WAL")
        # With WAL, NORMAL is durable against application crashes, only not against power loss.
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.execute("PRAGMA foreign_keys = ON")
    finally:
        cursor.close()


#: Seconds a PostgreSQL connect may take before it fails, unless the engine is given its own
#: timeout (the API's: ``Settings.database_timeout_s``).
POSTGRES_CONNECT_TIMEOUT_S = 5


#: How often psycopg's wait wakes to let a signal in (its own default).
_WAIT_INTERVAL_S = 0.1


class AnswerTimeout(psycopg.OperationalError):
    """The database did not answer within :attr:`AnswerTimeoutConnection.answer_timeout_s`."""


class AnswerTimeoutConnection(psycopg.Connection[Any]):
    """A psycopg connection that waits at most :attr:`answer_timeout_s` for each answer.

    libpq has no client-side statement timeout, and PostgreSQL's own ``statement_timeout``
    does nothing when the server is stalled (stopped, swapping, partitioned while its kernel
    still acknowledges our packets): a query would wait forever. Past the timeout the connection
    is closed (its state is unknown) and :class:`AnswerTimeout` (an
    :class:`psycopg.OperationalError`) raised, which SQLAlchemy reports as a lost connection
    and the API answers 503.
    """

    answer_timeout_s: float | None = None

    def wait(
        self,
        gen: Generator[Any, Any, Any],
        interval: float = _WAIT_INTERVAL_S,
        timeout: float | None = None,
    ) -> Any:
        limit = self.answer_timeout_s if timeout is None else timeout
        started = time.monotonic()
        try:
            return super().wait(gen, interval, limit)
        except psycopg.OperationalError:
            if limit is None or time.monotonic() - started < limit:
                raise
            self.pgconn.finish()
            raise AnswerTimeout(
                f"the database did not answer within {limit:g} s (BATCHWISE_DATABASE_TIMEOUT_S)"
            ) from None


def create_engine_for(url: str | URL, *, timeout_s: float | None = None, **kwargs: Any) -> Engine:
    """An engine for ``url`` (see :func:`normalize_url`), configured for the service.

    SQLite: the file's directory is created; every connection gets WAL, ``foreign_keys=ON`` and
    a busy timeout of ``SQLITE_BUSY_TIMEOUT_MS``, and may be used from any thread (the pool
    hands each connection to one thread at a time). PostgreSQL: psycopg 3, with pre-ping so a
    restarted server costs one retry, not an error; a connect and each wait for an answer
    (:class:`AnswerTimeoutConnection`) fail after ``timeout_s``
    (None, the default: connects after :data:`POSTGRES_CONNECT_TIMEOUT_S`, answers are awaited
    for ever, as a worker or a migration may need; libpq makes a connect timeout at least
    2 s). ``kwargs`` go to ``create_engine``.
    """
    parsed = normalize_url(url)
    if parsed.get_backend_name() == "sqlite":
        path = _sqlite_file(parsed)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        else:  # in memory: one connection per thread (SingletonThreadPool), no pool to size
            kwargs.pop("pool_size", None)
            kwargs.pop("max_overflow", None)
        connect_args = {"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}
        connect_args.update(kwargs.pop("connect_args", {}))
        engine = create_engine(parsed, connect_args=connect_args, **kwargs)
        event.listen(engine, "connect", _on_sqlite_connect)
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    # A server that drops packets rather than refusing them would otherwise hold a connect for
    # the kernel's TCP timeout (minutes). A URL's own ?connect_timeout= wins.
    connect_s = POSTGRES_CONNECT_TIMEOUT_S if timeout_s is None else max(1, round(timeout_s))
    connect_args = {"connect_timeout": connect_s} | kwargs.pop("connect_args", {})
    if "connect_timeout" in parsed.query:
        connect_args.pop("connect_timeout")
    engine = create_engine(parsed, connect_args=connect_args, **kwargs)
    if timeout_s is not None:

        @event.listens_for(engine, "do_connect")
        def _connect(
            _dialect: Any, _record: Any, cargs: Any, cparams: dict[str, Any]
        ) -> AnswerTimeoutConnection:
            connection = AnswerTimeoutConnection.connect(*cargs, **cparams)
            connection.answer_timeout_s = timeout_s
            return connection

    return engine


def session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions bound to ``engine``; objects stay readable after commit (no reload)."""
    return sessionmaker(bind=engine, expire_on_commit=False)


__all__ = [
    "POSTGRES_CONNECT_TIMEOUT_S",
    "SQLITE_BUSY_TIMEOUT_MS",
    "AnswerTimeout",
    "AnswerTimeoutConnection",
    "DatabaseUrlError",
    "create_engine_for",
    "is_sqlite",
    "normalize_url",
    "session_factory",
]
