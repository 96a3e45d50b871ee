"""Two tenants with real API keys, the app in-process, and
counts of what is stored and queued, read straight from the database."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from service.api import create_app
from service.api.upload import spool_dir
from service.config import Settings
from service.db import session_factory
from service.db.tables import Dataset, DatasetChunk, Job, Sweep
from service.keys import service as keys_service
from tests.support.factories import regression_data

ALPHA, BETA = "alpha", "beta"


def make_keys(engine: Engine, *tenants: str) -> dict[str, str]:
    """A new API key per tenant, committed; tenant → key."""
    with session_factory(engine)() as session:
        keys = {tenant: keys_service.create_key(session, tenant=tenant).key for tenant in tenants}
        session.commit()
    return keys


@dataclass
class Api:
    """The app in-process with auth on, and a key per tenant: ``api.post(ALPHA, url, ...)``."""

    client: TestClient
    keys: dict[str, str]

    def request(self, tenant: str, method: str, url: str, **kwargs: Any) -> Any:
        headers = {"Authorization": f"Bearer {self.keys[tenant]}"} | kwargs.pop("headers", {})
        return self.client.request(method, url, headers=headers, **kwargs)

    def post(self, tenant: str, url: str, **kwargs: Any) -> Any:
        return self.request(tenant, "POST", url, **kwargs)

    def get(self, tenant: str, url: str, **kwargs: Any) -> Any:
        return self.request(tenant, "GET", url, **kwargs)

    def delete(self, tenant: str, url: str, **kwargs: Any) -> Any:
        return self.request(tenant, "DELETE", url, **kwargs)

    def dataset(self, tenant: str, n_rows: int = 100, n_features: int = 2, seed: int = 0) -> str:
        """Upload a regression dataset as JSON; its id."""
        response = self.post(tenant, "/v1/datasets", json=inline(n_rows, n_features, seed))
        assert response.status_code == 201, response.text
        dataset_id: str = response.json()["id"]
        return dataset_id

    def job(self, tenant: str, dataset_id: str, **body: Any) -> dict[str, Any]:
        """Submit a job that must be accepted; the job read."""
        response = self.post(tenant, "/v1/jobs", json={"dataset_id": dataset_id, **body})
        assert response.status_code == 202, response.text
        job: dict[str, Any] = response.json()
        return job


@contextmanager
def api(settings: Settings, engine: Engine, **overrides: Any) -> Iterator[Api]:
    """The app on ``settings`` (auth on, ``overrides`` applied) and keys for ALPHA and BETA."""
    keys = make_keys(engine, ALPHA, BETA)
    app = create_app(settings.model_copy(update={"auth": "on", **overrides}))
    with TestClient(app) as client:
        yield Api(client, keys)


def inline(n_rows: int, n_features: int = 2, seed: int = 0) -> dict[str, Any]:
    """A ``POST /v1/datasets`` JSON body."""
    X, y = regression_data(n_rows, n_features, seed)
    return {"name": f"{n_rows}x{n_features}", "X": X.tolist(), "y": y.tolist()}


def csv_bytes(n_rows: int, n_features: int = 2, seed: int = 0) -> bytes:
    """A CSV file with a header ``x0,…,y`` and ``n_rows`` rows."""
    X, y = regression_data(n_rows, n_features, seed)
    header = ",".join([*(f"x{i}" for i in range(n_features)), "y"])
    lines = [",".join(f"{v:.6f}" for v in (*row, target)) for row, target in zip(X, y, strict=True)]
    return ("\n".join([header, *lines]) + "\n").encode()


@dataclass(frozen=True)
class Stored:
    """What the database holds, per tenant: dataset rows and their bytes, chunk rows."""

    datasets: dict[str, int]
    stored_bytes: dict[str, int]
    chunks: int


def stored(engine: Engine) -> Stored:
    with session_factory(engine)() as session:
        rows = session.execute(
            select(Dataset.tenant, func.count(), func.sum(Dataset.size_bytes)).group_by(
                Dataset.tenant
            )
        ).all()
        chunks = session.scalar(select(func.count()).select_from(DatasetChunk)) or 0
    return Stored(
        datasets={tenant: int(count) for tenant, count, _ in rows},
        stored_bytes={tenant: int(size) for tenant, _, size in rows},
        chunks=int(chunks),
    )


def jobs_by_status(engine: Engine, tenant: str) -> dict[str, int]:
    """``tenant``'s job count per status."""
    with session_factory(engine)() as session:
        rows = session.execute(
            select(Job.status, func.count()).where(Job.tenant == tenant).group_by(Job.status)
        ).all()
    return {status: int(count) for status, count in rows}


def sweep_count(session: Session) -> int:
    return int(session.scalar(select(func.count()).select_from(Sweep)) or 0)


def spool_files(settings: Settings) -> list[str]:
    spool = spool_dir(settings.data_dir)
    return sorted(p.name for p in spool.iterdir()) if spool.exists() else []
