"""The parsers of the server's commands: ``serve``, ``worker``, ``migrate``, ``keys`` and
``tenants``, with their argument checks. What runs them is in :mod:`.server`, :mod:`.keys` and
:mod:`.tenants`, dispatched by :mod:`.runner`.

Light on purpose: the standard library, :mod:`service.keys.names` and :mod:`service.errors`
only. ``batchwise --help``
builds every command's parser, and the HTTP client's commands (:mod:`.remote`) build them too,
so none of them loads the settings, the database or the web stack to start.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from service.errors import InvalidInput
from service.keys.names import NAME_LENGTH, check_tenant_name

ENVIRONMENT = """\
environment:
  BATCHWISE_DATABASE_URL  SQLAlchemy URL: sqlite:///path/to/file.db or
                          postgresql+psycopg://user:password@host:5432/dbname
                          (default: SQLite file batchwise.db in the data dir)
  BATCHWISE_DATA_DIR      where the SQLite file, upload spool and dataset cache live
                          (default ./batchwise-data)
  BATCHWISE_LOG_LEVEL     debug | info | warning | error (default info)
  BATCHWISE_LOG_FORMAT    auto | json | text (default auto: text on a terminal, else JSON)
"""

_SERVE_ENVIRONMENT = (
    ENVIRONMENT
    + """\
  BATCHWISE_HOST, BATCHWISE_PORT   listen address (default 127.0.0.1:8000); flags override
  BATCHWISE_AUTH                   on (default: /v1 needs an API key, `batchwise keys`) |
                                   off (no keys: loopback addresses only)
  BATCHWISE_MAX_UPLOAD_BYTES       largest dataset upload accepted (default 1 GiB)
  BATCHWISE_API_PROCESSES          API processes sharing the port (default 1)
  BATCHWISE_WORKERS                worker processes started beside the API
  BATCHWISE_LEASE_SECONDS          how long a worker's claim on a job lasts without a
                                   heartbeat (default 30)
  BATCHWISE_WORKER_THREADS         BLAS threads per worker process (default 1)
"""
)

_WORKER_ENVIRONMENT = (
    ENVIRONMENT
    + """\
  BATCHWISE_LEASE_SECONDS   how long a claim on a job lasts without a heartbeat (default 30)
  BATCHWISE_POLL_SECONDS    longest wait between looks at an empty queue (default 1)
  BATCHWISE_WORKER_THREADS  BLAS threads of this worker (default 1)
"""
)

KEYS = "keys"
TENANTS = "tenants"

#: The limits ``tenants set-limits`` sets: (option, column, the Settings field it overrides,
#: value type, help).
LIMIT_OPTIONS: tuple[tuple[str, str, str, Callable[[str], int | float], str], ...] = (
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

#: Written for a limit to clear the tenant's own: the configured default applies again.
DEFAULT_LIMIT = "default"


def add_serve(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``serve`` to the ``batchwise`` parser's subcommands."""
    serve = commands.add_parser(
        "serve",
        help="run the HTTP API",
        description="Run the HTTP API (uvicorn). A SQLite database is migrated to the newest "
        "schema on start; a PostgreSQL database must already be at the newest schema "
        "(run `batchwise migrate`), or serve refuses to start.",
        epilog=_SERVE_ENVIRONMENT,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    serve.add_argument("--host", help="address to listen on (overrides BATCHWISE_HOST)")
    serve.add_argument(
        "--port", type=int, help="port to listen on, 0 for any free one (overrides BATCHWISE_PORT)"
    )


def add_worker(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``worker`` to the ``batchwise`` parser's subcommands."""
    worker = commands.add_parser(
        "worker",
        help="train queued jobs",
        description="Claim queued training jobs from the database and train them, one at a "
        "time, until SIGTERM or SIGINT (a running job stops at its next step and goes back to "
        "the queue, to resume from its last epoch). Run as many as the cores allow, on any "
        "machine that reaches the database. The schema must be at the newest migration.",
        epilog=_WORKER_ENVIRONMENT,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    worker.add_argument(
        "--burst", action="store_true", help="exit once the queue is empty (batch runs, tests)"
    )


def add_migrate(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``migrate`` to the ``batchwise`` parser's subcommands."""
    commands.add_parser(
        "migrate",
        help="upgrade the database schema to the newest migration",
        description="Upgrade the database schema to the newest migration (Alembic head). Safe "
        "to run repeatedly; a database already at the head is left as it is. Run it before "
        "`batchwise serve` against PostgreSQL after every upgrade of the service.",
        epilog=ENVIRONMENT,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def _tenant_name(value: str) -> str:
    try:
        return check_tenant_name(value)
    except InvalidInput as exc:
        raise argparse.ArgumentTypeError(exc.detail) from None


def _key_name(value: str) -> str:
    if len(value) > NAME_LENGTH:
        raise argparse.ArgumentTypeError(
            f"the name is {len(value)} characters long; at most {NAME_LENGTH}"
        )
    return value


def add_keys(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``keys create|list|revoke`` to the ``batchwise`` parser's subcommands."""
    keys = commands.add_parser(
        KEYS,
        help="make, list and revoke API keys",
        description="Make, list and revoke the API keys the HTTP API accepts "
        "(`Authorization: Bearer <key>`). Each key acts for one tenant: it sees and changes "
        "that tenant's datasets, jobs and sweeps only. Works on the configured database "
        "(BATCHWISE_DATABASE_URL, or the SQLite file in BATCHWISE_DATA_DIR), which must be "
        "at the newest schema (`batchwise migrate`).",
    )
    actions = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    create = actions.add_parser(
        "create",
        help="make a key for a tenant",
        description="Make an API key for TENANT and print it on stdout, once: only its hash "
        "is stored, so it cannot be shown again. A tenant exists as soon as it has a key.",
    )
    create.add_argument(
        "--tenant",
        required=True,
        type=_tenant_name,
        help="the tenant: 1-63 of a-z, 0-9, '_' and '-', starting with a letter or digit",
    )
    create.add_argument("--name", type=_key_name, help="a label for people, e.g. who holds the key")
    listing = actions.add_parser(
        "list",
        help="list the keys (never their secrets)",
        description="List API keys, oldest first: id, tenant, name, created, revoked.",
    )
    listing.add_argument("--tenant", type=_tenant_name, help="only this tenant's keys")
    revoke = actions.add_parser(
        "revoke",
        help="revoke a key",
        description="Revoke the key KEY_ID (the id `keys list` shows): requests carrying it "
        "answer 401 from now on. Revoking a revoked key changes nothing.",
    )
    revoke.add_argument("key_id", metavar="KEY_ID")


def _limit(kind: Callable[[str], int | float]) -> Callable[[str], int | float | None]:
    def parse(value: str) -> int | float | None:
        if value == DEFAULT_LIMIT:
            return None
        try:
            number = kind(value)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{value!r} is not a {'whole ' if kind is int else ''}number; give a positive "
                f"one, or {DEFAULT_LIMIT!r} to go back to the configured default"
            ) from None
        if number <= 0:
            raise argparse.ArgumentTypeError(f"{value} is not positive")
        return number

    return parse


def add_tenants(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``tenants list|set-limits`` to the ``batchwise`` parser's subcommands."""
    parser = commands.add_parser(
        TENANTS,
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
        f"not named stay as they are. {DEFAULT_LIMIT!r} clears one (the default applies "
        "again). The API and the workers apply a change at the next submit, upload or claim.",
    )
    set_limits.add_argument("tenant", metavar="NAME", type=_tenant_name)
    for option, column, _, kind, what in LIMIT_OPTIONS:
        set_limits.add_argument(
            option,
            dest=column,
            type=_limit(kind),
            default=argparse.SUPPRESS,  # absent unless given: None means "back to the default"
            metavar="N|default",
            help=what,
        )


__all__ = [
    "DEFAULT_LIMIT",
    "ENVIRONMENT",
    "KEYS",
    "LIMIT_OPTIONS",
    "TENANTS",
    "add_keys",
    "add_migrate",
    "add_serve",
    "add_tenants",
    "add_worker",
]
