"""The datasets API's shapes: what a client sends (``...Create...``) and reads back (``...Read``).

Request schemas forbid unknown fields; read schemas are built from the ORM rows.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, FiniteFloat, StringConstraints

DatasetName = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
ColumnName = Annotated[str, StringConstraints(min_length=1, max_length=200)]
InvalidRows = Literal["error", "drop"]
Task = Literal["regression", "binary", "multiclass"]
SourceFormat = Literal["csv", "npy", "npz", "json"]

_EXAMPLE_READ: dict[str, Any] = {
    "id": "5f0c1c9e-3f5d-4a3e-9a51-2f8d2f0c9b11",
    "name": "houses.csv",
    "n_rows": 3,
    "n_features": 2,
    "feature_names": ["rooms", "area"],
    "target": "price",
    "task": "regression",
    "classes": None,
    "stats": [
        {"name": "rooms", "mean": 3.0, "std": 0.816496580927726, "min": 2.0, "max": 4.0},
        {"name": "area", "mean": 90.0, "std": 24.49489742783178, "min": 60.0, "max": 120.0},
    ],
    "source_format": "csv",
    "sha256": "9b2c3f0a5e1d4c7b8a6f0e3d2c1b0a9f8e7d6c5b4a3f2e1d0c9b8a7f6e5d4c3b",
    "size_bytes": 200,
    "dropped_rows": 0,
    "created_at": "2026-11-26T12:00:00Z",
}


class DatasetCreateJSON(BaseModel):
    """A small dataset sent inline: ``X`` (n_rows × n_features) and ``y`` (n_rows)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "name": "xor-ish",
                    "X": [[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]],
                    "y": [0.0, 1.0, 1.0, 0.0],
                    "feature_names": ["a", "b"],
                }
            ]
        },
    )

    name: DatasetName = Field(default="inline", description="A label for people; not unique.")
    X: list[list[FiniteFloat]] = Field(
        description="Feature rows, all of the same length (n_rows × n_features)."
    )
    y: list[FiniteFloat] = Field(description="Target values, one per row of X.")
    feature_names: list[ColumnName] | None = Field(
        default=None, description="One name per column of X; default x0, x1, ..."
    )


class DatasetUploadForm(BaseModel):
    """The text fields that go with a multipart upload's ``file`` part."""

    model_config = ConfigDict(extra="forbid")

    name: DatasetName | None = Field(
        default=None, description="A label for people; default the uploaded file's name."
    )
    target: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)] | None = Field(
        default=None,
        description="The target column: its name or 0-based index; default the last column.",
    )
    invalid_rows: InvalidRows = Field(
        default="error",
        description="`error`: refuse a file with NaN, infinite, empty or overflowing cells; "
        "`drop`: drop those rows and count them in `dropped_rows`.",
    )


class FeatureStatsRead(BaseModel):
    """Summary statistics of one feature column (population std, ddof = 0)."""

    name: str
    mean: float
    std: float
    min: float
    max: float


class DatasetRead(BaseModel):
    """A stored dataset's metadata."""

    model_config = ConfigDict(json_schema_extra={"examples": [_EXAMPLE_READ]})

    id: str = Field(description="The dataset's id (a UUID).")
    name: str
    n_rows: int
    n_features: int
    feature_names: list[str]
    target: str = Field(description="Name of the target column.")
    task: Task = Field(description="What the target implies: regression, binary, multiclass.")
    classes: list[float] | None = Field(
        description="The distinct target values, sorted, for classification; null for regression."
    )
    stats: list[FeatureStatsRead] = Field(description="Per-feature statistics, in column order.")
    source_format: SourceFormat = Field(description="How the data arrived.")
    sha256: str = Field(description="SHA-256 of the stored canonical bytes (hex).")
    size_bytes: int = Field(description="Size of the stored canonical bytes.")
    dropped_rows: int = Field(description="Rows dropped under `invalid_rows=drop`.")
    created_at: datetime


class DatasetPage(BaseModel):
    """One page of datasets, newest first."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"items": [_EXAMPLE_READ], "next_cursor": None}]}
    )

    items: list[DatasetRead]
    next_cursor: str | None = Field(
        description="Pass as `cursor` to get the next page; null on the last page."
    )


__all__ = [
    "DatasetCreateJSON",
    "DatasetPage",
    "DatasetRead",
    "DatasetUploadForm",
    "FeatureStatsRead",
    "InvalidRows",
    "SourceFormat",
    "Task",
]
