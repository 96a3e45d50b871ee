"""``service.client`` against a real ``batchwise serve`` process: uploads, jobs, sweeps, plots,
and every error raised with its problem details."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from service.client import (
    BatchwiseAPIError,
    BatchwiseClient,
    BatchwiseConnectionError,
    BatchwiseTimeoutError,
    Dataset,
    History,
    Job,
    Sweep,
    SweepPoint,
)
from tests.support.data import write_line_csv
from tests.support.factories import job_counts
from tests.support.images import svg_root

ServeProcess = Callable[..., AbstractContextManager[str]]


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path.as_posix()}"


def declared(view: Any) -> set[str]:
    """The keys a TypedDict view declares."""
    return set(view.__annotations__)


def test_upload_train_wait_history_sweep_and_plots(
    serve_process: ServeProcess, tmp_path: Path
) -> None:
    data_dir = tmp_path / "server-data"
    with (
        serve_process(
            database_url=sqlite_url(data_dir / "batchwise.db"),
            data_dir=data_dir,
            env={"BATCHWISE_WORKERS": "2"},
        ) as base_url,
        BatchwiseClient(base_url + "/", timeout=10) as client,
    ):
        assert client.base_url == base_url
        assert client.health() == {"status": "ok"}

        from_csv = client.upload_dataset(write_line_csv(tmp_path / "line.csv"), name="line")
        assert declared(Dataset) <= set(from_csv)
        assert (from_csv["n_rows"], from_csv["feature_names"], from_csv["target"]) == (
            400,
            ["x0", "x1"],
            "y",
        )
        assert (from_csv["name"], from_csv["source_format"]) == ("line", "csv")
        assert client.get_dataset(from_csv["id"]) == from_csv

        X = np.arange(12.0).reshape(6, 2)
        y = np.array([0.0, 1.0, 0.0, 1.0, 0.0, 1.0])
        from_arrays = client.upload_dataset((X, y), name="arrays")
        assert from_arrays["source_format"] == "npz"
        assert (from_arrays["n_rows"], from_arrays["n_features"]) == (6, 2)
        assert from_arrays["classes"] == [0.0, 1.0]
        assert [s["mean"] for s in from_arrays["stats"]] == [5.0, 6.0]
        inline = client.create_dataset_inline(X, y, name="inline", feature_names=["a", "b"])
        assert inline["source_format"] == "json"
        assert inline["feature_names"] == ["a", "b"]
        assert inline["sha256"] == from_arrays["sha256"]  # the same data, stored the same way

        job = client.submit_job(
            from_csv["id"],
            batch_size=32,
            epochs=3,
            learning_rate=0.05,
            validation_split=0.2,
            standardize=True,
            tags=["client-test"],
        )
        assert job["status"] == "queued"
        assert declared(Job) <= set(job)
        seen: list[Job] = []
        finished = client.wait_for_job(job["id"], on_progress=seen.append, poll_s=0.05)
        assert finished["status"] == "succeeded", finished["error"]
        assert seen[-1] == finished
        assert all(s["id"] == job["id"] for s in seen)
        assert finished["progress"]["fraction"] == 1.0

        history = client.history(job["id"])
        assert declared(History) <= set(history)
        # 400 rows, 80 held out: 320 training rows are 10 steps of 32 per epoch.
        assert history["epoch"] == [1, 2, 3]
        assert history["samples_seen"] == [320, 640, 960]
        assert history["total_steps"] == 30
        assert history["steps"]["step"] == list(range(1, 31))
        losses = [loss for loss in history["train_loss"] if loss is not None]
        assert losses == sorted(losses, reverse=True)
        assert client.history(job["id"], max_points=4)["downsampled"] is True

        loss_svg = client.get_plot(f"/v1/jobs/{job['id']}/plots/loss.svg")
        svg_root(loss_svg)

        sweep = client.create_sweep(
            from_csv["id"],
            [16, 64, 128],
            base={"epochs": 2, "standardize": True},
            learning_rates=[0.02, 0.1],
            target_loss=0.5,
            name="client sweep",
        )
        assert declared(Sweep) <= set(sweep)
        assert (sweep["status"], sweep["lr_method"], sweep["name"]) == (
            "running",
            "given",
            "client sweep",
        )
        looks: list[Sweep] = []
        done = client.wait_for_sweep(sweep["id"], on_progress=looks.append, poll_s=0.1)
        assert done["status"] == "succeeded", done["error"]
        assert looks[-1] == done
        assert done["jobs"] == job_counts(succeeded=6)
        assert [p["batch_size"] for p in done["points"]] == [16, 64, 128]
        for point in done["points"]:
            assert declared(SweepPoint) <= set(point)
            assert point["learning_rates_tried"] == [0.02, 0.1]
        assert client.get_sweep(sweep["id"])["points"] == done["points"]
        for path, params in (("curves.svg", {"x": "samples"}), ("scaling.svg", {})):
            svg_root(client.get_plot(f"/v1/sweeps/{sweep['id']}/plots/{path}", **params))


def test_errors_carry_the_problem_details(serve_process: ServeProcess, tmp_path: Path) -> None:
    data_dir = tmp_path / "server-data"
    with (
        serve_process(
            database_url=sqlite_url(data_dir / "batchwise.db"), data_dir=data_dir
        ) as base_url,
        BatchwiseClient(base_url) as client,
    ):
        with pytest.raises(BatchwiseAPIError) as missing:
            client.get_job("no-such-job")
        error = missing.value
        assert (error.status, error.title, error.errors) == (404, "Not found", [])
        assert error.type == "/problems/not-found"
        assert error.detail is not None
        assert "no-such-job" in error.detail
        assert error.instance == "/v1/jobs/no-such-job"
        assert (error.method, error.url) == ("GET", f"{base_url}/v1/jobs/no-such-job")
        assert str(error).startswith("404 Not found: ")

        dataset = client.upload_dataset(write_line_csv(tmp_path / "line.csv"))
        # 400 rows with 20% held out leave 320: a batch of 500 cannot run.
        with pytest.raises(BatchwiseAPIError) as too_big:
            client.submit_job(dataset["id"], batch_size=500, validation_split=0.2)
        assert too_big.value.status == 422
        assert [e["loc"] for e in too_big.value.errors] == [["body", "batch_size"]]
        with pytest.raises(BatchwiseAPIError) as unknown:
            client.submit_job(dataset["id"], optimizer="rmsprop")
        assert unknown.value.status == 422
        assert [e["loc"] for e in unknown.value.errors] == [["body", "optimizer"]]

        bad_csv = tmp_path / "bad.csv"
        bad_csv.write_text("a,y\n1,2\nx,3\n2,4\n", encoding="utf-8")
        with pytest.raises(BatchwiseAPIError) as bad:
            client.upload_dataset(bad_csv)
        assert bad.value.status == 422
        assert bad.value.errors[0]["loc"][:2] == ["file", "line 3"]

        with pytest.raises(BatchwiseAPIError) as no_sweep:
            client.get_sweep("no-such-sweep")
        assert no_sweep.value.status == 404

        # No worker in this server: the job stays queued and the wait runs out.
        job = client.submit_job(dataset["id"], epochs=1)
        seen: list[Job] = []
        with pytest.raises(BatchwiseTimeoutError, match=r"not finished after 0\.3 s"):
            client.wait_for_job(job["id"], on_progress=seen.append, poll_s=0.1, timeout_s=0.3)
        assert seen
        assert {s["status"] for s in seen} == {"queued"}
        with pytest.raises(ValueError, match="poll_s"):
            client.wait_for_job(job["id"], poll_s=0)
        assert client.cancel_job(job["id"])["status"] == "cancelled"
        with pytest.raises(BatchwiseAPIError) as finished:
            client.cancel_job(job["id"])
        assert finished.value.status == 409
        with pytest.raises(BatchwiseAPIError) as no_history:
            client.get_plot(f"/v1/jobs/{job['id']}/plots/loss.svg")
        assert no_history.value.status == 409


def test_unreachable_service_raises_a_connection_error(free_port: int) -> None:
    with (
        BatchwiseClient(f"http://127.0.0.1:{free_port}", timeout=2) as client,
        pytest.raises(BatchwiseConnectionError, match=f"cannot reach http://127.0.0.1:{free_port}"),
    ):
        client.health()


def test_an_error_page_that_is_not_a_problem_keeps_status_and_text() -> None:
    # What a proxy in front of the service answers when the service is down.
    def gateway(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            502, text="<html>bad gateway</html>", headers={"content-type": "text/html"}
        )

    with (
        BatchwiseClient("http://proxy.invalid", transport=httpx.MockTransport(gateway)) as client,
        pytest.raises(BatchwiseAPIError) as raised,
    ):
        client.get_sweep("abc")
    error = raised.value
    assert (error.status, error.title, error.detail) == (
        502,
        "Bad Gateway",
        "<html>bad gateway</html>",
    )
    assert (error.type, error.errors, error.instance) == ("about:blank", [], None)
