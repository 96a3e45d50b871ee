"""The docs UI in a real headless Chromium: it renders every operation, with no request leaving
the service (no CDN), and "Try it out" calls the API: a health check, a file upload, a plot."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.sync_api import Browser, Locator, Page

from tests.support.databases import sqlite_url
from tests.support.processes import REPO_ROOT

pytestmark = pytest.mark.browser

LINE_CSV = REPO_ROOT / "examples" / "line.csv"


@pytest.fixture
def base_url(
    serve_process: Callable[..., AbstractContextManager[str]], tmp_path: Path
) -> Iterator[str]:
    data_dir = tmp_path / "data"
    with serve_process(
        database_url=sqlite_url(data_dir / "batchwise.db"),
        data_dir=data_dir,
        env={"BATCHWISE_WORKERS": "1"},  # trains the job whose plot "Try it out" shows
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


def operation(page: Page, method: str, path: str) -> Locator:
    """The docs UI's block for ``method path``, opened, with "Try it out" pressed."""
    block = page.locator(
        f".opblock-{method.lower()}",
        has=page.locator(".opblock-summary-path", has_text=re.compile(f"^{re.escape(path)}$")),
    )
    block.locator(".opblock-summary").click()
    block.get_by_role("button", name="Try it out").click()
    return block


def status_of(block: Locator) -> str:
    status = block.locator(".live-responses-table tbody .response-col_status").first
    status.wait_for(timeout=20_000)
    return status.inner_text().strip()


def test_docs_try_it_out_uploads_a_file_and_shows_a_plot(
    browser: Browser, base_url: str, csp_watch: Callable[[Page], list[str]]
) -> None:
    """The upload's binary ``file`` is a file picker, and a plot comes back as an image."""
    page = browser.new_page()
    csp_violations = csp_watch(page)
    page.goto(f"{base_url}/docs")
    upload = operation(page, "POST", "/v1/datasets")
    form = upload.locator(".opblock-section-request-body")
    form.locator('input[type="file"]').set_input_files(str(LINE_CSV))
    form.locator('tr[data-property-name="name"] input[type="text"]').fill("line")
    form.locator('tr[data-property-name="target"] input[type="text"]').fill("y")
    upload.get_by_role("button", name="Execute").click()
    answer = upload.locator(".live-responses-table .microlight").first
    assert status_of(upload) == "201", answer.inner_text()
    dataset = json.loads(answer.inner_text())
    assert (dataset["name"], dataset["n_rows"], dataset["target"]) == ("line", 400, "y")

    # The job itself goes by plain HTTP: the page under test is the plot's.
    body = {"dataset_id": dataset["id"], "epochs": 2, "batch_size": 50}
    job = httpx.post(f"{base_url}/v1/jobs", json=body).json()
    deadline = time.monotonic() + 60
    while httpx.get(f"{base_url}/v1/jobs/{job['id']}").json()["status"] != "succeeded":
        assert time.monotonic() < deadline, "the job did not finish"
        time.sleep(0.2)

    plot = operation(page, "GET", "/v1/jobs/{job_id}/plots/loss.png")
    plot.locator('input[placeholder="job_id"]').fill(job["id"])
    plot.get_by_role("button", name="Execute").click()
    assert status_of(plot) == "200"
    image = plot.locator(".live-responses-table img").first
    image.wait_for(timeout=10_000)
    image.evaluate("img => img.decode()")  # resolves once it is drawn; rejects if it cannot be
    assert image.evaluate("img => img.naturalWidth") == 1200
    assert csp_violations == []  # the policy lets the docs show the plot
