"""Answers a sweep can stand behind: the ``auto`` target, B_simple read at the target, and the
confidence of each recommendation — on hand-written histories through the real tables."""

from __future__ import annotations

import dataclasses
import math
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy.orm import Session

from service.db import Job
from service.keys import DEFAULT_TENANT
from service.science import (
    CriticalBatchFit,
    Evidence,
    Interval,
    SweepPoint,
    TargetCrossing,
    fit_critical_batch,
    recommend,
)
from service.sweeps import orchestration
from service.sweeps import service as sweeps_service
from service.sweeps.read_schemas import SweepRead
from service.sweeps.repository import jobs_of
from tests.support.factories import T0, epoch_row, set_job
from tests.support.sweeps import create, dataset

BATCH_SIZES = [8, 32, 128, 512]
B_NOISE = 64.0
STEPS_PER_EPOCH = 10
EPOCHS = 20
L0 = 2.0
#: B_simple = NOISE_K / loss at every measurement: a power law, exact in log–log.
NOISE_K = 30.0
TRAIN_ROWS = 1000  # the dataset's rows: no validation split by default


def finish_exponential(session: Session, job: Job, tau: float, floor: float = 0.0) -> None:
    """Epochs of L(s) = floor + (L0 − floor)·exp(−s/τ), evaluated at every step, each epoch
    carrying a noise-scale record B_simple = NOISE_K / L at its end; the job succeeded."""
    set_job(session, job.id, status="running", attempt=1, worker_id="w1", started_at=T0)
    for epoch in range(1, EPOCHS + 1):
        first = (epoch - 1) * STEPS_PER_EPOCH
        steps = range(0 if epoch == 1 else first + 1, epoch * STEPS_PER_EPOCH + 1)
        evaluations = [
            {"step": s, "samples": 8 * s, "loss": floor + (L0 - floor) * math.exp(-s / tau)}
            for s in steps
        ]
        end_loss = evaluations[-1]["loss"]
        session.add(
            epoch_row(
                job.id,
                epoch,
                np.full(STEPS_PER_EPOCH, end_loss, dtype=np.float32),
                train_loss=end_loss,
                total_steps=epoch * STEPS_PER_EPOCH,
                samples_seen=epoch * STEPS_PER_EPOCH * 8,
                evaluations=evaluations,
                noise_scale={
                    "b_simple": NOISE_K / end_loss,
                    "b_simple_corrected": None,
                    "trace_sigma": NOISE_K / end_loss,
                    "grad_sq_norm": 1.0,
                    "loss_level": end_loss,
                    "n_samples": 200,
                },
            )
        )
    set_job(
        session, job.id, status="succeeded", epoch=EPOCHS, finished_at=T0 + timedelta(seconds=5)
    )
    session.flush()


def run_sweep(session: Session, tmp_path: Path, tau: float, **fields: object) -> SweepRead:
    """A one-rate sweep whose batch B decays with τ_B = τ (1 + B_NOISE/B): steps to any
    target are τ_B ln(L0/T), so S(B) = S_min (1 + B_NOISE/B) exactly."""
    dataset_id = dataset(session, tmp_path / "work", n_rows=TRAIN_ROWS)
    sweep = create(session, dataset_id, batch_sizes=BATCH_SIZES, learning_rates=[0.01], **fields)
    for job in jobs_of(session, sweep.id):
        batch_size = (job.sweep_point or {})["batch_size"]
        finish_exponential(session, job, tau * (1 + B_NOISE / batch_size))
    orchestration.advance(session, sweep.id)
    return sweeps_service.get_sweep(session, sweep.id, tenant=DEFAULT_TENANT)


def test_auto_chooses_the_deepest_target_every_point_reaches_with_enough_steps(
    session: Session, tmp_path: Path
) -> None:
    read = run_sweep(session, tmp_path, tau=4.0)
    target = read.target
    assert target.method == "auto"
    # Batch 8 (τ = 36) ends 200 steps at L0·e^(−5.6): it reaches 0.995 of the gap, not 0.999.
    assert target.fraction == 0.995
    by_fraction = {c.fraction: c for c in target.candidates}
    assert by_fraction[0.999].reached_by_all is False
    assert by_fraction[0.995].reached_by_all is True
    assert by_fraction[0.995].chosen is True
    assert [c.fraction for c in target.candidates] == [0.999, 0.995]  # deepest first, then stop
    assert "auto chose f = 0.995" in target.description
    assert "0.999 was not reached by every tuned batch size" in target.description
    fit = read.fit
    assert fit is not None
    assert fit.b_noise == pytest.approx(B_NOISE, rel=0.02)
    assert fit.s_min == pytest.approx(4.0 * math.log(L0 / target.loss), rel=0.02)
    assert fit.excluded == []


def test_auto_never_drops_a_batch_size_that_misses_a_deeper_target(
    session: Session, tmp_path: Path
) -> None:
    """Batch 512 stalls at a floor between the 0.9 and 0.95 targets, its lowest floor at its
    highest rate: at a deep target it would rank by best loss and fall to the edge of its
    rates — out of the fit — so ``auto`` must stop at 0.9, where every batch size is tuned."""
    dataset_id = dataset(session, tmp_path / "work", n_rows=TRAIN_ROWS)
    rates = [0.01, 0.02, 0.04]
    sweep = create(session, dataset_id, batch_sizes=BATCH_SIZES, learning_rates=rates)
    for job in jobs_of(session, sweep.id):
        point = job.sweep_point or {}
        batch_size, rate = point["batch_size"], point["learning_rate"]
        tau = 4.0 * (1 + B_NOISE / batch_size) * (1 + abs(math.log2(rate / 0.02)))
        floor = {0.01: 0.15, 0.02: 0.14, 0.04: 0.13}[rate] if batch_size == 512 else 0.0
        finish_exponential(session, job, tau, floor)
    orchestration.advance(session, sweep.id)
    read = sweeps_service.get_sweep(session, sweep.id, tenant=DEFAULT_TENANT)
    assert read.target.fraction == 0.9
    assert [c.reached_by_all for c in read.target.candidates] == [False] * 6 + [True]
    assert read.fit is not None
    assert read.fit.excluded == []
    assert 512 in read.fit.batch_sizes
    assert all(point.lr_interior for point in read.points)


def test_auto_says_so_when_no_target_gives_enough_steps(session: Session, tmp_path: Path) -> None:
    read = run_sweep(session, tmp_path, tau=0.5)
    target = read.target
    # every point reaches even 0.999, but S_min = 0.5 ln(1000) ≈ 3.5 steps
    assert target.fraction == 0.999
    assert "no target of the ladder gave S_min ≥ 10 steps" in target.description
    assert read.fit is not None
    assert read.fit.b_noise is None
    assert "under the 10 a fit needs" in read.fit.reason
    assert "an absolute target_loss nearer the best loss reached" in read.fit.reason


def test_an_explicit_fraction_is_kept(session: Session, tmp_path: Path) -> None:
    read = run_sweep(session, tmp_path, tau=4.0, target_fraction=0.9)
    assert (read.target.method, read.target.fraction, read.target.candidates) == (
        "fraction",
        0.9,
        [],
    )


def test_b_simple_is_read_at_the_targets_loss_level(session: Session, tmp_path: Path) -> None:
    read = run_sweep(session, tmp_path, tau=4.0)
    at_target = read.noise_scale_at_target
    assert at_target is not None
    loss = read.target.loss
    assert loss is not None
    assert at_target.loss_level == loss
    for point in at_target.points:
        # the measurements follow B = K/L exactly, so log–log interpolation recovers K/T
        assert point.b_simple == pytest.approx(NOISE_K / loss, rel=1e-9), point
        assert point.runs == 1
    assert at_target.b_simple == pytest.approx(NOISE_K / loss, rel=1e-9)
    assert at_target.spread == pytest.approx([NOISE_K / loss] * 2, rel=1e-9)
    assert at_target.b_simple_corrected == pytest.approx(
        1.0 / (1.0 / at_target.b_simple + 1.0 / TRAIN_ROWS)
    )


def _fit(s_min: float, b_noise: float, ci: tuple[float | None, float | None]) -> CriticalBatchFit:
    points = [
        SweepPoint(B, (TargetCrossing(s_min * (1 + b_noise / B), 0.0, 0.0, 1.0),))
        for B in (8, 16, 32, 64, 128, 256)
    ]
    fit = fit_critical_batch(points, rng=np.random.default_rng(0), n_resamples=0)
    return dataclasses.replace(fit, b_noise_ci=Interval(*ci))


def test_a_knee_on_tuned_rates_a_tight_interval_and_two_seeds_is_high_confidence() -> None:
    knee = recommend([], _fit(100.0, 50.0, (40.0, 70.0)), Evidence(seeds=2)).knee
    assert (knee.batch_size, knee.confidence) == (64, "high")
    assert all(reason.startswith("high: ") for reason in knee.confidence_reasons)


@pytest.mark.parametrize(
    ("evidence", "ci", "confidence", "why"),
    [
        (Evidence(seeds=1), (40.0, 70.0), "medium", "medium: one seed per point"),
        (Evidence(seeds=2, excluded=(512,)), (40.0, 70.0), "medium", "medium: batch sizes 512"),
        (Evidence(seeds=2), (10.0, 150.0), "medium", "medium: B_noise's interval spans 15×"),
    ],
)
def test_each_weaker_piece_of_evidence_lowers_the_knee_to_medium(
    evidence: Evidence, ci: tuple[float, float], confidence: str, why: str
) -> None:
    knee = recommend([], _fit(100.0, 50.0, ci), evidence).knee
    assert (knee.batch_size, knee.confidence) == (64, confidence)
    assert any(reason.startswith(why) for reason in knee.confidence_reasons)


@pytest.mark.parametrize(
    ("evidence", "ci", "why"),
    [
        (Evidence(seeds=2, tuned=False), (40.0, 70.0), "the learning rate was scaled"),
        (Evidence(seeds=2), (40.0, None), "B_noise's interval is not bounded"),
    ],
)
def test_a_low_confidence_knee_is_not_named(
    evidence: Evidence, ci: tuple[float, float | None], why: str
) -> None:
    knee = recommend([], _fit(100.0, 50.0, ci), evidence).knee
    assert (knee.batch_size, knee.position, knee.confidence) == (None, "within", "low")
    assert knee.reason.startswith("no knee named: B_noise ≈ 50")
    assert why in knee.reason


def point(batch_size: int, *seconds: float | None) -> SweepPoint:
    crossings = tuple(
        None if t is None else TargetCrossing(10.0, 10.0 * batch_size, 1.0, t) for t in seconds
    )
    return SweepPoint(batch_size, crossings)


def test_the_fastest_carries_its_confidence() -> None:
    fit = _fit(100.0, 50.0, (40.0, 70.0))
    clear = recommend([point(8, 1.0, 1.1), point(16, 3.0, 3.2)], fit, Evidence(seeds=2))
    assert (clear.fastest.batch_size, clear.fastest.confidence) == (8, "high")
    tie = recommend([point(8, 1.0, 1.1), point(16, 1.06, 1.1)], fit, Evidence(seeds=2))
    assert tie.fastest.confidence == "low"
    assert "low: within 10% of batch 16: a tie" in tie.fastest.confidence_reasons
    edge = recommend([point(8, 1.0, 1.1), point(16, 3.0, 3.2)], fit, Evidence(2, (8,)))
    assert edge.fastest.confidence == "low"
    # a failed seed is a None crossing: that point is never the fastest
    failed = recommend([point(8, 1.0, None), point(16, 3.0, 3.2)], fit, Evidence(seeds=2))
    assert failed.fastest.batch_size == 16
