"""What every ingestion format shares: the limits, the parsed result, and the error helpers.

Public names are re-exported by :mod:`service.datasets.ingest`; import them from there.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from service.errors import FieldError, InvalidInput, PayloadTooLarge

Loc = tuple[str | int, ...]
InvalidRows = Literal["error", "drop"]

#: Most problems listed in one error response; the rest are counted, not listed.
MAX_REPORTED_ERRORS = 10
#: Rows are converted, checked, summarised and written this many bytes of float64 at a time,
#: so scratch memory stays a few MB whatever the dataset's size.
ROW_CHUNK_BYTES = 4 << 20


@dataclass(frozen=True)
class IngestLimits:
    """Bounds on a dataset's shape (``Settings.max_rows``, ``max_features``, ``max_cells``).

    max_cells : most rows × features (the target column not counted); None for no bound
        beyond the other two. Rows are counted as read, dropped ones included, as for
        ``max_rows``.
    max_decompressed_bytes : most bytes the arrays read from an NPZ archive may hold once
        decompressed (``Settings.max_decompressed_bytes``), judged from the archive's
        headers before any is decompressed; None for no bound.
    """

    max_rows: int
    max_features: int
    max_cells: int | None = None
    max_decompressed_bytes: int | None = None

    def cells_over(self, n_rows: int, n_features: int) -> bool:
        """Whether ``n_rows`` × ``n_features`` passes ``max_cells``."""
        return self.max_cells is not None and n_rows * n_features > self.max_cells


@dataclass(frozen=True)
class ParsedDataset:
    """A validated dataset.

    X : (n_rows, n_features) float64, C-contiguous, every value finite.
    y : (n_rows,) float64, every value finite.
    dropped_rows : rows left out because of NaN, infinite, empty or overflowing cells
        (only with ``invalid_rows="drop"``; 0 otherwise).
    """

    X: np.ndarray
    y: np.ndarray
    feature_names: tuple[str, ...]
    target_name: str
    dropped_rows: int = 0

    @property
    def n_rows(self) -> int:
        return int(self.X.shape[0])

    @property
    def n_features(self) -> int:
        return int(self.X.shape[1])


#: What to do about text in a CSV file. No upload field selects columns (``target`` names the
#: target, ``invalid_rows=drop`` drops rows of empty, NaN or infinite cells), so the file must
#: change.
CSV_TEXT_HINT = (
    "Every column must hold numbers: encode a text column as numbers (one-hot: a 0/1 column "
    "per value; or an integer code per value, as the classes of a target) or delete it from "
    "the file, then upload again. No upload field leaves a column out: `target` names the "
    "target column, and `invalid_rows=drop` drops rows with empty, NaN or infinite cells, "
    "never text."
)


def invalid(errors: Sequence[FieldError], *, more: int = 0, hint: str = "") -> InvalidInput:
    """An :class:`InvalidInput` whose detail tells the first problem (and how many others),
    then ``hint``: what to do."""
    first = errors[0]
    where = ""
    for part in first.loc[1:]:  # ("file", "line 3", "column 'b'") -> "line 3, column 'b'"
        if isinstance(part, int):
            where += f"[{part}]"  # ("body", "X", 2, 0) -> "X[2][0]"
        else:
            where += f", {part}" if where else part
    detail = f"{where}: {first.msg}" if where else first.msg
    others = len(errors) - 1 + more
    if others:
        detail += f" (and {others} more problem{'s' if others > 1 else ''})"
    if hint:
        detail += f". {hint}"
    return InvalidInput(detail, errors=errors)


def invalid_at(loc: Loc, msg: str, *, type: str = "value_error") -> InvalidInput:
    """An :class:`InvalidInput` with one problem at ``loc``."""
    return invalid([FieldError(loc=loc, msg=msg, type=type)])


def too_many_rows(limits: IngestLimits, loc: Loc) -> PayloadTooLarge:
    msg = f"the dataset has more than {limits.max_rows} rows, the limit set by BATCHWISE_MAX_ROWS"
    return PayloadTooLarge(msg, errors=[FieldError(loc=loc, msg=msg, type="too_many_rows")])


def too_many_features(n_features: int, limits: IngestLimits, loc: Loc) -> PayloadTooLarge:
    msg = (
        f"the dataset has {n_features} feature columns, more than {limits.max_features}, "
        "the limit set by BATCHWISE_MAX_FEATURES"
    )
    return PayloadTooLarge(msg, errors=[FieldError(loc=loc, msg=msg, type="too_many_features")])


def too_many_cells(
    n_rows: int, n_features: int, limits: IngestLimits, loc: Loc, *, at_least: bool = False
) -> PayloadTooLarge:
    """413, like the row and feature limits: the data may be fine, only larger than this
    server takes. ``at_least``: the rows counted so far (a CSV file is refused before its
    end)."""
    rows = f"at least {n_rows}" if at_least else f"{n_rows}"
    msg = (
        f"the dataset has {rows} rows × {n_features} features = {n_rows * n_features} cells, "
        f"more than {limits.max_cells}, the limit set by BATCHWISE_MAX_CELLS"
    )
    return PayloadTooLarge(msg, errors=[FieldError(loc=loc, msg=msg, type="too_many_cells")])


def check_enough_rows(n_rows: int, dropped_rows: int, loc: Loc) -> None:
    """Training needs two rows at least (one to fit, one to validate)."""
    if n_rows >= 2:
        return
    msg = f"a dataset needs at least two rows, found {n_rows}"
    if dropped_rows:
        msg += f" after dropping {dropped_rows} with NaN, infinite, empty or overflowing cells"
    raise invalid_at(loc, msg, type="too_few_rows")


def check_names(names: Sequence[str], loc: Loc) -> None:
    """Column names must be non-empty and unique; ``loc`` is extended by ``column index i``."""
    errors: list[FieldError] = []
    first_seen: dict[str, int] = {}
    for i, name in enumerate(names):
        where = (*loc, f"column index {i}")
        if not name:
            errors.append(FieldError(loc=where, msg="the column name is empty", type="empty_name"))
        elif name in first_seen:
            errors.append(
                FieldError(
                    loc=where,
                    msg=f"duplicate column name '{name}' (also column index {first_seen[name]})",
                    type="duplicate_name",
                )
            )
        else:
            first_seen[name] = i
    if errors:
        raise invalid(errors[:MAX_REPORTED_ERRORS], more=max(0, len(errors) - MAX_REPORTED_ERRORS))


def resolve_target(names: Sequence[str], target: str | None) -> int:
    """The index of the target column among ``names``.

    ``None`` means the last column; otherwise an exact column name, or else a 0-based index
    written as a decimal string (``"3"``). A name wins over an index, so a column literally
    called ``"3"`` is found by name.
    """
    if target is None:
        return len(names) - 1
    if target in names:
        return list(names).index(target)
    stripped = target.strip()
    if stripped.isascii() and stripped.isdigit():
        index = int(stripped)
        if index < len(names):
            return index
        msg = (
            f"target column index {index} is out of range: the file has {len(names)} columns "
            f"(indices 0 to {len(names) - 1})"
        )
        raise invalid_at(("target",), msg, type="target_not_found")
    raise invalid_at(
        ("target",),
        f"target column '{target}' is not in the file; its columns are {_list_names(names)}",
        type="target_not_found",
    )


def _list_names(names: Sequence[str], shown: int = 20) -> str:
    quoted = ", ".join(f"'{name}'" for name in names[:shown])
    if len(names) > shown:
        quoted += f", … ({len(names) - shown} more)"
    return quoted


def rows_per_chunk(n_columns: int) -> int:
    """Rows of ``n_columns`` float64 values in :data:`ROW_CHUNK_BYTES` (at least one)."""
    return max(1, ROW_CHUNK_BYTES // (8 * max(1, n_columns)))


def split_target(
    columns: np.ndarray, target_index: int, X_out: np.ndarray, y_out: np.ndarray
) -> None:
    """Copy ``columns`` (m, d + 1) into ``X_out`` (m, d) and ``y_out`` (m,), without temporaries."""
    j = target_index
    X_out[:, :j] = columns[:, :j]
    X_out[:, j:] = columns[:, j + 1 :]
    y_out[:] = columns[:, j]
