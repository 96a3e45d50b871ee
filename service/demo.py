"""``batchwise demo``: the service's batch-size story, end to end, through its HTTP API only.

1. Upload a bundled dataset, generated deterministically (:func:`make_dataset`): linear
   regression y = X·w + b + ε with independent normal features whose variances are
   log-spaced over a condition number of 30 (not standardized: on isotropic features S_min
   is a step or two and no critical batch can be fitted), b = 0.5 and ε ~ N(0, 1) — the best
   possible mean squared error is the noise variance, 1.
2. The seed comparison: batch 32 × 10 epochs against batch 128 × 5 epochs, same learning rate.
3. A sweep over batch sizes 8, 16, …, 4096 (those below the training rows) with the learning
   rate searched per batch size, the fit of S(B) = S_min (1 + B_noise / B) with its interval,
   the measured noise scale B_simple at the target's loss level, and the recommendation.
4. The plots, written to ``--out``.

Against ``--url`` (with the key in ``BATCHWISE_API_KEY``) or, by default, an embedded service
this module starts itself (``batchwise serve`` with two workers on a free port of loopback,
auth off, SQLite in a temporary or given data dir) and stops at the end. Progress goes to
stderr (one updating line on a terminal, plain lines otherwise); the tables to stdout. Small
data and few epochs keep it to well under a few minutes on 2 cores.
"""

from __future__ import annotations

import math
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TextIO

import numpy as np

from service.client import (
    BatchwiseAPIError,
    BatchwiseClient,
    BatchwiseConnectionError,
    BatchwiseError,
    History,
    Job,
    Sweep,
    SweepPoint,
)

__all__ = [
    "DATASET_SEED",
    "FULL",
    "QUICK",
    "DemoDataset",
    "DemoPlan",
    "ProgressLine",
    "embedded_service",
    "format_table",
    "make_dataset",
    "run_demo",
    "sweep_batch_sizes",
]

DATASET_SEED = 20_241_126
EXIT_OK, EXIT_ERROR, EXIT_INTERRUPTED = 0, 1, 130
PlotFormat = Literal["svg", "png"]


# --- the bundled dataset --------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class DemoDataset:
    """y = X·w + b + ε: ``X`` (n_rows, n_features) with independent N(0, s_j²) columns,
    ``feature_scales`` s (n_features,) log-spaced from 1 down to 1/√κ (κ = ``condition_number``,
    the ratio of the largest to the smallest feature variance), ``weights`` w (n_features,) with
    w_j s_j = ±√(signal_variance / n_features) (every direction carries the same share of the
    signal), ``bias`` b, ε ~ N(0, noise_std²); ``y`` (n_rows,)."""

    X: np.ndarray
    y: np.ndarray
    weights: np.ndarray
    feature_scales: np.ndarray
    bias: float
    noise_std: float
    signal_variance: float
    seed: int

    @property
    def condition_number(self) -> float:
        """κ = max s_j² / min s_j²: of the feature covariance, so of the loss's Hessian in w."""
        return float((self.feature_scales.max() / self.feature_scales.min()) ** 2)

    @property
    def name(self) -> str:
        n_rows, n_features = self.X.shape
        return f"demo-linear-{n_rows}x{n_features}"

    def describe(self) -> str:
        """Where the data comes from, in words (printed by the demo)."""
        n_rows, n_features = self.X.shape
        return (
            f"synthetic linear regression, generated here (numpy default_rng, seed "
            f"{self.seed}; the same bytes every run): y = X·w + {self.bias:g} + ε with X "
            f"{n_rows:,} × {n_features} independent normal columns whose standard deviations "
            f"are log-spaced from 1 down to {self.feature_scales.min():.3g} (condition number "
            f"{self.condition_number:.3g}, deliberately not standardized: the slow, "
            f"low-variance directions are what make even full-batch steps add up), every "
            f"direction carrying an equal share of the signal variance "
            f"{self.signal_variance:g}, and noise ε ~ N(0, {self.noise_std:g}²), so the best "
            f"possible mean squared error is {self.noise_std**2:g}"
        )


def make_dataset(
    n_rows: int,
    n_features: int = 16,
    *,
    condition_number: float = 30.0,
    signal_variance: float = 4.0,
    noise_std: float = 1.0,
    bias: float = 0.5,
    seed: int = DATASET_SEED,
) -> DemoDataset:
    """The demo's dataset: deterministic in its arguments (see :class:`DemoDataset`).

    Why ill-conditioned: with isotropic features (Hessian ∝ I) one full-batch step at the
    best rate lands on the optimum, so S_min is a step or two whatever the target and the
    critical batch cannot be fitted. With feature variances spanning κ, the best large-batch
    rate is set by the largest variance while the smallest decays by (1 − 2η s_min²) a step,
    so even full-batch gradient descent needs ≈ κ/4 · ln(excess/gap) steps (κ = 30, target 5 %
    above the floor: ≈ 20)."""
    if n_rows < 2 or n_features < 1:
        raise ValueError(f"need n_rows ≥ 2 and n_features ≥ 1, not {n_rows} × {n_features}")
    if not (math.isfinite(condition_number) and condition_number >= 1.0):
        raise ValueError(f"condition_number must be a finite number ≥ 1, not {condition_number}")
    rng = np.random.default_rng(seed)
    scales = np.logspace(0.0, -0.5 * math.log10(condition_number), n_features)
    X = rng.standard_normal((n_rows, n_features)) * scales
    signs = rng.choice(np.array([-1.0, 1.0]), n_features)
    weights = signs * math.sqrt(signal_variance / n_features) / scales
    y = X @ weights + bias + noise_std * rng.standard_normal(n_rows)
    return DemoDataset(
        X=X,
        y=y,
        weights=weights,
        feature_scales=scales,
        bias=bias,
        noise_std=noise_std,
        signal_variance=signal_variance,
        seed=seed,
    )


# --- what the demo runs ---------------------------------------------------------------------


def sweep_batch_sizes(
    train_rows: int, *, smallest: int = 8, largest: int = 4096, stride: int = 1
) -> list[int]:
    """Powers of two from ``smallest`` to ``largest`` below ``train_rows`` (every
    ``stride``-th of them): 8, 16, …, 4096 for 16,000 training rows."""
    sizes: list[int] = []
    size = smallest
    while size <= largest and size < train_rows:
        sizes.append(size)
        size *= 2
    return sizes[::stride]


@dataclass(frozen=True)
class DemoPlan:
    """The sizes of one demo run."""

    n_rows: int
    validation_split: float
    smallest_batch: int
    batch_size_stride: int
    sweep_epochs: int
    lr_start: float
    lr_max_rounds: int
    target_excess: float
    seeds: int
    comparison_lr: float = 0.01

    @property
    def train_rows(self) -> int:
        """Training rows after the validation split (the service rounds n_val to nearest)."""
        return self.n_rows - math.floor(self.n_rows * self.validation_split + 0.5)

    @property
    def batch_sizes(self) -> list[int]:
        """The sweep's batch sizes."""
        return sweep_batch_sizes(
            self.train_rows, smallest=self.smallest_batch, stride=self.batch_size_stride
        )

    def target_loss(self, noise_std: float) -> float:
        """The sweep's target: the training loss ``target_excess`` above the noise floor σ²
        (the mean squared error of the true w and b)."""
        return noise_std**2 * (1.0 + self.target_excess)

    def describe(self, noise_std: float) -> str:
        rounds = f"at most {self.lr_max_rounds} rounds"
        return (
            f"{self.sweep_epochs} epochs per point, {self.seeds} seed(s), learning rate "
            f"searched per batch size from a guess of {self.lr_start:g} at batch "
            f"{self.smallest_batch} ({rounds}); target: "
            f"training loss {self.target_loss(noise_std):.4g}, {self.target_excess:.0%} above "
            f"the noise floor σ² = {noise_std**2:g}"
        )


#: The full demo: 20,000 rows so batch 4,096 is still 4 steps an epoch, and 8 epochs so it
#: reaches the target (≈ 20 steps); the best rates run from ≈ 0.05 (batch 8) to ≈ 0.8 (the
#: stability edge, 1/s_max² = 1), so the search's guess at batch 8 is 0.05 (scaled by √B).
FULL = DemoPlan(
    n_rows=20_000,
    validation_split=0.2,
    smallest_batch=8,
    batch_size_stride=1,
    sweep_epochs=8,
    lr_start=0.05,
    lr_max_rounds=8,
    target_excess=0.05,
    seeds=2,
)
#: ``--quick``: a tenth of the rows, batch sizes 8, 32, 128, 512, a shallower target.
QUICK = DemoPlan(
    n_rows=2_000,
    validation_split=0.2,
    smallest_batch=8,
    batch_size_stride=2,
    sweep_epochs=12,
    lr_start=0.05,
    lr_max_rounds=6,
    target_excess=0.10,
    seeds=2,
)

COMPARISON = ((32, 10), (128, 5))  # (batch size, epochs): the seed comparison


# --- output ---------------------------------------------------------------------------------


class ProgressLine:
    """Progress on ``stream``: on a terminal one line rewritten in place (``\\r``), otherwise
    a plain line whenever the text changes, at most one every ``plain_interval_s`` seconds
    (the last is always written by :meth:`done`)."""

    def __init__(self, stream: TextIO, *, plain_interval_s: float = 2.0) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.plain_interval_s = plain_interval_s
        self._last_text = ""
        self._last_written = ""
        self._last_time = -math.inf
        self._width = 0

    def update(self, text: str) -> None:
        """Show ``text`` as the current state."""
        self._last_text = text
        if self.tty:
            padding = " " * max(0, self._width - len(text))
            self.stream.write(f"\r{text}{padding}")
            self._width = len(text)
            self.stream.flush()
            return
        now = time.monotonic()
        if text != self._last_written and now - self._last_time >= self.plain_interval_s:
            self._write_plain(text, now)

    def done(self, text: str | None = None) -> None:
        """Finish the line with ``text`` (default the last state shown)."""
        final = self._last_text if text is None else text
        if self.tty:
            self.update(final)
            self.stream.write("\n")
            self.stream.flush()
            self._width = 0
        elif final and final != self._last_written:
            self._write_plain(final, time.monotonic())
        self._last_text = ""

    def _write_plain(self, text: str, now: float) -> None:
        self.stream.write(text + "\n")
        self.stream.flush()
        self._last_written, self._last_time = text, now


def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain-text table: the first column left-aligned, the others right-aligned."""
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]

    def line(cells: Sequence[str]) -> str:
        parts = [
            cell.ljust(width) if i == 0 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  ".join(parts).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), rule, *(line(row) for row in rows)])


def _num(value: float | None, digits: int = 4) -> str:
    """A figure to ``digits`` significant digits, thousands separated; "—" for none."""
    if value is None or not math.isfinite(value):
        return "—"
    if abs(value) >= 10 ** (digits - 1):
        return f"{value:,.0f}"
    return f"{value:.{digits}g}"


def _seconds(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "—"
    return f"{value * 1000:.3g} ms" if value < 1 else f"{value:.3g} s"


def _last(values: Sequence[float | None]) -> float | None:
    return values[-1] if values else None


# --- the embedded service -------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _tail(path: Path, lines: int = 20) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


@contextmanager
def embedded_service(
    data_dir: Path, *, workers: int = 2, startup_timeout_s: float = 60.0
) -> Iterator[str]:
    """Run ``batchwise serve`` (SQLite in ``data_dir``, ``workers`` embedded workers) as a
    subprocess on a free port of 127.0.0.1; yield its base URL once ``/healthz`` answers.
    On exit: SIGTERM, then SIGKILL after 15 s. Its log is ``data_dir/serve.log``."""
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BatchwiseError(f"cannot use {data_dir} as the data dir: {exc}") from exc
    port = _free_port()
    base_url = f"http://127.0.0.1:{port}"
    # The child reads its settings from the environment; an outside database URL would
    # point the demo's throwaway data at a real deployment, so it is dropped. It listens on
    # loopback only, for this process alone, so it runs without API keys.
    env = {k: v for k, v in os.environ.items() if k != "BATCHWISE_DATABASE_URL"}
    env |= {
        "BATCHWISE_AUTH": "off",
        "BATCHWISE_DATA_DIR": str(data_dir),
        "BATCHWISE_WORKERS": str(workers),
        "BATCHWISE_LOG_LEVEL": "warning",
        "PYTHONUNBUFFERED": "1",
    }
    log_path = data_dir / "serve.log"
    command = [sys.executable, "-m", "service", "serve", "--host", "127.0.0.1", "--port", str(port)]
    with log_path.open("ab") as log:
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        _wait_until_up(process, base_url, log_path, startup_timeout_s)
        yield base_url
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _wait_until_up(
    process: subprocess.Popen[bytes], base_url: str, log_path: Path, timeout_s: float
) -> None:
    deadline = time.monotonic() + timeout_s
    with BatchwiseClient(base_url, timeout=2.0) as client:
        while True:
            if process.poll() is not None:
                raise BatchwiseError(
                    f"the embedded service exited with {process.returncode} before it "
                    f"answered; the end of {log_path}:\n{_tail(log_path)}"
                )
            try:
                client.health()
                return
            except BatchwiseError:
                if time.monotonic() > deadline:
                    raise BatchwiseError(
                        f"the embedded service did not answer within {timeout_s:g} s; the "
                        f"end of {log_path}:\n{_tail(log_path)}"
                    ) from None
                time.sleep(0.1)


# --- the demo -------------------------------------------------------------------------------


@dataclass
class _Demo:
    client: BatchwiseClient
    plan: DemoPlan
    dataset: DemoDataset
    out: Path
    fmt: PlotFormat
    stdout: TextIO
    progress: ProgressLine
    submitted_jobs: list[str]
    sweep_id: str | None = None

    def say(self, text: str = "") -> None:
        self.stdout.write(text + "\n")
        self.stdout.flush()

    # 1 -------------------------------------------------------------------------------------
    def upload(self) -> str:
        dataset = self.dataset
        self.say(f"Dataset: {dataset.describe()}.")
        stored = self.client.upload_dataset((dataset.X, dataset.y), name=dataset.name)
        self.say(
            f"Uploaded as {stored['id']} ({stored['n_rows']:,} rows × {stored['n_features']} "
            f"features, sha256 {stored['sha256'][:12]}…)."
        )
        return stored["id"]

    # 2 -------------------------------------------------------------------------------------
    def seed_comparison(self, dataset_id: str) -> list[Job]:
        lr = self.plan.comparison_lr
        self.say()
        self.say(
            "Seed comparison: "
            + " against ".join(f"batch {b} × {e} epochs" for b, e in COMPARISON)
            + f", learning rate {lr:g}, {self.plan.validation_split:.0%} held out for "
            "validation."
        )
        jobs = [
            self.client.submit_job(
                dataset_id,
                batch_size=batch_size,
                epochs=epochs,
                learning_rate=lr,
                validation_split=self.plan.validation_split,
                standardize=False,
                noise_scale=True,
                name=f"demo: batch {batch_size} × {epochs} epochs",
                tags=["demo", "seed-comparison"],
            )
            for batch_size, epochs in COMPARISON
        ]
        self.submitted_jobs += [job["id"] for job in jobs]
        finished = self.client.wait_for_jobs(
            [job["id"] for job in jobs],
            on_progress=lambda seen: self.progress.update(_jobs_line(seen)),
        )
        self.progress.done()
        failed = [job for job in finished if job["status"] != "succeeded"]
        if failed:
            raise BatchwiseError(
                "; ".join(f"job {job['id']} {job['status']}: {_job_error(job)}" for job in failed)
            )
        histories = [self.client.history(job["id"], max_points=2) for job in finished]
        self._print_comparison(finished, histories)
        return finished

    def _print_comparison(self, jobs: Sequence[Job], histories: Sequence[History]) -> None:
        headers = [
            "batch",
            "epochs",
            "lr",
            "steps",
            "samples",
            "final train",
            "final val",
            "wall time",
            "samples/s",
        ]
        rows = []
        for job, history in zip(jobs, histories, strict=True):
            rows.append(
                [
                    str(job["config"]["batch_size"]),
                    str(len(history["epoch"])),
                    f"{job['config']['learning_rate']:g}",
                    f"{history['total_steps']:,}",
                    f"{_last(history['samples_seen']) or 0:,}",
                    _num(_last(history["train_loss"])),
                    _num(_last(history["val_loss"])),
                    _seconds(_last(history["wall_time_s"])),
                    _num(statistics.fmean(v for v in history["samples_per_s"] if v is not None)),
                ]
            )
        self.say(format_table(headers, rows))
        small, large = histories
        small_val, large_val = _last(small["val_loss"]), _last(large["val_loss"])
        if small_val is not None and large_val is not None:
            ratio = small["total_steps"] / max(large["total_steps"], 1)
            (b_small, e_small), (b_large, e_large) = COMPARISON
            self.say(
                f"Batch {b_large} × {e_large} epochs took {ratio:.3g}× fewer steps than batch "
                f"{b_small} × {e_small} epochs and ended at validation loss {large_val:.4g} "
                f"against {small_val:.4g}. Both ran at one learning rate; what a batch size "
                "costs when the rate is tuned for it is what the sweep measures."
            )

    # 3 -------------------------------------------------------------------------------------
    def sweep(self, dataset_id: str) -> Sweep:
        plan, noise_std = self.plan, self.dataset.noise_std
        batch_sizes = plan.batch_sizes
        self.say()
        self.say(
            f"Sweep over batch sizes {', '.join(map(str, batch_sizes))}: "
            f"{plan.describe(noise_std)}."
        )
        sweep = self.client.create_sweep(
            dataset_id,
            batch_sizes,
            name=f"demo: batch {batch_sizes[0]} to {batch_sizes[-1]}",
            base={
                "epochs": plan.sweep_epochs,
                "validation_split": plan.validation_split,
                "standardize": False,  # standardizing would undo the conditioning
                "noise_scale": True,
                "tags": ["demo"],
            },
            lr_search={"start": plan.lr_start, "max_rounds": plan.lr_max_rounds},
            # The noise is known, so the target is absolute: a fixed distance above the best
            # any model can do, the same for every batch size and every run of the demo.
            target_loss=plan.target_loss(noise_std),
            seeds=plan.seeds,
        )
        self.sweep_id = sweep["id"]
        started = time.monotonic()
        sweep = self.client.wait_for_sweep(
            sweep["id"],
            on_progress=lambda seen: self.progress.update(
                _sweep_line(seen, time.monotonic() - started)
            ),
        )
        self.progress.done()
        if sweep["status"] != "succeeded":
            raise BatchwiseError(
                f"sweep {sweep['id']} {sweep['status']}: {sweep['error'] or 'no reason given'}"
            )
        self._print_sweep(sweep)
        return sweep

    def _print_sweep(self, sweep: Sweep) -> None:
        target = sweep["target"]
        self.say(f"Target: {target['on']} loss {_num(target['loss'])} — {target['description']}.")
        headers = [
            "batch",
            "lr",
            "final train",
            "final val",
            "steps→T",
            "samples→T",
            "epochs→T",
            "time→T",
            "samples/s",
        ]
        self.say(format_table(headers, [_point_row(p) for p in sweep["points"]]))
        self.say(
            "lr: the rate searched for each batch size (* where the best lay at the edge of "
            "the rates tried); →T: to the target, interpolated, mean over seeds; — where "
            "not reached."
        )
        self.say(_fit_text(sweep["fit"]))
        noise = _noise_text(sweep.get("noise_scale_at_target"))
        if noise:
            self.say(noise)
        recommendation = sweep["recommendation"]
        if recommendation is not None:
            for key, label in (("fastest", "Fastest"), ("knee", "Knee")):
                choice = recommendation.get(key)
                if isinstance(choice, dict) and choice.get("reason"):
                    confidence = choice.get("confidence")
                    trust = f" (confidence: {confidence})" if confidence else ""
                    self.say(f"{label}{trust}: {choice['reason']}.")

    # 4 -------------------------------------------------------------------------------------
    def plots(self, jobs: Sequence[Job], sweep: Sweep) -> list[Path]:
        self.out.mkdir(parents=True, exist_ok=True)
        wanted: list[tuple[str, str, dict[str, str]]] = [
            (
                f"seed-batch{job['config']['batch_size']}-loss.{self.fmt}",
                f"/v1/jobs/{job['id']}/plots/loss.{self.fmt}",
                {},
            )
            for job in jobs
        ]
        base = f"/v1/sweeps/{sweep['id']}/plots"
        wanted += [
            (f"sweep-curves-{x}.{self.fmt}", f"{base}/curves.{self.fmt}", {"x": x})
            for x in ("step", "samples")
        ]
        wanted.append((f"sweep-scaling.{self.fmt}", f"{base}/scaling.{self.fmt}", {}))
        written: list[Path] = []
        self.say()
        for filename, path, params in wanted:
            try:
                image = self.client.get_plot(path, **params)
            except BatchwiseAPIError as exc:
                # A plot the service cannot draw (an older service without it: 404) is
                # reported and skipped: the analysis above already stands.
                self.say(f"Plot {filename} skipped: {exc}")
                continue
            target = self.out / filename
            target.write_bytes(image)
            written.append(target)
        self.say(f"Plots written to {self.out}: {', '.join(p.name for p in written) or 'none'}.")
        return written

    def cancel_unfinished(self) -> None:
        """Best effort after an interrupt: cancel what this run submitted."""
        try:
            if self.sweep_id is not None:
                self.client.cancel_sweep(self.sweep_id)
            for job_id in self.submitted_jobs:
                self.client.cancel_job(job_id)
        except BatchwiseError:
            pass  # finished already (409) or the service went away: nothing left to stop


def _job_error(job: Job) -> str:
    error = job["error"]
    return f"{error['code']}: {error['message']}" if error else "no reason given"


def _jobs_line(jobs: Sequence[Job]) -> str:
    parts = []
    for job in jobs:
        progress = job["progress"]
        state: str = job["status"]
        if state == "running":
            state = f"{progress['fraction']:.0%} (epoch {progress['epoch']}/{progress['epochs']})"
        parts.append(f"batch {job['config']['batch_size']}: {state}")
    return "  ".join(parts)


def _sweep_line(sweep: Sweep, elapsed_s: float) -> str:
    counts = sweep["jobs"]
    finished = sum(counts.get(s, 0) for s in ("succeeded", "failed", "cancelled"))
    total = sum(counts.values())
    return (
        f"sweep {sweep['status']}: learning-rate round {sweep['round'] + 1}, {finished}/{total} "
        f"jobs done ({counts.get('running', 0)} running, {counts.get('queued', 0)} queued), "
        f"{elapsed_s:.0f} s"
    )


def _point_row(point: SweepPoint) -> list[str]:
    lr = point["learning_rate"]
    lr_text = "—" if lr is None else f"{lr:.3g}" + ("*" if point["lr_interior"] is False else "")
    to_target = point["to_target"]
    return [
        str(point["batch_size"]),
        lr_text,
        _num(point["final"]["train"]),
        _num(point["final"]["validation"]),
        _num(to_target["steps"]),
        _num(to_target["samples"]),
        _num(to_target["epochs"], 3),
        _seconds(to_target["wall_time_s"]),
        _num(point["samples_per_s"], 3),
    ]


def _interval(value: Any) -> str:
    if isinstance(value, dict) and value.get("low") is not None and value.get("high") is not None:
        return f" (95% interval {_num(value['low'], 3)}–{_num(value['high'], 3)})"
    return ""


def _fit_text(fit: dict[str, Any] | None) -> str:
    if fit is None:
        return "Fit of S(B) = S_min (1 + B_noise / B): none."
    if fit.get("b_noise") is None:
        return f"Fit of S(B) = S_min (1 + B_noise / B): refused — {fit.get('reason')}."
    text = (
        f"Fit of S(B) = S_min (1 + B_noise / B) over batch sizes "
        f"{', '.join(map(str, fit.get('batch_sizes') or []))}: B_noise ≈ "
        f"{_num(fit['b_noise'], 3)}{_interval(fit.get('b_noise_ci'))}, S_min ≈ "
        f"{_num(fit.get('s_min'), 3)} steps{_interval(fit.get('s_min_ci'))}, E_min ≈ "
        f"{_num(fit.get('e_min'), 3)} samples"
    )
    if fit.get("r2_log") is not None:
        text += f"; R² of the fit in log space {fit['r2_log']:.3f}"
    return text + "."


def _noise_text(at_target: dict[str, Any] | None) -> str | None:
    """The measured B_simple beside the fit: read where the runs crossed the target's loss
    level (B_simple grows as the loss falls, so only one measured there compares with B_noise),
    the median over batch sizes and their range."""
    if not at_target or at_target.get("b_simple") is None:
        return None
    low, high = at_target["spread"]
    measured = sum(1 for point in at_target["points"] if point.get("b_simple") is not None)
    return (
        "Measured noise scale B_simple at the target's loss level "
        f"{_num(at_target['loss_level'])}: "
        f"median {_num(at_target['b_simple'], 3)} over {measured} batch size(s), range "
        f"{_num(low, 3)}–{_num(high, 3)} (corrected for sampling without replacement: "
        f"{_num(at_target['b_simple_corrected'], 3)})."
    )


def run_demo(
    *,
    url: str | None = None,
    out: Path = Path("batchwise-demo"),
    quick: bool = False,
    fmt: PlotFormat = "svg",
    data_dir: Path | None = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    """Run the demo (see the module docstring); return the exit status: 0, 1 on an error
    (printed as one line to ``stderr``), 130 when interrupted."""
    stdout = sys.stdout if stdout is None else stdout
    stderr = sys.stderr if stderr is None else stderr
    plan = QUICK if quick else FULL
    started = time.monotonic()
    demo: _Demo | None = None
    try:
        with ExitStack() as stack:
            if url is None:
                if data_dir is None:
                    scratch = stack.enter_context(tempfile.TemporaryDirectory(prefix="bw-demo-"))
                    data_dir = Path(scratch)
                stderr.write(f"Starting the embedded service (data in {data_dir}) …\n")
                url = stack.enter_context(embedded_service(data_dir))
                api_key: str | None = ""  # the embedded service runs with auth off
            else:
                api_key = None  # $BATCHWISE_API_KEY, read by the client
            client = stack.enter_context(BatchwiseClient(url, api_key=api_key))
            stdout.write(f"Batchwise demo{' (quick)' if quick else ''} against {url}\n")
            demo = _Demo(
                client=client,
                plan=plan,
                dataset=make_dataset(plan.n_rows),
                out=out,
                fmt=fmt,
                stdout=stdout,
                progress=ProgressLine(stderr),
                submitted_jobs=[],
            )
            try:
                dataset_id = demo.upload()
                jobs = demo.seed_comparison(dataset_id)
                sweep = demo.sweep(dataset_id)
                demo.plots(jobs, sweep)
            except KeyboardInterrupt:
                # Before the embedded service (if any) stops: a service at --url keeps
                # running, and should not keep training what nobody waits for.
                demo.progress.done()
                demo.cancel_unfinished()
                raise
            demo.say(f"Done in {time.monotonic() - started:.0f} s.")
    except KeyboardInterrupt:
        stderr.write("batchwise demo: interrupted; the jobs it submitted were cancelled\n")
        return EXIT_INTERRUPTED
    except BatchwiseConnectionError as exc:
        stderr.write(f"batchwise demo: error: {exc}\n")
        return EXIT_ERROR
    except BatchwiseError as exc:
        if demo is not None:
            demo.progress.done()
        stderr.write(f"batchwise demo: error: {exc}\n")
        return EXIT_ERROR
    return EXIT_OK
