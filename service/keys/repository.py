"""All SQL about API keys. Functions flush, never commit: the caller owns the transaction."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select, update
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


__all__ = ["add", "get", "list_all", "revoke"]
