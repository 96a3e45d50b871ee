"""API keys and tenants: make, list, revoke and check the keys that say which tenant a request
acts for. A tenant is a name, nothing more: it exists on its keys and on the datasets, jobs
and sweeps it owns.

Modules: ``names`` (what a valid tenant or key name is: pure rules, no database), ``repository``
(all SQL), ``service`` (the rules: the key format, hashing, the constant-time check; import it
as ``from service.keys import service as keys_service``). This package imports ``names`` only,
so the command line checks a tenant's name without loading SQLAlchemy.
"""

from service.keys.names import DEFAULT_TENANT, check_tenant_name

__all__ = ["DEFAULT_TENANT", "check_tenant_name"]
