"""The OpenAPI document as clients generate code from it: FastAPI's, finished.

- Every 4xx/5xx answer is ``application/problem+json`` with the ``Problem`` schema (FastAPI
  files extra responses under ``application/json`` and adds its own ``HTTPValidationError``
  for 422, neither of which is what the API sends).
- Every operation has a ``default`` response, a ``Problem``, so a client meets an answer it did
  not expect as a typed problem, not as an exception of its own.
- Every ``/v1`` operation declares the 503 (with ``Retry-After``) that a database out of reach
  gives.
- Integer bounds are integers: FastAPI's own document model stores every ``minimum`` and
  ``maximum`` as a float, and ``2**63 - 1`` is not one.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from service.api.problems import PROBLEM_HEADERS, PROBLEM_JSON
from service.jobs.schemas import MAX_SEED, MAX_WARMUP_SAMPLES

_PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}
_BOUNDS = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")
#: The integer bounds beyond 2**53, by the float FastAPI makes of them (from there on, one
#: float stands for several integers).
_INEXACT_BOUNDS = {float(bound): bound for bound in (MAX_SEED, MAX_WARMUP_SAMPLES)}


def openapi_document(app: FastAPI) -> dict[str, Any]:
    """The app's OpenAPI document, finished as the module docstring says."""
    schema = get_openapi(
        title=app.title,
        version=app.version,
        description=app.description,
        routes=app.routes,
        tags=app.openapi_tags,
    )
    for path, operations in schema.get("paths", {}).items():
        for operation in operations.values():
            responses = operation.setdefault("responses", {})
            if path.startswith("/v1/") and "503" not in responses:
                responses["503"] = {
                    "description": "The database is out of reach: retry after `Retry-After` "
                    "seconds.",
                    "headers": PROBLEM_HEADERS[503],
                }
            responses.setdefault("default", {"description": "Any other error."})
            for status, response in responses.items():
                if status[:1] in ("4", "5") or status == "default":
                    response["content"] = {PROBLEM_JSON: {"schema": _PROBLEM_REF}}
    components = schema.get("components", {}).get("schemas", {})
    for unused in ("HTTPValidationError", "ValidationError"):
        components.pop(unused, None)
    _integer_bounds(schema)
    return schema


def _integer_bounds(node: Any) -> None:
    """Every integer schema's bounds under ``node`` as ints, exactly."""
    if isinstance(node, list):
        for item in node:
            _integer_bounds(item)
    elif isinstance(node, dict):
        if node.get("type") == "integer":
            for key in _BOUNDS:
                value = node.get(key)
                if isinstance(value, float):
                    node[key] = _exact(value)
        for item in node.values():
            _integer_bounds(item)


def _exact(bound: float) -> int:
    if abs(bound) < 2**53:  # every integer up to here is a float exactly
        return int(bound)
    if bound in _INEXACT_BOUNDS:
        return _INEXACT_BOUNDS[bound]
    raise ValueError(f"integer bound {bound!r} is not exact as a float: add it to _INEXACT_BOUNDS")


__all__ = ["openapi_document"]
