"""API keys in the database (both backends): the key's form, what is stored (a hash, never the
key), checking a key (unknown, wrong secret, revoked, not a key), revoking, listing, and tenant
names."""

from __future__ import annotations

import hashlib
import hmac
import re
import uuid
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from service.db.tables import ApiKey
from service.errors import InvalidInput, NotFound, Unauthorized
from service.keys import DEFAULT_TENANT, check_tenant_name
from service.keys import service as keys_service

KEY = re.compile(
    r"bw_(?P<id>[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12})"
    r"_(?P<secret>[A-Za-z0-9_-]{43})"
)


def test_a_new_key_is_shown_once_and_stored_as_its_sha256_only(session: Session) -> None:
    created = keys_service.create_key(session, tenant="research", name="alice's laptop")
    session.commit()
    match = KEY.fullmatch(created.key)
    assert match is not None, created.key
    assert len(created.key) == keys_service.KEY_LENGTH == 83
    assert created.record.id == match["id"]
    assert (created.record.tenant, created.record.name) == ("research", "alice's laptop")
    assert created.record.revoked_at is None

    row = session.scalars(select(ApiKey)).one()
    assert row.key_hash == hashlib.sha256(created.key.encode()).hexdigest()
    stored = " ".join(str(getattr(row, column.key)) for column in ApiKey.__table__.columns)
    assert match["secret"] not in stored
    assert created.key not in stored


def test_two_keys_never_share_id_or_secret(session: Session) -> None:
    keys = [keys_service.create_key(session, tenant="t").key for _ in range(20)]
    ids = {key[3:39] for key in keys}
    secrets = {key[40:] for key in keys}
    assert len(ids) == len(secrets) == 20


def test_a_key_authenticates_as_its_tenant(session: Session) -> None:
    key = keys_service.create_key(session, tenant="research").key
    assert keys_service.authenticate(session, key) == "research"


def test_a_wrong_secret_and_an_unknown_id_read_the_same(session: Session) -> None:
    key = keys_service.create_key(session, tenant="research").key
    wrong_secret = key[:40] + ("A" if key[40] != "A" else "B") + key[41:]
    unknown_id = f"bw_{uuid.uuid4()}_{key[40:]}"
    details = []
    for presented in (wrong_secret, unknown_id):
        with pytest.raises(Unauthorized) as caught:
            keys_service.authenticate(session, presented)
        assert caught.value.headers == {
            "WWW-Authenticate": 'Bearer realm="batchwise", error="invalid_token"'
        }
        details.append(caught.value.detail)
    assert details[0] == details[1]
    assert details[0].startswith("Unknown API key")


def test_an_unknown_id_is_compared_in_constant_time_all_the_same(
    session: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both paths make exactly one ``hmac.compare_digest`` of two SHA-256 hex digests: an
    unknown id is compared against a dummy hash, not answered early."""
    key = keys_service.create_key(session, tenant="research").key
    compared: list[tuple[Any, Any]] = []
    real = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(keys_service.hmac, "compare_digest", spy)
    known_id, unknown_id = key[:40] + "x" * 43, f"bw_{uuid.uuid4()}_{'x' * 43}"
    for presented in (known_id, unknown_id):
        with pytest.raises(Unauthorized):
            keys_service.authenticate(session, presented)
    stored = session.scalars(select(ApiKey.key_hash)).one()
    assert compared[0] == (keys_service.hash_key(known_id), stored)
    assert compared[1][0] == keys_service.hash_key(unknown_id)
    assert re.fullmatch(r"[0-9a-f]{64}", compared[1][1])  # a dummy digest of the same length
    assert compared[1][1] != stored
    assert len(compared) == 2


@pytest.mark.parametrize(
    "presented",
    ["", "bw_", "Bearer x", "bw_not-a-uuid_" + "a" * 43, "bw_" + str(uuid.UUID(int=1)) + "_short"],
)
def test_what_is_not_a_key_is_refused_saying_what_a_key_is(
    session: Session, presented: str
) -> None:
    with pytest.raises(Unauthorized, match=r"not a Batchwise API key: expected bw_<key id>_"):
        keys_service.authenticate(session, presented)


def test_a_revoked_key_is_refused_saying_when(session: Session) -> None:
    created = keys_service.create_key(session, tenant="research")
    key, revoked_now = keys_service.revoke_key(session, created.record.id)
    assert revoked_now is True
    assert key.revoked_at is not None
    with pytest.raises(Unauthorized) as caught:
        keys_service.authenticate(session, created.key)
    when = key.revoked_at.strftime("%Y-%m-%d %H:%M:%S UTC")
    assert caught.value.detail == (
        f"API key {created.record.id} was revoked at {when}: ask for a new one."
    )


def test_revoking_twice_changes_nothing_and_an_unknown_id_is_not_found(session: Session) -> None:
    created = keys_service.create_key(session, tenant="research")
    first, _ = keys_service.revoke_key(session, created.record.id)
    again, revoked_now = keys_service.revoke_key(session, created.record.id)
    assert revoked_now is False
    assert again.revoked_at == first.revoked_at
    with pytest.raises(NotFound, match="No API key with id 'nope'"):
        keys_service.revoke_key(session, "nope")


def test_keys_list_oldest_first_optionally_one_tenants(session: Session) -> None:
    made = [
        keys_service.create_key(session, tenant=tenant).record.id
        for tenant in ("a", "b", "a", DEFAULT_TENANT)
    ]
    assert [key.id for key in keys_service.list_keys(session)] == made
    assert [key.id for key in keys_service.list_keys(session, tenant="a")] == [made[0], made[2]]
    assert keys_service.list_keys(session, tenant="nobody") == []


def test_a_key_name_over_200_characters_is_refused(session: Session) -> None:
    with pytest.raises(InvalidInput, match="201 characters long; at most 200"):
        keys_service.create_key(session, tenant="a", name="x" * 201)


@pytest.mark.parametrize("name", ["default", "a", "0", "research-team", "a_b-9", "a" * 63])
def test_valid_tenant_names(name: str) -> None:
    assert check_tenant_name(name) == name


@pytest.mark.parametrize(
    "name",
    ["", "Research", "-lead", "_lead", "a b", "a.b", "a/b", "a" * 64, "é", "a\n", "tenant!"],
)
def test_invalid_tenant_names_are_refused_saying_what_a_name_is(
    session: Session, name: str
) -> None:
    message = "use 1 to 63 lower-case letters, digits, '_' or '-', starting with a letter"
    with pytest.raises(InvalidInput, match=re.escape(message)):
        check_tenant_name(name)
    with pytest.raises(InvalidInput, match=re.escape(message)):
        keys_service.create_key(session, tenant=name)
    assert session.scalars(select(ApiKey)).all() == []
