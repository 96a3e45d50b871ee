"""The critical batch over training, measured directly, and the batch-size warmup built from it.

    python -m benchmarks.critical_batch                 # the four tasks (a few minutes)
    python -m benchmarks.critical_batch --only digits   # those whose name starts so

Tasks: the demo's data at its ``--quick`` size, scikit-learn's digits with softmax regression
and with a 64-32-10 MLP (the three the issue asks for), then the demo at full size.

Per task (Merrill et al. 2025, "Critical Batch Size Revisited", arXiv 2505.23971):

1. a constant small-batch run (batch B₀, rate lr₀) keeping a checkpoint at every epoch;
2. at about six log-spaced epochs, branches from the checkpoint at k·B₀ (k = 1, 2, 4, … while
   the window holds at least ``--min-steps`` steps: fewer hide an unstable rate) for
   ``--window`` epochs, ``--seeds`` shuffles each, each a warm start
   (``Training(init_from=…)``) with its rate found by ``--lr`` (``search``: a bracketing
   search per branch, at most the linear-scaled rate; ``sqrt``/``linear``: scaled). The loss
   after the window is the mean loss over every training row;
   ``service.science.critical.critical_batch`` judges which k kept up within ``--tolerance``
   of the ×1 branch: the critical batch with its bracket, printed beside
   B_simple measured at that checkpoint (``service.core.noise``, the corrected estimate over
   every training row) and their ratio;
3. the warmup points from those measurements (``service.science.critical.warmup_points``:
   double when the critical batch has grown past twice the current batch; by default from the
   first measured critical batch, as ``service.probes.service.warmup_points``), and a run with
   ``batch_size_schedule: warmup`` (the real schedule, the rate moved by ``--warmup-scaling``
   from lr₀ at B₀ at each change) for the same samples as the constant run;
4. steps and wall time for each run to reach the constant run's final loss, and the final
   losses. The goal: ≥ 30 % fewer steps at a final loss at most 1 % above the constant run's.
5. the same figures for ``batch_size_schedule: adaptive`` (the batch follows B_simple measured
   at each epoch's end, McCandlish et al. 2018), from B₀ with the same rate rule, for the same
   samples: the proxy's schedule beside the one built from the direct measurement.

Losses are evaluated on every training row at log-spaced steps and at every epoch end
(``Evaluation``); "steps to the loss" is the first evaluation at or below it. Wall times are
in-process training times (BLAS on ``--threads`` threads, 1 by default as in a worker), the
evaluations included, the same for both runs. Needs the ``bench`` extra (scikit-learn).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from sklearn.datasets import load_digits  # type: ignore[import-untyped]
from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

from benchmarks.machine import print_machine
from service.client.demo import FULL, QUICK, make_dataset
from service.core import (
    BatchSizeSchedule,
    Checkpoint,
    EpochRecord,
    Evaluation,
    TrainConfig,
    Training,
    TrainingDiverged,
)
from service.core.config import LRScaling
from service.core.schedules import scale_lr
from service.science.critical import CriticalBatch, critical_batch, warmup_points

Arrays = tuple[np.ndarray, np.ndarray]


@dataclass(frozen=True)
class Task:
    """A data set and the constant small-batch run the probe branches from."""

    name: str
    load: Callable[[], Arrays]
    config: TrainConfig


def demo() -> Arrays:
    """The demo's data at its ``--quick`` size (2,000 rows: 1,600 training rows, so an epoch —
    the probe's granularity — is 200 steps at B₀ = 8 and the loss still moves for ~10)."""
    dataset = make_dataset(QUICK.n_rows)
    return dataset.X, dataset.y


def demo_full() -> Arrays:
    """The demo's data at full size (20,000 rows: 16,000 training rows)."""
    dataset = make_dataset(FULL.n_rows)
    return dataset.X, dataset.y


def digits() -> Arrays:
    X, y = load_digits(return_X_y=True)
    return np.asarray(X, dtype=np.float64), np.asarray(y, dtype=np.float64)


def _config(**fields: object) -> TrainConfig:
    """With the noise scale measured and the loss evaluated over every training row."""
    evaluation = Evaluation(on="train", per_decade=8, max_rows=1 << 20)
    return TrainConfig(noise_scale=True, evaluation=evaluation, **fields)  # type: ignore[arg-type]


TASKS = (
    Task(
        "demo (linear regression)",
        demo,
        _config(model="linear", batch_size=8, learning_rate=0.01, epochs=30, validation_split=0.2),
    ),
    Task(
        "digits (softmax)",
        digits,
        _config(model="softmax", batch_size=4, learning_rate=0.1, epochs=30, standardize=True),
    ),
    Task(
        "digits (MLP 64-32-10)",
        digits,
        _config(
            model="mlp",
            hidden_layers=(32,),
            batch_size=8,
            learning_rate=0.05,
            epochs=30,
            standardize=True,
        ),
    ),
    Task(
        "demo, full size (linear regression)",
        demo_full,
        _config(model="linear", batch_size=8, learning_rate=0.002, epochs=16, validation_split=0.2),
    ),
)


@dataclass(frozen=True)
class Settings:
    window: int
    tolerance: float
    lr: str
    warmup_scaling: LRScaling
    points: int
    seeds: int
    min_steps: int
    start: str


@dataclass
class Run:
    """A run's records and its checkpoints by epoch (0: the start), with the wall time to each
    epoch's end."""

    records: list[EpochRecord] = field(default_factory=list)
    checkpoints: dict[int, Checkpoint] = field(default_factory=dict)
    wall: list[float] = field(default_factory=list)

    @property
    def final_loss(self) -> float:
        return self.records[-1].evaluations[-1].loss

    def first_at_or_below(self, loss: float) -> tuple[int, float] | None:
        """(steps, wall seconds) at the first evaluation at or below ``loss``; the wall time
        interpolated by steps within its epoch."""
        start_wall = 0.0
        for record, wall in zip(self.records, self.wall, strict=True):
            first_step = record.total_steps - record.steps
            for point in record.evaluations:
                if point.loss <= loss:
                    share = (point.step - first_step) / record.steps
                    return point.step, start_wall + share * (wall - start_wall)
            start_wall = wall
        return None


def run(X: np.ndarray, y: np.ndarray, config: TrainConfig, **kwargs: object) -> Run:
    """Train ``config`` to its end, keeping every epoch's checkpoint."""
    out = Run()
    training = Training(X, y, config, **kwargs)  # type: ignore[arg-type]
    out.checkpoints[training.epoch] = training.checkpoint()
    started = time.perf_counter()
    for record in training:
        out.wall.append(time.perf_counter() - started)
        out.records.append(record)
        out.checkpoints[record.epoch] = training.checkpoint()
    return out


def branch_loss(
    X: np.ndarray,
    y: np.ndarray,
    start: Checkpoint,
    batch: int,
    lr: float,
    window: int,
    seeds: int = 1,
) -> float:
    """The mean loss over every training row after ``window`` epochs from ``start`` at
    ``batch`` rows and rate ``lr``, over ``seeds`` shuffles (the first the source's own
    stream; inf when one diverged)."""
    losses = []
    for offset in range(seeds):
        config = dataclasses.replace(
            start.config,
            batch_size=batch,
            learning_rate=lr,
            epochs=start.epoch + window,
            seed=start.config.seed + offset,
            split_seed=start.config.data_seed if offset else start.config.split_seed,
        )
        try:
            branch = run(X, y, config, init_from=start)
        except TrainingDiverged:
            return math.inf
        losses.append(branch.final_loss)
    return math.fsum(losses) / len(losses)


def searched(
    loss_at: Callable[[float], float], highest: float, *, rounds: int = 6
) -> tuple[float, float]:
    """(loss, rate) of the best rate by a bracketing search down from ``highest`` (the
    linear-scaled rate: never above it): ×½ steps until the best is interior, then √2 either
    side of it."""
    tried: dict[float, float] = {}

    def at(lr: float) -> float:
        if lr not in tried:
            tried[lr] = loss_at(lr)
        return tried[lr]

    for lr in (highest, highest / 2, highest / 4):
        at(lr)
    for _ in range(rounds):
        best = min(tried, key=lambda lr: (tried[lr], lr))
        if best != min(tried):
            break
        at(best / 2)
    best = min(tried, key=lambda lr: (tried[lr], lr))
    for lr in (best / math.sqrt(2), best * math.sqrt(2)):
        if lr <= highest:
            at(lr)
    best = min(tried, key=lambda lr: (tried[lr], lr))
    return tried[best], best


@dataclass(frozen=True)
class Measurement:
    epoch: int
    samples: int
    loss: float
    critical: CriticalBatch
    batch: int
    rates: dict[int, float]
    b_simple: float | None
    wall_s: float

    @property
    def critical_batch(self) -> int | None:
        return None if self.critical.kept_up is None else self.critical.kept_up * self.batch

    @property
    def bracket(self) -> str:
        low = self.critical_batch
        high = self.critical.fell_behind
        return f"[{low}, {'∞' if high is None else high * self.batch})"


def measure(
    X: np.ndarray, y: np.ndarray, base: Run, epoch: int, settings: Settings, n_train: int
) -> Measurement:
    """The critical batch at ``epoch``'s checkpoint: ×1, ×2, … until one falls behind."""
    started = time.perf_counter()
    start = base.checkpoints[epoch]
    config = start.config
    B0, lr0 = config.batch_size, config.learning_rate
    assert B0 is not None
    losses: dict[int, list[float | None]] = {}
    rates: dict[int, float] = {}
    window, seeds = settings.window, settings.seeds
    k = 1
    # A branch of fewer than ``min_steps`` steps would hide an unstable rate.
    while k * B0 * settings.min_steps <= window * n_train:
        if k == 1:
            loss, lr = branch_loss(X, y, start, B0, lr0, window, seeds), lr0
        elif settings.lr == "search":

            def at(rate: float, batch: int = k * B0) -> float:
                return branch_loss(X, y, start, batch, rate, window, seeds)

            loss, lr = searched(at, lr0 * k)
        else:
            lr = scale_lr(lr0, k * B0, B0, settings.lr)
            loss = branch_loss(X, y, start, k * B0, lr, window, seeds)
        losses[k], rates[k] = [loss if math.isfinite(loss) else None], lr
        verdict = critical_batch(losses, tolerance=settings.tolerance)
        if verdict.fell_behind is not None:
            break
        k *= 2
    noise = base.records[epoch - 1].noise_scale
    return Measurement(
        epoch=epoch,
        samples=start.samples_seen,
        loss=base.records[epoch - 1].evaluations[-1].loss,
        critical=critical_batch(losses, tolerance=settings.tolerance),
        batch=B0,
        rates=rates,
        b_simple=None if noise is None else noise.b_simple_corrected,
        wall_s=time.perf_counter() - started,
    )


def probe_epochs(epochs: int, window: int, count: int) -> list[int]:
    """About ``count`` log-spaced epochs in [1, epochs − window] (distinct)."""
    last = max(1, epochs - window)
    return sorted({max(1, round(e)) for e in np.geomspace(1, last, count)})


def _num(value: float | None, digits: int = 3) -> str:
    return "—" if value is None or not math.isfinite(value) else f"{value:.{digits}g}"


def report_task(task: Task, settings: Settings) -> dict[str, object]:
    X, y = task.load()
    base = run(X, y, task.config)
    n_train = base.records[0].samples_seen
    print(f"\n{task.name}: {X.shape[0]} rows × {X.shape[1]}, {n_train} training rows")
    c = task.config
    print(
        f"  constant run: {c.model}, batch {c.batch_size}, lr {c.learning_rate:g}, "
        f"{c.epochs} epochs, {base.records[-1].total_steps} steps, "
        f"{base.wall[-1]:.2f} s, final loss {base.final_loss:.5g}"
    )
    print(
        "  epoch | samples | loss | critical batch [bracket) | B_simple | critical/B_simple"
        " | rates per multiplier | wall"
    )
    measurements = []
    for epoch in probe_epochs(c.epochs, settings.window, settings.points):
        m = measure(X, y, base, epoch, settings, n_train)
        measurements.append(m)
        ratio = (
            m.critical_batch / m.b_simple if m.critical_batch is not None and m.b_simple else None
        )
        rates = ", ".join(f"×{k}: {lr:.3g}" for k, lr in m.rates.items())
        flags = "" if m.critical.monotone else " (not monotone)"
        print(
            f"  {m.epoch} | {m.samples} | {m.loss:.4g} | {m.critical_batch} {m.bracket}{flags} | "
            f"{_num(m.b_simple)} | {_num(ratio, 2)} | {rates} | {m.wall_s:.1f} s",
            flush=True,
        )
    assert c.batch_size is not None
    measured = [(m.samples, m.critical_batch) for m in measurements if m.critical_batch]
    start = c.batch_size
    if settings.start == "first" and measured:  # as the service's probes.warmup_points
        start *= 2 ** int(math.log2(max(measured[0][1] / c.batch_size, 1.0)) + 1e-9)
    points = warmup_points(measured, start_batch=start, max_batch=max(n_train, start))
    warm_config = dataclasses.replace(
        c,
        batch_size_schedule=BatchSizeSchedule(kind="warmup", points=tuple(points)),
        lr_scaling=settings.warmup_scaling,
        reference_batch_size=c.batch_size,
    )
    adaptive_config = dataclasses.replace(
        warm_config, batch_size_schedule=BatchSizeSchedule(kind="adaptive")
    )
    print(f"  warmup points (samples, batch): {points}, lr scaled {settings.warmup_scaling}")
    result: dict[str, object] = {"task": task.name, "points": points}
    warm = compare(X, y, base, warm_config, "warmup")
    result.update(warm or {})
    result["adaptive"] = compare(X, y, base, adaptive_config, "adaptive")
    return result


def compare(
    X: np.ndarray, y: np.ndarray, base: Run, config: TrainConfig, name: str
) -> dict[str, object] | None:
    """Train ``config`` and print its steps and wall time to the constant run's final loss,
    its final loss and the goal; the figures (None if it diverged)."""
    try:
        other = run(X, y, config)
    except TrainingDiverged as exc:
        print(f"  {name}: diverged ({exc})")
        return None
    target = base.final_loss
    base_hit = base.first_at_or_below(target)
    assert base_hit is not None
    hit = other.first_at_or_below(target)
    saved = None if hit is None else 1.0 - hit[0] / base_hit[0]
    final_ratio = other.final_loss / target
    met = saved is not None and saved >= 0.30 and final_ratio <= 1.01
    batches = sorted(
        {r.batch_size for r in other.records}
        | {c.batch_size for r in other.records for c in r.batch_changes}
    )
    print(
        f"  {name} (batches {batches[0]}..{batches[-1]}): to the constant run's final loss "
        f"{target:.5g}: constant {base_hit[0]} steps, {base_hit[1]:.2f} s; {name} "
        + ("never" if hit is None else f"{hit[0]} steps, {hit[1]:.2f} s")
        + f"; final loss {other.final_loss:.5g} ({other.records[-1].total_steps} steps, "
        f"{final_ratio - 1:+.2%} against the constant run's {base.records[-1].total_steps}); "
        f"steps saved {_num(None if saved is None else 100 * saved, 3)} %; "
        f"goal {'met' if met else 'NOT met'}"
    )
    return {"saved": saved, "final_ratio": final_ratio, "met": met}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", help="run the tasks whose name starts with this")
    parser.add_argument("--window", type=int, default=4, help="branch length, epochs [4]")
    parser.add_argument("--tolerance", type=float, default=0.01, help="relative [0.01]")
    parser.add_argument(
        "--lr", choices=("search", "sqrt", "linear"), default="linear", help="branch rates [linear]"
    )
    parser.add_argument(
        "--warmup-scaling",
        choices=("none", "sqrt", "linear"),
        default="linear",
        help="the warmup run's lr rule at each change [linear]",
    )
    parser.add_argument("--points", type=int, default=6, help="checkpoints probed [6]")
    parser.add_argument("--seeds", type=int, default=2, help="shuffles per branch [2]")
    parser.add_argument(
        "--min-steps", type=int, default=32, help="fewest steps a branch's window may have [32]"
    )
    parser.add_argument(
        "--start",
        choices=("first", "base"),
        default="first",
        help="the warmup's batch before the first checkpoint: the first measured critical "
        "batch (rounded down to B₀·2^j, as the service does) or B₀ [first]",
    )
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    settings = Settings(
        args.window,
        args.tolerance,
        args.lr,
        args.warmup_scaling,
        args.points,
        args.seeds,
        args.min_steps,
        args.start,
    )
    print_machine()
    print(
        f"settings: window {settings.window} epoch(s), tolerance {settings.tolerance:g}, "
        f"branch lr {settings.lr}, warmup lr scaling {settings.warmup_scaling}, "
        f"{settings.points} checkpoints, {settings.seeds} seed(s) per branch, at least "
        f"{settings.min_steps} steps per branch, warmup starts at the "
        f"{'first measured critical batch' if settings.start == 'first' else 'base batch'}, "
        f"{args.threads} BLAS thread(s)"
    )
    tasks = [t for t in TASKS if args.only is None or t.name.startswith(args.only)]
    results = []
    with threadpool_limits(args.threads):
        for task in tasks:
            results.append(report_task(task, settings))
    met = sum(1 for r in results if r.get("met"))
    adaptive_met = sum(1 for r in results if isinstance(a := r["adaptive"], dict) and a["met"])
    print(f"\ngoal met on {met} of {len(results)} by the warmup, {adaptive_met} by adaptive")


if __name__ == "__main__":
    main()
