"""Hostile multipart uploads against a real ``batchwise serve`` process: refused early, with the
right 4xx problem+json, and without the server's memory growing.

The server runs with ``BATCHWISE_MAX_UPLOAD_BYTES`` = 1 MiB. Each attack is sent over a raw
socket that checks for an answer before every 64 KiB it sends, so the test sees how much of
the body the client had sent when the answer came: for the 10 MiB bodies it must come before
half was sent. (A body under a megabyte fits in the kernel's socket buffers, so it is all
"sent" at once whatever the server does: those attacks are judged by time alone.) Each
attack is timed against a baseline (an accepted upload of half the limit, on the same server)
and repeated 20 times after a warm-up while the server's resident memory (``VmRSS`` in
``/proc/<pid>/status``) is watched.
"""

from __future__ import annotations

import json
import os
import selectors
import shutil
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import run_server, sqlite_url

PROBLEM_JSON = "application/problem+json"
MAX_UPLOAD_BYTES = 1024 * 1024
ATTACK_BYTES = 10 * MAX_UPLOAD_BYTES
PIECE_BYTES = 64 * 1024
BOUNDARY = "batchwise-dos-boundary"
#: Requests per attack whose memory is measured, after WARMUP_REQUESTS that are not.
MEASURED_REQUESTS = 20
WARMUP_REQUESTS = 3
#: "Does not grow": allocator noise and caches stay well under this across 20 requests.
MAX_RSS_GROWTH = 4 * 1024 * 1024
#: A refusal may take this many times as long as an accepted upload of half the limit.
BASELINE_FACTOR = 3.0
#: Loopback and parsing cost a little whatever the baseline measured.
SLACK_S = 0.5


# --- the server and its process -------------------------------------------------------------


@dataclass(frozen=True)
class Server:
    base_url: str
    port: int
    pid: int
    spool: Path


def listening_pid(port: int) -> int:
    """The pid of the process listening on 127.0.0.1:``port``, found through ``/proc``: the
    socket's inode in ``/proc/net/tcp``, then the process holding a descriptor to it."""
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, state, inode = fields[1], fields[3], fields[9]
        if state == "0A" and int(local.split(":")[1], 16) == port:  # 0A: LISTEN
            inodes.add(f"socket:[{inode}]")
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            targets = {os.readlink(fd) for fd in (entry / "fd").iterdir()}
        except OSError:  # a process that ended meanwhile, or not ours to read
            continue
        if targets & inodes:
            return int(entry.name)
    raise AssertionError(f"no process listens on port {port}")


def rss_bytes(pid: int) -> int:
    """The resident set size of ``pid`` (``VmRSS``), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"/proc/{pid}/status has no VmRSS")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path) -> Iterator[Server]:
    """One real server for the module, on SQLite, with a 1 MiB upload limit."""
    root = tmp_path_factory.mktemp("multipart-dos")
    database = root / "batchwise.db"
    shutil.copyfile(sqlite_template, database)
    data_dir = root / "data"
    env = {"BATCHWISE_MAX_UPLOAD_BYTES": str(MAX_UPLOAD_BYTES)}
    with run_server(database_url=sqlite_url(database), data_dir=data_dir, env=env) as base_url:
        port = int(base_url.rsplit(":", 1)[1])
        yield Server(base_url, port, listening_pid(port), data_dir / "spool")


# --- a raw HTTP client that notices an early answer -----------------------------------------


@dataclass
class Exchange:
    """One request and its answer: ``sent`` bytes of the ``total`` the request had (head
    included) were handed to the network before the answer arrived."""

    status: int
    headers: dict[str, str]
    body: bytes
    sent: int
    total: int
    elapsed_s: float

    def problem(self) -> dict[str, Any]:
        assert self.headers.get("content-type") == PROBLEM_JSON, (self.status, self.headers)
        document: dict[str, Any] = json.loads(self.body)
        assert document["status"] == self.status
        return document


def _frame(pieces: Iterator[bytes], chunked: bool) -> Iterator[bytes]:
    for piece in pieces:
        yield f"{len(piece):x}\r\n".encode() + piece + b"\r\n" if chunked else piece
    if chunked:
        yield b"0\r\n\r\n"


def send(
    port: int,
    body: bytes,
    *,
    content_length: int | None,
    content_type: str = f"multipart/form-data; boundary={BOUNDARY}",
) -> Exchange:
    """POST ``body`` to ``/v1/datasets`` in ``PIECE_BYTES`` pieces, chunked when
    ``content_length`` is None, else with that (possibly false) ``Content-Length``; stop
    sending as soon as an answer is readable, then read the answer."""
    framing = (
        "Transfer-Encoding: chunked"
        if content_length is None
        else (f"Content-Length: {content_length}")
    )
    head = (
        f"POST /v1/datasets HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: {content_type}\r\n{framing}\r\n\r\n"
    ).encode()
    pieces = [body[i : i + PIECE_BYTES] for i in range(0, len(body), PIECE_BYTES)]
    frames = [head, *_frame(iter(pieces), chunked=content_length is None)]
    total = sum(len(frame) for frame in frames)
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    # A small send buffer: what the client counts as sent is then close to what reached the
    # server, not megabytes parked in the kernel.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, PIECE_BYTES)
    sock.setblocking(False)
    selector = selectors.DefaultSelector()
    selector.register(sock, selectors.EVENT_READ | selectors.EVENT_WRITE)
    started = time.monotonic()
    sent = 0
    pending = b""
    try:
        while True:
            events = selector.select(timeout=30)
            assert events, "the server neither read the request nor answered within 30 s"
            mask = events[0][1]
            if mask & selectors.EVENT_READ:
                break
            if not pending:
                if not frames:
                    selector.modify(sock, selectors.EVENT_READ)  # all sent: await the answer
                    continue
                pending = frames.pop(0)
            try:
                n = sock.send(pending)
            except (BrokenPipeError, ConnectionResetError):
                break  # the server closed after answering: the answer is in the buffer
            sent += n
            pending = pending[n:]
        sock.setblocking(True)
        raw = _read_answer(sock)
    finally:
        selector.close()
        sock.close()
    elapsed = time.monotonic() - started
    head_bytes, _, rest = raw.partition(b"\r\n\r\n")
    status_line, *header_lines = head_bytes.decode("latin-1").split("\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers["content-length"])
    return Exchange(int(status_line.split()[1]), headers, rest[:length], sent, total, elapsed)


def _read_answer(sock: socket.socket) -> bytes:
    """Read one HTTP answer (head and ``Content-Length`` body) from ``sock``."""
    raw = b""
    while True:
        head, found, rest = raw.partition(b"\r\n\r\n")
        if found:
            lengths = [
                line.split(b":", 1)[1]
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            ]
            if lengths and len(rest) >= int(lengths[0]):
                return raw
        try:
            data = sock.recv(65536)
        except ConnectionResetError:
            data = b""
        assert data, f"the connection closed before a whole answer arrived: {raw[:300]!r}"
        raw += data


# --- bodies ---------------------------------------------------------------------------------


def file_part_head(filename: str = "data.csv") -> bytes:
    return (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
        "Content-Type: text/csv\r\n\r\n"
    ).encode()


def csv_upload(size: int) -> bytes:
    """A well-formed upload of a two-column CSV about ``size`` bytes long."""
    rows = b"1,2\n" * (size // 4)
    return file_part_head() + b"a,b\n" + rows + f"\r\n--{BOUNDARY}--\r\n".encode()


def many_fields(count: int, value: str = "v") -> bytes:
    parts = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="field{i}"\r\n\r\n{value}\r\n'
        for i in range(count)
    )
    return "".join(parts).encode() + f"--{BOUNDARY}--\r\n".encode()


def long_part_header(size: int) -> bytes:
    """A part whose one header line is ``size`` bytes long, then a file part."""
    return (
        f"--{BOUNDARY}\r\nX-Padding: ".encode()
        + b"x" * size
        + b"\r\n"
        + csv_upload(1024)[len(f"--{BOUNDARY}\r\n") :]
    )


@dataclass(frozen=True)
class Attack:
    """A hostile request and the answer it must get."""

    body: bytes
    content_length: int | None  # None: chunked; else the declared length (true or not)
    status: int
    detail: str
    #: Large enough (10 MiB) that an answer before half of it was sent shows the server
    #: stopped reading, despite the kernel's buffers.
    answered_early: bool = True
    content_type: str = f"multipart/form-data; boundary={BOUNDARY}"

    def send(self, server: Server) -> Exchange:
        return send(
            server.port,
            self.body,
            content_length=self.content_length,
            content_type=self.content_type,
        )


TEN_THOUSAND_FIELDS = many_fields(10_000)
TEN_THOUSAND_LONG_FIELDS = many_fields(10_000, value="v" * 1024)
OVERSIZED_FILE = csv_upload(ATTACK_BYTES)
TOO_LARGE = (
    f"The request body is larger than the limit of {MAX_UPLOAD_BYTES} bytes "
    "(BATCHWISE_MAX_UPLOAD_BYTES)."
)
ATTACKS = {
    "10000-fields": Attack(
        TEN_THOUSAND_FIELDS,
        len(TEN_THOUSAND_FIELDS),
        400,
        "The multipart body has more than 32 parts.",
        answered_early=False,  # 0.8 MB: the socket buffers take it whole
    ),
    "10000-fields-of-1kib-chunked": Attack(
        TEN_THOUSAND_LONG_FIELDS, None, 400, "The multipart body has more than 32 parts."
    ),
    "10x-limit-chunked": Attack(OVERSIZED_FILE, None, 413, TOO_LARGE),
    # Content-Length says 4 KiB, 10 MiB follow: the server reads the 4 KiB it was promised,
    # finds the multipart body cut short, and never takes the rest as body.
    "10x-limit-lying-small-length": Attack(
        OVERSIZED_FILE, 4096, 400, "The multipart body ended before its closing boundary."
    ),
    # No boundary to parse by: refused before a byte of the body is read.
    "10x-limit-without-boundary": Attack(
        OVERSIZED_FILE,
        None,
        400,
        "The multipart/form-data Content-Type has no boundary parameter.",
        content_type="multipart/form-data",
    ),
    # A true Content-Length over the limit: refused before a byte of the body is read.
    "10x-limit-true-length": Attack(OVERSIZED_FILE, len(OVERSIZED_FILE), 413, TOO_LARGE),
}


def assert_spool_empty(server: Server) -> None:
    assert not server.spool.exists() or sorted(server.spool.iterdir()) == []


def baseline_seconds(server: Server) -> float:
    """The time an accepted upload of half the limit takes on this server (best of 3)."""
    body = csv_upload(MAX_UPLOAD_BYTES // 2)
    timings = []
    for _ in range(3):
        accepted = send(server.port, body, content_length=len(body))
        assert accepted.status == 201, accepted.body[:500]
        assert accepted.sent == accepted.total
        timings.append(accepted.elapsed_s)
    return min(timings)


# --- tests ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(ATTACKS))
def test_attack_is_refused_early_without_memory_growth(server: Server, name: str) -> None:
    attack = ATTACKS[name]
    baseline = baseline_seconds(server)
    bound = BASELINE_FACTOR * baseline + SLACK_S

    first = attack.send(server)
    document = first.problem()
    assert (first.status, document["detail"]) == (attack.status, attack.detail)
    assert document["instance"] == "/v1/datasets"
    # The rest of the body is never read: the server closes rather than drain it.
    assert first.headers["connection"] == "close"
    if attack.answered_early:  # the answer came while most of the body was still unsent
        assert first.sent < first.total // 2, (first.sent, first.total)
    assert first.elapsed_s < bound, (first.elapsed_s, baseline)
    assert_spool_empty(server)

    for _ in range(WARMUP_REQUESTS):
        assert attack.send(server).status == attack.status
    before = rss_bytes(server.pid)
    answers = [attack.send(server) for _ in range(MEASURED_REQUESTS)]
    after = rss_bytes(server.pid)

    assert [a.status for a in answers] == [attack.status] * MEASURED_REQUESTS
    if attack.answered_early:
        assert max(a.sent for a in answers) < first.total // 2
    assert max(a.elapsed_s for a in answers) < bound, ([a.elapsed_s for a in answers], baseline)
    assert after - before < MAX_RSS_GROWTH, (before, after)
    assert_spool_empty(server)
    print(
        f"{name}: baseline {baseline * 1000:.1f} ms; refusals "
        f"{min(a.elapsed_s for a in answers) * 1000:.1f}-"
        f"{max(a.elapsed_s for a in answers) * 1000:.1f} ms; sent at most "
        f"{max(a.sent for a in answers)} of {first.total} B; RSS {before / 2**20:.1f} → "
        f"{after / 2**20:.1f} MiB"
    )


def test_part_header_over_parser_bound_is_400(server: Server) -> None:
    """python-multipart ≥ 0.0.27 bounds a part's header lines (GHSA-pp6c-gr5w-3c5g): a 10 MiB
    header line is refused after its first few KiB, not buffered."""
    body = long_part_header(ATTACK_BYTES)
    answer = send(server.port, body, content_length=None)
    document = answer.problem()
    assert answer.status == 400
    assert document["detail"].startswith("Malformed multipart body: ")
    assert answer.headers["connection"] == "close"
    assert answer.sent < answer.total // 2, (answer.sent, answer.total)
    assert_spool_empty(server)


def test_server_still_accepts_uploads_after_the_attacks(server: Server) -> None:
    body = csv_upload(4096)
    answer = send(server.port, body, content_length=len(body))
    assert answer.status == 201, answer.body[:500]
    assert json.loads(answer.body)["n_rows"] == 1024
    assert_spool_empty(server)
