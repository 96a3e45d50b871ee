"""The ``batchwise`` command line: ``serve`` (the API), ``worker`` (trains jobs), ``migrate``
(the schema), ``demo`` (the batch-size demo, through the HTTP API), ``keys`` (API keys, in
:mod:`service.cli_keys`), and ``datasets`` / ``jobs`` (the terminal client, in
:mod:`service.cli_client`).

Entry point only: build :class:`~service.config.Settings` once, wire, run. Log lines go to stderr.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import socket
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import ValidationError
from sqlalchemy.exc import SQLAlchemyError

from service import __version__, cli_client, cli_keys
from service.config import Settings
from service.db import migrate
from service.db.session import DatabaseUrlError, is_sqlite, normalize_url
from service.logs import configure_logging

if TYPE_CHECKING:
    from fastapi import FastAPI

logger = logging.getLogger("service.cli")

EXIT_ERROR = 1
#: Settings that must not run together (auth off on a public address): refused like bad usage.
EXIT_REFUSED = 2

_ENVIRONMENT = """\
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
    _ENVIRONMENT
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
    _ENVIRONMENT
    + """\
  BATCHWISE_LEASE_SECONDS   how long a claim on a job lasts without a heartbeat (default 30)
  BATCHWISE_POLL_SECONDS    longest wait between looks at an empty queue (default 1)
  BATCHWISE_WORKER_THREADS  BLAS threads of this worker (default 1)
"""
)


class CommandError(Exception):
    """A failure the operator can fix; printed as one line, no traceback."""


class UnsafeSettingsError(CommandError):
    """Settings that would expose the service (auth off beyond loopback); exit status 2."""


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback address (127.0.0.0/8, ::1) or ``localhost``."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False


def _check_auth(settings: Settings) -> None:
    if settings.auth == "on":
        return
    if not is_loopback(settings.host):
        raise UnsafeSettingsError(
            f"BATCHWISE_AUTH=off is allowed only on a loopback address (127.0.0.1, ::1, "
            f"localhost), not on {settings.host!r}: anyone who reaches it would act as the "
            "tenant 'default' without a key. Turn auth on (make keys with `batchwise keys "
            "create --tenant NAME`) or listen on 127.0.0.1."
        )
    logger.warning(
        "auth is off (BATCHWISE_AUTH=off): every request acts as the tenant 'default' with no "
        "API key; allowed because the service listens on loopback %s only",
        settings.host,
    )


def _redacted(url: str) -> str:
    return normalize_url(url).render_as_string(hide_password=True)


def _configure_logging(settings: Settings) -> None:
    # JSON lines unless stderr is a terminal (BATCHWISE_LOG_FORMAT); see service.logs.
    configure_logging(settings.log_level, settings.log_format, stream=sys.stderr)


def _migrate(settings: Settings) -> None:
    url = settings.resolved_database_url
    before = migrate.current_revision(url)
    migrate.upgrade(url)
    after = migrate.current_revision(url)
    if before == after:
        logger.info("database %s already at head %s", _redacted(url), after)
    else:
        logger.info("database %s migrated from %s to %s", _redacted(url), before or "empty", after)


def _require_head(url: str) -> None:
    current, head = migrate.current_revision(url), migrate.head_revision()
    if current != head:
        raise CommandError(
            f"the schema of {_redacted(url)} is at {current or 'no revision (empty)'}, the "
            f"code needs {head}: run `batchwise migrate` first"
        )


#: What uvicorn imports in each API process when ``BATCHWISE_API_PROCESSES`` > 1.
API_APP_FACTORY = "service.cli:api_app"


def api_app() -> FastAPI:
    """The app of one of the API processes of ``batchwise serve`` (uvicorn calls it, by the
    name :data:`API_APP_FACTORY`, in each process it starts): Settings and logging built from
    the environment, as the serve command built its own — ``--host`` and ``--port`` aside,
    which only the process that listens uses."""
    settings = Settings()
    _configure_logging(settings)
    from service.api.app import create_app

    return create_app(settings)


def _serve(settings: Settings) -> None:
    _check_auth(settings)
    url = settings.resolved_database_url
    if is_sqlite(url):
        # The embedded default keeps itself current; deployments migrate as a separate step.
        _migrate(settings)
    else:
        _require_head(url)

    # Imported late so `--help` and `migrate` stay fast and never load the web stack.
    import uvicorn

    from service.api.app import create_app
    from service.api.upload import clear_spool, spool_dir
    from service.worker.processes import EmbeddedWorkers

    # What a killed process left half-received, removed here, before any API process starts:
    # with several, one (re)starting must not delete another's upload in flight.
    clear_spool(spool_dir(settings.data_dir))
    # One process: the app built here; several: uvicorn starts them, each builds its own.
    app = create_app(settings) if settings.api_processes == 1 else None
    with EmbeddedWorkers(settings.workers, threads=settings.worker_threads).running():
        logger.info(
            "serving on http://%s:%d (%d API processes, %d workers)",
            settings.host,
            settings.port,
            settings.api_processes,
            settings.workers,
        )
        # log_config=None: uvicorn's lines go through our handler (JSON, with request ids).
        if app is not None:
            uvicorn.run(
                app,
                host=settings.host,
                port=settings.port,
                log_level=settings.log_level,
                log_config=None,
            )
        else:
            _run_api_processes(settings)


def _run_api_processes(settings: Settings) -> None:
    """``settings.api_processes`` uvicorn processes sharing one listening socket, supervised
    by uvicorn (it replaces one that dies, and stops them all on SIGTERM or SIGINT, then
    returns) — what ``uvicorn.run(..., workers=N)`` does, plus ``TCP_NODELAY`` on the socket.

    uvicorn binds that socket without naming the protocol, so asyncio does not see TCP in the
    connections accepted from it and leaves Nagle's algorithm on: a response written in two
    parts (head, then body) then waits for the client's delayed ACK, 40 ms on Linux, at every
    request. Accepted connections inherit ``TCP_NODELAY`` from the listening socket.
    """
    import uvicorn
    from uvicorn.supervisors import Multiprocess

    config = uvicorn.Config(
        API_APP_FACTORY,
        factory=True,
        workers=settings.api_processes,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        log_config=None,
    )
    listening = config.bind_socket()
    listening.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    Multiprocess(config, sockets=[listening]).run()


def _worker(settings: Settings, *, burst: bool) -> int:
    _require_head(settings.resolved_database_url)
    from service.worker import cap_blas_threads

    # Before the loop's imports load NumPy: its BLAS reads the cap once, when it loads.
    cap_blas_threads(settings.worker_threads)
    from service.worker.loop import run_worker
    from service.worker.signals import StopFlag, install_stop_handlers

    stop = StopFlag()
    install_stop_handlers(stop)
    return run_worker(settings, stop=stop, burst=burst)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``batchwise`` (``serve``, ``worker``, ``migrate``, ``demo``,
    ``keys``, ``datasets``, ``jobs``)."""
    parser = argparse.ArgumentParser(
        prog="batchwise",
        description="Batchwise: training as a service for people who want to understand and "
        "choose batch sizes. Upload a dataset, train with minibatch SGD, compare batch sizes.",
        epilog=_ENVIRONMENT,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"batchwise {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

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

    demo = commands.add_parser(
        "demo",
        help="run the batch-size demo through the HTTP API",
        description="Through the HTTP API: upload a bundled synthetic dataset (linear "
        "regression, 20,000 × 16, seeded), compare batch 32 × 10 epochs with batch 128 × 5 "
        "epochs, sweep batch sizes 8 … 4,096 with the learning rate searched per batch size, "
        "print the comparison table, the fit of the critical batch size and the "
        "recommendation, and write the plots. Against --url (the API key from "
        "$BATCHWISE_API_KEY), or by default an embedded service (SQLite in a temporary data "
        "dir, 2 workers, auth off on loopback) started and stopped here. Takes "
        "well under a few minutes on 2 cores.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    demo.add_argument("--url", help="a running service, e.g. http://127.0.0.1:8000")
    demo.add_argument(
        "--out", default="batchwise-demo", help="directory for the plots (default %(default)s)"
    )
    demo.add_argument(
        "--format", choices=("svg", "png"), default="svg", help="plot format (default svg)"
    )
    demo.add_argument(
        "--data-dir", help="data dir of the embedded service (default: a temporary one)"
    )
    demo.add_argument("--quick", action="store_true", help="a smaller, faster run (tests)")

    commands.add_parser(
        "migrate",
        help="upgrade the database schema to the newest migration",
        description="Upgrade the database schema to the newest migration (Alembic head). Safe "
        "to run repeatedly; a database already at the head is left as it is. Run it before "
        "`batchwise serve` against PostgreSQL after every upgrade of the service.",
        epilog=_ENVIRONMENT,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    cli_keys.add_commands(commands)  # `keys`: API keys, on the database
    cli_client.add_commands(commands)  # `datasets` and `jobs`: the HTTP client
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``batchwise`` with ``argv`` (default ``sys.argv[1:]``); return the exit status."""
    args = build_parser().parse_args(argv)
    if args.command in cli_client.COMMANDS:
        return cli_client.run(args)
    if args.command == "demo":
        # A client of the HTTP API: it needs no settings, database or web stack of its own.
        from service.demo import run_demo

        data_dir = None if args.data_dir is None else Path(args.data_dir)
        return run_demo(
            url=args.url, out=Path(args.out), quick=args.quick, fmt=args.format, data_dir=data_dir
        )
    overrides = {
        name: value for name in ("host", "port") if (value := getattr(args, name, None)) is not None
    }
    try:
        settings = Settings(**overrides)
        _configure_logging(settings)
        if args.command == "migrate":
            _migrate(settings)
        elif args.command == "worker":
            return _worker(settings, burst=args.burst)
        elif args.command == cli_keys.COMMAND:
            _require_head(settings.resolved_database_url)
            return cli_keys.run(settings, args)
        else:
            _serve(settings)
    except UnsafeSettingsError as exc:
        print(f"batchwise {args.command}: refused: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    except (CommandError, DatabaseUrlError) as exc:
        print(f"batchwise {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, error['loc'])) or 'settings'}: {error['msg']}"
            for error in exc.errors()
        )
        print(f"batchwise {args.command}: invalid settings: {problems}", file=sys.stderr)
        return EXIT_ERROR
    except SQLAlchemyError as exc:
        # Connection refused, unknown database, bad credentials: one line, not a traceback wall.
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        print(f"batchwise {args.command}: database error: {reason}", file=sys.stderr)
        return EXIT_ERROR
    return 0
