"""The measured gradient noise scale B_simple against the fitted critical batch B_noise, on real
data sets that ship with scikit-learn and on the synthetic control of tests/sweeps/test_science.py.

    python -m benchmarks.noise_vs_fit            # full: 3 seeds per point (≈ 1–3 minutes)
    python -m benchmarks.noise_vs_fit --quick    # 1 seed, fewer batch sizes (seconds)

The same measurement as the test, per data set (features standardized; a regression target
standardized too, so losses are in units of its variance):

- B_simple and the target. A constant-rate SGD run at batch 8 settles where the loss it removes
  per step balances the noise it adds; B_simple (``noise_scale`` on the whole training set, so
  exact, finite-population corrected) is averaged over the run's last quarter by
  ``summarize_noise_scale``, and the loss level it was measured at is the target. The rate of that
  run sets how deep the target is; it is stated per data set (the target column also gives
  target / L_best, L_best being the lowest loss any sweep run reached).
- B_noise. A sweep over powers of two from 8 to the largest ≤ N, the learning rate tuned per
  batch size on a 2^¼-spaced grid until the best rate is interior (fewest steps, geometric mean
  over seeds), steps to the target interpolated between evaluations (32 per decade), fitted by
  ``fit_critical_batch`` (log space, bootstrap 95 % interval). S_min below the service's guard of
  10 steps is reported, not refused: see ``S_min`` in the table.

Theory predicts B_simple ≈ B_noise only where the Hessian is a multiple of the identity (the
synthetic control: 0.6–0.8×). On real data the Hessian is anisotropic and B_noise =
tr(HΣ)/GᵀHG weighs the noise by curvature; how far apart the two land is what this measures.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from sklearn.datasets import (  # type: ignore[import-untyped]
    load_breast_cancer,
    load_diabetes,
    load_digits,
)

from benchmarks.machine import print_machine
from service.core import TrainConfig, Training, TrainingDiverged
from service.core.config import Evaluation as EvaluationConfig
from service.core.config import ModelKind
from service.science import (
    CriticalBatchFit,
    EpochNoise,
    Evaluation,
    NoiseScaleSummary,
    SweepPoint,
    TargetCrossing,
    fit_critical_batch,
    steps_to_target,
    summarize_noise_scale,
)

RATE_FACTOR = 2**0.25
MEASURING_BATCH = 8


@dataclass(frozen=True)
class DataSet:
    """A data set, its model, and the measuring run's rate and epochs (which set the target)."""

    name: str
    model: ModelKind
    load: Callable[[], tuple[np.ndarray, np.ndarray]]
    measuring_rate: float
    measuring_epochs: int
    max_steps: int


def _standardized(X: np.ndarray) -> np.ndarray:
    """z-scored columns; constant columns (digits' blank pixels) dropped."""
    std = X.std(axis=0)
    keep = std > 0
    result: np.ndarray = (X[:, keep] - X[:, keep].mean(axis=0)) / std[keep]
    return result


def _diabetes() -> tuple[np.ndarray, np.ndarray]:
    X, y = load_diabetes(return_X_y=True)
    return _standardized(X), (y - y.mean()) / y.std()


def _breast_cancer() -> tuple[np.ndarray, np.ndarray]:
    X, y = load_breast_cancer(return_X_y=True)
    return _standardized(X), y.astype(np.float64)


def _digits() -> tuple[np.ndarray, np.ndarray]:
    X, y = load_digits(return_X_y=True)
    return _standardized(X.astype(np.float64)), y.astype(np.float64)


def _isotropic() -> tuple[np.ndarray, np.ndarray]:
    """tests/sweeps/test_science.py's problem: d = 16, N = 16,384, σ = 1, |θ*|² = 10⁴."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((16_384, 16))
    X = (X - X.mean(axis=0)) / X.std(axis=0)
    theta = rng.standard_normal(17)
    theta *= 100.0 / np.linalg.norm(theta)
    y = X @ theta[:-1] + theta[-1] + rng.standard_normal(16_384)
    return X, y


DATA_SETS = (
    # the control's rate settles batch 8 at Δ∞ = 0.2σ² (see the test's docstring)
    DataSet("isotropic (synthetic)", "linear", _isotropic, 8 * 0.2 / (17 + 0.2 * 26), 16, 4000),
    DataSet("diabetes", "linear", _diabetes, 0.05, 16, 20_000),
    DataSet("breast_cancer", "logistic", _breast_cancer, 0.01, 16, 20_000),
    DataSet("digits", "softmax", _digits, 0.01, 16, 20_000),
)


def measure_noise_scale(data: DataSet, X: np.ndarray, y: np.ndarray) -> NoiseScaleSummary:
    """B_simple over the last quarter of the constant-rate batch-8 measuring run."""
    config = TrainConfig(
        model=data.model,
        batch_size=MEASURING_BATCH,
        learning_rate=data.measuring_rate,
        epochs=data.measuring_epochs,
        dtype="float64",
        noise_scale=True,
        noise_scale_samples=X.shape[0],
    )
    records = []
    for record in Training(X, y, config):
        if record.noise_scale is not None:
            records.append(EpochNoise.from_record(record.epoch, record.noise_scale))
    return summarize_noise_scale(records, train_rows=X.shape[0])


def _crossing(
    data: DataSet,
    X: np.ndarray,
    y: np.ndarray,
    batch_size: int,
    rate: float,
    seed: int,
    target: float,
    initial: list[float],
) -> TargetCrossing | None:
    n = X.shape[0]
    config = TrainConfig(
        model=data.model,
        batch_size=batch_size,
        learning_rate=rate,
        epochs=max(1, math.ceil(data.max_steps * batch_size / n)),
        seed=seed,
        dtype="float64",
        evaluation=EvaluationConfig(on="train", per_decade=32, max_rows=n),
    )
    evaluations: list[Evaluation] = []
    try:
        for record in Training(X, y, config):
            evaluations += [
                Evaluation(e.step, e.samples, e.samples / n, 0.0, e.loss)
                for e in record.evaluations
            ]
            initial[0] = evaluations[0].loss  # step 0: the same for every run (zero init)
            if min(e.loss for e in evaluations) <= target:
                break  # the rest of the run cannot change the first crossing
    except TrainingDiverged:
        return None
    return steps_to_target(evaluations, target)


def _tune(
    data: DataSet,
    X: np.ndarray,
    y: np.ndarray,
    batch_size: int,
    start: float,
    target: float,
    seeds: tuple[int, ...],
    initial: list[float],
) -> tuple[SweepPoint, float]:
    """The point at its best rate on a 2^¼ grid walked from ``start`` until interior."""
    tried: dict[int, tuple[float, tuple[TargetCrossing | None, ...]]] = {}

    def steps(k: int) -> float:
        if k not in tried:
            rate = start * RATE_FACTOR**k
            crossings = tuple(
                _crossing(data, X, y, batch_size, rate, s, target, initial) for s in seeds
            )
            reached = [c.steps for c in crossings if c is not None]
            mean = (
                math.exp(float(np.mean(np.log(reached))))
                if len(reached) == len(seeds)
                else math.inf
            )
            tried[k] = (mean, crossings)
        return tried[k][0]

    k = 0
    for _ in range(40):
        if steps(k) <= steps(k - 1) and steps(k) <= steps(k + 1):
            break
        k = k - 1 if steps(k - 1) < steps(k + 1) else k + 1
    return SweepPoint(batch_size, tried[k][1]), start * RATE_FACTOR**k


@dataclass(frozen=True)
class Row:
    data: DataSet
    n_rows: int
    target: float
    initial: float
    optimal: float | None
    noise: NoiseScaleSummary
    fit: CriticalBatchFit
    rates: tuple[float, float]
    seconds: float


def study(data: DataSet, *, seeds: tuple[int, ...], quick: bool) -> Row:
    started = time.perf_counter()
    X, y = data.load()
    n = X.shape[0]
    noise = measure_noise_scale(data, X, y)
    target = noise.loss_level
    top = 2 ** int(math.log2(n))
    batch_sizes = [2**k for k in range(3, int(math.log2(top)) + 1)]
    if quick:
        batch_sizes = batch_sizes[::2]
    initial = [math.nan]
    points = []
    rate = data.measuring_rate
    rates = []
    for batch_size in batch_sizes:
        point, rate = _tune(data, X, y, batch_size, rate, target, seeds, initial)
        points.append(point)
        rates.append(rate)
    fit = fit_critical_batch(points, rng=np.random.default_rng(0), n_resamples=500, min_s_min=0.0)
    return Row(
        data, n, target, initial[0], _optimal_loss(data, X, y), noise, fit, (rates[0], rates[-1]),
        time.perf_counter() - started,
    )  # fmt: skip


def _optimal_loss(data: DataSet, X: np.ndarray, y: np.ndarray) -> float | None:
    """L* for a linear model (least squares); None for classifiers (near-separable: ≈ 0)."""
    if data.model != "linear":
        return None
    X1 = np.column_stack([X, np.ones(X.shape[0])])
    residual: np.ndarray = y - X1 @ np.linalg.lstsq(X1, y, rcond=None)[0]
    return float(residual @ residual) / len(y)


def _interval(fit: CriticalBatchFit) -> str:
    ci = fit.b_noise_ci
    if ci is None:
        return "[—]"
    low = "0" if ci.low is None else f"{ci.low:.0f}"
    high = "∞" if ci.high is None else f"{ci.high:.0f}"
    return f"[{low}, {high}]"


def print_table(rows: list[Row]) -> None:
    header = (
        f"{'data set':<22} {'model':<8} {'N':>6} {'L0 → target (/L*)':>26} "
        f"{'B_noise [95% CI]':>20} {'B_simple (spread)':>18} {'ratio':>6} {'S_min':>6} "
        f"{'R² log':>7} {'rms':>5} {'lr 8 → max':>14} {'s':>5}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        fit = r.fit
        b_simple = r.noise.b_simple_corrected
        spread = "" if r.noise.spread_factor is None else f" (×{r.noise.spread_factor:.2f})"
        if fit.b_noise is None or b_simple is None:
            fitted = f"refused: {fit.reason or r.noise.reason}"
            print(f"{r.data.name:<22} {r.data.model:<8} {r.n_rows:>6} {r.target:>12.4g}  {fitted}")
            continue
        depth = "" if r.optimal is None else f" ({r.target / r.optimal:.2f}×)"
        print(
            f"{r.data.name:<22} {r.data.model:<8} {r.n_rows:>6} "
            f"{f'{r.initial:.3g} → {r.target:.3g}{depth}':>26} "
            f"{fit.b_noise:>7.0f} {_interval(fit):>12} "
            f"{b_simple:>8.0f}{spread:>10} {b_simple / fit.b_noise:>6.2f} "
            f"{fit.s_min or 0:>6.2f} {fit.r2_log or 0:>7.3f} {fit.rms_relative or 0:>5.2f} "
            f"{r.rates[0]:>6.3g} → {r.rates[1]:<5.3g} {r.seconds:>5.1f}"
        )
    print()
    print(
        "target: the loss level at which a constant-rate batch-8 run settles (last quarter of "
        "its epochs), rates: "
        + ", ".join(
            f"{r.data.name} {r.data.measuring_rate:.3g} × {r.data.measuring_epochs} epochs"
            for r in rows
        )
    )
    print(
        "B_simple: finite-population corrected, exact on the whole training set, averaged "
        "over that window; spread: geometric SD of the per-epoch values. ratio = B_simple / "
        "B_noise. S_min < 10 would be refused by the service's guard (lowered here)."
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="1 seed, every other batch size")
    args = parser.parse_args(argv)
    seeds = (1,) if args.quick else (1, 2, 3)
    print_machine()
    print()
    rows = [study(data, seeds=seeds, quick=args.quick) for data in DATA_SETS]
    print_table(rows)


if __name__ == "__main__":
    main()
