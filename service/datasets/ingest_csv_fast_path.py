"""The CSV fast path: whole blocks of lines read by NumPy's C parser, at C speed.

Each function here accepts only what the slow path (the line-by-line, cell-by-cell reading of
:mod:`service.datasets.ingest_csv`) accepts, with the same values, and answers ``None`` for
anything else, which the slow path then reads to name the exact line and column of a problem.
"""

from __future__ import annotations

import io
import math
import re

import numpy as np

#: Every byte a block may hold for the fast path to try it (anything else: line by line).
_FAST_PATH_BYTES = b"0123456789+-.eE,\n\r \t"
#: … and, when invalid rows are dropped, the letters of nan, inf and infinity in either case.
_DROP_PATH_BYTES = _FAST_PATH_BYTES + b"nNaAiIfFtTyY"
#: A cell of nothing but spaces or tabs, between commas or line ends (never a whole line).
_EMPTY_CELL = re.compile(rb"(?:^|(?<=,))[ \t]*(?=,|\r?$)", re.MULTILINE)
#: Where a cell without spaces is empty, and the same with the cell read as NaN.
_EMPTY_CELL_BYTES = ((b",,", b",nan,"), (b",,", b",nan,"), (b"\n,", b"\nnan,"), (b",\n", b",nan\n"))
_BLANK_LINE = re.compile(rb"^[ \t\r]*$", re.MULTILINE)


def fast_rows(block: bytes, n_lines: int, ncols: int) -> np.ndarray | None:
    """Rows (n_lines, ncols) of ``block`` (``n_lines`` whole lines), or ``None`` when anything
    is unusual: then the caller looks line by line, cell by cell.

    It accepts only what the slow path accepts, with the same values: the bytes are restricted
    to digits, signs, ``.eE``, commas and spaces (so no NaN, no quotes, no comments), NumPy's C
    parser refuses empty cells and ragged rows, and a row count short of the line count
    (NumPy skips blank lines) or a non-finite value (an overflow) sends the block back.
    """
    if not block.strip(b" \t\r\n") or block.translate(None, _FAST_PATH_BYTES):
        return None
    rows = _loadtxt(block)
    if rows is None or rows.shape != (n_lines, ncols) or not np.isfinite(rows).all():
        return None
    return rows


def _loadtxt(data: bytes) -> np.ndarray | None:
    """``data`` as float64 rows by NumPy's C parser (plain commas, no quotes or comments), or
    ``None`` where it cannot read it."""
    try:
        rows: np.ndarray = np.loadtxt(
            io.BytesIO(data),
            dtype=np.float64,
            delimiter=",",
            comments=None,
            quotechar=None,
            ndmin=2,
            encoding="latin1",
        )
    except ValueError:
        return None
    return rows


def rows_to_drop_from(block: bytes, n_lines: int, ncols: int) -> np.ndarray | None:
    """Rows (n_lines, ncols) of ``block`` with its invalid cells as NaN or ±inf, for the
    drop mode; or ``None`` when anything else is unusual (then line by line, as before).

    Invalid cells are the slow path's: ``nan``, ``inf``, ``infinity`` (any case, signed), an
    overflow such as ``1e309`` (read as ±inf) and empty cells, which become ``nan`` first.
    The extra bytes allowed are those letters only, so any other text is still the slow
    path's to report; NumPy converts each token as Python's ``float`` does, so a kept row
    has the same values. A blank line goes to the slow path (which decides whether it ends
    the file), since an empty-cell rewrite would turn it into a row.
    """
    if block.translate(None, _DROP_PATH_BYTES):
        return None
    lines = block[:-1] if block.endswith(b"\n") else block  # no line after the last break
    if _BLANK_LINE.search(lines):
        return None
    rows = _loadtxt(_empty_cells_as_nan(lines))
    return rows if rows is not None and rows.shape == (n_lines, ncols) else None


def _empty_cells_as_nan(lines: bytes) -> bytes:
    """``lines`` (no final line break) with every empty cell written ``nan``.

    Without spaces or tabs, by ``bytes.replace`` (a run of empty cells needs two passes of
    ``,,``: each pass fills every other one); with them, by :data:`_EMPTY_CELL`, which costs
    a Python call per empty cell.
    """
    if b" " in lines or b"\t" in lines:
        return _EMPTY_CELL.sub(b"nan", lines)
    lines = lines.replace(b"\r\n", b"\n")
    for empty, nan in _EMPTY_CELL_BYTES:
        lines = lines.replace(empty, nan)
    return (
        (b"nan" if lines.startswith(b",") else b"")
        + lines
        + (b"nan" if lines.endswith(b",") else b"")
    )


def plain_line(line: bytes, ncols: int) -> list[float] | None:
    """The values of a line of plain finite numbers, else ``None``.

    Within the fast path's bytes Python's ``float`` accepts exactly the documented numbers
    (surrounding spaces included), so this agrees with the cell-by-cell reading.
    """
    if line.translate(None, _FAST_PATH_BYTES):
        return None
    cells = line.split(b",")
    if len(cells) != ncols:
        return None
    try:
        values = [float(cell) for cell in cells]
    except ValueError:
        return None
    return values if all(map(math.isfinite, values)) else None


__all__ = ["fast_rows", "plain_line", "rows_to_drop_from"]
