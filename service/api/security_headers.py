"""Headers that tell the browser how to treat what the service sends.

Every response: ``X-Content-Type-Options: nosniff`` (a JSON body, a CSV, a plot is never run
as a script or rendered as a page, whatever it contains). Every HTML page (the dashboard,
the docs): :data:`CONTENT_SECURITY_POLICY` and ``Referrer-Policy: same-origin`` (a link out
reveals no id in the URL).

The policy allows the service's own scripts, styles, images, fonts and fetches only, no
inline script or style (the pages have none: the dashboard's script and the docs' start-up
script are files; Swagger UI styles elements through the DOM, which a policy does not stop),
and ``frame-ancestors 'none'``: no page, of this site or another, may frame these pages to
trick a click. ``data:`` images are the dashboard's empty icon and Swagger UI's icons;
``blob:`` images are the plots "Try it out" fetched, which Swagger UI shows from the bytes it
holds (a blob URL is the page's own origin's, made by its own script). The
browser tests check that the dashboard and the docs log no violation of it.

Outermost, around Starlette's 500 handler too (as :mod:`service.api.observability`), so that
every answer carries them, an error's included.
"""

from __future__ import annotations

from fastapi import FastAPI
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "img-src 'self' data: blob:",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)
#: On every response.
ALWAYS = {"X-Content-Type-Options": "nosniff"}
#: On every HTML page as well.
ON_PAGES = {"Content-Security-Policy": CONTENT_SECURITY_POLICY, "Referrer-Policy": "same-origin"}


class SecurityHeaders:
    """ASGI middleware: add :data:`ALWAYS` to every response and :data:`ON_PAGES` to HTML
    ones, leaving a header the route set itself alone."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = list(message.get("headers", ()))
                headers = MutableHeaders(raw=message["headers"])
                page = headers.get("content-type", "").startswith("text/html")
                for name, value in (ALWAYS | ON_PAGES).items() if page else ALWAYS.items():
                    headers.setdefault(name, value)
            await send(message)

        await self.app(scope, receive, send_with_headers)


def install_security_headers(app: FastAPI) -> None:
    """Wrap ``app``'s whole middleware stack, its 500 handler included, in
    :class:`SecurityHeaders`."""
    build_stack = app.build_middleware_stack

    def build_secured_stack() -> ASGIApp:
        return SecurityHeaders(build_stack())

    app.build_middleware_stack = build_secured_stack  # type: ignore[method-assign]


__all__ = [
    "ALWAYS",
    "CONTENT_SECURITY_POLICY",
    "ON_PAGES",
    "SecurityHeaders",
    "install_security_headers",
]
