"""Who a request acts for: the tenant of its API key.

:func:`require_tenant` is a router-level dependency of every ``/v1`` router, so no route can
forget it; routes that need the tenant take it as ``TenantDep`` (:mod:`service.api.deps`). The
key comes from ``Authorization: Bearer <key>`` or, without that header, from the dashboard's
cookie :data:`KEY_COOKIE` — the dashboard's scripts call ``/v1`` with same-origin ``fetch``,
which sends the cookie and no header. The cookie is ``SameSite=Strict``, so a request another
site makes the browser send carries no cookie; a write from another origin of the same site
(another port, a sibling subdomain) does carry it, and :mod:`service.api.same_origin` refuses it.

With ``BATCHWISE_AUTH=off`` every request acts for :data:`DEFAULT_TENANT` (``batchwise serve``
allows that on a loopback address only).

Not on ``/healthz``, ``/readyz``, ``/metrics``, the docs or static files: probes, scrapers and
the docs page need no key (the docs' "Authorize" button sets one for "Try it out").

:class:`AuthenticateFirst` checks the key of a ``/v1`` request before the route reads its body:
FastAPI parses a JSON body before it solves dependencies, so without it a client with no key
would learn about its malformed JSON (422) instead of its missing key (401), and would have its
body read. The dependency stays the guarantee; a database error the middleware met is raised
again by it, in the route, where the 503 handler renders it. Both look the key up in the thread
pool, never on the event loop.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.types import ASGIApp, Receive, Scope, Send

from service.api.problems import error_response
from service.api.reads import Reads
from service.config import Settings
from service.errors import Unauthorized
from service.keys import DEFAULT_TENANT
from service.keys import service as keys_service

#: The dashboard's cookie holding the signed-in key (HttpOnly, SameSite=Strict, Path=/).
KEY_COOKIE = "batchwise_key"
#: Where :class:`AuthenticateFirst` leaves the tenant for :func:`require_tenant`.
_TENANT_STATE = "batchwise_tenant"
#: Where it leaves an error other than a refusal of the key, for :func:`require_tenant` to raise.
_AUTH_ERROR_STATE = "batchwise_auth_error"

#: Declares the bearer scheme in the OpenAPI document (Swagger UI's "Authorize" button). It
#: never refuses anything itself: :func:`require_tenant` reads the header, to say precisely
#: what is wrong with it.
bearer_scheme = HTTPBearer(
    scheme_name="APIKey",
    bearerFormat=keys_service.KEY_FORMAT,
    description="An API key from `batchwise keys create --tenant NAME`, sent as "
    "`Authorization: Bearer <key>`.",
    auto_error=False,
)


def presented_key(request: Request) -> str:
    """The key the request carries: the bearer token, else the dashboard's cookie.
    :class:`Unauthorized` when there is neither, or the ``Authorization`` header is not
    ``Bearer <key>``."""
    header = request.headers.get("authorization")
    if header is None:
        cookie = request.cookies.get(KEY_COOKIE)
        if cookie:
            return cookie
        raise Unauthorized(
            "No API key: send the header 'Authorization: Bearer <key>' (make a key with "
            "`batchwise keys create --tenant NAME`)."
        )
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() == "bearer" and token and " " not in token:
        return token
    if scheme.lower() == "bearer":
        problem = "no key after 'Bearer'" if not token else "more than one word after 'Bearer'"
    elif scheme.isalpha() and len(scheme) <= 16:
        problem = f"the scheme is {scheme!r}, not 'Bearer'"
    else:
        problem = "no scheme"  # e.g. a bare key, which is not echoed back
    raise Unauthorized(
        f"Malformed Authorization header ({problem}): expected 'Bearer <key>', the word "
        "Bearer, one space and the key."
    )


def tenant_of_key(request: Request, key: str) -> str:
    """The tenant ``key`` acts for, checked in a session of its own (the request's session may
    then stay unopened through a long upload; autocommit: it writes nothing);
    :class:`Unauthorized` otherwise. Sync: async callers use :func:`tenant_of_key_off_loop`."""
    reads: Reads = request.app.state.reads
    return reads.run(keys_service.authenticate, key)


async def tenant_of_key_off_loop(request: Request, key: str) -> str:
    """:func:`tenant_of_key` through :class:`service.api.reads.Reads`: the event loop never
    waits on the database (a stalled one would stop every request of the process, ``/healthz``
    too)."""
    return await request.app.state.reads(keys_service.authenticate, key)  # type: ignore[no-any-return]


async def require_tenant(
    request: Request,
    _declared: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
) -> str:
    """The tenant the request acts for; :class:`Unauthorized` (401) without a valid key.

    Async, so that a request whose key :class:`AuthenticateFirst` checked takes no hop to the
    thread pool, as a sync dependency would."""
    settings: Settings = request.app.state.settings
    if settings.auth == "off":
        return DEFAULT_TENANT
    checked: str | None = getattr(request.state, _TENANT_STATE, None)
    if checked is not None:
        return checked
    failed: Exception | None = getattr(request.state, _AUTH_ERROR_STATE, None)
    if failed is not None:
        raise failed
    return await tenant_of_key_off_loop(request, presented_key(request))


class AuthenticateFirst:
    """ASGI middleware: refuse a ``/v1`` request without a valid key (401) before the route
    reads its body, and hand the tenant to :func:`require_tenant`. Only a refusal of the key
    answers here; any other error leaves the check to the dependency."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope["path"] if scope["type"] == "http" else ""
        if path != "/v1" and not path.startswith("/v1/"):
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        settings: Settings = request.app.state.settings
        if settings.auth == "on":
            try:
                key = presented_key(request)
                tenant = await tenant_of_key_off_loop(request, key)
            except Unauthorized as exc:
                response = error_response(exc, instance=path, headers=closing_if_body(request))
                await response(scope, receive, send)
                return
            except Exception as exc:
                # A database error, say: raised again by the dependency, in the route, where
                # its handler renders it (the key is not looked up twice: against a stalled
                # database that would double the wait).
                scope.setdefault("state", {})[_AUTH_ERROR_STATE] = exc
            else:
                scope.setdefault("state", {})[_TENANT_STATE] = tenant
        await self.app(scope, receive, send)


def closing_if_body(request: Request) -> dict[str, str]:
    """``Connection: close`` for a refused request with a body, so it is not read to reuse
    the connection."""
    headers = request.headers
    has_body = headers.get("content-length", "0") != "0" or "transfer-encoding" in headers
    return {"Connection": "close"} if has_body else {}


#: The router-level dependency of every ``/v1`` router.
REQUIRE_TENANT = Depends(require_tenant)

__all__ = [
    "KEY_COOKIE",
    "REQUIRE_TENANT",
    "AuthenticateFirst",
    "bearer_scheme",
    "closing_if_body",
    "presented_key",
    "require_tenant",
    "tenant_of_key",
    "tenant_of_key_off_loop",
]
