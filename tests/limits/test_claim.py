"""The claim's per-tenant running limit on both databases: a tenant at its limit keeps its
jobs queued while other tenants' jobs are claimed, expired leases do not count, and racing
claimers never push a tenant past its limit.

Time is passed in (``now``), so leases expire without sleeping.
"""

from __future__ import annotations

import threading
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from service.db import session_factory
from service.db.tables import Job
from service.jobs import queue
from service.jobs.queue import Claim
from tests.support.factories import add_queued_jobs
from tests.support.tenants import ALPHA, BETA

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
LEASE = 30.0
GAMMA = "gamma"


def claim(session: Session, worker: str, limit: int, now: datetime = T0) -> Claim | None:
    claimed = queue.claim(
        session, worker_id=worker, lease_seconds=LEASE, now=now, max_running_per_tenant=limit
    )
    session.commit()
    return claimed


def finish(session: Session, claimed: Claim, now: datetime = T0) -> None:
    queue.finish(session, claimed, status="succeeded", now=now)
    session.commit()


def running_per_tenant(session: Session, now: datetime = T0) -> dict[str, int]:
    rows = session.execute(
        select(Job.tenant, func.count())
        .where(Job.status == "running", Job.lease_expires_at >= now)
        .group_by(Job.tenant)
    )
    return {tenant: int(count) for tenant, count in rows}


def test_a_tenant_at_its_limit_waits_while_other_tenants_are_claimed(session: Session) -> None:
    alpha = add_queued_jobs(session, ALPHA, 4, first_at=T0 - timedelta(minutes=10))
    beta = add_queued_jobs(session, BETA, 2, first_at=T0 - timedelta(minutes=5))

    taken = [claim(session, f"w{i}", limit=2) for i in range(5)]

    # Oldest first, skipping alpha once it has 2 running: alpha's 3rd and 4th stay queued.
    assert [c.job_id if c else None for c in taken] == [alpha[0], alpha[1], beta[0], beta[1], None]
    assert running_per_tenant(session) == {ALPHA: 2, BETA: 2}
    first = taken[0]
    assert first is not None
    finish(session, first)
    again = claim(session, "w5", limit=2)
    assert again is not None
    assert again.job_id == alpha[2]  # a finished job frees its slot
    assert claim(session, "w6", limit=2) is None


def test_without_a_limit_the_claim_takes_the_oldest_job_whatever_its_tenant(
    session: Session,
) -> None:
    alpha = add_queued_jobs(session, ALPHA, 3, first_at=T0 - timedelta(minutes=10))
    add_queued_jobs(session, BETA, 1, first_at=T0 - timedelta(minutes=5))
    taken = []
    for _ in range(3):
        taken.append(queue.claim(session, worker_id="w", lease_seconds=LEASE, now=T0))
        session.commit()
    assert [c.job_id for c in taken if c] == alpha


def test_an_expired_lease_does_not_count_as_running(session: Session) -> None:
    alpha = add_queued_jobs(session, ALPHA, 2, first_at=T0 - timedelta(minutes=10))
    stale = claim(session, "paused", limit=1)
    assert stale is not None
    assert stale.job_id == alpha[0]
    assert claim(session, "other", limit=1) is None  # alpha is at its limit while the lease holds

    later = T0 + timedelta(seconds=LEASE + 1)
    # The lease ran out: alpha counts 0 running, and its oldest claimable job is the expired one.
    resumed = claim(session, "other", limit=1, now=later)
    assert resumed is not None
    assert (resumed.job_id, resumed.attempt) == (alpha[0], 2)
    assert claim(session, "third", limit=1, now=later) is None
    assert running_per_tenant(session, later) == {ALPHA: 1}


def test_racing_claimers_never_run_more_than_the_limit_per_tenant(engine: Engine) -> None:
    """Claimers that take, hold and finish jobs concurrently: after every claim the claiming
    thread counts its tenant's running jobs, which must never be above the limit; every job is
    run exactly once, and each tenant reaches its limit."""
    limit, n_threads = 2, 4
    sessions = session_factory(engine)
    with sessions() as session:
        job_ids = {
            tenant: add_queued_jobs(session, tenant, 8, first_at=T0 - timedelta(minutes=m))
            for tenant, m in ((ALPHA, 30), (BETA, 20), (GAMMA, 10))
        }
    tenant_of = {job_id: tenant for tenant, ids in job_ids.items() for job_id in ids}
    peaks: Counter[str] = Counter()
    runs: list[str] = []
    errors: list[BaseException] = []
    start = threading.Barrier(n_threads)
    lock = threading.Lock()

    def claimer(worker: str) -> None:
        try:
            start.wait()
            with sessions() as session:
                held: list[Claim] = []
                while True:
                    claimed = claim(session, worker, limit)
                    if claimed is not None:
                        tenant = tenant_of[claimed.job_id]
                        running = running_per_tenant(session).get(tenant, 0)
                        session.commit()
                        with lock:
                            runs.append(claimed.job_id)
                            peaks[tenant] = max(peaks[tenant], running)
                        held.append(claimed)
                    # Hold up to two jobs, so claims race while the tenants are at their limit.
                    if held and (claimed is None or len(held) == 2):
                        finish(session, held.pop(0))
                    elif claimed is None:
                        break
        except BaseException as exc:  # reported below, with the thread's failure
            errors.append(exc)

    threads = [threading.Thread(target=claimer, args=(f"w{i}",)) for i in range(n_threads)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert sorted(runs) == sorted(tenant_of)  # every job claimed exactly once
    assert dict(peaks) == {ALPHA: limit, BETA: limit, GAMMA: limit}
    with sessions() as session:
        statuses: dict[str, Any] = dict(
            session.execute(select(Job.status, func.count()).group_by(Job.status)).all()
        )
    assert statuses == {"succeeded": 24}
