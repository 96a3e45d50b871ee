"""Dataset ingestion: detect the format, parse and validate, summarise.

Pure: files or Python values in, arrays or domain errors out (no database, no web). The API
streams an upload to a temporary file, then calls :func:`detect_format`, :func:`parse_file`
and :func:`summarize`; :mod:`service.datasets.arrays` writes the canonical stored bytes.

The rules of each format are in the docstrings of :mod:`service.datasets.ingest_csv` and
:mod:`service.datasets.ingest_numpy`. Every bad input raises :class:`~service.errors.InvalidInput`
(422) with :class:`~service.errors.FieldError` locations such as
``("file", "line 12", "column 'age'")``, :class:`~service.errors.PayloadTooLarge` (413) past a
limit, or :class:`~service.errors.UnsupportedMediaType` (415) for an unknown format.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Literal

import numpy as np

from service.core.tasks import Task, infer_task
from service.datasets.ingest_common import (
    MAX_REPORTED_ERRORS,
    IngestLimits,
    InvalidRows,
    Loc,
    ParsedDataset,
    check_enough_rows,
    check_names,
    invalid,
    invalid_at,
    rows_per_chunk,
    too_many_cells,
    too_many_features,
    too_many_rows,
)
from service.datasets.ingest_csv import parse_csv
from service.datasets.ingest_numpy import parse_npy, parse_npz
from service.errors import FieldError, UnsupportedMediaType

__all__ = [
    "DatasetSummary",
    "FeatureStats",
    "Format",
    "IngestLimits",
    "InvalidRows",
    "ParsedDataset",
    "detect_format",
    "is_zip",
    "parse_file",
    "parse_inline",
    "summarize",
]

Format = Literal["csv", "npy", "npz"]

_NPY_MAGIC = b"\x93NUMPY"
_ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")  # a local file header; an empty archive
_GZIP_MAGIC = b"\x1f\x8b"
_EXTENSIONS: dict[str, Format] = {".csv": "csv", ".npy": "npy", ".npz": "npz"}
_CONTENT_TYPES: dict[str, Format] = {
    "text/csv": "csv",
    "application/csv": "csv",
    "text/comma-separated-values": "csv",
    "application/vnd.ms-excel": "csv",  # what Windows browsers send for a .csv file
    "application/x-npy": "npy",
    "application/x-npz": "npz",
}
_ACCEPTED = "accepted are CSV (.csv, text/csv), NPY (.npy) and NPZ (.npz)"


def is_zip(head: bytes) -> bool:
    """Whether a file starting with ``head`` is a ZIP archive (an NPZ, if it is a dataset)."""
    return head.startswith(_ZIP_MAGICS)


def detect_format(filename: str | None, content_type: str | None, head: bytes) -> Format:
    """The format of an upload from its first bytes ``head``, else its name, else its type.

    Magic bytes win (an NPY file named ``.csv`` is NPY), then the file extension, then the
    content type; anything else is refused with 415.
    """
    if head.startswith(_NPY_MAGIC):
        return "npy"
    if is_zip(head):
        return "npz"
    extension = PurePosixPath(filename.replace("\\", "/")).suffix.lower() if filename else ""
    media_type = (content_type or "").split(";")[0].strip().lower()
    if not head.startswith(_GZIP_MAGIC):
        if extension in _EXTENSIONS:
            return _EXTENSIONS[extension]
        if media_type in _CONTENT_TYPES:
            return _CONTENT_TYPES[media_type]
    seen = [
        f"file name {filename!r}" if filename else "no file name",
        f"content type {content_type!r}" if content_type else "no content type",
    ]
    if head.startswith(_GZIP_MAGIC):
        seen.append("gzip-compressed content (upload it uncompressed)")
    msg = f"cannot tell the dataset format from {', '.join(seen)}; {_ACCEPTED}"
    raise UnsupportedMediaType(msg, errors=[FieldError(loc=("file",), msg=msg, type="format")])


def parse_file(
    path: Path,
    fmt: Format,
    *,
    target: str | None,
    limits: IngestLimits,
    invalid_rows: InvalidRows = "error",
) -> ParsedDataset:
    """Parse and validate the dataset file at ``path``.

    target : the target column: a column name, or a 0-based index as a string (``"3"``);
        ``None`` for the last column. NPY columns are named ``x0`` … ; NPZ files carry ``y``.
    invalid_rows : ``"error"`` refuses NaN, infinite, empty or overflowing cells;
        ``"drop"`` leaves their rows out and counts them in ``dropped_rows``.
    """
    if fmt == "csv":
        return parse_csv(path, target=target, limits=limits, invalid_rows=invalid_rows)
    if fmt == "npy":
        return parse_npy(path, target=target, limits=limits, invalid_rows=invalid_rows)
    if fmt == "npz":
        return parse_npz(path, target=target, limits=limits, invalid_rows=invalid_rows)
    raise UnsupportedMediaType(f"unknown dataset format {fmt!r}; {_ACCEPTED}")


def parse_inline(
    X: Sequence[Sequence[float]],
    y: Sequence[float],
    *,
    limits: IngestLimits,
    feature_names: Sequence[str] | None = None,
    target_name: str = "y",
) -> ParsedDataset:
    """Validate a small dataset sent as JSON: ``X`` rows of equal length, ``y`` one per row.

    Locations are ``("body", "X", row, column)`` (0-based). Values must be finite numbers
    (strings are refused, even numeric ones). Features are named ``x0`` … unless
    ``feature_names`` gives one name per column.
    """
    n_rows = len(X)
    if n_rows > limits.max_rows:
        raise too_many_rows(limits, ("body", "X"))
    check_enough_rows(n_rows, 0, ("body", "X"))
    first = X[0]
    if not _is_row(first):
        raise invalid_at(("body", "X", 0), "each row of X must be a list of numbers")
    n_features = len(first)
    if n_features > limits.max_features:
        raise too_many_features(n_features, limits, ("body", "X"))
    if n_features == 0:
        raise invalid_at(("body", "X", 0), "the rows of X are empty: no features")
    if limits.cells_over(n_rows, n_features):
        raise too_many_cells(n_rows, n_features, limits, ("body", "X"))
    X_arr = _numeric_array(X, (n_rows, n_features), ("body", "X"))
    if len(y) != n_rows:
        raise invalid_at(
            ("body", "y"), f"y has {len(y)} values but X has {n_rows} rows", type="length_mismatch"
        )
    y_arr = _numeric_array(y, (n_rows,), ("body", "y"))
    names = [f"x{i}" for i in range(n_features)] if feature_names is None else list(feature_names)
    if len(names) != n_features:
        raise invalid_at(
            ("body", "feature_names"),
            f"{len(names)} feature names for {n_features} columns of X",
            type="length_mismatch",
        )
    check_names([*names, target_name], ("body", "feature_names"))
    return ParsedDataset(
        X=X_arr, y=y_arr, feature_names=tuple(names), target_name=target_name, dropped_rows=0
    )


def _is_row(row: object) -> bool:
    return isinstance(row, Sequence | np.ndarray) and not isinstance(row, str | bytes)


def _numeric_array(values: object, shape: tuple[int, ...], loc: Loc) -> np.ndarray:
    """``values`` as a float64 array of ``shape``; else the exact cells that are wrong."""
    try:
        arr = np.array(values)
        if arr.shape == shape and arr.dtype.kind in "biuf":
            arr = np.ascontiguousarray(arr, dtype=np.float64)
            if np.isfinite(arr).all():
                return arr
    except (ValueError, TypeError, OverflowError):
        pass
    # The slow walk: find (and say) exactly what is wrong.
    errors: list[FieldError] = []
    out = np.empty(shape, dtype=np.float64)
    rows = values if len(shape) == 2 else [values]
    assert isinstance(rows, Sequence)
    for i, row in enumerate(rows):
        if len(shape) == 2 and (not _is_row(row) or len(row) != shape[1]):
            msg = f"expected a list of {shape[1]} numbers (as in row 0)"
            errors.append(FieldError(loc=(*loc, i), msg=msg, type="wrong_field_count"))
        else:
            for j, value in enumerate(row):
                cell_loc = (*loc, i, j) if len(shape) == 2 else (*loc, j)
                number = _to_float(value)
                if isinstance(number, str):
                    errors.append(FieldError(loc=cell_loc, msg=number, type="not_a_number"))
                elif not math.isfinite(number):
                    errors.append(
                        FieldError(loc=cell_loc, msg=f"{value!r} is not finite", type="not_finite")
                    )
                elif len(shape) == 2:
                    out[i, j] = number
                else:
                    out[j] = number
        if len(errors) >= MAX_REPORTED_ERRORS:
            break
    if not errors:  # pragma: no cover - the fast path failed for a reason the walk must see
        errors.append(FieldError(loc=loc, msg="not an array of numbers of the expected shape"))
    raise invalid(errors[:MAX_REPORTED_ERRORS])


def _to_float(value: object) -> float | str:
    """The value as a float, or a message saying why it is not a number."""
    if isinstance(value, numbers.Real) and not isinstance(value, str):
        try:
            return float(value)
        except OverflowError:
            return f"{value!r} overflows float64 (largest ≈ 1.8e308)"
    shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:40] + "…"
    return f"{shown} is not a number"


# -- summary ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class FeatureStats:
    """Column statistics; ``std`` is the population standard deviation (NumPy's, ddof=0)."""

    name: str
    mean: float
    std: float
    min: float
    max: float


@dataclass(frozen=True)
class DatasetSummary:
    """What a client sees of a dataset: shape, names, task, classes and column statistics.

    classes : the sorted distinct target values for binary and multiclass tasks, else None.
    stats : one per feature, in column order; ``target_stats`` for the target.
    """

    n_rows: int
    n_features: int
    feature_names: tuple[str, ...]
    target_name: str
    task: Task
    classes: tuple[float, ...] | None
    stats: tuple[FeatureStats, ...]
    target_stats: FeatureStats
    dropped_rows: int = 0


def summarize(parsed: ParsedDataset) -> DatasetSummary:
    """Shape, task (``service.core.tasks.infer_task``), classes and per-column statistics."""
    X, y = parsed.X, parsed.y
    mean, std = _mean_std(X)
    (y_mean,), (y_std,) = _mean_std(y.reshape(-1, 1))
    stats = tuple(
        FeatureStats(name=name, mean=float(m), std=float(s), min=float(lo), max=float(hi))
        for name, m, s, lo, hi in zip(
            parsed.feature_names, mean, std, X.min(axis=0), X.max(axis=0), strict=True
        )
    )
    target_stats = FeatureStats(
        name=parsed.target_name,
        mean=float(y_mean),
        std=float(y_std),
        min=float(y.min()),
        max=float(y.max()),
    )
    task = infer_task(y)
    classes = None if task == "regression" else tuple(float(c) for c in np.unique(y))
    return DatasetSummary(
        n_rows=parsed.n_rows,
        n_features=parsed.n_features,
        feature_names=parsed.feature_names,
        target_name=parsed.target_name,
        task=task,
        classes=classes,
        stats=stats,
        target_stats=target_stats,
        dropped_rows=parsed.dropped_rows,
    )


def _mean_std(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Column means and population standard deviations of X (n, d), a few MB at a time.

    Chunks are merged with Chan et al.'s update: for a chunk of n_c rows with mean m_c and
    sum of squared deviations M2_c, δ = m_c − m, m ← m + δ·n_c/(n + n_c),
    M2 ← M2 + M2_c + δ²·n·n_c/(n + n_c); finally std = √(M2/n).

    Each column is first scaled by a power of two 2^e ≥ its largest |x| (exact in binary), so
    that values near the float64 limit (|x| up to 1.8e308, all finite) cannot overflow the
    sums and squares; mean and std are scaled back at the end.
    """
    n_rows, n_features = X.shape
    largest = np.maximum(np.abs(X.min(axis=0)), np.abs(X.max(axis=0))) if n_rows else np.zeros(0)
    _, exponent = np.frexp(largest)  # largest = m·2^e with 0.5 ≤ m < 1 (0 gives e = 0)
    step = rows_per_chunk(n_features)
    mean = np.zeros(n_features)
    M2 = np.zeros(n_features)
    seen = 0
    for start in range(0, n_rows, step):
        chunk = np.ldexp(X[start : start + step], -exponent)
        n_c = chunk.shape[0]
        mean_c = chunk.mean(axis=0)
        M2_c = np.square(chunk - mean_c).sum(axis=0)
        total = seen + n_c
        delta = mean_c - mean
        mean += delta * (n_c / total)
        M2 += M2_c + np.square(delta) * (seen * n_c / total)
        seen = total
    return np.ldexp(mean, exponent), np.ldexp(np.sqrt(M2 / max(1, n_rows)), exponent)
