"""A tenant's own limits (``tenant_limits``, set by ``batchwise tenants set-limits``) in place
of the configured defaults, on both databases: the claim runs as many of its jobs as its own
running limit allows (exactly, under racing claimers), submits and uploads are held to its own
queue, runtime, steps and storage limits, and clearing an override brings the default back.
"""

from __future__ import annotations

import threading
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from service import tenants
from service.config import Settings
from service.db import session_factory
from service.db.tables import Job, TenantLimits
from service.jobs import queue
from service.jobs.queue import Claim
from tests.support.factories import add_queued_jobs
from tests.support.problems import assert_problem
from tests.support.tenants import ALPHA, BETA, api, inline, jobs_by_status

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
LEASE = 30.0
DEFAULT_RUNNING = 1


def set_limits(engine: Engine, tenant: str, **changes: Any) -> None:
    with session_factory(engine)() as session:
        tenants.set_limits(session, tenant, changes)
        session.commit()


def claim(session: Session, worker: str) -> Claim | None:
    claimed = queue.claim(
        session,
        worker_id=worker,
        lease_seconds=LEASE,
        now=T0,
        max_running_per_tenant=DEFAULT_RUNNING,
    )
    session.commit()
    return claimed


def running(session: Session) -> dict[str, int]:
    rows = session.execute(
        select(Job.tenant, func.count()).where(Job.status == "running").group_by(Job.tenant)
    )
    return {tenant: int(count) for tenant, count in rows}


def test_a_tenants_own_running_limit_replaces_the_default_in_the_claim(
    engine: Engine, session: Session
) -> None:
    alpha = add_queued_jobs(session, ALPHA, 5, first_at=T0 - timedelta(minutes=10))
    beta = add_queued_jobs(session, BETA, 3, first_at=T0 - timedelta(minutes=5))
    set_limits(engine, ALPHA, max_running_jobs=3)

    taken = [claim(session, f"w{i}") for i in range(5)]

    # alpha runs 3 (its own limit), beta 1 (the default); then nothing is claimable.
    assert [c.job_id if c else None for c in taken] == [*alpha[:3], beta[0], None]
    assert running(session) == {ALPHA: 3, BETA: 1}

    # Cleared, alpha is back at the default: finishing one of its three frees no slot.
    set_limits(engine, ALPHA, max_running_jobs=None)
    assert session.get(TenantLimits, ALPHA) is None  # no override left: no row
    first = taken[0]
    assert first is not None
    queue.finish(session, first, status="succeeded", now=T0)
    session.commit()
    assert claim(session, "w5") is None
    assert running(session) == {ALPHA: 2, BETA: 1}

    # Raised above the default, beta gets a second job at once.
    set_limits(engine, BETA, max_running_jobs=2)
    again = claim(session, "w6")
    assert again is not None
    assert again.job_id == beta[1]


def test_racing_claimers_hold_each_tenant_to_its_own_running_limit(engine: Engine) -> None:
    """As the default-limit race test: claimers take, hold and finish jobs concurrently; after
    every claim the claiming thread counts its tenant's running jobs, which must never pass
    that tenant's own limit, and each tenant reaches it."""
    own = {ALPHA: 3, BETA: 1}
    n_threads = 4
    sessions = session_factory(engine)
    with sessions() as session:
        job_ids = {
            tenant: add_queued_jobs(session, tenant, 9, first_at=T0 - timedelta(minutes=m))
            for tenant, m in ((ALPHA, 30), (BETA, 20))
        }
    for tenant, limit in own.items():
        set_limits(engine, tenant, max_running_jobs=limit)
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
                    claimed = claim(session, worker)
                    if claimed is not None:
                        tenant = tenant_of[claimed.job_id]
                        count = running(session).get(tenant, 0)
                        session.commit()
                        with lock:
                            runs.append(claimed.job_id)
                            peaks[tenant] = max(peaks[tenant], count)
                        held.append(claimed)
                    if held and (claimed is None or len(held) == 2):
                        queue.finish(session, held.pop(0), status="succeeded", now=T0)
                        session.commit()
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
    assert dict(peaks) == own


def test_a_tenants_own_queue_runtime_and_steps_limits_hold_at_submit(
    settings: Settings, engine: Engine
) -> None:
    with api(settings, engine, tenant_max_queued_jobs=2, max_job_runtime_s=60.0) as client:
        alpha_data, beta_data = client.dataset(ALPHA), client.dataset(BETA)
        set_limits(engine, ALPHA, max_queued_jobs=4, max_job_runtime_s=10.0, max_steps_per_job=50)

        # alpha: 4 queued, each given its own runtime limit; 10.5 s is above it.
        alpha_jobs = [client.job(ALPHA, alpha_data, batch_size=10, epochs=2) for _ in range(4)]
        assert {job["max_runtime_s"] for job in alpha_jobs} == {10.0}
        full = client.post(
            ALPHA, "/v1/jobs", json={"dataset_id": alpha_data, "batch_size": 10, "epochs": 2}
        )
        assert_problem(full, 429, "/problems/too-many-queued-jobs")
        # 100 rows at batch size 10: 10 steps an epoch; 6 epochs are 60 steps, over 50.
        long = client.post(
            ALPHA, "/v1/jobs", json={"dataset_id": alpha_data, "batch_size": 10, "epochs": 6}
        )
        assert "50 steps" in assert_problem(long, 422)["detail"]
        slow = client.post(
            ALPHA, "/v1/jobs", json={"dataset_id": alpha_data, "max_runtime_s": 10.5}
        )
        assert "10 s one job may run" in assert_problem(slow, 422)["detail"]

        # beta keeps the defaults: 2 queued, 60 s.
        beta_jobs = [client.job(BETA, beta_data, epochs=6) for _ in range(2)]
        assert {job["max_runtime_s"] for job in beta_jobs} == {60.0}
        assert_problem(
            client.post(BETA, "/v1/jobs", json={"dataset_id": beta_data}),
            429,
            "/problems/too-many-queued-jobs",
        )

        # Cleared: alpha is back to the default runtime (and a full queue at 2).
        set_limits(engine, ALPHA, max_queued_jobs=None, max_job_runtime_s=None)
        back = client.post(
            ALPHA, "/v1/jobs", json={"dataset_id": alpha_data, "batch_size": 10, "epochs": 2}
        )
        assert_problem(back, 429, "/problems/too-many-queued-jobs")
    assert jobs_by_status(engine, ALPHA) == {"queued": 4}
    assert jobs_by_status(engine, BETA) == {"queued": 2}


def test_a_tenants_own_storage_quota_holds_at_upload(settings: Settings, engine: Engine) -> None:
    with api(settings, engine) as client:
        client.dataset(ALPHA)
        set_limits(engine, ALPHA, max_stored_bytes=1)
        refused = client.post(ALPHA, "/v1/datasets", json=inline(100))
        assert_problem(refused, 413)
        assert client.post(BETA, "/v1/datasets", json=inline(100)).status_code == 201
        set_limits(engine, ALPHA, max_stored_bytes=None)
        assert client.post(ALPHA, "/v1/datasets", json=inline(100)).status_code == 201


@pytest.mark.parametrize("name", ["max_running", "tenant"])
def test_set_limits_refuses_an_unknown_limit(session: Session, name: str) -> None:
    with pytest.raises(ValueError, match="unknown tenant limits"):
        tenants.set_limits(session, ALPHA, {name: 3})
