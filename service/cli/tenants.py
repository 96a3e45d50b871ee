"""``batchwise tenants``: the tenants and their limits, on the configured database directly.

``tenants list`` shows every tenant (with a key, or limits of its own) and the limits in force
for it, its own marked ``*``; ``tenants set-limits NAME --max-running 8 …`` sets a tenant's own
limits (``default`` clears one: the configured default applies again).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from sqlalchemy import pool
from sqlalchemy.orm import Session

from service import tenants
from service.client.formatting import format_table
from service.config import Settings
from service.db import create_engine_for, session_factory
from service.errors import InvalidInput
from service.keys import service as keys_service

COMMAND = "tenants"

#: (option, column, the Settings field it overrides, value type, help)
OPTIONS: tuple[tuple[str, str, str, Callable[[str], int | float], str], ...] = (
    ("--max-running", "max_running_jobs", "tenant_max_running_jobs", int,
     "jobs running at once (the claim leaves the rest queued)"),
    ("--max-queued", "max_queued_jobs", "tenant_max_queued_jobs", int,
     "queued jobs (a submit past it: 429)"),
    ("--max-stored-bytes", "max_stored_bytes", "tenant_max_stored_bytes", int,
     "bytes of stored datasets (an upload past it: 413)"),
    ("--max-steps", "max_steps_per_job", "max_steps_per_job", int,
     "optimizer steps one job may take (422 above it)"),
    ("--max-runtime", "max_job_runtime_s", "max_job_runtime_s", float,
     "seconds one job may run, and what a job asking for none gets"),
    ("--max-job-bytes", "max_job_bytes", "max_job_bytes", int,
     "bytes one job may need in a worker (422 above it)"),
)  # fmt: skip

#: Written for an option to clear the tenant's own limit.
DEFAULT = "default"


def _tenant_name(value: str) -> str:
    try:
        return keys_service.check_tenant_name(value)
    except InvalidInput as exc:
        raise argparse.ArgumentTypeError(exc.detail) from None


def _limit(kind: Callable[[str], int | float]) -> Callable[[str], int | float | None]:
    def parse(value: str) -> int | float | None:
        if value == DEFAULT:
            return None
        try:
            number = kind(value)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{value!r} is not a {'whole ' if kind is int else ''}number; give a positive "
                f"one, or {DEFAULT!r} to go back to the configured default"
            ) from None
        if number <= 0:
            raise argparse.ArgumentTypeError(f"{value} is not positive")
        return number

    return parse


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``tenants list|set-limits`` to the ``batchwise`` parser's subcommands."""
    parser = commands.add_parser(
        COMMAND,
        help="list tenants and set their own limits",
        description="The tenants and the limits in force for each: the configured defaults "
        "(BATCHWISE_TENANT_MAX_RUNNING_JOBS, …), or the tenant's own. Works on the configured "
        "database, which must be at the newest schema (`batchwise migrate`).",
    )
    actions = parser.add_subparsers(dest="tenants_command", required=True, metavar="ACTION")
    actions.add_parser(
        "list",
        help="list the tenants and their limits",
        description="Every tenant with an API key or limits of its own, and the limits in "
        "force for it; a limit of its own is marked '*'.",
    )
    set_limits = actions.add_parser(
        "set-limits",
        help="set a tenant's own limits",
        description="Set NAME's own limits, in place of the configured defaults; the limits "
        f"not named stay as they are. {DEFAULT!r} clears one (the default applies again). "
        "The API and the workers apply a change at the next submit, upload or claim.",
    )
    set_limits.add_argument("tenant", metavar="NAME", type=_tenant_name)
    for option, column, _, kind, what in OPTIONS:
        set_limits.add_argument(
            option,
            dest=column,
            type=_limit(kind),
            default=argparse.SUPPRESS,  # absent unless given: None means "back to the default"
            metavar="N|default",
            help=what,
        )


def _shown(value: int | float | None) -> str:
    if value is None:
        return "-"
    return f"{value:g}" if isinstance(value, float) else f"{value:,}"


def _defaults(settings: Settings) -> dict[str, int | float | None]:
    values: dict[str, int | float | None] = {
        column: getattr(settings, field) for _, column, field, _, _ in OPTIONS
    }
    values["max_job_bytes"] = settings.resolved_max_job_bytes
    return values


def _list(session: Session, settings: Settings) -> int:
    defaults = _defaults(settings)
    headers = ("tenant", *(option.removeprefix("--") for option, *_ in OPTIONS))
    rows = [("(default)", *(_shown(defaults[column]) for _, column, *_ in OPTIONS))]
    for name in tenants.known_tenants(session):
        own = tenants.limits_of(session, name).overrides()
        rows.append(
            (
                name,
                *(
                    f"{_shown(own[column])}*" if column in own else _shown(defaults[column])
                    for _, column, *_ in OPTIONS
                ),
            )
        )
    print(format_table(headers, rows, right=[False] + [True] * len(OPTIONS), rule=False))
    if len(rows) == 1:
        print(
            "No tenants yet: a tenant exists once it has a key (`batchwise keys create`) or "
            "limits of its own (`batchwise tenants set-limits`).",
            file=sys.stderr,
        )
    return 0


def _set(session: Session, args: argparse.Namespace) -> int:
    changes = {column: getattr(args, column) for _, column, *_ in OPTIONS if hasattr(args, column)}
    if not changes:
        options = ", ".join(option for option, *_ in OPTIONS)
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


__all__ = ["COMMAND", "add_commands", "run"]
