"""Signing in to the dashboard in a real headless Chromium against a real ``batchwise serve``
with auth on: sent to the sign-in page, a bad key refused in place, a good key lands on the
overview with the tenant named and an HttpOnly cookie the page's scripts cannot read but whose
``fetch`` calls to ``/v1`` carry (the upload form works), another tenant's data out of sight,
and signing out."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect

from service.db.migrate import upgrade
from tests.support.data import write_line_csv
from tests.support.databases import engine_on
from tests.support.tenants import make_keys

pytestmark = pytest.mark.browser


@pytest.fixture
def keys(tmp_path: Path) -> tuple[str, dict[str, str]]:
    """The database URL (SQLite, migrated here: the keys come first) and a key each for
    tenants a and b."""
    data_dir = tmp_path / "data"
    url = f"sqlite:///{(data_dir / 'batchwise.db').as_posix()}"
    upgrade(url)
    with engine_on(url) as engine:
        return url, make_keys(engine, "a", "b")


@pytest.fixture
def base_url(
    serve_process: Callable[..., AbstractContextManager[str]],
    tmp_path: Path,
    keys: tuple[str, dict[str, str]],
) -> Iterator[str]:
    url, _ = keys
    with serve_process(
        database_url=url, data_dir=tmp_path / "data", env={"BATCHWISE_AUTH": "on"}
    ) as served:
        yield served


def test_sign_in_use_the_dashboard_and_sign_out(
    browser: Browser,
    base_url: str,
    keys: tuple[str, dict[str, str]],
    tmp_path: Path,
    csp_watch: Callable[[Page], list[str]],
) -> None:
    _, key = keys
    # Tenant b's dataset, which a must never see.
    with httpx.Client(base_url=base_url, timeout=30) as client:
        theirs = client.post(
            "/v1/datasets",
            json={"name": "b-only", "X": [[0.0], [1.0], [2.0]], "y": [0.0, 1.0, 2.0]},
            headers={"Authorization": f"Bearer {key['b']}"},
        )
        assert theirs.status_code == 201, theirs.text

    context = browser.new_context()
    page = context.new_page()
    script_errors: list[str] = []
    page.on("pageerror", lambda error: script_errors.append(str(error)))
    csp_violations = csp_watch(page)

    page.goto(f"{base_url}/")
    assert page.url == f"{base_url}/ui/sign-in?next=%2F"
    expect(page.locator("h1")).to_have_text("Sign in")

    form = page.locator("#sign-in-form")
    form.locator("input[name=key]").fill("not-a-key")
    form.get_by_role("button", name="Sign in").click()
    expect(page.locator("#sign-in-error")).to_contain_text("not a Batchwise API key")
    assert urlsplit(page.url).path == "/ui/sign-in"

    form.locator("input[name=key]").fill(key["a"])
    form.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{base_url}/")
    expect(page.locator("h1")).to_have_text("Batchwise")
    expect(page.locator(".topbar .tenant")).to_have_text("tenant a")
    expect(page.get_by_text("b-only")).to_have_count(0)

    (cookie,) = context.cookies()
    assert (cookie["name"], cookie["value"]) == ("batchwise_key", key["a"])
    assert (cookie["httpOnly"], cookie["sameSite"], cookie["path"]) == (True, "Strict", "/")
    assert page.evaluate("document.cookie") == ""  # the page's scripts cannot read the key

    # The upload form posts to /v1 with fetch: the cookie is all it sends, and it is enough.
    upload = page.locator("#upload-form")
    upload.locator("input[name=file]").set_input_files(str(write_line_csv(tmp_path / "l.csv")))
    upload.locator("input[name=name]").fill("a-line")
    upload.get_by_role("button", name="Upload").click()
    page.wait_for_url(f"{base_url}/ui/datasets/*")
    expect(page.locator("h1")).to_have_text("a-line")

    # Signing out is a form's POST (a link could be followed by any page).
    page.locator("#sign-out").click()
    page.wait_for_url(f"{base_url}/ui/sign-in")
    assert context.cookies() == []
    page.goto(f"{base_url}/")
    assert page.url == f"{base_url}/ui/sign-in?next=%2F"
    assert script_errors == []
    assert csp_violations == []
    context.close()
