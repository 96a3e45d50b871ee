"""A full disk during an upload: a clean 507 problem+json, and nothing half-written.

The disk is real: a small tmpfs mounted for the test (root only) is the data dir of a real
``batchwise serve`` process on SQLite, with the database file in the same tmpfs. A ballast
file sets how much space is left, so the upload runs out of space at a chosen stage:

- ``spool``: the upload is larger than the free space, and spooling its body fails;
- ``canonical``: the spooled CSV fits, writing its canonical float64 file does not;
- ``database``: both files fit, and SQLite fills the disk while it writes the chunks (the
  canonical file is > 2 MB, SQLite's page cache, so pages spill to the WAL mid-insert).

After each: the server still answers, no dataset (row or chunk) and no spool file is left, and
once space is freed a small upload succeeds. PostgreSQL's disk_full (SQLSTATE 53100) is met
the same way, for real: the chunks table of a private server's database moves to a tablespace
on a tmpfs.

Mounting needs root (CAP_SYS_ADMIN): elsewhere these tests skip, or fail when ``CI`` is set.
"""

from __future__ import annotations

import errno
import os
import pwd
import random
import shutil
import sqlite3
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text
from sqlalchemy.exc import DBAPIError

from service.api import create_app
from service.api.problems import STORAGE_FULL_DETAIL, is_storage_full
from service.config import Settings
from tests.support.databases import in_ci, sqlite_url
from tests.support.processes import run_server

PROBLEM_JSON = "application/problem+json"
TMPFS_SIZE = "16m"
#: Rows of "1,2\n": 4 bytes of CSV, 16 bytes of canonical float64 (feature and target).
ROWS = 300_000
CSV = b"a,b\n" + b"1,2\n" * ROWS
CANONICAL_BYTES = 128 + 16 * ROWS  # the NPY header, then (ROWS, 2) float64
SMALL_CSV = b"a,b\n1,2\n3,4\n5,6\n"
#: The space a stage is given beyond what the earlier stages hold: the spill of SQLite's
#: 2 MB page cache while it inserts 4.8 MB of chunks is well past it.
MARGIN = 512 * 1024


# --- a real, small disk ---------------------------------------------------------------------


def _unavailable(reason: str) -> None:
    if in_ci():
        pytest.fail(f"CI is set but {reason}: the disk-full tests must run", pytrace=False)
    pytest.skip(reason)


@contextmanager
def tmpfs(size: str, *, owner: str | None = None) -> Iterator[Path]:
    """A tmpfs of ``size`` mounted on a new directory (owned by the OS user ``owner`` if
    given); unmounted and removed afterwards, whatever happened."""
    if os.geteuid() != 0:
        _unavailable("mounting a tmpfs needs root")
    options = f"size={size},mode=0755"
    if owner is not None:
        user = pwd.getpwnam(owner)
        options = f"size={size},mode=0700,uid={user.pw_uid},gid={user.pw_gid}"
    mount_point = Path(tempfile.mkdtemp(prefix="batchwise-full-"))
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        mount_point.rmdir()
        _unavailable(f"mount -t tmpfs failed: {mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        unmounted = subprocess.run(["umount", str(mount_point)], capture_output=True, text=True)
        if unmounted.returncode != 0:  # still busy: detach now, freed when the last file closes
            subprocess.run(["umount", "--lazy", str(mount_point)], check=True)
        mount_point.rmdir()


def free_bytes(path: Path) -> int:
    stats = os.statvfs(path)
    return stats.f_bavail * stats.f_frsize


def leave_free(mount_point: Path, size: int) -> None:
    """Fill the disk with a ballast file until ``size`` bytes (rounded down to pages) are left."""
    ballast = mount_point / "ballast"
    ballast.unlink(missing_ok=True)
    fill = free_bytes(mount_point) - size
    assert fill > 0, f"only {free_bytes(mount_point)} B are free, {size} B asked"
    with ballast.open("wb") as file:
        for start in range(0, fill, 1 << 20):
            file.write(b"\0" * min(1 << 20, fill - start))
    assert abs(free_bytes(mount_point) - size) < 8192


def free_space(mount_point: Path) -> None:
    (mount_point / "ballast").unlink()


# --- what the client and the disk see -------------------------------------------------------


def upload(client: httpx.Client | TestClient, content: bytes, name: str = "data.csv") -> Any:
    """POST ``content`` as the ``file`` part of a multipart upload."""
    return client.post("/v1/datasets", files={"file": (name, content, "text/csv")})


def assert_storage_full(response: Any) -> None:
    assert response.status_code == 507, response.text
    assert response.headers["content-type"] == PROBLEM_JSON
    assert response.json() == {
        "type": "/problems/insufficient-storage",
        "title": "Insufficient storage",
        "status": 507,
        "detail": STORAGE_FULL_DETAIL,
        "instance": "/v1/datasets",
    }
    assert "storage is full" in STORAGE_FULL_DETAIL
    assert "nothing of this request was stored" in STORAGE_FULL_DETAIL


def spool_files(data_dir: Path) -> list[str]:
    spool = data_dir / "spool"
    return sorted(p.name for p in spool.iterdir()) if spool.exists() else []


def sqlite_counts(database: Path) -> tuple[int, int]:
    """(rows in datasets, rows in dataset_chunks), read beside the server (WAL allows it)."""
    connection = sqlite3.connect(database)
    try:
        datasets = connection.execute("SELECT count(*) FROM datasets").fetchone()[0]
        chunks = connection.execute("SELECT count(*) FROM dataset_chunks").fetchone()[0]
    finally:
        connection.close()
    return int(datasets), int(chunks)


def assert_nothing_stored(client: httpx.Client, data_dir: Path) -> None:
    assert client.get("/healthz").status_code == 200
    listed = client.get("/v1/datasets")
    assert listed.status_code == 200
    assert listed.json()["items"] == []
    assert spool_files(data_dir) == []


# --- SQLite on a full disk ------------------------------------------------------------------


@dataclass(frozen=True)
class Stage:
    """Where the upload runs out of space: ``free`` is the space left before it starts."""

    name: str
    free: int
    fits_small_upload: bool  # whether a small upload fits again before any space is freed


STAGES = [
    Stage("spool", len(CSV) // 2, fits_small_upload=True),
    Stage("canonical", len(CSV) + CANONICAL_BYTES // 2, fits_small_upload=True),
    Stage("database", len(CSV) + CANONICAL_BYTES + MARGIN, fits_small_upload=False),
]


@pytest.fixture
def full_disk_server(sqlite_template: Path) -> Iterator[tuple[httpx.Client, Path]]:
    """A real server whose data dir, spool and SQLite database are on a 16 MiB tmpfs."""
    with tmpfs(TMPFS_SIZE) as mount_point:
        database = mount_point / "batchwise.db"
        shutil.copyfile(sqlite_template, database)
        with (
            run_server(database_url=sqlite_url(database), data_dir=mount_point) as base_url,
            httpx.Client(base_url=base_url, timeout=60) as client,
        ):
            # The first query opens the database: its WAL and shared-memory files exist from
            # here on, before the free space is measured.
            assert client.get("/v1/datasets").json()["items"] == []
            yield client, mount_point


@pytest.mark.parametrize("stage", STAGES, ids=[s.name for s in STAGES])
def test_upload_on_a_full_disk_is_507_and_stores_nothing(
    full_disk_server: tuple[httpx.Client, Path], stage: Stage
) -> None:
    client, data_dir = full_disk_server
    database = data_dir / "batchwise.db"
    wal = data_dir / "batchwise.db-wal"
    leave_free(data_dir, stage.free)
    free_before, wal_before = free_bytes(data_dir), wal.stat().st_size

    response = upload(client, CSV)

    assert_storage_full(response)
    assert response.headers["connection"] == "close"
    assert_nothing_stored(client, data_dir)
    assert sqlite_counts(database) == (0, 0)
    if stage.name == "database":
        # SQLite wrote (and failed) itself: its WAL grew by uncommitted frames.
        assert wal.stat().st_size > wal_before
    else:
        # The failure came before the database: every byte written is given back.
        assert free_bytes(data_dir) == free_before
        assert wal.stat().st_size == wal_before

    if stage.fits_small_upload:
        created = upload(client, SMALL_CSV, "small.csv")
        assert created.status_code == 201, created.text
        assert created.json()["n_rows"] == 3
        client.delete(created.headers["location"]).raise_for_status()
    free_space(data_dir)
    created = upload(client, SMALL_CSV, "small.csv")
    assert created.status_code == 201, created.text
    assert [d["name"] for d in client.get("/v1/datasets").json()["items"]] == ["small.csv"]
    assert sqlite_counts(database) == (1, 1)
    assert spool_files(data_dir) == []


# --- PostgreSQL's disk_full -----------------------------------------------------------------


@pytest.fixture
def chunks_on_small_tablespace(
    private_postgres: Any, private_postgres_url: str
) -> Iterator[tuple[str, Path]]:
    """``private_postgres_url`` (a migrated database on this directory's private server, see
    conftest.py) with its ``dataset_chunks`` table, TOAST table included, on a tablespace on an
    8 MiB tmpfs. Only the chunks: PostgreSQL's WAL stays on a real disk, since a WAL write that
    fails for space stops the whole server rather than one statement."""
    name = f"full_{uuid.uuid4().hex[:8]}"
    server = private_postgres
    admin = create_engine(server.url(), isolation_level="AUTOCOMMIT")
    database = create_engine(private_postgres_url, isolation_level="AUTOCOMMIT")
    try:
        with tmpfs("8m", owner="postgres") as mount_point:
            with admin.connect() as connection:
                connection.exec_driver_sql(f"CREATE TABLESPACE {name} LOCATION '{mount_point}'")
            try:
                with database.connect() as connection:
                    connection.exec_driver_sql(f"ALTER TABLE dataset_chunks SET TABLESPACE {name}")
                yield private_postgres_url, mount_point
            finally:
                with database.connect() as connection:
                    connection.execute(
                        text(
                            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                        )
                    )
                    connection.exec_driver_sql(
                        "ALTER TABLE dataset_chunks SET TABLESPACE pg_default"
                    )
                with admin.connect() as connection:
                    connection.exec_driver_sql(f"DROP TABLESPACE {name}")
    finally:
        database.dispose()
        admin.dispose()


def random_csv(rows: int, seed: int = 0) -> bytes:
    """A CSV of uniform random numbers, whose canonical bytes PostgreSQL cannot compress
    (its TOAST compresses the repetitive ``CSV`` above to almost nothing)."""
    rng = random.Random(seed)
    lines = [f"{rng.random()!r},{rng.random()!r}" for _ in range(rows)]
    return ("a,b\n" + "\n".join(lines) + "\n").encode()


@pytest.mark.postgres
def test_postgres_disk_full_is_507_and_stores_nothing(
    chunks_on_small_tablespace: tuple[str, Path], tmp_path: Path
) -> None:
    url, mount_point = chunks_on_small_tablespace
    leave_free(mount_point, 1024 * 1024)  # 200,000 random rows: 3.2 MB of chunks
    data_dir = tmp_path / "data"
    with (
        run_server(database_url=url, data_dir=data_dir) as base_url,
        httpx.Client(base_url=base_url, timeout=60) as client,
    ):
        assert_storage_full(upload(client, random_csv(200_000)))
        assert_nothing_stored(client, data_dir)
        engine = create_engine(url)
        try:
            with engine.connect() as connection:
                counts = connection.execute(
                    text(
                        "SELECT (SELECT count(*) FROM datasets),"
                        " (SELECT count(*) FROM dataset_chunks)"
                    )
                ).one()
        finally:
            engine.dispose()
        assert tuple(counts) == (0, 0)

        free_space(mount_point)
        created = upload(client, SMALL_CSV, "small.csv")
        assert created.status_code == 201, created.text
        assert [d["name"] for d in client.get("/v1/datasets").json()["items"]] == ["small.csv"]
        assert spool_files(data_dir) == []


# --- what counts as a full disk, and what does not ------------------------------------------


def _sqlite_error(tmp_path: Path, *setup: str, failing: str) -> DBAPIError:
    """The error SQLAlchemy raises for ``failing``, run after ``setup`` on a new database."""
    engine = create_engine(sqlite_url(tmp_path / f"{uuid.uuid4().hex}.db"))
    try:
        with engine.begin() as connection:
            for statement in setup:
                connection.exec_driver_sql(statement)
            with pytest.raises(DBAPIError) as raised:
                connection.exec_driver_sql(failing)
    finally:
        engine.dispose()
    return raised.value


def test_storage_full_is_enospc_edquot_sqlite_full_only(tmp_path: Path) -> None:
    # A real SQLITE_FULL without a full disk: the database may not grow past 8 pages.
    full = _sqlite_error(
        tmp_path,
        "PRAGMA max_page_count = 8",
        "CREATE TABLE blobs (data BLOB)",
        failing="INSERT INTO blobs VALUES (zeroblob(1000000))",
    )
    assert str(full.orig) == "database or disk is full"
    assert is_storage_full(full)
    assert not is_storage_full(_sqlite_error(tmp_path, failing="SELECT * FROM no_such_table"))
    assert is_storage_full(OSError(errno.ENOSPC, "No space left on device"))
    assert is_storage_full(OSError(errno.EDQUOT, "Disk quota exceeded"))
    assert not is_storage_full(OSError(errno.EIO, "Input/output error"))
    assert not is_storage_full(FileExistsError(errno.EEXIST, "File exists"))


def test_other_os_errors_while_uploading_stay_500(settings: Settings) -> None:
    """An ``OSError`` that is not a full disk (here: the spool path is a file) is the server's
    fault, answered as the bare 500, not as 507."""
    (settings.data_dir / "spool").write_bytes(b"not a directory")
    with TestClient(create_app(settings)) as client:
        response = upload(client, SMALL_CSV)
    assert response.status_code == 500, response.text
    assert response.headers["content-type"] == PROBLEM_JSON
    assert response.json()["type"] == "/problems/internal-error"
