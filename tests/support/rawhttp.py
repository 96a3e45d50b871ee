"""A raw HTTP/1.1 client for hostile requests, and the server process's memory.

:func:`send` POSTs a body in ``PIECE_BYTES`` pieces over a socket with a small send buffer and
checks for an answer before each piece, so a test sees how much of the body had been sent when
the server answered: a server that refuses early answers long before the end.
"""

from __future__ import annotations

import json
import os
import selectors
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PROBLEM_JSON = "application/problem+json"
PIECE_BYTES = 64 * 1024


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
        if entry.name.isdigit() and _open_files(entry) & inodes:
            return int(entry.name)
    raise AssertionError(f"no process listens on port {port}")


def _open_files(process: Path) -> set[str]:
    """What the descriptors of ``/proc/<pid>`` point to, one by one: a busy server closes
    descriptors between the listing and the reading, and that must not hide the others."""
    try:
        descriptors = list((process / "fd").iterdir())
    except OSError:  # a process that ended meanwhile, or not ours to read
        return set()
    targets = set()
    for descriptor in descriptors:
        try:
            targets.add(os.readlink(descriptor))
        except OSError:  # closed since the listing
            continue
    return targets


def rss_bytes(pid: int) -> int:
    """The resident set size of ``pid`` (``VmRSS``), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"/proc/{pid}/status has no VmRSS")


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
    content_type: str,
    path: str = "/v1/datasets",
) -> Exchange:
    """POST ``body`` to ``path`` in ``PIECE_BYTES`` pieces, chunked when
    ``content_length`` is None, else with that (possibly false) ``Content-Length``; stop
    sending as soon as an answer is readable, then read the answer."""
    framing = (
        "Transfer-Encoding: chunked"
        if content_length is None
        else (f"Content-Length: {content_length}")
    )
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
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
