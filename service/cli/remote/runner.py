"""Running ``batchwise datasets|jobs ACTION``: which service (``--url``, ``$BATCHWISE_URL``),
which handler, and how a refusal is printed (the problem's title, detail and each field
error on stderr, exit 1)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping
from typing import TextIO

from service.cli.remote import datasets, jobs, probes
from service.cli.remote.handler import EXIT_ERROR, EXIT_USAGE, Handler, UsageError
from service.cli.remote.parsers import DEFAULT_URL, URL_ENV
from service.client import API_KEY_ENV, BatchwiseAPIError, BatchwiseClient, BatchwiseError

_HANDLERS: dict[str, dict[str, Handler]] = {
    "datasets": datasets.HANDLERS,
    "jobs": jobs.HANDLERS,
    "probes": probes.HANDLERS,
}


def resolve_url(flag: str | None, environ: Mapping[str, str] | None = None) -> str:
    """``--url``, else ``$BATCHWISE_URL``, else :data:`DEFAULT_URL`."""
    environ = os.environ if environ is None else environ
    return flag or environ.get(URL_ENV, "").strip() or DEFAULT_URL


def run(args: argparse.Namespace, *, stdout: TextIO | None = None) -> int:
    """Run ``batchwise datasets|jobs ACTION`` as parsed into ``args``; return the exit status."""
    out = sys.stdout if stdout is None else stdout
    command = f"batchwise {args.command} {args.action}"
    handler = _HANDLERS[args.command][args.action]
    try:
        client = BatchwiseClient(resolve_url(args.url), timeout=args.timeout, api_key=args.api_key)
        with client:
            return handler(client, args, out)
    except BatchwiseAPIError as exc:
        _print_problem(command, exc)
        return EXIT_ERROR
    except BatchwiseError as exc:
        print(f"{command}: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except UsageError as exc:
        print(f"{command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE


def _print_problem(command: str, exc: BatchwiseAPIError) -> None:
    lines = [f"{command}: error: {exc.status} {exc.title}"]
    if exc.detail:
        lines.append(f"  {exc.detail}")
    for error in exc.errors:
        where = ".".join(str(part) for part in error.get("loc", [])) or "input"
        lines.append(f"  {where}: {error.get('msg', '')}")
    if exc.status == 401:
        lines.append(f"  give an API key with --api-key or ${API_KEY_ENV} (batchwise keys create)")
    print("\n".join(lines), file=sys.stderr)
