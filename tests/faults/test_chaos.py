"""Chaos on PostgreSQL, with nothing lost: a sweep of 60 points and 40 plain jobs run by 3
worker processes and 2 API processes while workers are kill -9ed every few seconds (and
replaced), PostgreSQL is stopped and started once, and an API process is kill -9ed mid-upload
(and started again). See :mod:`tests.support.chaos` for the run and
:mod:`tests.support.chaos_checks` for the judging.

The server is a private one (``conftest.private_postgres``): the run stops it. Like every
PostgreSQL test it runs only where ``BATCHWISE_TEST_POSTGRES_URL`` is set (in CI it must).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support.chaos import ChaosPlan, run_chaos
from tests.support.chaos_checks import judge, summary
from tests.support.databases import POSTGRES_URL_ENV, engine_on, in_ci
from tests.support.private_postgres import PrivatePostgres

pytestmark = pytest.mark.postgres

#: A kill every second: on a quiet machine the jobs are over too soon for one every 3 s to
#: land the 5 kills asserted below (the kills stay capped at ``max_kills``).
PLAN = ChaosPlan(kill_every_s=1.0)


@pytest.fixture
def postgres_tests_on() -> None:
    if not os.environ.get(POSTGRES_URL_ENV, "").strip():
        reason = f"{POSTGRES_URL_ENV} is not set: the PostgreSQL tests do not run here"
        if in_ci():
            pytest.fail(f"CI is set but {reason}", pytrace=False)
        pytest.skip(reason)


@pytest.mark.usefixtures("postgres_tests_on")
@pytest.mark.timeout(PLAN.timeout_s + 300)  # about 2 minutes on a quiet 2-core machine
def test_chaos_every_job_succeeds_once_with_the_undisturbed_history_and_no_bad_answer(
    private_postgres: PrivatePostgres, private_postgres_url: str, tmp_path: Path
) -> None:
    assert PLAN.sweep_jobs >= 60
    assert PLAN.plain_jobs >= 40
    with engine_on(private_postgres_url) as engine:
        run = run_chaos(PLAN, private_postgres, private_postgres_url, engine, tmp_path)
        verdict = judge(engine, run)
    print("\n".join(summary(run, verdict)))  # pytest shows it when an assertion fails

    # The faults were injected: workers killed mid-job, one outage, one API killed mid-upload.
    assert len(run.kills) >= 5
    assert sum(kill.mid_job for kill in run.kills) >= 3
    assert all(kill.status == -9 for kill in run.kills)
    assert len(run.pg_outages) == 1
    assert [kill.exit_status for kill in run.api_kills] == [-9]

    # Every job succeeded once, each history and model what an undisturbed run stores.
    assert verdict.duplicates == []
    assert verdict.not_succeeded == []
    assert verdict.jobs == PLAN.jobs == verdict.statuses["succeeded"]
    assert run.final_sweep["status"] == "succeeded"
    assert verdict.history_mismatches == []
    assert verdict.identical_histories == PLAN.jobs
    assert verdict.attempt_problems == []

    # Every answer acceptable: 2xx/4xx, or 503 with Retry-After while the database was away;
    # no request went unanswered but to the API process while it was dead.
    assert verdict.unacceptable == []
    assert verdict.stray_503 == []
    assert verdict.stray_failures == []
    assert verdict.connection_failures >= 1  # the failover was exercised

    # Nothing half-written: datasets whole, spools empty, the workers' cache whole.
    assert verdict.storage_problems == []

    # Every process still up at the end stopped cleanly.
    assert all(status in (0, -15) for status in run.worker_exit_statuses), run.worker_exit_statuses
    assert all(status in (0, -15) for status in run.api_exit_statuses), run.api_outputs
