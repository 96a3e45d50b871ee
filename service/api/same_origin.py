"""Writes that ride on the browser's credentials must come from this service's own pages.

The dashboard's key is a cookie that the browser attaches to every request to this host,
whichever page asks. ``SameSite=Strict`` keeps it from other *sites*, not from other *origins*
of the same site: a page on another port of the host, or on a sibling subdomain, can make the
browser post to ``/v1`` with the cookie (a ``no-cors`` ``fetch`` or a form needs no
permission). So an unsafe request (any method but GET, HEAD, OPTIONS) under ``/v1`` or ``/ui``
that carries no ``Authorization`` header must show that it comes from here:

=============================  ====================================================
the request carries            it goes on when
=============================  ====================================================
``Authorization``              always: another origin's page cannot set that header
                               (this service answers no CORS preflight)
``Origin``                     the Origin is this service's origin
``Referer``, no ``Origin``     the Referer's origin is this service's origin
neither                        it carries no key cookie (not a browser: nothing of a
                               user's to ride on; with auth on the key check answers)
=============================  ====================================================

Otherwise it is refused with 403 (:class:`~service.errors.CrossOriginRefused`) before its
body is read. Browsers send ``Origin`` on every POST, PUT, PATCH and DELETE, from ``fetch``
and from forms alike, so the dashboard's own forms and scripts pass and need no token. With
auth off the rule still holds: it stops a page of any site from making the browser write to a
service on ``127.0.0.1``.

This service's origin is ``scheme://host[:port]`` as the request reached it: the scheme of
the connection as uvicorn resolved it, and the ``Host`` header; a default port (80 for http,
443 for https) counts as none, and case does not matter. Behind a reverse proxy, forward the
``Host`` header and ``X-Forwarded-Proto`` (nginx: ``proxy_set_header Host $host;
proxy_set_header X-Forwarded-Proto $scheme;``) from an address uvicorn trusts
(``FORWARDED_ALLOW_IPS``, ``127.0.0.1`` by default): the browser's ``Origin`` then matches.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from service.api.auth import KEY_COOKIE, closing_if_body
from service.api.problems import error_response
from service.errors import CrossOriginRefused

#: Methods that change nothing, so a forged one can do no harm.
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
#: Where the browser's credentials act: the JSON API and the dashboard's own endpoints.
GUARDED_PREFIXES = ("/v1", "/ui")
_DEFAULT_PORTS = {"http": 80, "https": 443}
_WHAT_TO_DO = (
    "Post from this service's own pages (the dashboard), or send the key in the header "
    "'Authorization: Bearer <key>'."
)


def _origin(scheme: str, netloc: str) -> str | None:
    """``scheme://host[:port]`` in one spelling (lower case, no default port), or None when
    ``netloc`` names no host."""
    try:
        parts = urlsplit(f"{scheme}://{netloc}")
        host, port = parts.hostname, parts.port
    except ValueError:  # a port that is not a number, or out of range
        return None
    if not host or parts.username is not None or parts.password is not None:
        return None
    scheme = scheme.lower()
    if ":" in host:  # IPv6: urlsplit drops the brackets
        host = f"[{host}]"
    shown_port = "" if port is None or port == _DEFAULT_PORTS.get(scheme) else f":{port}"
    return f"{scheme}://{host}{shown_port}"


def own_origin(scheme: str, headers: Headers) -> str | None:
    """This service's origin as the request reached it: ``scheme`` (uvicorn's, so a trusted
    proxy's ``X-Forwarded-Proto``) and the ``Host`` header; None without a usable Host."""
    host = headers.get("host")
    return _origin(scheme, host) if host else None


def origin_of_url(url: str) -> str | None:
    """The origin of an absolute ``url`` (an ``Origin`` or ``Referer`` value); None for
    ``null``, a relative or a malformed one."""
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        return None
    if parts.scheme.lower() not in _DEFAULT_PORTS:
        return None
    return _origin(parts.scheme, parts.netloc)


def cross_origin_reason(request: Request) -> str | None:
    """Why ``request``, which carries no ``Authorization`` header, may not write; None when
    it may (the rule in the module docstring)."""
    headers = request.headers
    ours = own_origin(request.url.scheme, headers)
    origin, referer = headers.get("origin"), headers.get("referer")
    if origin is not None:
        if ours is not None and origin_of_url(origin) == ours:
            return None
        return f"its Origin {origin[:100]!r} is not this service's origin {ours!r}"
    if referer is not None:
        if ours is not None and origin_of_url(referer) == ours:
            return None
        return f"its Referer is not a page of this service's origin {ours!r}"
    if KEY_COOKIE not in request.cookies:
        return None
    return "it carries the dashboard's cookie but neither an Origin nor a Referer header"


class SameOriginWrites:
    """ASGI middleware: refuse (403 problem+json) an unsafe ``/v1`` or ``/ui`` request without
    an ``Authorization`` header that :func:`cross_origin_reason` finds fault with."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in SAFE_METHODS:
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        if not any(path == p or path.startswith(f"{p}/") for p in GUARDED_PREFIXES):
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        if "authorization" in request.headers:
            await self.app(scope, receive, send)
            return
        reason = cross_origin_reason(request)
        if reason is None:
            await self.app(scope, receive, send)
            return
        refused = CrossOriginRefused(
            f"Refused {scope['method']} {path}: the same-origin check failed: {reason}. "
            + _WHAT_TO_DO
        )
        response = error_response(refused, instance=path, headers=closing_if_body(request))
        await response(scope, receive, send)


__all__ = [
    "GUARDED_PREFIXES",
    "SAFE_METHODS",
    "SameOriginWrites",
    "cross_origin_reason",
    "origin_of_url",
    "own_origin",
]
