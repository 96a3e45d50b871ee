"""All SQL about API keys. Functions flush, never commit: the caller owns the transaction."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Row, bindparam, select, update
from sqlalchemy.orm import Session

from service.db.tables import ApiKey


def add(session: Session, key: ApiKey) -> None:
    """Insert a key row."""
    session.add(key)
    session.flush()


def get(session: Session, key_id: str) -> ApiKey | None:
    """The key with ``key_id``, read afresh, or ``None``."""
    return session.scalars(
        select(ApiKey).where(ApiKey.id == key_id).execution_options(populate_existing=True)
    ).one_or_none()


# Every authenticated request runs it: built once, on the table, it costs a third of the ORM
# query (no statement to build and key, no object for the identity map).
_READ = select(ApiKey.__table__).where(ApiKey.__table__.c.id == bindparam("key_id"))


def read(session: Session, key_id: str) -> Row[*tuple[Any, ...]] | None:
    """The key with ``key_id`` as a read-only row (its columns as attributes), or ``None``."""
    return session.execute(_READ, {"key_id": key_id}).one_or_none()


def list_all(session: Session, *, tenant: str | None = None) -> list[ApiKey]:
    """Every key (of ``tenant``, if given), oldest first."""
    query = select(ApiKey).order_by(ApiKey.created_at, ApiKey.id)
    if tenant is not None:
        query = query.where(ApiKey.tenant == tenant)
    return list(session.scalars(query))


def revoke(session: Session, key_id: str, *, now: datetime) -> bool:
    """Mark the key revoked at ``now`` unless it already is; whether this revoked it."""
    result = session.execute(
        update(ApiKey)
        .where(ApiKey.id == key_id, ApiKey.revoked_at.is_(None))
        .values(revoked_at=now)
        .execution_options(synchronize_session=False)
    )
    session.flush()
    return bool(getattr(result, "rowcount", 0))


__all__ = ["add", "get", "list_all", "read", "revoke"]
