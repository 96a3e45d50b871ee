"""Numbers as the sweeps' sentences print them: a few significant figures, and intervals."""

from __future__ import annotations

import math

from service.science.bootstrap import Interval

__all__ = ["interval_text", "num"]


def num(value: float, significant: int = 2) -> str:
    """``value`` to ``significant`` figures, with thousands separators: 912 → "910",
    0.4127 → "0.41", 123456 → "120,000"."""
    if value == 0.0 or not math.isfinite(value):
        return f"{value:g}"
    digits = significant - 1 - math.floor(math.log10(abs(value)))
    rounded = round(value, digits)
    if abs(rounded) >= 1000:
        return f"{rounded:,.0f}"
    return f"{rounded:.{max(digits, 0)}f}"


def interval_text(interval: Interval | None, confidence: float) -> str:
    """ "95% CI 210–460", "95% CI ≥ 9,000, unbounded above", …, or why there is none."""
    if interval is None:
        return "no interval: no bootstrap"
    label = f"{confidence * 100:.0f}% CI"
    if interval.low is None and interval.high is None:
        return f"{label} unbounded both ways"
    if interval.low is None:
        return f"{label} ≤ {num(interval.high or 0.0)}"
    if interval.high is None:
        return f"{label} ≥ {num(interval.low)}, unbounded above"
    return f"{label} {num(interval.low)}–{num(interval.high)}"
