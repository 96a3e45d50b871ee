"""Fixtures every test may use: real databases (SQLite and PostgreSQL), engines, sessions,
settings, free ports, a real ``batchwise serve`` process and a real headless Chromium.

Databases: ``db_url`` runs each test on both backends, each time on a freshly migrated, empty
database that the test owns, so other processes (a server, workers) may connect and commit.
The schema is migrated once per run into a template: a SQLite file copied per test; for
PostgreSQL a template database, cloned into one working database that is emptied (TRUNCATE,
after ending every other session on it) before each test — see :class:`PostgresTestDatabase`.
Everything this run created is dropped at the end.

PostgreSQL comes from ``BATCHWISE_TEST_POSTGRES_URL`` (any database on the server; the run
creates its own, named ``bw_<pid>_<random>_…``). Unset: its tests are skipped with the reason,
except when ``CI`` is set, where that is a failure. Set but unreachable: always a failure.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, sync_playwright
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import URL
from sqlalchemy.orm import Session

from service.config import Settings
from service.db import create_engine_for, normalize_url, session_factory
from service.db.migrate import head_revision, upgrade

POSTGRES_URL_ENV = "BATCHWISE_TEST_POSTGRES_URL"
REPO_ROOT = Path(__file__).resolve().parents[1]

# A per-run prefix keeps concurrent runs against one PostgreSQL server apart.
_RUN_ID = f"bw_{os.getpid()}_{uuid.uuid4().hex[:6]}"


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


# --- PostgreSQL -----------------------------------------------------------------------------


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


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """The server behind ``BATCHWISE_TEST_POSTGRES_URL``; skip (fail in CI) if unset."""
    raw = os.environ.get(POSTGRES_URL_ENV, "").strip()
    if not raw:
        reason = (
            f"{POSTGRES_URL_ENV} is not set (e.g. postgresql+psycopg://postgres@127.0.0.1/test)"
        )
        if _in_ci():
            pytest.fail(
                f"CI is set but {reason}: PostgreSQL tests must run, not skip", pytrace=False
            )
        pytest.skip(reason)
    base_url = normalize_url(raw)
    admin = create_engine(base_url, isolation_level="AUTOCOMMIT")
    unreachable = None
    try:
        with admin.connect() as connection:
            connection.execute(text("SELECT 1"))
    except Exception as exc:  # any failure to connect, reported as one line
        unreachable = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
    if unreachable is not None:
        # Outside the except block and without a traceback: the driver's frames hold the password.
        admin.dispose()
        shown = base_url.render_as_string(hide_password=True)
        pytest.fail(f"{POSTGRES_URL_ENV}={shown} is unreachable: {unreachable}", pytrace=False)
    server = PostgresServer(base_url=base_url, admin=admin)
    try:
        yield server
    finally:
        for database in reversed(list(server.created)):
            server.drop(database)
        admin.dispose()


@pytest.fixture(scope="session")
def postgres_template(postgres_server: PostgresServer) -> str:
    """Name of this run's migrated, empty PostgreSQL template database."""
    name = f"{_RUN_ID}_template"
    upgrade(postgres_server.create(name))
    return name


class PostgresTestDatabase:
    """This run's working PostgreSQL database, emptied before each test that takes it.

    Cloning the template per test (``CREATE DATABASE … TEMPLATE``) costs 20-300 ms depending
    on the server's load; emptying one database costs ~5 ms. Emptying is made as isolating as a
    clone: other sessions on it (a test's server, a leaked pool) are terminated first, so no
    lock survives a test; a database whose schema a test changed is re-cloned.
    """

    def __init__(self, server: PostgresServer, template: str) -> None:
        self.server, self.template = server, template
        self.name = f"{_RUN_ID}_db"
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


@pytest.fixture(scope="session")
def postgres_database(
    postgres_server: PostgresServer, postgres_template: str
) -> Iterator[PostgresTestDatabase]:
    """This run's working PostgreSQL database (see :class:`PostgresTestDatabase`)."""
    database = PostgresTestDatabase(postgres_server, postgres_template)
    try:
        yield database
    finally:
        database.close()


# --- SQLite ---------------------------------------------------------------------------------


def sqlite_url(path: Path) -> str:
    """The SQLAlchemy URL of the SQLite file at ``path``."""
    return f"sqlite:///{path.as_posix()}"


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated, empty SQLite file, checkpointed so the one file holds everything."""
    path = tmp_path_factory.mktemp("sqlite-template") / "template.db"
    upgrade(sqlite_url(path))
    connection = sqlite3.connect(path)
    try:
        # Back to a rollback journal: the copy is then a single self-contained file.
        connection.execute("PRAGMA journal_mode = DELETE")
    finally:
        connection.close()
    return path


# --- the databases a test gets --------------------------------------------------------------

BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """URL of a freshly migrated, empty database this test owns, on each backend."""
    if request.param == "sqlite":
        path = tmp_path / "db" / "batchwise.db"
        path.parent.mkdir()
        shutil.copyfile(request.getfixturevalue("sqlite_template"), path)
        yield sqlite_url(path)
        return
    database: PostgresTestDatabase = request.getfixturevalue("postgres_database")
    yield database.reset()


@pytest.fixture(params=BACKENDS)
def blank_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """URL of an empty, never migrated database this test owns, on each backend."""
    if request.param == "sqlite":
        yield sqlite_url(tmp_path / "blank" / "batchwise.db")  # the engine creates the folder
        return
    server: PostgresServer = request.getfixturevalue("postgres_server")
    name = f"{_RUN_ID}_{uuid.uuid4().hex[:10]}"
    url = server.create(name)
    try:
        yield url
    finally:
        server.drop(name)


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    """An engine on ``db_url`` (as the service builds it); disposed after the test."""
    engine = create_engine_for(db_url)
    try:
        yield engine
    finally:
        engine.dispose()


@pytest.fixture
def session(engine: Engine) -> Iterator[Session]:
    """A session on ``engine``; commit in the test to make rows visible to others."""
    with session_factory(engine)() as session:
        yield session


@pytest.fixture
def settings(db_url: str, tmp_path: Path) -> Settings:
    """Settings for a test: its own database and data dir, no embedded workers, auth off
    (every request is the tenant ``default``; the auth tests turn it on)."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    return Settings(database_url=db_url, data_dir=data_dir, workers=0, auth="off")


# --- real server processes ------------------------------------------------------------------


def find_free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture
def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    return find_free_port()


def run_batchwise(
    *args: str, env: Mapping[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """``python -m service ARGS`` as a real process with only the given ``BATCHWISE_*``
    variables (none of the caller's); output captured as text, any exit status returned."""
    child_env = {k: v for k, v in os.environ.items() if not k.startswith("BATCHWISE_")}
    return subprocess.run(
        [sys.executable, "-m", "service", *args],
        env=child_env | dict(env or {}),
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


class ServerFailedError(AssertionError):
    """The server process did not come up, or did not stop cleanly; carries its output."""


def _read(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace")


@contextmanager
def run_server(
    *,
    database_url: str,
    data_dir: Path,
    env: Mapping[str, str] | None = None,
    startup_timeout: float = 30.0,
) -> Iterator[str]:
    """Run ``python -m service serve`` as a real process; yield its base URL.

    The process gets ``BATCHWISE_DATABASE_URL``, ``BATCHWISE_DATA_DIR``, ``BATCHWISE_WORKERS=0``,
    ``BATCHWISE_AUTH=off`` (``env`` adds or overrides) and none of the caller's other
    ``BATCHWISE_*`` variables. Ready when ``GET /healthz`` answers 200. On exit: SIGTERM, then
    SIGKILL after 10 s. Its output is printed (pytest shows it for failed tests) and carried by
    the :class:`ServerFailedError` raised when it does not start or exits uncleanly.
    """
    port = find_free_port()
    child_env = {k: v for k, v in os.environ.items() if not k.startswith("BATCHWISE_")}
    child_env |= {
        "BATCHWISE_DATABASE_URL": database_url,
        "BATCHWISE_DATA_DIR": str(data_dir),
        "BATCHWISE_WORKERS": "0",
        "BATCHWISE_AUTH": "off",  # on loopback, as serve allows; the auth tests turn it on
        "PYTHONUNBUFFERED": "1",
    }
    child_env |= dict(env or {})
    base_url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="batchwise-serve-") as scratch:
        log_path = Path(scratch) / "server.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "service",
                    "serve",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    f"{port}",
                ],
                env=child_env,
                cwd=REPO_ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        body_failed = False
        try:
            _wait_healthy(process, base_url, log_path, startup_timeout)
            yield base_url
        except BaseException:
            body_failed = True
            raise
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
            output = _read(log_path)
            print(f"--- batchwise serve on {base_url} (exit {process.returncode}) ---\n{output}")
            if not body_failed and process.returncode not in (0, -signal.SIGTERM):
                raise ServerFailedError(
                    f"server on {base_url} exited with {process.returncode}; output:\n{output}"
                )


def _wait_healthy(
    process: subprocess.Popen[bytes], base_url: str, log_path: Path, timeout: float
) -> None:
    deadline = time.monotonic() + timeout
    last_error = "no attempt"
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ServerFailedError(
                f"server exited with {process.returncode} before answering /healthz; output:\n"
                + _read(log_path)
            )
        try:
            with urllib.request.urlopen(f"{base_url}/healthz", timeout=2) as response:
                if response.status == 200:
                    return
                last_error = f"HTTP {response.status}"
        except (urllib.error.URLError, OSError) as exc:
            last_error = str(exc)
        time.sleep(0.05)
    raise ServerFailedError(
        f"server on {base_url} did not answer /healthz within {timeout} s ({last_error}); "
        f"output:\n{_read(log_path)}"
    )


ServeProcess = Callable[..., AbstractContextManager[str]]


@pytest.fixture
def serve_process() -> ServeProcess:
    """:func:`run_server` as a fixture.

    ``with serve_process(database_url=…, data_dir=…) as base_url: ...``
    """
    return run_server


@pytest.fixture
def live_server(settings: Settings) -> Iterator[str]:
    """Base URL of a real ``batchwise serve`` on the test's database and data dir."""
    with run_server(
        database_url=settings.resolved_database_url, data_dir=settings.data_dir
    ) as base_url:
        yield base_url


# --- a real browser -------------------------------------------------------------------------

CHROMIUM = os.environ.get("BATCHWISE_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """A real headless Chromium (Debian's; no browser download) from
    ``BATCHWISE_TEST_CHROMIUM``; missing fails under CI, else skips."""
    if not Path(CHROMIUM).exists():
        message = f"Chromium not found at {CHROMIUM} (set BATCHWISE_TEST_CHROMIUM)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        yield chromium
        chromium.close()


@pytest.fixture
def csp_watch() -> Callable[[Page], list[str]]:
    """``csp_watch(page)``: a list that fills with every Content-Security-Policy violation
    ``page`` reports (Chromium logs each to the console as an error)."""

    def watch(page: Page) -> list[str]:
        violations: list[str] = []

        def on_console(message: ConsoleMessage) -> None:
            if message.type == "error" and "Content Security Policy" in message.text:
                violations.append(f"{page.url}: {message.text}")

        page.on("console", on_console)
        return violations

    return watch
