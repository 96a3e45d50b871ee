"""No route waits on the database on the event loop: every route of the app, called with auth
on, reaches the database only from threads (the thread pool), never from the thread running
the event loop. A wait there would stop every request of the process — ``/healthz`` too —
for as long as the database takes (a stalled PostgreSQL: the whole timeout).

The check is made where it cannot be missed: an engine event on each of the app's engines
(the checkout of a connection, every statement, every commit) records where any access was
made from a thread running an event loop. The routes are enumerated from the app, so a new
route without a request here fails the test.
"""

from __future__ import annotations

import asyncio
import inspect
import io
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from sqlalchemy import Engine, event
from sqlalchemy.orm import Session

from service.api import create_app
from service.config import Settings
from service.keys import DEFAULT_TENANT
from tests.support import sweeps
from tests.support.factories import line_data, make_key, trained_job

Send = Callable[[TestClient], Any]


def app_routes(app: FastAPI) -> Iterator[tuple[str, str, Any]]:
    """(method, path template, endpoint) of every route of ``app``, through included routers."""

    def walk(routes: list[Any], prefix: str) -> Iterator[tuple[str, str, Any]]:
        for route in routes:
            if hasattr(route, "original_router"):  # an included router
                yield from walk(route.original_router.routes, prefix + route.include_context.prefix)
            elif isinstance(route, APIRoute) or getattr(route, "methods", None):
                for method in sorted(route.methods - {"HEAD"}):
                    yield method, prefix + route.path, route.endpoint

    yield from walk(list(app.routes), "")


def on_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def watch(engine: Engine, seen: list[str]) -> None:
    """Record, in ``seen``, any access to ``engine`` from a thread running an event loop."""

    def check(*_args: Any, **_kwargs: Any) -> None:
        if on_event_loop():
            seen.append(
                "".join(
                    f"{frame.filename}:{frame.lineno} "
                    for frame in inspect.stack()[1:]
                    if "/service/" in frame.filename
                )
            )

    for name in ("checkout", "before_cursor_execute", "commit", "rollback"):
        event.listen(engine, name, check)


@pytest.fixture
def ids(session: Session, tmp_path: Path) -> dict[str, Any]:
    """A trained job (with its dataset), a sweep, a key: what the routes are called on."""
    X, y = line_data(200)
    job_id = trained_job(session, tmp_path, X, y, epochs=2, batch_size=32)
    other = sweeps.dataset(session, tmp_path)
    sweep = sweeps.create(session, other, batch_sizes=[8, 16], seeds=1)
    session.commit()
    return {
        # No probe: the job kept no checkpoint to branch (POST answers 422 after reading it),
        # and the probe routes answer 404 after looking this one up.
        "probe": "00000000-0000-0000-0000-000000000000",
        "job": job_id,
        "dataset": other,
        "sweep": sweep.id,
        "key": make_key(session, DEFAULT_TENANT),
        "row": X[0].tolist(),
    }


def requests_for(ids: dict[str, Any]) -> dict[tuple[str, str], Send]:
    """One request for each route (method, path template)."""
    job, dataset, sweep, probe = ids["job"], ids["dataset"], ids["sweep"], ids["probe"]
    npy = io.BytesIO()
    np.save(npy, np.column_stack(line_data(20)))
    return {
        ("GET", "/openapi.json"): lambda c: c.get("/openapi.json"),
        ("GET", "/metrics"): lambda c: c.get("/metrics"),
        ("GET", "/docs"): lambda c: c.get("/docs"),
        ("GET", "/docs/init.js"): lambda c: c.get("/docs/init.js"),
        ("GET", "/ui/sign-in"): lambda c: c.get("/ui/sign-in"),
        ("POST", "/ui/sign-in"): lambda c: c.post(
            "/ui/sign-in", data={"key": ids["key"], "next": "/"}, follow_redirects=False
        ),
        ("GET", "/ui/sign-out"): lambda c: c.get("/ui/sign-out"),
        ("POST", "/ui/sign-out"): lambda c: c.post("/ui/sign-out", follow_redirects=False),
        ("GET", "/"): lambda c: c.get("/"),
        ("GET", "/ui/datasets/{dataset_id}"): lambda c: c.get(f"/ui/datasets/{dataset}"),
        ("GET", "/ui/jobs/{job_id}"): lambda c: c.get(f"/ui/jobs/{job}"),
        ("GET", "/ui/sweeps/{sweep_id}"): lambda c: c.get(f"/ui/sweeps/{sweep}"),
        ("GET", "/ui/probes/{probe_id}"): lambda c: c.get(f"/ui/probes/{probe}"),
        ("GET", "/healthz"): lambda c: c.get("/healthz"),
        ("GET", "/readyz"): lambda c: c.get("/readyz"),
        ("POST", "/v1/datasets"): lambda c: c.post(
            "/v1/datasets", files={"file": ("d.npy", npy.getvalue())}
        ),
        ("POST", "/v1/datasets/inline"): lambda c: c.post(
            "/v1/datasets/inline", json={"X": [[0.0], [1.0]], "y": [0.0, 1.0]}
        ),
        ("GET", "/v1/datasets"): lambda c: c.get("/v1/datasets"),
        ("GET", "/v1/datasets/{dataset_id}"): lambda c: c.get(f"/v1/datasets/{dataset}"),
        ("DELETE", "/v1/datasets/{dataset_id}"): lambda c: c.delete(f"/v1/datasets/{dataset}"),
        ("POST", "/v1/jobs"): lambda c: c.post(
            "/v1/jobs", json={"dataset_id": dataset, "epochs": 1, "batch_size": 32}
        ),
        ("GET", "/v1/jobs"): lambda c: c.get("/v1/jobs"),
        ("GET", "/v1/jobs/{job_id}"): lambda c: c.get(f"/v1/jobs/{job}"),
        ("POST", "/v1/jobs/{job_id}/cancel"): lambda c: c.post(f"/v1/jobs/{job}/cancel"),
        ("DELETE", "/v1/jobs/{job_id}"): lambda c: c.delete(f"/v1/jobs/{job}"),
        ("GET", "/v1/jobs/{job_id}/history"): lambda c: c.get(f"/v1/jobs/{job}/history"),
        ("GET", "/v1/jobs/{job_id}/history.csv"): lambda c: c.get(f"/v1/jobs/{job}/history.csv"),
        ("GET", "/v1/jobs/{job_id}/checkpoints"): lambda c: c.get(f"/v1/jobs/{job}/checkpoints"),
        ("GET", "/v1/jobs/{job_id}/model"): lambda c: c.get(f"/v1/jobs/{job}/model"),
        ("GET", "/v1/jobs/{job_id}/model.npz"): lambda c: c.get(f"/v1/jobs/{job}/model.npz"),
        ("POST", "/v1/jobs/{job_id}/predict"): lambda c: c.post(
            f"/v1/jobs/{job}/predict", json={"X": [ids["row"]]}
        ),
        ("POST", "/v1/sweeps"): lambda c: c.post(
            "/v1/sweeps", json={"dataset_id": dataset, "batch_sizes": [8, 16], "seeds": 1}
        ),
        ("GET", "/v1/sweeps"): lambda c: c.get("/v1/sweeps"),
        ("GET", "/v1/sweeps/{sweep_id}"): lambda c: c.get(f"/v1/sweeps/{sweep}"),
        ("POST", "/v1/sweeps/{sweep_id}/cancel"): lambda c: c.post(f"/v1/sweeps/{sweep}/cancel"),
        ("POST", "/v1/probes"): lambda c: c.post(
            "/v1/probes", json={"job_id": job, "at_epochs": [2]}
        ),
        ("GET", "/v1/probes"): lambda c: c.get("/v1/probes"),
        ("GET", "/v1/probes/{probe_id}"): lambda c: c.get(f"/v1/probes/{probe}"),
        ("GET", "/v1/probes/{probe_id}/plots/critical.svg"): lambda c: c.get(
            f"/v1/probes/{probe}/plots/critical.svg"
        ),
        ("GET", "/v1/probes/{probe_id}/plots/critical.png"): lambda c: c.get(
            f"/v1/probes/{probe}/plots/critical.png"
        ),
        ("GET", "/v1/probes/{probe_id}/plots/critical.{fmt}"): lambda c: c.get(
            f"/v1/probes/{probe}/plots/critical.svg"
        ),
        ("POST", "/v1/probes/{probe_id}/cancel"): lambda c: c.post(f"/v1/probes/{probe}/cancel"),
        ("GET", "/v1/jobs/{job_id}/plots/loss.svg"): lambda c: c.get(
            f"/v1/jobs/{job}/plots/loss.svg"
        ),
        ("GET", "/v1/jobs/{job_id}/plots/loss.png"): lambda c: c.get(
            f"/v1/jobs/{job}/plots/loss.png"
        ),
        ("GET", "/v1/jobs/{job_id}/plots/loss.{fmt}"): lambda c: c.get(
            f"/v1/jobs/{job}/plots/loss.svg"
        ),
        ("GET", "/v1/sweeps/{sweep_id}/plots/curves.svg"): lambda c: c.get(
            f"/v1/sweeps/{sweep}/plots/curves.svg"
        ),
        ("GET", "/v1/sweeps/{sweep_id}/plots/curves.png"): lambda c: c.get(
            f"/v1/sweeps/{sweep}/plots/curves.png"
        ),
        ("GET", "/v1/sweeps/{sweep_id}/plots/curves.{fmt}"): lambda c: c.get(
            f"/v1/sweeps/{sweep}/plots/curves.svg"
        ),
        ("GET", "/v1/sweeps/{sweep_id}/plots/scaling.svg"): lambda c: c.get(
            f"/v1/sweeps/{sweep}/plots/scaling.svg"
        ),
        ("GET", "/v1/sweeps/{sweep_id}/plots/scaling.png"): lambda c: c.get(
            f"/v1/sweeps/{sweep}/plots/scaling.png"
        ),
        ("GET", "/v1/sweeps/{sweep_id}/plots/scaling.{fmt}"): lambda c: c.get(
            f"/v1/sweeps/{sweep}/plots/scaling.svg"
        ),
    }


def test_no_route_touches_the_database_on_the_event_loop(
    settings: Settings, ids: dict[str, Any]
) -> None:
    app = create_app(settings.model_copy(update={"auth": "on"}))
    seen: list[str] = []
    watch(app.state.engine, seen)
    watch(app.state.read_session_factory.kw["bind"], seen)
    requests = requests_for(ids)
    routes = {(method, path) for method, path, _ in app_routes(app)}
    assert routes == set(requests), "a route without a request here, or one gone"

    base = "http://testserver"
    headers = {"Authorization": f"Bearer {ids['key']}", "Origin": base}
    answered: dict[tuple[str, str], int] = {}
    with TestClient(app, base_url=base, headers=headers) as client:
        client.cookies.set("batchwise_key", ids["key"])  # the dashboard's pages
        # The deletes last: the other routes use what they delete.
        for route, send in sorted(requests.items(), key=lambda item: item[0][0] == "DELETE"):
            answered[route] = send(client).status_code
    assert seen == []
    # Each refusal came after the route's reads: a finished job cannot be cancelled, a dataset
    # with jobs cannot be deleted, a sweep with no results has no plots yet, a job that kept no
    # checkpoint cannot be probed, and there is no such probe.
    assert {route: status for route, status in answered.items() if status >= 400} == {
        ("POST", "/v1/jobs/{job_id}/cancel"): 409,
        ("DELETE", "/v1/datasets/{dataset_id}"): 409,
        ("GET", "/v1/sweeps/{sweep_id}/plots/curves.{fmt}"): 409,
        ("GET", "/v1/sweeps/{sweep_id}/plots/curves.svg"): 409,
        ("GET", "/v1/sweeps/{sweep_id}/plots/curves.png"): 409,
        ("GET", "/v1/sweeps/{sweep_id}/plots/scaling.{fmt}"): 409,
        ("GET", "/v1/sweeps/{sweep_id}/plots/scaling.svg"): 409,
        ("GET", "/v1/sweeps/{sweep_id}/plots/scaling.png"): 409,
        ("POST", "/v1/probes"): 422,
        ("GET", "/v1/probes/{probe_id}"): 404,
        ("POST", "/v1/probes/{probe_id}/cancel"): 404,
        ("GET", "/v1/probes/{probe_id}/plots/critical.{fmt}"): 404,
        ("GET", "/v1/probes/{probe_id}/plots/critical.svg"): 404,
        ("GET", "/v1/probes/{probe_id}/plots/critical.png"): 404,
        ("GET", "/ui/probes/{probe_id}"): 404,
    }
