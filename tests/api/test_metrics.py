"""GET /metrics: job figures read from the database at scrape time (exact values on both
databases), request counts and latencies by route template, the content types, and a
database that cannot be read."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from service.api import create_app
from service.api.observability import (
    JOB_DURATION_BUCKETS,
    UNMATCHED_ROUTE,
    JobsCollector,
    request_id_from,
)
from service.config import Settings
from service.db import session_factory
from tests.support.factories import T0, epoch_row, line_data, make_dataset, set_job, submit
from tests.support.problems import assert_problem

NOW = T0 + timedelta(minutes=10)

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    """Every sample of a Prometheus text page: (name, sorted labels) → value."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def requests(samples: Samples, route: str, status: str) -> float:
    """``batchwise_http_requests_total`` of GET ``route`` answered with ``status`` (a class)."""
    return value(samples, "batchwise_http_requests_total", method="GET", route=route, status=status)


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as client:
        yield client


def _jobs(session: Session, work_dir: Path) -> dict[str, str]:
    """Jobs in every state, with known times and speeds (see the test for the figures)."""
    X, y = line_data(40)
    dataset_id = make_dataset(session, work_dir, X, y).id
    ids = {name: submit(session, dataset_id, batch_size=8, epochs=3) for name in (
        "queued_a", "queued_b", "queued_c", "running_fast", "running_new", "running_dead",
        "ok_3s", "ok_100s", "ok_old", "failed_half_s", "cancelled_never_ran",
    )}  # fmt: skip
    for offset, name in ((60, "queued_a"), (200, "queued_b"), (400, "queued_c")):
        set_job(session, ids[name], created_at=T0 + timedelta(seconds=offset))
    live, dead = NOW + timedelta(seconds=30), NOW - timedelta(seconds=1)
    set_job(session, ids["running_fast"], status="running", epoch=2, lease_expires_at=live)
    set_job(session, ids["running_new"], status="running", epoch=0, lease_expires_at=live)
    set_job(session, ids["running_dead"], status="running", epoch=1, lease_expires_at=dead)
    losses = np.array([1.0, 0.5])
    session.add(epoch_row(ids["running_fast"], 1, losses, samples_per_s=9.0, wall_time_s=9.0))
    session.add(epoch_row(ids["running_fast"], 2, losses, samples_per_s=800.0, wall_time_s=0.25))
    session.add(epoch_row(ids["running_dead"], 1, losses, samples_per_s=5e4, wall_time_s=0.01))
    for name, status, started, seconds in (
        ("ok_3s", "succeeded", NOW - timedelta(minutes=5), 3.0),
        ("ok_100s", "succeeded", NOW - timedelta(minutes=30), 100.0),
        ("ok_old", "succeeded", NOW - timedelta(hours=3), 7.0),  # outside the 1 h window
        ("failed_half_s", "failed", NOW - timedelta(minutes=1), 0.5),
    ):
        finished = started + timedelta(seconds=seconds)
        set_job(session, ids[name], status=status, started_at=started, finished_at=finished)
    set_job(session, ids["cancelled_never_ran"], status="cancelled", finished_at=NOW)
    session.commit()
    return ids


def test_job_metrics_are_read_from_the_database(
    session: Session, settings: Settings, tmp_path: Path
) -> None:
    _jobs(session, tmp_path)
    registry = CollectorRegistry()
    registry.register(JobsCollector(session_factory(session.get_bind()), clock=lambda: NOW))
    samples = parse(generate_latest(registry).decode())

    assert value(samples, "batchwise_database_up") == 1
    counts = {s: value(samples, "batchwise_jobs", status=s) for s in (
        "queued", "running", "succeeded", "failed", "cancelled"
    )}  # fmt: skip
    assert counts == {"queued": 3, "running": 3, "succeeded": 3, "failed": 1, "cancelled": 1}
    assert value(samples, "batchwise_queue_depth") == 3
    # The oldest queued job was created at T0 + 60 s; NOW is T0 + 600 s.
    assert value(samples, "batchwise_queue_oldest_age_seconds") == 540.0
    # Running with a live lease: one at its epoch 2 (800 samples/s, 0.25 s → 4 epochs/s), one
    # with no epoch yet; the expired one (its worker gone) does not count.
    assert value(samples, "batchwise_running_jobs_samples_per_second") == 800.0
    assert value(samples, "batchwise_running_jobs_epochs_per_second") == 4.0

    def bucket(status: str, le: str) -> float:
        return value(samples, "batchwise_job_duration_seconds_bucket", status=status, le=le)

    # Finished in the last hour and claimed at least once: succeeded 3 s and 100 s, failed 0.5 s.
    assert [bucket("succeeded", str(float(b))) for b in JOB_DURATION_BUCKETS[:7]] == [
        0, 1, 1, 1, 1, 2, 2,  # le 1, 5, 15, 30, 60, 120, 300
    ]  # fmt: skip
    assert bucket("succeeded", "+Inf") == 2
    assert value(samples, "batchwise_job_duration_seconds_gsum", status="succeeded") == 103.0
    assert value(samples, "batchwise_job_duration_seconds_gcount", status="succeeded") == 2
    assert bucket("failed", "1.0") == 1
    assert value(samples, "batchwise_job_duration_seconds_gsum", status="failed") == 0.5
    assert bucket("cancelled", "+Inf") == 0


def test_empty_database_reports_zeros(engine: Engine) -> None:
    registry = CollectorRegistry()
    registry.register(JobsCollector(session_factory(engine), clock=lambda: NOW))
    samples = parse(generate_latest(registry).decode())
    assert value(samples, "batchwise_jobs", status="queued") == 0
    assert value(samples, "batchwise_queue_depth") == 0
    assert value(samples, "batchwise_queue_oldest_age_seconds") == 0
    assert value(samples, "batchwise_running_jobs_samples_per_second") == 0
    assert value(samples, "batchwise_job_duration_seconds_bucket", status="failed", le="+Inf") == 0


def test_requests_are_counted_by_route_template(client: TestClient) -> None:
    for path in ("/v1/jobs/one-id", "/v1/jobs/another-id", "/no/such/a", "/no/such/b"):
        assert client.get(path).status_code == 404
    assert client.get("/healthz").status_code == 200
    page = client.get("/metrics").text
    samples = parse(page)

    template = "/v1/jobs/{job_id}"
    assert requests(samples, template, "4xx") == 2
    assert requests(samples, UNMATCHED_ROUTE, "4xx") == 2
    assert requests(samples, "/healthz", "2xx") == 1
    latency = "batchwise_http_request_duration_seconds"
    assert value(samples, f"{latency}_count", method="GET", route=template) == 2
    assert value(samples, f"{latency}_bucket", method="GET", route=template, le="+Inf") == 2
    # Buckets are cumulative and every observation is in +Inf.
    buckets = sorted(
        (float(dict(labels)["le"]), v)
        for (name, labels), v in samples.items()
        if name == f"{latency}_bucket" and dict(labels)["route"] == template
    )
    assert [v for _, v in buckets] == sorted(v for _, v in buckets)
    # The raw paths never become labels.
    for raw in ("one-id", "another-id", "/no/such"):
        assert raw not in page
    # The scrape itself is counted by the next one.
    again = parse(client.get("/metrics").text)
    assert requests(again, "/metrics", "2xx") == 1


def test_metrics_content_types_and_openapi(client: TestClient) -> None:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    assert "# TYPE batchwise_jobs gauge" in response.text
    assert "# TYPE batchwise_job_duration_seconds histogram" in response.text

    openmetrics = client.get(
        "/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"}
    )
    assert openmetrics.headers["content-type"].startswith("application/openmetrics-text")
    assert "# TYPE batchwise_job_duration_seconds gaugehistogram" in openmetrics.text
    assert openmetrics.text.endswith("# EOF\n")

    operation = client.get("/openapi.json").json()["paths"]["/metrics"]["get"]
    ok = operation["responses"]["200"]["content"]
    assert list(ok) == ["text/plain"]
    assert "batchwise_jobs" in ok["text/plain"]["example"]


def test_unreadable_database_reports_down_and_still_serves_request_metrics(
    tmp_path: Path,
) -> None:
    # Never migrated: there is no jobs table to read.
    settings = Settings(
        database_url=f"sqlite:///{(tmp_path / 'blank.db').as_posix()}", data_dir=tmp_path
    )
    with TestClient(create_app(settings)) as client:
        client.get("/healthz")
        response = client.get("/metrics")
    assert response.status_code == 200
    samples = parse(response.text)
    assert value(samples, "batchwise_database_up") == 0
    assert not any(name == "batchwise_jobs" for name, _ in samples)
    assert requests(samples, "/healthz", "2xx") == 1


def test_request_id_is_echoed_when_well_formed_else_generated(client: TestClient) -> None:
    given = "req-42.abc:DEF_1"
    assert client.get("/healthz", headers={"X-Request-ID": given}).headers["x-request-id"] == given
    for bad in ("has space", "-leading-dash", "x" * 129, "ünïcode".encode()):
        echoed = client.get("/healthz", headers={"X-Request-ID": bad}).headers["x-request-id"]
        assert re.fullmatch(r"[0-9a-f]{32}", echoed), bad
    first = client.get("/healthz").headers["x-request-id"]
    second = client.get("/healthz").headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", first)
    assert first != second
    assert request_id_from("x" * 128) == "x" * 128


# --- the metrics token ------------------------------------------------------------------------

METRICS_TOKEN = "scrape-0123456789abcdef"


@pytest.fixture
def guarded(settings: Settings) -> Iterator[TestClient]:
    guarded_settings = settings.model_copy(update={"metrics_token": SecretStr(METRICS_TOKEN)})
    with TestClient(create_app(guarded_settings)) as client:
        yield client


@pytest.mark.parametrize(
    ("authorization", "invalid_token"),
    [
        (None, False),
        (f"Bearer {METRICS_TOKEN}x", True),
        (f"Bearer {METRICS_TOKEN[:-1]}", True),
        ("Bearer ", False),
        (f"Basic {METRICS_TOKEN}", True),
    ],
)
def test_with_a_token_set_metrics_without_it_is_a_401_with_a_bearer_challenge(
    guarded: TestClient, authorization: str | None, invalid_token: bool
) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    response = guarded.get("/metrics", headers=headers)
    body = assert_problem(response, 401)
    challenge = response.headers["WWW-Authenticate"]
    assert challenge.startswith("Bearer ")
    assert ('error="invalid_token"' in challenge) is invalid_token
    assert "BATCHWISE_METRICS_TOKEN" in body["detail"]
    assert METRICS_TOKEN not in response.text
    assert "batchwise_jobs" not in response.text


def test_with_a_token_set_metrics_with_it_answers_the_metrics(guarded: TestClient) -> None:
    response = guarded.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    assert response.status_code == 200, response.text
    samples = parse(response.text)
    assert value(samples, "batchwise_database_up") == 1.0
    # A refused scrape is counted too: the 401s show on the next page.
    guarded.get("/metrics")
    again = parse(
        guarded.get("/metrics", headers={"authorization": f"bearer {METRICS_TOKEN}"}).text
    )
    assert requests(again, "/metrics", "4xx") == 1.0


def test_without_a_token_metrics_stays_open(client: TestClient) -> None:
    assert client.get("/metrics").status_code == 200
    assert client.get("/metrics", headers={"Authorization": "Bearer anything"}).status_code == 200


def test_the_metrics_token_setting_is_read_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("BATCHWISE_METRICS_TOKEN", METRICS_TOKEN)
    token = Settings().metrics_token
    assert token is not None
    assert token.get_secret_value() == METRICS_TOKEN
    assert METRICS_TOKEN not in repr(Settings())
