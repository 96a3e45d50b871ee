"""The canonical stored form of a dataset: one ``.npy`` file that workers memory-map.

Layout: NPY format 1.0, dtype little-endian float64 (``<f8``), C order, shape
(n_rows, n_features + 1), the target in the last column. The header bytes are written here,
not by NumPy, so the same data always gives the same bytes (and the same sha256) whatever the
NumPy version: magic ``\\x93NUMPY\\x01\\x00``, a little-endian uint16 header length, then
``{'descr': '<f8', 'fortran_order': False, 'shape': (n, d + 1), }`` padded with spaces and a
final newline so that the data starts at a multiple of 64 bytes (as NumPy itself writes it).
The sha256 is of the whole file, header included.
"""

from __future__ import annotations

import hashlib
import os
import struct
from pathlib import Path

import numpy as np

from service.datasets.ingest_common import ParsedDataset, rows_per_chunk

__all__ = ["CanonicalFileError", "canonical_header", "open_canonical", "write_canonical"]

_MAGIC = b"\x93NUMPY\x01\x00"
_ALIGN = 64


class CanonicalFileError(ValueError):
    """A stored dataset file that is not in the canonical form (corrupt or mismatched)."""


def canonical_header(n_rows: int, n_columns: int) -> bytes:
    """The NPY 1.0 header of a C-order ``<f8`` array of shape (n_rows, n_columns)."""
    text = f"{{'descr': '<f8', 'fortran_order': False, 'shape': ({n_rows}, {n_columns}), }}"
    unpadded = len(_MAGIC) + 2 + len(text) + 1
    text += " " * (-unpadded % _ALIGN) + "\n"
    return _MAGIC + struct.pack("<H", len(text)) + text.encode("latin1")


def write_canonical(parsed: ParsedDataset, dest: Path) -> tuple[str, int]:
    """Write ``parsed`` to ``dest`` in the canonical form; return (sha256 hex, size in bytes).

    The file appears at ``dest`` only when complete (written beside it, then renamed).
    """
    X, y = parsed.X, parsed.y
    n_rows, n_features = X.shape
    n_columns = n_features + 1
    digest = hashlib.sha256()
    header = canonical_header(n_rows, n_columns)
    size = len(header)
    step = rows_per_chunk(n_columns)  # writing needs only a few MB beside the dataset
    buffer = np.empty((min(step, max(n_rows, 1)), n_columns), dtype="<f8")
    partial = dest.with_name(dest.name + ".partial")
    try:
        with partial.open("wb") as f:
            f.write(header)
            digest.update(header)
            for start in range(0, n_rows, step):
                stop = min(n_rows, start + step)
                rows = buffer[: stop - start]
                rows[:, :n_features] = X[start:stop]
                rows[:, n_features] = y[start:stop]
                f.write(rows.data)
                digest.update(rows.data)
                size += rows.nbytes
        os.replace(partial, dest)
    finally:
        partial.unlink(missing_ok=True)
    return digest.hexdigest(), size


def open_canonical(
    path: Path, n_features: int, *, mmap: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """(X (n, n_features), y (n,)): views into the canonical file at ``path``.

    With ``mmap`` the file is memory-mapped read-only (nothing is read until used, so a
    dataset larger than memory still works); the views are strided (rows of d + 1 values).
    Raises :class:`CanonicalFileError` if the file is not a canonical dataset of that width.
    """
    try:
        columns = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise CanonicalFileError(f"{path.name}: not a readable NPY file: {e}") from None
    expected = f"a C-order float64 array of shape (n, {n_features + 1})"
    if (
        columns.ndim != 2
        or columns.dtype != np.float64
        or columns.shape[1] != n_features + 1
        or not columns.flags.c_contiguous
    ):
        raise CanonicalFileError(
            f"{path.name}: expected {expected}, found dtype {columns.dtype}, shape {columns.shape}"
        )
    return columns[:, :n_features], columns[:, n_features]
