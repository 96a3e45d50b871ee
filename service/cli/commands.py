"""The ``batchwise`` command: its parser and the dispatch to each command. The server's
commands (``serve``, ``worker``, ``migrate``, ``keys``) get :class:`~service.config.Settings`
built here, once; their errors become one line on stderr and an exit status. The remote
commands (``demo``, ``datasets``, ``jobs``) need no settings: they are HTTP clients.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from pydantic import ValidationError
from sqlalchemy.exc import SQLAlchemyError

from service import __version__
from service.cli import keys, remote, server, tenants
from service.cli.remote import demo
from service.config import Settings
from service.db.session import DatabaseUrlError

EXIT_ERROR = 1
#: Settings that must not run together (auth off on a public address): refused like bad usage.
EXIT_REFUSED = 2


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``batchwise`` (``serve``, ``worker``, ``migrate``, ``demo``,
    ``keys``, ``datasets``, ``jobs``)."""
    parser = argparse.ArgumentParser(
        prog="batchwise",
        description="Batchwise: training as a service for people who want to understand and "
        "choose batch sizes. Upload a dataset, train with minibatch SGD, compare batch sizes.",
        epilog=server.ENVIRONMENT,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"batchwise {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    server.add_serve(commands)
    server.add_worker(commands)
    demo.add_command(commands)
    server.add_migrate(commands)
    keys.add_commands(commands)  # `keys`: API keys, on the database
    tenants.add_commands(commands)  # `tenants`: their limits, on the database
    remote.add_commands(commands)  # `datasets` and `jobs`: the HTTP client
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``batchwise`` with ``argv`` (default ``sys.argv[1:]``); return the exit status."""
    args = build_parser().parse_args(argv)
    if args.command in remote.COMMANDS:
        return remote.run(args)
    if args.command == demo.COMMAND:
        return demo.run(args)
    return _run_on_settings(args)


def _run_on_settings(args: argparse.Namespace) -> int:
    overrides = {
        name: value for name in ("host", "port") if (value := getattr(args, name, None)) is not None
    }
    try:
        settings = Settings(**overrides)
        server.start_logging(settings)
        if args.command == "migrate":
            server.run_migrate(settings)
        elif args.command == "worker":
            return server.work(settings, burst=args.burst)
        elif args.command == keys.COMMAND:
            server.require_head(settings.resolved_database_url)
            return keys.run(settings, args)
        elif args.command == tenants.COMMAND:
            server.require_head(settings.resolved_database_url)
            return tenants.run(settings, args)
        else:
            server.serve(settings)
    except server.UnsafeSettingsError as exc:
        print(f"batchwise {args.command}: refused: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    except (server.CommandError, DatabaseUrlError) as exc:
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


__all__ = ["build_parser", "main"]
