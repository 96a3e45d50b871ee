"""Every error the API answers with, rendered once, as RFC 9457 ``application/problem+json``.

Every source, one shape (``type``, ``title``, ``status``, ``detail``, ``instance`` and, for
input errors, ``errors: [{loc, msg, type}]``):

- domain errors (:class:`service.errors.BatchwiseError`) carry their own status and type;
- FastAPI's request validation (query, path, form) becomes 422 with one entry per field;
- routing's 404 and 405 (Starlette ``HTTPException``) keep their status and headers (``Allow``);
- a lost database connection (PostgreSQL down or restarting) is 503 with ``Retry-After``;
- a full disk (ENOSPC/EDQUOT while spooling or ingesting, SQLite's SQLITE_FULL, PostgreSQL's
  disk_full) is 507: the request's transaction is rolled back and its files removed, so nothing
  of it was stored. Recognised here, not where uploads are handled, because SQLite writes most
  pages at COMMIT, which the session dependency runs after the route has returned;
- anything unexpected is logged with its traceback and answered as a bare 500 that leaks nothing.
"""

from __future__ import annotations

import errno
import logging
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from psycopg import OperationalError as PsycopgOperationalError
from psycopg.errors import DiskFull
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.errors import BatchwiseError, FieldError, InsufficientStorage, ServiceUnavailable

PROBLEM_JSON = "application/problem+json"
#: What a 503 for a lost database tells clients to wait: a PostgreSQL restart takes seconds.
DATABASE_RETRY_AFTER_S = 5
#: PostgreSQL's "the server is going away or not there yet" codes: class 08 (connection
#: exception) and admin/crash shutdown, cannot connect now (starting up or shutting down).
_DISCONNECT_SQLSTATES = ("57P01", "57P02", "57P03")
#: No space left on the device, and the disk quota used up: both are "the storage is full".
_STORAGE_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
STORAGE_FULL_DETAIL = (
    "The server's storage is full, so nothing of this request was stored. "
    "Retry once space has been freed on the server."
)

logger = logging.getLogger("service.api")


class ProblemFieldError(BaseModel):
    """One thing wrong with the input, and where."""

    loc: list[str | int] = Field(
        description='Path to the offending value, e.g. `["body", "X", 3]` or '
        '`["file", "line 12", "column \'age\'"]`.'
    )
    msg: str = Field(description="What is wrong, in words.")
    type: str = Field(description="A machine-readable error kind, e.g. `missing`, `value_error`.")


class Problem(BaseModel):
    """An RFC 9457 problem document: the body of every 4xx and 5xx answer."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "type": "/problems/not-found",
                    "title": "Not found",
                    "status": 404,
                    "detail": "No dataset with id '0b7e…'.",
                    "instance": "/v1/datasets/0b7e…",
                },
                {
                    "type": "/problems/invalid-input",
                    "title": "Invalid input",
                    "status": 422,
                    "detail": "The CSV file is invalid: 1 error.",
                    "instance": "/v1/datasets",
                    "errors": [
                        {
                            "loc": ["file", "line 12", "column 'age'"],
                            "msg": "'abc' is not a number",
                            "type": "value_error",
                        }
                    ],
                },
            ]
        }
    )

    type: str = Field(
        description="URI reference naming the kind of problem (`about:blank` for plain HTTP "
        "errors such as an unknown route)."
    )
    title: str = Field(description="Short summary of the kind of problem.")
    status: int = Field(description="The HTTP status code, repeated for convenience.")
    detail: str = Field(description="What went wrong this time, in words a user can act on.")
    instance: str | None = Field(default=None, description="The request path that failed.")
    errors: list[ProblemFieldError] | None = Field(
        default=None, description="Per-field errors, for invalid input."
    )


def problem_response(
    *,
    status: int,
    title: str,
    detail: str,
    type_: str = "about:blank",
    instance: str | None = None,
    errors: Iterable[Mapping[str, Any]] | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    """A ``JSONResponse`` holding one problem document, with the problem+json media type."""
    body: dict[str, Any] = {"type": type_, "title": title, "status": status, "detail": detail}
    if instance is not None:
        body["instance"] = instance
    if errors is not None:
        body["errors"] = list(errors)
    return JSONResponse(body, status_code=status, headers=headers, media_type=PROBLEM_JSON)


def field_errors(errors: Sequence[FieldError]) -> list[dict[str, Any]]:
    """Domain :class:`FieldError` s as the ``errors`` member of a problem."""
    return [{"loc": list(e.loc), "msg": e.msg, "type": e.type} for e in errors]


def error_response(
    error: BatchwiseError, *, instance: str, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    """The problem document of a domain ``error`` (its field errors included), with the
    error's own headers and then ``headers``. The middlewares answer with it too."""
    return problem_response(
        status=error.status,
        title=error.title,
        detail=error.detail,
        type_=error.type,
        instance=instance,
        errors=field_errors(error.errors) if error.errors else None,
        headers={**error.headers, **(headers or {})},
    )


def _domain_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, BatchwiseError)
    if exc.status >= 500:
        logger.error("%s %s: %s", request.method, request.url.path, exc.detail)
    return error_response(exc, instance=request.url.path)


def _not_json_body(request: Request, exc: RequestValidationError) -> JSONResponse | None:
    """The answer to a JSON body sent without ``Content-Type: application/json`` (none, or
    ``curl -d``'s ``application/x-www-form-urlencoded``): FastAPI then validates the raw bytes,
    and pydantic's "Input should be a valid dictionary" would not say what is wrong."""
    if not any(
        tuple(error.get("loc", ())) == ("body",) and isinstance(error.get("input"), bytes)
        for error in exc.errors()
    ):
        return None
    content_type = request.headers.get("content-type", "").strip()
    media_type = content_type.split(";", 1)[0].strip().lower()
    if content_type:
        shown = repr(content_type if len(content_type) <= 100 else content_type[:100] + "…")
    else:
        shown = "no Content-Type"
    how = "send the header `Content-Type: application/json` with it"
    if media_type == "application/x-www-form-urlencoded":
        how = "`curl -d` sends that: add `-H 'Content-Type: application/json'`, or use `--json`"
    return problem_response(
        status=422,
        title="Invalid input",
        detail=f"The request body must be JSON, sent with the header `Content-Type: "
        f"application/json`; this one came with {shown} ({how}).",
        type_="/problems/invalid-input",
        instance=request.url.path,
        errors=[
            {
                "loc": ["body"],
                "msg": f"expected JSON with `Content-Type: application/json`, got {shown}",
                "type": "json_content_type",
            }
        ],
    )


def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    not_json = _not_json_body(request, exc)
    if not_json is not None:
        return not_json
    # Keep loc/msg/type only: the rejected input can be large, and echoing it back helps nobody.
    errors = [
        {"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": e.get("type", "")}
        for e in exc.errors()
    ]
    count = len(errors)
    return problem_response(
        status=422,
        title="Invalid input",
        detail=f"The request is invalid: {count} error{'s' if count != 1 else ''}.",
        type_="/problems/invalid-input",
        instance=request.url.path,
        errors=errors,
    )


def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    if isinstance(exc.__cause__, BatchwiseError):
        # FastAPI turns any error while it reads a body into "400 error parsing the body";
        # ours (the request body limit) says more.
        return _domain_error(request, exc.__cause__)
    status = exc.status_code
    phrase = HTTPStatus(status).phrase
    detail = str(exc.detail) if exc.detail else phrase
    if status == 404 and detail == phrase:
        detail = f"No route matches {request.method} {request.url.path}."
    if status == 405:
        # Starlette's Allow names the methods of the first route matching the path only.
        allowed = (exc.headers or {}).get("Allow")
        detail = f"{request.method} is not allowed on {request.url.path}" + (
            f"; allowed: {allowed}." if allowed else "."
        )
    return problem_response(
        status=status,
        title=phrase,
        detail=detail,
        instance=request.url.path,
        headers=exc.headers,
    )


def is_database_unreachable(exc: DBAPIError) -> bool:
    """Whether ``exc`` says the database cannot be reached (a retry later may work), rather
    than that a statement failed: a connection SQLAlchemy found dead, or psycopg failing to
    connect or losing the server (no SQLSTATE, class 08, or a shutdown code)."""
    if exc.connection_invalidated:
        return True
    orig = exc.orig
    if not isinstance(orig, PsycopgOperationalError):
        return False
    sqlstate = orig.sqlstate
    return sqlstate is None or sqlstate.startswith("08") or sqlstate in _DISCONNECT_SQLSTATES


def is_database_busy(exc: DBAPIError) -> bool:
    """Whether ``exc`` is SQLite's "database is locked" (SQLITE_BUSY, or SQLITE_LOCKED): another
    connection held the write lock past the busy timeout. Nothing was written; a retry works."""
    orig = exc.orig
    if not isinstance(orig, sqlite3.Error):
        return False
    # The extended code's low byte is the primary code.
    return (getattr(orig, "sqlite_errorcode", 0) & 0xFF) in (
        sqlite3.SQLITE_BUSY,
        sqlite3.SQLITE_LOCKED,
    )


def is_storage_full(exc: BaseException) -> bool:
    """Whether ``exc`` says the server's storage is full: an ``OSError`` with ENOSPC or EDQUOT
    (spooling an upload, writing its canonical file), SQLite's SQLITE_FULL ("database or disk
    is full") or PostgreSQL's disk_full (SQLSTATE 53100, ``psycopg.errors.DiskFull``), the
    last two as SQLAlchemy wraps them."""
    if isinstance(exc, DBAPIError):
        orig = exc.orig
        if isinstance(orig, sqlite3.Error):
            # The extended code's low byte is the primary code (SQLITE_FULL has no variants).
            return (getattr(orig, "sqlite_errorcode", 0) & 0xFF) == sqlite3.SQLITE_FULL
        return isinstance(orig, DiskFull)
    return isinstance(exc, OSError) and exc.errno in _STORAGE_FULL_ERRNOS


def _storage_full(request: Request, exc: Exception) -> JSONResponse:
    # Logged with the cause (which file or database), which the client is not told.
    cause = exc.orig if isinstance(exc, DBAPIError) else exc
    logger.error("%s %s: the storage is full: %s", request.method, request.url.path, cause)
    # A spool that filled up leaves the rest of the body unread: the connection cannot
    # carry another request (as upload.py's own refusals).
    return error_response(
        InsufficientStorage(STORAGE_FULL_DETAIL),
        instance=request.url.path,
        headers={"Connection": "close"},
    )


def _os_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, OSError)
    if is_storage_full(exc):
        return _storage_full(request, exc)
    return _unexpected_error(request, exc)


def _database_busy(request: Request) -> JSONResponse:
    logger.warning(
        "%s %s: the database stayed locked (SQLite busy)", request.method, request.url.path
    )
    busy = ServiceUnavailable(
        "The database stayed locked by other writers past its busy timeout; nothing was "
        f"changed. Retry in {DATABASE_RETRY_AFTER_S} s.",
        headers={"Retry-After": str(DATABASE_RETRY_AFTER_S)},
    )
    return error_response(busy, instance=request.url.path)


def _database_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, DBAPIError)
    if is_storage_full(exc):
        return _storage_full(request, exc)
    if is_database_busy(exc):
        return _database_busy(request)
    if not is_database_unreachable(exc):
        return _unexpected_error(request, exc)
    cause = type(exc.orig).__name__
    logger.warning(
        "%s %s: the database is unreachable (%s)", request.method, request.url.path, cause
    )
    unavailable = ServiceUnavailable(
        f"The database is unreachable ({cause}); the request was not completed. "
        f"Retry in {DATABASE_RETRY_AFTER_S} s.",
        headers={"Retry-After": str(DATABASE_RETRY_AFTER_S)},
    )
    return error_response(unavailable, instance=request.url.path)


def _pool_timeout(request: Request, exc: Exception) -> JSONResponse:
    # Every pooled connection stayed busy for the pool's timeout (Settings.database_timeout_s):
    # a stalled database holding them all, or more load than the pool serves.
    logger.warning("%s %s: no database connection free: %s", request.method, request.url.path, exc)
    unavailable = ServiceUnavailable(
        "No database connection was free in time; the request was not completed. "
        f"Retry in {DATABASE_RETRY_AFTER_S} s.",
        headers={"Retry-After": str(DATABASE_RETRY_AFTER_S)},
    )
    return error_response(unavailable, instance=request.url.path)


def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    logger.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    unexpected = BatchwiseError("The server met an unexpected error; it has been logged.")
    return error_response(unexpected, instance=request.url.path)


def install_problem_handlers(app: FastAPI) -> None:
    """Render every error of ``app`` as problem+json (see the module docstring)."""
    app.add_exception_handler(BatchwiseError, _domain_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(DBAPIError, _database_error)
    app.add_exception_handler(PoolTimeout, _pool_timeout)
    app.add_exception_handler(OSError, _os_error)
    app.add_exception_handler(Exception, _unexpected_error)


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses=`` entries documenting problem+json answers for ``statuses``."""
    descriptions = {
        400: "Bad request (e.g. a malformed cursor or multipart body, or a JSON body that is "
        "not UTF-8).",
        401: "No valid API key: send `Authorization: Bearer <key>` (`batchwise keys create`).",
        404: "No such resource.",
        409: "Conflict with the resource's current state.",
        413: "Payload too large (upload over BATCHWISE_MAX_UPLOAD_BYTES, too many rows, "
        "features or cells, or past the tenant's storage quota).",
        415: "Unsupported media type (request body or uploaded file format).",
        422: "Invalid input: `errors` lists each problem with its location.",
        429: "Too many queued jobs for this tenant: retry after `Retry-After` seconds.",
        503: "Service unavailable.",
        507: "Insufficient storage: the server's disk or database is full; nothing was stored.",
    }
    return {
        status: {
            "model": Problem,
            "description": descriptions.get(status, HTTPStatus(status).phrase),
            **({"headers": PROBLEM_HEADERS[status]} if status in PROBLEM_HEADERS else {}),
        }
        for status in statuses
    }


def _header(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "schema": schema}


#: The headers that come with some problems, as OpenAPI declares them.
RETRY_AFTER = _header("Seconds to wait before retrying.", {"type": "integer", "minimum": 0})
PROBLEM_HEADERS: dict[int, dict[str, Any]] = {
    401: {
        "WWW-Authenticate": _header(
            '`Bearer`, with `error="invalid_token"` when a key was sent but refused.',
            {"type": "string"},
        )
    },
    429: {"Retry-After": RETRY_AFTER},
}


def created_responses(description: str, *, status: int = 201) -> dict[int | str, dict[str, Any]]:
    """The ``responses=`` entry of an operation that creates something: its ``Location``."""
    location = _header("The new resource's URL path.", {"type": "string"})
    return {status: {"description": description, "headers": {"Location": location}}}


__all__ = [
    "DATABASE_RETRY_AFTER_S",
    "PROBLEM_HEADERS",
    "PROBLEM_JSON",
    "RETRY_AFTER",
    "STORAGE_FULL_DETAIL",
    "Problem",
    "ProblemFieldError",
    "created_responses",
    "error_response",
    "field_errors",
    "install_problem_handlers",
    "is_database_unreachable",
    "is_storage_full",
    "problem_response",
    "problem_responses",
]
