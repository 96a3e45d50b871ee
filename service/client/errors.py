"""What the client raises: :class:`BatchwiseAPIError` for a 4xx/5xx answer (the RFC 9457
problem fields), :class:`BatchwiseConnectionError` when the service cannot be reached,
:class:`BatchwiseTimeoutError` when a wait runs out; all of them :class:`BatchwiseError`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, cast

import httpx

from service.client.schemas import FieldErrorDict


class BatchwiseError(Exception):
    """Anything this client raises."""


class BatchwiseAPIError(BatchwiseError):
    """The API answered 4xx or 5xx. Carries the problem+json fields (RFC 9457): ``status``,
    ``title``, ``detail``, ``errors`` (``[{loc, msg, type}]`` for input errors, else empty),
    ``type`` and ``instance``; and the request's ``method`` and ``url``.

    A body that is not a problem document (a proxy's HTML page) keeps the HTTP reason as
    ``title`` and the start of the body as ``detail``.
    """

    def __init__(
        self,
        *,
        status: int,
        title: str,
        detail: str | None,
        errors: Sequence[FieldErrorDict] = (),
        type: str = "about:blank",
        instance: str | None = None,
        method: str = "",
        url: str = "",
    ) -> None:
        self.status = status
        self.title = title
        self.detail = detail
        self.errors: list[FieldErrorDict] = list(errors)
        self.type = type
        self.instance = instance
        self.method = method
        self.url = url
        super().__init__(str(self))

    def __str__(self) -> str:
        text = f"{self.status} {self.title}"
        if self.detail:
            text += f": {self.detail}"
        if self.method:
            text += f" ({self.method} {self.url})"
        return text

    @classmethod
    def from_response(cls, response: httpx.Response) -> BatchwiseAPIError:
        """The error a 4xx/5xx ``response`` stands for."""
        request = response.request
        method, url = request.method, str(request.url)
        body: Any = None
        if "json" in response.headers.get("content-type", ""):
            try:
                body = response.json()
            except ValueError:
                body = None
        if not isinstance(body, Mapping):
            text = response.text.strip()
            return cls(
                status=response.status_code,
                title=response.reason_phrase or "HTTP error",
                detail=text[:500] or None,
                method=method,
                url=url,
            )
        errors = body.get("errors")
        return cls(
            status=int(body.get("status", response.status_code)),
            title=str(body.get("title", response.reason_phrase)),
            detail=None if body.get("detail") is None else str(body["detail"]),
            errors=cast(list[FieldErrorDict], errors if isinstance(errors, list) else []),
            type=str(body.get("type", "about:blank")),
            instance=None if body.get("instance") is None else str(body["instance"]),
            method=method,
            url=url,
        )


class BatchwiseConnectionError(BatchwiseError):
    """The service could not be reached (refused, reset, timed out before an answer)."""


class BatchwiseTimeoutError(BatchwiseError):
    """A ``wait_for_*`` ran out of time before the job or sweep finished."""
