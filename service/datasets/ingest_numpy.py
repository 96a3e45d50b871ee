"""NPY and NPZ ingestion.

- NPY: one 2-D numeric array (rows, columns). The columns have no names, so they are named
  by position, ``x0`` … ``x{k-1}``; the target is the last column unless ``target`` gives a
  0-based index (``"3"``) or a positional name (``"x3"``). Features keep their positional
  names (the target removed; no renumbering) and the target is called ``"y"``.
- NPZ: arrays ``X`` (2-D, rows × features) and ``y`` (1-D, or (n, 1)); optionally
  ``feature_names`` (1-D strings, one per feature, each at most ``MAX_FEATURE_NAME_CHARS``
  characters; else ``x0`` … ``x{d-1}``). The target is ``y``: ``target`` must be unset (or
  ``"y"``). Other arrays are ignored: never opened, never decompressed.
- Numeric dtypes only (bool, integers, floats), converted to float64. Objects are never
  unpickled. Shapes and dtypes are read from the headers first, so the limits (rows, features,
  rows × features) are checked before any data is read.
- An NPZ archive is checked before a byte of array data is decompressed: its central
  directory must be small (at most ``MAX_NPZ_DIRECTORY_BYTES``, read from the end record
  before :mod:`zipfile` parses it); each member read must be stored or deflated (as NumPy
  writes them), unencrypted, and hold exactly its NPY header plus
  ``itemsize × Π shape`` bytes by its zip entry's size (which caps what :mod:`zipfile`
  decompresses); and those sizes summed must fit ``max_decompressed_bytes`` (413 above it).
- Rows with NaN or infinite values: an error naming ``row i`` (0-based) and the column, or
  dropped and counted with ``invalid_rows="drop"``.
"""

from __future__ import annotations

import math
import tokenize
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
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
    rows_per_chunk,
    split_target,
    too_many_cells,
    too_many_features,
    too_many_rows,
)
from service.datasets.zip_records import central_directory_bytes
from service.errors import FieldError, InvalidInput, PayloadTooLarge

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

#: Longest name in an NPZ's ``feature_names``, in characters (CSV headers have no such bound
#: of their own, but a CSV header line is bounded by ``max_features``).
MAX_FEATURE_NAME_CHARS = 200
#: Largest NPZ central directory read: ``zipfile`` builds an object per entry (~10× the
#: entry's bytes) before anything can be checked; 64 KiB lists hundreds of arrays.
MAX_NPZ_DIRECTORY_BYTES = 64 * 1024
#: The arrays of an NPZ that are read; any other member is ignored.
_NPZ_ARRAYS = ("X", "y", "feature_names")
#: What NumPy writes; bzip2 and LZMA would decompress a whole read at once, unbounded.
_NPZ_COMPRESSIONS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)
_RESAVE = "save the arrays again with numpy.savez or numpy.savez_compressed"


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
    with _open_npz(path) as archive:
        members = _npz_members(archive)
        missing = [key for key in ("X", "y") if key not in members]
        if missing:
            keys = sorted(name.removesuffix(".npy") for name in archive.namelist())
            found = ", ".join(f"'{key}'" for key in keys[:10]) + (", …" if keys[10:] else "")
            absent = " and ".join(f"'{key}'" for key in missing)
            raise invalid_at(
                ("file",),
                f"an NPZ file must hold arrays 'X' and 'y'; missing {absent}, "
                f"found {found or 'nothing'}",
                type="missing_array",
            )
        x_entry = _array_entry(archive, members["X"], "X")
        y_entry = _array_entry(archive, members["y"], "y")
        x_shape, x_dtype = x_entry.shape, x_entry.dtype
        y_shape, y_dtype = y_entry.shape, y_entry.dtype
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
        entries = [x_entry, y_entry]
        if "feature_names" in members:
            entries.append(_array_entry(archive, members["feature_names"], "feature_names"))
            _check_feature_names_header(entries[-1], n_features)
        for entry in entries:
            entry.check_size()
        _check_decompressed_size(entries, limits)
        # Every member read is now known to hold what its header says, within the limits.
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
    if any(n < 0 for n in shape):
        raise invalid_at(
            loc, f"{what} is not a valid NPY file: negative shape {shape}", type="corrupt_file"
        )
    return tuple(int(n) for n in shape), dtype


def _open_npz(path: Path) -> zipfile.ZipFile:
    """The archive at ``path``, once its end record shows a central directory small enough
    for :mod:`zipfile` to read (it reads the whole directory into objects when opened)."""
    try:
        with path.open("rb") as f:
            directory_bytes = central_directory_bytes(f)
        if directory_bytes > MAX_NPZ_DIRECTORY_BYTES:
            msg = (
                f"the NPZ archive's central directory is {directory_bytes} bytes, more than "
                f"{MAX_NPZ_DIRECTORY_BYTES}: an NPZ dataset needs a few entries ('X', 'y' and "
                f"optionally 'feature_names'); {_RESAVE}"
            )
            raise invalid_at(("file",), msg, type="too_many_members")
        return zipfile.ZipFile(path)
    except _READ_ERRORS as e:
        raise invalid_at(("file",), f"not a valid NPZ file: {e}", type="corrupt_file") from None


def declared_npz_bytes(path: Path) -> int | None:
    """The decompressed bytes the members of the archive at ``path`` declare (parsing refuses
    a member that holds more than it declares), read from its central directory alone; None
    for a file that is not a readable archive (parsing says why)."""
    try:
        with _open_npz(path) as archive:
            return sum(info.file_size for info in archive.infolist())
    except InvalidInput:
        return None


def _npz_members(archive: zipfile.ZipFile) -> dict[str, zipfile.ZipInfo]:
    """The entries of the arrays that are read (``X.npy`` or ``X`` gives ``X``), each checked
    to be readable without surprises; others are left alone."""
    members: dict[str, zipfile.ZipInfo] = {}
    for info in archive.infolist():
        key = info.filename.removesuffix(".npy")
        if key not in _NPZ_ARRAYS:
            continue
        loc: Loc = ("file", key)
        if key in members:
            msg = (
                f"the NPZ archive holds array '{key}' twice ('{members[key].filename}' and "
                f"'{info.filename}'); {_RESAVE}"
            )
            raise invalid_at(loc, msg, type="duplicate_member")
        if info.flag_bits & 0x1:
            msg = f"array '{key}' is encrypted; upload an NPZ file without a password"
            raise invalid_at(loc, msg, type="unsupported_compression")
        if info.compress_type not in _NPZ_COMPRESSIONS:
            msg = (
                f"array '{key}' uses zip compression method {info.compress_type}; only stored "
                f"(0) and deflated (8) members are read: {_RESAVE}"
            )
            raise invalid_at(loc, msg, type="unsupported_compression")
        members[key] = info
    return members


@dataclass(frozen=True)
class _ArrayEntry:
    """An NPZ member read so far: its zip entry and its NPY header (``header_bytes`` long)."""

    key: str
    info: zipfile.ZipInfo
    shape: tuple[int, ...]
    dtype: np.dtype[np.generic]
    header_bytes: int

    def check_size(self) -> None:
        """The entry must hold exactly the header and ``itemsize × Π shape`` bytes of data:
        its size, which bounds what zipfile decompresses, then bounds the array too."""
        data_bytes = math.prod(self.shape) * self.dtype.itemsize
        if self.header_bytes + data_bytes != self.info.file_size:
            held = self.info.file_size - self.header_bytes
            msg = (
                f"array '{self.key}' declares shape {self.shape} of {self.dtype.str} "
                f"({data_bytes} bytes of data) but its zip entry holds {held} bytes after the "
                f"header: the archive is corrupt; {_RESAVE}"
            )
            raise invalid_at(("file", self.key), msg, type="corrupt_file")


def _array_entry(archive: zipfile.ZipFile, info: zipfile.ZipInfo, key: str) -> _ArrayEntry:
    """A member's NPY header; only the header (a few hundred bytes) is decompressed."""
    loc: Loc = ("file", key)
    try:
        with archive.open(info) as f:
            shape, dtype = _read_header(f, f"array '{key}'", loc)  # type: ignore[arg-type]
            header_bytes = f.tell()
    except _READ_ERRORS as e:
        raise invalid_at(loc, f"cannot read array '{key}': {e}", type="corrupt_file") from None
    return _ArrayEntry(key, info, shape, dtype, header_bytes)


def _check_feature_names_header(entry: _ArrayEntry, n_features: int) -> None:
    loc: Loc = ("file", "feature_names")
    shape, dtype = entry.shape, entry.dtype
    if dtype.kind not in "US" or shape != (n_features,):
        raise invalid_at(
            loc,
            f"'feature_names' must be {n_features} strings (one per column of 'X'), "
            f"found dtype {dtype} and shape {shape}",
            type="wrong_shape",
        )
    chars = dtype.itemsize // 4 if dtype.kind == "U" else dtype.itemsize
    if chars > MAX_FEATURE_NAME_CHARS:
        raise invalid_at(
            loc,
            f"'feature_names' has dtype {dtype}: names of up to {chars} characters; at most "
            f"{MAX_FEATURE_NAME_CHARS} are accepted (save them as "
            f"numpy.array(names, dtype='<U{MAX_FEATURE_NAME_CHARS}') or shorter)",
            type="name_too_long",
        )


def _check_decompressed_size(entries: list[_ArrayEntry], limits: IngestLimits) -> None:
    """413 when the members read would decompress to more than ``max_decompressed_bytes``."""
    total = sum(entry.info.file_size for entry in entries)
    if limits.max_decompressed_bytes is None or total <= limits.max_decompressed_bytes:
        return
    largest = max(entries, key=lambda entry: entry.info.file_size)
    sizes = ", ".join(f"'{entry.key}' {entry.info.file_size}" for entry in entries)
    msg = (
        f"the NPZ arrays hold {total} bytes once decompressed ({sizes}), more than "
        f"{limits.max_decompressed_bytes}, the limit set by BATCHWISE_MAX_DECOMPRESSED_BYTES; "
        "upload fewer rows or features, or a narrower dtype (float32)"
    )
    raise PayloadTooLarge(
        msg, errors=[FieldError(loc=("file", largest.key), msg=msg, type="too_many_bytes")]
    )


def _load_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, key: str) -> np.ndarray:
    try:
        with archive.open(info) as f:
            return np.asarray(np.lib.format.read_array(f, allow_pickle=False))
    except _READ_ERRORS as e:
        raise invalid_at(
            ("file", key), f"cannot read array '{key}': {e}", type="corrupt_file"
        ) from None


def _feature_names(
    archive: zipfile.ZipFile, members: dict[str, zipfile.ZipInfo], n_features: int
) -> list[str]:
    """The names in ``feature_names`` (its header already checked), else ``x0`` … ."""
    if "feature_names" not in members:
        return [f"x{i}" for i in range(n_features)]
    raw = _load_member(archive, members["feature_names"], "feature_names")
    names = [str(n.decode("utf-8", "replace") if isinstance(n, bytes) else n).strip() for n in raw]
    check_names([*names, "y"], ("file", "feature_names"))
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
    step = rows_per_chunk(n_columns)
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
