"""Opaque cursors for newest-first keyset pagination over ``(created_at, id)``.

Every list route pages the same way: ``ORDER BY created_at DESC, id DESC`` and a cursor that
names the last row of the previous page, so rows created meanwhile never shift later pages.
"""

from __future__ import annotations

import base64
import binascii
import json
from datetime import datetime

from service.errors import BadRequest, FieldError


def encode_cursor(created_at: datetime, row_id: str) -> str:
    """An opaque cursor for the keyset position ``(created_at, row_id)``."""
    raw = json.dumps([created_at.isoformat(), row_id], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """The keyset position in ``cursor``; :class:`BadRequest` (400) if it is not one of ours."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created_iso, row_id = json.loads(raw)
        created_at = datetime.fromisoformat(created_iso)
        if created_at.tzinfo is None or not isinstance(row_id, str):
            raise ValueError("not a cursor")
    except (binascii.Error, ValueError, TypeError, UnicodeDecodeError):
        raise BadRequest(
            "The cursor is malformed: pass the next_cursor of a previous page unchanged.",
            errors=[FieldError(("query", "cursor"), "malformed cursor", "value_error")],
        ) from None
    return created_at, row_id


__all__ = ["decode_cursor", "encode_cursor"]
