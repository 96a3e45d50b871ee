"""The server's commands: ``serve`` (the API, with embedded workers), ``worker`` (trains
queued jobs) and ``migrate`` (the schema), each on :class:`~service.config.Settings` built
once by :func:`service.cli.main`. Log lines go to stderr.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import socket
import sys
from typing import TYPE_CHECKING

from service.config import Settings
from service.db import migrate
from service.db.session import is_sqlite, normalize_url
from service.logs import configure_logging

if TYPE_CHECKING:
    from fastapi import FastAPI

# Named for the command line as a whole, as operators' log filters know it.
logger = logging.getLogger("service.cli")

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


def start_logging(settings: Settings) -> None:
    """Log to stderr: JSON lines unless it is a terminal (``BATCHWISE_LOG_FORMAT``)."""
    configure_logging(settings.log_level, settings.log_format, stream=sys.stderr)


def run_migrate(settings: Settings) -> None:
    """``batchwise migrate``: upgrade the schema to the head, logging what changed."""
    url = settings.resolved_database_url
    before = migrate.current_revision(url)
    migrate.upgrade(url)
    after = migrate.current_revision(url)
    if before == after:
        logger.info("database %s already at head %s", _redacted(url), after)
    else:
        logger.info("database %s migrated from %s to %s", _redacted(url), before or "empty", after)


def require_head(url: str) -> None:
    """Refuse (:class:`CommandError`) a database whose schema is not at the code's head."""
    current, head = migrate.current_revision(url), migrate.head_revision()
    if current != head:
        raise CommandError(
            f"the schema of {_redacted(url)} is at {current or 'no revision (empty)'}, the "
            f"code needs {head}: run `batchwise migrate` first"
        )


#: What uvicorn imports in each API process when ``BATCHWISE_API_PROCESSES`` > 1.
API_APP_FACTORY = "service.cli.server:api_app"


def api_app() -> FastAPI:
    """The app of one of the API processes of ``batchwise serve`` (uvicorn calls it, by the
    name :data:`API_APP_FACTORY`, in each process it starts): Settings and logging built from
    the environment, as the serve command built its own — ``--host`` and ``--port`` aside,
    which only the process that listens uses."""
    settings = Settings()
    start_logging(settings)
    from service.api.app import create_app

    return create_app(settings)


def serve(settings: Settings) -> None:
    """``batchwise serve``: the API (one or several processes) and its embedded workers,
    until SIGTERM or SIGINT."""
    _check_auth(settings)
    url = settings.resolved_database_url
    if is_sqlite(url):
        # The embedded default keeps itself current; deployments migrate as a separate step.
        run_migrate(settings)
    else:
        require_head(url)

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


def work(settings: Settings, *, burst: bool) -> int:
    """``batchwise worker``: train queued jobs until stopped (or, ``burst``, the queue is
    empty); the exit status."""
    require_head(settings.resolved_database_url)
    from service.worker import cap_blas_threads

    # Before the loop's imports load NumPy: its BLAS reads the cap once, when it loads.
    cap_blas_threads(settings.worker_threads)
    from service.worker.loop import run_worker
    from service.worker.signals import StopFlag, install_stop_handlers

    stop = StopFlag()
    install_stop_handlers(stop)
    return run_worker(settings, stop=stop, burst=burst)


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


__all__ = [
    "API_APP_FACTORY",
    "ENVIRONMENT",
    "CommandError",
    "UnsafeSettingsError",
    "add_migrate",
    "add_serve",
    "add_worker",
    "api_app",
    "is_loopback",
    "require_head",
    "run_migrate",
    "serve",
    "start_logging",
    "work",
]
