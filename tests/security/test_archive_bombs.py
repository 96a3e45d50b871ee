"""NPZ archive bombs against a real ``batchwise serve``: each is refused with a 4xx
problem+json naming the member, before a byte of its array data is decompressed, and the
server's peak resident memory (``VmHWM``, reset before each attack) stays within a few tens of
MB of where it was.

The server runs with ``BATCHWISE_MAX_DECOMPRESSED_BYTES`` = 64 MiB. Each bomb declares at least
four times that (or more rows than allowed, or a size its entry cannot hold), so a parser that
decompressed before checking would pass the bound many times over.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.support.archives import Member, declared_member, npz, training_arrays
from tests.support.databases import sqlite_url
from tests.support.processes import run_server
from tests.support.rawhttp import PROBLEM_JSON, listening_pid

MAX_DECOMPRESSED_BYTES = 64 * 1024 * 1024
#: Peak memory an attack may add: parsing the header and answering cost well under this,
#: and the smallest bomb would add ~250 MB if it were decompressed.
MAX_PEAK_GROWTH = 32 * 1024 * 1024
FEATURE_NAMES = "feature_names.npy"


@dataclass(frozen=True)
class Server:
    base_url: str
    pid: int


def status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise AssertionError(f"/proc/{pid}/status has no {field}")


def reset_peak(pid: int) -> None:
    """Set ``VmHWM`` back to the current ``VmRSS`` (Linux ≥ 4.0, ``clear_refs`` 5)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("archive-bombs")
    database = root / "batchwise.db"
    shutil.copyfile(sqlite_template, database)
    env = {"BATCHWISE_MAX_DECOMPRESSED_BYTES": str(MAX_DECOMPRESSED_BYTES)}
    # A generous start-up bound: the machine may be loaded (CI, a CPU burner).
    with run_server(
        database_url=sqlite_url(database), data_dir=root / "data", env=env, startup_timeout=120
    ) as url:
        yield Server(url, listening_pid(int(url.rsplit(":", 1)[1])))


def upload(server: Server, archive: bytes) -> httpx.Response:
    with httpx.Client(base_url=server.base_url, timeout=60) as client:
        return client.post("/v1/datasets", files={"file": ("bomb.npz", archive)})


@dataclass(frozen=True)
class Bomb:
    """An archive, the answer it must get, and the start of that answer's ``detail``."""

    members: tuple[Member, ...]
    status: int
    loc: list[str]
    detail: str
    padding_entries: int = 0

    def archive(self) -> bytes:
        return npz(*self.members, padding_entries=self.padding_entries)


def bombs() -> dict[str, Bomb]:
    X, y = training_arrays(100)
    return {
        # The finding: 256 MB of names behind a 250 KB member.
        "feature-names-declared-64m-items": Bomb(
            (X, y, declared_member(FEATURE_NAMES, (64_000_000,), "<U1")),
            422,
            ["file", "feature_names"],
            "feature_names: 'feature_names' must be 2 strings (one per column of 'X'), found "
            "dtype <U1 and shape (64000000,)",
        ),
        # Within the row and cell limits, but 96 MiB once decompressed.
        "x-and-y-past-the-decompressed-cap": Bomb(
            (
                declared_member("X.npy", (4_000_000, 2), "<f8"),
                declared_member("y.npy", (4_000_000,), "<f8"),
            ),
            413,
            ["file", "X"],
            "the NPZ arrays hold 96000256 bytes once decompressed ('X' 64000128, "
            "'y' 32000128), more than 67108864, the limit set by "
            "BATCHWISE_MAX_DECOMPRESSED_BYTES",
        ),
        "x-declared-past-the-row-limit": Bomb(
            (
                declared_member("X.npy", (60_000_000, 1), "|i1"),
                declared_member("y.npy", (60_000_000,), "|i1"),
            ),
            413,
            ["file", "X"],
            "the dataset has more than 50000000 rows",
        ),
        # The header declares 64 MB (within every limit), the zip entry holds 4 KiB after it.
        "header-declares-more-than-the-entry-holds": Bomb(
            (
                declared_member("X.npy", (4_000_000, 2), "<f8", data_bytes=4096),
                declared_member("y.npy", (4_000_000,), "|u1"),
            ),
            422,
            ["file", "X"],
            "X: array 'X' declares shape (4000000, 2) of <f8 (64000000 bytes of data) but its "
            "zip entry holds 4096 bytes after the header",
        ),
        # The header declares 1600 bytes, the zip entry 256 MB of zeros after it.
        "entry-holds-more-than-the-header-declares": Bomb(
            (declared_member("X.npy", (100, 2), "<f8", data_bytes=256_000_000), y),
            422,
            ["file", "X"],
            "X: array 'X' declares shape (100, 2) of <f8 (1600 bytes of data) but its zip "
            "entry holds 256000000 bytes after the header",
        ),
        # Before: NumPy's allocation failed, a 500.
        "header-declares-10-to-the-12-items": Bomb(
            (X, y, declared_member(FEATURE_NAMES, (10**12,), "<U1", data_bytes=16)),
            422,
            ["file", "feature_names"],
            "feature_names: 'feature_names' must be 2 strings (one per column of 'X'), found "
            "dtype <U1 and shape (1000000000000,)",
        ),
        # 400 000 directory entries (19 MB): zipfile would build ~200 MB of objects for them.
        "central-directory-of-400k-entries": Bomb(
            (X, y),
            422,
            ["file"],
            "the NPZ archive's central directory is 19600",
            padding_entries=400_000,
        ),
    }


BOMBS = bombs()


def assert_refused(answer: httpx.Response, bomb: Bomb) -> dict[str, Any]:
    assert answer.headers["content-type"] == PROBLEM_JSON, answer.text[:500]
    document: dict[str, Any] = answer.json()
    assert (answer.status_code, document["status"]) == (bomb.status, bomb.status), document
    assert document["detail"].startswith(bomb.detail), document["detail"]
    assert [error["loc"] for error in document["errors"]] == [bomb.loc]
    return document


def test_a_valid_archive_is_accepted(server: Server) -> None:
    """The baseline the bombs are measured against (and the server's warm-up)."""
    answer = upload(server, npz(*training_arrays(100)))
    assert answer.status_code == 201, answer.text
    assert (answer.json()["n_rows"], answer.json()["n_features"]) == (100, 2)


@pytest.mark.parametrize("name", list(BOMBS))
def test_bomb_is_refused_without_decompressing(server: Server, name: str) -> None:
    bomb = BOMBS[name]
    archive = bomb.archive()
    upload(server, npz(*training_arrays(100)))  # warm: the path of an upload is paged in
    before_kib = status_kib(server.pid, "VmRSS")
    reset_peak(server.pid)
    answer = upload(server, archive)
    peak_kib = status_kib(server.pid, "VmHWM")
    assert_refused(answer, bomb)
    growth = (peak_kib - before_kib) * 1024
    print(
        f"{name}: {len(archive) / 1e6:.2f} MB archive, {answer.status_code}, peak RSS "
        f"{before_kib / 1024:.0f} → {peak_kib / 1024:.0f} MiB"
    )
    assert growth < MAX_PEAK_GROWTH, (before_kib, peak_kib)


def test_server_still_accepts_uploads_after_the_bombs(server: Server) -> None:
    names = np.array(["age", "height"])
    X, y = training_arrays(50)
    from tests.support.archives import array_member

    answer = upload(server, npz(X, y, array_member(FEATURE_NAMES, names)))
    assert answer.status_code == 201, answer.text
    assert answer.json()["feature_names"] == ["age", "height"]
