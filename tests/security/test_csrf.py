"""Cross-origin writes with the dashboard's cookie are refused (issue 11, finding 5).

The rule (:mod:`service.api.same_origin`) through the real app, case by case; then the attack
itself in a real Chromium: signed in to a real ``batchwise serve``, a page served from another
port of the same host makes ``no-cors`` fetches that carry the ``SameSite=Strict`` cookie, to
create a dataset and cancel a job. Before the fix both succeeded (201, 200); now both are 403
and the database shows nothing created or cancelled, while the same request with a bearer key
works and the dashboard's own forms and buttons still do."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from playwright.sync_api import Browser, Page, expect
from sqlalchemy.orm import Session

from service.api import create_app
from service.api.auth import KEY_COOKIE
from service.config import Settings
from service.db.migrate import upgrade
from tests.support.data import write_line_csv
from tests.support.databases import engine_on
from tests.support.factories import make_key
from tests.support.tenants import make_keys

PROBLEM_JSON = "application/problem+json"
EVIL = "http://127.0.0.1:8742"
#: Generous: the machine may be shared; each step takes well under a second alone.
BROWSER_MS = 120_000


def assert_refused(response: Any, check: str) -> None:
    assert response.status_code == 403, response.text
    assert response.headers["content-type"] == PROBLEM_JSON
    problem = response.json()
    assert problem["type"] == "/problems/cross-origin-refused"
    assert "the same-origin check failed" in problem["detail"]
    assert check in problem["detail"]
    assert "Authorization: Bearer <key>" in problem["detail"]  # what to do instead


# --- the rule, through the real app ----------------------------------------------------------


@pytest.fixture
def key(session: Session) -> str:
    return make_key(session, "a")


@pytest.fixture
def client(settings: Settings, key: str) -> Iterator[TestClient]:
    """Auth on, the dashboard's cookie set, as a signed-in browser has it."""
    on = settings.model_copy(update={"auth": "on"})
    with TestClient(create_app(on), base_url="http://127.0.0.1:8000") as client:
        client.cookies.set(KEY_COOKIE, key)
        yield client


@pytest.fixture
def job_id(client: TestClient, key: str) -> str:
    bearer = {"Authorization": f"Bearer {key}"}
    X = [[float(i)] for i in range(40)]
    dataset = client.post(
        "/v1/datasets", json={"name": "d", "X": X, "y": list(range(40))}, headers=bearer
    )
    job = client.post("/v1/jobs", json={"dataset_id": dataset.json()["id"]}, headers=bearer)
    assert job.status_code == 202, job.text
    created: str = job.json()["id"]
    return created


def cancel(client: TestClient, job_id: str, **headers: str) -> Any:
    return client.post(f"/v1/jobs/{job_id}/cancel", headers=headers)


@pytest.mark.parametrize(
    ("headers", "check"),
    [
        ({"Origin": EVIL}, "its Origin 'http://127.0.0.1:8742' is not this service's origin"),
        ({"Origin": "http://127.0.0.1"}, "is not this service's origin 'http://127.0.0.1:8000'"),
        ({"Origin": "https://127.0.0.1:8000"}, "its Origin"),  # another scheme
        ({"Origin": "null"}, "its Origin 'null'"),  # a sandboxed frame, a data: URL
        ({"Referer": f"{EVIL}/attack.html"}, "its Referer is not a page of"),
        ({}, "neither an Origin nor a Referer"),
    ],
)
def test_a_cookie_write_not_from_here_is_refused(
    client: TestClient, job_id: str, headers: dict[str, str], check: str
) -> None:
    assert_refused(cancel(client, job_id, **headers), check)
    assert client.get(f"/v1/jobs/{job_id}").json()["status"] == "queued"


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "http://127.0.0.1:8000"},
        {"Origin": "HTTP://127.0.0.1:8000"},  # case does not matter
        {"Referer": "http://127.0.0.1:8000/ui/jobs/x"},
    ],
)
def test_a_cookie_write_from_this_origin_goes_on(
    client: TestClient, job_id: str, headers: dict[str, str]
) -> None:
    assert cancel(client, job_id, **headers).status_code == 200
    assert client.get(f"/v1/jobs/{job_id}").json()["status"] == "cancelled"


def test_a_bearer_write_goes_on_from_anywhere(client: TestClient, job_id: str, key: str) -> None:
    response = cancel(client, job_id, Origin=EVIL, Authorization=f"Bearer {key}")
    assert response.status_code == 200


def test_reads_are_not_checked(client: TestClient, job_id: str) -> None:
    assert client.get(f"/v1/jobs/{job_id}", headers={"Origin": EVIL}).status_code == 200


def test_a_write_without_cookie_or_origin_is_left_to_the_key_check(
    client: TestClient, job_id: str
) -> None:
    client.cookies.clear()
    assert cancel(client, job_id).status_code == 401  # curl without a key: not a browser


def test_the_dashboards_own_endpoints_are_guarded_too(
    client: TestClient, session: Session, key: str
) -> None:
    signed_out = client.post("/ui/sign-out", headers={"Origin": EVIL})
    assert_refused(signed_out, "its Origin")
    assert "set-cookie" not in signed_out.headers
    # Signing a visitor in with the attacker's own key (login CSRF).
    theirs = make_key(session, "attacker")
    forced = client.post("/ui/sign-in", data={"key": theirs}, headers={"Origin": EVIL})
    assert_refused(forced, "its Origin")
    assert "set-cookie" not in forced.headers
    own = client.post(
        "/ui/sign-out", headers={"Origin": "http://127.0.0.1:8000"}, follow_redirects=False
    )
    assert own.status_code == 303
    assert own.headers["set-cookie"].startswith(f'{KEY_COOKIE}=""; ')


def test_the_origin_is_the_one_the_request_reached(settings: Settings, key: str) -> None:
    """Behind TLS (uvicorn's scheme is https, from a trusted proxy's X-Forwarded-Proto) on
    the default port, under the Host the browser asked for."""
    on = settings.model_copy(update={"auth": "on"})
    with TestClient(create_app(on), base_url="https://batchwise.example") as client:
        client.cookies.set(KEY_COOKIE, key)
        for origin in ("https://batchwise.example", "https://batchwise.example:443"):
            created = client.post(
                "/v1/datasets",
                json={"name": "d", "X": [[0.0], [1.0]], "y": [0, 1]},
                headers={"Origin": origin},
            )
            assert created.status_code == 201, created.text
        plain = client.post("/v1/datasets", json={}, headers={"Origin": "http://batchwise.example"})
        assert_refused(plain, "not this service's origin 'https://batchwise.example'")
        # A proxy that does not forward the Host: the service sees another origin.
        lost = client.post(
            "/v1/datasets",
            json={},
            headers={"Origin": "https://batchwise.example", "Host": "10.0.0.5:8000"},
        )
        assert_refused(lost, "'https://10.0.0.5:8000'")


def test_with_auth_off_a_foreign_page_still_cannot_write(settings: Settings) -> None:
    """A page of any site could otherwise make the browser write to a local service."""
    with TestClient(create_app(settings)) as client:
        forged = client.post(
            "/v1/datasets",
            json={"name": "d", "X": [[0.0], [1.0]], "y": [0, 1]},
            headers={"Origin": "https://evil.example"},
        )
        assert_refused(forged, "its Origin")
        assert client.get("/v1/datasets").json()["items"] == []
        plain = client.post("/v1/datasets", json={"name": "d", "X": [[0.0], [1.0]], "y": [0, 1]})
        assert plain.status_code == 201  # curl, the client, the demo: no Origin, no cookie


# --- the attack, in a real browser -----------------------------------------------------------

#: The attacker's page: the requests the finding made, fired as soon as it loads.
ATTACK_PAGE = """<!doctype html>
<title>cute cats</title>
<script>
(async () => {
  const target = "%(target)s";
  const form = new FormData();
  form.append("file", new Blob(["x,y\\n0,0\\n1,1\\n2,2\\n3,3\\n"], {type: "text/csv"}), "d.csv");
  form.append("name", "forged");
  await fetch(target + "/v1/datasets",
              {method: "POST", mode: "no-cors", credentials: "include", body: form});
  await fetch(target + "/v1/jobs/%(job)s/cancel",
              {method: "POST", mode: "no-cors", credentials: "include"});
  document.title = "done";
})();
</script>
"""


@pytest.fixture
def keys(tmp_path: Path) -> tuple[str, str]:
    """The database URL (SQLite, migrated here: the key comes first) and a key of tenant a."""
    url = f"sqlite:///{(tmp_path / 'data' / 'batchwise.db').as_posix()}"
    upgrade(url)
    with engine_on(url) as engine:
        return url, make_keys(engine, "a")["a"]


@pytest.fixture
def base_url(
    serve_process: Callable[..., AbstractContextManager[str]],
    tmp_path: Path,
    keys: tuple[str, str],
) -> Iterator[str]:
    url, _ = keys
    with serve_process(
        database_url=url, data_dir=tmp_path / "data", env={"BATCHWISE_AUTH": "on"}
    ) as served:
        yield served


@pytest.fixture
def attacker() -> Iterator[Callable[[str], str]]:
    """A second HTTP server on another port of 127.0.0.1 (same site, another origin);
    ``attacker(html)`` serves ``html`` there and gives its URL."""
    pages: dict[str, bytes] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = pages.get(self.path, b"")
            self.send_response(200 if body else 404)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()

    def serve(html: str) -> str:
        pages["/attack.html"] = html.encode()
        return f"http://127.0.0.1:{server.server_address[1]}/attack.html"

    try:
        yield serve
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def sign_in(page: Page, base_url: str, key: str) -> None:
    page.goto(f"{base_url}/ui/sign-in")
    page.locator("#sign-in-form input[name=key]").fill(key)
    page.locator("#sign-in-form").get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{base_url}/", timeout=BROWSER_MS)


@pytest.mark.browser
def test_a_same_site_page_cannot_write_with_the_cookie_but_the_dashboard_can(
    browser: Browser,
    base_url: str,
    keys: tuple[str, str],
    attacker: Callable[[str], str],
    tmp_path: Path,
    csp_watch: Callable[[Page], list[str]],
) -> None:
    _, key = keys
    api = httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {key}"}, timeout=30)
    X = [[float(i)] for i in range(40)]
    dataset = api.post("/v1/datasets", json={"name": "mine", "X": X, "y": list(range(40))})
    jobs = [api.post("/v1/jobs", json={"dataset_id": dataset.json()["id"]}) for _ in range(3)]
    victim, by_bearer, by_button = (job.json()["id"] for job in jobs)

    context = browser.new_context()
    page = context.new_page()
    violations = csp_watch(page)
    sign_in(page, base_url, key)

    # The attack: the browser sends the cookie (same site) from the other origin.
    attack = context.new_page()
    answered: dict[str, int] = {}
    attack.on(
        "response",
        lambda response: (
            answered.__setitem__(
                f"{response.request.method} {response.url.removeprefix(base_url)}", response.status
            )
            if response.url.startswith(base_url)
            else None
        ),
    )
    attack.goto(attacker(ATTACK_PAGE % {"target": base_url, "job": victim}))
    expect(attack).to_have_title("done", timeout=BROWSER_MS)
    # 403, not 401: the cookie was sent and acted for the user; the origin check refused it.
    assert answered == {"POST /v1/datasets": 403, f"POST /v1/jobs/{victim}/cancel": 403}
    names = [item["name"] for item in api.get("/v1/datasets").json()["items"]]
    assert names == ["mine"]  # nothing created
    assert api.get(f"/v1/jobs/{victim}").json()["status"] == "queued"  # nothing cancelled

    # The same request with a bearer key, from that origin, goes on.
    cancelled = api.post(f"/v1/jobs/{by_bearer}/cancel", headers={"Origin": EVIL})
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "cancelled"

    # The dashboard's own form (fetch with the cookie) and button still work.
    page.goto(f"{base_url}/")
    upload = page.locator("#upload-form")
    upload.locator("input[name=file]").set_input_files(str(write_line_csv(tmp_path / "l.csv")))
    upload.locator("input[name=name]").fill("from-the-form")
    upload.get_by_role("button", name="Upload").click()
    page.wait_for_url(f"{base_url}/ui/datasets/*", timeout=BROWSER_MS)
    page.goto(f"{base_url}/ui/jobs/{by_button}")
    page.get_by_role("button", name="Cancel").click()
    expect(page.locator("[data-field=status]").first).to_have_text("cancelled", timeout=BROWSER_MS)
    assert api.get(f"/v1/jobs/{by_button}").json()["status"] == "cancelled"
    names = [item["name"] for item in api.get("/v1/datasets").json()["items"]]
    assert sorted(names) == ["from-the-form", "mine"]

    page.locator("#sign-out").click()
    page.wait_for_url(f"{base_url}/ui/sign-in", timeout=BROWSER_MS)
    assert context.cookies() == []
    assert violations == []
    context.close()
    api.close()
