"""Sweeps you can trust, measured: each data set swept through a real service with the defaults
a new user gets (learning rate searched from one guess, target ``auto``), and what it answered.

    python -m benchmarks.sweep_trust                 # every data set (several minutes)
    python -m benchmarks.sweep_trust --only digits   # one

Per data set: whether every batch size's learning rate ended interior (and the rounds its search
used), the target ``auto`` chose, B_noise with its 95 % interval, B_simple at the target (the
median across points), their ratio, S_min, the recommendation's confidence, and the sweep's wall
time (one real ``serve`` and two ``worker`` processes on SQLite). Needs the ``bench`` extra
(scikit-learn's bundled data sets, no download).
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.datasets import (  # type: ignore[import-untyped]
    load_breast_cancer,
    load_diabetes,
    load_digits,
    load_wine,
)

from benchmarks._processes import serve, workers
from benchmarks.machine import print_machine
from service.client import BatchwiseClient
from service.client.demo import FULL, make_dataset

Arrays = tuple[np.ndarray, np.ndarray]


@dataclass(frozen=True)
class Case:
    """A data set and the sweep a new user would post for it."""

    name: str
    load: Callable[[], Arrays]
    model: str
    epochs: int
    start: float
    standardize: bool = True
    smallest: int = 8
    batch_sizes: tuple[int, ...] = ()  # default: ×4 from ``smallest`` up to the rows


def readme_scales() -> Arrays:
    """The README's sweep data (``scales.csv``): the same generator, row for row."""
    rng = random.Random(0)  # the README's random.seed(0): the same sequence
    scales = (1.0, 0.5, 0.25, 0.18)  # feature variances 30× apart: ill-conditioned
    rows = []
    for _ in range(4000):
        x = [rng.gauss(0, s) for s in scales]
        y = sum(xi / s for xi, s in zip(x, scales, strict=True)) + 1 + rng.gauss(0, 1)
        rows.append((*x, y))
    data = np.array(rows)
    return data[:, :-1], data[:, -1]


def demo() -> Arrays:
    dataset = make_dataset(FULL.n_rows)
    return dataset.X, dataset.y


def unstandardized() -> Arrays:
    """y = X·w + noise with feature scales 1 … 30, to be swept with ``standardize`` off."""
    rng = np.random.default_rng(0)
    scales = np.linspace(1.0, 30.0, 8)
    X = rng.standard_normal((4000, 8)) * scales
    y = X @ (rng.standard_normal(8) / scales) + rng.standard_normal(4000) * 0.5
    return X, y


def _sklearn(loader: Callable[..., Any]) -> Callable[[], Arrays]:
    def load() -> Arrays:
        X, y = loader(return_X_y=True)
        return np.asarray(X, dtype=np.float64), np.asarray(y, dtype=np.float64)

    return load


CASES = (
    Case("README", readme_scales, "linear", 20, 0.01, False, batch_sizes=(8, 32, 128, 512)),
    Case("demo", demo, "linear", FULL.sweep_epochs, 0.05, standardize=False),
    Case("digits", _sklearn(load_digits), "softmax", 30, 0.05, smallest=4),
    Case("breast_cancer", _sklearn(load_breast_cancer), "logistic", 30, 0.05, smallest=4),
    Case("diabetes", _sklearn(load_diabetes), "linear", 40, 0.05, smallest=4),
    Case("wine", _sklearn(load_wine), "softmax", 60, 0.05, smallest=4),
    Case("linear, scales 1–30", unstandardized, "linear", 10, 0.05, standardize=False),
)


def batch_sizes(train_rows: int, smallest: int) -> list[int]:
    sizes, size = [], smallest
    while size <= train_rows:
        sizes.append(size)
        size *= 4
    return sizes


def run(client: BatchwiseClient, case: Case) -> dict[str, Any]:
    X, y = case.load()
    dataset = client.upload_dataset((X, y), name=case.name)
    sizes = list(case.batch_sizes) or batch_sizes(X.shape[0], case.smallest)
    started = time.perf_counter()
    sweep = client.create_sweep(
        dataset["id"],
        sizes,
        name=case.name,
        base={"model": case.model, "epochs": case.epochs, "standardize": case.standardize},
        lr_search={"start": case.start},
    )
    sweep = client.wait_for_sweep(sweep["id"], timeout_s=1800)
    return {"case": case, "sweep": sweep, "wall_s": time.perf_counter() - started}


def _num(value: float | None, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}g}"


def row(result: dict[str, Any]) -> str:
    sweep, case = result["sweep"], result["case"]
    points = sweep["points"]
    interior = sum(1 for p in points if p["lr_interior"])
    rounds = max((p["rounds"] for p in points), default=0)
    fit = sweep["fit"] or {}
    ci = fit.get("b_noise_ci") or {}
    noise = sweep.get("noise_scale_at_target") or {}
    b_noise, b_simple = fit.get("b_noise"), noise.get("b_simple")
    ratio = b_simple / b_noise if b_noise and b_simple else None
    knee = (sweep.get("recommendation") or {}).get("knee") or {}
    target = sweep["target"]
    return " | ".join(
        [
            case.name,
            f"{interior}/{len(points)} ({rounds} rounds)",
            f"{_num(target['fraction'])} ({_num(target['loss'])})",
            f"{_num(b_noise)} [{_num(ci.get('low'))}, {_num(ci.get('high'))}]",
            _num(b_simple),
            _num(ratio, 2),
            _num(fit.get("s_min")),
            f"{knee.get('batch_size')} ({knee.get('confidence')})",
            f"{result['wall_s']:.0f} s",
            sweep["status"] + ("" if fit.get("b_noise") else f": {fit.get('reason')}"),
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", help="run the data set whose name starts with this")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    print_machine()
    cases = [c for c in CASES if args.only is None or c.name.startswith(args.only)]
    print(
        "data set | lr interior (rounds) | target f (loss) | B_noise [95% CI] | "
        "B_simple at target | ratio | S_min | knee (confidence) | wall | status"
    )
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp)
        url = f"sqlite:///{data_dir / 'bench.sqlite3'}"
        with serve(url, data_dir) as base_url, workers(url, data_dir, args.workers, threads=1):
            client = BatchwiseClient(base_url)
            for case in cases:
                print(row(run(client, case)), flush=True)


if __name__ == "__main__":
    main()
