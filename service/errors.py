"""Domain errors: each carries its HTTP meaning and is rendered once, as problem+json, by the API.

Standard library only, so every layer above may raise them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class FieldError:
    """One thing wrong with the input, and where: ``loc`` is a path such as
    ``("body", "batch_size")`` or ``("file", "line 12", "column 'age'")``."""

    loc: tuple[str | int, ...]
    msg: str
    type: str = "value_error"


class BatchwiseError(Exception):
    """Base of every error the service reports to a client."""

    status: int = 500
    title: str = "Internal Server Error"
    slug: str = "internal-error"

    def __init__(
        self,
        detail: str,
        *,
        errors: Sequence[FieldError] = (),
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = tuple(errors)
        #: Response headers the answer must carry (``WWW-Authenticate`` on a 401).
        self.headers = dict(headers or {})

    @property
    def type(self) -> str:
        """The problem type URI (RFC 9457), relative to the service."""
        return f"/problems/{self.slug}"


class InvalidInput(BatchwiseError):
    status, title, slug = 422, "Invalid input", "invalid-input"


def body_errors(problems: Iterable[Mapping[str, Any]]) -> list[FieldError]:
    """Pydantic's ``ValidationError.errors()`` of a request body, each at ``("body", ...)``."""
    return [FieldError(("body", *p["loc"]), p["msg"], p["type"]) for p in problems]


def invalid_body(problems: Iterable[Mapping[str, Any]]) -> InvalidInput:
    """A request body that Pydantic rejected (``problems``: its ``ValidationError.errors()``),
    reported as FastAPI reports one: every problem at its ``("body", ...)`` location. For the
    bodies the API decodes itself, off the event loop."""
    errors = body_errors(problems)
    count = len(errors)
    return InvalidInput(
        f"The request is invalid: {count} error{'s' if count != 1 else ''}.", errors=errors
    )


class BadRequest(BatchwiseError):
    status, title, slug = 400, "Bad request", "bad-request"


class Unauthorized(BatchwiseError):
    """No usable API key. Always answered with ``WWW-Authenticate: Bearer`` (RFC 6750); a key
    that was sent but is unknown or revoked adds ``error="invalid_token"``."""

    status, title, slug = 401, "Unauthorized", "unauthorized"

    def __init__(self, detail: str, *, invalid_token: bool = False) -> None:
        challenge = 'Bearer realm="batchwise"'
        if invalid_token:
            challenge += ', error="invalid_token"'
        super().__init__(detail, headers={"WWW-Authenticate": challenge})


class CrossOriginRefused(BatchwiseError):
    """A write that rides on the browser's credentials (the dashboard's cookie) came from a
    page of another origin, or could not show where it came from."""

    status, title, slug = 403, "Cross-origin request refused", "cross-origin-refused"


class NotFound(BatchwiseError):
    status, title, slug = 404, "Not found", "not-found"


class Conflict(BatchwiseError):
    status, title, slug = 409, "Conflict", "conflict"


class PayloadTooLarge(BatchwiseError):
    status, title, slug = 413, "Payload too large", "payload-too-large"


class StorageQuotaExceeded(PayloadTooLarge):
    """The tenant's stored datasets plus the new one would pass its storage quota: a type of
    its own, since deleting datasets (not a smaller upload alone) may be the remedy."""

    status, title, slug = 413, "Storage quota exceeded", "storage-quota-exceeded"


class UnsupportedMediaType(BatchwiseError):
    status, title, slug = 415, "Unsupported media type", "unsupported-media-type"


class TooManyQueuedJobs(BatchwiseError):
    """The tenant has as many queued jobs as it may: answered with ``Retry-After``, since
    room appears as workers start them."""

    status, title, slug = 429, "Too many queued jobs", "too-many-queued-jobs"

    def __init__(self, detail: str, *, retry_after_s: int) -> None:
        super().__init__(detail, headers={"Retry-After": str(retry_after_s)})


class InsufficientStorage(BatchwiseError):
    status, title, slug = 507, "Insufficient storage", "insufficient-storage"


class ServiceUnavailable(BatchwiseError):
    status, title, slug = 503, "Service unavailable", "service-unavailable"
