"""NPY and NPZ ingestion.

- NPY: one 2-D numeric array (rows, columns). The columns have no names, so they are named
  by position, ``x0`` … ``x{k-1}``; the target is the last column unless ``target`` gives a
  0-based index (``"3"``) or a positional name (``"x3"``). Features keep their positional
  names (the target removed; no renumbering) and the target is called ``"y"``.
- NPZ: arrays ``X`` (2-D, rows × features) and ``y`` (1-D, or (n, 1)); optionally
  ``feature_names`` (1-D strings, one per feature; else ``x0`` … ``x{d-1}``). The target is
  ``y``: ``target`` must be unset (or ``"y"``). Other arrays are ignored.
- Numeric dtypes only (bool, integers, floats), converted to float64. Objects are never
  unpickled. Shapes and dtypes are read from the headers first, so the limits (rows, features,
  rows × features) are checked before any data is read.
- Rows with NaN or infinite values: an error naming ``row i`` (0-based) and the column, or
  dropped and counted with ``invalid_rows="drop"``.
"""

from __future__ import annotations

import tokenize
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np

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
    resolve_target,
    split_target,
    too_many_cells,
    too_many_features,
    too_many_rows,
)
from service.errors import FieldError

#: Rows copied per step when converting, so scratch memory stays a few MB whatever the size.
_CHUNK_BYTES = 4 << 20
_NUMERIC_KINDS = "biuf"
#: What reading a broken file raises. NumPy parses an NPY header with ``tokenize`` and
#: ``ast.literal_eval``, so a corrupt header raises ``SyntaxError`` or ``TokenError`` too.
_READ_ERRORS = (
    ValueError,
    OSError,
    EOFError,
    zipfile.BadZipFile,
    zlib.error,
    SyntaxError,
    tokenize.TokenError,
)

Header = tuple[tuple[int, ...], np.dtype[np.generic]]


def parse_npy(
    path: Path,
    *,
    target: str | None,
    limits: IngestLimits,
    invalid_rows: InvalidRows = "error",
) -> ParsedDataset:
    """Parse a ``.npy`` file holding one 2-D numeric array; see the module docstring."""
    loc: Loc = ("file",)
    with path.open("rb") as f:
        shape, dtype = _read_header(f, "the NPY file", loc)
    _check_dtype(dtype, "the array", loc)
    if len(shape) != 2:
        raise invalid_at(
            loc,
            f"an NPY file must hold a 2-D array (rows, columns), found shape {shape}",
            type="wrong_shape",
        )
    n_rows, n_columns = shape
    if n_columns < 2:
        raise invalid_at(
            loc,
            f"the array has {n_columns} column(s); it needs at least two "
            "(one or more features and the target)",
            type="too_few_columns",
        )
    if n_columns - 1 > limits.max_features:
        raise too_many_features(n_columns - 1, limits, loc)
    if n_rows > limits.max_rows:
        raise too_many_rows(limits, loc)
    if limits.cells_over(n_rows, n_columns - 1):
        raise too_many_cells(n_rows, n_columns - 1, limits, loc)
    check_enough_rows(n_rows, 0, loc)
    names = [f"x{i}" for i in range(n_columns)]
    target_index = resolve_target(names, target)
    try:
        columns = np.load(path, mmap_mode="r", allow_pickle=False)
    except _READ_ERRORS as e:
        raise invalid_at(loc, f"not a valid NPY file: {e}", type="corrupt_file") from None
    bad = _bad_rows(columns)
    _report_bad_rows(columns, bad, names, invalid_rows)
    n_kept = n_rows - int(bad.sum())
    check_enough_rows(n_kept, n_rows - n_kept, loc)
    X = np.empty((n_kept, n_columns - 1), dtype=np.float64)
    y = np.empty(n_kept, dtype=np.float64)
    start = 0
    for rows in _row_chunks(n_rows, n_columns):
        chunk = np.asarray(columns[rows], dtype=np.float64)[~bad[rows]]
        stop = start + chunk.shape[0]
        split_target(chunk, target_index, X[start:stop], y[start:stop])
        start = stop
    del columns  # closes the memory map
    return ParsedDataset(
        X=X,
        y=y,
        feature_names=tuple(names[:target_index] + names[target_index + 1 :]),
        target_name="y",
        dropped_rows=n_rows - n_kept,
    )


def parse_npz(
    path: Path,
    *,
    target: str | None,
    limits: IngestLimits,
    invalid_rows: InvalidRows = "error",
) -> ParsedDataset:
    """Parse a ``.npz`` archive with arrays ``X`` and ``y``; see the module docstring."""
    if target not in (None, "y"):
        raise invalid_at(
            ("target",),
            f"an NPZ file carries its target as the array 'y'; leave target unset (got '{target}')",
            type="target_not_found",
        )
    try:
        archive = zipfile.ZipFile(path)
    except _READ_ERRORS as e:
        raise invalid_at(("file",), f"not a valid NPZ file: {e}", type="corrupt_file") from None
    with archive:
        members = {name.removesuffix(".npy"): name for name in archive.namelist()}
        missing = [key for key in ("X", "y") if key not in members]
        if missing:
            found = ", ".join(f"'{key}'" for key in sorted(members)) or "nothing"
            absent = " and ".join(f"'{key}'" for key in missing)
            raise invalid_at(
                ("file",),
                f"an NPZ file must hold arrays 'X' and 'y'; missing {absent}, found {found}",
                type="missing_array",
            )
        x_shape, x_dtype = _member_header(archive, members["X"], "X")
        y_shape, y_dtype = _member_header(archive, members["y"], "y")
        _check_dtype(x_dtype, "array 'X'", ("file", "X"))
        _check_dtype(y_dtype, "array 'y'", ("file", "y"))
        if len(x_shape) != 2:
            raise invalid_at(
                ("file", "X"),
                f"'X' must be 2-D (rows, features), found shape {x_shape}",
                type="wrong_shape",
            )
        if len(y_shape) != 1 and y_shape[1:] != (1,):
            raise invalid_at(
                ("file", "y"),
                f"'y' must be 1-D (rows,), found shape {y_shape}",
                type="wrong_shape",
            )
        n_rows, n_features = x_shape
        if y_shape[0] != n_rows:
            raise invalid_at(
                ("file", "y"),
                f"'X' has {n_rows} rows but 'y' has {y_shape[0]} values",
                type="length_mismatch",
            )
        if n_features < 1:
            raise invalid_at(("file", "X"), "'X' has no feature columns", type="too_few_columns")
        if n_features > limits.max_features:
            raise too_many_features(n_features, limits, ("file", "X"))
        if n_rows > limits.max_rows:
            raise too_many_rows(limits, ("file", "X"))
        if limits.cells_over(n_rows, n_features):
            raise too_many_cells(n_rows, n_features, limits, ("file", "X"))
        check_enough_rows(n_rows, 0, ("file", "X"))
        names = _feature_names(archive, members, n_features)
        X_raw = _load_member(archive, members["X"], "X")
        y_raw = _load_member(archive, members["y"], "y").reshape(n_rows)
    columns_names = [*names, "y"]
    bad = _bad_rows(X_raw) | ~np.isfinite(y_raw.astype(np.float64, copy=False))
    if bad.any():
        joined = np.empty((n_rows, n_features + 1), dtype=np.float64)
        joined[:, :n_features] = X_raw
        joined[:, n_features] = y_raw
        _report_bad_rows(joined, bad, columns_names, invalid_rows)
        del joined
    keep = ~bad if bad.any() else slice(None)
    X = np.ascontiguousarray(X_raw[keep], dtype=np.float64)
    y = np.ascontiguousarray(y_raw[keep], dtype=np.float64)
    check_enough_rows(X.shape[0], n_rows - X.shape[0], ("file",))
    return ParsedDataset(
        X=X,
        y=y,
        feature_names=tuple(names),
        target_name="y",
        dropped_rows=n_rows - X.shape[0],
    )


# -- headers and members --------------------------------------------------------------------


def _read_header(f: BinaryIO, what: str, loc: Loc) -> Header:
    """Shape and dtype from an NPY header, reading no data."""
    try:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran_order, dtype = np.lib.format.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, fortran_order, dtype = np.lib.format.read_array_header_2_0(f)
        else:
            raise ValueError(f"unsupported NPY format version {version[0]}.{version[1]}")
    except _READ_ERRORS as e:
        raise invalid_at(loc, f"{what} is not a valid NPY file: {e}", type="corrupt_file") from None
    del fortran_order  # np.load handles either order
    return tuple(int(n) for n in shape), dtype


def _member_header(archive: zipfile.ZipFile, member: str, key: str) -> Header:
    try:
        with archive.open(member) as f:
            return _read_header(f, f"array '{key}'", ("file", key))  # type: ignore[arg-type]
    except _READ_ERRORS as e:
        raise invalid_at(
            ("file", key), f"cannot read array '{key}': {e}", type="corrupt_file"
        ) from None


def _load_member(archive: zipfile.ZipFile, member: str, key: str) -> np.ndarray:
    try:
        with archive.open(member) as f:
            return np.asarray(np.lib.format.read_array(f, allow_pickle=False))
    except _READ_ERRORS as e:
        raise invalid_at(
            ("file", key), f"cannot read array '{key}': {e}", type="corrupt_file"
        ) from None


def _feature_names(archive: zipfile.ZipFile, members: dict[str, str], n_features: int) -> list[str]:
    if "feature_names" not in members:
        return [f"x{i}" for i in range(n_features)]
    loc: Loc = ("file", "feature_names")
    raw = _load_member(archive, members["feature_names"], "feature_names")
    if raw.dtype.kind not in "US" or raw.shape != (n_features,):
        raise invalid_at(
            loc,
            f"'feature_names' must be {n_features} strings (one per column of 'X'), "
            f"found dtype {raw.dtype} and shape {raw.shape}",
        )
    names = [str(n.decode("utf-8", "replace") if isinstance(n, bytes) else n).strip() for n in raw]
    check_names([*names, "y"], loc)
    return names


def _check_dtype(dtype: np.dtype[np.generic], what: str, loc: Loc) -> None:
    if dtype.kind not in _NUMERIC_KINDS or dtype.fields is not None:
        raise invalid_at(
            loc,
            f"{what} has dtype {dtype}; numbers are needed (bool, integer or float)",
            type="wrong_dtype",
        )


# -- non-finite rows -------------------------------------------------------------------------


def _row_chunks(n_rows: int, n_columns: int) -> Iterator[slice]:
    step = max(1, _CHUNK_BYTES // (8 * max(1, n_columns)))
    for start in range(0, n_rows, step):
        yield slice(start, min(n_rows, start + step))


def _bad_rows(array: np.ndarray) -> np.ndarray:
    """(n_rows,) bool: rows of a 2-D ``array`` holding NaN or ±inf (never for integers)."""
    n_rows = array.shape[0]
    bad = np.zeros(n_rows, dtype=bool)
    if array.dtype.kind != "f":
        return bad
    for rows in _row_chunks(n_rows, array.shape[1]):
        bad[rows] = ~np.isfinite(array[rows]).all(axis=1)
    return bad


def _report_bad_rows(
    columns: np.ndarray, bad: np.ndarray, names: list[str], invalid_rows: InvalidRows
) -> None:
    """Raise naming the first non-finite cells, unless such rows are to be dropped."""
    if invalid_rows == "drop" or not bad.any():
        return
    errors: list[FieldError] = []
    bad_rows = np.flatnonzero(bad)
    for row in bad_rows[:MAX_REPORTED_ERRORS]:
        values = np.asarray(columns[row], dtype=np.float64)
        for column in np.flatnonzero(~np.isfinite(values)):
            errors.append(
                FieldError(
                    loc=("file", f"row {row}", f"column '{names[column]}'"),
                    msg=f"{values[column]} is not a finite number",
                    type="not_finite",
                )
            )
    # Count what is not listed: extra cells of the listed rows, then the unlisted rows.
    more = max(0, len(errors) - MAX_REPORTED_ERRORS) + max(0, len(bad_rows) - MAX_REPORTED_ERRORS)
    raise invalid(errors[:MAX_REPORTED_ERRORS], more=more)
