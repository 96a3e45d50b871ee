"""Text for a terminal, written once for the terminal client (``batchwise datasets|jobs``),
``batchwise keys`` and the demo: tables, numbers, times and durations."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from typing import Any

#: What a table or a sentence shows for a value that is not there.
MISSING = "—"


def format_table(
    headers: Sequence[str],
    rows: Iterable[Sequence[str]],
    *,
    right: Sequence[bool] | None = None,
    rule: bool = True,
) -> str:
    """A plain-text table: columns padded to their widest cell, two spaces apart, trailing
    spaces trimmed. ``right`` says which columns are right-aligned (default: all but the
    first); ``rule`` draws a line of dashes under the headers. No final newline."""
    rows = [list(row) for row in rows]
    widths = [max([len(h), *(len(row[i]) for row in rows)]) for i, h in enumerate(headers)]
    right = [i > 0 for i in range(len(headers))] if right is None else right

    def line(cells: Sequence[str]) -> str:
        padded = (
            cell.rjust(width) if to_right else cell.ljust(width)
            for cell, width, to_right in zip(cells, widths, right, strict=True)
        )
        return "  ".join(padded).rstrip()

    lines = [line(headers)]
    if rule:
        lines.append("  ".join("-" * width for width in widths))
    lines += [line(row) for row in rows]
    return "\n".join(lines)


def numeric_columns(rows: Sequence[Sequence[str]], n_columns: int) -> list[bool]:
    """Which of ``n_columns`` columns hold only numbers (or :data:`MISSING`): those a table
    right-aligns. None of them when there are no rows."""
    return [bool(rows) and all(_looks_numeric(row[i]) for row in rows) for i in range(n_columns)]


def _looks_numeric(cell: str) -> bool:
    if cell == MISSING:
        return True
    try:
        float(cell)
    except ValueError:
        return False
    return True


def number(value: Any) -> str:
    """A value for a table cell: integers as they are, floats to 6 significant digits, null
    as :data:`MISSING`, anything else (text, inf, nan) as ``str`` gives it."""
    if value is None:
        return MISSING
    if isinstance(value, float) and math.isfinite(value):
        return f"{value:.6g}"
    return str(value)


def figure(value: float | None, digits: int = 4) -> str:
    """A figure for people to ``digits`` significant digits, thousands separated once it has
    that many; :data:`MISSING` for none or a non-finite value."""
    if value is None or not math.isfinite(value):
        return MISSING
    if abs(value) >= 10 ** (digits - 1):
        return f"{value:,.0f}"
    return f"{value:.{digits}g}"


def seconds(value: float | None) -> str:
    """A wall time: ``250 ms`` below a second, ``3.2 s`` above; :data:`MISSING` for none."""
    if value is None or not math.isfinite(value):
        return MISSING
    return f"{value * 1000:.3g} ms" if value < 1 else f"{value:.3g} s"


def duration(value: float) -> str:
    """A time left, compact: ``42s``, ``3m05s``, ``2h07m`` (negative counts as 0)."""
    value = max(0.0, value)
    if value < 60:
        return f"{value:.0f}s"
    minutes, secs = divmod(round(value), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def timestamp(iso: str | None) -> str:
    """``2024-11-26T10:00:00.123456Z`` → ``2024-11-26 10:00:00`` (UTC, as the API sends)."""
    if iso is None:
        return MISSING
    return iso.replace("T", " ")[:19]


def json_text(value: Any) -> str:
    """``value`` as indented JSON, non-ASCII kept as it is: what ``--json`` prints."""
    return json.dumps(value, indent=2, ensure_ascii=False)


__all__ = [
    "MISSING",
    "duration",
    "figure",
    "format_table",
    "json_text",
    "number",
    "numeric_columns",
    "seconds",
    "timestamp",
]
