"""Tenants' own limits: overrides of the configured per-tenant defaults, stored in the
database (``tenant_limits``) and set with ``batchwise tenants set-limits``."""

from service.tenants.limits import (
    LIMIT_NAMES,
    TenantLimitsRead,
    known_tenants,
    limits_of,
    set_limits,
)

__all__ = ["LIMIT_NAMES", "TenantLimitsRead", "known_tenants", "limits_of", "set_limits"]
