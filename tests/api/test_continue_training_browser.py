"""The job page's "Continue training" in a real headless Chromium against a real ``batchwise
serve`` with an embedded worker: pick a kept checkpoint, change the batch size and length,
see a refusal inline, then the branch run to its end from that checkpoint."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect

from tests.api.test_dashboard_browser import FINISH_MS, watch, write_csv
from tests.support.processes import wait_for

pytestmark = pytest.mark.browser


@pytest.fixture
def base_url(
    serve_process: Callable[..., AbstractContextManager[str]], tmp_path: Path
) -> Iterator[str]:
    data_dir = tmp_path / "data"
    with serve_process(
        database_url=f"sqlite:///{(data_dir / 'batchwise.db').as_posix()}",
        data_dir=data_dir,
        env={"BATCHWISE_WORKERS": "1"},
        # A loaded machine (other test runs beside this one) can take a while to start it.
        startup_timeout=120.0,
    ) as url:
        yield url


def _finished_source(base_url: str, csv: Path) -> tuple[str, str]:
    with httpx.Client(base_url=base_url, timeout=30) as http:
        with csv.open("rb") as file:
            dataset = http.post(
                "/v1/datasets", files={"file": file}, data={"name": "line", "target": "y"}
            ).json()
        body = {
            "dataset_id": dataset["id"],
            "optimizer": "momentum",
            "learning_rate": 0.02,
            "batch_size": 16,
            "epochs": 4,
            "keep_checkpoints": [2],
        }
        job = http.post("/v1/jobs", json=body).json()

        def done() -> bool:
            return bool(http.get(f"/v1/jobs/{job['id']}").json()["status"] == "succeeded")

        wait_for(done, timeout=FINISH_MS / 1000)
        return str(dataset["id"]), str(job["id"])


def test_continue_training_from_a_kept_checkpoint(
    browser: Browser, base_url: str, tmp_path: Path, csp_watch: Callable[[Page], list[str]]
) -> None:
    _, source = _finished_source(base_url, write_csv(tmp_path / "line.csv"))
    page = browser.new_page(viewport={"width": 800, "height": 1200})
    watched = watch(page)
    csp_violations = csp_watch(page)
    page.goto(f"{base_url}/ui/jobs/{source}")

    form = page.locator("#continue-form")
    epochs = form.locator("select[name='init_from.epoch'] option")
    expect(epochs).to_have_count(2)
    expect(epochs.nth(0)).to_contain_text("4 — 1,600 samples")
    expect(epochs.nth(0)).to_contain_text("(latest)")
    expect(epochs.nth(1)).to_contain_text("2 — 800 samples")
    form.locator("select[name='init_from.epoch']").select_option("2")
    form.locator("input[name=batch_size]").fill("32")
    # Not above the starting epoch: the API's 422 shows inline, on the field.
    form.locator("input[name=epochs]").fill("2")
    form.get_by_role("button", name="Continue training").click()
    expect(form.locator(".form-status.error")).to_contain_text("epochs")
    expect(form.locator("input[name=epochs]")).to_have_attribute("aria-invalid", "true")

    form.locator("input[name=epochs]").fill("6")
    form.get_by_role("button", name="Continue training").click()
    page.wait_for_url(lambda url: "/ui/jobs/" in url and not url.endswith(source))
    branch = page.url.rsplit("/", 1)[1]
    assert branch != source
    expect(page.locator("#job-live [data-field=status]")).to_have_text(
        "succeeded", timeout=FINISH_MS
    )

    with httpx.Client(base_url=base_url, timeout=30) as http:
        job = http.get(f"/v1/jobs/{branch}").json()
        history = http.get(f"/v1/jobs/{branch}/history").json()
    assert job["init_from"] == {"job_id": source, "epoch": 2, "reset_optimizer": False}
    assert job["config"]["optimizer"] == "momentum"  # the job's own settings underneath
    assert history["epoch"] == [3, 4, 5, 6]
    assert history["batch_size"] == [32, 32, 32, 32]
    assert history["samples_seen"][0] == 800 + 400
    assert watched.script_errors == []
    assert watched.errors == []
    assert csp_violations == []
    assert watched.hosts == {base_url.split("://", 1)[1]}
