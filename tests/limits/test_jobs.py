"""Job and sweep limits through the real app and a real database (both backends): steps per job
(``BATCHWISE_MAX_STEPS_PER_JOB``), the runtime default and cap (``BATCHWISE_MAX_JOB_RUNTIME_S``)
and each tenant's queued jobs (``BATCHWISE_TENANT_MAX_QUEUED_JOBS``), including concurrent
submits racing for the last room.

Every refusal is checked for its status, problem type, numbers and that nothing was queued.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from service.config import Settings
from service.core import TrainConfig, Training
from service.db import session_factory, utcnow
from service.db.tables import Job, Sweep
from service.errors import TooManyQueuedJobs
from service.jobs import queue
from service.jobs import service as jobs_service
from service.jobs.limits import JobLimits, count_steps
from service.jobs.schemas import JobCreate
from tests.support.factories import regression_data
from tests.support.problems import assert_problem, locs
from tests.support.tenants import ALPHA, BETA, api, jobs_by_status, sweep_count

INVALID = "/problems/invalid-input"
QUEUE_FULL = "/problems/too-many-queued-jobs"


# --- counting steps ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "config",
    [
        {"batch_size": 7, "epochs": 5},
        {"batch_size": 7, "epochs": 5, "drop_last": True},
        {"batch_size": 7, "epochs": 5, "validation_split": 0.2},
        {"batch_size": None, "epochs": 3},
        {"batch_size": 100, "epochs": 2},
        {
            "batch_size": 8,
            "epochs": 7,
            "batch_size_schedule": {"kind": "grow", "factor": 2, "every_epochs": 2},
        },
        {
            "batch_size": 8,
            "epochs": 9,
            "batch_size_schedule": {"kind": "grow", "factor": 3, "max_batch_size": 30},
        },
        {
            "batch_size": 3,
            "epochs": 40,
            "drop_last": True,
            "batch_size_schedule": {"kind": "grow", "factor": 2, "every_epochs": 3},
        },
    ],
)
def test_count_steps_is_what_the_training_loop_takes(config: dict[str, Any]) -> None:
    X, y = regression_data(100, n_features=2)
    train_config = TrainConfig.from_dict(config)
    taken = sum(record.steps for record in Training(X, y, train_config))
    assert count_steps(train_config, 100).total == taken


def test_count_steps_bounds_an_adaptive_schedule_by_its_starting_size() -> None:
    X, y = regression_data(400, n_features=2)
    config = TrainConfig.from_dict(
        {
            "batch_size": 4,
            "epochs": 6,
            "learning_rate": 0.05,
            "batch_size_schedule": {"kind": "adaptive", "max_batch_size": 200},
        }
    )
    counted = count_steps(config, 400).total
    assert counted == 6 * 100
    records = list(Training(X, y, config))
    assert max(r.batch_size for r in records) > 4  # it did grow, so took fewer steps
    assert sum(r.steps for r in records) < counted


def test_count_steps_of_a_grow_schedule_takes_a_few_iterations_for_any_epochs() -> None:
    config = TrainConfig.from_dict(
        {"batch_size": 1, "epochs": 100_000, "batch_size_schedule": {"kind": "grow"}}
    )
    # Batch sizes 1, 2, 4, …, 512, then capped at the 1,000 rows: 10 growing epochs, the rest 1.
    growing = sum(-(-1000 // 2**k) for k in range(10))
    assert count_steps(config, 1000).total == growing + (100_000 - 10) * 1


# --- steps per job -----------------------------------------------------------------------------


def test_job_over_max_steps_is_422_naming_epochs_and_batch_size(
    settings: Settings, engine: Engine
) -> None:
    # 100 rows, 20 held out: 80 / 7 → 12 steps per epoch (the last one partial), 10 epochs.
    body = {"batch_size": 7, "epochs": 10, "validation_split": 0.2}
    with api(settings, engine, max_steps_per_job=119) as client:
        dataset_id = client.dataset(ALPHA)
        response = client.post(ALPHA, "/v1/jobs", json={"dataset_id": dataset_id, **body})
        at_limit = client.job(ALPHA, dataset_id, **body, drop_last=True)  # 10 × 11 = 110
    problem = assert_problem(response, 422, INVALID)
    assert problem["detail"] == (
        "The job would take 120 steps, 10 epochs × 12 steps per epoch (80 training rows at "
        "batch size 7), more than the 119 steps one job may take "
        "(BATCHWISE_MAX_STEPS_PER_JOB): lower epochs or raise batch_size."
    )
    assert problem["errors"] == [
        {
            "loc": ["body", "epochs"],
            "msg": "10 epochs take 120 steps, more than the 119 one job may take "
            "(BATCHWISE_MAX_STEPS_PER_JOB)",
            "type": "too_many_steps",
        },
        {
            "loc": ["body", "batch_size"],
            "msg": "batch size 7 takes 12 steps per epoch over 80 training rows; a larger "
            "batch takes fewer",
            "type": "too_many_steps",
        },
    ]
    assert at_limit["status"] == "queued"
    assert jobs_by_status(engine, ALPHA) == {"queued": 1}  # the refused one left nothing


def test_job_over_max_steps_with_a_schedule_names_its_batch_sizes(
    settings: Settings, engine: Engine
) -> None:
    schedule = {"kind": "grow", "factor": 2, "every_epochs": 2}
    body = {"batch_size": 8, "epochs": 7, "batch_size_schedule": schedule}
    with api(settings, engine, max_steps_per_job=49) as client:
        dataset_id = client.dataset(ALPHA)
        response = client.post(ALPHA, "/v1/jobs", json={"dataset_id": dataset_id, **body})
    problem = assert_problem(response, 422, INVALID)
    # Batch 8, 8, 16, 16, 32, 32, 64 over 100 rows: 13 + 13 + 7 + 7 + 4 + 4 + 2 = 50 steps.
    assert problem["detail"] == (
        "The job would take 50 steps, 7 epochs over 100 training rows at batch sizes 8 to 64 "
        "(the batch-size schedule), more than the 49 steps one job may take "
        "(BATCHWISE_MAX_STEPS_PER_JOB): lower epochs or raise batch_size."
    )
    assert locs(problem) == [["body", "epochs"], ["body", "batch_size"]]
    assert jobs_by_status(engine, ALPHA) == {}


# --- runtime -----------------------------------------------------------------------------------


def test_runtime_defaults_to_the_limit_and_above_it_is_422(
    settings: Settings, engine: Engine
) -> None:
    with api(settings, engine, max_job_runtime_s=60.0) as client:
        dataset_id = client.dataset(ALPHA)
        default = client.job(ALPHA, dataset_id)
        shorter = client.job(ALPHA, dataset_id, max_runtime_s=30)
        at_limit = client.job(ALPHA, dataset_id, max_runtime_s=60)
        response = client.post(
            ALPHA, "/v1/jobs", json={"dataset_id": dataset_id, "max_runtime_s": 60.5}
        )
    assert [default["max_runtime_s"], shorter["max_runtime_s"], at_limit["max_runtime_s"]] == [
        60.0,
        30.0,
        60.0,
    ]
    problem = assert_problem(response, 422, INVALID)
    msg = (
        "60.5 s is more than the 60 s one job may run (BATCHWISE_MAX_JOB_RUNTIME_S); ask for "
        "at most that, or leave it out to get it"
    )
    assert problem["detail"] == f"The job cannot run: max_runtime_s: {msg}."
    assert problem["errors"] == [
        {"loc": ["body", "max_runtime_s"], "msg": msg, "type": "runtime_above_limit"}
    ]
    assert jobs_by_status(engine, ALPHA) == {"queued": 3}
    with session_factory(engine)() as session:
        stored = sorted(session.scalars(select(Job.max_runtime_s)))
    assert stored == [30.0, 60.0, 60.0]  # what the worker reads with its claim


# --- queued jobs -------------------------------------------------------------------------------


def queue_full_detail(queued: int, limit: int, what: str) -> str:
    return (
        f"You have {queued} queued jobs and may have at most {limit} "
        f"(BATCHWISE_TENANT_MAX_QUEUED_JOBS), so {what} cannot be queued now: there is room "
        f"for {max(0, limit - queued)}. Retry in 30 s, once workers have started some, or "
        "cancel queued jobs."
    )


def test_queued_jobs_past_the_limit_are_429_with_retry_after_per_tenant(
    settings: Settings, engine: Engine
) -> None:
    with api(settings, engine, tenant_max_queued_jobs=3) as client:
        alpha_data, beta_data = client.dataset(ALPHA), client.dataset(BETA)
        queued = [client.job(ALPHA, alpha_data)["id"] for _ in range(3)]
        response = client.post(ALPHA, "/v1/jobs", json={"dataset_id": alpha_data})
        problem = assert_problem(response, 429, QUEUE_FULL)
        assert response.headers["retry-after"] == "30"
        assert problem["title"] == "Too many queued jobs"
        assert problem["detail"] == queue_full_detail(3, 3, "this job")
        assert jobs_by_status(engine, ALPHA) == {"queued": 3}

        # Another tenant's queue is its own.
        for _ in range(3):
            client.job(BETA, beta_data)
        assert_problem(
            client.post(BETA, "/v1/jobs", json={"dataset_id": beta_data}), 429, QUEUE_FULL
        )

        # Room comes back as jobs leave the queue: cancelled, or claimed by a worker.
        assert client.post(ALPHA, f"/v1/jobs/{queued[0]}/cancel").status_code == 200
        client.job(ALPHA, alpha_data)
        assert_problem(
            client.post(ALPHA, "/v1/jobs", json={"dataset_id": alpha_data}), 429, QUEUE_FULL
        )
        with session_factory(engine)() as session:
            claimed = queue.claim(session, worker_id="w1", lease_seconds=30.0, now=utcnow())
            session.commit()
        assert claimed is not None
        assert claimed.job_id == queued[1]
        client.job(ALPHA, alpha_data)  # running jobs do not count against the queue
    assert jobs_by_status(engine, ALPHA) == {"queued": 3, "running": 1, "cancelled": 1}
    assert jobs_by_status(engine, BETA) == {"queued": 3}


def test_concurrent_submits_of_one_tenant_never_pass_its_queue_limit(
    settings: Settings, engine: Engine
) -> None:
    """Every submit starts at a barrier; the count after the insert, under the tenant's lock,
    lets exactly as many through as there is room for."""
    n_submits, limit = 8, 3
    sessions = session_factory(engine)
    with api(settings, engine) as client:
        dataset_id = client.dataset(ALPHA)
    limits = JobLimits(max_queued_jobs=limit)
    start = threading.Barrier(n_submits)
    outcomes: list[str] = []
    errors: list[BaseException] = []

    def submitter() -> None:
        try:
            with sessions() as session:
                start.wait()
                try:
                    jobs_service.submit(
                        session, JobCreate(dataset_id=dataset_id), tenant=ALPHA, limits=limits
                    )
                    session.commit()
                    outcomes.append("queued")
                except TooManyQueuedJobs:
                    session.rollback()
                    outcomes.append("refused")
        except BaseException as exc:  # reported below, with the thread's failure
            errors.append(exc)

    threads = [threading.Thread(target=submitter) for _ in range(n_submits)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert sorted(outcomes) == ["queued"] * limit + ["refused"] * (n_submits - limit)
    assert jobs_by_status(engine, ALPHA) == {"queued": limit}


# --- sweeps ------------------------------------------------------------------------------------


def sweep_body(dataset_id: str, batch_sizes: list[int], **fields: Any) -> dict[str, Any]:
    return {
        "dataset_id": dataset_id,
        "batch_sizes": batch_sizes,
        "learning_rates": [0.05],
        "base": {"epochs": 3},
        **fields,
    }


def test_a_sweep_needs_room_for_its_whole_first_round(
    settings: Settings, engine: Engine, session: Session
) -> None:
    with api(settings, engine, tenant_max_queued_jobs=3) as client:
        dataset_id = client.dataset(ALPHA)
        client.job(ALPHA, dataset_id)
        no_room = client.post(ALPHA, "/v1/sweeps", json=sweep_body(dataset_id, [8, 16, 32]))
        never_fits = client.post(ALPHA, "/v1/sweeps", json=sweep_body(dataset_id, [8, 16, 32, 64]))
        fits = client.post(ALPHA, "/v1/sweeps", json=sweep_body(dataset_id, [8, 16]))
    problem = assert_problem(no_room, 429, QUEUE_FULL)
    assert no_room.headers["retry-after"] == "30"
    assert problem["detail"] == queue_full_detail(1, 3, "this sweep's first round of 3 jobs")
    too_many = assert_problem(never_fits, 422, INVALID)
    msg = (
        "batch sizes × learning rates × seeds is 4 jobs, more than the 3 queued jobs a tenant "
        "may have (BATCHWISE_TENANT_MAX_QUEUED_JOBS); ask for fewer"
    )
    assert too_many["detail"] == f"The sweep cannot run: batch_sizes: {msg}."
    assert locs(too_many) == [["body", "batch_sizes"]]
    assert fits.status_code == 202, fits.text
    assert jobs_by_status(engine, ALPHA) == {"queued": 3}  # 1 job + the sweep's 2 points
    assert sweep_count(session) == 1


def test_sweep_points_are_held_to_the_steps_and_runtime_limits(
    settings: Settings, engine: Engine, session: Session
) -> None:
    with api(settings, engine, max_steps_per_job=100, max_job_runtime_s=120.0) as client:
        dataset_id = client.dataset(ALPHA)
        # 3 epochs: batch 8 → 13 steps per epoch (39), batch 2 → 50 per epoch (150).
        steps = client.post(ALPHA, "/v1/sweeps", json=sweep_body(dataset_id, [8, 2]))
        runtime = client.post(
            ALPHA,
            "/v1/sweeps",
            json=sweep_body(dataset_id, [8, 16], base={"epochs": 3, "max_runtime_s": 121}),
        )
        accepted = client.post(ALPHA, "/v1/sweeps", json=sweep_body(dataset_id, [8, 16]))
    steps_problem = assert_problem(steps, 422, INVALID)
    assert steps_problem["detail"] == (
        "The sweep cannot run: base.epochs: 3 epochs take 150 steps, more than the 100 one job "
        "may take (BATCHWISE_MAX_STEPS_PER_JOB)."
    )
    assert locs(steps_problem) == [["body", "base", "epochs"], ["body", "batch_sizes", 1]]
    assert steps_problem["errors"][1]["msg"] == (
        "batch size 2 takes 50 steps per epoch over 100 training rows; a larger batch takes fewer"
    )
    runtime_problem = assert_problem(runtime, 422, INVALID)
    assert locs(runtime_problem) == [["body", "base", "max_runtime_s"]]
    assert runtime_problem["detail"] == (
        "The sweep cannot run: base.max_runtime_s: 121 s is more than the 120 s one job may run "
        "(BATCHWISE_MAX_JOB_RUNTIME_S); ask for at most that, or leave it out to get it."
    )

    assert accepted.status_code == 202, accepted.text
    # Without base.max_runtime_s the spec gets the limit: later rounds, which the worker
    # queues from the spec, inherit it.
    assert accepted.json()["spec"]["base"]["max_runtime_s"] == 120.0
    points = session.scalars(select(Job.max_runtime_s).where(Job.sweep_id.is_not(None))).all()
    assert points == [120.0, 120.0]
    assert session.scalars(select(Sweep.id)).all() == [accepted.json()["id"]]
    assert jobs_by_status(engine, ALPHA) == {"queued": 2}


def test_limits_off_the_request_path_leave_direct_callers_unlimited(
    engine: Engine, session: Session, settings: Settings
) -> None:
    """``submit`` without limits (the worker's later sweep rounds, tests) checks none."""
    with api(settings, engine) as client:
        dataset_id = client.dataset(ALPHA)
    job = jobs_service.submit(
        session, JobCreate(dataset_id=dataset_id, epochs=100_000, batch_size=1), tenant=ALPHA
    )
    assert (job.max_runtime_s, job.config.epochs, job.status) == (None, 100_000, "queued")
