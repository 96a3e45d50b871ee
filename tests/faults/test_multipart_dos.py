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
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.databases import sqlite_url
from tests.support.processes import run_server
from tests.support.rawhttp import Exchange, listening_pid, rss_bytes
from tests.support.rawhttp import send as send_raw

MAX_UPLOAD_BYTES = 1024 * 1024
ATTACK_BYTES = 10 * MAX_UPLOAD_BYTES
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


def send(
    port: int,
    body: bytes,
    *,
    content_length: int | None,
    content_type: str = f"multipart/form-data; boundary={BOUNDARY}",
) -> Exchange:
    """:func:`faults.rawhttp.send` of an upload to ``/v1/datasets``."""
    return send_raw(port, body, content_length=content_length, content_type=content_type)


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


@pytest.mark.alone  # the answers' time is bounded by the baseline measured just before
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
