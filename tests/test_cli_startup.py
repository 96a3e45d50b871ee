"""What the ``batchwise`` command line loads to start: ``--help``, ``--version`` and the parsers
import none of the server's stack (settings, database, web, plots) and no HTTP client; the
HTTP client's commands (``datasets``, ``jobs``, ``probes``) load the client only, the server's
commands (``serve``, ``worker``, ``keys`` …) the server's stack only.

Each case runs in a fresh interpreter (this one has loaded everything already) and reports
which of the heavy modules ended up in :data:`sys.modules`; no timing is asserted.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.support.processes import REPO_ROOT, find_free_port

#: The server's stack, which the HTTP client's commands start without, and the client's
#: (httpx, and NumPy for arrays), which the parsers and the server's commands other than
#: ``worker`` and ``serve`` start without.
HEAVY = (
    "alembic",
    "fastapi",
    "httpx",
    "matplotlib",
    "numpy",
    "psycopg",
    "pydantic",
    "pydantic_settings",
    "sqlalchemy",
    "uvicorn",
)

# argv[1] is the mode: "parse" builds the parser and parses argv[2:]; "main" runs `batchwise
# argv[2:]`; "import" imports the module argv[2]. Then it prints the heavy modules loaded.
_PROBE = f"""
import contextlib, importlib, io, json, sys
mode, rest = sys.argv[1], sys.argv[2:]
with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
    try:
        if mode == "import":
            importlib.import_module(rest[0])
        else:
            from service.cli import build_parser, main
            main(rest) if mode == "main" else build_parser().parse_args(rest)
    except SystemExit:
        pass
print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))
"""


def heavy_loaded(mode: str, *args: str) -> list[str]:
    """The :data:`HEAVY` modules a fresh ``python`` has loaded after ``mode`` on ``args``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BATCHWISE_")}
    result = subprocess.run(
        [sys.executable, "-c", _PROBE, mode, *args],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    loaded: list[str] = json.loads(result.stdout)
    return loaded


@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        ["--version"],
        ["jobs", "list"],
        ["jobs", "submit", "--dataset", "d1", "--batch-size", "32"],
        ["datasets", "list"],
        ["probes", "--help"],
        ["demo", "--quick"],
        # The server's commands' parsers and argument checks (tenant and key names, limits).
        ["serve", "--port", "0"],
        ["keys", "create", "--tenant", "research", "--name", "ci"],
        ["keys", "create", "--tenant", "Not A Tenant"],
        ["tenants", "set-limits", "research", "--max-running", "2", "--max-runtime", "default"],
    ],
    ids=" ".join,
)
def test_parsing_any_command_loads_no_server_stack_and_no_http_client(argv: list[str]) -> None:
    assert heavy_loaded("parse", *argv) == []


@pytest.mark.parametrize("action", ["list", "show"])
def test_a_remote_command_runs_without_the_server_stack(action: str) -> None:
    # A port nothing listens on: the command fails to connect, after loading all it needs.
    url = f"http://127.0.0.1:{find_free_port()}"
    argv = ["jobs", action, *(["job-1"] if action == "show" else []), "--url", url]
    assert heavy_loaded("main", *argv) == ["httpx", "numpy"]


def test_the_server_commands_runner_loads_the_settings_and_the_database() -> None:
    # The other side, and a check that the probe sees an import when there is one.
    loaded = heavy_loaded("import", "service.cli.runner")
    assert {"alembic", "pydantic_settings", "sqlalchemy"} <= set(loaded)
    assert not {"httpx", "numpy"} & set(loaded)


def test_the_client_package_loads_its_http_stack_on_first_use() -> None:
    assert heavy_loaded("import", "service.client") == []
    import service.client

    assert service.client.BatchwiseClient.__module__ == "service.client.http"
    assert service.client.BatchwiseError.__module__ == "service.client.errors"
    with pytest.raises(AttributeError, match="has no attribute 'Nothing'"):
        service.client.Nothing  # noqa: B018
    assert "BatchwiseClient" in dir(service.client)


def test_the_remote_runner_handles_exactly_the_commands_the_parsers_add() -> None:
    from service.cli.remote import parsers, runner

    assert set(runner._HANDLERS) == parsers.COMMANDS
