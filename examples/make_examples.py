"""Writes the example data the README and docs/ use, the same bytes every run.

    python3 examples/make_examples.py        # rewrites examples/line.csv and examples/scales.csv

- ``line.csv``: 400 rows of y = 3·x0 − 2·x1 + 1 + N(0, 0.1²), two standard normal features:
  a job learns it in a few epochs, and its model predicts 1 at (0, 0) and 6 at (1, −1).
- ``scales.csv``: 4,000 rows of y = Σ x_i / s_i + 1 + N(0, 1), four features with standard
  deviations s = 1, 0.5, 0.25, 0.18 (variances 30× apart, left unstandardized). On an
  ill-conditioned loss the batch size matters, so a sweep over it fits the critical batch.

Only the standard library: ``random.Random(seed)`` gives the same numbers on every platform.
"""

from __future__ import annotations

import random
from pathlib import Path

HERE = Path(__file__).resolve().parent


def line_rows(rows: int = 400, seed: int = 0) -> list[tuple[float, ...]]:
    rng = random.Random(seed)
    out = []
    for _ in range(rows):
        a, b = rng.gauss(0, 1), rng.gauss(0, 1)
        out.append((a, b, 3 * a - 2 * b + 1 + rng.gauss(0, 0.1)))
    return out


def scales_rows(rows: int = 4000, seed: int = 0) -> list[tuple[float, ...]]:
    rng = random.Random(seed)
    scales = (1.0, 0.5, 0.25, 0.18)
    out = []
    for _ in range(rows):
        x = [rng.gauss(0, s) for s in scales]
        y = sum(v / s for v, s in zip(x, scales, strict=True)) + 1 + rng.gauss(0, 1)
        out.append((*x, y))
    return out


def write_csv(path: Path, header: str, rows: list[tuple[float, ...]]) -> None:
    lines = [header] + [",".join(f"{value:.6f}" for value in row) for row in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def main(out: Path = HERE) -> None:
    write_csv(out / "line.csv", "x0,x1,y", line_rows())
    write_csv(out / "scales.csv", "x0,x1,x2,x3,y", scales_rows())


if __name__ == "__main__":
    main()
