"""The probe page in a real headless Chromium against a real ``batchwise serve`` and real
``worker --burst`` processes: a probe opened while its branches wait in the queue refreshes
itself (no reload) to the critical batch per checkpoint and its plot; "Train with this warmup"
refuses a bad field inline, then starts a job that follows the probe's warmup; the source's job
page links to the probe — with every request on the service's own host."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import numpy as np
import pytest
from playwright.sync_api import Browser, Page, Request, expect

from tests.api.test_dashboard_browser import image_loaded, watch
from tests.support.processes import workers

pytestmark = pytest.mark.browser

FINISH_MS = 120_000  # generous: the machine may be shared; the branches take seconds


@dataclass(frozen=True)
class Service:
    url: str
    database_url: str
    data_dir: Path

    def run_queue(self) -> None:
        """Run every queued job with one ``worker --burst`` process, which exits when the
        queue is empty."""
        with workers(self.database_url, self.data_dir, 1, burst=True) as started:
            assert started[0].wait(timeout=FINISH_MS / 1000) == 0, started[0].output()


@pytest.fixture
def service(
    serve_process: Callable[..., AbstractContextManager[str]], tmp_path: Path
) -> Iterator[Service]:
    """A serve process without workers: jobs wait in the queue until ``run_queue``."""
    data_dir = tmp_path / "data"
    database_url = f"sqlite:///{(data_dir / 'batchwise.db').as_posix()}"
    with serve_process(database_url=database_url, data_dir=data_dir) as url:
        yield Service(url, database_url, data_dir)


def scales_data(n_rows: int = 800) -> tuple[np.ndarray, np.ndarray]:
    """y = Σ x_j / s_j + 1 + noise with feature scales 1 … 0.18 (ill-conditioned), seeded."""
    rng = np.random.default_rng(3)
    scales = np.array([1.0, 0.5, 0.25, 0.18])
    X = rng.standard_normal((n_rows, 4)) * scales
    y = (X / scales).sum(axis=1) + 1.0 + rng.standard_normal(n_rows)
    return X, y


def post(client: httpx.Client, path: str, body: dict[str, Any], status: int) -> dict[str, Any]:
    response = client.post(path, json=body)
    assert response.status_code == status, response.text
    answer: dict[str, Any] = response.json()
    return answer


def source_and_probe(service: Service) -> tuple[str, str, str]:
    """(dataset id, source job id, probe id): a constant batch-8 job keeping every checkpoint,
    run to the end, and a probe of it whose branches are queued, not run."""
    X, y = scales_data()
    with httpx.Client(base_url=service.url, timeout=30) as client:
        dataset = post(
            client, "/v1/datasets", {"name": "scales", "X": X.tolist(), "y": y.tolist()}, 201
        )
        source = post(
            client,
            "/v1/jobs",
            {
                "dataset_id": dataset["id"],
                "batch_size": 8,
                "learning_rate": 0.01,
                "epochs": 4,
                "noise_scale": True,
                "keep_checkpoints": "all",
                "name": "constant batch 8",
            },
            202,
        )
        service.run_queue()
        assert client.get(f"/v1/jobs/{source['id']}").json()["status"] == "succeeded"
        probe = post(
            client,
            "/v1/probes",
            {
                "job_id": source["id"],
                "name": "probe <b>not bold</b>",
                "at_epochs": [1, 2, 3],
                "multipliers": [1, 2, 4],
                "lr": "linear",
            },
            202,
        )
    return dataset["id"], source["id"], probe["id"]


def test_a_probe_page_follows_its_branches_and_trains_with_its_warmup(
    browser: Browser, service: Service, csp_watch: Callable[[Page], list[str]]
) -> None:
    dataset_id, source_id, probe_id = source_and_probe(service)
    page = browser.new_page(viewport={"width": 900, "height": 1100})
    watched = watch(page)
    csp_violations = csp_watch(page)
    # A job page reloads itself when its job finishes, which aborts a plot still loading there
    # (net::ERR_ABORTED): a navigation, not a failure. Any other failed request is one.
    failed: list[str] = []

    def on_failed(request: Request) -> None:
        if request.failure != "net::ERR_ABORTED":
            failed.append(f"{request.url}: {request.failure}")

    page.on("requestfailed", on_failed)

    page.goto(f"{service.url}/ui/probes/{probe_id}")
    expect(page.locator("h1")).to_have_text("probe <b>not bold</b>")  # text, not markup
    region = page.locator("#probe-region")
    expect(region.locator("[data-field=status]")).to_have_text("running")
    expect(region.locator("[data-field=probe-progress]")).to_have_text(
        "0 of 9 branch jobs finished"
    )
    expect(page.locator("table.checkpoints tbody tr[data-epoch]")).to_have_count(3)
    expect(page.locator("#warmup")).to_contain_text("offered once the probe has finished")
    expect(page.locator("#warmup-form")).to_have_count(0)
    page.evaluate("() => { window.notReloaded = true; }")

    service.run_queue()
    # The region swaps itself in as branches finish, without a reload, to the finished probe.
    expect(region.locator("[data-field=status]")).to_have_text("succeeded", timeout=FINISH_MS)
    assert page.evaluate("() => window.notReloaded === true")
    expect(page.locator("[data-field=probe-progress]")).to_have_text("9 of 9 branch jobs finished")
    rows = page.locator("table.checkpoints tbody tr[data-epoch]")
    expect(rows).to_have_count(3)
    for row in rows.all():
        critical = row.locator("[data-field=critical] strong").inner_text()
        assert critical in {"8", "16", "32"}, critical
        expect(row.locator("[data-field=bracket]")).to_contain_text(f"[{critical}, ")
        row.locator("details summary").click()
        expect(row.locator("table.branches tbody tr")).to_have_count(3)
    expect(page.locator("button[data-action]")).to_have_count(0)  # nothing left to cancel
    page.locator("#critical-plot").scroll_into_view_if_needed()
    page.wait_for_function(
        "() => { const i = document.getElementById('critical-plot');"
        " return i && i.complete && i.naturalWidth > 0; }"
    )
    assert image_loaded(page, "#critical-plot")
    assert watched.images[f"/v1/probes/{probe_id}/plots/critical.svg"] == 200

    # Train with this warmup: a bad field is refused inline, naming it; then the job starts.
    form = page.locator("#warmup-form")
    expect(form.locator("select[name=lr_scaling]")).to_have_value("linear")
    form.locator("input[name=epochs]").fill("200000")  # above the API's bound
    form.get_by_role("button", name="Train with this warmup").click()
    expect(form.locator(".form-status.error")).to_contain_text("epochs")
    expect(form.locator("input[name=epochs]")).to_have_attribute("aria-invalid", "true")
    form.locator("input[name=epochs]").fill("4")
    form.get_by_role("button", name="Train with this warmup").click()
    page.wait_for_url(f"{service.url}/ui/jobs/*")
    job_id = page.url.rsplit("/", 1)[1]
    expect(page.locator(f"#job-probes a[href='/ui/probes/{probe_id}']")).to_have_count(1)
    job = httpx.get(f"{service.url}/v1/jobs/{job_id}").json()
    schedule = job["config"]["batch_size_schedule"]
    assert schedule["kind"] == "warmup"
    assert schedule["probe_id"] == probe_id
    assert schedule["points"]
    assert schedule["points"][0][1] >= 8
    assert job["dataset_id"] == dataset_id
    assert job["config"]["learning_rate"] == 0.01
    assert job["config"]["lr_scaling"] == "linear"
    assert job["config"]["reference_batch_size"] == 8
    service.run_queue()
    expect(page.locator("#job-live [data-field=status]")).to_have_text(
        "succeeded", timeout=FINISH_MS
    )

    # The overview lists the probe; the source's job page too; a branch's page links to it by
    # its tag.
    page.goto(f"{service.url}/")
    overview_row = page.locator(f"tr[data-probe-id='{probe_id}']")
    expect(overview_row.locator("a").first).to_have_text("probe <b>not bold</b>")
    expect(overview_row.locator("[data-field=status]")).to_have_text("succeeded")
    page.goto(f"{service.url}/ui/jobs/{source_id}")
    page.locator(f"#job-probes a[href='/ui/probes/{probe_id}']").click()
    page.wait_for_url(f"{service.url}/ui/probes/{probe_id}")
    page.locator("table.checkpoints tbody tr[data-epoch] details summary").first.click()
    page.locator("table.branches a").first.click()
    page.wait_for_url(f"{service.url}/ui/jobs/*")
    expect(page.locator("h1")).to_contain_text(f"probe {probe_id[:8]}")
    expect(page.locator(f"h1 a.tag[href='/ui/probes/{probe_id}']")).to_have_count(1)

    assert watched.hosts == {urlsplit(service.url).netloc}
    assert failed == []
    assert watched.script_errors == []
    assert watched.errors == []
    assert csp_violations == []


def test_an_unknown_probe_is_the_404_page(browser: Browser, service: Service) -> None:
    page = browser.new_page()
    response = page.goto(f"{service.url}/ui/probes/no-such-probe")
    assert response is not None
    assert response.status == 404
    expect(page.locator("main")).to_contain_text("no-such-probe")
