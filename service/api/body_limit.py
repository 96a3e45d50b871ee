"""A cap on every request body except the dataset upload, enforced while it streams.

The upload route counts its own bytes against ``BATCHWISE_MAX_UPLOAD_BYTES``; every other body
is JSON or a small form and is read whole by FastAPI before validation, so without a cap a client
could make the process buffer any amount of memory. A declared ``Content-Length`` over the cap
is refused before a byte is read; a chunked body is cut off at the first chunk past it. The
refusal carries ``Connection: close`` so the server does not read the rest to reuse the
connection.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import BadRequest, PayloadTooLarge

LIMIT_NAME = "BATCHWISE_MAX_REQUEST_BYTES"
_CLOSE = {"Connection": "close"}


def _too_large(max_bytes: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"The request body is larger than the limit of {max_bytes} bytes ({LIMIT_NAME}); "
        "datasets go to POST /v1/datasets, which has a limit of its own.",
        headers=_CLOSE,
    )


class BodyLimitMiddleware:
    """Refuse bodies over ``max_bytes`` (413) on every route except ``exempt`` ones, given as
    ``(method, path)``. The error is raised from the route's own read of the body, so the app's
    problem handlers render it like any other."""

    def __init__(self, app: ASGIApp, *, max_bytes: int, exempt: set[tuple[str, str]]) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.exempt = exempt

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or (scope["method"], scope["path"]) in self.exempt:
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        max_bytes = self.max_bytes
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            if declared is not None:
                try:
                    length = int(declared)
                except ValueError:
                    raise BadRequest(
                        f"Content-Length {declared.decode('latin-1')!r} is not an integer.",
                        headers=_CLOSE,
                    ) from None
                if length > max_bytes:
                    raise _too_large(max_bytes)
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > max_bytes:
                    raise _too_large(max_bytes)
            return message

        await self.app(scope, limited_receive, send)
