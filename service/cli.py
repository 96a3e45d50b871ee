"""The ``batchwise`` command line: ``serve`` (the API) and ``migrate`` (the schema).

Entry point only: build :class:`~service.config.Settings` once, wire, run. Log lines go to stderr.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from pydantic import ValidationError
from sqlalchemy.exc import SQLAlchemyError

from service import __version__
from service.config import Settings
from service.db import migrate
from service.db.session import DatabaseUrlError, is_sqlite, normalize_url

logger = logging.getLogger("service.cli")

EXIT_ERROR = 1

_ENVIRONMENT = """\
environment:
  BATCHWISE_DATABASE_URL  SQLAlchemy URL: sqlite:///path/to/file.db or
                          postgresql+psycopg://user:password@host:5432/dbname
                          (default: SQLite file batchwise.db in the data dir)
  BATCHWISE_DATA_DIR      where the SQLite file, upload spool and dataset cache live
                          (default ./batchwise-data)
  BATCHWISE_LOG_LEVEL     debug | info | warning | error (default info)
"""

_SERVE_ENVIRONMENT = (
    _ENVIRONMENT
    + """\
  BATCHWISE_HOST, BATCHWISE_PORT   listen address (default 127.0.0.1:8000); flags override
  BATCHWISE_MAX_UPLOAD_BYTES       largest dataset upload accepted (default 1 GiB)
  BATCHWISE_WORKERS                worker processes started beside the API
"""
)


class CommandError(Exception):
    """A failure the operator can fix; printed as one line, no traceback."""


def _redacted(url: str) -> str:
    return normalize_url(url).render_as_string(hide_password=True)


def _configure_logging(settings: Settings) -> None:
    logging.basicConfig(
        level=settings.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if settings.log_level != "debug":
        # Alembic narrates every context it opens; our own line says what the migration did.
        logging.getLogger("alembic").setLevel(logging.WARNING)


def _migrate(settings: Settings) -> None:
    url = settings.resolved_database_url
    before = migrate.current_revision(url)
    migrate.upgrade(url)
    after = migrate.current_revision(url)
    if before == after:
        logger.info("database %s already at head %s", _redacted(url), after)
    else:
        logger.info("database %s migrated from %s to %s", _redacted(url), before or "empty", after)


def _serve(settings: Settings) -> None:
    url = settings.resolved_database_url
    if is_sqlite(url):
        # The embedded default keeps itself current; deployments migrate as a separate step.
        _migrate(settings)
    else:
        current, head = migrate.current_revision(url), migrate.head_revision()
        if current != head:
            raise CommandError(
                f"the schema of {_redacted(url)} is at {current or 'no revision (empty)'}, the "
                f"code needs {head}: run `batchwise migrate` first"
            )
    # Embedded workers (BATCHWISE_WORKERS) start here once the worker exists (the jobs issue).

    # Imported late so `--help` and `migrate` stay fast and never load the web stack.
    import uvicorn

    from service.api.app import create_app

    app = create_app(settings)
    logger.info("serving on http://%s:%d", settings.host, settings.port)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level=settings.log_level)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``batchwise`` (``serve`` and ``migrate``)."""
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

    commands.add_parser(
        "migrate",
        help="upgrade the database schema to the newest migration",
        description="Upgrade the database schema to the newest migration (Alembic head). Safe "
        "to run repeatedly; a database already at the head is left as it is. Run it before "
        "`batchwise serve` against PostgreSQL after every upgrade of the service.",
        epilog=_ENVIRONMENT,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``batchwise`` with ``argv`` (default ``sys.argv[1:]``); return the exit status."""
    args = build_parser().parse_args(argv)
    overrides = {
        name: value for name in ("host", "port") if (value := getattr(args, name, None)) is not None
    }
    try:
        settings = Settings(**overrides)
        _configure_logging(settings)
        if args.command == "migrate":
            _migrate(settings)
        else:
            _serve(settings)
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
