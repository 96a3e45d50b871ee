"""Factories: seeded data sets, datasets and jobs through the services (as the API stores them),
rows written directly through the tables to stand in for a worker's writes (a real database,
not a mock: the same rows a worker's queue operations write), and the long job of the process
tests over HTTP."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from sqlalchemy.orm import Session

from service.core import TrainConfig, Training
from service.datasets import service as datasets_service
from service.datasets.ingest import IngestLimits
from service.datasets.schemas import DatasetCreateJSON, DatasetRead
from service.db import Dataset, Job, JobEpoch, JobModel
from service.jobs import service as jobs_service
from service.jobs.read_schemas import JobCounts
from service.jobs.schemas import JobCreate
from service.keys import DEFAULT_TENANT
from service.keys import service as keys_service

LIMITS = IngestLimits(max_rows=1_000_000, max_features=1_000)
T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)

#: A job long enough to be interrupted mid-run (~40 ms an epoch, ~1.2 s in all), short
#: enough that a few of them fit in a test: an MLP, since linear models take a fused fast
#: path that runs an epoch in a few milliseconds.
LONG_JOB: dict[str, Any] = {
    "model": "mlp",
    "hidden_layers": [64, 64],
    "batch_size": 8,
    "epochs": 30,
    "learning_rate": 0.005,
}
LONG_JOB_ROWS = 20_000
#: Long enough (~40 ms an epoch in-process, seconds in all) that a signal sent after its second
#: epoch lands mid-job even on a loaded machine.
SIGNALLED_JOB: dict[str, Any] = {**LONG_JOB, "hidden_layers": (64, 64), "epochs": 60, "seed": 3}


# --- data sets ------------------------------------------------------------------------------


def regression_data(
    n_rows: int, n_features: int = 3, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """X (n, d) standard normal; y = X·w + 0.5 + small noise, w = (1, 2, …, d)."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n_rows, n_features))
    y = X @ np.arange(1.0, n_features + 1) + 0.5 + 0.1 * rng.standard_normal(n_rows)
    return X, y


def line_data(n_rows: int = 100, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The README's line: X (n, 2) standard normal; y = 3·x0 − 2·x1 + 1 + 0.1·noise.

    Written out term by term, not as ``X @ w``: a matrix product can round differently in the
    last bit, and these are the bytes the tests were written against.
    """
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n_rows, 2))
    y = 3.0 * X[:, 0] - 2.0 * X[:, 1] + 1.0 + 0.1 * rng.standard_normal(n_rows)
    return X, y


def binary_data(n_rows: int = 100, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """X (n, 2); labels 5 and 7 (not 0/1, to see the dataset's own labels come back)."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n_rows, 2))
    y = np.where(X[:, 0] + X[:, 1] > 0, 7.0, 5.0)
    return X, y


def long_job_data() -> tuple[np.ndarray, np.ndarray]:
    """The (X, y) :data:`LONG_JOB` trains on."""
    return regression_data(LONG_JOB_ROWS)


# --- datasets and jobs through the services ---------------------------------------------------


def make_dataset(
    session: Session,
    work_dir: Path,
    X: np.ndarray,
    y: np.ndarray,
    name: str = "toy",
    *,
    tenant: str = DEFAULT_TENANT,
) -> DatasetRead:
    """Store (X, y) as an inline dataset of ``tenant`` through the datasets service."""
    body = DatasetCreateJSON(name=name, X=X.tolist(), y=y.tolist())
    return datasets_service.create_from_inline(
        session, body, limits=LIMITS, work_dir=work_dir, tenant=tenant
    )


def add_dataset(
    session: Session, X: np.ndarray, y: np.ndarray, work_dir: Path, *, tenant: str = DEFAULT_TENANT
) -> str:
    """:func:`make_dataset`, committed so other processes see it; its id."""
    dataset_id = make_dataset(session, work_dir, X, y, tenant=tenant).id
    session.commit()
    return dataset_id


def submit(
    session: Session,
    dataset_id: str,
    *,
    tenant: str = DEFAULT_TENANT,
    commit: bool = False,
    **fields: Any,
) -> str:
    """Submit a job through the jobs service; with ``commit``, commit it as the API does (so
    workers see it); its id."""
    job = jobs_service.submit(session, JobCreate(dataset_id=dataset_id, **fields), tenant=tenant)
    if commit:
        session.commit()
    return job.id


# --- the long job over HTTP -----------------------------------------------------------------


def upload_long_job_data(client: httpx.Client) -> str:
    """Upload :func:`long_job_data` through the API; the dataset's id."""
    X, y = long_job_data()
    created = client.post("/v1/datasets", json={"name": "faults", "X": X.tolist(), "y": y.tolist()})
    assert created.status_code == 201, created.text
    dataset_id: str = created.json()["id"]
    return dataset_id


def submit_http(client: httpx.Client, dataset_id: str, seed: int, **overrides: Any) -> str:
    """Queue :data:`LONG_JOB` (with ``seed`` and ``overrides``) through the API; the job's id."""
    submitted = client.post(
        "/v1/jobs", json={"dataset_id": dataset_id, **LONG_JOB, "seed": seed} | overrides
    )
    assert submitted.status_code == 202, submitted.text
    job_id: str = submitted.json()["id"]
    return job_id


# --- rows as a worker writes them -----------------------------------------------------------


def set_job(session: Session, job_id: str, **values: Any) -> None:
    """Overwrite columns of a job row, as a worker's queue operations would."""
    job = session.get(Job, job_id)
    assert job is not None
    for key, value in values.items():
        setattr(job, key, value)
    session.flush()


def run_like_a_worker(
    session: Session,
    job_id: str,
    X: np.ndarray,
    y: np.ndarray,
    *,
    epochs_done: int | None = None,
    finish: bool = True,
) -> list[Any]:
    """Train the job's config on (X, y) with the core and write what a worker writes: the job
    running, one ``job_epochs`` row per epoch (record + float32 step losses), progress, and,
    with ``finish``, the model and ``succeeded``. Returns the epoch records."""
    job = session.get(Job, job_id)
    assert job is not None
    config = TrainConfig.from_dict(job.config)
    training = Training(X, y, config)
    set_job(session, job_id, status="running", attempt=1, worker_id="w1", started_at=T0)
    records = []
    for record in training:
        records.append(record)
        session.add(
            JobEpoch(
                job_id=job_id,
                epoch=record.epoch,
                record=record.to_dict(),
                step_losses=record.step_losses.astype("<f4").tobytes(),
            )
        )
        set_job(
            session,
            job_id,
            epoch=record.epoch,
            samples_seen=record.samples_seen,
            latest_train_loss=record.train_loss,
            latest_val_loss=record.val_loss,
        )
        if epochs_done is not None and len(records) >= epochs_done:
            break
    if finish:
        model = training.model
        session.add(JobModel(job_id=job_id, model=model.to_dict(), npz=model.to_npz_bytes()))
        set_job(session, job_id, status="succeeded", finished_at=T0 + timedelta(seconds=5))
    session.flush()
    return records


def trained_job(
    session: Session, work_dir: Path, X: np.ndarray, y: np.ndarray, **config: Any
) -> str:
    """A job of ``config`` on a new dataset (X, y), trained to its end as a worker would; its
    id."""
    dataset = make_dataset(session, work_dir, X, y)
    job_id = submit(session, dataset.id, **config)
    run_like_a_worker(session, job_id, X, y)
    return job_id


def epoch_row(job_id: str, epoch: int, losses: np.ndarray, **record: Any) -> JobEpoch:
    """A hand-made epoch row with ``losses`` as its step losses."""
    values: dict[str, Any] = {
        "epoch": epoch,
        "train_loss": float(np.mean(losses)),
        "val_loss": None,
        "val_rmse": None,
        "val_r2": None,
        "val_accuracy": None,
        "learning_rate": 0.01,
        "batch_size": 32,
        "steps": int(losses.shape[0]),
        "total_steps": int(losses.shape[0]) * epoch,
        "samples_seen": 32 * int(losses.shape[0]) * epoch,
        "wall_time_s": 0.5 * epoch,
        "samples_per_s": 1000.0,
        "noise_scale": None,
    }
    values.update(record)
    return JobEpoch(
        job_id=job_id,
        epoch=epoch,
        record=values,
        step_losses=np.asarray(losses, dtype="<f4").tobytes(),
    )


def make_key(session: Session, tenant: str) -> str:
    """A new API key of ``tenant``, committed (the app reads it on its own connections)."""
    key = keys_service.create_key(session, tenant=tenant).key
    session.commit()
    return key


def add_metadata_dataset(session: Session, tenant: str = DEFAULT_TENANT) -> str:
    """A dataset metadata row of ``tenant``, committed, with no bytes (the queue never reads
    them)."""
    dataset = Dataset(
        id=str(uuid.uuid4()),
        tenant=tenant,
        name="toy",
        n_rows=3,
        n_features=2,
        feature_names=["x0", "x1"],
        target_name="y",
        task="regression",
        stats={"features": []},
        source_format="csv",
        sha256="0" * 64,
        size_bytes=0,
        chunk_count=0,
    )
    session.add(dataset)
    session.commit()
    return dataset.id


def add_queued_jobs(session: Session, tenant: str, count: int, *, first_at: datetime) -> list[str]:
    """``count`` queued jobs of ``tenant`` on a new metadata dataset, one second apart from
    ``first_at``, committed; their ids."""
    dataset_id = add_metadata_dataset(session, tenant)
    ids = []
    for i in range(count):
        job = Job(
            id=str(uuid.uuid4()),
            tenant=tenant,
            dataset_id=dataset_id,
            tags=[],
            config=TrainConfig(epochs=2).to_dict(),
            status="queued",
            epochs=2,
            created_at=first_at + timedelta(seconds=i),
        )
        session.add(job)
        ids.append(job.id)
    session.commit()
    return ids


def job_counts(**counts: int) -> dict[str, int]:
    """A sweep's or a probe's ``jobs`` as the API answers it: every status, zeros included."""
    return JobCounts(**counts).model_dump()
