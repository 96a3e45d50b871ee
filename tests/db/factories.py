"""Plain factories for database rows used by the persistence tests."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from service.db import Dataset, DatasetChunk


def make_dataset(**overrides: Any) -> Dataset:
    """A small regression dataset's metadata row (3 rows, 2 features).

    ``created_at=None`` leaves the column to its default (now, UTC).
    """
    values: dict[str, Any] = {
        "id": str(uuid.uuid4()),
        "tenant": "default",
        "name": "toy",
        "n_rows": 3,
        "n_features": 2,
        "feature_names": ["x0", "x1"],
        "target_name": "y",
        "task": "regression",
        "classes": None,
        "stats": {"x0": {"mean": 1.0, "std": 0.5, "min": 0.5, "max": 1.5}},
        "source_format": "csv",
        "sha256": "0" * 64,
        "size_bytes": 72,
        "chunk_count": 0,
        "created_at": datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC),
    }
    values.update(overrides)
    if values["created_at"] is None:
        del values["created_at"]
    return Dataset(**values)


def make_chunks(dataset_id: str, payloads: list[bytes]) -> list[DatasetChunk]:
    """Chunks ``0..len(payloads)-1`` of ``dataset_id`` holding ``payloads`` in order."""
    return [
        DatasetChunk(dataset_id=dataset_id, seq=seq, data=data) for seq, data in enumerate(payloads)
    ]
