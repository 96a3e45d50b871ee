"""docker-compose.yml and .env.example as data: the services and their order of start, health
checks, volumes, restart policies, and every environment name a real Setting whose documented
default is the Setting's own.
"""

from __future__ import annotations

from typing import Any

import pytest

from service.config import Settings

from .files import (
    COMPOSE_FILE,
    ENV_EXAMPLE,
    batchwise_names,
    env_example,
    interpolation_defaults,
    load_compose,
    unknown_settings,
)

COMPOSE_TEXT = COMPOSE_FILE.read_text(encoding="utf-8")
ENV_TEXT = ENV_EXAMPLE.read_text(encoding="utf-8")


@pytest.fixture
def services() -> dict[str, dict[str, Any]]:
    services: dict[str, dict[str, Any]] = load_compose(COMPOSE_TEXT)["services"]
    return services


def conditions(service: dict[str, Any]) -> dict[str, str]:
    depends_on = service.get("depends_on", {})
    assert isinstance(depends_on, dict), "depends_on must name its conditions"
    return {name: spec["condition"] for name, spec in depends_on.items()}


def healthcheck_command(service: dict[str, Any]) -> str:
    test = service["healthcheck"]["test"]
    return " ".join(test) if isinstance(test, list) else str(test)


def test_the_four_services_of_the_topology(services: dict[str, dict[str, Any]]) -> None:
    assert set(services) == {"postgres", "migrate", "api", "worker"}
    batchwise_images = {services[name]["image"] for name in ("migrate", "api", "worker")}
    assert batchwise_images == {"batchwise:${IMAGE_TAG:-latest}"}  # one image, three commands
    assert [services[name]["command"] for name in ("migrate", "api", "worker")] == [
        ["migrate"],
        ["serve", "--host", "0.0.0.0"],
        ["worker"],
    ]


def test_postgres_is_the_pinned_official_image_with_a_named_volume_and_pg_isready(
    services: dict[str, dict[str, Any]],
) -> None:
    postgres = services["postgres"]
    image, _, tag = postgres["image"].partition(":")
    assert image == "postgres"
    assert tag.isdigit()  # a major version: never `latest`, never untagged
    assert postgres["volumes"] == ["postgres-data:/var/lib/postgresql/data"]
    assert "postgres-data" in load_compose(COMPOSE_TEXT)["volumes"]
    assert healthcheck_command(postgres).startswith("CMD pg_isready")
    assert "ports" not in postgres  # reachable from the compose network only


def test_start_order_migrate_after_a_healthy_postgres_then_api_and_workers(
    services: dict[str, dict[str, Any]],
) -> None:
    assert conditions(services["postgres"]) == {}
    assert conditions(services["migrate"]) == {"postgres": "service_healthy"}
    for name in ("api", "worker"):
        assert conditions(services[name]) == {
            "postgres": "service_healthy",
            "migrate": "service_completed_successfully",
        }


def test_restart_policies_keep_the_long_running_services_up_and_run_migrate_once(
    services: dict[str, dict[str, Any]],
) -> None:
    assert {name: service["restart"] for name, service in services.items()} == {
        "postgres": "unless-stopped",
        "migrate": "no",
        "api": "unless-stopped",
        "worker": "unless-stopped",
    }


def test_api_publishes_8000_runs_no_embedded_workers_and_checks_healthz(
    services: dict[str, dict[str, Any]],
) -> None:
    api = services["api"]
    assert api["ports"] == ["${API_PORT:-8000}:8000"]
    assert api["environment"]["BATCHWISE_WORKERS"] == "0"
    assert api["environment"]["BATCHWISE_API_PROCESSES"] == "${API_PROCESSES:-2}"
    assert api["environment"]["BATCHWISE_PORT"] == "8000"
    assert "/healthz" in healthcheck_command(api)
    assert api["volumes"] == ["api-data:/data"]


def test_workers_scale_no_port_no_fixed_name_a_shared_cache_and_time_to_release_a_job(
    services: dict[str, dict[str, Any]],
) -> None:
    worker = services["worker"]
    # `docker compose up --scale worker=N` needs no host port and no container_name.
    assert "ports" not in worker
    assert "container_name" not in worker
    assert worker["volumes"] == ["worker-data:/data"]
    assert worker["healthcheck"] == {"disable": True}  # the image's /healthz has no server here
    assert worker["stop_grace_period"] == "30s"


def test_every_service_volume_is_a_declared_named_volume(
    services: dict[str, dict[str, Any]],
) -> None:
    declared = set(load_compose(COMPOSE_TEXT)["volumes"])
    used = {
        mount.split(":")[0] for service in services.values() for mount in service.get("volumes", [])
    }
    assert used == declared == {"postgres-data", "api-data", "worker-data"}


def test_batchwise_containers_read_the_optional_env_file_and_one_database_url(
    services: dict[str, dict[str, Any]],
) -> None:
    for name in ("migrate", "api", "worker"):
        service = services[name]
        assert service["env_file"] == [{"path": ".env", "required": False}]
        url = service["environment"]["BATCHWISE_DATABASE_URL"]
        assert url.startswith("${BATCHWISE_DATABASE_URL:-postgresql+psycopg://")
        assert url.endswith("@postgres:5432/${POSTGRES_DB:-batchwise}}")
        assert service["environment"]["BATCHWISE_DATA_DIR"] == "/data"


def test_every_batchwise_name_in_compose_and_env_example_is_a_setting() -> None:
    names = batchwise_names(COMPOSE_TEXT) | batchwise_names(ENV_TEXT)
    assert names >= {"BATCHWISE_DATABASE_URL", "BATCHWISE_WORKERS", "BATCHWISE_LOG_LEVEL"}
    assert unknown_settings(names) == []


def test_a_misspelt_setting_is_reported() -> None:
    assert unknown_settings({"BATCHWISE_WORKER", "BATCHWISE_WORKERS", "POSTGRES_DB"}) == [
        "BATCHWISE_WORKER is not a setting"
    ]


def test_env_example_documents_each_settings_default() -> None:
    """A line of .env.example says what leaving it out means: the Setting's own default."""
    documented = {
        name: value
        for name, value in env_example(ENV_TEXT).items()
        if name.startswith("BATCHWISE_")
    }
    assert set(documented) >= {
        "BATCHWISE_LOG_LEVEL",
        "BATCHWISE_LEASE_SECONDS",
        "BATCHWISE_WORKER_THREADS",
        "BATCHWISE_MAX_UPLOAD_BYTES",
    }
    set_values = {name: value for name, value in documented.items() if value}
    parsed = Settings(
        **{name.removeprefix("BATCHWISE_").lower(): v for name, v in set_values.items()}
    )
    for name in set_values:
        field = name.removeprefix("BATCHWISE_").lower()
        assert getattr(parsed, field) == Settings.model_fields[field].default, name


def test_compose_variables_are_documented_with_the_same_defaults() -> None:
    documented = env_example(ENV_TEXT)
    for name, defaults in interpolation_defaults(COMPOSE_TEXT).items():
        assert name in documented, f"{name} is used by docker-compose.yml but not in .env.example"
        if name.startswith("BATCHWISE_"):
            continue  # its compose default is built from the POSTGRES_* ones
        assert defaults == {documented[name]}, name


def test_a_compose_default_that_disagrees_with_env_example_is_seen() -> None:
    assert interpolation_defaults(
        "image: x:${IMAGE_TAG:-1.0} # ${NOT:-this}\nport: ${API_PORT}"
    ) == {
        "IMAGE_TAG": {"1.0"},
        "API_PORT": {""},
    }
    assert env_example("# API_PORT=8000\nIMAGE_TAG=latest\n# a comment\n") == {
        "API_PORT": "8000",
        "IMAGE_TAG": "latest",
    }
