"""Engines and sessions: URL handling, SQLite pragmas, cascades, aware UTC datetimes."""

from __future__ import annotations

import socket
import threading
import time
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import Engine, delete, func, insert, select, text
from sqlalchemy.exc import IntegrityError, OperationalError, StatementError
from sqlalchemy.orm import Session

from service.db import (
    DatabaseUrlError,
    Dataset,
    DatasetChunk,
    create_engine_for,
    is_sqlite,
    normalize_url,
    session_factory,
)
from service.db.session import POSTGRES_CONNECT_TIMEOUT_S, SQLITE_BUSY_TIMEOUT_MS

from .factories import make_chunks, make_dataset

# --- URLs -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgresql://u:pw@db:5432/bw", "postgresql+psycopg://u:pw@db:5432/bw"),
        ("postgresql+psycopg://u@db/bw", "postgresql+psycopg://u@db/bw"),
        ("sqlite:///data/batchwise.db", "sqlite:///data/batchwise.db"),
        ("sqlite+pysqlite:///data/batchwise.db", "sqlite:///data/batchwise.db"),
        ("sqlite://", "sqlite://"),
    ],
)
def test_normalize_url_pins_the_driver(given: str, expected: str) -> None:
    assert normalize_url(given).render_as_string(hide_password=False) == expected


@pytest.mark.parametrize(
    "url", ["mysql://root:hunter2@db/bw", "postgresql+psycopg2://u:hunter2@db/bw", "oracle://x"]
)
def test_unsupported_backends_are_refused_without_the_password(url: str) -> None:
    with pytest.raises(DatabaseUrlError, match="unsupported database URL") as caught:
        create_engine_for(url)
    assert "hunter2" not in str(caught.value)


@pytest.mark.parametrize("url", ["", "not a url", "://nothing"])
def test_malformed_urls_are_refused(url: str) -> None:
    with pytest.raises(DatabaseUrlError, match="cannot parse database URL"):
        normalize_url(url)


def test_is_sqlite() -> None:
    assert is_sqlite("sqlite:///x.db")
    assert not is_sqlite("postgresql://u@h/d")


# --- SQLite connections ---------------------------------------------------------------------


@pytest.fixture
def sqlite_engine(tmp_path: Path) -> Engine:
    engine = create_engine_for(f"sqlite:///{(tmp_path / 'a' / 'b' / 'batchwise.db').as_posix()}")
    yield engine  # type: ignore[misc]
    engine.dispose()


def test_sqlite_file_and_its_directory_are_created(sqlite_engine: Engine, tmp_path: Path) -> None:
    with sqlite_engine.connect() as connection:
        connection.execute(text("SELECT 1"))
    assert (tmp_path / "a" / "b" / "batchwise.db").is_file()


def test_sqlite_pragmas_are_in_force_on_every_connection(sqlite_engine: Engine) -> None:
    for _ in range(2):  # a second, pooled checkout too
        with sqlite_engine.connect() as connection:

            def pragma(name: str, connection=connection) -> object:
                return connection.exec_driver_sql(f"PRAGMA {name}").scalar_one()

            assert pragma("journal_mode") == "wal"
            assert pragma("foreign_keys") == 1
            assert pragma("busy_timeout") == SQLITE_BUSY_TIMEOUT_MS == 5000
            assert pragma("synchronous") == 1  # NORMAL


def test_sqlite_connections_may_move_between_threads(sqlite_engine: Engine) -> None:
    with sqlite_engine.connect() as connection:
        connection.execute(text("SELECT 1"))  # the pooled connection is born on this thread
    results: list[object] = []

    def use_from_another_thread() -> None:
        with sqlite_engine.connect() as connection:
            results.append(connection.execute(text("SELECT 41 + 1")).scalar_one())

    worker = threading.Thread(target=use_from_another_thread)
    worker.start()
    worker.join()
    assert results == [42]


def test_in_memory_sqlite_needs_no_directory() -> None:
    engine = create_engine_for("sqlite://")
    with engine.connect() as connection:
        assert connection.execute(text("SELECT 7")).scalar_one() == 7
    engine.dispose()


# --- rows on both databases -----------------------------------------------------------------


def count(session: Session, model: type[Dataset] | type[DatasetChunk]) -> int:
    return session.scalar(select(func.count()).select_from(model)) or 0


def test_db_url_gives_an_empty_database(session: Session) -> None:
    assert count(session, Dataset) == 0
    assert count(session, DatasetChunk) == 0


def test_dataset_round_trip(engine: Engine) -> None:
    factory = session_factory(engine)
    dataset = make_dataset(classes=[0, 1], task="binary", stats={"x0": {"mean": 0.25}})
    chunks = make_chunks(dataset.id, [b"\x00\x01\xff", b"", b"tail"])
    with factory.begin() as session:
        session.add(dataset)
        session.add_all(chunks)

    with factory() as session:
        loaded = session.get_one(Dataset, dataset.id)
        assert (loaded.name, loaded.n_rows, loaded.n_features) == ("toy", 3, 2)
        assert loaded.feature_names == ["x0", "x1"]
        assert loaded.classes == [0, 1]
        assert loaded.stats == {"x0": {"mean": 0.25}}
        assert loaded.dropped_rows == 0  # the column default
        data = session.scalars(
            select(DatasetChunk.data)
            .where(DatasetChunk.dataset_id == dataset.id)
            .order_by(DatasetChunk.seq)
        ).all()
        assert b"".join(data) == b"\x00\x01\xfftail"


def test_missing_classes_are_sql_null(session: Session) -> None:
    session.add_all([make_dataset(id="regression"), make_dataset(id="binary", classes=[0, 1])])
    session.commit()
    without_classes = session.scalars(select(Dataset.id).where(Dataset.classes.is_(None))).all()
    assert without_classes == ["regression"]


def test_objects_stay_readable_after_commit(engine: Engine) -> None:
    with session_factory(engine)() as session:
        dataset = make_dataset(name="kept")
        session.add(dataset)
        session.commit()
    # Detached and committed, yet loaded: no refresh query, no DetachedInstanceError.
    assert dataset.name == "kept"


def test_deleting_a_dataset_cascades_to_its_chunks_in_the_database(session: Session) -> None:
    keep, drop = make_dataset(), make_dataset()
    session.add_all([keep, drop])
    session.flush()
    session.add_all(make_chunks(keep.id, [b"a", b"b"]) + make_chunks(drop.id, [b"c", b"d", b"e"]))
    session.commit()

    # A bare SQL DELETE: only the database's ON DELETE CASCADE can remove the chunks.
    session.execute(delete(Dataset).where(Dataset.id == drop.id))
    session.commit()

    remaining = session.execute(select(DatasetChunk.dataset_id, DatasetChunk.seq)).all()
    assert sorted(remaining) == [(keep.id, 0), (keep.id, 1)]


def test_orm_delete_leaves_chunk_removal_to_the_database(session: Session) -> None:
    dataset = make_dataset()
    session.add(dataset)
    session.flush()
    session.add_all(make_chunks(dataset.id, [b"x"] * 4))
    session.commit()

    session.delete(session.get_one(Dataset, dataset.id))
    session.commit()
    assert count(session, DatasetChunk) == 0


def test_chunks_need_their_dataset(session: Session) -> None:
    session.add_all(make_chunks("no-such-dataset", [b"orphan"]))
    with pytest.raises(IntegrityError):
        session.flush()


def test_chunk_sequence_numbers_are_unique_per_dataset(session: Session) -> None:
    dataset = make_dataset()
    session.add(dataset)
    session.flush()
    session.add_all(make_chunks(dataset.id, [b"a"]))
    session.flush()
    with pytest.raises(IntegrityError):
        session.execute(insert(DatasetChunk), [{"dataset_id": dataset.id, "seq": 0, "data": b"b"}])


# --- datetimes ------------------------------------------------------------------------------


def test_datetimes_round_trip_as_aware_utc(db_url: str) -> None:
    # PostgreSQL sessions in a far-off zone: results must still come back in UTC.
    extra = (
        {}
        if db_url.startswith("sqlite")
        else {"connect_args": {"options": "-c TimeZone=Asia/Tokyo"}}
    )
    engine = create_engine_for(db_url, **extra)
    new_york = timezone(timedelta(hours=-5))
    written = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=new_york)
    try:
        factory = session_factory(engine)
        with factory.begin() as session:
            session.add(make_dataset(id="d1", created_at=written))
        with factory() as session:
            read = session.scalars(select(Dataset.created_at)).one()
    finally:
        engine.dispose()
    assert read == written
    assert read.tzinfo is UTC
    assert (read.year, read.month, read.day, read.hour, read.microsecond) == (2026, 1, 2, 8, 678901)


def test_created_at_defaults_to_now_in_utc(session: Session) -> None:
    before = datetime.now(UTC)
    session.add(make_dataset(created_at=None))
    session.commit()
    stored = session.scalars(select(Dataset.created_at)).one()
    assert stored.tzinfo is UTC
    assert before <= stored <= datetime.now(UTC)


def test_naive_datetimes_are_refused(session: Session) -> None:
    session.add(make_dataset(created_at=datetime(2026, 1, 2, 3, 4, 5)))
    with pytest.raises(StatementError, match="naive datetime"):
        session.flush()


def test_newest_first_order_is_time_order_across_offsets(session: Session) -> None:
    # Same instant order whatever offset each was written with (SQLite compares stored text).
    instants = {
        "a": datetime(2026, 3, 1, 12, 0, tzinfo=timezone(timedelta(hours=9))),  # 03:00 UTC
        "b": datetime(2026, 3, 1, 1, 0, tzinfo=timezone(timedelta(hours=-5))),  # 06:00 UTC
        "c": datetime(2026, 3, 1, 4, 0, tzinfo=UTC),  # 04:00 UTC
        "d": datetime(2026, 3, 1, 4, 0, tzinfo=UTC),  # tie with c: broken by id
    }
    session.add_all(make_dataset(id=key, created_at=at) for key, at in instants.items())
    session.commit()
    newest_first = session.scalars(
        select(Dataset.id).order_by(Dataset.created_at.desc(), Dataset.id.desc())
    ).all()
    assert newest_first == ["b", "d", "c", "a"]


@pytest.mark.parametrize(
    ("query", "timeout_s"), [("", POSTGRES_CONNECT_TIMEOUT_S), ("?connect_timeout=1", 1)]
)
def test_a_postgres_server_that_never_answers_fails_the_connect_after_the_timeout(
    query: str, timeout_s: int
) -> None:
    """A listener that accepts TCP and says nothing (a hung server, a black-holed network):
    the connect fails once the timeout has passed instead of waiting for the kernel's."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        engine = create_engine_for(f"postgresql+psycopg://nobody@127.0.0.1:{port}/db{query}")
        started = time.monotonic()
        with pytest.raises(OperationalError, match="timeout"), engine.connect():
            pass
        waited = time.monotonic() - started
        engine.dispose()
    assert timeout_s <= waited < timeout_s + 10
