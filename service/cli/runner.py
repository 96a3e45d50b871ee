"""Run the server's commands (``serve``, ``worker``, ``migrate``, ``keys``, ``tenants``) as
parsed by :func:`service.cli.main`: :class:`~service.config.Settings` built here, once; their
errors become one line on stderr and an exit status.

:func:`service.cli.main` imports this module only when one of these commands runs: it loads
the settings (pydantic-settings) and the database (SQLAlchemy, Alembic), which the HTTP
client's commands and ``--help`` do without.
"""

from __future__ import annotations

import argparse
import sys

from pydantic import ValidationError
from sqlalchemy.exc import SQLAlchemyError

from service.cli import keys, server, tenants
from service.cli.parsers import KEYS, TENANTS
from service.config import Settings
from service.db.session import DatabaseUrlError

EXIT_ERROR = 1
#: Settings that must not run together (auth off on a public address): refused like bad usage.
EXIT_REFUSED = 2


def run(args: argparse.Namespace) -> int:
    """Run the server's command parsed into ``args``; the exit status."""
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
        elif args.command == KEYS:
            server.require_head(settings.resolved_database_url)
            return keys.run(settings, args)
        elif args.command == TENANTS:
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


__all__ = ["EXIT_ERROR", "EXIT_REFUSED", "run"]
