"""The Dockerfile's structure (a wheel-building stage, a runtime stage without build tools that
runs as a non-root user), its build context, and its HEALTHCHECK command run for real against a
``batchwise serve`` (healthy) and a closed port (unhealthy).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

from .files import (
    COMPOSE_FILE,
    DOCKERFILE,
    DOCKERIGNORE,
    Instruction,
    batchwise_names,
    dockerignore_problems,
    load_compose,
    parse_dockerfile,
    runtime_stage_problems,
    unknown_settings,
)

ServeProcess = Callable[..., AbstractContextManager[str]]

DOCKERFILE_TEXT = DOCKERFILE.read_text(encoding="utf-8")
STAGES = parse_dockerfile(DOCKERFILE_TEXT)
BUILD, RUNTIME = STAGES[0], STAGES[-1]

#: A runtime stage with every fault the check knows, one per line.
BAD_RUNTIME = """\
FROM python:3.11-slim AS build
RUN pip wheel --wheel-dir /wheels .
FROM python:3.11-slim
COPY . /src
RUN apt-get update && apt-get install -y --no-install-recommends gcc build-essential \\
    && pip install /src
USER root
CMD ["batchwise", "serve"]
"""


def runtime(keyword: str) -> Instruction:
    """The runtime stage's last ``keyword`` instruction (AssertionError if it has none)."""
    instruction = RUNTIME.last(keyword)
    assert instruction is not None, f"no {keyword} in the runtime stage"
    return instruction


def test_two_stages_on_the_same_pinned_slim_python() -> None:
    assert [(stage.base, stage.name) for stage in STAGES] == [
        ("python:3.11-slim", "build"),
        ("python:3.11-slim", "runtime"),
    ]


def test_the_build_stage_makes_wheels_of_the_project_and_its_migrations() -> None:
    copied = [copy.arguments.split()[0] for copy in BUILD.all("COPY")]
    assert copied == ["pyproject.toml", "service", "migrations"]
    # setup.py lists the packages (migrations/ ships as service/_migrations); the readme is the
    # package's long description.
    assert BUILD.all("COPY")[0].arguments == "pyproject.toml setup.py README.md ./"
    (wheel,) = BUILD.all("RUN")
    assert "pip wheel" in wheel.arguments
    assert wheel.arguments.endswith("--wheel-dir /wheels .")


def test_the_runtime_stage_installs_the_wheels_into_a_venv_as_the_readme_does() -> None:
    (install,) = RUNTIME.all("RUN")
    assert install.arguments.startswith(
        "--mount=type=bind,from=build,source=/wheels,target=/wheels python -m venv /opt/batchwise"
        " && /opt/batchwise/bin/pip install --no-cache-dir --no-index --find-links /wheels"
        " /wheels/batchwise-*.whl"
    )
    assert "PATH=/opt/batchwise/bin:$PATH" in runtime("ENV").arguments


def test_the_runtime_stage_is_non_root_healthy_and_free_of_build_tools() -> None:
    assert runtime_stage_problems(RUNTIME) == []
    assert runtime("USER").arguments == "10001:10001"


def test_a_root_runtime_stage_with_compilers_and_sources_is_refused() -> None:
    assert runtime_stage_problems(parse_dockerfile(BAD_RUNTIME)[-1]) == [
        "the last stage runs as root",
        "no HEALTHCHECK on /healthz",
        'ENTRYPOINT is not ["batchwise"]',
        "installs gcc",
        "installs build-essential",
        "pip install keeps its cache",
        "pip install may fetch or compile (no --no-index)",
        "copies from the build context: COPY . /src",
    ]


def test_entrypoint_batchwise_serves_on_all_interfaces_with_data_in_a_volume() -> None:
    assert runtime("ENTRYPOINT").exec_form() == ["batchwise"]
    assert runtime("CMD").exec_form() == ["serve", "--host", "0.0.0.0"]
    assert "BATCHWISE_DATA_DIR=/data" in runtime("ENV").arguments
    assert runtime("VOLUME").exec_form() == ["/data"]
    assert runtime("EXPOSE").arguments == "8000"


def test_every_batchwise_name_in_the_dockerfile_is_a_setting() -> None:
    names = batchwise_names(DOCKERFILE_TEXT)
    assert names == {"BATCHWISE_DATA_DIR", "BATCHWISE_PORT"}
    assert unknown_settings(names) == []


def test_the_build_context_holds_what_the_build_stage_copies() -> None:
    ignore = DOCKERIGNORE.read_text(encoding="utf-8")
    assert (
        dockerignore_problems(
            ignore, ["pyproject.toml", "setup.py", "README.md", "service", "migrations"]
        )
        == []
    )
    assert dockerignore_problems("*\n!service/\n", ["service", "migrations"]) == [
        "migrations is not in the build context"
    ]
    assert dockerignore_problems(".venv\n", []) == ["does not start from ignoring everything (*)"]


def healthcheck_command() -> list[str]:
    """The image's HEALTHCHECK command, which the compose api's repeats, as arguments."""
    options, _, command = runtime("HEALTHCHECK").arguments.partition(" CMD ")
    assert options.split() == [
        "--interval=15s",
        "--timeout=5s",
        "--start-period=30s",
        "--retries=3",
    ]
    from_image = Instruction("CMD", command).exec_form()
    compose_api = load_compose(COMPOSE_FILE.read_text(encoding="utf-8"))["services"]["api"]
    assert compose_api["healthcheck"]["test"] == ["CMD", *from_image]
    return from_image


def run_healthcheck(command: list[str], port: int) -> subprocess.CompletedProcess[str]:
    """Run ``command`` as the container would, with this interpreter as ``python``."""
    assert command[0] == "python"
    env = {**os.environ, "BATCHWISE_PORT": str(port)}
    return subprocess.run(
        [sys.executable, *command[1:]], env=env, capture_output=True, text=True, timeout=30
    )


def test_the_healthcheck_passes_on_a_serving_api_and_fails_on_a_closed_port(
    serve_process: ServeProcess, tmp_path: Path
) -> None:
    command = healthcheck_command()
    data_dir = tmp_path / "data"
    url = f"sqlite:///{(data_dir / 'batchwise.db').as_posix()}"
    with serve_process(database_url=url, data_dir=data_dir) as base_url:
        healthy = run_healthcheck(command, int(base_url.rsplit(":", 1)[1]))
        assert healthy.returncode == 0, healthy.stderr
        # What `docker compose up` promises on localhost:8000 besides the health check.
        for path in ("/docs", "/"):
            with urllib.request.urlopen(f"{base_url}{path}", timeout=10) as response:
                assert response.status == 200, path
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]  # bound, not listening: connections are refused
        unhealthy = run_healthcheck(command, closed_port)
    assert unhealthy.returncode == 1
    assert "Connection refused" in unhealthy.stderr
