"""The ``batchwise`` command line (:mod:`.commands`, which builds the settings once):

- :mod:`.server`: ``serve`` (the API), ``worker`` (trains jobs), ``migrate`` (the schema);
- :mod:`.keys`: ``keys``, API keys, on the database directly;
- :mod:`.remote`: ``datasets``, ``jobs`` and ``demo``, clients of the HTTP API that use
  :mod:`service.client` only.
"""

from service.cli.commands import build_parser, main

__all__ = ["build_parser", "main"]
