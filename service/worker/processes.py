"""Embedded workers: ``batchwise serve`` runs ``BATCHWISE_WORKERS`` worker processes beside
the API, so training never blocks a request.

Each is ``python -m service worker`` with the server's environment and the BLAS thread cap,
started with the API and stopped with it (SIGTERM: a running job is released to the queue,
then SIGKILL after ``stop_timeout``). One that exits on its own (it lost a lease) is replaced.
Standard library only: nothing here loads NumPy.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

from service.worker import blas_thread_env

logger = logging.getLogger("service.worker")

_SERVER_SIGNALS = (signal.SIGTERM, signal.SIGINT)
#: How often the supervisor looks for exited workers.
SUPERVISE_SECONDS = 1.0


class EmbeddedWorkers:
    """``count`` worker processes kept running between :meth:`start` and :meth:`stop`."""

    def __init__(self, count: int, *, threads: int, stop_timeout: float = 15.0) -> None:
        self.count, self.threads, self.stop_timeout = count, threads, stop_timeout
        self.processes: list[subprocess.Popen[bytes]] = []
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._supervisor: threading.Thread | None = None

    def _spawn(self) -> subprocess.Popen[bytes]:
        env = os.environ | blas_thread_env(self.threads)
        process = subprocess.Popen([sys.executable, "-m", "service", "worker"], env=env)
        logger.info("embedded worker started (pid %d)", process.pid)
        return process

    def start(self) -> None:
        """Start the workers and the thread that replaces any that exit."""
        if self.count == 0:
            return
        with self._lock:
            self.processes = [self._spawn() for _ in range(self.count)]
        self._supervisor = threading.Thread(target=self._supervise, name="workers", daemon=True)
        self._supervisor.start()

    def _supervise(self) -> None:
        while not self._stopping.wait(SUPERVISE_SECONDS):
            with self._lock:
                if self._stopping.is_set():
                    return
                for index, process in enumerate(self.processes):
                    if process.poll() is not None:
                        logger.warning(
                            "embedded worker %d exited with %d; starting another",
                            process.pid,
                            process.returncode,
                        )
                        self.processes[index] = self._spawn()

    def stop(self) -> None:
        """SIGTERM every worker, wait for them to release their jobs, SIGKILL stragglers."""
        self._stopping.set()
        with self._lock:
            processes = list(self.processes)
        for process in processes:
            if process.poll() is None:
                process.terminate()
        for process in processes:
            try:
                process.wait(timeout=self.stop_timeout)
            except subprocess.TimeoutExpired:
                logger.warning("embedded worker %d did not stop; killing it", process.pid)
                process.kill()
                process.wait()
        if self._supervisor is not None:
            self._supervisor.join()

    @contextmanager
    def running(self) -> Iterator[None]:
        """The workers, started on entry and stopped on exit — also when the server ends on
        SIGTERM or SIGINT. uvicorn re-raises the signal it caught once it has shut down; with
        the default handler that would end this process before the workers are stopped, so a
        recording handler stands in while the server runs, and the signal is re-raised (to
        exit as it asked) only after the workers are gone."""
        received: list[int] = []

        def record(signum: int, _frame: FrameType | None) -> None:
            received.append(signum)

        previous = {signum: signal.signal(signum, record) for signum in _SERVER_SIGNALS}
        self.start()
        try:
            yield
        finally:
            self.stop()
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        if received:
            signal.raise_signal(received[0])


__all__ = ["EmbeddedWorkers"]
