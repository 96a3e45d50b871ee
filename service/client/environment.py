"""The environment variable the client reads its API key from, in a module of its own: the
command line names it in its help without loading the HTTP stack at every ``batchwise`` start.
"""

#: Read by :class:`~service.client.BatchwiseClient` when it is given no ``api_key``.
API_KEY_ENV = "BATCHWISE_API_KEY"

__all__ = ["API_KEY_ENV"]
