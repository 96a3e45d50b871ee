"""``batchwise demo``: its dataset, sizes and output helpers, then the real command as a
subprocess against a live server and with its embedded one."""

from __future__ import annotations

import io
import math
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

from service.client.demo import (
    FULL,
    QUICK,
    DemoDataset,
    make_dataset,
    run_demo,
    sweep_batch_sizes,
)
from service.client.formatting import format_table
from service.client.progress import ProgressLine
from service.core import TrainConfig, Training, TrainingDiverged
from service.core.config import Evaluation as EvaluationConfig
from service.science import (
    MIN_S_MIN,
    Evaluation,
    SweepPoint,
    TargetCrossing,
    fit_critical_batch,
    steps_to_target,
)
from service.science.fit import EASY_STEPS
from tests.support.images import svg_root

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
    # Ill-conditioned on purpose: independent columns, variances log-spaced from 1 to 1/30
    # (standard error of a sample variance s²·√(2/n) ≈ 0.01 s²; allow 5 of them).
    scales = np.logspace(0.0, -0.5 * np.log10(30.0), 16)
    np.testing.assert_allclose(data.feature_scales, scales, rtol=1e-12)
    assert data.condition_number == pytest.approx(30.0, rel=1e-12)
    covariance = np.cov(data.X.T)
    np.testing.assert_allclose(np.diag(covariance), scales**2, rtol=0.05)
    off_diagonal = covariance / np.outer(scales, scales) - np.eye(16)
    assert np.abs(off_diagonal).max() < 0.035  # correlations: standard error 1/√n ≈ 0.007
    # Every direction carries the same share of the signal variance 4: |w_j| s_j = ½.
    np.testing.assert_allclose(np.abs(data.weights) * scales, 0.5, rtol=1e-12)
    # Least squares recovers w and b, and its residual variance is the stated noise σ² = 1
    # (standard error σ²·√(2/n) = 0.01).
    design = np.column_stack([data.X, np.ones(20_000)])
    coef, *_ = np.linalg.lstsq(design, data.y, rcond=None)
    assert np.abs((coef[:16] - data.weights) * scales).max() < 0.03
    assert coef[16] == pytest.approx(data.bias, abs=0.03)
    residual = data.y - design @ coef
    assert float(residual.var()) == pytest.approx(data.noise_std**2, abs=0.04)
    assert "20,000 × 16 independent normal columns" in data.describe()
    assert "condition number 30" in data.describe()
    assert f"seed {data.seed}" in data.describe()
    with pytest.raises(ValueError, match="n_rows"):
        make_dataset(1)
    with pytest.raises(ValueError, match="condition_number"):
        make_dataset(10, condition_number=0.5)


def test_batch_sizes_are_powers_of_two_below_the_training_rows() -> None:
    assert sweep_batch_sizes(16_000) == [8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096]
    assert sweep_batch_sizes(4096) == [8, 16, 32, 64, 128, 256, 512, 1024, 2048]
    assert sweep_batch_sizes(1600, smallest=16, stride=2) == [16, 64, 256, 1024]
    assert (FULL.train_rows, FULL.batch_sizes[0], FULL.batch_sizes[-1]) == (16_000, 8, 4096)
    assert (QUICK.train_rows, QUICK.batch_sizes) == (1600, [8, 32, 128, 512])
    assert FULL.target_loss(1.0) == pytest.approx(1.05)
    assert QUICK.target_loss(2.0) == pytest.approx(4.4)


def _steps_to_target(
    data: DemoDataset, batch_size: int, rate: float, seed: int, target: float
) -> TargetCrossing | None:
    """One full-demo sweep point, in-process: the service's job config (not standardized,
    20 % held out, evaluations on train), stopped once the target is reached."""
    config = TrainConfig(
        model="linear",
        batch_size=batch_size,
        learning_rate=rate,
        epochs=FULL.sweep_epochs,
        seed=seed,
        validation_split=FULL.validation_split,
        evaluation=EvaluationConfig(on="train"),
    )
    evaluations: list[Evaluation] = []
    try:
        for record in Training(data.X, data.y, config):
            evaluations += [
                Evaluation(e.step, e.samples, 0.0, 0.0, e.loss) for e in record.evaluations
            ]
            if min(e.loss for e in evaluations) <= target:
                break
    except TrainingDiverged:
        return None
    return steps_to_target(evaluations, target)


def _tuned(
    data: DemoDataset, batch_size: int, start: float, target: float
) -> tuple[int, tuple[TargetCrossing | None, ...]]:
    """Walk rates start·√2^k toward fewer steps (geometric mean over the seeds) until the best
    is interior; (k, its crossings)."""
    tried: dict[int, tuple[float, tuple[TargetCrossing | None, ...]]] = {}

    def steps(k: int) -> float:
        if k not in tried:
            rate = start * math.sqrt(2) ** k
            crossings = tuple(
                _steps_to_target(data, batch_size, rate, seed, target) for seed in range(FULL.seeds)
            )
            reached = [c.steps for c in crossings if c is not None]
            mean = math.prod(reached) ** (1 / len(reached)) if reached else math.inf
            tried[k] = (mean if len(reached) == FULL.seeds else math.inf, crossings)
        return tried[k][0]

    k = 0
    for _ in range(12):
        if steps(k) <= steps(k - 1) and steps(k) <= steps(k + 1):
            break
        k = k - 1 if steps(k - 1) < steps(k + 1) else k + 1
    assert steps(k) < math.inf, f"batch {batch_size} never reached the target"
    return k, tried[k][1]


def test_full_demo_data_give_a_critical_batch_fit_in_process() -> None:
    """The full demo's sweep, in-process: per batch size the rate walks a √2 grid to its
    interior best (fewest steps, geometric mean over the seeds); the default guard accepts."""
    data = make_dataset(FULL.n_rows)
    target = FULL.target_loss(data.noise_std)
    points, rate = [], 0.05
    for batch_size in FULL.batch_sizes:
        k, crossings = _tuned(data, batch_size, rate, target)
        points.append(SweepPoint(batch_size, crossings))
        rate *= math.sqrt(2) ** k
    fit = fit_critical_batch(points, rng=np.random.default_rng(0), n_resamples=300)
    assert fit.b_noise is not None, fit.reason
    assert fit.s_min is not None
    assert fit.r2_log is not None
    assert fit.b_noise_ci is not None
    assert fit.batch_sizes == tuple(FULL.batch_sizes)  # every batch size reached the target
    assert fit.s_min >= MIN_S_MIN
    assert FULL.batch_sizes[0] < fit.b_noise < FULL.batch_sizes[-1]
    assert fit.b_noise_ci.low is not None
    assert fit.b_noise_ci.high is not None
    assert FULL.batch_sizes[0] < fit.b_noise_ci.low < fit.b_noise < fit.b_noise_ci.high
    assert fit.r2_log > 0.95
    # the isotropic data the demo used to ship: the largest batches need a step or two, and
    # the refusal says the problem, not the target, is at fault
    iso = make_dataset(FULL.n_rows, condition_number=1.0)
    largest = _steps_to_target(iso, FULL.batch_sizes[-1], 0.5, 0, target)
    assert largest is not None
    assert largest.steps < EASY_STEPS


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
    assert "2,000 × 16 independent normal columns" in stdout

    # The seed comparison: one row per job with its epochs and steps (1,600 training rows).
    assert re.search(r"^32\s+10\s+0\.01\s+500\s+16,000\s", stdout, re.MULTILINE)
    assert re.search(r"^128\s+5\s+0\.01\s+65\s+8,000\s", stdout, re.MULTILINE)
    assert sorted(job["config"]["batch_size"] for job in comparison["items"]) == [32, 128]

    # The sweep's table: its header, then one row per batch size, in order.
    header = re.search(r"^batch\s+lr\s+final train\s+final val\s+steps→T.*samples/s$", stdout, re.M)
    assert header is not None
    rows = re.findall(r"^(\d+)\s+\S+\s+\d", stdout[header.end() :], re.MULTILINE)
    assert rows[:4] == ["8", "32", "128", "512"]
    assert "Target: train loss 1.1" in stdout
    # Ill-conditioned features: the fit succeeds, with B_noise and its interval inside the
    # batch sizes measured, S_min over the service's guard of 10 steps and a high R².
    fit = re.search(
        r"^Fit of S\(B\) = S_min \(1 \+ B_noise / B\) over batch sizes 8, 32, 128, 512: "
        r"B_noise ≈ ([\d.,]+) \(95% interval ([\d.,]+)–([\d.,]+)\), S_min ≈ ([\d.]+) steps.*"
        r"R² of the fit in log space ([\d.]+)\.$",
        stdout,
        re.MULTILINE,
    )
    assert fit is not None, stdout
    b_noise, low, high, s_min, r2 = (float(g.replace(",", "")) for g in fit.groups())
    assert 8 < low < b_noise < high
    assert b_noise < 512
    assert s_min >= 10
    assert r2 > 0.8
    # Beside it, B_simple read at the target's loss level, then the recommendation.
    assert re.search(
        r"^Measured noise scale B_simple at the target's loss level 1\.1: median [\d.,]+ over "
        r"\d batch size\(s\), range [\d.,]+–[\d.,]+",
        stdout,
        re.MULTILINE,
    )
    assert re.search(
        r"^Knee \(confidence: (high|medium)\): batch \d+ is the measured batch nearest the knee",
        stdout,
        re.M,
    )
    assert "refused" not in stdout
    assert [sweep["batch_sizes"] for sweep in sweeps] == [[8, 32, 128, 512]]
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
