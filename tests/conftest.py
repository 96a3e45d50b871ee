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

import fcntl
import functools
import json
import os
import shutil
import sqlite3
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, sync_playwright
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.orm import Session

from service.config import Settings
from service.db import normalize_url, session_factory
from service.db.migrate import upgrade
from tests.support.databases import (
    BACKENDS,
    POSTGRES_URL_ENV,
    RUN_ID,
    PostgresServer,
    PostgresTestDatabase,
    engine_on,
    in_ci,
    sqlite_url,
)
from tests.support.processes import (
    CHROMIUM,
    CHROMIUM_FLAGS,
    ServeProcess,
    find_free_port,
    run_server,
)

# --- the order files are handed out ----------------------------------------------------------

#: Seconds each test file took in a recorded run (``pytest --record-durations`` rewrites it).
DURATIONS = Path(__file__).with_name("durations.json")
#: What a file missing from it is taken to cost: a new file, most likely short.
UNRECORDED_FILE_S = 1.0


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--record-durations",
        action="store_true",
        help=f"write each test file's seconds in this run to tests/{DURATIONS.name}",
    )


def _file_of(nodeid: str) -> str:
    return nodeid.split("::", 1)[0]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Longest files first, each file's tests in their own order: pytest-xdist hands files
    out in this order (``--no-loadscope-reorder``), so the run ends on short files and the
    two workers finish together. (Its default order, most tests first, left files of one
    slow test for the end, and one worker running them while the other had nothing left.)"""
    longest_files_first(items, json.loads(DURATIONS.read_text()) if DURATIONS.exists() else {})


def longest_files_first(items: list[pytest.Item], seconds: dict[str, float]) -> None:
    """Sort ``items`` by their file's ``seconds``, longest first; a stable sort, so each file's
    tests stay together and in order, and files of equal seconds keep their collected order."""
    items.sort(key=lambda item: -seconds.get(_file_of(item.nodeid), UNRECORDED_FILE_S))


#: This run's seconds per file (setup, call and teardown), and the files with a test that ran.
_seconds_this_run: dict[str, float] = {}
_files_that_ran: set[str] = set()


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    file = _file_of(report.nodeid)
    _seconds_this_run[file] = _seconds_this_run.get(file, 0.0) + report.duration
    if report.when == "call":
        _files_that_ran.add(file)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """With ``--record-durations``, once a run passed: each file it ran (not only skipped)
    gets this run's seconds in ``tests/durations.json``; files it did not run keep theirs."""
    config = session.config
    if not config.getoption("record_durations") or hasattr(config, "workerinput"):
        return
    if exitstatus != pytest.ExitCode.OK:
        return
    recorded = json.loads(DURATIONS.read_text()) if DURATIONS.exists() else {}
    recorded |= {file: round(_seconds_this_run[file], 1) for file in _files_that_ran}
    ordered = dict(sorted(recorded.items(), key=lambda pair: -pair[1]))
    DURATIONS.write_text(json.dumps(ordered, indent=0) + "\n")


# --- tests that run alone -------------------------------------------------------------------


#: Advisory locks shared by every pytest-xdist worker of a run (files they all have; their
#: content is never touched): the room, held by every test, and the gate in front of it.
_ROOM, _GATE = Path(__file__), Path(__file__).with_name("__init__.py")


class _Room:
    """This worker's handles on the gate and the room, whether it holds both exclusively from
    one ``alone`` test to the next, and how often it has passed the gate."""

    def __init__(self) -> None:
        self.gate = _GATE.open("rb")
        self.room = _ROOM.open("rb")
        self.held_alone = False
        self.entries = 0

    def enter(self, alone: bool) -> None:
        if alone and self.held_alone:
            return
        self.entries += 1
        fcntl.flock(self.gate, fcntl.LOCK_EX)
        if alone:
            fcntl.flock(self.room, fcntl.LOCK_EX)
        else:
            fcntl.flock(self.room, fcntl.LOCK_SH)
            fcntl.flock(self.gate, fcntl.LOCK_UN)

    def leave(self, alone: bool, next_alone: bool) -> None:
        self.held_alone = alone and next_alone
        if not self.held_alone:
            fcntl.flock(self.room, fcntl.LOCK_UN)
            fcntl.flock(self.gate, fcntl.LOCK_UN)

    def close(self) -> None:
        self.room.close()
        self.gate.close()


@functools.cache
def _worker_room() -> _Room:
    return _Room()


def pytest_unconfigure(config: pytest.Config) -> None:
    if _worker_room.cache_info().currsize:  # this worker entered the room
        _worker_room().close()


def _alone(item: pytest.Item | None) -> bool:
    return item is not None and item.get_closest_marker("alone") is not None


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    """Under pytest-xdist, a test marked ``alone`` (a bound on latency or CPU time) runs while
    no other worker runs a test: it holds the room exclusively, every other test shares it,
    from setup to teardown (module-scoped fixtures included). Each test that does not hold
    the room already passes the gate to enter, and an ``alone`` test holds it while it waits
    and runs, so a stream of short tests on the other workers cannot keep the room shared
    forever. A worker keeps the room from one ``alone`` test to the next: let in between, the
    other worker's next test (a few seconds, often) would keep the next ``alone`` test and
    this worker waiting."""
    if not hasattr(item.config, "workerinput"):  # not an xdist worker: nothing runs beside
        yield
        return
    room, alone = _worker_room(), _alone(item)
    room.enter(alone)
    try:
        yield
    finally:
        room.leave(alone, _alone(nextitem))


# --- PostgreSQL -----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """The server behind ``BATCHWISE_TEST_POSTGRES_URL``; skip (fail in CI) if unset."""
    raw = os.environ.get(POSTGRES_URL_ENV, "").strip()
    if not raw:
        reason = (
            f"{POSTGRES_URL_ENV} is not set (e.g. postgresql+psycopg://postgres@127.0.0.1/test)"
        )
        if in_ci():
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
    name = f"{RUN_ID}_template"
    upgrade(postgres_server.create(name))
    return name


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
    name = f"{RUN_ID}_{uuid.uuid4().hex[:10]}"
    url = server.create(name)
    try:
        yield url
    finally:
        server.drop(name)


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    """An engine on ``db_url`` (as the service builds it); disposed after the test."""
    with engine_on(db_url) as engine:
        yield engine


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


@pytest.fixture
def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    return find_free_port()


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
