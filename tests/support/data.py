"""Small data files the end-to-end tests upload."""

from __future__ import annotations

import random
from pathlib import Path


def write_line_csv(path: Path, rows: int = 400) -> Path:
    """The README's example: y = 3·x0 − 2·x1 + 1 + N(0, 0.1²), seeded; columns x0, x1, y."""
    rng = random.Random(0)
    lines = ["x0,x1,y"]
    for _ in range(rows):
        a, b = rng.gauss(0, 1), rng.gauss(0, 1)
        lines.append(f"{a},{b},{3 * a - 2 * b + 1 + rng.gauss(0, 0.1)}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
