"""``batchwise serve`` with several API processes (``BATCHWISE_API_PROCESSES``), for real.

uvicorn starts the API processes (each builds its own app from the environment), the embedded
workers are started once beside them, and SIGTERM stops every one of them: no process is left.
"""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from service.api.upload import spool_dir
from tests.support.processes import run_server, server_pid, wait_for

#: Linux's shortest delayed ACK, which a response held back by Nagle's algorithm waits for.
DELAYED_ACK_S = 0.040
NAGLE_PROBES = 20


def children(pid: int) -> dict[int, list[str]]:
    """The live child processes of ``pid``: their command lines by pid (from ``/proc``)."""
    found: dict[int, list[str]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            argv = (entry / "cmdline").read_bytes().decode().rstrip("\0").split("\0")
        except OSError:  # gone meanwhile
            continue
        state, parent = stat.rsplit(")", 1)[1].split()[:2]
        if int(parent) == pid and state != "Z":
            found[int(entry.name)] = argv
    return found


def alive(pid: int) -> bool:
    """Whether ``pid`` is a process that has not exited (a zombie has)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def api_processes(processes: dict[int, list[str]]) -> list[int]:
    # uvicorn starts its workers with multiprocessing's spawn: `python -c "from
    # multiprocessing.spawn import spawn_main; ..."`.
    return sorted(
        pid for pid, argv in processes.items() if "multiprocessing.spawn" in " ".join(argv)
    )


def worker_processes(processes: dict[int, list[str]]) -> list[int]:
    return sorted(pid for pid, argv in processes.items() if argv[-2:] == ["service", "worker"])


@pytest.mark.alone  # a median latency bound (Nagle's algorithm off)
def test_two_api_processes_each_answer_and_sigterm_stops_every_process(
    db_url: str, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    leftover = spool_dir(data_dir) / "upload-killed.part"
    leftover.parent.mkdir(parents=True)
    leftover.write_bytes(b"half an upload")
    env = {"BATCHWISE_API_PROCESSES": "2", "BATCHWISE_WORKERS": "1"}
    with run_server(database_url=db_url, data_dir=data_dir, env=env) as base_url:
        serve = server_pid(base_url)
        started = wait_for(
            lambda: (
                found
                if len(api_processes(found := children(serve))) == 2
                and len(worker_processes(found)) == 1
                else None
            ),
            what="2 API processes and 1 worker",
        )
        # Cleared by serve before the API processes started, not by each of them.
        assert not leftover.exists()
        first, second = api_processes(started)
        # Each process answers alone while the other is stopped: a new connection is accepted
        # only by a process that runs, and each request reads the database.
        for stopped in (first, second):
            os.kill(stopped, signal.SIGSTOP)
            try:
                response = httpx.get(f"{base_url}/v1/jobs", timeout=20)
            finally:
                os.kill(stopped, signal.SIGCONT)
            assert response.status_code == 200, response.text
            assert response.json() == {"items": [], "next_cursor": None}
        assert sorted(children(serve)) == sorted(started)  # neither was replaced meanwhile

        # Nagle's algorithm is off: a response goes out in two writes (head, body), and with it
        # on the second waits for the client's delayed ACK — 40 ms at every request.
        with httpx.Client(base_url=base_url, timeout=20) as client:
            client.get("/healthz")  # connect
            latencies = []
            for _ in range(NAGLE_PROBES):
                start = time.perf_counter()
                assert client.get("/healthz").status_code == 200
                latencies.append(time.perf_counter() - start)
        assert statistics.median(latencies) < DELAYED_ACK_S / 2, latencies

        os.kill(serve, signal.SIGTERM)
        wait_for(lambda: not alive(serve), timeout=30, interval=0.05, what="serve to exit")
    # run_server has checked that serve exited cleanly (status 0); its children are gone too:
    # both API processes, the worker and multiprocessing's resource tracker.
    wait_for(
        lambda: not any(alive(pid) for pid in started),
        timeout=10,
        interval=0.05,
        what=f"every child of serve to exit: {started}",
    )


def test_api_processes_below_one_is_refused_naming_the_setting(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BATCHWISE_")}
    env |= {"BATCHWISE_API_PROCESSES": "0", "BATCHWISE_DATA_DIR": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-m", "service", "serve"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "batchwise serve: invalid settings: api_processes: Input should be greater than or "
        "equal to 1"
    )
    assert not (tmp_path / "batchwise.db").exists()  # refused before touching the database
