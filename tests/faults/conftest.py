"""Fixtures of the fault tests: a private PostgreSQL server that a test may stop and restart.

The shared test server (``BATCHWISE_TEST_POSTGRES_URL``) is never restarted: other tests and
helpers use it. This one is made for the run by ``initdb`` in a temporary directory, listens on
127.0.0.1 only (a free port), trusts local connections and runs with fsync off (nothing in it
has to survive a power cut). As root, its tools run as the ``postgres`` OS user: ``initdb`` and
``postgres`` refuse to run as root. Missing binaries skip its tests, or fail them when ``CI``
is set.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import REPO_ROOT, _in_ci, find_free_port
from sqlalchemy import create_engine

SERVER_USER = "postgres"  # the OS user the server runs as when the tests run as root


def _postgres_bindir() -> Path | None:
    """The directory holding ``initdb`` and ``pg_ctl``: ``pg_config --bindir``, else the newest
    ``/usr/lib/postgresql/<version>/bin``."""
    candidates: list[Path] = []
    pg_config = shutil.which("pg_config")
    if pg_config:
        found = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True)
        if found.returncode == 0:
            candidates.append(Path(found.stdout.strip()))
    versions = Path("/usr/lib/postgresql")
    if versions.is_dir():
        numbered = [p for p in versions.iterdir() if p.name.isdigit()]
        candidates += [p / "bin" for p in sorted(numbered, key=lambda p: -int(p.name))]
    for bindir in candidates:
        if (bindir / "initdb").is_file() and (bindir / "pg_ctl").is_file():
            return bindir
    return None


def _unavailable(reason: str) -> None:
    if _in_ci():
        pytest.fail(f"CI is set but {reason}: the PostgreSQL fault tests must run", pytrace=False)
    pytest.skip(reason)


@dataclass
class PrivatePostgres:
    """A PostgreSQL server this run owns: start, stop, restart, and databases on it."""

    bindir: Path
    root: Path  # owned by the server's user; holds data/, the log and the socket
    port: int
    run_as: list[str]  # a ``runuser`` prefix when we are root, else empty

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def log_path(self) -> Path:
        return self.root / "server.log"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def _tool(self, tool: str, *args: str, timeout: float = 60) -> str:
        command = [*self.run_as, str(self.bindir / tool), *args]
        # cwd: the server's user must be able to read its working directory.
        done = subprocess.run(
            command, cwd=self.root, capture_output=True, text=True, timeout=timeout
        )
        if done.returncode != 0:
            raise AssertionError(
                f"{tool} {' '.join(args)} exited with {done.returncode}:\n{done.stdout}"
                f"{done.stderr}\n--- server log ---\n{self.log()}"
            )
        return done.stdout

    def init(self) -> None:
        self._tool(
            "initdb",
            "-D",
            str(self.data_dir),
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        )
        with (self.data_dir / "postgresql.conf").open("a", encoding="utf-8") as conf:
            conf.write(
                f"\nlisten_addresses = '127.0.0.1'\nport = {self.port}\n"
                f"unix_socket_directories = '{self.root}'\n"
                "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
            )

    def start(self) -> None:
        self._tool("pg_ctl", "-D", str(self.data_dir), "-l", str(self.log_path), "-w", "start")

    def stop(self, mode: str = "fast") -> None:
        self._tool("pg_ctl", "-D", str(self.data_dir), "-m", mode, "-w", "stop")

    def restart(self) -> None:
        """``pg_ctl restart -m fast``: every session is ended, the server comes back."""
        self._tool(
            "pg_ctl", "-D", str(self.data_dir), "-l", str(self.log_path), "-m", "fast", "-w",
            "restart",
        )  # fmt: skip

    def is_running(self) -> bool:
        command = [*self.run_as, str(self.bindir / "pg_ctl"), "-D", str(self.data_dir), "status"]
        return subprocess.run(command, cwd=self.root, capture_output=True).returncode == 0

    def log(self) -> str:
        if not self.log_path.exists():
            return ""
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def _admin(self, statement: str) -> None:
        """Run ``statement`` on the server's default database, outside a transaction."""
        admin = create_engine(self.url(), isolation_level="AUTOCOMMIT")
        try:
            with admin.connect() as connection:
                connection.exec_driver_sql(statement)
        finally:
            admin.dispose()

    def create_database(self, name: str) -> str:
        """Create ``name``, migrate it with ``python -m service migrate``; its URL."""
        self._admin(f'CREATE DATABASE "{name}"')
        url = self.url(name)
        env = {k: v for k, v in os.environ.items() if not k.startswith("BATCHWISE_")}
        env |= {"BATCHWISE_DATABASE_URL": url, "BATCHWISE_DATA_DIR": str(self.root / "cli")}
        migrated = subprocess.run(
            [sys.executable, "-m", "service", "migrate"],
            env=env,
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert migrated.returncode == 0, migrated.stderr
        return url

    def drop_database(self, name: str) -> None:
        self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def private_postgres() -> Iterator[PrivatePostgres]:
    """A PostgreSQL server of this run's own, running; removed at the end of the run."""
    bindir = _postgres_bindir()
    if bindir is None:
        _unavailable("no PostgreSQL server binaries (initdb, pg_ctl) were found")
        raise AssertionError("unreachable")  # pytest.skip/fail raise; this tells mypy
    run_as: list[str] = []
    owner = None
    if os.geteuid() == 0:
        try:
            owner = pwd.getpwnam(SERVER_USER)
        except KeyError:
            _unavailable(f"running as root and there is no {SERVER_USER!r} OS user to run as")
        runuser = shutil.which("runuser")
        if runuser is None:
            _unavailable("running as root and there is no runuser to drop privileges with")
        run_as = [str(runuser), "-u", SERVER_USER, "--"]
    root = Path(tempfile.mkdtemp(prefix="batchwise-pg-"))
    if owner is not None:
        os.chown(root, owner.pw_uid, owner.pw_gid)
    server = PrivatePostgres(bindir=bindir, root=root, port=find_free_port(), run_as=run_as)
    try:
        server.init()
        server.start()
        yield server
    finally:
        if server.is_running():
            server.stop("immediate")
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def private_postgres_url(private_postgres: PrivatePostgres) -> Iterator[str]:
    """URL of a new, migrated database on :func:`private_postgres`, dropped afterwards."""
    name = f"faults_{uuid.uuid4().hex[:10]}"
    url = private_postgres.create_database(name)
    try:
        yield url
    finally:
        if not private_postgres.is_running():  # a test that failed while it was stopped
            private_postgres.start()
        private_postgres.drop_database(name)
