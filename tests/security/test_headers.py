"""Security headers (issue 11, finding 6): every response of every route the app has says
``X-Content-Type-Options: nosniff``, the answers of middleware and of the 500 handler
included; every HTML page carries a Content-Security-Policy with ``frame-ancestors 'none'``
and no inline script, and ``Referrer-Policy: same-origin``. Whether the pages still work
under the policy is checked in Chromium (``tests/api/*_browser.py``: no violation logged)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.routing import iter_route_contexts
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session
from starlette.routing import Mount

from service.api import create_app
from service.api.auth import KEY_COOKIE
from service.config import Settings
from tests.support.factories import make_key

ORIGIN = "http://testserver"
#: A value for each path parameter of the app's routes (most are ids, unknown here).
PATH_VALUES = {"fmt": "svg"}
#: (path, signed in): the sign-in form shows to the signed-out only.
HTML_PAGES = [
    ("/", True),
    ("/ui/sign-out", True),
    ("/docs", True),
    ("/ui/jobs/unknown", True),
    ("/ui/sign-in", False),
]


def assert_page_headers(response: Any) -> None:
    assert response.headers["content-type"].startswith("text/html"), response.url
    policy = response.headers["content-security-policy"]
    directives = dict(d.strip().split(" ", 1) for d in policy.split(";"))
    assert directives["frame-ancestors"] == "'none'"
    assert directives["default-src"] == "'self'"
    assert "script-src" not in directives  # scripts fall back to 'self': no inline script
    assert "unsafe" not in policy
    assert response.headers["referrer-policy"] == "same-origin"
    assert response.headers["x-content-type-options"] == "nosniff"


def concrete(path: str) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: PATH_VALUES.get(m.group(1), "unknown"), path)


@pytest.fixture
def key(session: Session) -> str:
    return make_key(session, "a")


@pytest.fixture
def app(settings: Settings) -> FastAPI:
    return create_app(settings.model_copy(update={"auth": "on"}))


@pytest.fixture
def client(app: FastAPI, key: str) -> Iterator[TestClient]:
    """Auth on, signed in with a key's cookie: pages render rather than redirect."""
    with TestClient(app, follow_redirects=False, raise_server_exceptions=False) as client:
        client.cookies.set(KEY_COOKIE, key)
        yield client


def every_request(app: FastAPI) -> list[tuple[str, str]]:
    """(method, path) for every method of every route of the app (included routers resolved
    to their full paths), and a file of each mount."""
    requests = []
    for context in iter_route_contexts(app.routes):
        path = context.path or ""
        if isinstance(context.original_route, Mount):
            requests += [("GET", f"{path}/missing.js"), ("GET", f"{path}/dashboard.js")]
        requests += [(method, concrete(path)) for method in sorted(context.methods or ())]
    return requests


def test_every_route_answers_with_nosniff(client: TestClient, app: FastAPI, key: str) -> None:
    requests = every_request(app)
    assert len(requests) > 30  # the whole app, not a handful
    statuses = set()
    for method, path in requests:
        client.cookies.set(KEY_COOKIE, key)  # again: the sign-out among them clears it
        response = client.request(method, path, headers={"Origin": ORIGIN})
        statuses.add(response.status_code)
        assert response.headers.get("x-content-type-options") == "nosniff", (method, path)
        if response.headers.get("content-type", "").startswith("text/html"):
            assert_page_headers(response)
    assert {200, 404} <= statuses  # pages, the API's JSON and refusals alike


@pytest.mark.parametrize(("path", "signed_in"), HTML_PAGES)
def test_every_html_page_has_the_policy(client: TestClient, path: str, signed_in: bool) -> None:
    if not signed_in:
        client.cookies.clear()
    assert_page_headers(client.get(path))


def test_pages_with_objects_have_the_policy(client: TestClient) -> None:
    dataset = client.post(
        "/v1/datasets",
        json={"name": "d", "X": [[float(i)] for i in range(40)], "y": list(range(40))},
        headers={"Origin": ORIGIN},
    )
    assert dataset.status_code == 201, dataset.text
    dataset_id = dataset.json()["id"]
    job = client.post("/v1/jobs", json={"dataset_id": dataset_id}, headers={"Origin": ORIGIN})
    assert job.status_code == 202, job.text
    for path in (f"/ui/datasets/{dataset_id}", f"/ui/jobs/{job.json()['id']}"):
        page = client.get(path)
        assert page.status_code == 200
        assert_page_headers(page)


def test_the_docs_page_has_no_inline_script(client: TestClient) -> None:
    page = client.get("/docs").text
    scripts = re.findall(r"<script([^>]*)>(.*?)</script>", page, flags=re.DOTALL)
    assert len(scripts) == 2
    assert all('src="/docs/' in attributes and not body.strip() for attributes, body in scripts)
    init = client.get("/docs/init.js")
    assert init.headers["content-type"].startswith("text/javascript")
    assert "SwaggerUIBundle(" in init.text
    assert '"url": "/openapi.json"' in init.text


def test_answers_from_middleware_and_the_500_handler_have_nosniff(
    client: TestClient, app: FastAPI
) -> None:
    def boom() -> None:
        raise RuntimeError("a bug")

    app.add_api_route("/boom", boom)
    crashed = client.get("/boom")
    assert crashed.status_code == 500
    assert crashed.headers["x-content-type-options"] == "nosniff"
    client.cookies.clear()
    no_key = client.get("/v1/jobs")  # AuthenticateFirst answers
    assert no_key.status_code == 401
    assert no_key.headers["x-content-type-options"] == "nosniff"
    forged = client.post("/v1/jobs", headers={"Origin": "http://evil.example"})
    assert forged.status_code == 403  # SameOriginWrites answers
    assert forged.headers["x-content-type-options"] == "nosniff"
    assert "content-security-policy" not in forged.headers  # JSON is not a page
