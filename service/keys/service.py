"""The rules for API keys: the key format, making a key, listing and revoking keys, and checking
a presented key in constant time. Functions take the caller's session and never commit.

A key is ``bw_<id>_<secret>``: ``id`` is the row's public id (so the row is found by primary key,
not by hash), ``secret`` is ``secrets.token_urlsafe(32)`` — 256 random bits. Only the SHA-256 of
the whole key is stored; a presented key is hashed and compared with ``hmac.compare_digest``.
For an id that matches no row the comparison is made all the same, against a dummy hash, so the
time taken does not tell a known id from an unknown one.

What a valid tenant name or key name is lives in :mod:`service.keys.names` (no database
needed there), re-exported here.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session

from service.db.tables import ApiKey, utcnow
from service.errors import InvalidInput, NotFound, Unauthorized
from service.keys import repository
from service.keys.names import (
    DEFAULT_TENANT,
    NAME_LENGTH,
    TENANT_MAX_LENGTH,
    TENANT_PATTERN,
    check_tenant_name,
)

KEY_PREFIX = "bw_"
_SECRET_BYTES = 32
#: ``bw_`` + the key's id (a UUID) + ``_`` + the secret: 32 bytes as 43 URL-safe base64 characters.
_KEY_PATTERN = re.compile(
    r"bw_([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})_[A-Za-z0-9_-]{43}"
)
KEY_FORMAT = "bw_<key id>_<secret>"
KEY_LENGTH = 3 + 36 + 1 + 43
#: Compared against when the presented id matches no key (see the module docstring).
_DUMMY_HASH = hashlib.sha256(b"no such key").hexdigest()


@dataclass(frozen=True)
class ApiKeyRead:
    """What may be shown about a key: never its hash, never its secret."""

    id: str
    tenant: str
    name: str | None
    created_at: datetime
    revoked_at: datetime | None


@dataclass(frozen=True)
class CreatedKey:
    """A key just made: ``key`` is the whole key, shown this once and stored nowhere."""

    key: str
    record: ApiKeyRead


def _read(row: ApiKey) -> ApiKeyRead:
    return ApiKeyRead(
        id=row.id,
        tenant=row.tenant,
        name=row.name,
        created_at=row.created_at,
        revoked_at=row.revoked_at,
    )


def hash_key(key: str) -> str:
    """The SHA-256 hex digest of a whole key, as stored in ``api_keys.key_hash``."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def create_key(session: Session, *, tenant: str, name: str | None = None) -> CreatedKey:
    """Make a key for ``tenant`` (422 for an invalid tenant name or a label over 200
    characters); the whole key is in the result only."""
    check_tenant_name(tenant)
    if name is not None and len(name) > NAME_LENGTH:
        raise InvalidInput(f"The key's name is {len(name)} characters long; at most {NAME_LENGTH}.")
    key_id = str(uuid.uuid4())
    key = f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(_SECRET_BYTES)}"
    row = ApiKey(id=key_id, tenant=tenant, name=name, key_hash=hash_key(key), created_at=utcnow())
    repository.add(session, row)
    return CreatedKey(key=key, record=_read(row))


def list_keys(session: Session, *, tenant: str | None = None) -> list[ApiKeyRead]:
    """Every key (of ``tenant``, if given), oldest first, revoked ones included."""
    return [_read(row) for row in repository.list_all(session, tenant=tenant)]


def revoke_key(session: Session, key_id: str) -> tuple[ApiKeyRead, bool]:
    """Revoke a key: the key, and whether this call revoked it (False: it already was).
    :class:`NotFound` for an unknown id."""
    revoked = repository.revoke(session, key_id, now=utcnow())
    row = repository.get(session, key_id)
    if row is None:
        raise NotFound(f"No API key with id {key_id!r}.")
    return _read(row), revoked


def key_id_of(key: str) -> str | None:
    """The id inside a key of the right form, or ``None``."""
    match = _KEY_PATTERN.fullmatch(key)
    return match.group(1) if match else None


def authenticate(session: Session, key: str) -> str:
    """The tenant ``key`` acts for; :class:`Unauthorized` saying why not: not a key of ours,
    unknown (no such id, or a wrong secret: the two are not told apart), or revoked (when)."""
    key_id = key_id_of(key)
    if key_id is None:
        raise Unauthorized(
            f"The bearer token is not a Batchwise API key: expected {KEY_FORMAT} "
            f"({KEY_LENGTH} characters; check it was copied whole).",
            invalid_token=True,
        )
    row = repository.read(session, key_id)
    matches = hmac.compare_digest(hash_key(key), row.key_hash if row else _DUMMY_HASH)
    if row is None or not matches:
        raise Unauthorized(
            "Unknown API key: no key with this id and secret (ask for a new one: "
            "`batchwise keys create`).",
            invalid_token=True,
        )
    if row.revoked_at is not None:
        revoked = row.revoked_at.strftime("%Y-%m-%d %H:%M:%S UTC")
        raise Unauthorized(
            f"API key {row.id} was revoked at {revoked}: ask for a new one.",
            invalid_token=True,
        )
    return str(row.tenant)


__all__ = [
    "DEFAULT_TENANT",
    "KEY_FORMAT",
    "KEY_LENGTH",
    "KEY_PREFIX",
    "NAME_LENGTH",
    "TENANT_MAX_LENGTH",
    "TENANT_PATTERN",
    "ApiKeyRead",
    "CreatedKey",
    "authenticate",
    "check_tenant_name",
    "create_key",
    "hash_key",
    "key_id_of",
    "list_keys",
    "revoke_key",
]
