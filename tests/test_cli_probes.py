"""``batchwise probes submit|show|list|cancel`` and the client's probe methods against a real
``batchwise serve`` with one embedded worker: a source job that keeps its checkpoints, a probe
of it followed to its end, listing, the plot, cancelling, and the error paths."""

from __future__ import annotations

import io
import json
import subprocess
from collections.abc import Callable
from contextlib import AbstractContextManager, redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any, get_type_hints

import pytest

from service.cli import main
from service.cli.remote.probes import build_probe_body
from service.client import BatchwiseAPIError, BatchwiseClient, Probe, ProbeSummary
from tests.support.factories import regression_data
from tests.support.images import svg_root

ServeProcess = Callable[..., AbstractContextManager[str]]
UNREACHABLE = "http://127.0.0.1:9"


def here(*args: str) -> subprocess.CompletedProcess[str]:
    """``batchwise ARGS`` in this process, its output captured."""
    stdout, stderr = io.StringIO(), io.StringIO()
    with redirect_stdout(stdout), redirect_stderr(stderr):
        try:
            status = main(list(args))
        except SystemExit as exc:
            status = int(exc.code or 0)
    return subprocess.CompletedProcess(list(args), status, stdout.getvalue(), stderr.getvalue())


@pytest.fixture
def service(serve_process: ServeProcess, tmp_path: Path) -> Any:
    data_dir = tmp_path / "server-data"
    with serve_process(
        database_url=f"sqlite:///{(data_dir / 'batchwise.db').as_posix()}",
        data_dir=data_dir,
        env={"BATCHWISE_WORKERS": "1"},
    ) as base_url:
        yield base_url


def source(client: BatchwiseClient, rows: int = 256, **config: Any) -> str:
    X, y = regression_data(rows, 3)
    dataset = client.create_dataset_inline(X, y, name="probe source")
    job = client.submit_job(
        dataset["id"],
        **{
            "batch_size": 4,
            "epochs": 3,
            "standardize": True,
            "noise_scale": True,
            "keep_checkpoints": [1, 2, 3],
            **config,
        },
    )
    assert client.wait_for_job(job["id"], poll_s=0.05, timeout_s=60)["status"] == "succeeded"
    job_id: str = job["id"]
    return job_id


def test_client_and_cli_run_show_list_and_cancel_a_probe(service: str) -> None:
    with BatchwiseClient(service, timeout=10) as client:
        job_id = source(client)
        probe = client.create_probe(
            job_id, at_epochs=[1, 3], multipliers=[1, 2, 4], lr="sqrt", name="client probe"
        )
        assert set(get_type_hints(Probe)) <= set(probe)
        assert (probe["status"], probe["name"], probe["multipliers"]) == (
            "running",
            "client probe",
            [1, 2, 4],
        )
        looks: list[Probe] = []
        done = client.wait_for_probe(probe["id"], on_progress=looks.append, poll_s=0.05)
        assert done["status"] == "succeeded"
        assert looks[-1] == done
        assert [c["epoch"] for c in done["checkpoints"]] == [1, 3]
        assert all(c["critical"]["batch_size"] for c in done["checkpoints"])
        svg_root(client.get_plot(f"/v1/probes/{probe['id']}/plots/critical.svg"))

        # The CLI: submit --wait prints the table; show and list; --json is the API's JSON.
        run = here(
            "probes", "submit", job_id, "--at-epochs", "2", "--multipliers", "1,2",
            "--lr", "linear", "--wait", "--poll", "0.05", "--url", service,
        )  # fmt: skip
        assert run.returncode == 0, run.stderr
        assert "succeeded" in run.stdout
        assert "CRITICAL" in run.stdout
        assert "BRACKET" in run.stdout
        assert "succeeded" in run.stderr  # the progress lines
        listing = here("probes", "list", "--url", service, "--json")
        ids = [item["id"] for item in json.loads(listing.stdout)["items"]]
        assert ids[1] == probe["id"]
        assert set(get_type_hints(ProbeSummary)) <= set(client.list_probes()["items"][0])
        assert [p["id"] for p in client.iter_probes(page_size=1)] == ids
        table = here("probes", "list", "--url", service, "--limit", "1")
        assert table.returncode == 0
        assert "more: batchwise probes list --limit 1 --cursor" in table.stderr
        shown = here("probes", "show", probe["id"], "--url", service)
        assert shown.returncode == 0
        assert "client probe" in shown.stdout
        assert (
            json.loads(here("probes", "show", probe["id"], "--url", service, "--json").stdout)["id"]
            == probe["id"]
        )

        # A finished probe cannot be cancelled: the problem on stderr, exit 1.
        refused = here("probes", "cancel", probe["id"], "--url", service)
        assert refused.returncode == 1
        assert "409" in refused.stderr
        with pytest.raises(BatchwiseAPIError) as finished:
            client.cancel_probe(probe["id"])
        assert finished.value.status == 409

        # A probe whose rate search queues many branches, cancelled at once.
        many = client.create_probe(job_id, at_epochs=[1, 2, 3], multipliers=[1, 2, 4, 8])
        cancelled = here("probes", "cancel", many["id"], "--url", service)
        assert cancelled.returncode == 0, cancelled.stderr
        assert cancelled.stdout == f"probe {many['id']} cancelled\n"
        assert client.get_probe(many["id"])["status"] == "cancelled"


def test_refusals_print_the_problem_naming_the_field(service: str) -> None:
    with BatchwiseClient(service, timeout=10) as client:
        job_id = source(client, keep_checkpoints=[1, 3])
        with pytest.raises(BatchwiseAPIError) as unknown:
            client.get_probe("no-such-probe")
        assert unknown.value.status == 404
    run = here("probes", "submit", job_id, "--at-epochs", "2", "--url", service)
    assert run.returncode == 1
    assert "422" in run.stderr
    assert "body.at_epochs.0:" in run.stderr
    assert "checkpoints at epochs [1, 3]" in run.stderr
    assert "keep_checkpoints" in run.stderr
    beyond = here("probes", "submit", job_id, "--at-epochs", "7", "--url", service)
    assert "the source job runs 3 epochs" in beyond.stderr


def test_probe_flags_build_the_body_and_bad_lists_are_usage_errors() -> None:
    parsed = {
        "at_epochs": "1,4,16", "multipliers": "1,2", "window_samples": 512, "lr": "sqrt",
        "tolerance": 0.02, "seeds": 2, "loss_on": None, "name": None,
    }  # fmt: skip
    body = build_probe_body(type("Args", (), parsed)())
    assert body == {
        "at_epochs": [1, 4, 16],
        "multipliers": [1, 2],
        "window_samples": 512,
        "lr": "sqrt",
        "tolerance": 0.02,
        "seeds": 2,
    }
    auto = build_probe_body(type("Args", (), parsed | {"at_epochs": "auto"})())
    assert auto["at_epochs"] == "auto"
    bad = here("probes", "submit", "j", "--multipliers", "1,x", "--url", UNREACHABLE)
    assert bad.returncode == 2
    assert "--multipliers '1,x': expected whole numbers like 1,2,4" in bad.stderr
    assert here("probes").returncode == 2
    helped = here("probes", "submit", "--help")
    assert helped.returncode == 0
    for flag in ("--at-epochs", "--multipliers", "--window-samples", "--lr", "--tolerance"):
        assert flag in helped.stdout
