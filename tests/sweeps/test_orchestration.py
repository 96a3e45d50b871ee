"""``advance``: the learning-rate search round by round, the end of a sweep, idempotence, and
the worker's hook — with the point jobs' results written directly through the tables (both
backends)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from jobs.factories import make_dataset, regression_data, run_like_a_worker
from sqlalchemy.orm import Session

from service.db.tables import Sweep
from service.jobs import service as jobs_service
from service.jobs.schemas import JobCreate
from service.sweeps import repository
from service.sweeps import service as sweeps_service
from service.sweeps.service import evaluations_of
from service.sweeps.targets import Evaluation

from .helpers import create, dataset, fail, finish_with_crossing, jobs_of

SQRT2 = math.sqrt(2.0)


@pytest.fixture
def dataset_id(session: Session, tmp_path: Path) -> str:
    return dataset(session, tmp_path / "work")


def steps_for(rate: float, best: float) -> float:
    """Steps to target as a function of the rate: a valley in log-rate with its floor at
    ``best`` (12 steps there, +8 per √2 step away)."""
    return 12.0 + 8.0 * abs(math.log(rate / best) / math.log(SQRT2))


def finish_round(session: Session, sweep_id: str, best: dict[int, float]) -> None:
    """Finish every unfinished job of the sweep with steps_for(its rate, best[its batch])."""
    for job in jobs_of(session, sweep_id):
        if job.status == "queued":
            point = job.sweep_point or {}
            crossing = steps_for(point["learning_rate"], best[point["batch_size"]])
            finish_with_crossing(session, job, crossing)


def rates_by_batch(session: Session, sweep_id: str) -> dict[int, list[float]]:
    out: dict[int, list[float]] = {}
    for job in jobs_of(session, sweep_id):
        point = job.sweep_point or {}
        out.setdefault(point["batch_size"], []).append(point["learning_rate"])
    return {batch: sorted(rates) for batch, rates in out.items()}


def test_search_widens_at_the_edge_until_the_best_rate_is_interior(
    session: Session, dataset_id: str
) -> None:
    start = 0.01
    sweep = create(
        session,
        dataset_id,
        batch_sizes=[8, 32],
        lr_search={"start": start, "max_rounds": 6},
        target_loss=0.5,
    )
    # Batch 8's best lies inside the first grid; batch 32's two √2 steps above it.
    best = {8: start, 32: start * SQRT2**3}
    assert rates_by_batch(session, sweep.id) == {
        8: pytest.approx([start / SQRT2, start, start * SQRT2]),
        32: pytest.approx([start / SQRT2, start, start * SQRT2]),
    }

    finish_round(session, sweep.id, best)
    assert sweeps_service.advance(session, sweep.id) is True
    # Round 1: only batch 32 (best at its top edge) gets one more step up.
    rates = rates_by_batch(session, sweep.id)
    assert len(rates[8]) == 3
    assert rates[32] == pytest.approx([start * SQRT2**k for k in (-1, 0, 1, 2)])
    assert sweeps_service.advance(session, sweep.id) is False  # round 1 still queued

    for top in (3, 4):
        finish_round(session, sweep.id, best)
        assert sweeps_service.get_sweep(session, sweep.id, settle=False).status == "running"
        assert sweeps_service.advance(session, sweep.id) is True
        assert rates_by_batch(session, sweep.id)[32] == pytest.approx(
            [start * SQRT2**k for k in range(-1, top + 1)]
        )
    finish_round(session, sweep.id, best)
    assert sweeps_service.advance(session, sweep.id) is True  # now interior: it ends

    read = sweeps_service.get_sweep(session, sweep.id)
    assert read.status == "succeeded"
    assert read.partial is False
    assert read.lr_method == "searched"
    assert read.round == 3
    by_batch = {point.batch_size: point for point in read.points}
    assert by_batch[8].learning_rate == pytest.approx(start)
    assert by_batch[32].learning_rate == pytest.approx(start * SQRT2**3)
    assert by_batch[32].lr_interior is True
    assert by_batch[8].lr_interior is True
    assert by_batch[32].to_target.steps == pytest.approx(12.0)
    # The search records its decisions.
    stored = session.get(Sweep, sweep.id)
    assert stored is not None
    assert stored.lr_state["32"]["interior"] is True
    assert stored.lr_state["32"]["chosen"] == pytest.approx(start * SQRT2**3)


def test_search_stops_at_max_rounds_and_says_the_best_is_not_interior(
    session: Session, dataset_id: str
) -> None:
    start = 0.01
    sweep = create(
        session,
        dataset_id,
        batch_sizes=[8, 32],
        lr_search={"start": start, "max_rounds": 2},
        target_loss=0.5,
    )
    best = {8: start, 32: start * 100}  # far beyond what two rounds can reach
    finish_round(session, sweep.id, best)
    assert sweeps_service.advance(session, sweep.id) is True
    finish_round(session, sweep.id, best)
    assert sweeps_service.advance(session, sweep.id) is True

    read = sweeps_service.get_sweep(session, sweep.id)
    assert read.status == "succeeded"
    by_batch = {point.batch_size: point for point in read.points}
    assert by_batch[32].learning_rate == pytest.approx(start * SQRT2**2)
    assert by_batch[32].lr_interior is False
    assert len(jobs_of(session, sweep.id)) == 3 + 4


def test_a_batch_size_whose_every_rate_diverged_searches_downward(
    session: Session, dataset_id: str
) -> None:
    start = 0.01
    sweep = create(
        session, dataset_id, batch_sizes=[8, 32], lr_search={"start": start}, target_loss=0.5
    )
    for job in jobs_of(session, sweep.id):
        point = job.sweep_point or {}
        if point["batch_size"] == 8:
            fail(session, job)
        else:
            finish_with_crossing(session, job, steps_for(point["learning_rate"], start))
    assert sweeps_service.advance(session, sweep.id) is True
    assert rates_by_batch(session, sweep.id)[8] == pytest.approx(
        [start * SQRT2**k for k in (-2, -1, 0, 1)]
    )


def test_given_rates_end_after_one_round_each_batch_keeping_its_best(
    session: Session, dataset_id: str
) -> None:
    sweep = create(
        session,
        dataset_id,
        batch_sizes=[8, 16, 32],
        learning_rates=[0.01, 0.02, 0.04],
        seeds=2,
        target_loss=0.5,
    )
    best = {8: 0.01, 16: 0.02, 32: 0.04}
    finish_round(session, sweep.id, best)
    assert sweeps_service.advance(session, sweep.id) is True
    assert sweeps_service.advance(session, sweep.id) is False  # idempotent

    read = sweeps_service.get_sweep(session, sweep.id)
    assert read.status == "succeeded"
    assert len(jobs_of(session, sweep.id)) == 3 * 3 * 2
    assert [p.learning_rate for p in read.points] == [0.01, 0.02, 0.04]
    # Edges are allowed for given rates, but reported.
    assert [p.lr_interior for p in read.points] == [False, True, False]
    assert all(len(p.job_ids) == 6 for p in read.points)


def test_every_point_failed_fails_the_sweep_with_the_reason(
    session: Session, dataset_id: str
) -> None:
    sweep = create(session, dataset_id, batch_sizes=[8, 32], target_loss=0.5)
    for job in jobs_of(session, sweep.id):
        fail(session, job, "the loss is inf at epoch 1, step 3")
    assert sweeps_service.advance(session, sweep.id) is True

    read = sweeps_service.get_sweep(session, sweep.id)
    assert read.status == "failed"
    assert read.lr_method == "scaled"
    assert read.error is not None
    assert read.error.startswith("every point failed (2 diverged)")
    assert "the loss is inf at epoch 1, step 3" in read.error
    assert read.finished_at is not None


def test_advance_waits_for_the_whole_round(session: Session, dataset_id: str) -> None:
    sweep = create(session, dataset_id, batch_sizes=[8, 32], target_loss=0.5)
    first, second = jobs_of(session, sweep.id)
    finish_with_crossing(session, first, 20.0)
    assert sweeps_service.advance(session, sweep.id) is False
    assert sweeps_service.get_sweep(session, sweep.id).status == "running"
    finish_with_crossing(session, second, 20.0)
    assert sweeps_service.job_finished(session, second.id) is True
    assert sweeps_service.get_sweep(session, sweep.id).status == "succeeded"
    assert sweeps_service.advance(session, sweep.id) is False


def test_job_finished_ignores_a_job_outside_any_sweep(session: Session, dataset_id: str) -> None:
    job = jobs_service.submit(session, JobCreate(dataset_id=dataset_id))
    assert sweeps_service.job_finished(session, job.id) is False


def test_reading_settles_a_sweep_whose_last_job_was_cancelled_while_queued(
    session: Session, dataset_id: str
) -> None:
    sweep = create(session, dataset_id, batch_sizes=[8, 32], target_loss=0.5)
    first, second = jobs_of(session, sweep.id)
    finish_with_crossing(session, first, 20.0)
    jobs_service.cancel(session, second.id)  # no worker finishes it, so no hook runs

    read = sweeps_service.get_sweep(session, sweep.id)
    assert read.status == "succeeded"
    assert read.jobs == {"succeeded": 1, "cancelled": 1}


def test_fraction_target_from_the_initial_and_best_losses(
    session: Session, dataset_id: str
) -> None:
    sweep = create(session, dataset_id, batch_sizes=[8, 32], target_fraction=0.75)
    first, second = jobs_of(session, sweep.id)
    finish_with_crossing(session, first, 10.0, initial_loss=1.0)
    finish_with_crossing(session, second, 20.0, initial_loss=3.0)

    target = sweeps_service.get_sweep(session, sweep.id).target
    # L0 = mean(1, 3) = 2; L_best = the first job's loss after 40 steps = 2⁻⁴.
    best = 1.0 * 2.0**-4
    assert target.method == "fraction"
    assert target.initial_loss == pytest.approx(2.0)
    assert target.best_loss == pytest.approx(best, rel=1e-6)
    assert target.loss == pytest.approx(2.0 - 0.75 * (2.0 - best), rel=1e-6)


def test_evaluations_come_from_the_first_step_and_every_epoch_end(
    session: Session, dataset_id: str
) -> None:
    sweep = create(session, dataset_id, batch_sizes=[8, 32], target_loss=0.5)
    job = jobs_of(session, sweep.id)[0]
    finish_with_crossing(session, job, 20.0)

    records = repository.epoch_records(session, [job.id])[job.id]
    evaluations = evaluations_of(records, on="train")

    assert evaluations[0] == Evaluation(step=0, samples=0, epoch=0.0, wall_time_s=0.0, loss=1.0)
    assert [e.step for e in evaluations] == [0, 10, 20, 30, 40]
    assert [e.samples for e in evaluations] == [0, 80, 160, 240, 320]
    assert [e.wall_time_s for e in evaluations] == [0.0, 0.5, 1.0, 1.5, 2.0]
    assert evaluations[2].loss == pytest.approx(0.5)
    assert evaluations_of([], on="train") == []
    # No validation loss recorded: every epoch end is NaN (never reaches a target).
    on_validation = evaluations_of(records, on="validation")
    assert all(math.isnan(e.loss) for e in on_validation[1:])


def test_a_real_training_history_reaches_the_target_where_its_losses_cross(
    session: Session, tmp_path: Path
) -> None:
    X, y = regression_data(200)
    dataset_id = make_dataset(session, tmp_path / "work", X, y).id
    sweep = create(
        session,
        dataset_id,
        batch_sizes=[16, 64],
        base={"epochs": 6, "learning_rate": 0.05},
        target_loss=1.0,
    )
    for job in jobs_of(session, sweep.id):
        run_like_a_worker(session, job.id, X, y)
    assert sweeps_service.advance(session, sweep.id) is True
    read = sweeps_service.get_sweep(session, sweep.id)

    assert read.status == "succeeded"
    for point in read.points:
        steps = point.to_target.steps
        assert steps is not None
        # The crossing lies between the last epoch end above the target and the first below.
        histories = repository.epoch_records(session, point.job_ids)
        records = [record for rows in histories.values() for _, record, _ in rows]
        above = [r["total_steps"] for r in records if r["train_loss"] > 1.0]
        below = [r["total_steps"] for r in records if r["train_loss"] <= 1.0]
        assert max(above, default=0) <= steps <= min(below)
        assert point.final.train is not None
        assert point.best.train == pytest.approx(min(r["train_loss"] for r in records))
        assert point.samples_per_s is not None
        assert point.samples_per_s > 0
    # Batch 16 takes more steps per epoch, so more steps to the same loss than batch 64.
    steps_16, steps_64 = (p.to_target.steps for p in read.points)
    assert steps_16 is not None
    assert steps_64 is not None
    assert steps_16 > steps_64


def test_recommendation_and_noise_scale_come_from_the_chosen_runs(
    session: Session, dataset_id: str
) -> None:
    sweep = create(session, dataset_id, batch_sizes=[8, 16, 32], target_loss=0.5)
    noise = {
        "b_simple": 50.0,
        "b_simple_corrected": 40.0,
        "trace_sigma": 5.0,
        "grad_sq_norm": 0.1,
        "loss_level": 0.3,
        "n_samples": 64,
    }
    for job, steps in zip(jobs_of(session, sweep.id), (40.0, 20.0, 30.0), strict=True):
        finish_with_crossing(session, job, steps, noise=noise)
    read = sweeps_service.get_sweep(session, sweep.id)

    assert read.recommendation is not None
    fastest = read.recommendation["fastest"]
    assert fastest["batch_size"] == 16
    assert fastest["wall_time_s"] == pytest.approx(1.0)  # step 20 at 0.5 s per 10 steps
    assert [p.to_target.wall_time_s for p in read.points] == pytest.approx([2.0, 1.0, 1.5])
    assert [entry["batch_size"] for entry in read.noise_scale] == [8, 16, 32]
    # 200 rows, no validation split: N = 200; B = 5 / 0.1 = 50; 1/(1/50 + 1/200) = 40.
    for entry in read.noise_scale:
        assert entry["b_simple"] == pytest.approx(50.0)
        assert entry["b_simple_corrected"] == pytest.approx(40.0)
        assert entry["loss_level"] == pytest.approx(0.3)
        assert entry["train_rows"] == 200
