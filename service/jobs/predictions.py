"""A succeeded job's fitted model, as JSON or ``.npz`` bytes, and predictions from it.

:func:`predict_rows` needs no database, so a process without one can run it: the API decodes
large prediction bodies in a child process (:func:`predict_json`), which sends back bytes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from pydantic import TypeAdapter, ValidationError
from sqlalchemy.orm import Session

from service.core import FittedModel
from service.datasets import service as datasets_service
from service.db import Job
from service.errors import Conflict, FieldError, InvalidInput, invalid_body
from service.jobs import repository
from service.jobs.read_schemas import ModelRead, PredictResponse
from service.jobs.schemas import PredictRequest
from service.jobs.service import get_row, shown_config

__all__ = ["get_model", "get_model_npz", "predict", "predict_json", "predict_rows"]


def _model_row_bytes(
    session: Session, job_id: str, *, tenant: str
) -> tuple[Job, dict[str, Any], bytes]:
    job = get_row(session, job_id, tenant=tenant)
    row = repository.model(session, job_id) if job.status == "succeeded" else None
    if row is None:
        raise Conflict(
            f"Job {job_id!r} is {job.status}: a model exists only once the job has succeeded."
        )
    return job, row.model, row.npz


def get_model(session: Session, job_id: str, *, tenant: str) -> ModelRead:
    """A succeeded job's model as JSON; 409 until the job has succeeded."""
    job, model, _ = _model_row_bytes(session, job_id, tenant=tenant)
    dataset = datasets_service.get_dataset(session, job.dataset_id)
    return ModelRead(
        job_id=job.id,
        model=model["model"],
        task=model["task"],
        n_features=model["n_features"],
        feature_names=dataset.feature_names,
        target=dataset.target,
        config=shown_config(model["config"]),
        params=model["params"],
        standardization=model["standardization"],
        classes=model["classes"],
    )


def get_model_npz(session: Session, job_id: str, *, tenant: str) -> bytes:
    """A succeeded job's model as ``.npz`` bytes (``FittedModel.from_npz_bytes`` reads them)."""
    return _model_row_bytes(session, job_id, tenant=tenant)[2]


def predict(session: Session, job_id: str, body: PredictRequest, *, tenant: str) -> PredictResponse:
    """Predictions for ``body.X`` in the dataset's own labels (and class probabilities for
    classifiers); 422 naming the expected width when a row has the wrong number of values."""
    return predict_rows(get_model_npz(session, job_id, tenant=tenant), body.X)


_PREDICT_JSON = TypeAdapter(PredictResponse)


def predict_json(raw: bytes, npz: bytes) -> bytes:
    """:func:`predict_rows` for a ``PredictRequest`` JSON body, answered as JSON bytes: the API
    runs a large body in a child process, which then sends back only bytes. Invalid JSON or
    rows are :class:`InvalidInput` with ``("body", ...)`` locations, as FastAPI reports them."""
    try:
        body = PredictRequest.model_validate_json(raw)
    except ValidationError as exc:
        raise invalid_body(exc.errors()) from None
    return _PREDICT_JSON.dump_json(predict_rows(npz, body.X), by_alias=True)


def predict_rows(npz: bytes, rows: Sequence[Sequence[float]]) -> PredictResponse:
    """:func:`predict` for the model in ``npz`` (:func:`get_model_npz`): no database, so a
    process without one can run it (the API decodes large bodies in a child process)."""
    fitted = FittedModel.from_npz_bytes(npz)
    width = fitted.n_features
    for i, row in enumerate(rows):
        if len(row) != width:
            raise InvalidInput(
                f"Each row of X must have {width} values (the dataset's features); "
                f"row {i} has {len(row)}.",
                errors=[
                    FieldError(
                        ("body", "X", i),
                        f"expected {width} values, got {len(row)}",
                        "wrong_width",
                    )
                ],
            )
    X = np.asarray(rows, dtype=np.float64).reshape(len(rows), width)
    # Finite input can still overflow the model's dtype (1e300 in float32): checked below.
    with np.errstate(over="ignore", invalid="ignore"):
        predictions = fitted.predict(X)
        probabilities = None if fitted.task == "regression" else fitted.predict_proba(X)
    for values in (predictions, probabilities):
        if values is not None and not np.isfinite(values).all():
            raise InvalidInput(
                f"X holds values too large for the model's {fitted.config.dtype}: the "
                "predictions are not finite numbers.",
                errors=[FieldError(("body", "X"), "values overflow the model", "value_error")],
            )
    return PredictResponse(
        predictions=predictions.astype(np.float64).tolist(),
        probabilities=None if probabilities is None else probabilities.astype(np.float64).tolist(),
        classes=None if fitted.classes is None else fitted.classes.astype(np.float64).tolist(),
    )
