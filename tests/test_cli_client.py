"""``batchwise datasets|jobs …`` (service.cli.remote) against a real ``batchwise serve``: the
main paths as real ``python -m service`` processes, the many smaller checks through
:func:`service.cli.main` in this process (the same code, without an interpreter start-up
each); and the client methods they stand on (pages, models, predictions, deletes)."""

from __future__ import annotations

import io
import json
import os
import pty
import subprocess
import sys
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, redirect_stderr, redirect_stdout
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from service.cli import build_parser, main
from service.cli.remote.jobs import build_job_body
from service.client import BatchwiseAPIError, BatchwiseClient
from tests.support.data import write_line_csv
from tests.support.processes import run_batchwise

ServeProcess = Callable[..., AbstractContextManager[str]]
REPO_ROOT = Path(__file__).resolve().parents[1]
UNREACHABLE = "http://127.0.0.1:9"  # the discard port: nothing listens there


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path.as_posix()}"


def cli(
    *args: str, env: Mapping[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """``python -m service ARGS`` with only the given ``BATCHWISE_*`` variables; stdin, stdout
    and stderr are pipes (not a terminal)."""
    return run_batchwise(*args, env=env, timeout=timeout)


def here(*args: str) -> subprocess.CompletedProcess[str]:
    """``batchwise ARGS`` in this process (:func:`service.cli.main`), its output captured: the
    same code as :func:`cli` without a new interpreter's start-up, for the many smaller checks."""
    stdout, stderr = io.StringIO(), io.StringIO()
    with redirect_stdout(stdout), redirect_stderr(stderr):
        try:
            status = main(list(args))
        except SystemExit as exc:  # argparse's usage errors and --help
            status = int(exc.code or 0)
    return subprocess.CompletedProcess(list(args), status, stdout.getvalue(), stderr.getvalue())


def ok(*args: str, real: bool = False) -> str:
    """Run the CLI (a real process with ``real``), require exit 0, answer its stdout."""
    result = cli(*args) if real else here(*args)
    assert result.returncode == 0, (result.returncode, result.stdout, result.stderr)
    return result.stdout


def as_json(*args: str, real: bool = False) -> Any:
    return json.loads(ok(*args, "--json", real=real))


def table(stdout: str) -> tuple[list[str], list[list[str]]]:
    """A human table's header cells and rows, split on runs of two or more spaces."""
    import re

    lines = [line for line in stdout.splitlines() if line.strip()]
    header = re.split(r"\s{2,}", lines[0].strip())
    rows = [re.split(r"\s{2,}", line.strip()) for line in lines[1:]]
    return header, rows


def fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:.6g}"


def wall_time_s(job: Any) -> float:
    """Seconds from the job's start to its end."""
    started = datetime.fromisoformat(job["started_at"])
    return (datetime.fromisoformat(job["finished_at"]) - started).total_seconds()


@pytest.fixture
def service(serve_process: ServeProcess, tmp_path: Path) -> Any:
    data_dir = tmp_path / "server-data"
    with serve_process(
        database_url=sqlite_url(data_dir / "batchwise.db"),
        data_dir=data_dir,
        env={"BATCHWISE_WORKERS": "1"},
    ) as base_url:
        yield base_url


def test_upload_submit_wait_list_show_history_predict_cancel(service: str, tmp_path: Path) -> None:
    url = ("--url", service)
    csv = write_line_csv(tmp_path / "line.csv")
    with BatchwiseClient(service) as client:
        # datasets upload: the stored dataset, the same as the API reads it back
        dataset = as_json("datasets", "upload", str(csv), "--name", "line", *url, real=True)
        assert (dataset["n_rows"], dataset["feature_names"], dataset["name"]) == (
            400,
            ["x0", "x1"],
            "line",
        )
        assert client.get_dataset(dataset["id"]) == dataset
        human = ok("datasets", "upload", str(csv), "--name", "again", "--target", "x0", *url)
        assert human.startswith("uploaded dataset ")
        assert "target   x0 (regression)" in human
        assert "400 rows × 2 features" in human

        # datasets list / show: --json is the API's page; the table has its columns
        assert as_json("datasets", "list", *url, real=True) == client.list_datasets()
        header, rows = table(ok("datasets", "list", *url))
        assert header == ["ID", "NAME", "ROWS", "FEATURES", "TARGET", "TASK", "CREATED"]
        assert [row[:6] for row in rows] == [
            [d["id"], d["name"], "400", "2", d["target"], "regression"]
            for d in client.list_datasets()["items"]
        ]
        every = as_json("datasets", "list", "--limit", "1", "--all", *url)
        assert every == {"items": list(client.iter_datasets()), "next_cursor": None}
        first_page = client.list_datasets(limit=1)
        paged = here("datasets", "list", "--limit", "1", *url)
        assert paged.stderr == (
            f"more: batchwise datasets list --limit 1 --cursor {first_page['next_cursor']}\n"
        )
        assert as_json(
            "datasets", "list", "--limit", "1", "--cursor", str(first_page["next_cursor"]), *url
        ) == client.list_datasets(limit=1, cursor=first_page["next_cursor"])
        assert as_json("datasets", "show", dataset["id"], *url) == dataset
        shown = ok("datasets", "show", dataset["id"], *url)
        stats_header, stats_rows = table(shown.split("\n\n", 1)[1])
        assert stats_header == ["FEATURE", "MEAN", "STD", "MIN", "MAX"]
        assert stats_rows == [
            [s["name"], fmt(s["mean"]), fmt(s["std"]), fmt(s["min"]), fmt(s["max"])]
            for s in dataset["stats"]
        ]

        # jobs submit --wait: plain progress lines on stderr (not a terminal), the final line
        submitted = cli(
            "jobs", "submit", "--dataset", dataset["id"], "--batch-size", "32", "--epochs", "4",
            "--learning-rate", "0.05", "--validation-split", "0.2", "--name", "cli run",
            "--tag", "cli", "--set", "standardize=true", "--wait", "--poll", "0.05", *url,
        )  # fmt: skip
        assert submitted.returncode == 0, submitted.stderr
        job_id = submitted.stdout.splitlines()[0].split()[1]
        job = client.get_job(job_id)
        assert job["status"] == "succeeded"
        assert (job["name"], job["tags"], job["config"]["standardize"]) == (
            "cli run",
            ["cli"],
            True,
        )
        assert (job["config"]["batch_size"], job["config"]["epochs"]) == (32, 4)
        assert submitted.stdout.splitlines() == [
            f"job {job_id} queued",
            f"job {job_id} succeeded: epoch 4/4, train loss {fmt(job['latest']['train_loss'])}, "
            f"val loss {fmt(job['latest']['val_loss'])}, {wall_time_s(job):.1f} s",
        ]
        assert "\r" not in submitted.stderr
        assert submitted.stderr.splitlines()[-1].startswith("succeeded epoch 4/4 loss ")

        # jobs list / show
        assert as_json("jobs", "list", "--tag", "cli", *url) == client.list_jobs(tag="cli")
        header, rows = table(ok("jobs", "list", "--status", "succeeded", *url, real=True))
        assert header == [
            "ID", "STATUS", "DATASET", "MODEL", "BATCH", "EPOCH", "TRAIN LOSS", "VAL LOSS",
            "NAME", "CREATED",
        ]  # fmt: skip
        assert rows[0][:9] == [
            job_id, "succeeded", dataset["id"], "linear", "32", "4/4",
            fmt(job["latest"]["train_loss"]), fmt(job["latest"]["val_loss"]), "cli run",
        ]  # fmt: skip
        assert as_json("jobs", "show", job_id, *url) == client.get_job(job_id)
        shown = ok("jobs", "show", job_id, *url)
        assert "status        succeeded\n" in shown
        assert "  batch_size            32\n" in shown

        # jobs history: JSON, the table, the CSV export, downsampling
        history = client.history(job_id)
        assert as_json("jobs", "history", job_id, *url, real=True) == history
        assert as_json("jobs", "history", job_id, "--max-points", "4", *url) == client.history(
            job_id, max_points=4
        )
        header, rows = table(ok("jobs", "history", job_id, *url).split("\n\n")[0])
        assert header[:5] == ["EPOCH", "TRAIN LOSS", "VAL LOSS", "VAL RMSE", "VAL R2"]
        assert "VAL ACC" not in header  # regression: no accuracy column
        assert [row[:3] for row in rows] == [
            [str(epoch), fmt(train), fmt(val)]
            for epoch, train, val in zip(
                history["epoch"], history["train_loss"], history["val_loss"], strict=True
            )
        ]
        assert ok("jobs", "history", job_id, "--csv", *url) == client.history_csv(job_id)
        steps_csv = ok("jobs", "history", job_id, "--csv", "--table", "steps", *url)
        assert steps_csv.splitlines()[0] == "step,loss"
        assert len(steps_csv.splitlines()) == 1 + history["total_steps"]

        # jobs predict: the API's answer; the table shows the same numbers
        rows_x = [[1.0, 2.0], [0.0, 0.0]]
        prediction = as_json("jobs", "predict", job_id, "--x", json.dumps(rows_x), *url)
        assert prediction == client.predict(job_id, rows_x)
        header, rows = table(ok("jobs", "predict", job_id, "--x", json.dumps(rows_x), *url))
        assert header == ["ROW", "PREDICTION"]
        assert rows == [[str(i), fmt(p)] for i, p in enumerate(prediction["predictions"])]

        # jobs cancel: a long job (1 step per row, 2·10⁴ epochs: 8 M steps, under the 10 M
        # a job may take) cancelled; then 409
        long_job = as_json(
            "jobs", "submit", "--dataset", dataset["id"], "--batch-size", "1",
            "--epochs", "20000", *url,
        )  # fmt: skip
        assert long_job["status"] == "queued"
        cancelled = as_json("jobs", "cancel", long_job["id"], *url, real=True)
        assert cancelled["id"] == long_job["id"]
        assert cancelled["status"] == "cancelled" or cancelled["cancel_requested"]
        final = client.wait_for_job(long_job["id"], poll_s=0.05, timeout_s=30)
        assert final["status"] == "cancelled"
        again = here("jobs", "cancel", long_job["id"], *url)
        assert again.returncode == 1
        assert "409" in again.stderr
        assert "already finished (cancelled)" in again.stderr

        # datasets delete
        spare = client.upload_dataset(csv, name="spare")
        assert ok("datasets", "delete", spare["id"], *url) == f"deleted dataset {spare['id']}\n"
        with pytest.raises(BatchwiseAPIError) as gone:
            client.get_dataset(spare["id"])
        assert gone.value.status == 404


def test_wait_on_a_terminal_draws_one_rewritten_progress_line(service: str, tmp_path: Path) -> None:
    with BatchwiseClient(service) as client:
        dataset = client.upload_dataset(write_line_csv(tmp_path / "line.csv"))
    leader, follower = pty.openpty()
    try:
        process = subprocess.Popen(
            [
                sys.executable, "-m", "service", "jobs", "submit", "--dataset", dataset["id"],
                "--epochs", "3", "--wait", "--poll", "0.05", "--url", service,
            ],
            cwd=REPO_ROOT,
            stdout=subprocess.PIPE,
            stderr=follower,
            text=True,
        )  # fmt: skip
        stdout, _ = process.communicate(timeout=120)
        os.close(follower)
        follower = -1
        drawn = b""
        while True:
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # EIO: the child closed its end
                break
            if not chunk:
                break
            drawn += chunk
    finally:
        if follower != -1:
            os.close(follower)
        os.close(leader)
    assert process.returncode == 0, drawn
    text = drawn.decode().replace("\r\n", "\n")  # the terminal's own newline translation
    updates = text.split("\r")[1:]
    assert updates, text
    assert all(update.startswith("[") for update in updates)
    assert "] succeeded epoch 3/3 loss " in updates[-1]
    assert "#" * 24 in updates[-1]  # the bar is full at the end
    assert text.endswith("\n")
    assert text.count("\n") == 1  # one line, ended once at the end
    assert " succeeded: epoch 3/3, train loss " in stdout


def test_error_paths_print_the_problem_and_exit_1(service: str, tmp_path: Path) -> None:
    url = ("--url", service)
    with BatchwiseClient(service) as client:
        dataset = client.upload_dataset(write_line_csv(tmp_path / "line.csv", rows=50))

    unknown = cli("jobs", "show", "no-such-job", *url)
    assert (unknown.returncode, unknown.stdout) == (1, "")
    assert unknown.stderr.splitlines() == [
        "batchwise jobs show: error: 404 Not found",
        "  No job with id 'no-such-job'.",
    ]
    gone = here("datasets", "delete", "no-such-dataset", *url)
    assert gone.returncode == 1
    assert "  No dataset with id 'no-such-dataset'." in gone.stderr
    no_history = here("jobs", "history", "no-such-job", "--json", *url)
    assert (no_history.returncode, no_history.stdout) == (1, "")
    assert "404" in no_history.stderr

    # a config that cannot run: refused before queueing, the field named
    too_big = cli("jobs", "submit", "--dataset", dataset["id"], "--batch-size", "1000", *url)
    assert too_big.returncode == 1
    assert "422" in too_big.stderr
    assert "  body.batch_size: 1000 is larger than the 50 training rows" in too_big.stderr
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"optimizer": "adagrad", "epochs": 2}), encoding="utf-8")
    bad_field = here("jobs", "submit", "--dataset", dataset["id"], "--config", str(config), *url)
    assert bad_field.returncode == 1
    assert "  body.optimizer: " in bad_field.stderr
    assert client_jobs(service) == []  # nothing was queued

    # --config: flags override it; an unreadable or non-object file is a usage error (2)
    config.write_text(json.dumps({"epochs": 2, "batch_size": 5, "seed": 7}), encoding="utf-8")
    job = as_json(
        "jobs", "submit", "--dataset", dataset["id"], "--config", str(config),
        "--batch-size", "10", *url,
    )  # fmt: skip
    assert (job["config"]["epochs"], job["config"]["batch_size"], job["config"]["seed"]) == (
        2,
        10,
        7,
    )
    config.write_text("{not json", encoding="utf-8")
    broken = here("jobs", "submit", "--dataset", dataset["id"], "--config", str(config), *url)
    assert broken.returncode == 2
    assert f"--config {config} is not JSON" in broken.stderr
    missing = here("jobs", "submit", "--dataset", dataset["id"], "--config", "nope.json", *url)
    assert missing.returncode == 2
    assert "error: cannot read --config nope.json" in missing.stderr

    # no model before the job has succeeded (409); rows of the wrong width name the row (422)
    cancelled = as_json(
        "jobs", "submit", "--dataset", dataset["id"], "--batch-size", "1",
        "--epochs", "100000", *url,
    )  # fmt: skip
    ok("jobs", "cancel", cancelled["id"], *url)
    with BatchwiseClient(service) as client:
        client.wait_for_job(cancelled["id"], poll_s=0.05, timeout_s=60)
    no_model = here("jobs", "predict", cancelled["id"], "--x", "[[1.0, 2.0]]", *url)
    assert no_model.returncode == 1
    assert no_model.stderr.startswith("batchwise jobs predict: error: 409 ")
    with BatchwiseClient(service) as client:
        assert client.wait_for_job(job["id"], poll_s=0.05, timeout_s=60)["status"] == "succeeded"
    wrong = here("jobs", "predict", job["id"], "--x", "[[1.0, 2.0, 3.0]]", *url)
    assert wrong.returncode == 1
    assert "  body.X.0: expected 2 values, got 3" in wrong.stderr
    assert here("jobs", "predict", job["id"], "--x", "[[1", *url).returncode == 2

    # a server-side query check: --limit out of bounds
    limit = here("jobs", "list", "--limit", "0", *url)
    assert limit.returncode == 1
    assert "  query.limit: " in limit.stderr


def client_jobs(base_url: str) -> list[str]:
    with BatchwiseClient(base_url) as client:
        return [job["id"] for job in client.iter_jobs()]


def test_unreachable_service_names_the_url_it_tried() -> None:
    result = cli("jobs", "list", "--url", UNREACHABLE)
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr.startswith(f"batchwise jobs list: error: cannot reach {UNREACHABLE} ")
    from_env = cli("datasets", "show", "abc", env={"BATCHWISE_URL": UNREACHABLE + "/"})
    assert from_env.returncode == 1
    assert f"cannot reach {UNREACHABLE} (GET /v1/datasets/abc)" in from_env.stderr


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("datasets",), ["upload", "list", "show", "delete"]),
        (("datasets", "upload"), ["FILE", "--target", "--invalid-rows", "--url", "--json"]),
        (("datasets", "list"), ["--limit", "--cursor", "--all", "BATCHWISE_URL"]),
        (("jobs",), ["submit", "list", "show", "history", "cancel", "predict"]),
        (("jobs", "submit"), ["--dataset", "--config", "--batch-size", "--wait", "--set"]),
        (("jobs", "list"), ["--status", "--dataset", "--tag", "--limit"]),
        (("jobs", "history"), ["--max-points", "--csv", "--table"]),
        (("jobs", "cancel"), ["--url", "--json"]),
        (("jobs", "predict"), ["--x"]),
    ],
)
def test_help_everywhere(
    args: tuple[str, ...], words: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main([*args, "--help"])
    assert exited.value.code == 0
    shown = capsys.readouterr().out
    for word in words:
        assert word in shown


def usage_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """Run ``batchwise ARGV`` in this process; require exit 2; answer its stderr."""
    try:
        status = main(argv)
    except SystemExit as exc:  # argparse's own usage errors
        status = exc.code  # type: ignore[assignment]
    assert status == 2
    return capsys.readouterr().err


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert "the following arguments are required: ACTION" in usage_error(["jobs"], capsys)
    assert "required: --dataset" in usage_error(["jobs", "submit"], capsys)
    bad_status = usage_error(["jobs", "list", "--status", "sleeping"], capsys)
    assert "invalid choice: 'sleeping'" in bad_status
    no_file = usage_error(["datasets", "upload", "missing.csv", "--url", UNREACHABLE], capsys)
    assert no_file == "batchwise datasets upload: error: no such file: missing.csv\n"
    bad_set = usage_error(
        ["jobs", "submit", "--dataset", "d", "--set", "epochs", "--url", UNREACHABLE], capsys
    )
    assert bad_set == "batchwise jobs submit: error: --set 'epochs': expected KEY=JSON\n"
    bad_layers = usage_error(
        ["jobs", "submit", "--dataset", "d", "--hidden-layers", "32,x", "--url", UNREACHABLE],
        capsys,
    )
    assert "--hidden-layers '32,x': expected widths like 32,16" in bad_layers
    bad_poll = usage_error(
        ["jobs", "submit", "--dataset", "d", "--poll", "0", "--url", UNREACHABLE], capsys
    )
    assert "--poll must be > 0" in bad_poll


def test_job_body_layers_config_then_set_then_flags(tmp_path: Path) -> None:
    config = tmp_path / "job.json"
    config.write_text(
        json.dumps({"dataset_id": "ignored", "epochs": 3, "optimizer": "adam", "seed": 1}),
        encoding="utf-8",
    )
    args = build_parser().parse_args(
        [
            "jobs", "submit", "--dataset", "d", "--config", str(config), "--set", "seed=2",
            "--set", 'lr_schedule={"kind": "cosine"}', "--set", "optimizer=momentum",
            "--epochs", "5", "--hidden-layers", "32,16", "--tag", "a", "--tag", "b",
        ]
    )  # fmt: skip
    assert build_job_body(args) == {
        "epochs": 5,
        "optimizer": "momentum",
        "seed": 2,
        "lr_schedule": {"kind": "cosine"},
        "hidden_layers": [32, 16],
        "tags": ["a", "b"],
    }


def test_job_body_takes_a_warm_start_and_the_checkpoints_to_keep(
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = build_parser().parse_args(
        [
            "jobs", "submit", "--dataset", "d", "--epochs", "9", "--init-from", "job-1:4",
            "--reset-optimizer", "--keep-checkpoints", "5,7",
        ]
    )  # fmt: skip
    assert build_job_body(args) == {
        "epochs": 9,
        "init_from": {"job_id": "job-1", "epoch": 4, "reset_optimizer": True},
        "keep_checkpoints": [5, 7],
    }
    every = build_parser().parse_args(
        ["jobs", "submit", "--dataset", "d", "--init-from", "j:2", "--keep-checkpoints", "all"]
    )
    assert build_job_body(every) == {
        "init_from": {"job_id": "j", "epoch": 2},
        "keep_checkpoints": "all",
    }
    submit = ["jobs", "submit", "--dataset", "d", "--url", UNREACHABLE]
    bad = usage_error([*submit, "--init-from", "job-1"], capsys)
    assert "--init-from 'job-1': expected JOB:EPOCH" in bad
    bad = usage_error([*submit, "--init-from", "job-1:x"], capsys)
    assert "--init-from 'job-1:x': expected JOB:EPOCH" in bad
    bad = usage_error([*submit, "--reset-optimizer"], capsys)
    assert "--reset-optimizer goes with --init-from JOB:EPOCH" in bad
    bad = usage_error([*submit, "--keep-checkpoints", "2,last"], capsys)
    assert "--keep-checkpoints '2,last': expected epochs like 2,4, or all" in bad


# --- the client methods the CLI stands on -----------------------------------------------------


def test_client_pages_models_predictions_and_deletes(service: str, tmp_path: Path) -> None:
    csv = write_line_csv(tmp_path / "line.csv", rows=100)
    with BatchwiseClient(service) as client:
        datasets = [client.upload_dataset(csv, name=f"d{i}") for i in range(3)]
        newest_first = [d["id"] for d in reversed(datasets)]
        first = client.list_datasets(limit=2)
        assert [d["id"] for d in first["items"]] == newest_first[:2]
        assert first["next_cursor"] is not None
        rest = client.list_datasets(limit=2, cursor=first["next_cursor"])
        assert ([d["id"] for d in rest["items"]], rest["next_cursor"]) == (newest_first[2:], None)
        assert [d["id"] for d in client.iter_datasets(page_size=1)] == newest_first

        jobs = [
            client.submit_job(datasets[0]["id"], epochs=2, batch_size=50, tags=[f"t{i % 2}"])
            for i in range(3)
        ]
        done = client.wait_for_jobs([j["id"] for j in jobs], poll_s=0.05, timeout_s=60)
        assert [j["status"] for j in done] == ["succeeded"] * 3
        assert [j["id"] for j in client.iter_jobs(tag="t0", page_size=1)] == [
            jobs[2]["id"],
            jobs[0]["id"],
        ]
        assert [j["id"] for j in client.iter_jobs(status="queued")] == []
        page = client.list_jobs(dataset_id=datasets[0]["id"], limit=1)
        assert [j["id"] for j in page["items"]] == [jobs[2]["id"]]

        # the model: JSON parameters and the same arrays in the NPZ download
        model = client.get_model(jobs[0]["id"])
        assert (model["model"], model["feature_names"]) == ("linear", ["x0", "x1"])
        arrays = np.load(io.BytesIO(client.get_model_npz(jobs[0]["id"])), allow_pickle=False)
        W, b = np.asarray(model["params"]["W"]), np.asarray(model["params"]["b"])
        # theta, the flat parameter vector, is W then b
        np.testing.assert_array_equal(arrays["theta"], np.concatenate([W.ravel(), b.ravel()]))
        # linear, no standardisation: ŷ = X·W + b, exactly what the service answers
        X = np.array([[1.0, 2.0], [-0.5, 0.25]])
        expected = (X @ W.reshape(2, -1) + b).ravel()
        predicted = client.predict(jobs[0]["id"], X)["predictions"]
        np.testing.assert_allclose(predicted, expected, rtol=1e-5)

        # deletes: a finished job goes; a dataset with no live job goes; then 404
        client.delete_job(jobs[1]["id"])
        with pytest.raises(BatchwiseAPIError) as gone:
            client.get_job(jobs[1]["id"])
        assert gone.value.status == 404
        client.delete_dataset(datasets[2]["id"])
        assert [d["id"] for d in client.iter_datasets()] == newest_first[1:]

        assert client.list_sweeps() == {"items": [], "next_cursor": None}
        assert list(client.iter_sweeps()) == []
