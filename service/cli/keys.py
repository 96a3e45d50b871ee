"""``batchwise keys``: make, list and revoke API keys, on the configured database directly (the
keys are what the HTTP API checks, so they cannot be made through it).

``keys create --tenant NAME [--name LABEL]`` prints the new key on stdout, alone, once (it is
stored only as a hash); ``keys list [--tenant NAME]`` shows id, tenant, name, created and revoked,
never a hash; ``keys revoke KEY_ID`` makes the key answer 401 from then on. The parser is in
:mod:`.parsers`.
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime

from sqlalchemy import pool
from sqlalchemy.orm import Session

from service.client.formatting import format_table
from service.config import Settings
from service.db import create_engine_for, session_factory
from service.errors import NotFound
from service.keys import service as keys_service

EXIT_ERROR = 1


def _when(moment: datetime | None) -> str:
    return "-" if moment is None else moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def _create(session: Session, *, tenant: str, name: str | None) -> int:
    created = keys_service.create_key(session, tenant=tenant, name=name)
    session.commit()
    print(created.key)
    label = f" ({created.record.name})" if created.record.name else ""
    print(
        f"Created API key {created.record.id}{label} for tenant {tenant!r}. The key is printed "
        "above, this once: it is stored only as a hash and will not be shown again.",
        file=sys.stderr,
    )
    return 0


def _list(session: Session, *, tenant: str | None) -> int:
    rows = [
        (key.id, key.tenant, key.name or "-", _when(key.created_at), _when(key.revoked_at))
        for key in keys_service.list_keys(session, tenant=tenant)
    ]
    headers = ("id", "tenant", "name", "created", "revoked")
    print(format_table(headers, rows, right=[False] * len(headers), rule=False))
    if not rows:
        whose = f" for tenant {tenant!r}" if tenant else ""
        print(f"No API keys{whose}: make one with `batchwise keys create`.", file=sys.stderr)
    return 0


def _revoke(session: Session, key_id: str) -> int:
    try:
        key, revoked = keys_service.revoke_key(session, key_id)
    except NotFound:
        print(
            f"batchwise keys revoke: error: no API key with id {key_id!r} "
            "(`batchwise keys list` shows the ids)",
            file=sys.stderr,
        )
        return EXIT_ERROR
    session.commit()
    if revoked:
        print(f"Revoked API key {key.id} of tenant {key.tenant!r}: it now answers 401.")
    else:
        print(
            f"API key {key.id} of tenant {key.tenant!r} was already revoked at "
            f"{_when(key.revoked_at)}; nothing changed."
        )
    return 0


def run(settings: Settings, args: argparse.Namespace) -> int:
    """Run ``batchwise keys ACTION`` on the configured database (the caller has checked that
    its schema is current); the exit status."""
    engine = create_engine_for(settings.resolved_database_url, poolclass=pool.NullPool)
    try:
        with session_factory(engine)() as session:
            if args.keys_command == "create":
                return _create(session, tenant=args.tenant, name=args.name)
            if args.keys_command == "list":
                return _list(session, tenant=args.tenant)
            return _revoke(session, args.key_id)
    finally:
        engine.dispose()


__all__ = ["run"]
