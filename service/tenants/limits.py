"""A tenant's own limits (``tenant_limits``): each one overrides its configured default, and
NULL (no override) keeps the default. Read by the API at submit and upload, and by the claim
(in SQL: :func:`service.jobs.queue.claim`); written by the CLI.

| override             | default (``Settings``)       | applied by                      |
| -------------------- | ---------------------------- | ------------------------------- |
| ``max_running_jobs`` | ``tenant_max_running_jobs``  | the claim                       |
| ``max_queued_jobs``  | ``tenant_max_queued_jobs``   | job and sweep submits (429)     |
| ``max_stored_bytes`` | ``tenant_max_stored_bytes``  | dataset uploads (413)           |
| ``max_steps_per_job``| ``max_steps_per_job``        | job and sweep submits (422)     |
| ``max_job_runtime_s``| ``max_job_runtime_s``        | submits (422; the job's limit)  |
| ``max_job_bytes``    | ``max_job_bytes``            | submits (422)                   |
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields

from sqlalchemy import select, union
from sqlalchemy.orm import Session

from service.db.tables import ApiKey, TenantLimits, utcnow

#: The limits a tenant may have of its own, as ``tenant_limits`` columns.
LIMIT_NAMES = (
    "max_running_jobs",
    "max_queued_jobs",
    "max_stored_bytes",
    "max_steps_per_job",
    "max_job_runtime_s",
    "max_job_bytes",
)


@dataclass(frozen=True)
class TenantLimitsRead:
    """A tenant's overrides; None: the configured default applies."""

    tenant: str
    max_running_jobs: int | None = None
    max_queued_jobs: int | None = None
    max_stored_bytes: int | None = None
    max_steps_per_job: int | None = None
    max_job_runtime_s: float | None = None
    max_job_bytes: int | None = None

    def overrides(self) -> dict[str, int | float]:
        """The limits set, by name."""
        return {
            f.name: value
            for f in fields(self)
            if f.name != "tenant" and (value := getattr(self, f.name)) is not None
        }


def _read(row: TenantLimits | None, tenant: str) -> TenantLimitsRead:
    if row is None:
        return TenantLimitsRead(tenant)
    return TenantLimitsRead(tenant, **{name: getattr(row, name) for name in LIMIT_NAMES})


def limits_of(session: Session, tenant: str) -> TenantLimitsRead:
    """``tenant``'s overrides (none set: every field None)."""
    return _read(session.get(TenantLimits, tenant), tenant)


def set_limits(
    session: Session, tenant: str, changes: Mapping[str, int | float | None]
) -> TenantLimitsRead:
    """Set (a value) or clear (None) each of ``changes`` for ``tenant``, in the caller's
    transaction; the others stay. A tenant left with no override loses its row."""
    unknown = set(changes) - set(LIMIT_NAMES)
    if unknown:
        raise ValueError(f"unknown tenant limits {sorted(unknown)}; expected {LIMIT_NAMES}")
    row = session.get(TenantLimits, tenant, with_for_update=True)
    if row is None:
        row = TenantLimits(tenant=tenant)
        session.add(row)
    for name, value in changes.items():
        setattr(row, name, value)
    row.updated_at = utcnow()
    read = _read(row, tenant)
    if not read.overrides():
        if row in session.new:
            session.expunge(row)
        else:
            session.delete(row)
    session.flush()
    return read


def known_tenants(session: Session) -> list[str]:
    """Every tenant with an API key or limits of its own, by name."""
    names = union(select(ApiKey.tenant), select(TenantLimits.tenant))
    return sorted(session.execute(names).scalars())


__all__ = ["LIMIT_NAMES", "TenantLimitsRead", "known_tenants", "limits_of", "set_limits"]
