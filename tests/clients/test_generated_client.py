"""A client generated from the live ``/openapi.json`` by ``openapi-python-client`` does the
whole job, with no raw HTTP: upload, train, read back every form of the results, sweep, cancel,
page, and meet each kind of error as a typed ``Problem``.

One real ``batchwise serve`` (auth on, two embedded workers, SQLite) for the file; the client is
generated once, with the config users are told to use (``examples/openapi-python-client.yml``),
and must come out with no warning: a warning means part of the API is missing from it. It is then
installed as a user would, with pip into a fresh virtual environment (its own dependencies
resolved there), must import in that environment's interpreter, and the tests drive the
installed copy.
"""

from __future__ import annotations

import importlib
import io
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import httpx
import numpy as np
import pytest

from tests.support.databases import sqlite_url
from tests.support.processes import REPO_ROOT, run_batchwise, run_server

CONFIG = REPO_ROOT / "examples" / "openapi-python-client.yml"
PACKAGE = "batchwise_client"
#: Long enough for a few short jobs on a busy 2-core machine; they take a second or two.
WAIT_S = 120.0


def generate(spec: Path, out: Path) -> str:
    """Generate the client project (a ``setup.py`` and the package) into ``out``; what the
    generator printed."""
    generator = Path(sys.executable).with_name("openapi-python-client")
    done = subprocess.run(
        [
            str(generator),
            "generate",
            "--path",
            str(spec),
            "--config",
            str(CONFIG),
            "--meta",
            "setup",
            "--output-path",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        # Its post-generation hooks run ruff, from this environment.
        env={"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


def install(project: Path, venv: Path) -> Path:
    """pip-install ``project`` into a new virtual environment at ``venv``, check that its own
    interpreter imports the package, and return its site-packages."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    installed = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", str(project)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert installed.returncode == 0, installed.stdout + installed.stderr
    where = subprocess.run(
        [str(python), "-c", f"import {PACKAGE}, sysconfig; print(sysconfig.get_path('purelib'))"],
        capture_output=True,
        text=True,
        check=True,
    )
    return Path(where.stdout.strip())


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimpleNamespace]:
    """The generated package's modules, a client with a key, one with a wrong key."""
    root = tmp_path_factory.mktemp("generated")
    data_dir = root / "data"
    database = {"BATCHWISE_DATABASE_URL": sqlite_url(data_dir / "batchwise.db")}
    env = {"BATCHWISE_AUTH": "on", "BATCHWISE_WORKERS": "2"}
    with run_server(
        database_url=database["BATCHWISE_DATABASE_URL"], data_dir=data_dir, env=env
    ) as base_url:
        made = run_batchwise("keys", "create", "--tenant", "generated", env=database)
        assert made.returncode == 0, made.stderr
        spec = root / "openapi.json"
        spec.write_bytes(httpx.get(f"{base_url}/openapi.json").content)
        printed = generate(spec, root / "project")
        assert "warning" not in printed.lower(), printed
        assert "unable" not in printed.lower(), printed
        site_packages = install(root / "project", root / "venv")
        sys.path.insert(0, str(site_packages))
        try:
            package = importlib.import_module(PACKAGE)
            assert Path(package.__file__).is_relative_to(site_packages)
            modules = {
                name: importlib.import_module(f"{PACKAGE}.{name}")
                for name in ("models", "types", "api.datasets", "api.jobs", "api.sweeps")
            }
            operations = {
                op: importlib.import_module(f"{PACKAGE}.api.{tag}.{op}")
                for tag, ops in {
                    "datasets": ["create_dataset", "create_dataset_inline", "list_datasets"],
                    "jobs": [
                        "submit_job",
                        "get_job",
                        "list_jobs",
                        "cancel_job",
                        "get_job_history",
                        "get_job_history_csv",
                        "get_job_model",
                        "get_job_model_npz",
                        "predict",
                        "get_job_loss_plot_svg",
                        "get_job_loss_plot_png",
                    ],
                    "sweeps": [
                        "create_sweep",
                        "get_sweep",
                        "get_sweep_curves_plot_svg",
                        "get_sweep_curves_plot_png",
                        "get_sweep_scaling_plot_svg",
                        "get_sweep_scaling_plot_png",
                    ],
                }.items()
                for op in ops
            }
            key = made.stdout.strip()
            with (
                package.AuthenticatedClient(base_url=base_url, token=key) as client,
                package.AuthenticatedClient(base_url=base_url, token="bw_" + "0" * 80) as stranger,
            ):
                yield SimpleNamespace(
                    op=SimpleNamespace(**operations),
                    models=modules["models"],
                    types=modules["types"],
                    client=client,
                    stranger=stranger,
                )
        finally:
            sys.path.remove(str(site_packages))
            for name in [m for m in sys.modules if m.split(".")[0] == PACKAGE]:
                del sys.modules[name]


def call(api: SimpleNamespace, operation: ModuleType, *args: Any, **kwargs: Any) -> Any:
    """The typed answer of ``operation`` (the generated ``sync_detailed``) and its status."""
    response = operation.sync_detailed(*args, client=api.client, **kwargs)
    return response.status_code, response.parsed, response.headers


def wait_for(api: SimpleNamespace, job_id: str) -> Any:
    deadline = time.monotonic() + WAIT_S
    while True:
        _, job, _ = call(api, api.op.get_job, job_id)
        if job.status.value in ("succeeded", "failed", "cancelled"):
            return job
        assert time.monotonic() < deadline, f"job {job_id} still {job.status.value}"
        time.sleep(0.2)


def upload_line(api: SimpleNamespace) -> Any:
    file = api.types.File(
        payload=io.BytesIO((REPO_ROOT / "examples" / "line.csv").read_bytes()),
        file_name="line.csv",
        mime_type="text/csv",
    )
    body = api.models.CreateDatasetBody(file=file, name="line", target="y")
    status, dataset, headers = call(api, api.op.create_dataset, body=body)
    assert status == 201, dataset
    assert isinstance(dataset, api.models.DatasetRead)
    assert headers["location"] == f"/v1/datasets/{dataset.id}"
    return dataset


def test_upload_train_and_read_everything_back(api: SimpleNamespace) -> None:
    models = api.models
    dataset = upload_line(api)
    assert (dataset.n_rows, dataset.feature_names, dataset.target) == (400, ["x0", "x1"], "y")

    submit = models.JobSubmit(dataset_id=dataset.id, batch_size=16, epochs=5, learning_rate=0.05)
    status, job, headers = call(api, api.op.submit_job, body=submit)
    assert status == 202
    assert isinstance(job, models.JobRead)
    assert job.status == models.JobStatus.QUEUED  # one enum for every job status
    assert headers["location"] == f"/v1/jobs/{job.id}"
    job = wait_for(api, job.id)
    assert job.status == models.JobStatus.SUCCEEDED
    assert isinstance(job.config, models.JobConfig)  # the resolved config, typed
    assert (job.config.batch_size, job.config.optimizer) == (16, models.Optimizer.SGD)

    _, history, _ = call(api, api.op.get_job_history, job.id)
    assert isinstance(history, models.HistoryRead)
    assert history.epoch == [1, 2, 3, 4, 5]
    assert history.train_loss[-1] < history.train_loss[0] / 10
    _, table, _ = call(api, api.op.get_job_history_csv, job.id)
    assert isinstance(table, str)
    rows = table.splitlines()
    assert rows[0].startswith("epoch,train_loss,")
    assert len(rows) == 1 + 5
    assert float(rows[-1].split(",")[1]) == pytest.approx(history.train_loss[-1], rel=1e-6)

    _, model, _ = call(api, api.op.get_job_model, job.id)
    assert isinstance(model, models.ModelRead)
    assert model.feature_names == ["x0", "x1"]
    assert isinstance(model.config, models.JobConfig)
    weights = model.params.additional_properties
    assert (len(weights["W"]), len(weights["b"])) == (2, 1)
    assert model.standardization is None
    _, npz, _ = call(api, api.op.get_job_model_npz, job.id)
    assert isinstance(npz, api.types.File)
    with np.load(io.BytesIO(npz.payload.read()), allow_pickle=False) as archive:
        assert archive["theta"].shape == (3,)

    # y = 3·x0 − 2·x1 + 1 (examples/make_examples.py): (0, 0) gives 1 and (1, −1) gives 6.
    request = models.PredictRequest(x=[[0.0, 0.0], [1.0, -1.0]])
    _, predicted, _ = call(api, api.op.predict, job.id, body=request)
    assert isinstance(predicted, models.PredictResponse)
    assert predicted.predictions == pytest.approx([1.0, 6.0], abs=0.3)

    for operation, magic in (
        (api.op.get_job_loss_plot_svg, b"<svg"),
        (api.op.get_job_loss_plot_png, b"\x89PNG"),
    ):
        status, image, headers = call(api, operation, job.id)
        assert status == 200
        assert isinstance(image, api.types.File)
        assert magic in image.payload.read()[:200]


def test_a_sweep_to_completion_with_its_plots(api: SimpleNamespace) -> None:
    models = api.models
    dataset = upload_line(api)
    base = models.SweepBase(epochs=3)
    sweep_body = models.SweepCreate(
        dataset_id=dataset.id, batch_sizes=[8, 32], learning_rates=[0.05], base=base
    )
    status, sweep, headers = call(api, api.op.create_sweep, body=sweep_body)
    assert status == 202, sweep
    assert headers["location"] == f"/v1/sweeps/{sweep.id}"
    deadline = time.monotonic() + WAIT_S
    while sweep.status.value in ("queued", "running"):
        assert time.monotonic() < deadline, sweep.status
        time.sleep(0.3)
        _, sweep, _ = call(api, api.op.get_sweep, sweep.id)
    assert isinstance(sweep, models.SweepRead)
    assert sweep.status == models.SweepProbeStatus.SUCCEEDED
    assert [point.batch_size for point in sweep.points] == [8, 32]
    assert isinstance(sweep.jobs, models.JobCounts)
    assert (sweep.jobs.succeeded, sweep.jobs.queued) == (2, 0)
    assert isinstance(sweep.spec, models.SweepSpec)
    assert sweep.spec.batch_sizes == [8, 32]
    # Two batch sizes are too few to fit S(B): the fit says so, typed, and the answers still come.
    assert isinstance(sweep.fit, models.FitRead)
    assert sweep.fit.b_noise is None
    assert "needs at least 3" in sweep.fit.reason
    recommendation = sweep.recommendation
    assert isinstance(recommendation, models.RecommendationRead)
    assert isinstance(recommendation.fastest, models.FastestRead)
    assert recommendation.fastest.batch_size in (8, 32)
    assert recommendation.fastest.confidence == models.Confidence.LOW  # one rate: not tuned
    assert isinstance(recommendation.knee, models.KneeRead)
    assert recommendation.knee.batch_size is None
    assert {row.batch_size for row in sweep.noise_scale} == {8, 32}  # measured by default
    assert all(isinstance(row, models.NoiseSummaryRead) for row in sweep.noise_scale)
    for operation in (
        api.op.get_sweep_curves_plot_svg,
        api.op.get_sweep_curves_plot_png,
        api.op.get_sweep_scaling_plot_svg,
        api.op.get_sweep_scaling_plot_png,
    ):
        status, image, _ = call(api, operation, sweep.id)
        assert status == 200, operation.__name__
        assert isinstance(image, api.types.File)


def test_cancel_page_and_inline(api: SimpleNamespace) -> None:
    models = api.models
    inline = models.DatasetCreateJSON(
        x=[[float(i)] for i in range(200)], y=[2.0 * i for i in range(200)], name="ramp"
    )
    status, dataset, _ = call(api, api.op.create_dataset_inline, body=inline)
    assert status == 201, dataset
    assert isinstance(dataset, models.DatasetRead)

    # Many epochs at batch 1: still running (or queued) when the cancel arrives. Standardized,
    # or the ramp's large inputs make it diverge (fail) within a second, before the cancel.
    long_job = models.JobSubmit(dataset_id=dataset.id, batch_size=1, epochs=1000, standardize=True)
    _, job, _ = call(api, api.op.submit_job, body=long_job)
    status, cancelled, _ = call(api, api.op.cancel_job, job.id)
    assert status in (200, 202)
    assert isinstance(cancelled, models.JobRead)  # typed, the 202 too
    assert wait_for(api, job.id).status == models.JobStatus.CANCELLED

    submitted = [call(api, api.op.submit_job, body=long_job)[1].id for _ in range(2)]
    for job_id in submitted:
        call(api, api.op.cancel_job, job_id)
    _, first, _ = call(api, api.op.list_jobs, limit=1, dataset_id=dataset.id)
    assert isinstance(first, models.JobPage)
    _, second, _ = call(
        api, api.op.list_jobs, limit=1, dataset_id=dataset.id, cursor=first.next_cursor
    )
    assert [j.id for j in first.items + second.items] == submitted[::-1]


def test_errors_are_typed_problems(api: SimpleNamespace) -> None:
    models = api.models
    dataset = upload_line(api)
    too_big = models.JobSubmit(dataset_id=dataset.id, batch_size=10_000)
    status, problem, _ = call(api, api.op.submit_job, body=too_big)
    assert status == 422
    assert isinstance(problem, models.Problem)
    assert problem.errors[0].loc == ["body", "batch_size"]

    status, problem, _ = call(api, api.op.get_job, "no-such-job")
    assert (status, type(problem)) == (404, models.Problem)
    assert "no-such-job" in problem.detail

    queued = models.JobSubmit(dataset_id=dataset.id, batch_size=1, epochs=1000, standardize=True)
    _, job, _ = call(api, api.op.submit_job, body=queued)
    status, problem, _ = call(api, api.op.get_job_model, job.id)
    assert (status, type(problem)) == (409, models.Problem)
    call(api, api.op.cancel_job, job.id)

    refused = api.op.list_datasets.sync_detailed(client=api.stranger)
    assert refused.status_code == 401
    assert isinstance(refused.parsed, models.Problem)
    assert refused.headers["www-authenticate"].startswith("Bearer")
