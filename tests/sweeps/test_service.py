"""The sweeps service on a real database (both backends): creating queues exactly the expected
jobs in one transaction, every refusal names its field, cancel, list."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from service.core.schedules import scale_lr
from service.db import Job
from service.db.tables import Sweep
from service.errors import BadRequest, Conflict, InvalidInput, NotFound
from service.jobs import service as jobs_service
from service.keys import DEFAULT_TENANT
from service.sweeps import orchestration
from service.sweeps import service as sweeps_service
from service.sweeps.repository import jobs_of
from tests.support.sweeps import create, dataset, finish_with_crossing


@pytest.fixture
def dataset_id(session: Session, tmp_path: Path) -> str:
    return dataset(session, tmp_path / "work", n_rows=200)


def count(session: Session, table: type[Any]) -> int:
    return int(session.scalar(select(func.count()).select_from(table)) or 0)


def test_create_queues_batch_sizes_times_rates_times_seeds_jobs(
    session: Session, dataset_id: str
) -> None:
    sweep = create(
        session,
        dataset_id,
        name="toy",
        base={"epochs": 3, "seed": 7, "tags": ["mine"]},
        batch_sizes=[8, 32, 64],
        learning_rates=[0.01, 0.1],
        seeds=2,
    )

    jobs = jobs_of(session, sweep.id)
    assert len(jobs) == 3 * 2 * 2
    points = sorted(
        (p["batch_size"], p["learning_rate"], p["seed"], p["round"])
        for p in (job.sweep_point or {} for job in jobs)
    )
    assert points == sorted(
        (b, lr, s, 0) for b in (8, 32, 64) for lr in (0.01, 0.1) for s in (7, 8)
    )
    for job in jobs:
        point = job.sweep_point or {}
        assert job.status == "queued"
        assert job.sweep_id == sweep.id
        assert job.tags == ["mine", f"sweep:{sweep.id}"]
        assert job.config["batch_size"] == point["batch_size"]
        assert job.config["learning_rate"] == point["learning_rate"]
        assert job.config["seed"] == point["seed"]
        assert job.config["epochs"] == 3
        # evaluations of the target's loss, so steps to target interpolate within epochs
        assert job.config["evaluation"] == {"on": "train", "per_decade": 8, "max_rows": 8192}
    # Ordinary jobs: the jobs list finds them by the sweep's tag.
    listed = jobs_service.list_jobs(
        session, limit=100, tag=f"sweep:{sweep.id}", tenant=DEFAULT_TENANT
    )
    assert len(listed.items) == 12
    assert sweep.status == "running"
    assert sweep.partial is True
    assert sweep.lr_method == "given"
    assert sweep.spec.target_fraction == "auto"
    assert sweep.target.loss is None  # no history yet
    assert [p.batch_size for p in sweep.points] == [8, 32, 64]
    assert sweep.fit is not None
    assert sweep.fit.reason.startswith("only 0 of 3 batch sizes reached the target")


def test_scaled_rates_follow_the_rule_and_are_reported_as_scaled(
    session: Session, dataset_id: str
) -> None:
    sweep = create(
        session,
        dataset_id,
        base={"learning_rate": 0.01, "lr_scaling": "sqrt", "reference_batch_size": 16},
        batch_sizes=[4, 16, 64],
    )
    assert sweep.lr_method == "scaled"
    jobs = jobs_of(session, sweep.id)
    assert len(jobs) == 3
    for job in jobs:
        point = job.sweep_point or {}
        assert point["learning_rate"] == pytest.approx(
            scale_lr(0.01, point["batch_size"], 16, "sqrt")
        )
        assert job.config["learning_rate"] == 0.01  # the core scales it
        assert job.config["lr_scaling"] == "sqrt"


def test_a_point_that_cannot_run_refuses_the_sweep_and_leaves_nothing(
    session: Session, dataset_id: str
) -> None:
    session.commit()  # the dataset stays; what the sweep adds must not
    with pytest.raises(InvalidInput) as raised:
        create(session, dataset_id, batch_sizes=[8, 32, 500], learning_rates=[0.01, 0.1])
    assert [e.loc for e in raised.value.errors] == [("body", "batch_sizes", 2)]
    assert "larger than the 200 training rows" in raised.value.errors[0].msg
    assert raised.value.detail.startswith("The sweep cannot run: batch_sizes[2]: 500 is larger")
    # The first points were inserted before the refusal: the transaction takes them back.
    session.rollback()
    assert count(session, Sweep) == 0
    assert count(session, Job) == 0


@pytest.mark.parametrize(
    ("fields", "loc", "words"),
    [
        ({"batch_sizes": [8, 16, 8]}, ("body", "batch_sizes", 2), "appears twice"),
        (
            {"batch_sizes": [8, 16], "learning_rates": [0.1, 0.2, 0.1]},
            ("body", "learning_rates", 2),
            "appears twice",
        ),
        (
            {"batch_sizes": [8, 16], "learning_rates": [0.1], "lr_search": {"start": 0.1}},
            ("body", "lr_search"),
            "not both",
        ),
        (
            {"batch_sizes": [8, 16], "target_loss": 0.1, "target_fraction": 0.5},
            ("body", "target_loss"),
            "not both",
        ),
        (
            {"batch_sizes": [8, 16], "target_on": "validation"},
            ("body", "target_on"),
            "validation_split",
        ),
        (
            {
                "batch_sizes": [8, 16],
                "learning_rates": [0.1],
                "base": {"lr_scaling": "linear"},
            },
            ("body", "base", "lr_scaling"),
            "leave it 'none'",
        ),
        (
            {"batch_sizes": [8, 16], "base": {"evaluation": {"on": "validation"}}},
            ("body", "base", "evaluation", "on"),
            "set it to target_on",
        ),
        (
            {"batch_sizes": [8, 16], "base": {"model": "softmax"}},
            ("body", "base", "model"),
            "regression target",
        ),
        (
            {"batch_sizes": [8, 16], "base": {"tags": [f"t{i}" for i in range(20)]}},
            ("body", "base", "tags"),
            "at most 20",
        ),
        (
            {
                "batch_sizes": list(range(1, 13)),
                "learning_rates": [0.01 * (i + 1) for i in range(12)],
                "seeds": 3,
            },
            ("body", "batch_sizes"),
            "432 jobs",
        ),
    ],
)
def test_every_refusal_names_its_field(
    session: Session, dataset_id: str, fields: dict[str, Any], loc: tuple[Any, ...], words: str
) -> None:
    with pytest.raises(InvalidInput) as raised:
        create(session, dataset_id, **fields)
    assert raised.value.errors[0].loc == loc
    assert words in raised.value.errors[0].msg


def test_unknown_dataset_is_404(session: Session) -> None:
    with pytest.raises(NotFound):
        create(session, "no-such-dataset", batch_sizes=[8, 16])


def test_get_unknown_sweep_is_404(session: Session) -> None:
    with pytest.raises(NotFound):
        sweeps_service.get_sweep(session, "no-such-sweep", tenant=DEFAULT_TENANT)
    with pytest.raises(NotFound):
        sweeps_service.cancel(session, "no-such-sweep", tenant=DEFAULT_TENANT)


def test_cancel_cancels_queued_points_flags_running_ones_and_then_409(
    session: Session, dataset_id: str
) -> None:
    sweep = create(session, dataset_id, batch_sizes=[8, 16, 32])
    done, running, queued = jobs_of(session, sweep.id)
    finish_with_crossing(session, done, 20.0)
    running.status = "running"
    session.flush()

    read = sweeps_service.cancel(session, sweep.id, tenant=DEFAULT_TENANT)

    assert read.status == "cancelled"
    assert read.finished_at is not None
    statuses = {job.id: (job.status, job.cancel_requested) for job in jobs_of(session, sweep.id)}
    assert statuses == {
        done.id: ("succeeded", False),
        running.id: ("running", True),
        queued.id: ("cancelled", True),
    }
    with pytest.raises(Conflict):
        sweeps_service.cancel(session, sweep.id, tenant=DEFAULT_TENANT)
    # A cancelled sweep never advances, whatever its jobs do.
    assert orchestration.advance(session, sweep.id) is False


def test_list_pages_newest_first(session: Session, dataset_id: str) -> None:
    ids = [create(session, dataset_id, batch_sizes=[8, 16]).id for _ in range(3)]
    first = sweeps_service.list_sweeps(session, limit=2, tenant=DEFAULT_TENANT)
    assert [item.id for item in first.items] == ids[::-1][:2]
    assert first.next_cursor is not None
    second = sweeps_service.list_sweeps(
        session, limit=2, cursor=first.next_cursor, tenant=DEFAULT_TENANT
    )
    assert [item.id for item in second.items] == [ids[0]]
    assert second.next_cursor is None
    with pytest.raises(BadRequest):
        sweeps_service.list_sweeps(session, limit=2, cursor="not-a-cursor", tenant=DEFAULT_TENANT)


def test_points_keep_the_bases_evaluation_density_on_the_targets_loss(
    session: Session, dataset_id: str
) -> None:
    sweep = create(
        session,
        dataset_id,
        base={
            "epochs": 2,
            "validation_split": 0.2,
            "evaluation": {"on": "validation", "per_decade": 3},
        },
        batch_sizes=[8, 16],
        target_on="validation",
    )
    for job in jobs_of(session, sweep.id):
        assert job.config["evaluation"] == {"on": "validation", "per_decade": 3, "max_rows": 8192}
