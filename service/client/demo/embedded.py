"""The service the demo runs against when no ``--url`` is given: ``batchwise serve`` as a
subprocess (two workers, SQLite in a data dir, auth off on a free port of loopback), stopped
at the end. Started as a process, not imported: the demo stays an HTTP client."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from service.client.errors import BatchwiseError
from service.client.http import BatchwiseClient


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _tail(path: Path, lines: int = 20) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


@contextmanager
def embedded_service(
    data_dir: Path, *, workers: int = 2, startup_timeout_s: float = 60.0
) -> Iterator[str]:
    """Run ``batchwise serve`` (SQLite in ``data_dir``, ``workers`` embedded workers) as a
    subprocess on a free port of 127.0.0.1; yield its base URL once ``/healthz`` answers.
    On exit: SIGTERM, then SIGKILL after 15 s. Its log is ``data_dir/serve.log``."""
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BatchwiseError(f"cannot use {data_dir} as the data dir: {exc}") from exc
    port = _free_port()
    base_url = f"http://127.0.0.1:{port}"
    # The child reads its settings from the environment; an outside database URL would
    # point the demo's throwaway data at a real deployment, so it is dropped. It listens on
    # loopback only, for this process alone, so it runs without API keys.
    env = {k: v for k, v in os.environ.items() if k != "BATCHWISE_DATABASE_URL"}
    env |= {
        "BATCHWISE_AUTH": "off",
        "BATCHWISE_DATA_DIR": str(data_dir),
        "BATCHWISE_WORKERS": str(workers),
        "BATCHWISE_LOG_LEVEL": "warning",
        "PYTHONUNBUFFERED": "1",
    }
    log_path = data_dir / "serve.log"
    command = [sys.executable, "-m", "service", "serve", "--host", "127.0.0.1", "--port", str(port)]
    with log_path.open("ab") as log:
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        _wait_until_up(process, base_url, log_path, startup_timeout_s)
        yield base_url
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _wait_until_up(
    process: subprocess.Popen[bytes], base_url: str, log_path: Path, timeout_s: float
) -> None:
    deadline = time.monotonic() + timeout_s
    with BatchwiseClient(base_url, timeout=2.0) as client:
        while True:
            if process.poll() is not None:
                raise BatchwiseError(
                    f"the embedded service exited with {process.returncode} before it "
                    f"answered; the end of {log_path}:\n{_tail(log_path)}"
                )
            try:
                client.health()
                return
            except BatchwiseError:
                if time.monotonic() > deadline:
                    raise BatchwiseError(
                        f"the embedded service did not answer within {timeout_s:g} s; the "
                        f"end of {log_path}:\n{_tail(log_path)}"
                    ) from None
                time.sleep(0.1)
