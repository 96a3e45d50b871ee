"""The typed job reads stay in step with what they read: a job's stored config shows as a
``JobConfig`` with exactly the core's fields a client chooses, and ``JobCounts`` has one field
per status."""

from __future__ import annotations

import dataclasses
from typing import get_args

import pytest

from service.core import TrainConfig
from service.jobs.read_schemas import JobCounts
from service.jobs.schemas import JobConfig, JobCreate, JobStatus
from service.jobs.service import SERVER_FIELDS, shown_config


def test_job_config_has_the_core_config_fields_a_client_chooses() -> None:
    core = {field.name for field in dataclasses.fields(TrainConfig)}
    assert set(JobConfig.model_fields) == core - set(SERVER_FIELDS)


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"model": "mlp", "hidden_layers": [8, 4], "evaluation": {"per_decade": 4}},
        {"batch_size_schedule": {"kind": "warmup", "points": [[0, 8], [640, 32]]}},
        {"early_stopping": {"patience": 2}, "lr_schedule": {"kind": "cosine"}, "seed": 2**63 - 1},
    ],
)
def test_a_stored_config_reads_back_as_the_config_sent(fields: dict[str, object]) -> None:
    body = JobCreate(dataset_id="d", **fields)
    stored = TrainConfig.from_dict(body.train_config()).to_dict()
    shown = JobConfig.model_validate(shown_config(stored))
    assert shown == JobConfig.model_validate(body.model_dump(include=set(JobConfig.model_fields)))


def test_job_counts_has_every_status_and_adds_them_up() -> None:
    assert tuple(JobCounts.model_fields) == get_args(JobStatus)
    counts = JobCounts(queued=1, running=2, succeeded=3, failed=4, cancelled=5)
    assert (counts.total, counts.finished) == (15, 12)
    assert JobCounts().model_dump() == dict.fromkeys(get_args(JobStatus), 0)
