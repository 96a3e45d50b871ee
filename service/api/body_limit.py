"""A cap on every request body except the dataset uploads, enforced while it streams.

The upload routes (a file; inline JSON at ``/inline``) count their own bytes
(``BATCHWISE_MAX_UPLOAD_BYTES`` for a file, the inline JSON limit for a JSON dataset); every
other body is JSON or a small form, read whole before it is parsed, so without a cap a client
could make the process buffer any amount of memory, and parse it on the event loop. Each
route's cap is in :data:`ROUTE_CAPS`, all in one table: what a route needs and no more (a job's
config is a few hundred bytes, so 15 MB of it could only be an attack), never above
``BATCHWISE_MAX_REQUEST_BYTES``, which also caps every route not in the table. A declared
``Content-Length`` over the cap is refused before a byte is read; a chunked body is cut off at
the first chunk past it. The refusal carries ``Connection: close`` so the server does not read
the rest to reuse the connection.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from starlette.routing import compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api.dashboard.access import SIGN_IN_PATH
from service.errors import BadRequest, PayloadTooLarge
from service.jobs.service import JOBS_PATH
from service.sweeps.service import SWEEPS_PATH

LIMIT_NAME = "BATCHWISE_MAX_REQUEST_BYTES"
KiB = 1024
_CLOSE = {"Connection": "close"}
_DEFAULT_ADVICE = "datasets go to POST /v1/datasets, which has a limit of its own"


@dataclass(frozen=True)
class RouteCap:
    """The body cap of one route (``path`` as declared, e.g. ``/v1/jobs/{job_id}/predict``):
    ``max_bytes`` (None: ``BATCHWISE_MAX_REQUEST_BYTES`` alone), and ``advice``, what a client
    refused by it should do instead."""

    method: str
    path: str
    max_bytes: int | None
    advice: str


#: The body cap of every route that takes a body, but the upload (which counts its own).
ROUTE_CAPS = (
    RouteCap("POST", SIGN_IN_PATH, 4 * KiB, "the sign-in form holds one API key"),
    RouteCap(
        "POST",
        JOBS_PATH,
        64 * KiB,
        "a job is a training config of a few hundred bytes; upload its data to "
        "POST /v1/datasets and name them with dataset_id",
    ),
    RouteCap(
        "POST",
        SWEEPS_PATH,
        64 * KiB,
        "a sweep is a training config and lists of batch sizes and rates; upload its data "
        "to POST /v1/datasets and name them with dataset_id",
    ),
    RouteCap(
        "POST",
        f"{JOBS_PATH}/{{job_id}}/predict",
        None,
        "send the rows to predict in several smaller requests",
    ),
)


def _too_large(max_bytes: int, limit: str, advice: str) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"The request body is larger than the limit of {max_bytes} bytes ({limit}): {advice}.",
        headers=_CLOSE,
    )


class BodyLimitMiddleware:
    """Refuse bodies over their route's cap (413): :data:`ROUTE_CAPS`, ``max_bytes`` for
    other routes and as the ceiling of every cap; ``exempt`` routes, given as
    ``(method, path)``, are not counted. The error is raised from the route's own read of the
    body, so the app's problem handlers render it like any other."""

    def __init__(self, app: ASGIApp, *, max_bytes: int, exempt: set[tuple[str, str]]) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.exempt = exempt
        self._caps: list[tuple[re.Pattern[str], RouteCap]] = [
            (compile_path(cap.path)[0], cap) for cap in ROUTE_CAPS
        ]

    def _cap_of(self, method: str, path: str) -> tuple[int, str, str]:
        """The cap in force for ``method path``: its bytes, the limit's name and the advice."""
        for pattern, cap in self._caps:
            if cap.method == method and pattern.match(path):
                if cap.max_bytes is not None and cap.max_bytes < self.max_bytes:
                    return cap.max_bytes, f"the cap of {cap.method} {cap.path}", cap.advice
                return self.max_bytes, LIMIT_NAME, cap.advice
        return self.max_bytes, LIMIT_NAME, _DEFAULT_ADVICE

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or (scope["method"], scope["path"]) in self.exempt:
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        max_bytes, limit, advice = self._cap_of(scope["method"], scope["path"])
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
                    raise _too_large(max_bytes, limit, advice)
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > max_bytes:
                    raise _too_large(max_bytes, limit, advice)
            return message

        await self.app(scope, limited_receive, send)


__all__ = ["LIMIT_NAME", "ROUTE_CAPS", "BodyLimitMiddleware", "RouteCap"]
