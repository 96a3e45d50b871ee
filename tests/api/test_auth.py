"""API keys and tenants over HTTP, through the real app and a real database (both backends).

Every ``/v1`` route is enumerated from the app itself, so a route added later is checked too
(and this file fails until it says how to call it): without a key, with a revoked, unknown or
malformed one → 401 problem+json with ``WWW-Authenticate``; with another tenant's key, every
route naming an object answers exactly the 404 of a missing id; lists never show another
tenant's objects. The keys themselves (format, hash, checking) are tested in
``tests/keys/test_service.py``.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from fastapi.routing import APIRoute, iter_route_contexts
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from service.api import create_app
from service.api.auth import KEY_COOKIE
from service.config import Settings
from service.db.tables import Dataset, Job, ProbeBranch, Sweep
from service.keys import DEFAULT_TENANT
from service.keys import service as keys_service
from service.sweeps.repository import jobs_of
from service.worker.loop import EXIT_OK, run_worker
from service.worker.signals import StopFlag
from tests.support.factories import make_key, run_like_a_worker
from tests.support.sweeps import finish_with_crossing

PROBLEM_JSON = "application/problem+json"
CHALLENGE = 'Bearer realm="batchwise"'
INVALID_TOKEN = 'Bearer realm="batchwise", error="invalid_token"'
#: Every route under /v1 today; the enumeration must find exactly these.
V1_ROUTE_COUNT = 36
#: Of which documented: all but the four plots' ``.{fmt}`` forms.
V1_OPERATION_COUNT = 32


def line_data(n_rows: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """X (n, 2) standard normal (seed 0); y = 3·x0 − 2·x1 + 1 + 0.1·noise."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((n_rows, 2))
    y = 3.0 * X[:, 0] - 2.0 * X[:, 1] + 1.0 + 0.1 * rng.standard_normal(n_rows)
    return X, y


def inline_dataset(name: str = "line") -> dict[str, Any]:
    X, y = line_data()
    return {"name": name, "X": X.tolist(), "y": y.tolist()}


def secret_of(key: str) -> str:
    """The secret part of ``bw_<36-character id>_<secret>`` (it may hold ``_`` itself)."""
    return key[len("bw_") + 36 + 1 :]


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def auth_settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"auth": "on"})


@pytest.fixture
def client(auth_settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(auth_settings)) as client:
        yield client


@dataclass(frozen=True)
class Owned:
    """Tenant A's objects: a dataset, a succeeded job on it (history, model, plots) and a
    succeeded sweep with its three points, a running probe of another job."""

    dataset: str
    job: str
    sweep: str
    probe: str
    probe_source: str


@pytest.fixture
def key_a(session: Session) -> str:
    return make_key(session, "tenant-a")


@pytest.fixture
def key_b(session: Session) -> str:
    return make_key(session, "tenant-b")


@pytest.fixture
def owned(client: TestClient, session: Session, auth_settings: Settings, key_a: str) -> Owned:
    """Tenant A's objects, made through the API with A's key; the workers' writes are stood in
    for by rows written through the tables, except for the probe's source, which a real worker
    runs (a probe branches from checkpoints it kept)."""
    headers = bearer(key_a)
    created = client.post("/v1/datasets", json=inline_dataset("a-line"), headers=headers)
    assert created.status_code == 201, created.text
    dataset_id = created.json()["id"]
    job = client.post(
        "/v1/jobs", json={"dataset_id": dataset_id, "epochs": 2, "batch_size": 16}, headers=headers
    )
    assert job.status_code == 202, job.text
    run_like_a_worker(session, job.json()["id"], *line_data())
    session.commit()  # before the next request: SQLite has one writer at a time
    source = client.post(
        "/v1/jobs",
        json={"dataset_id": dataset_id, "epochs": 2, "batch_size": 16, "keep_checkpoints": [2]},
        headers=headers,
    )
    assert source.status_code == 202, source.text
    assert run_worker(auth_settings, stop=StopFlag(), burst=True) == EXIT_OK
    sweep = client.post(
        "/v1/sweeps",
        json={
            "dataset_id": dataset_id,
            "batch_sizes": [8, 16, 32],
            "learning_rates": [0.05],
            "base": {"epochs": 4},
            "target_loss": 0.5,
        },
        headers=headers,
    )
    assert sweep.status_code == 202, sweep.text
    for point in jobs_of(session, sweep.json()["id"]):
        finish_with_crossing(session, point, 12.0 * (1.0 + 16.0 / point.config["batch_size"]))
    session.commit()
    probe = client.post(
        "/v1/probes",
        json={"job_id": source.json()["id"], "at_epochs": [2], "multipliers": [1, 2], "lr": "sqrt"},
        headers=headers,
    )
    assert probe.status_code == 202, probe.text
    return Owned(
        dataset=dataset_id,
        job=job.json()["id"],
        sweep=sweep.json()["id"],
        probe=probe.json()["id"],
        probe_source=source.json()["id"],
    )


# --- the routes, from the app ------------------------------------------------------------------


def v1_routes(settings: Settings) -> list[tuple[str, str]]:
    """(method, path template) of every route under /v1, as the app has them (included
    routers resolved to their full paths)."""
    contexts = [
        context
        for context in iter_route_contexts(create_app(settings).routes)
        if (context.path or "").startswith("/v1")
    ]
    # Anything but an API route there (a mount, a bare Starlette route) would escape this file.
    assert all(isinstance(context.original_route, APIRoute) for context in contexts)
    return sorted(
        (method, context.path or "") for context in contexts for method in context.methods or ()
    )


@dataclass(frozen=True)
class Call:
    url: str
    body: dict[str, Any] | None = None
    names_object: bool = True  # the URL or the body names a dataset, job or sweep


def calls(dataset: str, job: str, sweep: str, probe: str) -> dict[tuple[str, str], Call]:
    """How to call every /v1 route on these ids: a valid request in every other respect."""
    return {
        ("POST", "/v1/datasets"): Call("/v1/datasets", inline_dataset(), names_object=False),
        ("POST", "/v1/datasets/inline"): Call(
            "/v1/datasets/inline", inline_dataset(), names_object=False
        ),
        ("GET", "/v1/datasets"): Call("/v1/datasets", names_object=False),
        ("GET", "/v1/datasets/{dataset_id}"): Call(f"/v1/datasets/{dataset}"),
        ("DELETE", "/v1/datasets/{dataset_id}"): Call(f"/v1/datasets/{dataset}"),
        ("POST", "/v1/jobs"): Call("/v1/jobs", {"dataset_id": dataset, "epochs": 1}),
        ("GET", "/v1/jobs"): Call("/v1/jobs", names_object=False),
        ("GET", "/v1/jobs/{job_id}"): Call(f"/v1/jobs/{job}"),
        ("DELETE", "/v1/jobs/{job_id}"): Call(f"/v1/jobs/{job}"),
        ("POST", "/v1/jobs/{job_id}/cancel"): Call(f"/v1/jobs/{job}/cancel"),
        ("GET", "/v1/jobs/{job_id}/history"): Call(f"/v1/jobs/{job}/history"),
        ("GET", "/v1/jobs/{job_id}/history.csv"): Call(f"/v1/jobs/{job}/history.csv"),
        ("GET", "/v1/jobs/{job_id}/model"): Call(f"/v1/jobs/{job}/model"),
        ("GET", "/v1/jobs/{job_id}/model.npz"): Call(f"/v1/jobs/{job}/model.npz"),
        ("POST", "/v1/jobs/{job_id}/predict"): Call(f"/v1/jobs/{job}/predict", {"X": [[0.0, 1.0]]}),
        ("GET", "/v1/jobs/{job_id}/plots/loss.{fmt}"): Call(f"/v1/jobs/{job}/plots/loss.svg"),
        ("GET", "/v1/jobs/{job_id}/plots/loss.svg"): Call(f"/v1/jobs/{job}/plots/loss.svg"),
        ("GET", "/v1/jobs/{job_id}/plots/loss.png"): Call(f"/v1/jobs/{job}/plots/loss.png"),
        ("POST", "/v1/sweeps"): Call(
            "/v1/sweeps",
            {"dataset_id": dataset, "batch_sizes": [8, 16], "learning_rates": [0.05]},
        ),
        ("GET", "/v1/sweeps"): Call("/v1/sweeps", names_object=False),
        ("GET", "/v1/sweeps/{sweep_id}"): Call(f"/v1/sweeps/{sweep}"),
        ("POST", "/v1/sweeps/{sweep_id}/cancel"): Call(f"/v1/sweeps/{sweep}/cancel"),
        ("GET", "/v1/sweeps/{sweep_id}/plots/curves.svg"): Call(
            f"/v1/sweeps/{sweep}/plots/curves.svg"
        ),
        ("GET", "/v1/sweeps/{sweep_id}/plots/curves.png"): Call(
            f"/v1/sweeps/{sweep}/plots/curves.png"
        ),
        ("GET", "/v1/sweeps/{sweep_id}/plots/curves.{fmt}"): Call(
            f"/v1/sweeps/{sweep}/plots/curves.svg"
        ),
        ("GET", "/v1/sweeps/{sweep_id}/plots/scaling.svg"): Call(
            f"/v1/sweeps/{sweep}/plots/scaling.svg"
        ),
        ("GET", "/v1/sweeps/{sweep_id}/plots/scaling.png"): Call(
            f"/v1/sweeps/{sweep}/plots/scaling.png"
        ),
        ("GET", "/v1/sweeps/{sweep_id}/plots/scaling.{fmt}"): Call(
            f"/v1/sweeps/{sweep}/plots/scaling.png"
        ),
        ("GET", "/v1/jobs/{job_id}/checkpoints"): Call(f"/v1/jobs/{job}/checkpoints"),
        ("POST", "/v1/probes"): Call(
            "/v1/probes", {"job_id": job, "at_epochs": [2], "multipliers": [1, 2], "lr": "sqrt"}
        ),
        ("GET", "/v1/probes"): Call("/v1/probes", names_object=False),
        ("GET", "/v1/probes/{probe_id}"): Call(f"/v1/probes/{probe}"),
        ("POST", "/v1/probes/{probe_id}/cancel"): Call(f"/v1/probes/{probe}/cancel"),
        ("GET", "/v1/probes/{probe_id}/plots/critical.svg"): Call(
            f"/v1/probes/{probe}/plots/critical.svg"
        ),
        ("GET", "/v1/probes/{probe_id}/plots/critical.png"): Call(
            f"/v1/probes/{probe}/plots/critical.png"
        ),
        ("GET", "/v1/probes/{probe_id}/plots/critical.{fmt}"): Call(
            f"/v1/probes/{probe}/plots/critical.svg"
        ),
    }


def missing_ids() -> tuple[str, str, str, str]:
    return str(uuid.uuid4()), str(uuid.uuid4()), str(uuid.uuid4()), str(uuid.uuid4())


def send(client: TestClient, method: str, call: Call, headers: dict[str, str]) -> Any:
    return client.request(method, call.url, json=call.body, headers=headers)


def assert_unauthorized(response: Any, *, challenge: str, detail_has: str) -> dict[str, Any]:
    assert response.status_code == 401, response.text
    assert response.headers["content-type"] == PROBLEM_JSON
    assert response.headers["www-authenticate"] == challenge
    body: dict[str, Any] = response.json()
    assert body["type"] == "/problems/unauthorized"
    assert body["title"] == "Unauthorized"
    assert body["status"] == 401
    assert detail_has in body["detail"], body["detail"]
    return body


def test_every_v1_route_is_known_and_counted(auth_settings: Settings) -> None:
    routes = v1_routes(auth_settings)
    assert len(routes) == V1_ROUTE_COUNT
    assert set(routes) == set(calls(*missing_ids()))


# --- no key, bad keys: 401 on every route ------------------------------------------------------


def test_every_v1_route_without_a_key_is_401(
    client: TestClient, auth_settings: Settings, session: Session
) -> None:
    table = calls(*missing_ids())
    for method, path in v1_routes(auth_settings):
        response = send(client, method, table[(method, path)], headers={})
        body = assert_unauthorized(response, challenge=CHALLENGE, detail_has="No API key")
        assert body["instance"] == table[(method, path)].url
    # Nothing was created by the refused POSTs.
    assert session.scalars(select(Dataset)).all() == []


def test_a_keyless_request_is_401_before_its_body_is_read(
    client: TestClient, auth_settings: Settings, key_a: str
) -> None:
    """Authentication comes first: malformed JSON, or a body over the request limit, from a
    client with no key or a bad key gets the 401 (and the connection closed), not a 422/413."""
    for method, path in v1_routes(auth_settings):
        if method != "POST":
            continue
        url = calls(*missing_ids())[(method, path)].url
        for headers in ({}, bearer(key_a + "x")):
            response = client.request(
                method,
                url,
                content=b"{not json",
                headers=headers | {"Content-Type": "application/json"},
            )
            assert response.status_code == 401, (url, response.text)
            assert response.headers["connection"] == "close"
    # With the key, the same body is the client's own mistake: 422, or 413 on the upload.
    response = client.post(
        "/v1/jobs",
        content=b"{not json",
        headers=bearer(key_a) | {"Content-Type": "application/json"},
    )
    assert response.status_code == 422


def test_a_revoked_key_is_401_on_every_route_saying_when(
    client: TestClient, auth_settings: Settings, session: Session, key_a: str
) -> None:
    assert client.get("/v1/datasets", headers=bearer(key_a)).status_code == 200
    key_id = keys_service.key_id_of(key_a)
    assert key_id is not None
    revoked, _ = keys_service.revoke_key(session, key_id)
    session.commit()
    assert revoked.revoked_at is not None
    when = revoked.revoked_at.strftime("%Y-%m-%d %H:%M:%S UTC")
    table = calls(*missing_ids())
    for method, path in v1_routes(auth_settings):
        body = assert_unauthorized(
            send(client, method, table[(method, path)], headers=bearer(key_a)),
            challenge=INVALID_TOKEN,
            detail_has=f"API key {key_id} was revoked at {when}",
        )
        assert secret_of(key_a) not in json.dumps(body)  # the secret is never echoed


@pytest.mark.parametrize(
    ("authorization", "detail"),
    [
        ("Basic dXNlcjpwYXNz", "Malformed Authorization header (the scheme is 'Basic', not"),
        ("Bearer", "Malformed Authorization header (no key after 'Bearer'): expected"),
        ("Bearer ", "Malformed Authorization header (no key after 'Bearer'): expected"),
        ("Bearer two words", "(more than one word after 'Bearer'): expected 'Bearer <key>'"),
        ("bw_0000", "Malformed Authorization header (no scheme): expected 'Bearer <key>'"),
    ],
)
def test_a_malformed_authorization_header_is_401_on_every_route(
    client: TestClient,
    auth_settings: Settings,
    key_a: str,
    authorization: str,
    detail: str,
) -> None:
    table = calls(*missing_ids())
    for method, path in v1_routes(auth_settings):
        # A valid cookie does not rescue a malformed header: the header is what was meant.
        headers = {"Authorization": authorization, "Cookie": f"{KEY_COOKIE}={key_a}"}
        assert_unauthorized(
            send(client, method, table[(method, path)], headers=headers),
            challenge=CHALLENGE,
            detail_has=detail,
        )


def test_a_bare_key_as_the_header_is_not_echoed(client: TestClient, key_a: str) -> None:
    response = client.get("/v1/datasets", headers={"Authorization": key_a})
    body = assert_unauthorized(response, challenge=CHALLENGE, detail_has="Malformed")
    assert key_a[:8] not in body["detail"]


def test_unknown_keys_are_401_and_a_wrong_secret_reads_as_an_unknown_id(
    client: TestClient, auth_settings: Settings, key_a: str
) -> None:
    key_id = keys_service.key_id_of(key_a)
    secret = secret_of(key_a)
    wrong_secret = f"bw_{key_id}_{'A' * len(secret)}"
    unknown_id = f"bw_{uuid.uuid4()}_{secret}"
    table = calls(*missing_ids())
    details = set()
    for method, path in v1_routes(auth_settings):
        for key in (wrong_secret, unknown_id):
            body = assert_unauthorized(
                send(client, method, table[(method, path)], headers=bearer(key)),
                challenge=INVALID_TOKEN,
                detail_has="Unknown API key",
            )
            details.add(body["detail"])
    assert len(details) == 1  # nothing tells a known id with a wrong secret from an unknown id


@pytest.mark.parametrize(
    "token",
    ["not-a-key", "bw_", "bw_x_y", "sk_" + "a" * 80, "bw_" + "0" * 36 + "_" + "a" * 42],
)
def test_a_token_that_is_not_a_key_is_401_saying_what_a_key_looks_like(
    client: TestClient, token: str
) -> None:
    response = client.get("/v1/jobs", headers=bearer(token))
    assert_unauthorized(
        response,
        challenge=INVALID_TOKEN,
        detail_has="not a Batchwise API key: expected bw_<key id>_<secret> (83 characters",
    )


def test_the_scheme_is_case_insensitive_and_the_cookie_authenticates_too(
    client: TestClient, key_a: str
) -> None:
    assert client.get("/v1/datasets", headers={"Authorization": f"bearer {key_a}"}).is_success
    assert client.get("/v1/datasets", headers={"Cookie": f"{KEY_COOKIE}={key_a}"}).is_success
    response = client.get("/v1/datasets", headers={"Cookie": f"{KEY_COOKIE}=bw_nope"})
    assert_unauthorized(response, challenge=INVALID_TOKEN, detail_has="not a Batchwise API key")


def test_probes_metrics_docs_and_assets_need_no_key(client: TestClient) -> None:
    for path in (
        "/healthz",
        "/readyz",
        "/metrics",
        "/docs",
        "/openapi.json",
        "/docs/assets/swagger-ui.css",
        "/ui/static/dashboard.css",
        "/ui/sign-in",
    ):
        assert client.get(path).status_code == 200, path


def test_openapi_declares_the_bearer_scheme_on_every_v1_operation(client: TestClient) -> None:
    document = client.get("/openapi.json").json()
    assert document["components"]["securitySchemes"] == {
        "APIKey": {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "bw_<key id>_<secret>",
            "description": "An API key from `batchwise keys create --tenant NAME`, sent as "
            "`Authorization: Bearer <key>`.",
        }
    }
    operations = [
        (path, operation) for path, item in document["paths"].items() for operation in item.values()
    ]
    v1 = [(path, op) for path, op in operations if path.startswith("/v1")]
    assert len(v1) == V1_OPERATION_COUNT
    for path, operation in v1:
        assert operation["security"] == [{"APIKey": []}], path
        assert operation["responses"]["401"]["content"] == {
            PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}
        }
    for path, operation in operations:
        if not path.startswith("/v1"):
            assert "security" not in operation, path


# --- tenants: another tenant's objects do not exist --------------------------------------------


def normalized(response: Any, *ids: str) -> dict[str, Any]:
    """The problem document with every given id replaced by ``<id>``."""
    text = response.text
    for identifier in ids:
        text = text.replace(identifier, "<id>")
    body: dict[str, Any] = json.loads(text)
    return body


def test_another_tenants_objects_answer_the_404_of_a_missing_id_on_every_route(
    client: TestClient, auth_settings: Settings, owned: Owned, key_b: str
) -> None:
    theirs = calls(owned.dataset, owned.job, owned.sweep, owned.probe)
    missing = missing_ids()
    absent = calls(*missing)
    checked = 0
    for method, path in v1_routes(auth_settings):
        if not theirs[(method, path)].names_object:
            continue
        across = send(client, method, theirs[(method, path)], headers=bearer(key_b))
        nowhere = send(client, method, absent[(method, path)], headers=bearer(key_b))
        assert across.status_code == nowhere.status_code == 404, (method, path, across.text)
        assert across.headers["content-type"] == nowhere.headers["content-type"] == PROBLEM_JSON
        assert normalized(across, owned.dataset, owned.job, owned.sweep, owned.probe) == normalized(
            nowhere, *missing
        ), (method, path)
        checked += 1
    assert checked == 30  # all but the four lists and the two dataset uploads


def test_the_owner_reaches_every_route_that_names_its_objects(
    client: TestClient, auth_settings: Settings, owned: Owned, key_a: str
) -> None:
    """The other half of the 404s above: the same requests with the owner's key find the
    objects (deletes last: they remove them)."""
    mine = calls(owned.dataset, owned.job, owned.sweep, owned.probe)
    routes = [r for r in v1_routes(auth_settings) if mine[r].names_object]
    statuses = {
        (method, path): send(client, method, mine[(method, path)], bearer(key_a)).status_code
        for method, path in sorted(routes, key=lambda route: route[0] == "DELETE")
    }
    assert statuses == {
        ("GET", "/v1/datasets/{dataset_id}"): 200,
        ("DELETE", "/v1/datasets/{dataset_id}"): 409,  # its jobs are still there
        ("POST", "/v1/jobs"): 202,
        ("GET", "/v1/jobs/{job_id}"): 200,
        ("DELETE", "/v1/jobs/{job_id}"): 204,
        ("POST", "/v1/jobs/{job_id}/cancel"): 409,  # already succeeded
        ("GET", "/v1/jobs/{job_id}/history"): 200,
        ("GET", "/v1/jobs/{job_id}/history.csv"): 200,
        ("GET", "/v1/jobs/{job_id}/model"): 200,
        ("GET", "/v1/jobs/{job_id}/model.npz"): 200,
        ("POST", "/v1/jobs/{job_id}/predict"): 200,
        ("GET", "/v1/jobs/{job_id}/plots/loss.{fmt}"): 200,
        ("GET", "/v1/jobs/{job_id}/plots/loss.svg"): 200,
        ("GET", "/v1/jobs/{job_id}/plots/loss.png"): 200,
        ("POST", "/v1/sweeps"): 202,
        ("GET", "/v1/sweeps/{sweep_id}"): 200,
        ("POST", "/v1/sweeps/{sweep_id}/cancel"): 409,  # its points have all finished
        ("GET", "/v1/sweeps/{sweep_id}/plots/curves.{fmt}"): 200,
        ("GET", "/v1/sweeps/{sweep_id}/plots/curves.svg"): 200,
        ("GET", "/v1/sweeps/{sweep_id}/plots/curves.png"): 200,
        ("GET", "/v1/sweeps/{sweep_id}/plots/scaling.{fmt}"): 200,
        ("GET", "/v1/sweeps/{sweep_id}/plots/scaling.svg"): 200,
        ("GET", "/v1/sweeps/{sweep_id}/plots/scaling.png"): 200,
        ("GET", "/v1/jobs/{job_id}/checkpoints"): 200,
        ("POST", "/v1/probes"): 422,  # the job kept no checkpoint to branch from
        ("GET", "/v1/probes/{probe_id}"): 200,
        ("POST", "/v1/probes/{probe_id}/cancel"): 200,
        ("GET", "/v1/probes/{probe_id}/plots/critical.{fmt}"): 200,
        ("GET", "/v1/probes/{probe_id}/plots/critical.svg"): 200,
        ("GET", "/v1/probes/{probe_id}/plots/critical.png"): 200,
    }


def test_another_tenants_requests_change_nothing(
    client: TestClient, session: Session, owned: Owned, key_b: str
) -> None:
    for method, url in (
        ("DELETE", f"/v1/datasets/{owned.dataset}"),
        ("DELETE", f"/v1/jobs/{owned.job}"),
        ("POST", f"/v1/jobs/{owned.job}/cancel"),
        ("POST", f"/v1/sweeps/{owned.sweep}/cancel"),
    ):
        assert client.request(method, url, headers=bearer(key_b)).status_code == 404
    session.expire_all()
    assert session.get(Dataset, owned.dataset) is not None
    job = session.get(Job, owned.job)
    assert job is not None
    assert (job.status, job.cancel_requested) == ("succeeded", False)
    sweep = session.get(Sweep, owned.sweep)
    assert sweep is not None
    assert sweep.status == "running"  # not cancelled (nor settled)


def list_ids(client: TestClient, url: str, key: str) -> list[str]:
    response = client.get(url, headers=bearer(key))
    assert response.status_code == 200, response.text
    return [item["id"] for item in response.json()["items"]]


def test_lists_show_each_tenant_only_its_own_objects(
    client: TestClient, session: Session, owned: Owned, key_a: str, key_b: str
) -> None:
    created = client.post("/v1/datasets", json=inline_dataset("b-line"), headers=bearer(key_b))
    b_dataset = created.json()["id"]
    b_job = client.post(
        "/v1/jobs", json={"dataset_id": b_dataset, "epochs": 1}, headers=bearer(key_b)
    ).json()["id"]
    a_points = [job.id for job in jobs_of(session, owned.sweep)]
    a_branches = session.scalars(
        select(ProbeBranch.job_id).where(ProbeBranch.probe_id == owned.probe)
    ).all()
    a_jobs = [owned.job, *a_points, owned.probe_source, *a_branches]

    assert list_ids(client, "/v1/datasets", key_a) == [owned.dataset]
    assert list_ids(client, "/v1/datasets", key_b) == [b_dataset]
    assert sorted(list_ids(client, "/v1/jobs?limit=100", key_a)) == sorted(a_jobs)
    assert list_ids(client, "/v1/jobs", key_b) == [b_job]
    assert list_ids(client, f"/v1/jobs?dataset_id={owned.dataset}", key_b) == []
    assert list_ids(client, f"/v1/jobs?tag=sweep:{owned.sweep}", key_b) == []
    assert sorted(list_ids(client, f"/v1/jobs?tag=sweep:{owned.sweep}", key_a)) == sorted(a_points)
    assert list_ids(client, "/v1/sweeps", key_a) == [owned.sweep]
    assert list_ids(client, "/v1/sweeps", key_b) == []


def test_a_tenants_pages_walk_only_its_own_objects(
    client: TestClient, key_a: str, key_b: str
) -> None:
    # Interleaved creations: A's cursor pages must skip B's rows, not stop at them.
    mine = []
    for index in range(5):
        for key, name in ((key_a, f"a{index}"), (key_b, f"b{index}")):
            created = client.post("/v1/datasets", json=inline_dataset(name), headers=bearer(key))
            if key == key_a:
                mine.append(created.json()["id"])
    walked: list[str] = []
    cursor = None
    while True:
        query = "?limit=2" + (f"&cursor={cursor}" if cursor else "")
        page = client.get(f"/v1/datasets{query}", headers=bearer(key_a)).json()
        walked += [item["id"] for item in page["items"]]
        if (cursor := page["next_cursor"]) is None:
            break
    assert walked == mine[::-1]


def test_rows_carry_their_creators_tenant_and_sweep_points_the_sweeps(
    session: Session, owned: Owned
) -> None:
    session.expire_all()
    tenants = {
        session.get(Dataset, owned.dataset).tenant,  # type: ignore[union-attr]
        session.get(Job, owned.job).tenant,  # type: ignore[union-attr]
        session.get(Sweep, owned.sweep).tenant,  # type: ignore[union-attr]
        *(job.tenant for job in jobs_of(session, owned.sweep)),
    }
    assert tenants == {"tenant-a"}


def test_the_later_rounds_a_worker_queues_belong_to_the_sweeps_tenant(
    client: TestClient, session: Session, key_a: str
) -> None:
    dataset_id = client.post("/v1/datasets", json=inline_dataset(), headers=bearer(key_a)).json()[
        "id"
    ]
    sweep_id = client.post(
        "/v1/sweeps",
        json={
            "dataset_id": dataset_id,
            "batch_sizes": [8, 16],
            "lr_search": {"start": 0.01, "max_rounds": 3},
            "base": {"epochs": 4},
            "target_loss": 0.5,
        },
        headers=bearer(key_a),
    ).json()["id"]
    # The lowest rate is best at both batch sizes: the next round searches below it.
    for job in jobs_of(session, sweep_id):
        rate = job.sweep_point["learning_rate"]  # type: ignore[index]
        finish_with_crossing(session, job, 10.0 + 1000.0 * rate)
    session.commit()
    from service.sweeps import orchestration  # the worker's hook, on its own session

    assert orchestration.advance(session, sweep_id) is True
    session.commit()
    points = jobs_of(session, sweep_id)
    assert len(points) == 2 * 3 + 2
    assert {job.tenant for job in points} == {"tenant-a"}


def test_a_job_or_sweep_on_another_tenants_dataset_is_the_unknown_dataset_404(
    client: TestClient, owned: Owned, key_b: str
) -> None:
    missing = str(uuid.uuid4())
    for url, body in (
        ("/v1/jobs", {"epochs": 1}),
        ("/v1/sweeps", {"batch_sizes": [8, 16], "learning_rates": [0.05]}),
    ):
        across = client.post(url, json=body | {"dataset_id": owned.dataset}, headers=bearer(key_b))
        nowhere = client.post(url, json=body | {"dataset_id": missing}, headers=bearer(key_b))
        assert across.status_code == nowhere.status_code == 404
        assert normalized(across, owned.dataset) == normalized(nowhere, missing)
        assert across.json()["detail"] == f"No dataset with id '{owned.dataset}'."


# --- auth off ---------------------------------------------------------------------------------


def test_with_auth_off_every_request_is_the_default_tenant(
    settings: Settings, session: Session
) -> None:
    assert settings.auth == "off"
    with TestClient(create_app(settings)) as off:
        created = off.post("/v1/datasets", json=inline_dataset("legacy"))
        assert created.status_code == 201
        # A header is not even read: any value acts as the default tenant.
        assert off.get("/v1/datasets", headers={"Authorization": "Basic x"}).status_code == 200
    dataset_id = created.json()["id"]
    assert session.get(Dataset, dataset_id).tenant == DEFAULT_TENANT  # type: ignore[union-attr]

    default_key, other_key = make_key(session, DEFAULT_TENANT), make_key(session, "other")
    with TestClient(create_app(settings.model_copy(update={"auth": "on"}))) as on:
        assert list_ids(on, "/v1/datasets", default_key) == [dataset_id]
        assert list_ids(on, "/v1/datasets", other_key) == []
