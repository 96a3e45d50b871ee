"""Tenancy in one predicate: a row asked for by id is the caller's, or it is not there.

Another tenant's dataset, job or sweep is the very same 404 as a missing one, so every read,
update and delete by id filters on the id and the tenant at once, through :func:`owned` — in
ORM statements with the values, in statements built once with bind parameters.
"""

from __future__ import annotations

from sqlalchemy import BindParameter, and_
from sqlalchemy.sql.elements import ColumnElement

from service.db.tables import Dataset, Job, Sweep


def owned(
    entity: type[Dataset | Job | Sweep],
    row_id: str | BindParameter[str],
    tenant: str | BindParameter[str],
) -> ColumnElement[bool]:
    """``entity.id = row_id AND entity.tenant = tenant``."""
    return and_(entity.id == row_id, entity.tenant == tenant)


__all__ = ["owned"]
