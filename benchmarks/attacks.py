"""Hostile request bodies against a real ``batchwise serve``: what each one costs the API.

    python -m benchmarks.attacks                       # every attack, on this checkout
    python -m benchmarks.attacks --source OTHER_TREE   # the same attacks on another checkout
    python -m benchmarks.attacks --attack sign-in-form --attack predict-rows

Each attack runs against a fresh server (``python -m service serve`` with the ``service``
package of ``--source``, a temp SQLite file, auth off, one embedded worker for the job that
``predict-rows`` needs). While the attack's requests are sent, a dedicated thread polls
``GET /healthz`` every ``POLL_INTERVAL_S`` on a keep-alive connection; the row printed is the
answers' statuses and time, the API process's peak RSS (``VmHWM``) and that of its other
children (anything but the embedded worker: a process that parses bodies, say), and the
maximum and median ``/healthz`` latency over the attack window.
"""

from __future__ import annotations

import argparse
import http.client
import importlib.util
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from benchmarks import _processes

POLL_INTERVAL_S = 0.01
MiB = 1024**2


@dataclass(frozen=True)
class Attack:
    """``parallel`` copies of one request, sent at once."""

    name: str
    path: str
    content_type: str
    body: Callable[[], bytes]
    parallel: int = 1


def _sign_in_form() -> bytes:
    return b"&" * (15 * MiB)


def _inline_dataset() -> bytes:
    """An inline dataset just under 16 MiB: ~650k rows of two features."""
    rows = (16 * MiB - 100) // 17  # 12 bytes of X and 5 of y per row
    X = b", ".join([b"[1.0, 2.0]"] * rows)
    y = b", ".join([b"1.5"] * rows)
    return b'{"name": "attack", "X": [' + X + b'], "y": [' + y + b"]}"


def _predict_rows() -> bytes:
    """15.6 MB of rows to predict: far over the 100k-row limit."""
    rows = 15_600_000 // 12
    return b'{"X": [' + b", ".join([b"[1.0, 2.0]"] * rows) + b"]}"


def _job_body() -> bytes:
    return b'{"dataset_id": "d", "tags": [' + b'"x", ' * (70_000 // 5) + b'"x"]}'


# -- dataset uploads: NPZ archive bombs and a CSV of rows to drop -----------------------------

_BOUNDARY = "batchwise-attack-boundary"
_MULTIPART = f"multipart/form-data; boundary={_BOUNDARY}"


def _upload(filename: str, data: bytes, **fields: str) -> bytes:
    """A ``multipart/form-data`` dataset upload: ``data`` as the file part, then ``fields``."""
    parts = [
        f'--{_BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
        for name, value in fields.items()
    ]
    head = (
        f'--{_BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"'
        "\r\nContent-Type: application/octet-stream\r\n\r\n"
    )
    tail = f"\r\n{''.join(parts)}--{_BOUNDARY}--\r\n"
    return head.encode() + data + tail.encode()


def _archives() -> ModuleType:
    """The hostile-archive builders of the security tests (``tests/support/archives.py``),
    loaded by path: one writer of crafted zip records for the tests and this benchmark."""
    path = _processes.REPO_ROOT / "tests" / "support" / "archives.py"
    spec = importlib.util.spec_from_file_location("_security_archives", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while building
    spec.loader.exec_module(module)
    return module


def _npz_upload(*extra: Callable[[ModuleType], object], padding_entries: int = 0) -> bytes:
    """An upload of honest ``X`` (100, 2) and ``y`` and the ``extra`` members."""
    archives = _archives()
    members = [*archives.training_arrays(100), *(member(archives) for member in extra)]
    return _upload("bomb.npz", archives.npz(*members, padding_entries=padding_entries))


def _feature_names_1gb() -> bytes:
    """The finding: ``feature_names`` declaring 250 M ``<U1`` (1 GB) of deflated zeros."""
    return _npz_upload(lambda a: a.declared_member("feature_names.npy", (250_000_000,), "<U1"))


def _header_declares_1gb() -> bytes:
    """A header declaring 250 M ``<U1`` over a zip entry of 4 KiB."""
    return _npz_upload(
        lambda a: a.declared_member("feature_names.npy", (250_000_000,), "<U1", data_bytes=4096)
    )


def _header_declares_10e12() -> bytes:
    """A header declaring 10¹² items (NumPy's allocation fails) over 16 bytes."""
    return _npz_upload(
        lambda a: a.declared_member("feature_names.npy", (10**12,), "<U1", data_bytes=16)
    )


def _directory_of_400k_entries() -> bytes:
    """A 19.6 MB central directory: 400 000 entries, each one object when zipfile opens it."""
    return _npz_upload(padding_entries=400_000)


def _csv_rows_to_drop() -> bytes:
    """16 MB of CSV, every other row with an empty, NaN or infinite cell, to drop."""
    invalid = ["", "nan", "inf"]
    rows = [f"{i},{invalid[i % 3] if i % 2 else 1.5},-2.25,1\n" for i in range(16_000_000 // 16)]
    return _upload("rows.csv", ("a,b,c,y\n" + "".join(rows)).encode(), invalid_rows="drop")


ATTACKS = {
    attack.name: attack
    for attack in [
        Attack("sign-in-form", "/ui/sign-in", "application/x-www-form-urlencoded",
               _sign_in_form, parallel=4),
        Attack("inline-dataset", "/v1/datasets", "application/json", _inline_dataset),
        Attack("inline-dataset-x3", "/v1/datasets", "application/json", _inline_dataset,
               parallel=3),
        Attack("predict-rows", "/v1/jobs/{job_id}/predict", "application/json", _predict_rows),
        Attack("job-70kb", "/v1/jobs", "application/json", _job_body),
        Attack("npz-feature-names-1gb", "/v1/datasets", _MULTIPART, _feature_names_1gb),
        Attack("npz-feature-names-1gb-x3", "/v1/datasets", _MULTIPART, _feature_names_1gb,
               parallel=3),
        Attack("npz-header-declares-1gb", "/v1/datasets", _MULTIPART, _header_declares_1gb),
        Attack("npz-header-declares-10e12", "/v1/datasets", _MULTIPART, _header_declares_10e12),
        Attack("npz-directory-400k-entries", "/v1/datasets", _MULTIPART,
               _directory_of_400k_entries),
        Attack("csv-rows-to-drop-16mb", "/v1/datasets", _MULTIPART, _csv_rows_to_drop),
    ]
}  # fmt: skip


def _post(port: int, path: str, content_type: str, body: bytes) -> tuple[int, float]:
    """POST ``body`` with its ``Content-Length``; stop sending once the server answers (it may
    refuse early). The status and the seconds until the answer."""
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode()
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=120) as sock:
        view = memoryview(head + body)
        sock.setblocking(False)
        while view:
            try:
                view = view[sock.send(view[: 256 * 1024]) :]
            except BlockingIOError:
                pass
            except (BrokenPipeError, ConnectionResetError):
                break
            try:
                if sock.recv(1, socket.MSG_PEEK):
                    break  # answered before the whole body was sent
            except BlockingIOError:
                time.sleep(0.0005)
        sock.setblocking(True)
        answer = b""
        while b"\r\n" not in answer:
            chunk = sock.recv(4096)
            if not chunk:
                break
            answer += chunk
    return int(answer.split()[1]), time.monotonic() - started


class HealthPoller(threading.Thread):
    """``GET /healthz`` every ``POLL_INTERVAL_S`` on one keep-alive connection; latencies in
    seconds, each with the time it was sent."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.samples: list[tuple[float, float]] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        while not self.stopping.is_set():
            started = time.monotonic()
            connection.request("GET", "/healthz")
            answer = connection.getresponse()
            answer.read()
            assert answer.status == 200, answer.status
            self.samples.append((started, time.monotonic() - started))
            time.sleep(POLL_INTERVAL_S)
        connection.close()

    def window(self, start: float, end: float) -> list[float]:
        return [latency for sent, latency in self.samples if start <= sent <= end]


def _status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    return 0


def _non_worker_children(pid: int) -> list[int]:
    """The child processes of ``pid`` other than embedded workers (``service worker``)."""
    path = Path(f"/proc/{pid}/task/{pid}/children")
    children = [int(child) for child in path.read_text().split()] if path.exists() else []
    return [
        child
        for child in children
        if b"worker" not in Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
    ]


@contextmanager
def _server(source: Path, data_dir: Path) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    """``python -m service serve`` from ``source`` (its ``service`` package is imported: it is
    the working directory), one embedded worker; yields the port once healthy. The Alembic
    scripts come from this checkout's install (``service._migrations``) whatever ``source``
    is: they only create the tables, which every compared commit shares."""
    port = _processes.free_port()
    env = _processes.child_env(f"sqlite:///{data_dir / 'batchwise.db'}", data_dir)
    env |= {"BATCHWISE_WORKERS": "1", "PYTHONPATH": str(source)}
    with (data_dir / "serve.log").open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "service", "serve", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            cwd=source,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + _processes.STARTUP_TIMEOUT_S
        while not _processes.answers_healthz(f"http://127.0.0.1:{port}"):
            if process.poll() is not None or time.monotonic() > deadline:
                log_text = (data_dir / "serve.log").read_text(errors="replace")
                raise _processes.ProcessFailedError(log_text)
            time.sleep(0.05)
        yield port, process
    finally:
        _processes.stop(process)


def _succeeded_job(port: int) -> str:
    """A tiny job trained to the end by the embedded worker: its id."""
    import httpx

    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
        X = [[float(i % 7), float(i % 5)] for i in range(64)]
        created = client.post(
            "/v1/datasets", json={"X": X, "y": [0.5 * r[0] - 0.3 * r[1] + 0.1 for r in X]}
        )
        created.raise_for_status()
        job = client.post(
            "/v1/jobs", json={"dataset_id": created.json()["id"], "epochs": 1, "batch_size": 16}
        )
        assert job.status_code == 202, job.text
        job_id: str = job.json()["id"]
        deadline = time.monotonic() + 60
        while client.get(f"/v1/jobs/{job_id}").json()["status"] != "succeeded":
            if time.monotonic() > deadline:
                raise RuntimeError(f"job {job_id} did not succeed within 60 s")
            time.sleep(0.1)
    return job_id


def run(attack: Attack, source: Path) -> dict[str, object]:
    """One attack on a fresh server from ``source``: its figures."""
    body = attack.body()
    with (
        tempfile.TemporaryDirectory(prefix="batchwise-attacks-") as scratch,
        _server(source, Path(scratch)) as (port, process),
    ):
        path = attack.path
        if "{job_id}" in path:
            path = path.format(job_id=_succeeded_job(port))
        poller = HealthPoller(port)
        poller.start()
        time.sleep(0.3)
        answers: list[tuple[int, float]] = []
        threads = [
            threading.Thread(
                target=lambda: answers.append(_post(port, path, attack.content_type, body))
            )
            for _ in range(attack.parallel)
        ]
        start = time.monotonic()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        end = time.monotonic()
        time.sleep(0.3)
        poller.stopping.set()
        poller.join()
        latencies = poller.window(start, end) or [0.0]
        others = _non_worker_children(process.pid)
        return {
            "attack": f"{attack.name} ({len(body) / 1e6:.1f} MB × {attack.parallel})",
            "statuses": sorted({status for status, _ in answers}),
            "answer_s": max(seconds for _, seconds in answers),
            "api_hwm_mb": _status_kb(process.pid, "VmHWM") / 1024,
            "child_hwm_mb": sum(_status_kb(pid, "VmHWM") for pid in others) / 1024,
            "healthz_max_ms": max(latencies) * 1e3,
            "healthz_median_ms": statistics.median(latencies) * 1e3,
            "polls": len(latencies),
        }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "--source",
        type=Path,
        default=_processes.REPO_ROOT,
        help="the checkout whose service package is served",
    )
    parser.add_argument(
        "--attack",
        action="append",
        choices=sorted(ATTACKS),
        help="run only this attack (repeatable); default all",
    )
    args = parser.parse_args(argv)
    print(f"cpus: {os.cpu_count()}, load average: {os.getloadavg()[0]:.2f}")
    print(
        "| attack | answers | slowest answer | API VmHWM | other children VmHWM "
        "| /healthz max | /healthz median | polls |"
    )
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name in args.attack or list(ATTACKS):
        r = run(ATTACKS[name], args.source.resolve())
        print(f"| {r['attack']} | {r['statuses']} | {r['answer_s']:.2f} s "
              f"| {r['api_hwm_mb']:.0f} MB | {r['child_hwm_mb']:.0f} MB "
              f"| {r['healthz_max_ms']:.0f} ms | {r['healthz_median_ms']:.1f} ms "
              f"| {r['polls']} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
