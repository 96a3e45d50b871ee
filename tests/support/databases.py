"""The test databases: this run's PostgreSQL server and working database, SQLite URLs, and
the backends every database test runs on.

The schema is migrated once per run into a template: a SQLite file copied per test; for
PostgreSQL a template database, cloned into one working database that is emptied (TRUNCATE,
after ending every other session on it) before each test — see :class:`PostgresTestDatabase`.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import URL

from service.db import create_engine_for
from service.db.migrate import head_revision

POSTGRES_URL_ENV = "BATCHWISE_TEST_POSTGRES_URL"
BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]

# A per-run prefix keeps concurrent runs against one PostgreSQL server apart.
RUN_ID = f"bw_{os.getpid()}_{uuid.uuid4().hex[:6]}"


def in_ci() -> bool:
    """Whether ``CI`` is set: a missing service or tool is then a failure, not a skip."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


@dataclass
class PostgresServer:
    """The test PostgreSQL server: creates and drops the databases of this run."""

    base_url: URL
    admin: Engine  # AUTOCOMMIT: CREATE/DROP DATABASE cannot run in a transaction
    created: list[str] = field(default_factory=list)

    def url_of(self, database: str) -> str:
        return self.base_url.set(database=database).render_as_string(hide_password=False)

    def create(self, database: str, *, template: str | None = None) -> str:
        clone = f' TEMPLATE "{template}"' if template else ""
        with self.admin.connect() as connection:
            connection.exec_driver_sql(f'CREATE DATABASE "{database}"{clone}')
        self.created.append(database)
        return self.url_of(database)

    def drop(self, database: str) -> None:
        # FORCE ends sessions a server process or a leaked pool still holds.
        with self.admin.connect() as connection:
            connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        if database in self.created:
            self.created.remove(database)


class PostgresTestDatabase:
    """This run's working PostgreSQL database, emptied before each test that takes it.

    Cloning the template per test (``CREATE DATABASE … TEMPLATE``) costs 20-300 ms depending
    on the server's load; emptying one database costs ~5 ms. Emptying is made as isolating as a
    clone: other sessions on it (a test's server, a leaked pool) are terminated first, so no
    lock survives a test; a database whose schema a test changed is re-cloned.
    """

    def __init__(self, server: PostgresServer, template: str) -> None:
        self.server, self.template = server, template
        self.name = f"{RUN_ID}_db"
        self.url = server.create(self.name, template=template)
        self._engine = self._connect()
        self.expected_tables = self._tables()

    def _connect(self) -> Engine:
        return create_engine(
            self.url, isolation_level="AUTOCOMMIT", pool_size=1, pool_pre_ping=True
        )

    def _tables(self) -> set[str]:
        with self._engine.connect() as connection:
            rows = connection.execute(
                text("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")
            )
            return set(rows.scalars())

    def reset(self) -> str:
        """Empty every table but ``alembic_version``; return the database's URL."""
        head = head_revision()
        with self._engine.connect() as connection:
            connection.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            )
            connection.exec_driver_sql("SET lock_timeout = '10s'")
            tables = {
                name
                for (name,) in connection.execute(
                    text("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")
                )
            }
            version = (
                connection.exec_driver_sql("SELECT max(version_num) FROM alembic_version").scalar()
                if "alembic_version" in tables
                else None
            )
            if tables == self.expected_tables and version == head:
                data_tables = ", ".join(f'"{t}"' for t in sorted(tables - {"alembic_version"}))
                connection.exec_driver_sql(f"TRUNCATE {data_tables} RESTART IDENTITY CASCADE")
                return self.url
        # A test changed the schema: start again from the template.
        self._engine.dispose()
        self.server.drop(self.name)
        self.url = self.server.create(self.name, template=self.template)
        self._engine = self._connect()
        return self.url

    def close(self) -> None:
        self._engine.dispose()


@contextmanager
def engine_on(url: str) -> Iterator[Engine]:
    """An engine on ``url``, as the service builds it; disposed on leaving."""
    engine = create_engine_for(url)
    try:
        yield engine
    finally:
        engine.dispose()


def sqlite_url(path: Path) -> str:
    """The SQLAlchemy URL of the SQLite file at ``path``."""
    return f"sqlite:///{path.as_posix()}"
