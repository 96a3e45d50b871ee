"""Schemathesis against the service's own OpenAPI document, on a fresh database per operation.

Every operation of ``/openapi.json`` is called with generated requests through the ASGI app
(in-process, on the ``settings`` fixture's database: SQLite and PostgreSQL), and every answer
must be no 5xx, a documented status code, the documented content type, a body and headers that
match the documented schema. Two generation modes per operation: ``positive`` (requests the
schema allows) and ``negative`` (requests it forbids, which must be refused with a documented
4xx). Bounded and reproducible: ``MAX_EXAMPLES`` per operation and mode, derandomized (the
seed is a hash of the test), no example database.

Nothing is excluded. The multipart upload (``POST /v1/datasets``) is generated too (its
``file`` part as arbitrary bytes); the Hypothesis tests in ``test_ingest_fuzz.py`` cover the
upload route with the bytes that matter (CSV, NPY, NPZ-like, JSON) and check for leftovers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from schemathesis import Case, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from service.api.app import create_app
from service.config import Settings

MAX_EXAMPLES = 15

#: What "no 5xx, every response matches its schema" means, as schemathesis checks.
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]

FUZZ_SETTINGS = hypothesis_settings(
    max_examples=MAX_EXAMPLES,
    derandomize=True,  # the same examples on every run: CI is reproducible
    database=None,  # and no replay of examples saved by earlier runs
    deadline=None,  # a slow request is not a failure here (speed is benchmarks/' business)
    # The database fixture lives for the whole operation (the examples share it, on purpose:
    # later requests see what earlier ones created), and schemathesis' strategies filter.
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.filter_too_much,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)

# Only the document is needed at collection: the engine is created, never connected.
_DOCUMENT: dict[str, Any] = create_app(
    Settings(database_url="sqlite://", data_dir=Path("unused"), workers=0)
).openapi()

_PLAIN_SCHEMA_KEYS = {"type", "title", "description", "examples", "default"}


def _negatable(operation: dict[str, Any]) -> bool:
    """Whether a request can break the operation's schema at all.

    A path parameter that is any string cannot be made invalid (everything in a URL is a
    string), so an operation with nothing else (``GET /healthz``, ``GET /v1/jobs/{job_id}``)
    has no negative examples: schemathesis would report ``Unsatisfiable``. Those run in the
    positive mode only.
    """
    if "requestBody" in operation:
        return True
    return any(
        set(parameter.get("schema", {})) - _PLAIN_SCHEMA_KEYS
        for parameter in operation.get("parameters", [])
    )


OPERATIONS = [
    pytest.param(method.upper(), path, mode, id=f"{mode.value}-{method.upper()} {path}")
    for path, methods in _DOCUMENT["paths"].items()
    for method, operation in methods.items()
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    if mode is GenerationMode.POSITIVE or _negatable(operation)
]


def test_every_operation_is_fuzzed_in_the_positive_mode() -> None:
    """The parametrization above leaves out no operation of the document."""
    documented = {
        (method.upper(), path) for path, methods in _DOCUMENT["paths"].items() for method in methods
    }
    fuzzed = {
        (p.values[0], p.values[1]) for p in OPERATIONS if p.values[2] is GenerationMode.POSITIVE
    }
    assert fuzzed == documented
    assert len(documented) >= 20


@pytest.mark.parametrize(("method", "path", "mode"), OPERATIONS)
def test_operation_answers_as_documented(
    settings: Settings, method: str, path: str, mode: GenerationMode
) -> None:
    """No 5xx; status, content type, body and headers as ``/openapi.json`` documents them."""
    schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(settings))
    operation = schema[path][method]

    @given(case=operation.as_strategy(mode))
    @FUZZ_SETTINGS
    def call_and_check(case: Case) -> None:
        case.call_and_validate(checks=CHECKS)

    call_and_check()
