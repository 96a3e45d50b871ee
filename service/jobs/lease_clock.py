"""The one clock leases are written and compared on: the database's, read once the statement
that writes the lease can no longer wait.

A clock read before a wait (for SQLite's write lock, PostgreSQL's claim lock or a locked row,
a GC pause, a slow connection) would take the wait out of the lease: a claim that waited 0.9 s
for the lock would write a 1 s lease that ends 0.1 s after its commit.

- PostgreSQL: ``clock_timestamp()`` inside the statement; not ``now()``, which is the
  transaction's start. The statement must not wait after computing its values: the claim
  waits for its advisory lock in an earlier statement and picks a row with ``SKIP LOCKED``;
  a renewal locks the job's row first (``SELECT … FOR UPDATE``), because an ``UPDATE``
  computes its new values before it waits for a locked row.
- SQLite: one writer at a time, every connection on the same host; the write lock is taken
  first (``BEGIN IMMEDIATE``), then the host's clock is read. Nothing else can write, so no
  wait comes between the reading and the write.

Both store UTC (``UTCDateTime``): ``timestamptz`` on PostgreSQL, UTC wall-clock text on SQLite.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Interval, func, literal
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from service.db import UTCDateTime, is_sqlite, utcnow
from service.db.session import SQLITE_BUSY_TIMEOUT_MS


@dataclass(frozen=True)
class LeaseClock:
    """ "Now" and "``seconds`` from now" as SQL for the statement being built.

    ``fixed``: a time read in Python (SQLite, once the write lock is held; tests). None:
    PostgreSQL's ``clock_timestamp()``, read when the statement writes the row.
    """

    fixed: datetime | None

    def now(self) -> ColumnElement[datetime]:
        if self.fixed is not None:
            return literal(self.fixed, UTCDateTime)
        return func.clock_timestamp(type_=UTCDateTime)

    def after(self, seconds: float) -> ColumnElement[Any]:
        span = timedelta(seconds=seconds)
        if self.fixed is not None:
            return literal(self.fixed + span, UTCDateTime)
        return func.clock_timestamp(type_=UTCDateTime) + literal(span, Interval)


#: How often a lease write asks again for SQLite's write lock while another connection holds it.
LOCK_POLL_S = 0.002


def take_sqlite_write_lock(session: Session) -> None:
    """SQLite: hold the database's write lock from here to the commit (``BEGIN IMMEDIATE``),
    unless this transaction already holds it; :class:`sqlalchemy.exc.OperationalError`
    ("database is locked") after the busy timeout.

    It asks every :data:`LOCK_POLL_S` rather than through SQLite's busy handler, whose waits
    grow to 100 ms: a heartbeat that had waited a while would ask ten times a second while
    each new writer asks within a millisecond, and could be starved past its lease.
    """
    connection = session.connection()
    raw = connection.connection.dbapi_connection
    if getattr(raw, "in_transaction", False):
        return
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    connection.exec_driver_sql("PRAGMA busy_timeout = 0")
    try:
        while True:
            try:
                connection.exec_driver_sql("BEGIN IMMEDIATE")
                return
            except OperationalError as exc:
                busy = isinstance(exc.orig, sqlite3.OperationalError) and (
                    getattr(exc.orig, "sqlite_errorcode", 0) & 0xFF
                ) in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
                if not busy or time.monotonic() >= deadline:
                    raise
            time.sleep(LOCK_POLL_S)
    finally:
        connection.exec_driver_sql(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")


def lease_clock(session: Session, now: datetime | None = None) -> LeaseClock:
    """The lease clock for the next statements of ``session``'s transaction; on SQLite the
    write lock is held first (see the module docstring). ``now``: a fixed time (tests)."""
    if is_sqlite(session.get_bind().engine.url):
        take_sqlite_write_lock(session)
        return LeaseClock(utcnow() if now is None else now)
    return LeaseClock(now)


__all__ = ["LOCK_POLL_S", "LeaseClock", "lease_clock", "take_sqlite_write_lock"]
