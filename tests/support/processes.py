"""Real processes for the tests: ``python -m service`` runs, a ``batchwise serve`` on a free
port, worker processes with their logs, the pids behind them, and polling until something holds.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import TypeVar

REPO_ROOT = Path(__file__).resolve().parents[2]
#: A short lease, so expiry-driven tests take about a second.
LEASE_SECONDS = "1"
#: Debian's Chromium (no browser download), headless.
CHROMIUM = os.environ.get("BATCHWISE_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]

ServeProcess = Callable[..., AbstractContextManager[str]]
T = TypeVar("T")


def find_free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


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
            wait_healthy(process, base_url, log_path, startup_timeout)
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


def wait_healthy(
    process: subprocess.Popen[bytes], base_url: str, log_path: Path, timeout: float
) -> None:
    """Return once ``GET /healthz`` answers 200; :class:`ServerFailedError` with the output if
    the process exits first or ``timeout`` passes."""
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


def wait_for(
    probe: Callable[[], T | None], *, timeout: float = 30.0, interval: float = 0.01, what: str = ""
) -> T:
    """Call ``probe`` until it returns something truthy; that value. AssertionError on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or probe}")
        time.sleep(interval)


def worker_env(
    database_url: str, data_dir: Path, extra: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The environment of a worker process: this test's database and data dir, a short lease,
    fast polling, none of the caller's other ``BATCHWISE_*`` variables."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BATCHWISE_")}
    env |= {
        "BATCHWISE_DATABASE_URL": database_url,
        "BATCHWISE_DATA_DIR": str(data_dir),
        "BATCHWISE_LEASE_SECONDS": LEASE_SECONDS,
        "BATCHWISE_POLL_SECONDS": "0.1",
        "PYTHONUNBUFFERED": "1",
    }
    return env | dict(extra or {})


class WorkerProcess:
    """A real ``python -m service worker`` process with its output in a log file."""

    def __init__(
        self,
        database_url: str,
        data_dir: Path,
        log_path: Path,
        *,
        burst: bool = False,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.log_path = log_path
        args = [sys.executable, "-m", "service", "worker"] + (["--burst"] if burst else [])
        with log_path.open("wb") as log:
            self.process = subprocess.Popen(
                args,
                env=worker_env(database_url, data_dir, env),
                cwd=REPO_ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    @property
    def pid(self) -> int:
        return self.process.pid

    def output(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def signal(self, signum: signal.Signals) -> None:
        self.process.send_signal(signum)

    def wait(self, timeout: float = 30.0) -> int:
        """The exit status; AssertionError with the output if it does not exit in time."""
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"worker {self.pid} still running after {timeout} s:\n{self.output()}"
            ) from None

    def stop(self) -> None:
        """SIGCONT (in case it is paused), SIGTERM, then SIGKILL after 10 s."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@contextmanager
def workers(
    database_url: str,
    data_dir: Path,
    count: int = 1,
    *,
    burst: bool = False,
    env: Mapping[str, str] | None = None,
) -> Iterator[list[WorkerProcess]]:
    """``count`` worker processes, stopped at exit; their output is printed for failed tests."""
    started = [
        WorkerProcess(
            database_url,
            data_dir,
            data_dir / f"worker-{uuid.uuid4().hex[:8]}.log",
            burst=burst,
            env=env,
        )
        for _ in range(count)
    ]
    try:
        yield started
    finally:
        for worker in started:
            worker.stop()
        for worker in started:
            print(f"--- worker {worker.pid} (exit {worker.process.returncode}) ---")
            print(worker.output())


def worker_dir(tmp_path: Path) -> Path:
    """A data dir of the workers' own (their logs and dataset cache), apart from the API's."""
    path = tmp_path / "workers"
    path.mkdir(exist_ok=True)
    return path


def claims(*started: WorkerProcess) -> list[str]:
    """The job ids the workers claimed, one entry per claim, from their logs."""
    return [
        job_id
        for worker in started
        for job_id in re.findall(r"claimed job (\S+) \(attempt", worker.output())
    ]


def worker_pid(worker_id: str) -> int:
    """The pid in a worker id (``host:pid:random``)."""
    return int(worker_id.split(":")[-2])


def server_pid(base_url: str) -> int:
    """The pid of this process's ``python -m service serve`` child listening at ``base_url``
    (``run_server`` yields the URL only): found by its command line in ``/proc``."""
    port = base_url.rsplit(":", 1)[1]
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            stat = (entry / "stat").read_text()
        except OSError:  # gone meanwhile
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        if parent != os.getpid():
            continue
        args = [a.decode() for a in argv]
        if "serve" in args and "--port" in args and args[args.index("--port") + 1] == port:
            return int(entry.name)
    raise AssertionError(f"no server process of ours listens at {base_url}")
