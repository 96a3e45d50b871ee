"""The OpenAPI document reads well in /docs: every route documented, errors as problem+json."""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

import pytest
from fastapi.testclient import TestClient
from openapi_spec_validator import validate

from service.api import create_app
from service.api.openapi import NAMED_ENUMS
from service.config import Settings
from tests.support.processes import REPO_ROOT


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
        ("POST", "/v1/datasets/inline"),
        ("GET", "/v1/datasets/{dataset_id}"),
        ("DELETE", "/v1/datasets/{dataset_id}"),
        ("POST", "/v1/jobs"),
        ("GET", "/v1/jobs"),
        ("GET", "/v1/jobs/{job_id}"),
        ("DELETE", "/v1/jobs/{job_id}"),
        ("POST", "/v1/jobs/{job_id}/cancel"),
        ("GET", "/v1/jobs/{job_id}/checkpoints"),
        ("GET", "/v1/jobs/{job_id}/history"),
        ("GET", "/v1/jobs/{job_id}/history.csv"),
        ("GET", "/v1/jobs/{job_id}/model"),
        ("GET", "/v1/jobs/{job_id}/model.npz"),
        ("POST", "/v1/jobs/{job_id}/predict"),
        ("POST", "/v1/sweeps"),
        ("GET", "/v1/sweeps"),
        ("GET", "/v1/sweeps/{sweep_id}"),
        ("POST", "/v1/sweeps/{sweep_id}/cancel"),
        ("POST", "/v1/probes"),
        ("GET", "/v1/probes"),
        ("GET", "/v1/probes/{probe_id}"),
        ("POST", "/v1/probes/{probe_id}/cancel"),
        *(
            ("GET", f"{owner}/plots/{plot}.{fmt}")
            for owner, plot in (
                ("/v1/jobs/{job_id}", "loss"),
                ("/v1/sweeps/{sweep_id}", "curves"),
                ("/v1/sweeps/{sweep_id}", "scaling"),
                ("/v1/probes/{probe_id}", "critical"),
            )
            for fmt in ("svg", "png")
        ),
    }


def test_the_document_is_valid_openapi(openapi: dict[str, Any]) -> None:
    validate(openapi)  # raises, naming the first thing wrong


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


def test_the_upload_is_a_binary_file_and_inline_json_its_own_operation(
    openapi: dict[str, Any],
) -> None:
    upload = openapi["paths"]["/v1/datasets"]["post"]
    assert list(upload["requestBody"]["content"]) == ["multipart/form-data"]
    form = upload["requestBody"]["content"]["multipart/form-data"]
    assert form["schema"]["required"] == ["file"]
    assert set(form["schema"]["properties"]) == {"file", "name", "target", "invalid_rows"}
    assert form["schema"]["properties"]["file"]["type"] == "string"
    assert form["schema"]["properties"]["file"]["format"] == "binary"
    assert form["encoding"]["file"]["contentType"]
    inline = openapi["paths"]["/v1/datasets/inline"]["post"]
    assert list(inline["requestBody"]["content"]) == ["application/json"]
    assert inline["requestBody"]["content"]["application/json"]["examples"]
    for operation in (upload, inline):
        created = operation["responses"]["201"]
        assert created["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/DatasetRead"
        }
        assert set(created["headers"]) == {"Location"}
    assert openapi["components"]["schemas"]["DatasetRead"]["examples"]


# --- the contract a generated client relies on ----------------------------------------------

CHANGELOG = REPO_ROOT / "docs" / "changelog.md"
LEDGER_LINE = re.compile(r"^- (added|removed) `(\w+)`|^- renamed `(\w+)` to `(\w+)`")


def changelog_ids(text: str) -> set[str]:
    """The operation ids the changelog's lines add up to, replayed oldest first."""
    ids: set[str] = set()
    for line in reversed(text.splitlines()):
        match = LEDGER_LINE.match(line)
        if match is None:
            continue
        verb, name, old, new = match.groups()
        if verb == "added":
            assert name not in ids, f"{name} added twice"
            ids.add(name)
        else:
            gone = name if verb == "removed" else old
            assert gone in ids, f"{gone} removed or renamed before it was added"
            ids.remove(gone)
            if new is not None:
                ids.add(new)
    return ids


def test_every_operation_has_an_explicit_stable_id_and_a_tag(openapi: dict[str, Any]) -> None:
    ids = [operation.get("operationId", "") for _, _, operation in operations(openapi)]
    assert all(re.fullmatch(r"[a-z][a-zA-Z]+", i) for i in ids), ids  # not FastAPI's own
    assert len(set(ids)) == len(ids)
    assert all(operation.get("tags") for _, _, operation in operations(openapi))
    # A change of an id without its line in the changelog fails here.
    assert set(ids) == changelog_ids(CHANGELOG.read_text(encoding="utf-8"))


#: The released sections of the changelog, by version, as SHA-256 of their text: a release is
#: history, so a rename must be a new line, not an edit of the line that added the old id.
#: Releasing a section records its fingerprint here.
RELEASED = {"0.1.0": "8f689fe4e11d1b3c61cfdf6af5dcdecd78310b3209d1b901aa34b9c0b8585f71"}
SECTION = re.compile(r"^## ([^\s:]+)", re.MULTILINE)


def released_sections(text: str) -> dict[str, str]:
    """Each versioned section's fingerprint (the "Unreleased" one is still open)."""
    starts = list(SECTION.finditer(text))
    sections = {}
    for match, following in zip(starts, [*starts[1:], None], strict=True):
        body = text[match.start() : None if following is None else following.start()]
        if match.group(1) != "Unreleased":
            sections[match.group(1)] = hashlib.sha256(body.encode()).hexdigest()
    return sections


def test_released_changelog_sections_are_history() -> None:
    assert released_sections(CHANGELOG.read_text(encoding="utf-8")) == RELEASED


def test_an_edited_release_changes_its_fingerprint() -> None:
    text = CHANGELOG.read_text(encoding="utf-8")
    edited = text.replace("- added `getJob`:", "- added `readJob`:")
    assert edited != text
    assert released_sections(edited)["0.1.0"] != RELEASED["0.1.0"]


def test_the_changelog_replay_catches_a_rename_without_a_note() -> None:
    text = "- added `getJob`\n- added `listJobs`\n"
    assert changelog_ids(text) == {"getJob", "listJobs"}
    assert changelog_ids("- renamed `getJob` to `readJob`\n" + text) == {"readJob", "listJobs"}
    assert changelog_ids("- removed `listJobs`\n" + text) == {"getJob"}
    with pytest.raises(AssertionError, match="before it was added"):
        changelog_ids("- removed `getJobs`\n" + text)


def test_each_answer_has_one_media_type_and_binary_ones_say_so(openapi: dict[str, Any]) -> None:
    binary = 0
    for method, path, operation in operations(openapi):
        for status, response in operation["responses"].items():
            content = response.get("content", {})
            assert len(content) <= 1, (method, path, status, list(content))
            for media, body in content.items():
                if media.startswith("image/") or media == "application/octet-stream":
                    assert body["schema"] == {"type": "string", "format": "binary"}, path
                    binary += 1
    assert binary == 9  # eight plots and the .npz model
    csv = openapi["paths"]["/v1/jobs/{job_id}/history.csv"]["get"]["responses"]["200"]
    assert list(csv["content"]) == ["text/csv"]


def test_every_error_is_a_problem_with_its_headers(openapi: dict[str, Any]) -> None:
    problem = {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
    for method, path, operation in operations(openapi):
        responses = operation["responses"]
        assert responses["default"]["content"] == problem, (method, path)
        if path.startswith("/v1/"):
            assert responses["503"]["content"] == problem, (method, path)
            assert set(responses["503"]["headers"]) == {"Retry-After"}
            assert set(responses["401"]["headers"]) == {"WWW-Authenticate"}
        if "429" in responses:
            assert set(responses["429"]["headers"]) == {"Retry-After"}
    # The readiness probe's 503 sends no Retry-After, so it declares none.
    assert "headers" not in openapi["paths"]["/readyz"]["get"]["responses"]["503"]
    problem_schema = openapi["components"]["schemas"]["Problem"]
    assert problem_schema["properties"]["errors"]["anyOf"][0]["items"] == {
        "$ref": "#/components/schemas/ProblemFieldError"
    }


def test_creations_declare_location_and_cancel_its_202_body(openapi: dict[str, Any]) -> None:
    paths = openapi["paths"]
    for path in ("/v1/jobs", "/v1/sweeps", "/v1/probes"):
        accepted = paths[path]["post"]["responses"]["202"]
        assert set(accepted["headers"]) == {"Location"}, path
        assert accepted["content"]["application/json"]["schema"]["$ref"].endswith("Read")
    cancel = paths["/v1/jobs/{job_id}/cancel"]["post"]["responses"]
    for status in ("200", "202"):
        assert cancel[status]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/JobRead"
        }


def integer_bounds(node: Any) -> list[Any]:
    """Every bound of an integer schema anywhere under ``node``."""
    if isinstance(node, list):
        return [bound for item in node for bound in integer_bounds(item)]
    if not isinstance(node, dict):
        return []
    own = [node[k] for k in ("minimum", "maximum") if node.get("type") == "integer" and k in node]
    return own + [bound for item in node.values() for bound in integer_bounds(item)]


def test_integer_bounds_are_exact_integers(openapi: dict[str, Any]) -> None:
    bounds = integer_bounds(openapi)
    assert len(bounds) > 40
    assert all(type(bound) is int for bound in bounds), [b for b in bounds if type(b) is not int]
    seed = openapi["components"]["schemas"]["JobSubmit"]["properties"]["seed"]
    assert seed["maximum"] == 2**63 - 1


def inline_enums(node: Any) -> list[frozenset[str]]:
    """The value sets of every string enum written out in place under ``node``."""
    if isinstance(node, list):
        return [values for item in node for values in inline_enums(item)]
    if not isinstance(node, dict):
        return []
    own = [frozenset(node["enum"])] if node.get("type") == "string" and "enum" in node else []
    return own + [values for item in node.values() for values in inline_enums(item)]


def test_each_set_of_choices_has_one_name(openapi: dict[str, Any]) -> None:
    schemas = openapi["components"]["schemas"]
    named = {name: frozenset(values) for name, values in NAMED_ENUMS.items()}
    for name, values in named.items():
        assert frozenset(schemas[name]["enum"]) == values
    elsewhere = [v for k, s in schemas.items() if k not in named for v in inline_enums(s)]
    elsewhere += inline_enums(openapi["paths"])
    assert not set(elsewhere) & set(named.values())
    # Each name is used: a set of choices that grew in one place but not in the other would
    # leave its name behind, unused.
    text = json.dumps(openapi)
    assert [n for n in named if text.count(f'"#/components/schemas/{n}"') == 0] == []
    job_status = {"$ref": "#/components/schemas/JobStatus"}
    assert schemas["JobRead"]["properties"]["status"] == job_status
    assert schemas["HistoryRead"]["properties"]["status"] == job_status
    parameters = openapi["paths"]["/v1/jobs"]["get"]["parameters"]
    listed = next(p for p in parameters if p["name"] == "status")
    assert listed["schema"]["anyOf"][0] == job_status
    model = schemas["JobSubmit"]["properties"]["model"]
    assert model["$ref"] == "#/components/schemas/ModelKind"
    assert model["default"] == "linear"  # what was said beside the enum stays
