"""The critical-batch fit with censored runs: recovery against leaving them out, and its cost.

    python -m benchmarks.censored_fit            # 200 sweeps per row, 5 timings (≈ 1 minute)
    python -m benchmarks.censored_fit --quick    # 20 sweeps, 2 timings

Synthetic sweeps as in ``tests/sweeps/test_censored_fit.py``: B = 8 … 4096 (doubling), S =
S_min (1 + B_noise/B) · exp(ε), ε ~ N(0, 0.15²) per seed, S_min = 100, B_noise = 300; each run
stops at a step budget drawn log-normal around Ŝ(B), tighter at large batches (as a fixed
sample budget is), so that ~30 % of the runs never reach the target. Three fits per sweep:

- censored: ``fit_critical_batch`` with ``steps_run`` (the censored runs as bounds);
- left out: the same without ``steps_run`` (a point keeps the seeds that reached);
- dropped: only the points where every seed reached (the rule before censoring).

Then the wall time of the bootstrap (1000 resamples, 10 points × 3 seeds) with and without
censoring, the median of a few repeats.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import numpy as np

from benchmarks.machine import print_machine
from service.science import SweepPoint, TargetCrossing, fit_critical_batch

BATCH_SIZES = [2**k for k in range(3, 13)]
S_MIN, B_NOISE, SIGMA = 100.0, 300.0, 0.15


def sweep(rng: np.random.Generator, seeds: int, *, budget: bool = True) -> list[SweepPoint]:
    """One synthetic sweep (see the module docstring); ``budget`` False: every run reaches."""
    points = []
    for i, B in enumerate(BATCH_SIZES):
        expected = S_MIN * (1.0 + B_NOISE / B)
        steps = expected * np.exp(rng.normal(0.0, SIGMA, seeds))
        margin = 0.35 - 0.45 * i / (len(BATCH_SIZES) - 1)
        limit = np.round(expected * np.exp(rng.normal(margin, 0.1, seeds)))
        if not budget:
            limit = np.full(seeds, np.inf)
        crossings = tuple(
            TargetCrossing(float(s), 0.0, 0.0, 0.0) if s <= n else None
            for s, n in zip(steps, limit, strict=True)
        )
        points.append(SweepPoint(B, crossings, tuple(float(min(n, 1e9)) for n in limit)))
    return points


def recovery(n_sweeps: int, seeds: int) -> None:
    rng = np.random.default_rng(13)
    errors: dict[str, list[tuple[float, float]]] = {"censored": [], "left out": [], "dropped": []}
    refused = dict.fromkeys(errors, 0)
    censored = []
    for _ in range(n_sweeps):
        points = sweep(rng, seeds)
        censored.append(np.mean([c is None for p in points for c in p.crossings]))
        naive = [dataclasses.replace(p, steps_run=()) for p in points]
        for name, data in (
            ("censored", points),
            ("left out", naive),
            ("dropped", [p for p in naive if p.reached]),
        ):
            fit = fit_critical_batch(data, rng=rng, n_resamples=0)
            if fit.s_min is None or fit.b_noise is None:
                refused[name] += 1
                continue
            errors[name].append((fit.s_min / S_MIN - 1.0, fit.b_noise / B_NOISE - 1.0))
    print(
        f"{n_sweeps} sweeps, {seeds} seeds per point, {np.mean(censored):.0%} of runs censored "
        "(signed median error | median |error| | worst |error|; within 20 %)"
    )
    print(f"{'fit':<10} {'S_min':>30} {'B_noise':>30} {'refused':>8}")
    for name, values in errors.items():
        e = np.array(values)
        cells = [
            f"{np.median(e[:, k]):+6.1%} | {np.median(np.abs(e[:, k])):5.1%} | "
            f"{np.max(np.abs(e[:, k])):6.1%}; {np.mean(np.abs(e[:, k]) < 0.2):4.0%}"
            for k in (0, 1)
        ]
        print(f"{name:<10} {cells[0]:>30} {cells[1]:>30} {refused[name]:>8}")


def timing(repeats: int) -> None:
    for label, budget in (("without censoring", False), ("~30 % censored", True)):
        times = []
        for r in range(repeats):
            points = sweep(np.random.default_rng(100 + r), 3, budget=budget)
            start = time.perf_counter()
            fit_critical_batch(points, rng=np.random.default_rng(0), n_resamples=1000)
            times.append(time.perf_counter() - start)
        print(f"bootstrap, 1000 resamples, 10 points × 3 seeds, {label}: {np.median(times):.2f} s")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="20 sweeps, 2 timings")
    args = parser.parse_args(argv)
    print_machine()
    print()
    recovery(20 if args.quick else 200, 4)
    print()
    timing(2 if args.quick else 5)


if __name__ == "__main__":
    main()
