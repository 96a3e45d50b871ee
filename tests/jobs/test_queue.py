"""The queue's SQL on both databases: claim order, exclusivity under concurrent claimers,
fencing, lease expiry and bounded attempts, idempotent epoch writes.

Time is passed in (``now``), so leases expire without sleeping.
"""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest
from sqlalchemy import Engine, func, select, text, update
from sqlalchemy.orm import Session

from service.core import FittedModel, TrainConfig
from service.db import session_factory
from service.db.tables import Job, JobCheckpoint, JobEpoch, JobKeptCheckpoint, JobModel
from service.jobs import checkpoints, queue
from service.jobs.queue import Claim, LeaseLost
from tests.support.factories import add_metadata_dataset
from tests.support.processes import wait_for

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
LEASE = 30.0


def add_job(session: Session, dataset_id: str, *, created_at: datetime, **overrides: Any) -> str:
    values: dict[str, Any] = {
        "id": str(uuid.uuid4()),
        "tenant": "default",
        "dataset_id": dataset_id,
        "tags": [],
        "config": TrainConfig(epochs=2).to_dict(),
        "status": "queued",
        "epochs": 2,
        "created_at": created_at,
    }
    values.update(overrides)
    session.add(Job(**values))
    session.commit()
    return str(values["id"])


def claim(session: Session, worker: str, now: datetime = T0) -> Claim | None:
    claimed = queue.claim(session, worker_id=worker, lease_seconds=LEASE, now=now)
    session.commit()
    return claimed


def job_row(session: Session, job_id: str) -> dict[str, Any]:
    session.expire_all()
    job = session.get(Job, job_id)
    assert job is not None
    return {c.key: getattr(job, c.key) for c in Job.__table__.columns}


def record(epoch: int, train_loss: float, val_loss: float | None = None) -> dict[str, Any]:
    return {
        "epoch": epoch,
        "train_loss": train_loss,
        "val_loss": val_loss,
        "steps": 3,
        "samples_seen": 9 * epoch,
        "noise_scale": None,
    }


def test_claim_takes_the_oldest_queued_job_first_and_none_when_empty(session: Session) -> None:
    dataset_id = add_metadata_dataset(session)
    newest = add_job(session, dataset_id, created_at=T0 - timedelta(seconds=1))
    oldest = add_job(session, dataset_id, created_at=T0 - timedelta(seconds=3))
    middle = add_job(session, dataset_id, created_at=T0 - timedelta(seconds=2))
    add_job(session, dataset_id, created_at=T0 - timedelta(seconds=9), status="succeeded")

    claims = [claim(session, "w1") for _ in range(3)]

    assert [c.job_id for c in claims if c is not None] == [oldest, middle, newest]
    assert claim(session, "w1") is None
    first = claims[0]
    assert first is not None
    assert (first.attempt, first.worker_id, first.dataset_id) == (1, "w1", dataset_id)
    assert first.config == TrainConfig(epochs=2).to_dict()
    row = job_row(session, oldest)
    assert row["status"] == "running"
    assert row["lease_expires_at"] == T0 + timedelta(seconds=LEASE)
    assert row["started_at"] == T0


@pytest.mark.parametrize("n_threads", [2, 4])
def test_concurrent_claimers_never_take_the_same_job(engine: Engine, n_threads: int) -> None:
    sessions = session_factory(engine)
    with sessions() as session:
        dataset_id = add_metadata_dataset(session)
        job_ids = {
            add_job(session, dataset_id, created_at=T0 - timedelta(seconds=i)) for i in range(24)
        }
    taken: dict[str, list[str]] = {f"w{i}": [] for i in range(n_threads)}
    errors: list[BaseException] = []
    start = threading.Barrier(n_threads)

    def claimer(worker: str) -> None:
        try:
            start.wait()
            with sessions() as session:
                while (claimed := claim(session, worker)) is not None:
                    taken[worker].append(claimed.job_id)
        except BaseException as exc:  # reported below, with the thread's failure
            errors.append(exc)

    threads = [threading.Thread(target=claimer, args=(w,)) for w in taken]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    all_taken = [job_id for ids in taken.values() for job_id in ids]
    assert sorted(all_taken) == sorted(job_ids)  # each exactly once
    with sessions() as session:
        attempts = session.execute(select(Job.attempt, Job.status)).all()
    assert {tuple(a) for a in attempts} == {(1, "running")}


def test_expired_lease_is_reclaimed_and_the_stale_claim_changes_nothing(
    session: Session,
) -> None:
    dataset_id = add_metadata_dataset(session)
    job_id = add_job(session, dataset_id, created_at=T0)
    stale = claim(session, "paused")
    assert stale is not None
    assert claim(session, "other", T0 + timedelta(seconds=LEASE - 1)) is None  # lease holds

    later = T0 + timedelta(seconds=LEASE + 1)
    fresh = claim(session, "other", later)
    assert fresh is not None
    assert (fresh.job_id, fresh.attempt) == (job_id, 2)
    before = job_row(session, job_id)

    stale_writes = [
        lambda: queue.heartbeat(session, stale, step=5, lease_seconds=LEASE, now=later),
        lambda: queue.record_epoch(
            session, stale, record(1, 0.5), np.ones(3, np.float32), b"ckpt", now=later
        ),
        lambda: queue.finish(session, stale, status="succeeded", now=later),
        lambda: queue.release(session, stale, now=later),
    ]
    for write in stale_writes:
        with pytest.raises(LeaseLost, match="paused"):
            write()
        session.rollback()

    assert job_row(session, job_id) == before
    assert session.scalar(select(func.count()).select_from(JobEpoch)) == 0
    assert queue.load_checkpoint(session, job_id) is None


def test_expiry_requeues_until_max_attempts_then_fails_with_the_reason(session: Session) -> None:
    dataset_id = add_metadata_dataset(session)
    job_id = add_job(session, dataset_id, created_at=T0, max_attempts=2)
    now = T0
    for attempt in (1, 2):
        claimed = claim(session, f"w{attempt}", now)
        assert claimed is not None
        assert claimed.attempt == attempt
        now += timedelta(seconds=LEASE + 1)

    assert claim(session, "w3", now) is None
    row = job_row(session, job_id)
    assert row["status"] == "failed"
    assert row["error_code"] == "lease_expired"
    assert row["error_message"] == queue.exhausted_message(2, 2)
    assert "attempt 2, the last of 2 attempts in a row" in row["error_message"]
    assert row["finished_at"] == now
    assert row["lease_expires_at"] is None


def test_an_attempt_that_checkpoints_a_new_epoch_does_not_count_toward_the_limit(
    session: Session,
) -> None:
    dataset_id = add_metadata_dataset(session)
    job_id = add_job(session, dataset_id, created_at=T0, max_attempts=2)
    now = T0
    # Four attempts that each checkpoint an epoch before their lease runs out: none counts.
    for attempt in (1, 2, 3, 4):
        epoch = attempt
        claimed = claim(session, f"w{attempt}", now)
        assert claimed is not None
        assert claimed.attempt == attempt
        assert job_row(session, job_id)["stalled_attempts"] == 1
        queue.record_epoch(
            session, claimed, record(epoch, 1.0), np.ones(3, np.float32), b"c", now=now
        )
        session.commit()
        assert job_row(session, job_id)["stalled_attempts"] == 0
        now += timedelta(seconds=LEASE + 1)
    # Then two in a row with no new epoch: the limit.
    for attempt in (5, 6):
        claimed = claim(session, f"w{attempt}", now)
        assert claimed is not None
        assert claimed.attempt == attempt
        now += timedelta(seconds=LEASE + 1)
    assert claim(session, "w7", now) is None
    row = job_row(session, job_id)
    assert (row["status"], row["attempt"], row["stalled_attempts"]) == ("failed", 6, 2)
    assert row["error_message"] == queue.exhausted_message(6, 2)


def test_a_released_attempt_does_not_count_as_one_without_progress(session: Session) -> None:
    dataset_id = add_metadata_dataset(session)
    job_id = add_job(session, dataset_id, created_at=T0, max_attempts=1)
    for attempt in (1, 2, 3):
        claimed = claim(session, f"w{attempt}")
        assert claimed is not None
        assert claimed.attempt == attempt
        queue.release(session, claimed, now=T0)
        session.commit()
        assert job_row(session, job_id)["stalled_attempts"] == 0


def test_expired_job_with_a_cancel_request_is_cancelled_not_retried(session: Session) -> None:
    dataset_id = add_metadata_dataset(session)
    job_id = add_job(session, dataset_id, created_at=T0)
    assert claim(session, "w1") is not None
    session.execute(update(Job).where(Job.id == job_id).values(cancel_requested=True))
    session.commit()

    assert claim(session, "w2", T0 + timedelta(seconds=LEASE + 1)) is None
    assert job_row(session, job_id)["status"] == "cancelled"


def test_heartbeat_extends_the_lease_stores_the_step_and_reports_cancel(
    session: Session,
) -> None:
    dataset_id = add_metadata_dataset(session)
    job_id = add_job(session, dataset_id, created_at=T0)
    claimed = claim(session, "w1")
    assert claimed is not None
    later = T0 + timedelta(seconds=20)

    assert queue.heartbeat(session, claimed, step=7, lease_seconds=LEASE, now=later) is False
    session.commit()
    row = job_row(session, job_id)
    assert (row["step"], row["heartbeat_at"]) == (7, later)
    assert row["lease_expires_at"] == later + timedelta(seconds=LEASE)
    # The extended lease holds past the first one's end.
    assert claim(session, "w2", T0 + timedelta(seconds=LEASE + 1)) is None

    session.execute(update(Job).where(Job.id == job_id).values(cancel_requested=True))
    session.commit()
    assert queue.heartbeat(session, claimed, step=8, lease_seconds=LEASE, now=later) is True


def test_record_epoch_is_an_idempotent_upsert_and_tracks_best_losses(session: Session) -> None:
    dataset_id = add_metadata_dataset(session)
    job_id = add_job(session, dataset_id, created_at=T0)
    claimed = claim(session, "w1")
    assert claimed is not None
    losses = np.array([0.5, 0.25, 0.125], dtype=np.float32)

    for _ in range(2):  # the same epoch twice: a retried write
        queue.record_epoch(session, claimed, record(1, 0.3, 0.4), losses, b"one", now=T0)
        session.commit()
    queue.record_epoch(session, claimed, record(2, 0.35, float("nan")), losses * 2, b"two", now=T0)
    session.commit()

    epochs = session.execute(select(JobEpoch).order_by(JobEpoch.epoch)).scalars().all()
    assert [e.epoch for e in epochs] == [1, 2]
    assert epochs[0].step_losses == losses.astype("<f4").tobytes()
    assert np.array_equal(np.frombuffer(epochs[1].step_losses, "<f4"), losses * 2)
    assert epochs[1].record["val_loss"] is None  # never NaN in JSON
    row = job_row(session, job_id)
    assert (row["epoch"], row["samples_seen"], row["steps_per_epoch"]) == (2, 18, 3)
    assert (row["latest_train_loss"], row["best_train_loss"]) == (0.35, 0.3)
    assert (row["latest_val_loss"], row["best_val_loss"]) == (None, 0.4)
    checkpoint = session.execute(select(JobCheckpoint)).scalar_one()
    assert (checkpoint.epoch, checkpoint.attempt, checkpoint.data) == (2, 1, b"two")
    assert queue.load_checkpoint(session, job_id) == b"two"


def test_release_requeues_keeping_the_attempt_and_the_next_claim_counts_on(
    session: Session,
) -> None:
    dataset_id = add_metadata_dataset(session)
    job_id = add_job(session, dataset_id, created_at=T0)
    first = claim(session, "w1")
    assert first is not None
    queue.release(session, first, now=T0)
    session.commit()
    row = job_row(session, job_id)
    assert (row["status"], row["attempt"], row["worker_id"], row["lease_expires_at"]) == (
        "queued",
        1,
        None,
        None,
    )
    second = claim(session, "w2")
    assert second is not None
    assert (second.job_id, second.attempt) == (job_id, 2)


def test_finish_stores_the_model_and_refuses_unknown_error_codes(session: Session) -> None:
    dataset_id = add_metadata_dataset(session)
    job_id = add_job(session, dataset_id, created_at=T0)
    claimed = claim(session, "w1")
    assert claimed is not None
    config = TrainConfig()
    model = FittedModel(
        config=config, task="regression", n_features=2, theta=np.array([1.0, 2.0, 3.0], "f4")
    )
    with pytest.raises(ValueError, match="unknown error code 'oops'"):
        queue.finish(session, claimed, status="failed", error_code="oops", now=T0)
    session.rollback()

    done = T0 + timedelta(seconds=5)
    queue.finish(session, claimed, status="succeeded", model=model, now=done)
    session.commit()
    row = job_row(session, job_id)
    assert (row["status"], row["finished_at"], row["lease_expires_at"]) == ("succeeded", done, None)
    stored = session.execute(select(JobModel)).scalar_one()
    assert stored.model == model.to_dict()
    assert np.array_equal(FittedModel.from_npz_bytes(stored.npz).theta, model.theta)
    with pytest.raises(LeaseLost):  # finished: the claim no longer holds
        queue.heartbeat(session, claimed, step=0, lease_seconds=LEASE, now=done)


def test_record_epoch_stores_evaluations_with_non_finite_losses_as_null(session: Session) -> None:
    dataset_id = add_metadata_dataset(session)
    add_job(session, dataset_id, created_at=T0)
    claimed = claim(session, "w1")
    assert claimed is not None
    evaluations = [
        {"step": 0, "samples": 0, "loss": 2.25},
        {"step": 1, "samples": 8, "loss": float("inf")},
    ]
    with_evaluations = record(1, 0.3) | {"evaluations": evaluations}
    queue.record_epoch(session, claimed, with_evaluations, np.ones(3, np.float32), b"c", now=T0)
    session.commit()
    stored = session.execute(select(JobEpoch)).scalar_one().record["evaluations"]
    assert stored == [
        {"step": 0, "samples": 0, "loss": 2.25},
        {"step": 1, "samples": 8, "loss": None},
    ]


#: Whether a session of this database waits on a tenant's checkpoint lock (two-key advisory
#: locks show their first key as ``classid``).
WAITING_ON_A_CHECKPOINT_LOCK = text(
    "SELECT count(*) > 0 FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
    f" AND classid = {checkpoints.CHECKPOINT_LOCK_NAMESPACE}"
    " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
)


def test_two_epochs_ending_at_once_cannot_both_fill_the_last_room_of_the_budget(
    engine: Engine,
) -> None:
    """Two workers record an epoch each of one tenant's jobs, each checkpoint keeping; the
    budget holds one. The second waits for the first's commit (PostgreSQL: the tenant's
    checkpoint lock; SQLite: the write lock), then sees its bytes and keeps nothing."""
    budget, checkpoint = 1_500, b"c" * 1_000
    Session_ = session_factory(engine)
    with Session_() as setup:
        dataset_id = add_metadata_dataset(setup)
        jobs = [add_job(setup, dataset_id, created_at=T0, keep_checkpoints="all") for _ in range(2)]
        claimed = [claim(setup, f"w{i}") for i in range(2)]
    claims = [c for c in claimed if c is not None]
    assert {c.job_id for c in claims} == set(jobs)
    losses = np.zeros(3, dtype=np.float32)

    def keep(session: Session, claimed: Claim) -> None:
        queue.record_epoch(
            session, claimed, record(1, 0.3), losses, checkpoint,
            now=T0, checkpoint_budget_bytes=budget,
        )  # fmt: skip

    with Session_() as first, Session_() as second:
        keep(first, claims[0])  # holds its locks until it commits
        errors: list[BaseException] = []

        def run_second() -> None:
            try:
                keep(second, claims[1])
                second.commit()
            except BaseException as exc:  # reported by the main thread
                errors.append(exc)

        racer = threading.Thread(target=run_second)
        racer.start()
        if engine.dialect.name == "postgresql":  # the second waits on the tenant's lock
            with engine.connect() as probe:
                wait_for(
                    lambda: not racer.is_alive() or probe.scalar(WAITING_ON_A_CHECKPOINT_LOCK),
                    timeout=30,
                    what="the second epoch to wait on the tenant's checkpoint lock",
                )
            assert racer.is_alive()  # without the lock it would be done, over the budget
        else:  # the second waits on SQLite's write lock (its busy timeout is seconds)
            racer.join(timeout=1.0)
        first.commit()
        racer.join(timeout=30)
        assert not racer.is_alive()
        assert errors == []

    with Session_() as check:
        kept = check.execute(
            select(JobKeptCheckpoint.job_id, JobKeptCheckpoint.data.is_not(None))
        ).all()
    assert sorted(has_data for _, has_data in kept) == [False, True]
    assert dict(kept)[claims[0].job_id] is True
