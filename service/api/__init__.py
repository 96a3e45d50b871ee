"""The HTTP interface: the app factory, request dependencies, problem+json rendering, routes.

Nothing below this layer imports it; the entry point calls :func:`create_app`.
"""

from service.api.app import create_app

__all__ = ["create_app"]
