"""API keys and tenants: make, list, revoke and check the keys that say which tenant a request
acts for. A tenant is a name, nothing more: it exists on its keys and on the datasets, jobs
and sweeps it owns.

Modules: ``repository`` (all SQL), ``service`` (the rules: the key format, hashing, the
constant-time check; import it as ``from service.keys import service as keys_service``).
"""

from service.keys.service import (
    DEFAULT_TENANT,
    ApiKeyRead,
    CreatedKey,
    check_tenant_name,
)

__all__ = ["DEFAULT_TENANT", "ApiKeyRead", "CreatedKey", "check_tenant_name"]
