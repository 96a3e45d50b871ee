"""The docs UI in a real headless Chromium: it renders every operation, with no request leaving
the service (no CDN), and "Try it out" calls the API."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Browser, Page

pytestmark = pytest.mark.browser


@pytest.fixture
def base_url(
    serve_process: Callable[..., AbstractContextManager[str]], tmp_path: Path
) -> Iterator[str]:
    data_dir = tmp_path / "data"
    with serve_process(
        database_url=f"sqlite:///{(data_dir / 'batchwise.db').as_posix()}", data_dir=data_dir
    ) as url:
        yield url


def test_docs_lists_operations_from_local_assets_only(
    browser: Browser, base_url: str, csp_watch: Callable[[Page], list[str]]
) -> None:
    page = browser.new_page()
    csp_violations = csp_watch(page)
    requested_hosts: set[str] = set()
    page.on("request", lambda request: requested_hosts.add(urlsplit(request.url).netloc))
    failed: list[str] = []
    page.on("requestfailed", lambda request: failed.append(request.url))

    page.goto(f"{base_url}/docs")
    page.wait_for_selector(".opblock-summary", timeout=20_000)

    operations = {
        " ".join(text.split())
        for text in page.locator(".opblock-summary-method, .opblock-summary-path").all_inner_texts()
    }
    for expected in ("POST", "GET", "DELETE", "/v1/datasets", "/v1/datasets/{dataset_id}"):
        assert expected in operations, f"{expected} not rendered; saw {sorted(operations)}"
    assert requested_hosts == {urlsplit(base_url).netloc}
    assert failed == []
    assert csp_violations == []  # the page's Content-Security-Policy lets Swagger UI run


def test_docs_try_it_out_calls_the_api(
    browser: Browser, base_url: str, csp_watch: Callable[[Page], list[str]]
) -> None:
    page = browser.new_page()
    csp_violations = csp_watch(page)
    page.goto(f"{base_url}/docs")
    health = page.locator(
        ".opblock", has=page.locator(".opblock-summary-path", has_text="/healthz")
    )
    health.locator(".opblock-summary").click()
    health.get_by_role("button", name="Try it out").click()
    health.get_by_role("button", name="Execute").click()

    response = health.locator(".live-responses-table tbody .response-col_status").first
    response.wait_for(timeout=10_000)
    assert response.inner_text().strip() == "200"
    assert (
        '"status": "ok"' in health.locator(".live-responses-table .microlight").first.inner_text()
    )
    assert csp_violations == []
