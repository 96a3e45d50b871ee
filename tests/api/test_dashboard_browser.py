"""The dashboard in a real headless Chromium against a real ``batchwise serve`` with two
embedded workers: upload a CSV from the form, start a job and a sweep from the forms, watch
them finish live, see the plots — with every request on the service's own host."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest
from playwright.sync_api import Browser, Page, Response, expect

pytestmark = pytest.mark.browser

FINISH_MS = 120_000  # generous: the machine may be shared; the jobs themselves take seconds


@pytest.fixture
def base_url(
    serve_process: Callable[..., AbstractContextManager[str]], tmp_path: Path
) -> Iterator[str]:
    data_dir = tmp_path / "data"
    with serve_process(
        database_url=f"sqlite:///{(data_dir / 'batchwise.db').as_posix()}",
        data_dir=data_dir,
        env={"BATCHWISE_WORKERS": "2"},
    ) as url:
        yield url


@dataclass
class Watched:
    """What a page asked for: hosts, failed requests, error answers, script errors."""

    hosts: set[str] = field(default_factory=set)
    failed: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    script_errors: list[str] = field(default_factory=list)
    images: dict[str, int] = field(default_factory=dict)

    def on_response(self, response: Response) -> None:
        path = urlsplit(response.url).path
        if "/plots/" in path:
            self.images[path] = response.status
        # 4xx on POST are the inline-error paths the test drives on purpose.
        if response.status >= 400 and response.request.method == "GET":
            self.errors.append(f"{response.status} {response.url}")


def watch(page: Page) -> Watched:
    watched = Watched()
    page.on("request", lambda request: watched.hosts.add(urlsplit(request.url).netloc))
    page.on("requestfailed", lambda request: watched.failed.append(request.url))
    page.on("response", watched.on_response)
    page.on("pageerror", lambda error: watched.script_errors.append(str(error)))
    return watched


def write_csv(path: Path, n_rows: int = 400) -> Path:
    """y = 3·x0 − 2·x1 + 1 + 0.1·noise, seeded: a CSV with a header row."""
    rng = np.random.default_rng(7)
    X = rng.standard_normal((n_rows, 2))
    y = 3.0 * X[:, 0] - 2.0 * X[:, 1] + 1.0 + 0.1 * rng.standard_normal(n_rows)
    lines = ["x0,x1,y", *(f"{a:.6f},{b:.6f},{t:.6f}" for (a, b), t in zip(X, y, strict=True))]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def upload_from_the_form(page: Page, base_url: str, csv_path: Path, name: str) -> str:
    """Upload ``csv_path`` through the form on ``/``; the dataset page's URL."""
    page.goto(f"{base_url}/")
    form = page.locator("#upload-form")
    form.locator("input[name=file]").set_input_files(str(csv_path))
    form.locator("input[name=name]").fill(name)
    form.get_by_role("button", name="Upload").click()
    page.wait_for_url(f"{base_url}/ui/datasets/*")
    expect(page.locator("h1")).to_have_text(name)
    expect(page.locator("table.stats tbody tr")).to_have_count(2)
    return page.url


def image_loaded(page: Page, selector: str) -> bool:
    loaded: bool = page.locator(selector).evaluate(
        "img => img.complete && img.naturalWidth > 0 && !img.hidden"
    )
    return loaded


def test_upload_start_a_job_watch_it_finish_and_see_its_plot(
    browser: Browser, base_url: str, tmp_path: Path, csp_watch: Callable[[Page], list[str]]
) -> None:
    page = browser.new_page(viewport={"width": 800, "height": 1000})
    watched = watch(page)
    csp_violations = csp_watch(page)
    upload_from_the_form(page, base_url, write_csv(tmp_path / "line.csv"), "line <b>not bold</b>")
    expect(page.locator("h1 b")).to_have_count(0)  # the name is text, not markup

    form = page.locator("#job-form")
    # A batch larger than the 320 training rows: the API's 422 shows inline, naming the field.
    form.locator("input[name=batch_size]").fill("5000")
    form.get_by_role("button", name="Start the job").click()
    problem = form.locator(".form-status.error")
    expect(problem).to_contain_text("batch_size")
    expect(form.locator("input[name=batch_size]")).to_have_attribute("aria-invalid", "true")
    assert page.url.startswith(f"{base_url}/ui/datasets/")

    form.locator("input[name=batch_size]").fill("16")
    form.locator("input[name=epochs]").fill("6")
    form.locator("input[name=name]").fill("batch 16")
    form.get_by_role("button", name="Start the job").click()
    page.wait_for_url(f"{base_url}/ui/jobs/*")
    job_id = page.url.rsplit("/", 1)[1]

    # The page follows the job by itself: it ends on the finished page with the plot.
    status = page.locator("#job-live [data-field=status]")
    expect(status).to_have_text("succeeded", timeout=FINISH_MS)
    expect(page.locator("#job-live [data-field=epoch]")).to_have_text("6")
    expect(page.locator("#job-live progress")).to_have_attribute("value", "1.0")
    page.wait_for_function(
        "() => { const i = document.getElementById('loss-plot');"
        " return i && i.complete && i.naturalWidth > 0 && !i.hidden; }"
    )
    assert image_loaded(page, "#loss-plot")
    assert watched.images[f"/v1/jobs/{job_id}/plots/loss.svg"] == 200
    expect(page.locator("button[data-action]")).to_have_count(0)  # nothing left to cancel

    page.goto(f"{base_url}/")
    row = page.locator(f"tr[data-job-id='{job_id}']")
    expect(row.locator("[data-field=status]")).to_have_text("succeeded")
    expect(row.locator("a").first).to_have_text("batch 16")

    assert watched.hosts == {urlsplit(base_url).netloc}
    assert watched.failed == []
    assert watched.script_errors == []
    assert watched.errors == []
    assert csp_violations == []


def test_upload_start_a_sweep_from_the_form_watch_it_finish_and_see_the_plots(
    browser: Browser, base_url: str, tmp_path: Path, csp_watch: Callable[[Page], list[str]]
) -> None:
    page = browser.new_page(viewport={"width": 800, "height": 1000})
    watched = watch(page)
    csp_violations = csp_watch(page)
    upload_from_the_form(page, base_url, write_csv(tmp_path / "line.csv"), "line")

    form = page.locator("#sweep-form")
    expect(form.locator("input[name=batch_sizes]")).to_have_value("8, 16, 32, 64, 128, 256")
    form.locator("input[name=name]").fill("three batch sizes")
    form.locator("input[name=batch_sizes]").fill("8, 32, 128")
    form.locator("input[name='base.epochs']").fill("4")
    # One given rate per batch size: three jobs. The searched-rate fields are then left out.
    form.locator("select[data-switch=lr]").select_option("given")
    expect(form.locator("input[name='lr_search.start']")).to_be_hidden()
    form.locator("input[name=learning_rates]").fill("0.05")
    form.get_by_role("button", name="Start the sweep").click()
    page.wait_for_url(f"{base_url}/ui/sweeps/*")
    sweep_id = page.url.rsplit("/", 1)[1]

    # The region refreshes itself as points finish, until the sweep has succeeded.
    expect(page.locator("#sweep-region [data-field=status]")).to_have_text(
        "succeeded", timeout=FINISH_MS
    )
    rows = page.locator("table.points tbody tr")
    expect(rows).to_have_count(3)
    assert [row.locator("td").first.inner_text() for row in rows.all()] == ["8", "32", "128"]
    for row in rows.all():
        expect(row.locator("td.jobs-cell a")).to_have_count(1)
    expect(page.locator("#recommendation")).to_contain_text("Fastest to the target")
    expect(page.locator("#fit")).to_contain_text("Critical batch size")
    expect(page.locator("#noise-scale table tbody tr")).to_have_count(3)

    # Both sweep plots, loaded; the curves' x axis switches in place.
    expect(page.locator("#plots img")).to_have_count(2)
    for plot_id in ("curves-plot", "scaling-plot"):
        page.locator(f"#{plot_id}").scroll_into_view_if_needed()
        page.wait_for_function(
            "id => { const i = document.getElementById(id);"
            " return i.complete && i.naturalWidth > 0; }",
            arg=plot_id,
        )
    assert watched.images[f"/v1/sweeps/{sweep_id}/plots/scaling.svg"] == 200
    page.locator("a[data-plot-axis=samples]").click()
    expect(page.locator("#curves-plot")).to_have_attribute(
        "src", f"/v1/sweeps/{sweep_id}/plots/curves.svg?x=samples"
    )
    expect(page.locator("a[data-plot-axis=samples]")).to_have_attribute("aria-current", "")
    page.wait_for_function(
        "() => { const i = document.getElementById('curves-plot');"
        " return i.complete && i.naturalWidth > 0 && i.src.endsWith('x=samples'); }"
    )
    assert watched.images[f"/v1/sweeps/{sweep_id}/plots/curves.svg"] == 200

    # A point's job page links back to its sweep.
    rows.first.locator("td.jobs-cell a").click()
    page.wait_for_url(f"{base_url}/ui/jobs/*")
    expect(page.locator(f".crumbs a[href='/ui/sweeps/{sweep_id}']")).to_have_count(1)
    expect(page.locator("#job-live [data-field=status]")).to_have_text("succeeded")

    assert watched.hosts == {urlsplit(base_url).netloc}
    assert watched.failed == []
    assert watched.script_errors == []
    assert watched.errors == []
    assert csp_violations == []
