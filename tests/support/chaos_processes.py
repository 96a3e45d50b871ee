"""The chaos run's processes: API processes that keep their port across a restart, and worker
slots that the harness refills whenever their process ends (killed or not).

Each process incarnation writes its own log file, so a killed worker's log survives beside
its successor's; every exit the harness did not cause is recorded with its status.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.processes import REPO_ROOT, WorkerProcess, find_free_port, wait_healthy

#: Generous: under a loaded machine, importing the web stack alone can take half a minute.
API_STARTUP_TIMEOUT_S = 120.0


def _api_env(database_url: str, data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BATCHWISE_")}
    return env | {
        "BATCHWISE_DATABASE_URL": database_url,
        "BATCHWISE_DATA_DIR": str(data_dir),
        "BATCHWISE_WORKERS": "0",
        "BATCHWISE_AUTH": "off",  # on loopback
        "PYTHONUNBUFFERED": "1",
    }


class ApiProcess:
    """``python -m service serve`` (uvicorn, no embedded workers) on a fixed port, with a data
    dir of its own (``serve`` clears its spool at start: a shared one would lose the other
    process's uploads in flight)."""

    def __init__(self, index: int, database_url: str, data_dir: Path, log_dir: Path) -> None:
        self.index, self.database_url, self.data_dir = index, database_url, data_dir
        self.log_dir = log_dir
        self.port = find_free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.logs: list[Path] = []
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def spool(self) -> Path:
        return self.data_dir / "spool"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self) -> None:
        """Start it and return once ``/healthz`` answers."""
        log_path = self.log_dir / f"api{self.index}-{len(self.logs)}.log"
        self.logs.append(log_path)
        command = [sys.executable, "-m", "service", "serve", "--host", "127.0.0.1"]
        with log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [*command, "--port", str(self.port)],
                env=_api_env(self.database_url, self.data_dir),
                cwd=REPO_ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        wait_healthy(self.process, self.base_url, log_path, API_STARTUP_TIMEOUT_S)

    def kill(self) -> int:
        """SIGKILL; the exit status once it is gone."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        return self.process.wait(timeout=30)

    def stop(self) -> int | None:
        """SIGTERM, SIGKILL after 10 s; the exit status (None if never started)."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def output(self) -> str:
        return "\n".join(
            f"--- {p.name} ---\n{p.read_text(errors='replace')}" for p in self.logs if p.exists()
        )


@dataclass(frozen=True)
class WorkerExit:
    """A worker process that ended while the run needed it."""

    at: float
    slot: int
    pid: int
    status: int
    killed: bool  # by the harness (SIGKILL), else on its own
    job_id: str | None  # the job it had claimed and not finished

    @property
    def mid_job(self) -> bool:
        return self.job_id is not None

    log_tail: str


@dataclass
class WorkerSlots:
    """``count`` worker processes, each replaced as soon as it ends until :meth:`close`."""

    database_url: str
    data_dir: Path
    count: int
    env: dict[str, str]
    started: float
    incarnations: list[WorkerProcess] = field(default_factory=list)
    exits: list[WorkerExit] = field(default_factory=list)
    slots: list[WorkerProcess] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _closed: bool = False

    def start(self) -> None:
        self.slots = [self._spawn(slot) for slot in range(self.count)]

    def _spawn(self, slot: int) -> WorkerProcess:
        log_path = self.data_dir / f"worker{slot}-{len(self.incarnations)}.log"
        worker = WorkerProcess(self.database_url, self.data_dir, log_path, env=self.env)
        self.incarnations.append(worker)
        return worker

    def _replace(self, slot: int, status: int, *, killed: bool) -> None:
        gone = self.slots[slot]
        output = gone.output()
        self.exits.append(
            WorkerExit(
                at=time.monotonic() - self.started,
                slot=slot,
                pid=gone.pid,
                status=status,
                killed=killed,
                job_id=running_job(output),
                log_tail="\n".join(output.splitlines()[-5:]),
            )
        )
        if not self._closed:
            self.slots[slot] = self._spawn(slot)

    def kill(self, slot: int) -> WorkerExit:
        """SIGKILL the slot's process and start its successor; the exit recorded."""
        with self._lock:
            worker = self.slots[slot]
            worker.signal(signal.SIGKILL)
            self._replace(slot, worker.wait(timeout=30), killed=True)
            return self.exits[-1]

    def refill(self) -> None:
        """Replace every process that ended on its own (a lost lease, a failed start)."""
        with self._lock:
            for slot, worker in enumerate(self.slots):
                status = worker.process.poll()
                if status is not None:
                    self._replace(slot, status, killed=False)

    def close(self) -> list[int]:
        """Stop every process (SIGTERM, then SIGKILL); their exit statuses."""
        with self._lock:
            self._closed = True
            for worker in self.slots:
                worker.stop()
            return [worker.process.returncode for worker in self.slots]

    def outputs(self) -> list[str]:
        return [worker.output() for worker in self.incarnations]


def running_job(output: str) -> str | None:
    """The job a worker's log ends inside of: claimed, with no outcome after it."""
    claimed = re.findall(r"claimed job (\S+) \(attempt", output)
    if not claimed:
        return None
    after = output[output.rfind("claimed job ") :]
    outcomes = (": succeeded after", ": failed after", ": cancelled after", "released to")
    if any(outcome in after for outcome in outcomes) or "given up" in after:
        return None
    job_id: str = claimed[-1]
    return job_id


def mid_job(output: str) -> bool:
    """Whether a worker's log ends inside a job."""
    return running_job(output) is not None


def trained_an_epoch(output: str) -> bool:
    """Whether a worker's log ends inside a job it has stored an epoch of since claiming it
    (the per-epoch lines are logged at debug level)."""
    job_id = running_job(output)
    return job_id is not None and f"job {job_id}: epoch " in output[output.rfind("claimed job ") :]


__all__ = ["ApiProcess", "WorkerExit", "WorkerSlots", "mid_job", "running_job", "trained_an_epoch"]
