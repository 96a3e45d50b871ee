"""``advance``: the learning-rate search round by round, the end of a sweep, idempotence, and
the worker's hook — with the point jobs' results written directly through the tables (both
backends)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy.orm import Session

from service.db.tables import Sweep
from service.jobs import service as jobs_service
from service.jobs.read_schemas import JobCounts
from service.jobs.schemas import JobCreate
from service.keys import DEFAULT_TENANT
from service.science import evaluations_of
from service.science.targets import Evaluation, steps_to_target
from service.sweeps import orchestration, repository
from service.sweeps import service as sweeps_service
from service.sweeps.repository import jobs_of
from tests.support.factories import (
    T0,
    epoch_row,
    line_data,
    make_dataset,
    run_like_a_worker,
    set_job,
)
from tests.support.sweeps import create, dataset, fail, finish_with_crossing

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


def trained_sweep(session: Session, work_dir: Path, **fields: Any) -> tuple[str, np.ndarray]:
    """A sweep over a 200-row line dataset whose every point job ran the real training loop;
    the sweep's id and the dataset's targets ``y``."""
    X, y = line_data(200)
    dataset_id = make_dataset(session, work_dir, X, y).id
    sweep = create(session, dataset_id, **fields)
    for job in jobs_of(session, sweep.id):
        run_like_a_worker(session, job.id, X, y)
    return sweep.id, y


def rates_by_batch(session: Session, sweep_id: str) -> dict[int, list[float]]:
    out: dict[int, list[float]] = {}
    for job in jobs_of(session, sweep_id):
        point = job.sweep_point or {}
        out.setdefault(point["batch_size"], []).append(point["learning_rate"])
    return {batch: sorted(rates) for batch, rates in out.items()}


def test_search_brackets_by_four_then_refines_until_the_best_rate_is_interior(
    session: Session, dataset_id: str
) -> None:
    start = 0.01
    sweep = create(
        session,
        dataset_id,
        batch_sizes=[8, 32],
        lr_search={"start": start, "max_rounds": 8},
        target_loss=0.5,
    )
    # Round 0: the guess ÷4, ×1, ×4, batch 32's guess scaled by √(32/8) = 2.
    assert rates_by_batch(session, sweep.id) == {
        8: pytest.approx([start / 4, start, start * 4]),
        32: pytest.approx([start / 2, start * 2, start * 8]),
    }
    # Batch 8's best lies inside round 0's bracket; batch 32's far above it.
    best = {8: start * 2**0.3, 32: start * 40}
    finish_round(session, sweep.id, best)
    assert orchestration.advance(session, sweep.id) is True
    rates = rates_by_batch(session, sweep.id)
    # Batch 8 refines by √2 on both sides; batch 32 (best at its top edge) goes ×4 up.
    assert rates[8] == pytest.approx(
        sorted([start / 4, start / SQRT2, start, start * SQRT2, start * 4])
    )
    assert rates[32] == pytest.approx([start / 2, start * 2, start * 8, start * 32])
    assert orchestration.advance(session, sweep.id) is False  # round 1 still queued

    for _ in range(7):
        finish_round(session, sweep.id, best)
        assert orchestration.advance(session, sweep.id) is True
        read = sweeps_service.get_sweep(session, sweep.id, tenant=DEFAULT_TENANT)
        if read.status != "running":
            break
    assert read.status == "succeeded"
    assert read.round < 8  # ended because both searches were done, not out of rounds
    by_batch = {point.batch_size: point for point in read.points}
    for batch_size, point in by_batch.items():
        assert point.lr_interior is True
        assert point.lr_edge is None
        chosen = point.learning_rate
        assert chosen is not None
        tried = point.learning_rates_tried
        below = max(r for r in tried if r < chosen)
        above = min(r for r in tried if r > chosen)
        # refined to the finest step, with the valley's floor between the neighbours
        assert chosen / below == pytest.approx(2**0.25) or chosen / below < 2**0.25
        assert above / chosen <= 2**0.25 * (1 + 1e-9)
        assert below < best[batch_size] < above
    assert by_batch[32].rounds > by_batch[8].rounds  # batch 32 needed its ×4 round first
    stored = session.get(Sweep, sweep.id)
    assert stored is not None
    assert stored.lr_state["32"]["edge"] is None


def test_search_stops_at_max_rounds_and_leaves_the_edge_point_out_of_the_fit(
    session: Session, dataset_id: str
) -> None:
    start = 0.01
    sweep = create(
        session,
        dataset_id,
        batch_sizes=[8, 16, 32, 64],
        lr_search={"start": start, "max_rounds": 2, "scaling": "none"},
        target_loss=0.5,
    )
    best = {8: start, 16: start, 32: start, 64: start * 1000}  # beyond two rounds' reach
    finish_round(session, sweep.id, best)
    assert orchestration.advance(session, sweep.id) is True
    finish_round(session, sweep.id, best)
    assert orchestration.advance(session, sweep.id) is True

    read = sweeps_service.get_sweep(session, sweep.id, tenant=DEFAULT_TENANT)
    assert read.status == "succeeded"
    by_batch = {point.batch_size: point for point in read.points}
    assert by_batch[64].learning_rate == pytest.approx(start * 16)
    assert by_batch[64].lr_interior is False
    assert by_batch[64].lr_edge == "high"
    assert by_batch[64].rounds == 2
    assert read.fit is not None
    assert 64 not in read.fit.batch_sizes
    [excluded] = read.fit.excluded
    assert excluded.batch_size == 64
    assert "is the highest of the 4 tried (in 2 rounds)" in excluded.reason
    assert excluded.action.startswith("raise lr_search.max_rounds (this sweep allowed 2)")


def test_a_batch_size_whose_every_rate_diverged_searches_downward_by_four(
    session: Session, dataset_id: str
) -> None:
    start = 0.01
    sweep = create(
        session,
        dataset_id,
        batch_sizes=[8, 32],
        lr_search={"start": start, "scaling": "none"},
        target_loss=0.5,
    )
    for job in jobs_of(session, sweep.id):
        point = job.sweep_point or {}
        if point["batch_size"] == 8:
            fail(session, job)
        else:
            finish_with_crossing(session, job, steps_for(point["learning_rate"], start))
    assert orchestration.advance(session, sweep.id) is True
    assert rates_by_batch(session, sweep.id)[8] == pytest.approx(
        [start / 16, start / 4, start, start * 4]
    )


def test_a_rate_that_reached_the_target_then_diverged_is_never_chosen_nor_recommended(
    session: Session, dataset_id: str
) -> None:
    sweep = create(
        session,
        dataset_id,
        batch_sizes=[8, 16, 32],
        learning_rates=[0.01, 0.02, 0.04],
        target_loss=0.5,
    )
    for job in jobs_of(session, sweep.id):
        point = job.sweep_point or {}
        if point["learning_rate"] == 0.04:
            # reached the target in 2 steps, then diverged: fastest on paper, not to be used
            finish_with_crossing(session, job, 2.0)
            fail(session, job)
        else:
            finish_with_crossing(session, job, steps_for(point["learning_rate"], 0.02))
    assert orchestration.advance(session, sweep.id) is True
    read = sweeps_service.get_sweep(session, sweep.id, tenant=DEFAULT_TENANT)
    assert [p.learning_rate for p in read.points] == [0.02, 0.02, 0.02]
    assert [p.lr_interior for p in read.points] == [True, True, True]
    assert read.recommendation is not None
    fastest = read.recommendation.fastest
    point = next(p for p in read.points if p.batch_size == fastest.batch_size)
    # the 0.02 runs' crossing (12 steps), not the diverged runs' 2-step one
    assert fastest.wall_time_s == pytest.approx(point.to_target.wall_time_s)
    assert point.to_target.steps == pytest.approx(12.0)


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
    assert orchestration.advance(session, sweep.id) is True
    assert orchestration.advance(session, sweep.id) is False  # idempotent

    read = sweeps_service.get_sweep(session, sweep.id, tenant=DEFAULT_TENANT)
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
    assert orchestration.advance(session, sweep.id) is True

    read = sweeps_service.get_sweep(session, sweep.id, tenant=DEFAULT_TENANT)
    assert read.status == "failed"
    assert read.lr_method == "scaled"
    assert read.error is not None
    assert read.error.startswith("every point failed (2 diverged)")
    assert "the loss is inf at epoch 1, step 3" in read.error
    assert read.finished_at is not None
    assert read.recommendation is None  # nothing recommended on a failed sweep


def test_advance_waits_for_the_whole_round(session: Session, dataset_id: str) -> None:
    sweep = create(session, dataset_id, batch_sizes=[8, 32], target_loss=0.5)
    first, second = jobs_of(session, sweep.id)
    finish_with_crossing(session, first, 20.0)
    assert orchestration.advance(session, sweep.id) is False
    assert sweeps_service.get_sweep(session, sweep.id, tenant=DEFAULT_TENANT).status == "running"
    finish_with_crossing(session, second, 20.0)
    assert orchestration.job_finished(session, second.id) is True
    assert sweeps_service.get_sweep(session, sweep.id, tenant=DEFAULT_TENANT).status == "succeeded"
    assert orchestration.advance(session, sweep.id) is False


def test_job_finished_ignores_a_job_outside_any_sweep(session: Session, dataset_id: str) -> None:
    job = jobs_service.submit(session, JobCreate(dataset_id=dataset_id), tenant=DEFAULT_TENANT)
    assert orchestration.job_finished(session, job.id) is False


def test_reading_settles_a_sweep_whose_last_job_was_cancelled_while_queued(
    session: Session, dataset_id: str
) -> None:
    sweep = create(session, dataset_id, batch_sizes=[8, 32], target_loss=0.5)
    first, second = jobs_of(session, sweep.id)
    finish_with_crossing(session, first, 20.0)
    jobs_service.cancel(
        session, second.id, tenant=DEFAULT_TENANT
    )  # no worker finishes it, so no hook runs

    read = sweeps_service.get_sweep(session, sweep.id, tenant=DEFAULT_TENANT)
    assert read.status == "succeeded"
    assert read.jobs == JobCounts(succeeded=1, cancelled=1)


def test_fraction_target_from_the_initial_and_best_losses(
    session: Session, dataset_id: str
) -> None:
    sweep = create(session, dataset_id, batch_sizes=[8, 32], target_fraction=0.75)
    first, second = jobs_of(session, sweep.id)
    finish_with_crossing(session, first, 10.0, initial_loss=1.0)
    finish_with_crossing(session, second, 20.0, initial_loss=3.0)

    target = sweeps_service.get_sweep(session, sweep.id, tenant=DEFAULT_TENANT).target
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
    sweep_id, _ = trained_sweep(
        session,
        tmp_path / "work",
        batch_sizes=[16, 64],
        base={"epochs": 6, "learning_rate": 0.05},
        target_loss=1.0,
    )
    assert orchestration.advance(session, sweep_id) is True
    read = sweeps_service.get_sweep(session, sweep_id, tenant=DEFAULT_TENANT)

    assert read.status == "succeeded"
    for point in read.points:
        steps = point.to_target.steps
        assert steps is not None
        # Every point evaluated the target's loss on the log-spaced schedule: the crossing
        # lies between the last evaluation above the target and the first at or below it,
        # inside an epoch rather than at an epoch end.
        histories = repository.epoch_records(session, point.job_ids)
        rows = next(iter(histories.values()))
        evaluations = [e for _, record, _ in rows for e in record["evaluations"]]
        assert evaluations[0]["step"] == 0
        above = [e["step"] for e in evaluations if e["loss"] > 1.0]
        below = [e["step"] for e in evaluations if e["loss"] <= 1.0]
        assert max(above) < steps <= min(below)
        assert steps not in {record["total_steps"] for _, record, _ in rows}
        records = [record for _, record, _ in rows]
        assert point.final.train is not None
        assert point.best.train == pytest.approx(min(r["train_loss"] for r in records))
        assert point.samples_per_s is not None
        assert point.samples_per_s > 0
    # At one learning rate a near noise-free problem takes about the same steps at either
    # batch size, so batch 64 spends about 4× the samples to reach the target.
    samples_16, samples_64 = (p.to_target.samples for p in read.points)
    assert samples_16 is not None
    assert samples_64 is not None
    assert samples_64 > 2 * samples_16


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
    read = sweeps_service.get_sweep(session, sweep.id, tenant=DEFAULT_TENANT)

    assert read.recommendation is not None
    fastest = read.recommendation.fastest
    assert fastest.batch_size == 16
    assert fastest.wall_time_s == pytest.approx(1.0)  # step 20 at 0.5 s per 10 steps
    assert [p.to_target.wall_time_s for p in read.points] == pytest.approx([2.0, 1.0, 1.5])
    assert [entry.batch_size for entry in read.noise_scale] == [8, 16, 32]
    # 200 rows, no validation split: N = 200; B = 5 / 0.1 = 50; 1/(1/50 + 1/200) = 40.
    for entry in read.noise_scale:
        assert entry.b_simple == pytest.approx(50.0)
        assert entry.b_simple_corrected == pytest.approx(40.0)
        assert entry.loss_level == pytest.approx(0.3)
        assert entry.train_rows == 200


def test_recorded_evaluations_give_fractional_epochs_and_cumulative_wall_time(
    session: Session, dataset_id: str
) -> None:
    sweep = create(session, dataset_id, batch_sizes=[8, 32], target_loss=0.5)
    job = jobs_of(session, sweep.id)[0]
    set_job(session, job.id, status="running", attempt=1, worker_id="w1", started_at=T0)
    # 10 steps of 8 rows an epoch (80 samples), 2 s per epoch; the first step's minibatch
    # loss (0.2) is noise, the evaluated initial loss is 2.0
    first = np.full(10, 1.0, dtype=np.float32)
    first[0] = 0.2
    session.add(
        epoch_row(
            job.id,
            1,
            first,
            total_steps=10,
            samples_seen=80,
            wall_time_s=2.0,
            evaluations=[
                {"step": 0, "samples": 0, "loss": 2.0},
                {"step": 4, "samples": 32, "loss": 1.0},
                {"step": 10, "samples": 80, "loss": 0.8},
            ],
        )
    )
    session.add(
        epoch_row(
            job.id,
            2,
            np.full(10, 0.5, dtype=np.float32),
            total_steps=20,
            samples_seen=160,
            wall_time_s=2.0,
            evaluations=[
                {"step": 13, "samples": 104, "loss": 0.6},
                {"step": 18, "samples": 144, "loss": 0.3},
                {"step": 20, "samples": 160, "loss": 0.25},
            ],
        )
    )
    session.flush()
    records = repository.epoch_records(session, [job.id])[job.id]
    evaluations = evaluations_of(records, on="train")
    assert [e.step for e in evaluations] == [0, 4, 10, 13, 18, 20]
    assert [e.samples for e in evaluations] == [0, 32, 80, 104, 144, 160]
    assert [e.epoch for e in evaluations] == pytest.approx([0.0, 0.4, 1.0, 1.3, 1.8, 2.0])
    assert [e.wall_time_s for e in evaluations] == pytest.approx([0, 0.8, 2.0, 2.6, 3.6, 4.0])
    assert evaluations[0].loss == 2.0  # the evaluated loss at step 0, not the first step's
    # the target 0.5 falls between steps 13 (0.6) and 18 (0.3): log-loss interpolation
    crossing = steps_to_target(evaluations, 0.5)
    assert crossing is not None
    t = math.log(0.6 / 0.5) / math.log(0.6 / 0.3)
    assert crossing.steps == pytest.approx(13 + 5 * t)
    assert crossing.epochs == pytest.approx(1.3 + 0.5 * t)


def test_the_fraction_targets_initial_loss_is_the_step_zero_evaluation(
    session: Session, tmp_path: Path
) -> None:
    sweep_id, y = trained_sweep(
        session,
        tmp_path / "work",
        batch_sizes=[8, 64],
        base={"epochs": 2, "learning_rate": 0.02},
        target_fraction=0.9,
    )
    target = sweeps_service.get_sweep(session, sweep_id, tenant=DEFAULT_TENANT).target
    # linear models start at θ = 0, so the loss at step 0 is mean(y²) over the training rows
    assert target.initial_loss == pytest.approx(float(np.mean(y**2)), rel=1e-5)
    assert target.description.startswith(
        "the train loss closing 0.9 of the gap between the "
        "initial loss (the train loss evaluated at step 0"
    )
