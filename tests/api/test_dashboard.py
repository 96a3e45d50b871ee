"""The dashboard's pages through the real app and a real database (both backends): what each
page shows, that user-chosen names reach it as text (never markup), the 404 page, local assets
only, and the formatting and form defaults it is built from. The browser flow is in
``test_dashboard_browser.py``."""

from __future__ import annotations

import re
from collections.abc import Iterator
from html import escape as html_escape
from html.parser import HTMLParser
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from service.api import create_app
from service.api.dashboard import router as dashboard_router
from service.api.dashboard.defaults import form_defaults, sweep_batch_sizes
from service.api.dashboard.render import duration, interval, number, percent
from service.config import Settings
from service.datasets.schemas import DatasetRead
from service.sweeps import orchestration
from service.sweeps.read_schemas import IntervalRead
from service.sweeps.repository import jobs_of
from tests.support.factories import run_like_a_worker, set_job
from tests.support.sweeps import finish_with_crossing

HOSTILE = '<script>alert("x")</script>'
HOSTILE_SHOWN = "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;"


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as client:
        yield client


def upload(client: TestClient, n_rows: int = 100, name: str = "line", **extra: Any) -> str:
    X, y = line_data(n_rows)
    response = client.post(
        "/v1/datasets", json={"name": name, "X": X.tolist(), "y": y.tolist(), **extra}
    )
    assert response.status_code == 201, response.text
    dataset_id: str = response.json()["id"]
    return dataset_id


def line_data(n_rows: int) -> tuple[np.ndarray, np.ndarray]:
    """X (n, 2) standard normal (seed 0); y = 3·x0 − 2·x1 + 1 + 0.1·noise."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((n_rows, 2))
    y = 3.0 * X[:, 0] - 2.0 * X[:, 1] + 1.0 + 0.1 * rng.standard_normal(n_rows)
    return X, y


def page(client: TestClient, url: str, status: int = 200) -> str:
    response = client.get(url)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    return response.text


class _Collect(HTMLParser):
    """Every tag's attributes, and the text of elements by id."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def tags(html: str) -> list[tuple[str, dict[str, str | None]]]:
    parser = _Collect()
    parser.feed(html)
    return parser.tags


def attribute_values(html: str, tag: str, name: str) -> list[str]:
    return [a[name] or "" for t, a in tags(html) if t == tag and name in a]


# --- formatting and defaults ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "digits", "shown"),
    [
        (None, 4, "—"),
        (float("nan"), 4, "—"),
        (float("inf"), 4, "—"),
        (12345, 4, "12,345"),
        (0.0, 4, "0"),
        (0.041274, 4, "0.04127"),
        (1234.56, 4, "1,235"),
        (2.5, 4, "2.500"),
        (999.96, 4, "1,000"),  # rounds up into the next decade: still 4 figures
        (0.001, 3, "0.00100"),
        (12_345_678.0, 4, "12,350,000"),
        (5.4712e6, 3, "5,470,000"),
        (2.5e12, 3, "2.50e+12"),
        (0.000123, 3, "1.23e-04"),
        (-3.14159, 3, "-3.14"),
        (True, 4, "True"),
    ],
)
def test_number_keeps_significant_figures(value: Any, digits: int, shown: str) -> None:
    assert number(value, digits) == shown


def test_duration_percent_and_interval() -> None:
    assert [duration(s) for s in (None, 0.4231, 7.25, 185.0, 7620.0)] == [
        "—",
        "0.42 s",
        "7.25 s",
        "3 min 05 s",
        "2 h 07 min",
    ]
    assert [percent(f) for f in (None, 0.452, 1.0)] == ["—", "45%", "100%"]
    assert interval(IntervalRead(low=21.456, high=None)) == "21.5 – ?"
    assert interval(None) == "—"


@pytest.mark.parametrize(
    ("train_rows", "sizes"),
    [
        (80, (8, 16, 32, 64)),
        (320, (8, 16, 32, 64, 128, 256)),
        (1000, (8, 32, 128, 512)),  # 7 powers fit: every other one
        (10**6, (8, 32, 128, 512, 2048)),  # capped at 4096
        (10, (1, 2, 4, 8)),
    ],
)
def test_sweep_batch_sizes_span_the_training_rows(train_rows: int, sizes: tuple[int, ...]) -> None:
    assert sweep_batch_sizes(train_rows) == sizes


def test_form_defaults_fit_the_dataset(client: TestClient) -> None:
    small = DatasetRead.model_validate(client.get(f"/v1/datasets/{upload(client, 20)}").json())
    defaults = form_defaults(small)
    assert (defaults.model, defaults.validation_split, defaults.train_rows) == ("linear", 0.0, 20)
    assert defaults.batch_size == 20

    X = np.arange(120.0).reshape(60, 2)
    response = client.post(
        "/v1/datasets", json={"X": X.tolist(), "y": [0, 1, 2] * 20, "name": "three"}
    )
    three = DatasetRead.model_validate(response.json())
    defaults = form_defaults(three)
    assert (defaults.model, defaults.validation_split, defaults.train_rows) == ("softmax", 0.2, 48)
    assert defaults.batch_size == 32


# --- pages ------------------------------------------------------------------------------------


def test_overview_of_an_empty_service_has_the_upload_form(client: TestClient) -> None:
    html = page(client, "/")
    forms = [a for t, a in tags(html) if t == "form"]
    assert forms == [
        {
            "id": "upload-form",
            "class": "api-form",
            "action": "/v1/datasets",
            "method": "post",
            "enctype": "multipart/form-data",
            "data-encoding": "multipart",
            "data-redirect": "/ui/datasets/{id}",
        }
    ]
    assert attribute_values(html, "input", "name") == ["file", "name", "target"]
    assert "No datasets yet" in html
    assert "No jobs yet" in html
    assert "No sweeps yet" in html


def test_pages_load_only_local_assets_that_the_service_serves(client: TestClient) -> None:
    html = page(client, "/")
    assets = attribute_values(html, "script", "src") + attribute_values(html, "link", "href")
    assert len(assets) == 3  # the script, the stylesheet, an empty favicon
    for url in assets:
        assert url.startswith(("/ui/static/", "data:")), url
        if url.startswith("/"):
            response = client.get(url)
            assert response.status_code == 200
            assert response.content
    css = client.get("/ui/static/dashboard.css")
    assert css.headers["content-type"].startswith("text/css")
    js = client.get("/ui/static/dashboard.js")
    assert "javascript" in js.headers["content-type"]
    # No page references another host: no scheme-qualified or protocol-relative URL.
    assert not re.search(r"""(src|href|action)=["'](https?:)?//""", html)


def test_a_hostile_dataset_name_shows_as_text_everywhere(client: TestClient) -> None:
    dataset_id = upload(client, name=HOSTILE, feature_names=[HOSTILE, "<b>x1</b>"])
    job = client.post(
        "/v1/jobs", json={"dataset_id": dataset_id, "name": HOSTILE, "tags": [HOSTILE]}
    ).json()
    for url in ("/", f"/ui/datasets/{dataset_id}", f"/ui/jobs/{job['id']}"):
        html = page(client, url)
        assert "<script>alert" not in html, url
        assert "<b>x1</b>" not in html, url
        assert HOSTILE_SHOWN in html, url
    assert "&lt;b&gt;x1&lt;/b&gt;" in page(client, f"/ui/datasets/{dataset_id}")


def test_the_404_page_for_unknown_ids_escapes_the_id(client: TestClient) -> None:
    hostile_id = '<img src=x onerror="alert(1)">'  # no "/": one path segment
    for kind in ("datasets", "jobs", "sweeps"):
        html = page(client, f"/ui/{kind}/{hostile_id}", status=404)
        assert "<h1>Not found</h1>" in html
        assert "<img src=x" not in html
        assert "&lt;img src=x onerror=&#34;alert(1)&#34;&gt;" in html
    html = page(client, "/ui/jobs/0000", status=404)
    assert "No job with id &#39;0000&#39;." in html


def test_the_dataset_page_shows_its_statistics_and_prefilled_forms(client: TestClient) -> None:
    dataset_id = upload(client, 100)
    dataset = client.get(f"/v1/datasets/{dataset_id}").json()
    html = page(client, f"/ui/datasets/{dataset_id}")
    for stat in dataset["stats"]:
        row = f"<td>{stat['name']}</td>" + "".join(
            f'\n        <td class="num">{number(stat[k])}</td>'
            for k in ("mean", "std", "min", "max")
        )
        assert row in html
    assert [a["id"] for t, a in tags(html) if t == "form" and a.get("class") == "api-form"] == [
        "job-form",
        "sweep-form",
    ]
    inputs = {a["name"]: a for t, a in tags(html) if t == "input" and a.get("name")}
    assert inputs["dataset_id"]["value"] == dataset_id
    assert inputs["batch_size"]["value"] == "32"
    assert inputs["validation_split"]["value"] == "0.2"
    # 100 rows, 20 held out: 80 training rows take batches up to 64.
    assert inputs["batch_sizes"]["value"] == "8, 16, 32, 64"
    assert inputs["lr_search.start"]["value"] == "0.01"
    assert inputs["target_fraction"]["value"] == "0.9"
    assert '<option value="linear" selected>linear</option>' in html


def test_the_dataset_page_lists_its_jobs_and_sweeps_only(client: TestClient) -> None:
    mine, other = upload(client, name="mine"), upload(client, name="other")
    job = client.post("/v1/jobs", json={"dataset_id": mine, "name": "my job"}).json()
    client.post("/v1/jobs", json={"dataset_id": other, "name": "their job"})
    sweep = client.post(
        "/v1/sweeps", json={"dataset_id": mine, "name": "my sweep", "batch_sizes": [8, 16]}
    ).json()
    client.post("/v1/sweeps", json={"dataset_id": other, "name": "theirs", "batch_sizes": [8, 16]})
    html = page(client, f"/ui/datasets/{mine}")
    assert f'<tr data-job-id="{job["id"]}" data-status="queued">' in html
    assert "my job" in html
    assert "their job" not in html
    assert f'<a href="/ui/sweeps/{sweep["id"]}">my sweep</a>' in html
    assert "theirs" not in html
    assert f'data-poll-jobs="/v1/jobs?limit=100&amp;dataset_id={mine}"' in html
    # The sweep's own jobs are on the sweep's page, not in the dataset's list of jobs.
    assert html.count("<tr data-job-id=") == 1
    sweep_page = page(client, f"/ui/sweeps/{sweep['id']}")
    for job_id in sweep["points"][0]["job_ids"] + sweep["points"][1]["job_ids"]:
        assert f'<a href="/ui/jobs/{job_id}">{job_id[:8]}</a>' in sweep_page
    overview = page(client, "/")
    assert overview.count("<tr data-job-id=") == 2
    assert overview.count("<tr data-sweep-id=") == 2


def test_the_overview_lists_datasets_jobs_and_sweeps_newest_first(client: TestClient) -> None:
    first, second = upload(client, name="first"), upload(client, name="second")
    job = client.post("/v1/jobs", json={"dataset_id": first, "batch_size": 16}).json()
    html = page(client, "/")
    assert html.index('href="/ui/datasets/' + second) < html.index('href="/ui/datasets/' + first)
    assert f'<a href="/ui/jobs/{job["id"]}">{job["id"][:8]}</a>' in html
    assert '<span class="status status-queued" data-field="status">queued</span>' in html
    assert '<progress max="1" value="0.0" data-field="progress">0%</progress>' in html
    assert '<td class="num">16</td>' in html


def test_a_queued_job_page_offers_cancel_and_waits_for_its_plot(client: TestClient) -> None:
    dataset_id = upload(client)
    job = client.post("/v1/jobs", json={"dataset_id": dataset_id, "epochs": 3}).json()
    html = page(client, f"/ui/jobs/{job['id']}")
    assert f'data-action="/v1/jobs/{job["id"]}/cancel"' in html
    assert f'data-live-job="{job["id"]}" data-status="queued" data-epoch="0"' in html
    (plot,) = [a for t, a in tags(html) if t == "img"]
    assert plot["data-plot-src"] == f"/v1/jobs/{job['id']}/plots/loss.svg"
    assert "hidden" in plot
    assert "src" not in plot
    assert "The plot appears when the first epoch has finished." in html

    cancelled = client.post(f"/v1/jobs/{job['id']}/cancel")
    assert cancelled.json()["status"] == "cancelled"
    html = page(client, f"/ui/jobs/{job['id']}")
    assert "data-action" not in html
    assert '<span class="status status-cancelled" data-field="status">cancelled</span>' in html


def test_a_finished_job_page_shows_its_figures_plot_and_config(
    client: TestClient, session: Session
) -> None:
    dataset_id = upload(client, 100)
    job = client.post(
        "/v1/jobs",
        json={
            "dataset_id": dataset_id,
            "epochs": 4,
            "batch_size": 16,
            "validation_split": 0.2,
            "noise_scale": True,
            "name": "batch 16",
        },
    ).json()
    records = run_like_a_worker(session, job["id"], *line_data(100))
    session.commit()
    read = client.get(f"/v1/jobs/{job['id']}").json()
    html = page(client, f"/ui/jobs/{job['id']}")

    assert '<span class="status status-succeeded" data-field="status">succeeded</span>' in html
    assert "data-action" not in html
    (plot,) = [a for t, a in tags(html) if t == "img"]
    assert plot["src"] == f"/v1/jobs/{job['id']}/plots/loss.svg?epoch=4"
    assert client.get(plot["src"] or "").headers["content-type"] == "image/svg+xml"
    assert f'<dd data-field="train_loss">{number(read["latest"]["train_loss"])}</dd>' in html
    assert f'<dd data-field="best_val_loss">{number(read["best"]["val_loss"])}</dd>' in html
    assert f"<dt>val R²</dt><dd>{number(records[-1].val_r2)}</dd>" in html
    assert f"<dd>{number(records[-1].total_steps)}</dd>" in html  # steps: 4 epochs × 5
    # Each epoch's wall time is its own: the job's training time is their sum.
    wall_time_s = sum(record.wall_time_s for record in records)
    assert f"<dt>training time (epochs)</dt><dd>{duration(wall_time_s)}</dd>" in html
    samples_per_s = records[-1].samples_seen / wall_time_s
    assert f"<dt>samples / s</dt><dd>{number(samples_per_s, 3)}</dd>" in html
    assert "<tr><th>batch_size</th><td><code>16</code></td></tr>" in html
    assert f'<a href="/v1/jobs/{job["id"]}/model">model (JSON)</a>' in html
    # The page shows the same batch-size advice as GET /v1/jobs/{id}.
    advice = read["batch_size_advice"]
    assert advice is not None
    assert 'id="job-advice"' in html
    assert html_escape(advice["message"]) in html


def test_a_failed_job_page_shows_its_error(client: TestClient, session: Session) -> None:
    dataset_id = upload(client)
    job = client.post("/v1/jobs", json={"dataset_id": dataset_id}).json()
    set_job(
        session,
        job["id"],
        status="failed",
        error_code="diverged",
        error_message=f"the loss is nan at epoch 2, step 3 {HOSTILE}",
    )
    session.commit()
    html = page(client, f"/ui/jobs/{job['id']}")
    assert f"<strong>diverged</strong>: the loss is nan at epoch 2, step 3 {HOSTILE_SHOWN}" in html


def test_a_sweep_page_compares_its_points_with_the_fit_and_recommendation(
    client: TestClient, session: Session
) -> None:
    dataset_id = upload(client, 200)
    sweep = client.post(
        "/v1/sweeps",
        json={
            "dataset_id": dataset_id,
            "name": HOSTILE,
            "base": {"epochs": 4},
            "batch_sizes": [8, 16, 32, 64, 128],
            "learning_rates": [0.01],
            "target_loss": 0.5,
        },
    ).json()
    running = page(client, f"/ui/sweeps/{sweep['id']}")
    assert f'data-live-sweep="{sweep["id"]}" data-status="running" data-done="0"' in running
    assert f'data-action="/v1/sweeps/{sweep["id"]}/cancel"' in running
    assert "Still running" in running
    assert "The plots appear when the first epochs have finished." in running
    assert not [a for t, a in tags(running) if t == "img"]

    # Steps to halve the loss follow S(B) = 12 (1 + 16 / B) (36 to 13.5 steps, all within the
    # 40 steps written): the fit must find B_noise = 16.
    for job in jobs_of(session, sweep["id"]):
        batch_size = job.config["batch_size"]
        finish_with_crossing(session, job, 12.0 * (1.0 + 16.0 / batch_size))
    orchestration.advance(session, sweep["id"])
    session.commit()
    read = client.get(f"/v1/sweeps/{sweep['id']}").json()
    assert read["status"] == "succeeded"
    html = page(client, f"/ui/sweeps/{sweep['id']}")

    assert HOSTILE_SHOWN in html
    assert "<script>alert" not in html
    assert f'data-status="succeeded" data-done="{len(read["points"])}"' in html
    assert "data-action" not in html
    assert "Still running" not in html
    for point in read["points"]:
        assert f'<td class="num"><strong>{number(point["batch_size"])}</strong></td>' in html
        assert f'<td class="num">{number(point["to_target"]["steps"], 3)}</td>' in html
        for job_id in point["job_ids"]:
            assert f'<a href="/ui/jobs/{job_id}">{job_id[:8]}</a>' in html
    fit = read["fit"]
    assert fit["b_noise"] == pytest.approx(16.0, rel=0.05)
    assert (
        "<tr><th>B_noise (critical batch)</th>"
        f'<td class="num">{number(fit["b_noise"], 3)}</td>'
        f'<td class="num">{interval(IntervalRead(**fit["b_noise_ci"]))}</td></tr>'
    ) in html
    recommendation = read["recommendation"]
    for choice in ("fastest", "knee"):
        reason = recommendation[choice]["reason"]
        assert reason.replace("'", "&#39;").replace('"', "&#34;") in html
    assert read["target"]["description"] in html
    curves, scaling = (a["src"] or "" for t, a in tags(html) if t == "img")
    done = len(read["points"])
    assert curves == f"/v1/sweeps/{sweep['id']}/plots/curves.svg?x=step&done={done}"
    assert scaling == f"/v1/sweeps/{sweep['id']}/plots/scaling.svg?done={done}"
    for src in (curves, scaling):
        image = client.get(src)
        assert image.status_code == 200, image.text
        assert image.headers["content-type"] == "image/svg+xml"


def test_a_sweep_without_a_fit_says_why(client: TestClient) -> None:
    dataset_id = upload(client)
    sweep = client.post(
        "/v1/sweeps", json={"dataset_id": dataset_id, "batch_sizes": [8, 16]}
    ).json()
    reason = client.get(f"/v1/sweeps/{sweep['id']}").json()["fit"]["reason"]
    html = page(client, f"/ui/sweeps/{sweep['id']}")
    assert f"No fit: {reason}" in html.replace("&#39;", "'")
    assert "No point has finished an epoch yet." in html or "<strong>8</strong>" in html


def test_dashboard_pages_stay_out_of_the_api_schema(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert not [path for path in paths if path == "/" or path.startswith("/ui")]


def test_the_router_serves_exactly_the_four_pages() -> None:
    assert {getattr(route, "path", "") for route in dashboard_router.routes} == {
        "/",
        "/ui/datasets/{dataset_id}",
        "/ui/jobs/{job_id}",
        "/ui/sweeps/{sweep_id}",
    }
