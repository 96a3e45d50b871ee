"""A lease starts when its write can no longer wait, on the database's clock: a claim or a
heartbeat that waited most of a lease for a lock still writes the whole lease (both databases).

Another connection holds what the write needs — SQLite's write lock, PostgreSQL's claim lock or
the job's row — for most of a lease, then lets go. The clock is real (no ``now`` passed).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from service.core import TrainConfig
from service.db import is_sqlite, session_factory, utcnow
from service.db.tables import Job
from service.jobs import queue
from service.jobs.queue import CLAIM_LOCK_KEYS, Claim
from tests.support.factories import add_metadata_dataset

LEASE = 2.0
HOLD = 1.6  # most of a lease
#: A claim written with the clock read before the wait would expire HOLD earlier than this.
RIVAL_AFTER = 0.8


def add_queued_job(session: Session) -> str:
    job = Job(
        id=str(uuid.uuid4()),
        tenant="default",
        dataset_id=add_metadata_dataset(session),
        tags=[],
        config=TrainConfig(epochs=2).to_dict(),
        status="queued",
        epochs=2,
        created_at=utcnow(),
    )
    session.add(job)
    session.commit()
    return job.id


@contextmanager
def held_for(
    engine: Engine, seconds: float, *, job_id: str | None = None
) -> Iterator[list[datetime]]:
    """Hold, from another connection, what a claim (or, with ``job_id``, a heartbeat of that
    job) must wait for, ``seconds`` from entering; yields a list that gets the release time."""
    held, released_at = threading.Event(), []

    def hold() -> None:
        with engine.connect() as connection:
            if is_sqlite(engine.url):
                connection.exec_driver_sql("BEGIN IMMEDIATE")
            elif job_id is None:
                connection.execute(select(func.pg_advisory_xact_lock(*CLAIM_LOCK_KEYS)))
            else:
                connection.execute(select(Job.id).where(Job.id == job_id).with_for_update())
            held.set()
            time.sleep(seconds)
            released_at.append(utcnow())
            connection.rollback()

    holder = threading.Thread(target=hold)
    holder.start()
    assert held.wait(10)
    try:
        yield released_at
    finally:
        holder.join()


def lease_of(engine: Engine, job_id: str) -> tuple[datetime, datetime]:
    with session_factory(engine)() as session:
        row = session.execute(
            select(Job.heartbeat_at, Job.lease_expires_at).where(Job.id == job_id)
        ).one()
    assert row.heartbeat_at is not None
    assert row.lease_expires_at is not None
    return row.heartbeat_at, row.lease_expires_at


def claim(engine: Engine, worker: str) -> Claim | None:
    with session_factory(engine)() as session:
        claimed = queue.claim(
            session, worker_id=worker, lease_seconds=LEASE, max_running_per_tenant=4
        )
        session.commit()
    return claimed


def timed(action: Callable[[], Any]) -> tuple[Any, datetime, datetime]:
    """``action()``, the time before it and the time after its commit."""
    before = utcnow()
    result = action()
    return result, before, utcnow()


def assert_whole_lease_from(engine: Engine, job_id: str, released_at: datetime) -> None:
    started, expires = lease_of(engine, job_id)
    assert started >= released_at  # the clock was read after the wait, not before it
    assert abs((expires - started) - timedelta(seconds=LEASE)) < timedelta(milliseconds=50)


def test_a_claim_that_waited_for_the_lock_still_gets_its_whole_lease(engine: Engine) -> None:
    with session_factory(engine)() as session:
        job_id = add_queued_job(session)

    with held_for(engine, HOLD) as released:
        claimed, asked_at, committed_at = timed(lambda: claim(engine, "w1"))
    assert claimed is not None
    assert claimed.job_id == job_id
    assert released[0] - asked_at >= timedelta(seconds=HOLD / 2)  # it did wait
    assert_whole_lease_from(engine, job_id, released[0])

    # The lease holds well past the point where a lease read before the wait would have ended.
    time.sleep(max(0.0, RIVAL_AFTER - (utcnow() - committed_at).total_seconds()))
    assert claim(engine, "rival") is None
    _, expires = lease_of(engine, job_id)
    time.sleep(max(0.0, (expires - utcnow()).total_seconds()) + 0.05)
    taken = claim(engine, "rival")  # once it has run out, another worker may take the job
    assert taken is not None
    assert (taken.job_id, taken.attempt) == (job_id, 2)


def test_a_heartbeat_that_waited_for_the_lock_still_extends_by_a_whole_lease(
    engine: Engine,
) -> None:
    with session_factory(engine)() as session:
        job_id = add_queued_job(session)
    claimed = claim(engine, "w1")
    assert claimed is not None

    def beat() -> bool:
        with session_factory(engine)() as session:
            cancel = queue.heartbeat(session, claimed, step=3, lease_seconds=LEASE)
            session.commit()
        return cancel

    with held_for(engine, HOLD, job_id=job_id) as released:
        cancel, asked_at, _ = timed(beat)
    assert cancel is False
    assert released[0] - asked_at >= timedelta(seconds=HOLD / 2)
    assert_whole_lease_from(engine, job_id, released[0])


@pytest.mark.parametrize("operation", ["finish", "release"])
def test_finish_and_release_stamp_the_database_clock(engine: Engine, operation: str) -> None:
    with session_factory(engine)() as session:
        job_id = add_queued_job(session)
    claimed = claim(engine, "w1")
    assert claimed is not None
    before = utcnow()
    with session_factory(engine)() as session:
        if operation == "finish":
            queue.finish(session, claimed, status="succeeded")
        else:
            queue.release(session, claimed)
        session.commit()
        row = session.get(Job, job_id)
        assert row is not None
        stamp = row.finished_at if operation == "finish" else row.heartbeat_at
    assert stamp is not None
    # One host: the database's clock and ours agree to well under a second.
    assert before - timedelta(seconds=1) <= stamp <= utcnow() + timedelta(seconds=1)
