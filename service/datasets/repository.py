"""All SQL about datasets. Functions flush, never commit: the caller's boundary owns the
transaction (the request dependency, the worker's step)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import case, delete, func, insert, select
from sqlalchemy.orm import Session

from service.db import Dataset, DatasetChunk, Job, is_sqlite, owned
from service.pagination import newest_first


def add(session: Session, dataset: Dataset) -> None:
    """Insert the metadata row (before its chunks: they reference it)."""
    session.add(dataset)
    session.flush()


def add_chunk(session: Session, dataset_id: str, seq: int, data: bytes) -> None:
    """Insert one chunk of a dataset's bytes.

    A Core insert, not an ORM object, so the session keeps no reference to the bytes and a
    large upload costs one chunk of memory at a time.
    """
    session.execute(insert(DatasetChunk).values(dataset_id=dataset_id, seq=seq, data=data))


def get(session: Session, dataset_id: str, *, tenant: str | None = None) -> Dataset | None:
    """The dataset with ``dataset_id`` (owned by ``tenant``, when given), or ``None``."""
    if tenant is None:
        return session.get(Dataset, dataset_id)
    return session.scalars(select(Dataset).where(owned(Dataset, dataset_id, tenant))).one_or_none()


def list_page(
    session: Session, *, tenant: str, limit: int, after: tuple[datetime, str] | None = None
) -> list[Dataset]:
    """Up to ``limit`` of ``tenant``'s datasets, newest first (``created_at`` desc, then ``id``
    desc to break ties), strictly after the keyset position ``after = (created_at, id)``."""
    query = select(Dataset).where(Dataset.tenant == tenant)
    query = newest_first(query, Dataset.created_at, Dataset.id, limit=limit, after=after)
    return list(session.scalars(query))


def chunk(session: Session, dataset_id: str, seq: int) -> bytes | None:
    """The bytes of chunk ``seq`` of a dataset, or ``None`` if there is no such chunk."""
    return session.scalar(
        select(DatasetChunk.data).where(
            DatasetChunk.dataset_id == dataset_id, DatasetChunk.seq == seq
        )
    )


def remove(session: Session, dataset_id: str) -> bool:
    """Delete a dataset and its chunks; whether it existed.

    The chunks go explicitly too, not only by ON DELETE CASCADE, so the delete does not depend
    on a connection setting (SQLite's ``foreign_keys``).
    """
    session.execute(delete(DatasetChunk).where(DatasetChunk.dataset_id == dataset_id))
    result = session.execute(delete(Dataset).where(Dataset.id == dataset_id))
    session.flush()
    return bool(getattr(result, "rowcount", 0))


#: The first key of the advisory lock that serialises one tenant's dataset inserts
#: (PostgreSQL; the second key is the tenant's ``hashtext``).
STORAGE_LOCK_NAMESPACE = 7101


def lock_tenant_storage(session: Session, tenant: str) -> None:
    """Hold ``tenant``'s storage lock until the transaction ends, so that concurrent uploads
    of one tenant check its quota one after the other, each seeing the ones before it.

    PostgreSQL only: a transaction-level advisory lock (two tenants whose names hash alike
    merely take turns). SQLite needs none: the insert before the check takes the database's
    one write lock, held to the commit.
    """
    if is_sqlite(session.get_bind().engine.url):
        return
    session.execute(
        select(func.pg_advisory_xact_lock(STORAGE_LOCK_NAMESPACE, func.hashtext(tenant)))
    )


def stored_bytes(session: Session, tenant: str) -> int:
    """The sum of ``size_bytes`` over ``tenant``'s datasets (0 for none)."""
    total = session.scalar(
        select(func.coalesce(func.sum(Dataset.size_bytes), 0)).where(Dataset.tenant == tenant)
    )
    return int(total or 0)


def jobs_using(session: Session, dataset_id: str, *, limit: int = 1) -> list[tuple[str, str]]:
    """``(job id, status)`` of up to ``limit`` jobs on a dataset: queued or running first,
    then the newest."""
    active_first = case((Job.status.in_(("queued", "running")), 0), else_=1)
    rows = session.execute(
        select(Job.id, Job.status)
        .where(Job.dataset_id == dataset_id)
        .order_by(active_first, Job.created_at.desc(), Job.id.desc())
        .limit(limit)
    )
    return [(job_id, status) for job_id, status in rows]


__all__ = [
    "add",
    "add_chunk",
    "chunk",
    "get",
    "jobs_using",
    "list_page",
    "lock_tenant_storage",
    "remove",
    "stored_bytes",
]
