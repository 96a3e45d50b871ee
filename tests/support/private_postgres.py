"""A private PostgreSQL server that a test may stop and restart.

The shared test server (``BATCHWISE_TEST_POSTGRES_URL``) is never restarted: other tests and
helpers use it. This one is made for the run by ``initdb`` in a temporary directory, listens on
127.0.0.1 only (a free port), trusts local connections and runs with fsync off (nothing in it
has to survive a power cut). As root, its tools run as the ``postgres`` OS user: ``initdb`` and
``postgres`` refuse to run as root.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import create_engine

from tests.support.processes import run_batchwise

SERVER_USER = "postgres"  # the OS user the server runs as when the tests run as root


def postgres_bindir() -> Path | None:
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
        env = {"BATCHWISE_DATABASE_URL": url, "BATCHWISE_DATA_DIR": str(self.root / "cli")}
        migrated = run_batchwise("migrate", env=env)
        assert migrated.returncode == 0, migrated.stderr
        return url

    def drop_database(self, name: str) -> None:
        self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
