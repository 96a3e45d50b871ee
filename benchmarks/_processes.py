"""Real service processes for the benchmarks: ``python -m service serve`` and ``worker``.

Each child gets the benchmark's database URL and data dir, none of the caller's other
``BATCHWISE_*`` variables, and writes its output to a log file in the data dir (printed when it
fails to start). Stopped with SIGTERM, then SIGKILL after 10 s.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
STARTUP_TIMEOUT_S = 60.0


class ProcessFailedError(RuntimeError):
    """A child did not come up; carries its output."""


def child_env(
    database_url: str, data_dir: Path, extra: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The environment of a service process: this run's database and data dir, no embedded
    workers, none of the caller's other ``BATCHWISE_*`` variables; ``extra`` overrides."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BATCHWISE_")}
    env |= {
        "BATCHWISE_DATABASE_URL": database_url,
        "BATCHWISE_DATA_DIR": str(data_dir),
        "BATCHWISE_WORKERS": "0",
        "BATCHWISE_LOG_LEVEL": "warning",
        # The benchmarks measure the service on loopback, without API keys.
        "BATCHWISE_AUTH": "off",
        "PYTHONUNBUFFERED": "1",
    }
    return env | dict(extra or {})


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _start(args: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    with log_path.open("wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "service", *args],
            env=env,
            cwd=REPO_ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def stop(process: subprocess.Popen[bytes], timeout_s: float = 10) -> None:
    """SIGTERM, then SIGKILL after ``timeout_s``; a process that already ended is left as is."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _failed(what: str, process: subprocess.Popen[bytes], log_path: Path) -> ProcessFailedError:
    output = log_path.read_text(encoding="utf-8", errors="replace")
    return ProcessFailedError(f"{what} (exit {process.poll()}); output:\n{output}")


def answers_healthz(base_url: str) -> bool:
    """Whether the server at ``base_url`` answers ``GET /healthz`` with 200 right now."""
    try:
        with urllib.request.urlopen(f"{base_url}/healthz", timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


@contextmanager
def serve(database_url: str, data_dir: Path) -> Iterator[str]:
    """A real ``batchwise serve`` (uvicorn, no embedded workers); yields its base URL once
    ``GET /healthz`` answers 200."""
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    log_path = data_dir / f"serve-{port}.log"
    process = _start(
        ["serve", "--host", "127.0.0.1", "--port", str(port)],
        child_env(database_url, data_dir),
        log_path,
    )
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while True:
            if process.poll() is not None:
                raise _failed("serve exited before answering /healthz", process, log_path)
            if answers_healthz(base_url):
                break
            if time.monotonic() > deadline:
                raise _failed(f"serve not healthy after {STARTUP_TIMEOUT_S:g} s", process, log_path)
            time.sleep(0.05)
        yield base_url
    finally:
        stop(process)


@contextmanager
def workers(
    database_url: str, data_dir: Path, count: int, *, threads: int
) -> Iterator[list[subprocess.Popen[bytes]]]:
    """``count`` real ``batchwise worker`` processes with ``BATCHWISE_WORKER_THREADS=threads``
    (the default lease and poll settings); yields once each has logged that it started."""
    env = child_env(database_url, data_dir, {"BATCHWISE_WORKER_THREADS": str(threads)})
    # Info level: the "started" line is how readiness is seen (one line per job besides).
    env["BATCHWISE_LOG_LEVEL"] = "info"
    started: list[tuple[subprocess.Popen[bytes], Path]] = []
    try:
        for _ in range(count):
            log_path = data_dir / f"worker-{uuid.uuid4().hex[:8]}.log"
            started.append((_start(["worker"], env, log_path), log_path))
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        for process, log_path in started:
            while ": started (pid" not in log_path.read_text(errors="replace"):
                if process.poll() is not None or time.monotonic() > deadline:
                    raise _failed("worker did not start", process, log_path)
                time.sleep(0.05)
        yield [process for process, _ in started]
    finally:
        for process, _ in started:
            stop(process)


__all__ = ["ProcessFailedError", "child_env", "free_port", "serve", "stop", "workers"]
