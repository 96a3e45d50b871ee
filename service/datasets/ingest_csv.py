"""CSV ingestion: a header row, then numeric rows, read in blocks of lines.

The file is read ``block_bytes`` at a time and cut at the last line break. Each block of
whole lines goes to NumPy's C parser (``np.loadtxt`` on the block) after a byte-level check
that it holds only digits, signs, points, exponents, commas and spaces; with
``invalid_rows="drop"`` a block it refuses gets a second C pass that also reads NaN, inf and
empty cells (as NaN) and drops the rows holding them. Only a block refused by both is read
again line by line, and only a refused line cell by cell, so the errors name the exact line
and column while clean files, and files with many invalid rows to drop, stay at C speed
(the block paths are :mod:`service.datasets.ingest_csv_fast_path`).

Memory: the rows go straight into X and y, allocated once from the row count that the first
block and the file size predict and grown in place (``realloc``) if the guess falls short, so
the peak is the arrays plus a few blocks of scratch, not twice the arrays.

Rules (the documented behaviour):

- UTF-8, with or without a byte-order mark; LF or CRLF line endings.
- Line 1 is the header: names are stripped of surrounding whitespace, may be quoted
  (``"a","b"``), must be non-empty and unique. A header of numbers only is refused (a
  header row is required).
- Cells are decimal numbers (``12``, ``-0.5``, ``.5``, ``5.``, ``1e-3``), surrounding spaces and
  tabs allowed, quotes allowed. Nothing else: no thousands separators, no hex, no ``1_000``.
- NaN, ``inf``, empty cells and numbers beyond float64 (``1e309``) are *invalid*: an error,
  or with ``invalid_rows="drop"`` their row is dropped and counted. Any other text is an
  error in both modes.
- Blank lines at the end of the file are ignored; a blank line followed by more data is an
  error naming the blank line (it usually means two files were pasted together).
- The row limit, and the cell limit (rows × features), count data rows read, dropped ones
  included, and stop reading as soon as they are passed.
"""

from __future__ import annotations

import csv
import math
import os
import re
from pathlib import Path
from typing import BinaryIO

import numpy as np

from service.datasets.ingest_common import (
    CSV_TEXT_HINT,
    MAX_REPORTED_ERRORS,
    IngestLimits,
    InvalidRows,
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
from service.datasets.ingest_csv_fast_path import fast_rows, plain_line, rows_to_drop_from
from service.errors import FieldError, InvalidInput

#: Bytes read per block: large enough for NumPy to run at full speed (1, 2, 4 and 8 MiB all
#: parse at the same rate), small enough that a block's scratch memory (~8× it) stays small.
BLOCK_BYTES = 1 << 20

_BOM = b"\xef\xbb\xbf"
_CELL_SPACE = " \t\r"
_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?", re.ASCII)
_NOT_FINITE = re.compile(r"[+-]?(?:nan|inf|infinity)", re.ASCII | re.IGNORECASE)
#: Longest data line accepted without a line break, per column (a number needs < 30 bytes).
_MAX_BYTES_PER_CELL = 256
_MIN_MAX_LINE_BYTES = 1 << 20


def parse_csv(
    path: Path,
    *,
    target: str | None,
    limits: IngestLimits,
    invalid_rows: InvalidRows = "error",
    block_bytes: int = BLOCK_BYTES,
) -> ParsedDataset:
    """Parse the CSV file at ``path``; see the module docstring for the rules."""
    with path.open("rb") as f:
        return _CsvParser(f, limits, invalid_rows, block_bytes).parse(target)


class _CsvParser:
    def __init__(
        self, f: BinaryIO, limits: IngestLimits, invalid_rows: InvalidRows, block_bytes: int
    ) -> None:
        self.f = f
        self.file_bytes = os.fstat(f.fileno()).st_size
        self.limits = limits
        self.drop = invalid_rows == "drop"
        self.block_bytes = max(1, block_bytes)
        self.names: list[str] = []
        self.ncols = 0
        self.target_index = 0
        # The output, allocated from an estimate of the row count and grown if it falls short.
        self.X: np.ndarray = np.empty((0, 0))
        self.y: np.ndarray = np.empty(0)
        self.n_rows = 0  # rows of X and y filled
        self.rows_read = 0  # data rows seen, dropped ones included
        self.bytes_read = 0  # of the data, after the header
        self.data_start = 0
        self.dropped = 0
        self.pending_blank: int | None = None  # line number of a blank line not yet excused

    def parse(self, target: str | None) -> ParsedDataset:
        rest = self._read_header()
        self.target_index = resolve_target(self.names, target)
        self._read_data(rest)
        if self.rows_read == 0:
            raise invalid_at(
                ("file",), "the file has a header row but no data rows", type="no_data_rows"
            )
        check_enough_rows(self.n_rows, self.dropped, ("file",))
        X = _resized(self.X, self.n_rows)
        y = _resized(self.y, self.n_rows)
        self.X, self.y = np.empty((0, 0)), np.empty(0)
        names = tuple(self.names)
        j = self.target_index
        return ParsedDataset(
            X=X,
            y=y,
            feature_names=names[:j] + names[j + 1 :],
            target_name=names[j],
            dropped_rows=self.dropped,
        )

    def _append(self, rows: np.ndarray) -> None:
        """Copy parsed ``rows`` (m, ncols) into X and y, growing them if needed."""
        m = rows.shape[0]
        needed = self.n_rows + m
        if needed > self.X.shape[0]:
            if self.X.size == 0:
                # The first rows tell the bytes per row; expect the rest of the file alike.
                bytes_per_row = max(1.0, self.bytes_read / max(1, self.rows_read))
                remaining = max(0, self.file_bytes - self.data_start - self.bytes_read)
                capacity = needed + int(remaining / bytes_per_row * 1.05) + 16
                capacity = min(capacity, max(needed, self._most_rows()))
                self.X = np.empty((capacity, self.ncols - 1), dtype=np.float64)
                self.y = np.empty(capacity, dtype=np.float64)
            else:
                capacity = max(needed, self.X.shape[0] + self.X.shape[0] // 4 + 1024)
                capacity = min(capacity, max(needed, self._most_rows()))
                self.X = _resized(self.X, capacity)
                self.y = _resized(self.y, capacity)
        split_target(
            rows, self.target_index, self.X[self.n_rows : needed], self.y[self.n_rows : needed]
        )
        self.n_rows = needed

    def _most_rows(self) -> int:
        """The most rows the limits allow at this width: the arrays never grow past it."""
        most = self.limits.max_rows
        if self.limits.max_cells is not None:
            most = min(most, self.limits.max_cells // max(1, self.ncols - 1))
        return most

    # -- the header ---------------------------------------------------------------------------

    def _read_header(self) -> bytes:
        """Read and check line 1; return the bytes read after it."""
        max_header = max(_MIN_MAX_LINE_BYTES, (self.limits.max_features + 2) * 1024)
        buf = self.f.read(self.block_bytes)
        while b"\n" not in buf:
            more = self.f.read(self.block_bytes)
            if not more:
                break
            buf += more
            if len(buf) > max_header and b"\n" not in buf:
                if buf.count(b",") > self.limits.max_features + 1:
                    raise too_many_features(buf.count(b","), self.limits, ("file", "line 1"))
                raise invalid_at(
                    ("file", "line 1"),
                    f"the header row is longer than {max_header} bytes without a line break; "
                    "is this a CSV file?",
                )
        if buf.startswith(_BOM):
            buf = buf[len(_BOM) :]
        if not buf.strip():
            raise invalid_at(("file",), "the file is empty", type="empty_file")
        end = buf.find(b"\n")
        line, rest = (buf, b"") if end < 0 else (buf[:end], buf[end + 1 :])
        text = _decode(line, 1)
        if not text.strip(_CELL_SPACE):
            raise invalid_at(
                ("file", "line 1"),
                "line 1 is blank: the first line must be the header row of column names",
            )
        if "\r" in text.rstrip("\r"):
            raise invalid_at(
                ("file", "line 1"),
                "the lines end with a bare carriage return (CR); save the file with LF or "
                "CRLF line endings",
            )
        try:
            cells = next(csv.reader([text.rstrip("\r")], skipinitialspace=True))
        except csv.Error as e:
            raise invalid_at(("file", "line 1"), f"the header row is malformed: {e}") from None
        names = [cell.strip(_CELL_SPACE) for cell in cells]
        if len(names) - 1 > self.limits.max_features:
            raise too_many_features(len(names) - 1, self.limits, ("file", "line 1"))
        if len(names) < 2:
            separator = next(
                (name for sep, name in ((";", "semicolons"), ("\t", "tabs")) if sep in text),
                None,
            )
            hint = f" (it looks separated by {separator}; use commas)" if separator else ""
            raise invalid_at(
                ("file", "line 1"),
                f"the header names {len(names)} column; a dataset needs at least two "
                f"(one or more features and the target), separated by commas{hint}",
                type="too_few_columns",
            )
        check_names(names, ("file", "line 1"))
        if all(_NUMBER.fullmatch(name) for name in names):
            raise invalid_at(
                ("file", "line 1"),
                "line 1 holds only numbers: the first line must be a header row of column names",
                type="missing_header",
            )
        self.names = names
        self.ncols = len(names)
        self.data_start = self.f.tell() - len(rest)
        return rest

    # -- the data -----------------------------------------------------------------------------

    def _read_data(self, buf: bytes) -> None:
        max_line = max(_MIN_MAX_LINE_BYTES, self.ncols * _MAX_BYTES_PER_CELL)
        line_no = 2
        at_eof = False
        while not at_eof:
            chunk = self.f.read(self.block_bytes)
            at_eof = not chunk
            buf += chunk
            if at_eof:
                block, buf = buf, b""
            else:
                cut = buf.rfind(b"\n")
                if cut < 0:
                    if len(buf) > max_line:
                        raise invalid_at(
                            ("file", f"line {line_no}"),
                            f"the line is longer than {max_line} bytes without a line break; "
                            f"expected {self.ncols} fields",
                            type="line_too_long",
                        )
                    continue
                block, buf = buf[: cut + 1], buf[cut + 1 :]
            if block:
                n_lines = block.count(b"\n") + (0 if block.endswith(b"\n") else 1)
                self._parse_block(block, n_lines, line_no)
                line_no += n_lines
            if self.rows_read > self.limits.max_rows:
                raise too_many_rows(self.limits, ("file",))
            if self.limits.cells_over(self.rows_read, self.ncols - 1):
                unread = self.data_start + self.bytes_read < self.file_bytes
                raise too_many_cells(
                    self.rows_read, self.ncols - 1, self.limits, ("file",), at_least=unread
                )

    def _parse_block(self, block: bytes, n_lines: int, first_line: int) -> None:
        self.bytes_read += len(block)
        rows = fast_rows(block, n_lines, self.ncols)
        if rows is None and self.drop:
            rows = rows_to_drop_from(block, n_lines, self.ncols)
        if rows is not None:
            if self.pending_blank is not None:
                raise self._blank_line_error(self.pending_blank)
            self.rows_read += rows.shape[0]
            if self.drop:
                finite = np.isfinite(rows).all(axis=1)
                self.dropped += rows.shape[0] - int(finite.sum())
                rows = rows if finite.all() else rows[finite]
            if rows.shape[0]:
                self._append(rows)
            return
        lines = block.split(b"\n")
        if block.endswith(b"\n"):
            lines.pop()
        self._parse_lines(lines, first_line)

    def _parse_lines(self, lines: list[bytes], first_line: int) -> None:
        """The slow path: line by line, cell by cell where a line fails, to locate problems."""
        kept: list[list[float]] = []
        errors: list[FieldError] = []
        for line_no, line in enumerate(lines, start=first_line):
            if not line.strip(b" \t\r"):
                if self.pending_blank is None:
                    self.pending_blank = line_no
                continue
            if self.pending_blank is not None:
                errors.append(self._blank_line_error(self.pending_blank).errors[0])
                self.pending_blank = None
            self.rows_read += 1
            plain = plain_line(line, self.ncols)
            if plain is not None:
                kept.append(plain)
                continue
            values, fatal, invalid_cells = self._parse_cells(line, line_no)
            if fatal is not None:
                errors.append(fatal)
            elif invalid_cells and not self.drop:
                errors.extend(invalid_cells)
            elif invalid_cells:
                self.dropped += 1
            else:
                kept.append(values)
            if len(errors) >= MAX_REPORTED_ERRORS:
                break  # enough to act on; the rest of the file is not read
        if errors:
            text = any(error.type == "not_a_number" for error in errors)
            raise invalid(errors[:MAX_REPORTED_ERRORS], hint=CSV_TEXT_HINT if text else "")
        if kept:
            self._append(np.array(kept, dtype=np.float64))

    def _parse_cells(
        self, line: bytes, line_no: int
    ) -> tuple[list[float], FieldError | None, list[FieldError]]:
        """Values of one line; or the fatal problem; or the invalid (droppable) cells."""
        where = ("file", f"line {line_no}")
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as e:
            return [], _utf8_error(e, line_no), []
        if '"' in text:
            try:
                cells = next(csv.reader([text], skipinitialspace=True))
            except csv.Error as e:
                return [], FieldError(loc=where, msg=f"malformed quoting: {e}"), []
        else:
            cells = text.split(",")
        if len(cells) != self.ncols:
            msg = f"expected {self.ncols} fields (as in the header), found {len(cells)}"
            return [], FieldError(loc=where, msg=msg, type="wrong_field_count"), []
        values: list[float] = []
        invalid_cells: list[FieldError] = []
        for name, cell in zip(self.names, cells, strict=True):
            token = cell.strip(_CELL_SPACE)
            cell_loc = (*where, f"column '{name}'")
            if _NUMBER.fullmatch(token):
                value = float(token)
                if math.isinf(value):
                    invalid_cells.append(
                        FieldError(
                            loc=cell_loc,
                            msg=f"{token!r} overflows float64 (largest ≈ 1.8e308)",
                            type="not_finite",
                        )
                    )
                values.append(value)
            elif not token:
                invalid_cells.append(
                    FieldError(loc=cell_loc, msg="the cell is empty", type="not_finite")
                )
            elif _NOT_FINITE.fullmatch(token):
                invalid_cells.append(
                    FieldError(
                        loc=cell_loc,
                        msg=f"{token!r} is not a finite number",
                        type="not_finite",
                    )
                )
            else:
                shown = token if len(token) <= 40 else token[:40] + "…"
                msg = f"{shown!r} is not a number"
                return [], FieldError(loc=cell_loc, msg=msg, type="not_a_number"), []
        return values, None, invalid_cells

    def _blank_line_error(self, line_no: int) -> InvalidInput:
        return invalid_at(
            ("file", f"line {line_no}"),
            "blank line inside the data (only blank lines at the end of the file are ignored)",
            type="blank_line",
        )


def _resized(array: np.ndarray, n_rows: int) -> np.ndarray:
    """``array`` (owning its data) with ``n_rows`` rows, kept rows unchanged, in place by
    ``realloc``: the data is not copied and memory does not double.

    ``refcheck=False`` because NumPy's reference check counts our own call's references and
    would always refuse; it is safe here since no view of the parser's X or y outlives the
    statement that made it (the slices handed to ``split_target``).
    """
    if array.shape[0] != n_rows:
        array.resize((n_rows, *array.shape[1:]), refcheck=False)
    return array


def _decode(line: bytes, line_no: int) -> str:
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError as e:
        raise invalid([_utf8_error(e, line_no)]) from None


def _utf8_error(e: UnicodeDecodeError, line_no: int) -> FieldError:
    byte = e.object[e.start]
    return FieldError(
        loc=("file", f"line {line_no}"),
        msg=f"not valid UTF-8: byte 0x{byte:02x} at position {e.start} of the line",
        type="not_utf8",
    )
