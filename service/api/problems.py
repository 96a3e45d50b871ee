"""Every error the API answers with, rendered once, as RFC 9457 ``application/problem+json``.

Four sources, one shape (``type``, ``title``, ``status``, ``detail``, ``instance`` and, for
input errors, ``errors: [{loc, msg, type}]``):

- domain errors (:class:`service.errors.BatchwiseError`) carry their own status and type;
- FastAPI's request validation (query, path, form) becomes 422 with one entry per field;
- routing's 404 and 405 (Starlette ``HTTPException``) keep their status and headers (``Allow``);
- anything unexpected is logged with its traceback and answered as a bare 500 that leaks nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.errors import BatchwiseError, FieldError

PROBLEM_JSON = "application/problem+json"

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


def _domain_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, BatchwiseError)
    if exc.status >= 500:
        logger.error("%s %s: %s", request.method, request.url.path, exc.detail)
    return problem_response(
        status=exc.status,
        title=exc.title,
        detail=exc.detail,
        type_=exc.type,
        instance=request.url.path,
        errors=field_errors(exc.errors) if exc.errors else None,
    )


def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
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


def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    logger.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return problem_response(
        status=500,
        title="Internal Server Error",
        detail="The server met an unexpected error; it has been logged.",
        type_="/problems/internal-error",
        instance=request.url.path,
    )


def install_problem_handlers(app: FastAPI) -> None:
    """Render every error of ``app`` as problem+json (see the module docstring)."""
    app.add_exception_handler(BatchwiseError, _domain_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected_error)


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses=`` entries documenting problem+json answers for ``statuses``."""
    descriptions = {
        400: "Bad request (e.g. a malformed cursor or multipart body, or a JSON body that is "
        "not UTF-8).",
        404: "No such resource.",
        409: "Conflict with the resource's current state.",
        413: "Payload too large (upload over BATCHWISE_MAX_UPLOAD_BYTES, or too many rows or "
        "features).",
        415: "Unsupported media type (request body or uploaded file format).",
        422: "Invalid input: `errors` lists each problem with its location.",
        503: "Service unavailable.",
    }
    return {
        status: {
            "model": Problem,
            "description": descriptions.get(status, HTTPStatus(status).phrase),
        }
        for status in statuses
    }


__all__ = [
    "PROBLEM_JSON",
    "Problem",
    "ProblemFieldError",
    "field_errors",
    "install_problem_handlers",
    "problem_response",
    "problem_responses",
]
