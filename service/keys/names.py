"""The names of tenants and of API keys: what a valid one is. Pure rules on strings (the
standard library and :mod:`service.errors` only), so the command line's argument checks use
them without loading the database layer that :mod:`service.keys.service` needs.
"""

from __future__ import annotations

import re

from service.errors import InvalidInput

#: The tenant every request acts for while auth is off, and of the rows from before tenants.
DEFAULT_TENANT = "default"
#: A tenant's name: lower-case letters, digits, ``_`` and ``-``, starting with a letter or digit.
TENANT_PATTERN = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
TENANT_MAX_LENGTH = 63
#: The longest label (``name``) of a key.
NAME_LENGTH = 200


def check_tenant_name(name: str) -> str:
    """``name`` if it is a valid tenant name; :class:`InvalidInput` saying what one is."""
    if TENANT_PATTERN.fullmatch(name) is None:
        raise InvalidInput(
            f"Invalid tenant name {name!r}: use 1 to {TENANT_MAX_LENGTH} lower-case letters, "
            "digits, '_' or '-', starting with a letter or a digit (e.g. 'research-team')."
        )
    return name


__all__ = [
    "DEFAULT_TENANT",
    "NAME_LENGTH",
    "TENANT_MAX_LENGTH",
    "TENANT_PATTERN",
    "check_tenant_name",
]
