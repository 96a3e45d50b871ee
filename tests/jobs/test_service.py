"""The jobs service on a real database (both backends). A worker's writes are stood in for by
rows written directly through the tables (see :mod:`tests.jobs.factories`)."""

from __future__ import annotations

import io
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from service.core import FittedModel, TrainConfig
from service.datasets import service as datasets_service
from service.db import Job, JobCheckpoint, JobEpoch, JobModel
from service.errors import BadRequest, Conflict, InvalidInput, NotFound
from service.jobs import predictions
from service.jobs import service as jobs_service
from service.jobs.schemas import EvaluationIn, JobConfig, JobCreate, PredictRequest
from service.keys import DEFAULT_TENANT
from tests.support.factories import (
    T0,
    binary_data,
    epoch_row,
    line_data,
    make_dataset,
    run_like_a_worker,
    set_job,
    submit,
    trained_job,
)


@pytest.fixture
def work_dir(tmp_path: Path) -> Path:
    return tmp_path / "work"


def test_submit_queues_a_job_with_every_default_resolved(session: Session, work_dir: Path) -> None:
    dataset = make_dataset(session, work_dir, *line_data(100))
    job = jobs_service.submit(
        session, JobCreate(dataset_id=dataset.id, name="n", tags=["a", "a"]), tenant=DEFAULT_TENANT
    )
    assert job.status == "queued"
    defaults = TrainConfig().to_dict()
    del defaults["max_in_memory_bytes"]
    assert job.config == JobConfig.model_validate(defaults)
    assert job.config == JobConfig()  # the core's defaults are the API's
    assert job.tags == ["a"]
    assert job.progress.fraction == 0.0
    assert job.progress.eta_s is None
    assert job.links.self == f"/v1/jobs/{job.id}"
    assert job.links.cancel == f"/v1/jobs/{job.id}/cancel"
    row = session.get(Job, job.id)
    assert row is not None
    assert row.config == TrainConfig().to_dict()  # the worker gets the full core config
    assert row.epochs == 10
    assert row.attempt == 0


@pytest.mark.parametrize(
    ("fields", "loc"),
    [
        ({"batch_size": 81}, ["body", "batch_size"]),  # 100 rows, 20 % held out: 80 train
        ({"model": "softmax"}, ["body", "model"]),
        ({"model": "logistic"}, ["body", "model"]),
        ({"model": "mlp"}, ["body", "hidden_layers"]),
        ({"lr_schedule": {"kind": "step", "min_lr": 0.1}}, ["body", "lr_schedule", "min_lr"]),
        (
            {"early_stopping": {"monitor": "val_loss"}, "validation_split": 0.0},
            ["body", "early_stopping", "monitor"],
        ),
        ({"hidden_layers": [4]}, ["body", "hidden_layers"]),
        ({"loss": "mse", "model": "logistic"}, ["body", "loss"]),
    ],
)
def test_submit_refuses_what_cannot_run_naming_the_field(
    session: Session, work_dir: Path, fields: dict[str, object], loc: list[object]
) -> None:
    dataset = make_dataset(session, work_dir, *line_data(100))
    body = JobCreate(dataset_id=dataset.id, **({"validation_split": 0.2} | fields))
    with pytest.raises(InvalidInput) as caught:
        jobs_service.submit(session, body, tenant=DEFAULT_TENANT)
    assert [list(e.loc) for e in caught.value.errors] == [loc]
    assert session.scalar(select(func.count()).select_from(Job)) == 0


def test_submit_accepts_the_seed_examples(session: Session, work_dir: Path) -> None:
    dataset = make_dataset(session, work_dir, *line_data(200))
    first = submit(session, dataset.id, batch_size=32, epochs=10)
    second = submit(session, dataset.id, batch_size=128, epochs=5)
    assert jobs_service.get_job(session, first, tenant=DEFAULT_TENANT).config.batch_size == 32
    assert jobs_service.get_job(session, second, tenant=DEFAULT_TENANT).progress.epochs == 5


def test_submit_to_an_unknown_dataset_is_not_found(session: Session) -> None:
    with pytest.raises(NotFound, match="No dataset"):
        jobs_service.submit(session, JobCreate(dataset_id="nope"), tenant=DEFAULT_TENANT)


def test_unknown_job_is_not_found_everywhere(session: Session) -> None:
    for call in (
        lambda: jobs_service.get_job(session, "nope", tenant=DEFAULT_TENANT),
        lambda: jobs_service.cancel(session, "nope", tenant=DEFAULT_TENANT),
        lambda: jobs_service.delete_job(session, "nope", tenant=DEFAULT_TENANT),
        lambda: jobs_service.history(session, "nope", tenant=DEFAULT_TENANT),
        lambda: jobs_service.history_csv(session, "nope", tenant=DEFAULT_TENANT),
        lambda: predictions.get_model(session, "nope", tenant=DEFAULT_TENANT),
        lambda: predictions.predict(
            session, "nope", PredictRequest(X=[[1.0, 2.0]]), tenant=DEFAULT_TENANT
        ),
    ):
        with pytest.raises(NotFound, match="No job"):
            call()


def test_list_filters_and_walks_pages_newest_first(session: Session, work_dir: Path) -> None:
    a = make_dataset(session, work_dir, *line_data(50), name="a")
    b = make_dataset(session, work_dir, *line_data(50), name="b")
    ids = [submit(session, a.id, tags=["x"] if i % 2 else ["y", "x2"]) for i in range(5)]
    ids.append(submit(session, b.id, tags=["x"]))
    for i, job_id in enumerate(ids):  # distinct, known times, one tie broken by id
        set_job(session, job_id, created_at=T0 + timedelta(seconds=min(i, 4)))
    set_job(session, ids[0], status="running")

    walked, cursor = [], None
    while True:
        page = jobs_service.list_jobs(session, limit=2, cursor=cursor, tenant=DEFAULT_TENANT)
        walked += [job.id for job in page.items]
        if (cursor := page.next_cursor) is None:
            break
    tied = sorted(ids[4:], reverse=True)
    assert walked == [*tied, ids[3], ids[2], ids[1], ids[0]]

    def listed(**filters: object) -> set[str]:
        return {
            j.id
            for j in jobs_service.list_jobs(
                session, limit=100, **filters, tenant=DEFAULT_TENANT
            ).items
        }  # type: ignore[arg-type]

    assert listed(dataset_id=b.id) == {ids[5]}
    assert listed(tag="x") == {ids[1], ids[3], ids[5]}
    assert listed(tag="x2") == {ids[0], ids[2], ids[4]}
    assert listed(tag="nope") == set()
    assert listed(status="running") == {ids[0]}
    assert listed(status="queued", tag="x", dataset_id=a.id) == {ids[1], ids[3]}
    with pytest.raises(BadRequest):
        jobs_service.list_jobs(session, limit=2, cursor="garbage", tenant=DEFAULT_TENANT)


def test_cancel_queued_is_immediate_running_is_requested_finished_conflicts(
    session: Session, work_dir: Path
) -> None:
    dataset = make_dataset(session, work_dir, *line_data(50))
    queued, running, done = (submit(session, dataset.id) for _ in range(3))
    set_job(session, running, status="running", attempt=1, worker_id="w")
    set_job(session, done, status="succeeded")

    cancelled = jobs_service.cancel(session, queued, tenant=DEFAULT_TENANT)
    assert cancelled.status == "cancelled"
    assert cancelled.finished_at is not None

    requested = jobs_service.cancel(session, running, tenant=DEFAULT_TENANT)
    assert requested.status == "running"
    assert requested.cancel_requested

    for job_id in (done, queued):
        with pytest.raises(Conflict, match="already finished"):
            jobs_service.cancel(session, job_id, tenant=DEFAULT_TENANT)


def test_delete_only_finished_jobs_with_everything_they_own(
    session: Session, work_dir: Path
) -> None:
    X, y = line_data(64)
    dataset = make_dataset(session, work_dir, X, y)
    done = submit(session, dataset.id, epochs=2)
    run_like_a_worker(session, done, X, y)
    session.add(JobCheckpoint(job_id=done, epoch=2, attempt=1, data=b"ckpt"))
    queued = submit(session, dataset.id)
    running = submit(session, dataset.id)
    set_job(session, running, status="running")

    for job_id in (queued, running):
        with pytest.raises(Conflict, match="only a finished job"):
            jobs_service.delete_job(session, job_id, tenant=DEFAULT_TENANT)
    jobs_service.delete_job(session, done, tenant=DEFAULT_TENANT)
    for table in (Job, JobEpoch, JobCheckpoint, JobModel):
        column = table.id if table is Job else table.job_id  # type: ignore[attr-defined]
        assert session.scalar(select(func.count()).where(column == done)) == 0
    with pytest.raises(NotFound):
        jobs_service.delete_job(session, done, tenant=DEFAULT_TENANT)


def test_progress_and_eta_while_running(session: Session, work_dir: Path) -> None:
    dataset = make_dataset(session, work_dir, *line_data(50))
    job_id = submit(session, dataset.id, epochs=4)
    set_job(session, job_id, status="running", epoch=1, step=5, steps_per_epoch=10, started_at=T0)
    job = jobs_service.to_read(
        jobs_service.repository.get(session, job_id, tenant=DEFAULT_TENANT),  # type: ignore[arg-type]
        now=T0 + timedelta(seconds=30),
    )
    assert job.progress.fraction == pytest.approx((1 + 0.5) / 4)
    assert job.progress.eta_s == pytest.approx(30 * (1 - 0.375) / 0.375)


def test_error_and_non_finite_losses_are_served_as_codes_and_nulls(
    session: Session, work_dir: Path
) -> None:
    dataset = make_dataset(session, work_dir, *line_data(50))
    job_id = submit(session, dataset.id)
    set_job(
        session,
        job_id,
        status="failed",
        error_code="diverged",
        error_message="training diverged at epoch 2, step 3",
        latest_train_loss=1.5,
        best_val_loss=None,
    )
    job = jobs_service.get_job(session, job_id, tenant=DEFAULT_TENANT)
    assert job.error is not None
    assert (job.error.code, job.error.message) == (
        "diverged",
        "training diverged at epoch 2, step 3",
    )
    assert job.latest.train_loss == 1.5
    assert job.best.val_loss is None


def test_history_while_running_reads_the_epochs_written_so_far(
    session: Session, work_dir: Path
) -> None:
    dataset = make_dataset(session, work_dir, *line_data(50))
    job_id = submit(session, dataset.id, epochs=5)
    set_job(session, job_id, status="running", epoch=2)
    spike = np.full(1000, 0.25, dtype="<f4")
    spike[500] = 99.0
    sqlite = session.get_bind().dialect.name == "sqlite"
    session.add_all(
        [
            epoch_row(job_id, 1, np.linspace(1, 0.5, 1000), val_rmse=0.7, val_r2=0.5),
            # PostgreSQL's JSON refuses NaN at write; SQLite stores it, so reads must drop it.
            epoch_row(job_id, 2, spike, val_rmse=0.6, val_r2=float("nan") if sqlite else None),
        ]
    )
    session.flush()

    full = jobs_service.history(session, job_id, tenant=DEFAULT_TENANT)
    assert full.status == "running"
    assert full.task == "regression"
    assert full.epoch == [1, 2]
    assert full.val_rmse == [0.7, 0.6]
    assert full.val_r2 == [0.5, None]  # NaN is never served
    assert full.val_accuracy is None
    assert full.steps.step == list(range(1, 2001))
    assert full.total_steps == 2000
    assert not full.downsampled

    small = jobs_service.history(session, job_id, max_points=50, tenant=DEFAULT_TENANT)
    assert len(small.steps.step) <= 50
    assert small.downsampled
    assert 99.0 in small.steps.loss
    assert small.steps.step[small.steps.loss.index(99.0)] == 1501


def test_history_of_a_real_run_and_its_csv(session: Session, work_dir: Path) -> None:
    X, y = binary_data(80)
    dataset = make_dataset(session, work_dir, X, y)
    job_id = submit(
        session, dataset.id, model="logistic", epochs=3, batch_size=16, validation_split=0.25
    )
    records = run_like_a_worker(session, job_id, X, y)
    history = jobs_service.history(session, job_id, tenant=DEFAULT_TENANT)
    assert history.task == "binary"
    assert history.val_rmse is None
    assert history.val_accuracy == [r.val_accuracy for r in records]
    assert history.train_loss == [r.train_loss for r in records]
    expected = np.concatenate([r.step_losses for r in records]).astype(np.float32)
    assert np.asarray(history.steps.loss, dtype=np.float32).tobytes() == expected.tobytes()

    text = jobs_service.history_csv(session, job_id, tenant=DEFAULT_TENANT)
    lines = text.splitlines()
    assert len(lines) == 1 + 3
    assert lines[0].startswith("epoch,train_loss,val_loss,val_rmse,val_r2,val_accuracy,")
    assert [line.split(",")[0] for line in lines[1:]] == ["1", "2", "3"]
    steps = jobs_service.history_csv(
        session, job_id, table="steps", tenant=DEFAULT_TENANT
    ).splitlines()
    assert steps[0] == "step,loss"
    assert len(steps) == 1 + expected.shape[0]


def test_model_and_predict_wait_for_success(session: Session, work_dir: Path) -> None:
    dataset = make_dataset(session, work_dir, *line_data(50))
    job_id = submit(session, dataset.id)
    for status in ("queued", "running", "failed", "cancelled"):
        set_job(session, job_id, status=status)
        with pytest.raises(Conflict, match=f"is {status}"):
            predictions.get_model(session, job_id, tenant=DEFAULT_TENANT)
        with pytest.raises(Conflict):
            predictions.get_model_npz(session, job_id, tenant=DEFAULT_TENANT)
        with pytest.raises(Conflict):
            predictions.predict(
                session, job_id, PredictRequest(X=[[1.0, 2.0]]), tenant=DEFAULT_TENANT
            )


def test_model_and_predictions_of_a_regression(session: Session, work_dir: Path) -> None:
    X, y = line_data(200)
    job_id = trained_job(session, work_dir, X, y, epochs=30, learning_rate=0.05, standardize=True)

    model = predictions.get_model(session, job_id, tenant=DEFAULT_TENANT)
    assert model.feature_names == ["x0", "x1"]
    assert set(model.params.root) == {"W", "b"}
    assert model.standardization is not None
    fitted = FittedModel.from_npz_bytes(
        predictions.get_model_npz(session, job_id, tenant=DEFAULT_TENANT)
    )

    rows = [[0.0, 0.0], [1.0, -1.0]]
    answer = predictions.predict(session, job_id, PredictRequest(X=rows), tenant=DEFAULT_TENANT)
    assert answer.probabilities is None
    assert answer.predictions == fitted.predict(np.array(rows)).astype(float).tolist()
    # The fit recovers y = 3·x0 − 2·x1 + 1 closely.
    assert answer.predictions == pytest.approx([1.0, 6.0], abs=0.1)


def test_predictions_of_a_classifier_are_the_datasets_labels(
    session: Session, work_dir: Path
) -> None:
    X, y = binary_data(200)
    job_id = trained_job(session, work_dir, X, y, model="logistic", epochs=20, learning_rate=0.5)
    answer = predictions.predict(
        session, job_id, PredictRequest(X=[[2.0, 2.0], [-2.0, -2.0]]), tenant=DEFAULT_TENANT
    )
    assert answer.predictions == [7.0, 5.0]
    assert answer.classes == [5.0, 7.0]
    assert answer.probabilities is not None
    for p, label in zip(answer.probabilities, answer.predictions, strict=True):
        assert sum(p) == pytest.approx(1.0)
        assert p[answer.classes.index(label)] > 0.5


def test_predict_refuses_a_wrong_row_width_naming_the_expected_one(
    session: Session, work_dir: Path
) -> None:
    X, y = line_data(50)
    job_id = trained_job(session, work_dir, X, y, epochs=1)
    with pytest.raises(InvalidInput, match="must have 2 values") as caught:
        predictions.predict(
            session, job_id, PredictRequest(X=[[1.0, 2.0], [1.0, 2.0, 3.0]]), tenant=DEFAULT_TENANT
        )
    assert [list(e.loc) for e in caught.value.errors] == [["body", "X", 1]]


def test_predict_refuses_inputs_that_overflow_the_model(session: Session, work_dir: Path) -> None:
    X, y = line_data(50)
    job_id = trained_job(session, work_dir, X, y, epochs=1)
    with pytest.raises(InvalidInput, match="not finite"):
        predictions.predict(
            session, job_id, PredictRequest(X=[[1e300, -1e300]]), tenant=DEFAULT_TENANT
        )


def test_dataset_in_use_cannot_be_deleted(session: Session, work_dir: Path) -> None:
    dataset = make_dataset(session, work_dir, *line_data(50))
    job_id = submit(session, dataset.id)
    with pytest.raises(Conflict, match=f"queued job '{job_id}'"):
        datasets_service.delete_dataset(session, dataset.id, tenant=DEFAULT_TENANT)
    set_job(session, job_id, status="running")
    with pytest.raises(Conflict, match=f"running job '{job_id}'"):
        datasets_service.delete_dataset(session, dataset.id, tenant=DEFAULT_TENANT)
    set_job(session, job_id, status="succeeded")
    with pytest.raises(Conflict, match="delete them first"):
        datasets_service.delete_dataset(session, dataset.id, tenant=DEFAULT_TENANT)
    jobs_service.delete_job(session, job_id, tenant=DEFAULT_TENANT)
    datasets_service.delete_dataset(session, dataset.id, tenant=DEFAULT_TENANT)
    with pytest.raises(NotFound):
        datasets_service.get_dataset(session, dataset.id)


def test_npz_bytes_are_the_stored_bytes(session: Session, work_dir: Path) -> None:
    X, y = line_data(50)
    job_id = trained_job(session, work_dir, X, y, epochs=1)
    stored = session.get(JobModel, job_id)
    assert stored is not None
    data = predictions.get_model_npz(session, job_id, tenant=DEFAULT_TENANT)
    assert data == stored.npz
    assert np.load(io.BytesIO(data), allow_pickle=False)["theta"].shape == (3,)


def test_history_serves_the_recorded_evaluations_in_step_order(
    session: Session, work_dir: Path
) -> None:
    X, y = line_data(100)
    dataset = make_dataset(session, work_dir, X, y)
    job_id = submit(
        session,
        dataset.id,
        epochs=2,
        batch_size=16,
        validation_split=0.2,
        evaluation={"on": "validation", "per_decade": 4},
    )
    job = jobs_service.get_job(session, job_id, tenant=DEFAULT_TENANT)
    assert job.config.evaluation == EvaluationIn(on="validation", per_decade=4, max_rows=8192)
    records = run_like_a_worker(session, job_id, X, y)
    history = jobs_service.history(session, job_id, tenant=DEFAULT_TENANT)
    points = [point for r in records for point in r.evaluations]
    # 5 steps an epoch (80 training rows): step 0, log steps 1, 2, 3 (per_decade 4: 1, 1.8,
    # 3.2, 5.6 rounded), the epoch ends 5 and 10, and 6 (10^(3/4) = 5.6)
    assert history.evaluations.step == [0, 1, 2, 3, 5, 6, 10] == [p.step for p in points]
    assert history.evaluations.samples == [0, 16, 32, 48, 80, 96, 160]
    assert history.evaluations.loss == [p.loss for p in points]
    assert history.evaluations.loss[4] == pytest.approx(records[0].val_loss, rel=1e-6)
    assert history.batch_size_reason == [None, None]


def test_history_without_evaluations_is_empty_and_bad_points_are_dropped(
    session: Session, work_dir: Path
) -> None:
    dataset = make_dataset(session, work_dir, *line_data(100))
    plain = submit(session, dataset.id, epochs=1)
    session.add(epoch_row(plain, 1, np.ones(4, np.float32)))
    by_hand = submit(session, dataset.id, epochs=2)
    session.add(
        epoch_row(
            by_hand,
            1,
            np.ones(4, np.float32),
            evaluations=[
                {"step": 0, "samples": 0, "loss": 2.0},
                {"step": 1, "samples": 32, "loss": None},  # non-finite when stored
                {"step": 4, "samples": 128, "loss": 1.0},
            ],
        )
    )
    session.add(
        epoch_row(
            by_hand,
            2,
            np.ones(4, np.float32),
            evaluations=[{"step": 4, "samples": 128, "loss": 0.9}, {"step": 8, "samples": 256}],
        )
    )
    session.flush()
    empty = jobs_service.history(session, plain, tenant=DEFAULT_TENANT).evaluations
    assert (empty.step, empty.samples, empty.loss) == ([], [], [])
    kept = jobs_service.history(session, by_hand, tenant=DEFAULT_TENANT).evaluations
    assert (kept.step, kept.samples, kept.loss) == ([0, 4], [0, 128], [2.0, 1.0])


def test_an_adaptive_job_records_why_each_epoch_ran_at_its_batch_size(
    session: Session, work_dir: Path
) -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(400, 3))
    y = X @ np.full(3, 0.05) + rng.normal(size=400)  # noise-dominated: a large noise scale
    dataset = make_dataset(session, work_dir, X, y)
    job_id = submit(
        session,
        dataset.id,
        epochs=3,
        batch_size=8,
        batch_size_schedule={"kind": "adaptive", "max_batch_size": 32},
    )
    run_like_a_worker(session, job_id, X, y)
    history = jobs_service.history(session, job_id, tenant=DEFAULT_TENANT)
    assert history.batch_size == [8, 16, 32]
    reasons = history.batch_size_reason
    assert reasons[0] == "started at 8 (batch_size 8)"
    assert all(reason is not None and reason.startswith("grew ") for reason in reasons[1:])
    assert all(noise is not None for noise in history.noise_scale)  # adaptive measures it


@pytest.mark.parametrize(
    ("fields", "loc"),
    [
        ({"evaluation": {"on": "validation"}}, ["body", "evaluation", "on"]),
        (
            {"batch_size_schedule": {"kind": "grow", "min_batch_size": 4}},
            ["body", "batch_size_schedule", "min_batch_size"],
        ),
        (
            {"batch_size_schedule": {"kind": "adaptive", "min_batch_size": 9, "max_batch_size": 8}},
            ["body", "batch_size_schedule", "min_batch_size"],
        ),
    ],
)
def test_submit_refuses_evaluations_and_schedules_that_cannot_run(
    session: Session, work_dir: Path, fields: dict[str, object], loc: list[object]
) -> None:
    dataset = make_dataset(session, work_dir, *line_data(100))
    with pytest.raises(InvalidInput) as caught:
        jobs_service.submit(
            session, JobCreate(dataset_id=dataset.id, **fields), tenant=DEFAULT_TENANT
        )
    assert [list(e.loc) for e in caught.value.errors] == [loc]


@pytest.mark.parametrize(
    "evaluation",
    [{"on": "test"}, {"per_decade": 0}, {"max_rows": 0}, {"per_decade": 1001}, {"every": 2}],
)
def test_the_evaluation_field_has_bounds_and_forbids_unknown_keys(
    evaluation: dict[str, object],
) -> None:
    with pytest.raises(ValidationError) as caught:
        JobCreate(dataset_id="d", evaluation=evaluation)  # type: ignore[arg-type]
    assert caught.value.errors()[0]["loc"][0] == "evaluation"
