"""The server's commands: ``serve`` (the API, with embedded workers), ``worker`` (trains
queued jobs) and ``migrate`` (the schema), each on :class:`~service.config.Settings` built
once by :mod:`.runner`. Log lines go to stderr. Their parsers are in :mod:`.parsers`.
"""

from __future__ import annotations

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


__all__ = [
    "API_APP_FACTORY",
    "CommandError",
    "UnsafeSettingsError",
    "api_app",
    "is_loopback",
    "require_head",
    "run_migrate",
    "serve",
    "start_logging",
    "work",
]
