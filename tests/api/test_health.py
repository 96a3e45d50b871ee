"""``/healthz`` and ``/readyz`` on real databases: migrated, never migrated, behind the head,
unreachable."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy import Engine, text

from service.api import create_app
from service.config import Settings
from service.db.migrate import head_revision

PROBLEM_JSON = "application/problem+json"


def test_healthz_is_ok(settings: Settings) -> None:
    with TestClient(create_app(settings)) as client:
        response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_readyz_is_200_on_a_migrated_database(settings: Settings, db_url: str) -> None:
    with TestClient(create_app(settings)) as client:
        response = client.get("/readyz")
    assert response.status_code == 200, response.text
    assert response.json() == {
        "status": "ready",
        "database": "sqlite" if db_url.startswith("sqlite") else "postgresql",
        "revision": head_revision(),
    }


def test_readyz_is_503_on_a_never_migrated_database(blank_db_url: str, tmp_path: Path) -> None:
    settings = Settings(database_url=blank_db_url, data_dir=tmp_path / "data", workers=0)
    with TestClient(create_app(settings)) as client:
        response = client.get("/readyz")
    assert response.status_code == 503
    assert response.headers["content-type"] == PROBLEM_JSON
    body = response.json()
    assert body["type"] == "/problems/service-unavailable"
    assert "never migrated" in body["detail"]
    assert "batchwise migrate" in body["detail"]


def test_readyz_is_503_when_schema_is_behind_head(settings: Settings, engine: Engine) -> None:
    with engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = '0123abcd'"))
    with TestClient(create_app(settings)) as client:
        response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["detail"] == (
        f"The database schema is at 0123abcd, head is {head_revision()}: run `batchwise migrate`."
    )


def test_readyz_is_503_when_postgresql_is_unreachable(tmp_path: Path) -> None:
    # Port 1 on loopback: nothing listens, so the connection is refused at once.
    url = "postgresql+psycopg://batchwise:s3cret@127.0.0.1:1/batchwise"
    settings = Settings(database_url=url, data_dir=tmp_path / "data", workers=0)
    with TestClient(create_app(settings)) as client:
        response = client.get("/readyz")
        assert client.get("/healthz").status_code == 200  # alive, just not ready
    assert response.status_code == 503
    assert response.headers["content-type"] == PROBLEM_JSON
    detail = response.json()["detail"]
    assert detail.startswith("The database is unreachable (OperationalError) at ")
    assert "127.0.0.1:1" in detail
    assert "s3cret" not in response.text
