"""Opaque cursors for newest-first keyset pagination over ``(created_at, id)``.

Every list route pages the same way: ``ORDER BY created_at DESC, id DESC`` and a cursor that
names the last row of the previous page, so rows created meanwhile never shift later pages.
"""

from __future__ import annotations

import base64
import binascii
import json
from datetime import UTC, datetime

from service.errors import BadRequest, FieldError


def encode_cursor(created_at: datetime, row_id: str) -> str:
    """An opaque cursor for the keyset position ``(created_at, row_id)``."""
    raw = json.dumps([created_at.isoformat(), row_id], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """The keyset position in ``cursor``; :class:`BadRequest` (400) naming ``cursor`` for
    anything :func:`encode_cursor` cannot have made: bad base64, bad JSON, not a pair of
    strings, a time that is not ISO 8601 with an offset or that leaves the representable
    range once in UTC (``0001-01-01T00:00:00+14:00``), an id that is not printable ASCII."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        position = json.loads(raw)
        if not (
            isinstance(position, list)
            and len(position) == 2
            and all(isinstance(part, str) for part in position)
        ):
            raise ValueError("not a pair of strings")
        created_iso, row_id = position
        created_at = datetime.fromisoformat(created_iso)
        if created_at.tzinfo is None or created_at.utcoffset() is None:
            raise ValueError("no offset")
        created_at = created_at.astimezone(UTC)  # OverflowError beyond year 1 or 9999
        # Ids are UUIDs: anything else (a NUL, a lone surrogate) could not even be bound.
        if not (row_id.isascii() and row_id.isprintable()):
            raise ValueError("not an id")
    except (binascii.Error, ValueError, TypeError, OverflowError, RecursionError):
        raise BadRequest(
            "The cursor is malformed: pass the next_cursor of a previous page unchanged.",
            errors=[FieldError(("query", "cursor"), "malformed cursor", "value_error")],
        ) from None
    return created_at, row_id


__all__ = ["decode_cursor", "encode_cursor"]
