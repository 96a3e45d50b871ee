"""The OpenAPI document reads well in /docs: every route documented, errors as problem+json."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from service.api import create_app
from service.config import Settings


@pytest.fixture(scope="module")
def openapi(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    data_dir = tmp_path_factory.mktemp("openapi")
    settings = Settings(database_url=f"sqlite:///{data_dir / 'x.db'}", data_dir=data_dir)
    with TestClient(create_app(settings)) as client:
        document: dict[str, Any] = client.get("/openapi.json").json()
        assert client.get("/docs").status_code == 200
    return document


def operations(openapi: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method.upper(), path, operation)
        for path, item in openapi["paths"].items()
        for method, operation in item.items()
    ]


def test_every_route_is_listed(openapi: dict[str, Any]) -> None:
    assert {(m, p) for m, p, _ in operations(openapi)} == {
        ("GET", "/healthz"),
        ("GET", "/readyz"),
        ("GET", "/metrics"),
        ("GET", "/v1/datasets"),
        ("POST", "/v1/datasets"),
        ("GET", "/v1/datasets/{dataset_id}"),
        ("DELETE", "/v1/datasets/{dataset_id}"),
        ("POST", "/v1/jobs"),
        ("GET", "/v1/jobs"),
        ("GET", "/v1/jobs/{job_id}"),
        ("DELETE", "/v1/jobs/{job_id}"),
        ("POST", "/v1/jobs/{job_id}/cancel"),
        ("GET", "/v1/jobs/{job_id}/checkpoints"),
        ("GET", "/v1/jobs/{job_id}/history"),
        ("GET", "/v1/jobs/{job_id}/model"),
        ("POST", "/v1/jobs/{job_id}/predict"),
        ("POST", "/v1/sweeps"),
        ("GET", "/v1/sweeps"),
        ("GET", "/v1/sweeps/{sweep_id}"),
        ("POST", "/v1/sweeps/{sweep_id}/cancel"),
        ("POST", "/v1/probes"),
        ("GET", "/v1/probes"),
        ("GET", "/v1/probes/{probe_id}"),
        ("POST", "/v1/probes/{probe_id}/cancel"),
        ("GET", "/v1/probes/{probe_id}/plots/critical.{fmt}"),
        ("GET", "/v1/jobs/{job_id}/plots/loss.{fmt}"),
        ("GET", "/v1/sweeps/{sweep_id}/plots/curves.{fmt}"),
        ("GET", "/v1/sweeps/{sweep_id}/plots/scaling.{fmt}"),
    }


def test_every_route_has_summary_description_and_problem_errors(openapi: dict[str, Any]) -> None:
    for method, path, operation in operations(openapi):
        assert operation.get("summary"), (method, path)
        assert len(operation.get("description", "")) > 40, (method, path)
        errors = {k: v for k, v in operation["responses"].items() if k[0] in "45"}
        if path != "/healthz":
            assert errors, (method, path)
        for status, response in errors.items():
            assert list(response["content"]) == ["application/problem+json"], (path, status)
            schema = response["content"]["application/problem+json"]["schema"]
            assert schema == {"$ref": "#/components/schemas/Problem"}
    assert "HTTPValidationError" not in openapi["components"]["schemas"]
    assert openapi["components"]["schemas"]["Problem"]["examples"]


def test_upload_documents_both_request_bodies(openapi: dict[str, Any]) -> None:
    body = openapi["paths"]["/v1/datasets"]["post"]["requestBody"]
    assert set(body["content"]) == {"multipart/form-data", "application/json"}
    form = body["content"]["multipart/form-data"]["schema"]
    assert form["required"] == ["file"]
    assert set(form["properties"]) == {"file", "name", "target", "invalid_rows"}
    assert body["content"]["application/json"]["examples"]
    created = openapi["paths"]["/v1/datasets"]["post"]["responses"]["201"]
    assert created["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/DatasetRead"
    }
    assert openapi["components"]["schemas"]["DatasetRead"]["examples"]
