"""``batchwise demo``: its dataset, sizes and output helpers, then the real command as a
subprocess against a live server and with its embedded one."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

import httpx
import numpy as np
import pytest
from plots.images import svg_root

from service.demo import (
    FULL,
    QUICK,
    ProgressLine,
    format_table,
    make_dataset,
    run_demo,
    sweep_batch_sizes,
)

ServeProcess = Callable[..., AbstractContextManager[str]]
REPO_ROOT = Path(__file__).resolve().parents[1]
QUICK_PLOTS = {
    "seed-batch32-loss.svg",
    "seed-batch128-loss.svg",
    "sweep-curves-step.svg",
    "sweep-curves-samples.svg",
    "sweep-scaling.svg",
}


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    child_env = {k: v for k, v in os.environ.items() if not k.startswith("BATCHWISE_")}
    return subprocess.run(
        [sys.executable, "-m", "service", *args],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env=child_env | (env or {}),
        timeout=120,
        check=False,
    )


# --- the dataset and the plan ---------------------------------------------------------------


def test_dataset_is_deterministic_and_what_it_says() -> None:
    data = make_dataset(20_000)
    again = make_dataset(20_000)
    assert data.X.shape == (20_000, 16)
    assert data.y.shape == (20_000,)
    assert data.X.tobytes() == again.X.tobytes()
    assert data.y.tobytes() == again.y.tobytes()
    assert make_dataset(20_000, seed=1).y.tobytes() != data.y.tobytes()
    assert np.linalg.norm(data.weights) == pytest.approx(1.0, abs=1e-12)
    # Isotropic, standardized features: sample mean 0 and covariance I within sampling error
    # (standard error 1/√n ≈ 0.007; allow 5 of them).
    assert np.abs(data.X.mean(axis=0)).max() < 0.035
    assert np.abs(np.cov(data.X.T) - np.eye(16)).max() < 0.035
    # Least squares recovers w and b, and its residual variance is the stated noise σ² = 1
    # (standard error σ²·√(2/n) = 0.01).
    design = np.column_stack([data.X, np.ones(20_000)])
    coef, *_ = np.linalg.lstsq(design, data.y, rcond=None)
    assert np.abs(coef[:16] - data.weights).max() < 0.03
    assert coef[16] == pytest.approx(data.bias, abs=0.03)
    residual = data.y - design @ coef
    assert float(residual.var()) == pytest.approx(data.noise_std**2, abs=0.04)
    assert "20,000 × 16 standard normal" in data.describe()
    assert f"seed {data.seed}" in data.describe()
    with pytest.raises(ValueError, match="n_rows"):
        make_dataset(1)


def test_batch_sizes_are_powers_of_two_below_the_training_rows() -> None:
    assert sweep_batch_sizes(16_000) == [8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096]
    assert sweep_batch_sizes(4096) == [8, 16, 32, 64, 128, 256, 512, 1024, 2048]
    assert sweep_batch_sizes(1600, smallest=16, stride=2) == [16, 64, 256, 1024]
    assert (FULL.train_rows, FULL.batch_sizes[0], FULL.batch_sizes[-1]) == (16_000, 8, 4096)
    assert (QUICK.train_rows, QUICK.batch_sizes) == (1600, [16, 64, 256, 1024])
    assert FULL.target_loss(1.0) == pytest.approx(1.05)
    assert QUICK.target_loss(2.0) == pytest.approx(4.4)


# --- output helpers -------------------------------------------------------------------------


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_on_a_terminal_rewrites_one_line() -> None:
    stream = Terminal()
    progress = ProgressLine(stream)
    progress.update("abc")
    progress.update("a")
    progress.done()
    progress.update("next")
    progress.done("final")
    assert stream.getvalue() == "\rabc\ra  \ra\n\rnext\rfinal\n"


def test_progress_elsewhere_writes_plain_lines_when_the_text_changes() -> None:
    stream = io.StringIO()
    progress = ProgressLine(stream, plain_interval_s=0.0)
    for text in ("a", "a", "b"):
        progress.update(text)
    progress.done()
    assert stream.getvalue() == "a\nb\n"

    throttled = io.StringIO()
    progress = ProgressLine(throttled, plain_interval_s=3600.0)
    for text in ("a", "b", "c"):
        progress.update(text)
    progress.done("finished")
    assert throttled.getvalue() == "a\nfinished\n"  # in between, too soon after "a"


def test_format_table_aligns_columns() -> None:
    table = format_table(["batch", "loss"], [["8", "1.5"], ["4096", "0.25"]])
    assert table == "batch  loss\n-----  ----\n8       1.5\n4096   0.25"


# --- the command ----------------------------------------------------------------------------


def test_demo_help_names_its_options() -> None:
    result = run_cli("demo", "--help")
    assert result.returncode == 0, result.stderr
    for words in ("--url", "--out", "--quick", "--format", "--data-dir", "8 … 4,096"):
        assert words in result.stdout


def test_quick_demo_against_a_live_server(serve_process: ServeProcess, tmp_path: Path) -> None:
    data_dir = tmp_path / "server-data"
    out = tmp_path / "plots"
    with serve_process(
        database_url=f"sqlite:///{(data_dir / 'batchwise.db').as_posix()}",
        data_dir=data_dir,
        env={"BATCHWISE_WORKERS": "2"},
    ) as base_url:
        result = run_cli("demo", "--quick", "--url", base_url, "--out", str(out))
        assert result.returncode == 0, result.stdout + result.stderr
        with httpx.Client(base_url=base_url) as http:
            sweeps = http.get("/v1/sweeps").json()["items"]
            comparison = http.get("/v1/jobs", params={"tag": "seed-comparison"}).json()
    stdout = result.stdout
    assert f"against {base_url}" in stdout
    assert "2,000 × 16 standard normal" in stdout

    # The seed comparison: one row per job with its epochs and steps (1,600 training rows).
    assert re.search(r"^32\s+10\s+0\.01\s+500\s+16,000\s", stdout, re.MULTILINE)
    assert re.search(r"^128\s+5\s+0\.01\s+65\s+8,000\s", stdout, re.MULTILINE)
    assert sorted(job["config"]["batch_size"] for job in comparison["items"]) == [32, 128]

    # The sweep's table: its header, then one row per batch size, in order.
    header = re.search(r"^batch\s+lr\s+final train\s+final val\s+steps→T.*samples/s$", stdout, re.M)
    assert header is not None
    rows = re.findall(r"^(\d+)\s+\S+\s+\d", stdout[header.end() :], re.MULTILINE)
    assert rows[:4] == ["16", "64", "256", "1024"]
    assert "Target: train loss 1.1" in stdout
    assert "Fit of S(B) = S_min (1 + B_noise / B)" in stdout
    assert [sweep["batch_sizes"] for sweep in sweeps] == [[16, 64, 256, 1024]]
    assert sweeps[0]["status"] == "succeeded"

    # Progress went to stderr as plain lines (not a terminal); the plots to --out.
    assert "sweep succeeded" in result.stderr
    assert "\r" not in result.stderr
    assert {path.name for path in out.iterdir()} == QUICK_PLOTS
    for path in out.iterdir():
        svg_root(path.read_bytes())


def test_quick_demo_with_its_embedded_service(tmp_path: Path) -> None:
    data_dir, out = tmp_path / "data", tmp_path / "plots"
    result = run_cli(
        "demo", "--quick", "--data-dir", str(data_dir), "--out", str(out), "--format", "png"
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Starting the embedded service" in result.stderr
    assert (data_dir / "batchwise.db").is_file()
    assert (data_dir / "serve.log").is_file()
    assert {path.suffix for path in out.iterdir()} == {".png"}
    assert len(list(out.iterdir())) == len(QUICK_PLOTS)
    # Stopped at the end: its port no longer answers.
    match = re.search(r"against (http://127\.0\.0\.1:\d+)", result.stdout)
    assert match is not None
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{match.group(1)}/healthz", timeout=2)


def test_unreachable_url_is_one_line_and_exit_1(free_port: int, tmp_path: Path) -> None:
    result = run_cli("demo", "--quick", "--url", f"http://127.0.0.1:{free_port}")
    assert result.returncode == 1
    assert result.stderr.startswith(
        f"batchwise demo: error: cannot reach http://127.0.0.1:{free_port}"
    )
    assert "Traceback" not in result.stderr


def test_embedded_service_that_cannot_start_is_reported_with_its_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BATCHWISE_LEASE_SECONDS", "-1")  # the embedded serve refuses it
    stdout, stderr = io.StringIO(), io.StringIO()
    status = run_demo(
        quick=True, data_dir=tmp_path / "data", out=tmp_path, stdout=stdout, stderr=stderr
    )
    assert status == 1
    message = stderr.getvalue()
    assert "the embedded service exited with 1 before it answered" in message
    assert "lease_seconds" in message  # the end of its log says why
    assert stdout.getvalue() == ""

    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("", encoding="utf-8")
    monkeypatch.delenv("BATCHWISE_LEASE_SECONDS")
    stderr = io.StringIO()
    status = run_demo(quick=True, data_dir=not_a_dir, out=tmp_path, stdout=stdout, stderr=stderr)
    assert status == 1
    assert f"cannot use {not_a_dir} as the data dir" in stderr.getvalue()
