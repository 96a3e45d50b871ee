"""Signing in to the dashboard, through the real app and a real database (both backends): pages
redirect to the sign-in form without a valid cookie, the form sets an HttpOnly, SameSite=Strict
cookie and sends the user back, a bad key re-renders the form with the reason, pages show the
signed-in tenant's objects only, signing out clears the cookie. The browser flow is in
``test_auth_dashboard_browser.py``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from service.api import create_app
from service.api.auth import KEY_COOKIE
from service.config import Settings
from service.keys import service as keys_service
from tests.support.factories import make_key

PAGES = ("/", "/ui/datasets/{dataset}", "/ui/jobs/{job}", "/ui/sweeps/{sweep}")


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    on = settings.model_copy(update={"auth": "on"})
    with TestClient(create_app(on), follow_redirects=False) as client:
        yield client


def own_objects(client: TestClient, key: str, name: str) -> dict[str, str]:
    """A dataset, a job and a sweep of ``key``'s tenant, through the API."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((60, 2))
    headers = {"Authorization": f"Bearer {key}"}
    body = {"name": name, "X": X.tolist(), "y": (X @ [1.0, -1.0]).tolist()}
    dataset = client.post("/v1/datasets", json=body, headers=headers).json()["id"]
    job = client.post("/v1/jobs", json={"dataset_id": dataset}, headers=headers).json()["id"]
    sweep = client.post(
        "/v1/sweeps",
        json={"dataset_id": dataset, "batch_sizes": [8, 16], "learning_rates": [0.05]},
        headers=headers,
    ).json()["id"]
    return {"dataset": dataset, "job": job, "sweep": sweep}


def sign_in(client: TestClient, key: str, next_path: str = "/") -> Any:
    return client.post("/ui/sign-in", data={"key": key, "next": next_path})


def cookie_header(response: Any) -> str:
    header: str = response.headers["set-cookie"]
    return header


def test_every_page_without_a_cookie_redirects_to_sign_in_and_back(
    client: TestClient, session: Session
) -> None:
    ids = own_objects(client, make_key(session, "a"), "a-data")
    for page in PAGES:
        url = page.format(**ids)
        response = client.get(url)
        assert response.status_code == 303, url
        assert response.headers["location"] == f"/ui/sign-in?next={quote(url, safe='')}"
    query = client.get("/ui/jobs/x?tab=history")
    assert query.headers["location"] == "/ui/sign-in?next=%2Fui%2Fjobs%2Fx%3Ftab%3Dhistory"


def test_the_sign_in_form(client: TestClient) -> None:
    response = client.get("/ui/sign-in?next=/ui/jobs/abc")
    assert response.status_code == 200
    assert 'action="/ui/sign-in" method="post"' in response.text
    assert 'type="password" name="key"' in response.text
    assert 'name="next" value="/ui/jobs/abc"' in response.text
    assert "batchwise keys create --tenant NAME" in response.text
    assert "Sign out" not in response.text


def test_a_good_key_sets_a_strict_httponly_cookie_and_goes_back(
    client: TestClient, session: Session
) -> None:
    key = make_key(session, "a")
    response = sign_in(client, key, "/ui/jobs/abc")
    assert response.status_code == 303
    assert response.headers["location"] == "/ui/jobs/abc"
    cookie = cookie_header(response)
    assert cookie.startswith(f"{KEY_COOKIE}={key};")
    attributes = {part.strip().lower() for part in cookie.split(";")[1:]}
    assert attributes == {"httponly", "path=/", "samesite=strict"}  # a session cookie, http
    # An https request (behind TLS) gets a Secure cookie too.
    secure = client.post(
        "https://testserver/ui/sign-in", data={"key": key}, headers={"Origin": "https://testserver"}
    )
    assert "secure" in {part.strip().lower() for part in cookie_header(secure).split(";")}


@pytest.mark.parametrize(
    ("key", "error"),
    [
        ("", "Paste an API key."),
        ("   ", "Paste an API key."),
        ("hunter2", "The bearer token is not a Batchwise API key"),
        ("x" * 500, "That is not an API key: 500 characters long."),
    ],
)
def test_a_bad_key_re_renders_the_form_with_the_reason(
    client: TestClient, key: str, error: str
) -> None:
    response = sign_in(client, key, "/ui/jobs/abc")
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Bearer realm="batchwise"'
    assert "set-cookie" not in response.headers
    assert error in response.text
    assert 'id="sign-in-error"' in response.text
    assert 'name="next" value="/ui/jobs/abc"' in response.text  # still going back there after


def test_an_unknown_or_revoked_key_is_refused_with_its_reason(
    client: TestClient, session: Session
) -> None:
    created = keys_service.create_key(session, tenant="a")
    unknown = created.key[:40] + ("A" if created.key[40] != "A" else "B") + created.key[41:]
    session.commit()
    assert "Unknown API key" in sign_in(client, unknown).text
    keys_service.revoke_key(session, created.record.id)
    session.commit()
    response = sign_in(client, created.key)
    assert response.status_code == 401
    assert f"API key {created.record.id} was revoked at" in response.text


@pytest.mark.parametrize(
    "target", ["//evil.example/x", "https://evil.example/", "/\\evil.example", "javascript:x", ""]
)
def test_next_never_leaves_the_site(client: TestClient, session: Session, target: str) -> None:
    form = client.get(f"/ui/sign-in?next={quote(target)}")
    assert 'name="next" value="/"' in form.text
    key = make_key(session, "a")
    assert sign_in(client, key, target).headers["location"] == "/"
    # Signed in (the client keeps the cookie): the form sends the user on, home.
    assert client.get(f"/ui/sign-in?next={quote(target)}").headers["location"] == "/"


def test_a_sign_in_posted_from_another_site_is_refused(
    client: TestClient, session: Session
) -> None:
    key = make_key(session, "attacker")
    response = client.post(
        "/ui/sign-in", data={"key": key}, headers={"Origin": "https://evil.example"}
    )
    assert response.status_code == 403
    assert response.headers["content-type"] == "application/problem+json"
    assert "the same-origin check failed" in response.json()["detail"]
    assert "set-cookie" not in response.headers
    same_site = client.post(
        "/ui/sign-in", data={"key": key}, headers={"Origin": "http://testserver"}
    )
    assert same_site.status_code == 303


def test_pages_show_the_signed_in_tenants_objects_only(
    client: TestClient, session: Session
) -> None:
    key_a, key_b = make_key(session, "a"), make_key(session, "b")
    mine, theirs = own_objects(client, key_a, "a-data"), own_objects(client, key_b, "b-data")
    assert sign_in(client, key_a).status_code == 303  # the client keeps the cookie, as a browser
    overview = client.get("/")
    assert overview.status_code == 200
    assert "a-data" in overview.text
    assert "b-data" not in overview.text
    assert theirs["job"] not in overview.text
    assert "tenant <strong>a</strong>" in overview.text
    assert '<form class="sign-out" action="/ui/sign-out" method="post">' in overview.text
    for page in PAGES[1:]:
        assert client.get(page.format(**mine)).status_code == 200, page
        other = client.get(page.format(**theirs))
        assert other.status_code == 404, page
        assert "tenant <strong>a</strong>" in other.text
    # The page's scripts call /v1 with the cookie alone: it authenticates there too.
    assert [item["id"] for item in client.get("/v1/datasets").json()["items"]] == [mine["dataset"]]


def test_a_revoked_cookie_sends_the_user_to_sign_in_saying_why(
    client: TestClient, session: Session
) -> None:
    created = keys_service.create_key(session, tenant="a")
    session.commit()
    client.cookies.set(KEY_COOKIE, created.key)
    assert client.get("/").status_code == 200
    keys_service.revoke_key(session, created.record.id)
    session.commit()
    assert client.get("/").headers["location"] == "/ui/sign-in?next=%2F"
    form = client.get("/ui/sign-in?next=%2F")
    assert form.status_code == 200
    assert f"API key {created.record.id} was revoked at" in form.text
    assert cookie_header(form).startswith(f'{KEY_COOKIE}=""; ')  # cleared
    assert client.get("/v1/datasets").status_code == 401


def test_signing_in_again_with_a_valid_cookie_goes_straight_back(
    client: TestClient, session: Session
) -> None:
    client.cookies.set(KEY_COOKIE, make_key(session, "a"))
    response = client.get("/ui/sign-in?next=/ui/jobs/abc")
    assert response.status_code == 303
    assert response.headers["location"] == "/ui/jobs/abc"


def test_sign_out_clears_the_cookie(client: TestClient, session: Session) -> None:
    client.cookies.set(KEY_COOKIE, make_key(session, "a"))
    # A GET signs nobody out (a link or an image of another page could): it shows the button.
    page = client.get("/ui/sign-out")
    assert page.status_code == 200
    assert '<form id="sign-out-form" action="/ui/sign-out" method="post">' in page.text
    assert "set-cookie" not in page.headers
    response = client.post("/ui/sign-out", headers={"Origin": "http://testserver"})
    assert response.status_code == 303
    assert response.headers["location"] == "/ui/sign-in"
    cookie = cookie_header(response)
    assert cookie.startswith(f'{KEY_COOKIE}=""; ')
    assert "Max-Age=0" in cookie
    assert "Path=/" in cookie
    client.cookies.clear()  # what the browser does with Max-Age=0
    assert client.get("/").status_code == 303


def test_with_auth_off_there_is_no_signing_in(settings: Settings) -> None:
    with TestClient(create_app(settings), follow_redirects=False) as off:
        overview = off.get("/")
        assert overview.status_code == 200
        assert "Sign out" not in overview.text
        assert off.get("/ui/sign-in?next=/ui/jobs/x").headers["location"] == "/ui/jobs/x"
        assert off.post("/ui/sign-in", data={"key": "x"}).headers["location"] == "/"
