"""The OpenAPI document as clients generate code from it: FastAPI's, finished.

- Every 4xx/5xx answer is ``application/problem+json`` with the ``Problem`` schema (FastAPI
  files extra responses under ``application/json`` and adds its own ``HTTPValidationError``
  for 422, neither of which is what the API sends).
- Every operation has a ``default`` response, a ``Problem``, so a client meets an answer it did
  not expect as a typed problem, not as an exception of its own.
- Every ``/v1`` operation declares the 503 (with ``Retry-After``) that a database out of reach
  gives.
- Request bodies a route reads itself (to cap or offload them) are named schemas too
  (:func:`schema_ref`), so generated clients name their classes after our models.
- Each set of choices has one name: a string enum with the values of one in
  :data:`NAMED_ENUMS` (``JobStatus``, ``ModelKind``, …) is a ``$ref`` to it wherever it appears,
  so a generated client has one ``JobStatus``, not one per field that holds a status.
- Integer bounds are integers: FastAPI's own document model stores every ``minimum`` and
  ``maximum`` as a float, and ``2**63 - 1`` is not one.
"""

from __future__ import annotations

from typing import Any, get_args

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel

from service.api.problems import PROBLEM_JSON, RETRY_AFTER
from service.core.config import (
    Activation,
    DType,
    EvaluationOn,
    LossName,
    LRScaling,
    ModelKind,
    OptimizerName,
)
from service.datasets.schemas import Task
from service.jobs.schemas import MAX_SEED, MAX_WARMUP_SAMPLES, ErrorCode, JobStatus
from service.plots import CurveAxis
from service.probes.schemas import ProbeLR
from service.science.advice import Verdict
from service.science.recommendation import Confidence, KneePosition
from service.science.search import Edge
from service.sweeps.schemas import LRMethod, SweepStatus

_PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}
_BOUNDS = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")
#: The integer bounds beyond 2**53, by the float FastAPI makes of them (from there on, one
#: float stands for several integers).
_INEXACT_BOUNDS = {float(bound): bound for bound in (MAX_SEED, MAX_WARMUP_SAMPLES)}


#: The named sets of choices, from the types that define them; an enum anywhere in the document
#: with the same values (in any order) becomes a reference to its name. (Matched by values: a
#: new field with exactly these values means the same choice, or needs a name of its own here.)
NAMED_ENUMS: dict[str, tuple[str, ...]] = {
    name: get_args(choices)
    for name, choices in {
        "JobStatus": JobStatus,
        "SweepProbeStatus": SweepStatus,  # a probe's statuses are a sweep's
        "ModelKind": ModelKind,
        "Task": Task,
        "Optimizer": OptimizerName,
        "Activation": Activation,
        "Dtype": DType,
        "LossKind": LossName,
        "LRScaling": LRScaling,
        "LossOn": EvaluationOn,
        "Verdict": Verdict,
        "ErrorCode": ErrorCode,
        "Edge": Edge,
        "Confidence": Confidence,
        "KneePosition": KneePosition,
        "LRMethod": LRMethod,
        "ProbeLR": ProbeLR,
        "CurveAxis": CurveAxis,
    }.items()
}
_ENUM_NAMES = {frozenset(values): name for name, values in NAMED_ENUMS.items()}

#: The models :func:`schema_ref` has named, by name.
_REFERENCED: dict[str, type[BaseModel]] = {}


def schema_ref(model: type[BaseModel]) -> dict[str, str]:
    """A ``$ref`` to ``model``'s schema, for an ``openapi_extra`` request body; the document
    then holds the schema under the model's name."""
    _REFERENCED[model.__name__] = model
    return {"$ref": f"#/components/schemas/{model.__name__}"}


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
                    "headers": {"Retry-After": RETRY_AFTER},
                }
            responses.setdefault("default", {"description": "Any other error."})
            for status, response in responses.items():
                if status[:1] in ("4", "5") or status == "default":
                    response["content"] = {PROBLEM_JSON: {"schema": _PROBLEM_REF}}
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for name, model in _REFERENCED.items():
        own = model.model_json_schema(ref_template="#/components/schemas/{model}")
        for nested, nested_schema in {**own.pop("$defs", {}), name: own}.items():
            if components.setdefault(nested, nested_schema) != nested_schema:
                raise ValueError(f"two schemas named {nested!r} in the OpenAPI document")
    for unused in ("HTTPValidationError", "ValidationError"):
        components.pop(unused, None)
    _integer_bounds(schema)
    _name_enums(schema["paths"])
    _name_enums(components)
    for name, values in NAMED_ENUMS.items():
        components[name] = {"type": "string", "enum": list(values), "title": name}
    return schema


def _name_enums(node: Any) -> None:
    """Every string enum under ``node`` with the values of a named one, as a reference to it
    (what else the enum's schema said, a description or a default, stays beside the $ref)."""
    children = enumerate(node) if isinstance(node, list) else node.items()
    for key, child in children:
        if isinstance(child, list):
            _name_enums(child)
        if not isinstance(child, dict):
            continue
        name = _ENUM_NAMES.get(frozenset(child.get("enum", ())))
        if name is not None and child.get("type") == "string":
            rest = {k: v for k, v in child.items() if k not in ("type", "enum", "title")}
            node[key] = {"$ref": f"#/components/schemas/{name}", **rest}
        else:
            _name_enums(child)


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


__all__ = ["openapi_document", "schema_ref"]
