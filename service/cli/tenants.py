"""``batchwise tenants``: the tenants and their limits, on the configured database directly.

``tenants list`` shows every tenant (with a key, or limits of its own) and the limits in force
for it, its own marked ``*``; ``tenants set-limits NAME --max-running 8 …`` sets a tenant's own
limits (``default`` clears one: the configured default applies again). The parser, and the
limits it knows, are in :mod:`.parsers`.
"""

from __future__ import annotations

import argparse
import sys

from sqlalchemy import pool
from sqlalchemy.orm import Session

from service import tenants
from service.cli.parsers import LIMIT_OPTIONS
from service.client.formatting import format_table
from service.config import Settings
from service.db import create_engine_for, session_factory


def _shown(value: int | float | None) -> str:
    if value is None:
        return "-"
    return f"{value:g}" if isinstance(value, float) else f"{value:,}"


def _defaults(settings: Settings) -> dict[str, int | float | None]:
    values: dict[str, int | float | None] = {
        column: getattr(settings, field) for _, column, field, _, _ in LIMIT_OPTIONS
    }
    values["max_job_bytes"] = settings.resolved_max_job_bytes
    return values


def _list(session: Session, settings: Settings) -> int:
    defaults = _defaults(settings)
    headers = ("tenant", *(option.removeprefix("--") for option, *_ in LIMIT_OPTIONS))
    rows = [("(default)", *(_shown(defaults[column]) for _, column, *_ in LIMIT_OPTIONS))]
    for name in tenants.known_tenants(session):
        own = tenants.limits_of(session, name).overrides()
        rows.append(
            (
                name,
                *(
                    f"{_shown(own[column])}*" if column in own else _shown(defaults[column])
                    for _, column, *_ in LIMIT_OPTIONS
                ),
            )
        )
    print(format_table(headers, rows, right=[False] + [True] * len(LIMIT_OPTIONS), rule=False))
    if len(rows) == 1:
        print(
            "No tenants yet: a tenant exists once it has a key (`batchwise keys create`) or "
            "limits of its own (`batchwise tenants set-limits`).",
            file=sys.stderr,
        )
    return 0


def _set(session: Session, args: argparse.Namespace) -> int:
    changes = {
        column: getattr(args, column) for _, column, *_ in LIMIT_OPTIONS if hasattr(args, column)
    }
    if not changes:
        options = ", ".join(option for option, *_ in LIMIT_OPTIONS)
        print(
            f"batchwise tenants set-limits: error: name at least one limit ({options})",
            file=sys.stderr,
        )
        return 2
    read = tenants.set_limits(session, args.tenant, changes)
    session.commit()
    own = read.overrides()
    shown = ", ".join(f"{name} {_shown(value)}" for name, value in own.items()) or "none"
    print(f"Tenant {args.tenant!r}: own limits now {shown}; the others are the defaults.")
    return 0


def run(settings: Settings, args: argparse.Namespace) -> int:
    """Run ``batchwise tenants ACTION`` on the configured database (the caller has checked
    that its schema is current); the exit status."""
    engine = create_engine_for(settings.resolved_database_url, poolclass=pool.NullPool)
    try:
        with session_factory(engine)() as session:
            if args.tenants_command == "list":
                return _list(session, settings)
            return _set(session, args)
    finally:
        engine.dispose()


__all__ = ["run"]
