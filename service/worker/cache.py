"""The worker's local dataset cache: ``<data_dir>/cache/<sha256>.npy``, memory-mapped.

Content-addressed, so an entry never goes stale and workers sharing a data dir share it; a
missing entry is filled from the database chunks (size and sha256 checked on the way) under a
name unique to this fill, then renamed into place — concurrent fills of one dataset race
harmlessly, each rename putting the same bytes there.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np
from sqlalchemy.orm import Session

from service.datasets.arrays import open_canonical
from service.datasets.schemas import DatasetRead
from service.datasets.service import get_dataset, read_dataset_bytes


class DatasetCache:
    """Datasets as memory-mapped arrays, fetched from the database once per machine."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path_of(self, sha256: str) -> Path:
        """Where the dataset with this content hash is (or will be) cached."""
        return self.root / f"{sha256}.npy"

    def ensure(self, session: Session, dataset_id: str) -> tuple[DatasetRead, Path]:
        """The dataset's metadata and its cached file, filled from ``session`` if missing.

        Raises NotFound for an unknown dataset and StoredBytesCorruptError when the stored
        chunks do not match the recorded size and sha256.
        """
        dataset = get_dataset(session, dataset_id)
        path = self.path_of(dataset.sha256)
        if not path.exists():
            self.root.mkdir(parents=True, exist_ok=True)
            fill = self.root / f"{dataset.sha256}.{uuid.uuid4().hex}.fill"
            try:
                read_dataset_bytes(session, dataset_id, fill)
                fill.replace(path)
            finally:
                fill.unlink(missing_ok=True)
        return dataset, path

    def open(self, session: Session, dataset_id: str) -> tuple[DatasetRead, np.ndarray, np.ndarray]:
        """(metadata, X (n, d), y (n,)): read-only memory-mapped views of the cached file."""
        dataset, path = self.ensure(session, dataset_id)
        X, y = open_canonical(path, dataset.n_features, mmap=True)
        return dataset, X, y


__all__ = ["DatasetCache"]
