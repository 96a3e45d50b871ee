"""``batchwise demo``: the batch-size demo, an HTTP client like ``datasets`` and ``jobs``
(:mod:`service.client.demo`); against ``--url``, or an embedded service it starts."""

from __future__ import annotations

import argparse
from pathlib import Path

COMMAND = "demo"


def add_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``demo`` to the ``batchwise`` parser's subcommands."""
    demo = commands.add_parser(
        COMMAND,
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


def run(args: argparse.Namespace) -> int:
    """Run the demo as parsed into ``args``; the exit status."""
    # Imported here: the demo's dataset and plans need NumPy, which other commands' --help
    # need not load.
    from service.client.demo import run_demo

    data_dir = None if args.data_dir is None else Path(args.data_dir)
    return run_demo(
        url=args.url, out=Path(args.out), quick=args.quick, fmt=args.format, data_dir=data_dir
    )


__all__ = ["COMMAND", "add_command", "run"]
