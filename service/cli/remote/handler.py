"""What a handler of ``batchwise datasets|jobs ACTION`` is, and what every one of them uses:
the exit statuses, the usage error, ``--json`` output, tables and field lists, paging."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import Any, TextIO

from service.client import BatchwiseClient
from service.client.formatting import format_table, json_text, numeric_columns

#: ``handler(client, args, stdout)`` → the exit status.
Handler = Callable[[BatchwiseClient, argparse.Namespace, TextIO], int]

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class UsageError(Exception):
    """Bad input found after parsing (an unreadable --config file, a malformed --set)."""


def emit_json(value: Any, out: TextIO) -> None:
    """``--json``: exactly what the API answered."""
    out.write(json_text(value) + "\n")


def write_table(header: Sequence[str], rows: Sequence[Sequence[str]], out: TextIO) -> None:
    """Columns padded to their widest cell, two spaces apart; numbers right-aligned."""
    right = numeric_columns(rows, len(header))
    out.write(format_table(header, rows, right=right, rule=False) + "\n")


def write_fields(fields: Sequence[tuple[str, str]], out: TextIO) -> None:
    """``name  value`` lines, the values aligned."""
    width = max((len(name) for name, _ in fields), default=0)
    for name, value in fields:
        out.write(f"{name.ljust(width)}  {value}\n")


def fetch_pages(
    fetch: Callable[[str | None], Any], cursor: str | None, every: bool
) -> dict[str, Any]:
    """One page from ``cursor``, or with ``every`` all pages from there merged into one
    (``next_cursor`` null)."""
    page = dict(fetch(cursor))
    if not every:
        return page
    items = list(page["items"])
    while page["next_cursor"] is not None:
        page = dict(fetch(page["next_cursor"]))
        items.extend(page["items"])
    return {"items": items, "next_cursor": None}


def hint_next(cursor: str | None, command: str) -> None:
    """On stderr, the command that fetches the page after this one, if there is one."""
    if cursor is not None:
        print(f"more: {command} --cursor {cursor}", file=sys.stderr)


__all__ = [
    "EXIT_ERROR",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "Handler",
    "UsageError",
    "emit_json",
    "fetch_pages",
    "hint_next",
    "write_fields",
    "write_table",
]
