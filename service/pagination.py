"""Opaque cursors for newest-first keyset pagination over ``(created_at, id)``.

Every list route pages the same way: ``ORDER BY created_at DESC, id DESC`` and a cursor that
names the last row of the previous page, so rows created meanwhile never shift later pages.
A repository narrows its query with :func:`newest_first`; its service asks for one row more
than the page and cuts it with :func:`page_of`, which also makes the next cursor.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

from sqlalchemy import Select, and_, or_
from sqlalchemy.orm import InstrumentedAttribute

from service.errors import BadRequest, FieldError

S = TypeVar("S", bound=Select[Any])


class Keyed(Protocol):
    """A row with a keyset position."""

    @property
    def created_at(self) -> datetime: ...
    @property
    def id(self) -> str: ...


R = TypeVar("R", bound=Keyed)


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


def newest_first(
    query: S,
    created_at: InstrumentedAttribute[datetime],
    row_id: InstrumentedAttribute[str],
    *,
    limit: int,
    after: tuple[datetime, str] | None,
) -> S:
    """``query`` ordered newest first (``created_at`` desc, ``row_id`` desc to break ties),
    cut to ``limit`` rows strictly after the keyset position ``after = (created_at, id)``."""
    query = query.order_by(created_at.desc(), row_id.desc()).limit(limit)
    if after is not None:
        after_created_at, after_id = after
        query = query.where(
            or_(
                created_at < after_created_at,
                and_(created_at == after_created_at, row_id < after_id),
            )
        )
    return query


def page_of(rows: Sequence[R], limit: int) -> tuple[list[R], str | None]:
    """The first ``limit`` of ``rows`` (read with ``limit + 1``) and the next page's cursor,
    ``None`` on the last page."""
    page = list(rows[:limit])
    next_cursor = encode_cursor(page[-1].created_at, page[-1].id) if len(rows) > limit else None
    return page, next_cursor


__all__ = ["Keyed", "decode_cursor", "encode_cursor", "newest_first", "page_of"]
