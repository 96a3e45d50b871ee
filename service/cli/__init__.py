"""The ``batchwise`` command line (:mod:`.commands`: the parser and the dispatch):

- :mod:`.parsers`: the parsers of the server's commands, light (no settings or database);
- :mod:`.runner`: runs those commands on :class:`~service.config.Settings` built once, imported
  only when one of them runs;
- :mod:`.server`: ``serve`` (the API), ``worker`` (trains jobs), ``migrate`` (the schema);
- :mod:`.keys` and :mod:`.tenants`: ``keys`` (API keys) and ``tenants`` (their limits), on the
  database directly;
- :mod:`.remote`: ``datasets``, ``jobs``, ``probes`` and ``demo``, clients of the HTTP API that
  use :mod:`service.client` only.
"""

from service.cli.commands import build_parser, main

__all__ = ["build_parser", "main"]
