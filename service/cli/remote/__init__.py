"""The remote commands, the terminal client of a running service: ``batchwise datasets …``
and ``batchwise jobs …`` on :class:`service.client.BatchwiseClient`, and ``batchwise demo``.

It talks HTTP only, like the client it is built on (an import-linter contract holds that): it
needs no settings, database or web stack. ``--url`` names the service; without it the
``BATCHWISE_URL`` environment variable, else ``http://127.0.0.1:8000``. That variable belongs
to this terminal client, not to the server's :class:`~service.config.Settings`, so it is read
here and nowhere else. The API key: ``--api-key``, else ``BATCHWISE_API_KEY`` (read by
:class:`~service.client.BatchwiseClient`).

Output: aligned tables and short lines for people on stdout; ``--json`` prints exactly the
JSON the API answered instead. Errors go to stderr: the problem's title, detail and each
field error, exit 1; usage errors exit 2 (argparse); a progress bar goes to stderr so stdout
stays clean for pipes.

Its parsers (:mod:`.parsers`) load no HTTP stack, so that every ``batchwise`` command can build
them; :mod:`.runner`, which runs a remote command, loads the client.
"""

from service.cli.remote import demo
from service.cli.remote.parsers import COMMANDS, DEFAULT_URL, URL_ENV, add_commands

__all__ = ["COMMANDS", "DEFAULT_URL", "URL_ENV", "add_commands", "demo"]
