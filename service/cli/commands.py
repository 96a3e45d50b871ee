"""The ``batchwise`` command: its parser and the dispatch to each command. The remote
commands (``demo``, ``datasets``, ``jobs``, ``probes``) need no settings: they are HTTP
clients. The server's commands (``serve``, ``worker``, ``migrate``, ``keys``, ``tenants``) run
through :mod:`.runner`, which builds :class:`~service.config.Settings` once.

This module and the parsers it builds (:mod:`.parsers`, :mod:`.remote`) import no settings,
database or web stack: ``--help`` and the HTTP client's commands start without them.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from service import __version__
from service.cli import parsers, remote
from service.cli.remote import demo


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``batchwise`` (``serve``, ``worker``, ``migrate``, ``demo``,
    ``keys``, ``tenants``, ``datasets``, ``jobs``, ``probes``)."""
    parser = argparse.ArgumentParser(
        prog="batchwise",
        description="Batchwise: training as a service for people who want to understand and "
        "choose batch sizes. Upload a dataset, train with minibatch SGD, compare batch sizes.",
        epilog=parsers.ENVIRONMENT,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"batchwise {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    parsers.add_serve(commands)
    parsers.add_worker(commands)
    demo.add_command(commands)
    parsers.add_migrate(commands)
    parsers.add_keys(commands)  # `keys`: API keys, on the database
    parsers.add_tenants(commands)  # `tenants`: their limits, on the database
    remote.add_commands(commands)  # `datasets`, `jobs` and `probes`: the HTTP client
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``batchwise`` with ``argv`` (default ``sys.argv[1:]``); return the exit status."""
    args = build_parser().parse_args(argv)
    # Imported here, for start-up time: the remote commands load the HTTP client, the server's
    # commands the settings and the database (pydantic-settings, SQLAlchemy, Alembic); neither
    # needs the other's.
    if args.command in remote.COMMANDS:
        from service.cli.remote import runner as remote_runner

        return remote_runner.run(args)
    if args.command == demo.COMMAND:
        return demo.run(args)
    from service.cli import runner

    return runner.run(args)


__all__ = ["build_parser", "main"]
