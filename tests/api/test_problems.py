"""Every error is RFC 9457 problem+json: routing's 404 and 405, validation's 422, domain
errors, and unexpected exceptions (500, nothing leaked)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from service.api import create_app
from service.config import Settings
from service.errors import Conflict, FieldError

PROBLEM_JSON = "application/problem+json"


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as client:
        yield client


def problem(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM_JSON
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert set(body) <= {"type", "title", "status", "detail", "instance", "errors"}
    assert {"type", "title", "status", "detail"} <= set(body)
    return body


def test_unknown_route_is_404_problem(client: TestClient) -> None:
    body = problem(client.get("/v1/nothing-here"), 404)
    assert body["type"] == "about:blank"
    assert body["title"] == "Not Found"
    assert body["detail"] == "No route matches GET /v1/nothing-here."
    assert body["instance"] == "/v1/nothing-here"


def test_wrong_method_is_405_problem_with_allow(client: TestClient) -> None:
    response = client.put("/v1/datasets/abc")
    body = problem(response, 405)
    assert body["title"] == "Method Not Allowed"
    assert response.headers["allow"] == "GET"
    assert body["detail"] == "PUT is not allowed on /v1/datasets/abc; allowed: GET."


def test_query_validation_is_422_with_loc_msg_type(client: TestClient) -> None:
    body = problem(client.get("/v1/datasets", params={"limit": "many"}), 422)
    assert body["type"] == "/problems/invalid-input"
    assert body["errors"] == [
        {
            "loc": ["query", "limit"],
            "msg": "Input should be a valid integer, unable to parse string as an integer",
            "type": "int_parsing",
        }
    ]


def test_domain_error_keeps_its_status_type_and_errors(settings: Settings) -> None:
    app = create_app(settings)

    @app.get("/conflict")
    def conflict() -> None:
        raise Conflict(
            "Dataset 'd1' is used by job 'j1'.",
            errors=[FieldError(("path", "dataset_id"), "in use", "in_use")],
        )

    with TestClient(app) as client:
        body = problem(client.get("/conflict"), 409)
    assert body == {
        "type": "/problems/conflict",
        "title": "Conflict",
        "status": 409,
        "detail": "Dataset 'd1' is used by job 'j1'.",
        "instance": "/conflict",
        "errors": [{"loc": ["path", "dataset_id"], "msg": "in use", "type": "in_use"}],
    }


def test_unexpected_error_is_500_without_internals(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    app = create_app(settings)

    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError("secret-connection-string")

    with (
        caplog.at_level(logging.ERROR, logger="service.api"),
        TestClient(app, raise_server_exceptions=False) as client,
    ):
        response = client.get("/boom")
    body = problem(response, 500)
    assert "secret" not in response.text
    assert "RuntimeError" not in response.text
    assert body["type"] == "/problems/internal-error"
    # The traceback goes to the log, for the operator.
    assert any(
        r.exc_info and "secret-connection-string" in str(r.exc_info[1]) for r in caplog.records
    )


JOB = '{"dataset_id": "0b7e", "epochs": 2}'


@pytest.mark.parametrize(
    ("headers", "came_with", "how"),
    [
        (
            {"content-type": "application/x-www-form-urlencoded"},
            "'application/x-www-form-urlencoded'",
            "`curl -d` sends that: add `-H 'Content-Type: application/json'`, or use `--json`",
        ),
        ({}, "no Content-Type", "send the header `Content-Type: application/json` with it"),
        (
            {"content-type": "text/plain; charset=utf-8"},
            "'text/plain; charset=utf-8'",
            "send the header `Content-Type: application/json` with it",
        ),
    ],
    ids=["curl-d", "none", "text"],
)
@pytest.mark.parametrize("path", ["/v1/jobs", "/v1/sweeps"])
def test_a_json_body_without_the_json_content_type_says_so(
    client: TestClient, path: str, headers: dict[str, str], came_with: str, how: str
) -> None:
    """Not pydantic's "Input should be a valid dictionary": the problem names JSON and the
    Content-Type header, and how to send it."""
    body = problem(client.post(path, content=JOB.encode(), headers=headers), 422)
    assert body["type"] == "/problems/invalid-input"
    assert body["detail"] == (
        "The request body must be JSON, sent with the header `Content-Type: application/json`; "
        f"this one came with {came_with} ({how})."
    )
    assert body["errors"] == [
        {
            "loc": ["body"],
            "msg": f"expected JSON with `Content-Type: application/json`, got {came_with}",
            "type": "json_content_type",
        }
    ]


def test_a_json_body_of_the_wrong_shape_keeps_the_validation_message(client: TestClient) -> None:
    """Sent as JSON, a body that is not an object is a validation error of its content."""
    response = client.post(
        "/v1/jobs", content=b"[1, 2]", headers={"content-type": "application/json"}
    )
    body = problem(response, 422)
    assert body["detail"] == "The request is invalid: 1 error."
    [error] = body["errors"]
    assert error["loc"] == ["body"]
    assert error["type"] == "model_attributes_type"
