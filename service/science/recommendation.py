"""A sweep's answer: the fastest batch size and the knee, each with how far to trust it.

- **fastest**: the batch size that reached the target in the least wall time (mean over seeds;
  wall time is the workers' own, so it depends on their hardware and load), among the points
  where every seed reached it without failing — never from a failed or diverged run.
- **knee**, B ≈ B_noise: the measured batch size nearest to B_noise in log distance, or none
  when B_noise lies beyond the measured range (more than half a doubling, a factor √2, outside
  the smallest or largest batch fitted), and none below medium confidence.

Each carries a ``confidence`` — ``high``, ``medium`` or ``low``, the lowest its reasons allow —
and the reasons themselves, so a reader sees what the answer rests on:

| evidence | high | medium | low |
| --- | --- | --- | --- |
| learning rates | tuned, all interior | a point left out (edge rate), 2 rates | scaled, 1 rate |
| fit, R² in log space | ≥ 0.9 | ≥ 0.7 | < 0.7 |
| B_noise's 95 % interval | bounded, high/low ≤ 4 | bounded, ≤ 16 | unbounded or wider |
| seeds | ≥ 2 | 1 (seed-to-seed scatter unmeasured) | — |
| points fitted | ≥ 4 | 3 | — |
| fastest vs the next | ≥ 10 % apart, seed ranges apart | seed ranges overlap | within 10 %: a tie |
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from service.science.bootstrap import Interval
from service.science.fit import CriticalBatchFit, SweepPoint
from service.science.formatting import interval_text, num

__all__ = [
    "Confidence",
    "Evidence",
    "Exclusion",
    "FastestChoice",
    "KneeChoice",
    "KneePosition",
    "Recommendation",
    "recommend",
]

Confidence = Literal["high", "medium", "low"]
#: Where B_noise lies against the measured batch sizes.
KneePosition = Literal["within", "below", "above"]
_ORDER: tuple[Confidence, ...] = ("low", "medium", "high")
_BEYOND = math.sqrt(2.0)  # B_noise this far outside the fitted batches is beyond the range
#: The fastest within this factor of the next is a tie.
TIE = 1.1


@dataclass(frozen=True)
class Exclusion:
    """A batch size left out of the fit, why, and what to change so it is not."""

    batch_size: int
    reason: str
    action: str


@dataclass(frozen=True)
class Evidence:
    """What a sweep's answers rest on besides its points and fit: ``seeds`` per point,
    the batch sizes ``excluded`` from the fit, whether the rates were ``tuned`` per batch
    size (searched or given, not scaled), and the ``fewest_rates`` any batch size tried (under
    3, whether its best is interior is unknown)."""

    seeds: int
    excluded: tuple[int, ...] = ()
    tuned: bool = True
    fewest_rates: int = 3


@dataclass(frozen=True)
class FastestChoice:
    """The batch size with the least mean wall time to the target (None: no point reached it
    with every seed); ``wall_time_range`` is the min–max over its seeds."""

    batch_size: int | None
    wall_time_s: float | None
    wall_time_range: tuple[float, float] | None
    seeds: int
    reason: str
    confidence: Confidence | None = None
    confidence_reasons: tuple[str, ...] = ()


@dataclass(frozen=True)
class KneeChoice:
    """The measured batch size nearest B_noise, or None with ``position`` "below" / "above"
    when B_noise lies beyond the measured range (``position`` None when there is no fit), or
    when the confidence is low."""

    batch_size: int | None
    b_noise: float | None
    b_noise_ci: Interval | None
    position: KneePosition | None
    reason: str
    confidence: Confidence | None = None
    confidence_reasons: tuple[str, ...] = ()


@dataclass(frozen=True)
class Recommendation:
    """A sweep's two answers: the fastest batch size in wall time, and the knee."""

    fastest: FastestChoice
    knee: KneeChoice


Graded = tuple[Confidence, str]


def _overall(graded: Sequence[Graded]) -> tuple[Confidence, tuple[str, ...]]:
    level = min((grade for grade, _ in graded), key=_ORDER.index)
    return level, tuple(f"{grade}: {reason}" for grade, reason in graded)


def _rates_evidence(evidence: Evidence) -> Graded:
    if not evidence.tuned:
        return "low", "the learning rate was scaled, not tuned per batch size"
    if evidence.fewest_rates == 1:
        return "low", "one learning rate per batch size: not tuned"
    if evidence.fewest_rates == 2:
        return (
            "medium",
            "two learning rates per batch size: whether the best is interior is unknown",
        )
    if evidence.excluded:
        sizes = ", ".join(map(str, evidence.excluded))
        return "medium", f"batch sizes {sizes} left out: their best rate is at an edge"
    return "high", "every batch size's learning rate was tuned to an interior best"


def _seeds_evidence(evidence: Evidence) -> Graded:
    if evidence.seeds >= 2:
        return "high", f"{evidence.seeds} seeds per point"
    return "medium", "one seed per point: the seed-to-seed scatter is not measured"


def _fit_evidence(fit: CriticalBatchFit) -> list[Graded]:
    graded: list[Graded] = []
    r2 = fit.r2_log
    if r2 is None or r2 < 0.7:
        graded.append(("low", f"the fit explains little: R² in log space {_r2(r2)}"))
    else:
        graded.append(("high" if r2 >= 0.9 else "medium", f"R² in log space {_r2(r2)}"))
    ci = fit.b_noise_ci
    label = interval_text(ci, fit.confidence)
    if ci is None or ci.low is None or ci.high is None or ci.low <= 0.0:
        graded.append(("low", f"B_noise's interval is not bounded ({label})"))
    else:
        width = ci.high / ci.low
        grade: Confidence = "high" if width <= 4.0 else "medium" if width <= 16.0 else "low"
        graded.append((grade, f"B_noise's interval spans {width:.2g}× ({label})"))
    points = len(fit.reached_batch_sizes or fit.batch_sizes)
    grade = "high" if points >= 4 else "medium"
    graded.append((grade, f"{points} batch sizes reached the target"))
    return graded


def _r2(value: float | None) -> str:
    return "not defined" if value is None else f"{value:.2f}"


def _fastest(points: Sequence[SweepPoint], evidence: Evidence) -> FastestChoice:
    times: list[tuple[float, float, float, int, int]] = []  # mean, min, max, seeds, B
    for point in points:
        if point.reached:
            seconds = [c.wall_time_s for c in point.crossings if c is not None]
            mean = math.fsum(seconds) / len(seconds)
            times.append((mean, min(seconds), max(seconds), len(seconds), int(point.batch_size)))
    if not times:
        return FastestChoice(
            None, None, None, 0, "no batch size reached the target with every seed"
        )
    times.sort()
    mean, low, high, seeds, batch = times[0]
    spread = (
        f"mean of {seeds} seeds, range {num(low, 3)}–{num(high, 3)} s"
        if seeds > 1
        else "one seed, so the run-to-run spread is not measured"
    )
    reason = f"batch {batch} reached the target in the least wall time, {num(mean, 3)} s ({spread})"
    graded: list[Graded] = [_seeds_evidence(evidence)]
    if batch in evidence.excluded:
        graded.append(("low", f"batch {batch}'s rate is at an edge: a better one may be faster"))
    elif not evidence.tuned or evidence.fewest_rates < 3:
        graded.append(_rates_evidence(evidence))
    if len(times) > 1:
        next_mean, next_low, _, _, next_batch = times[1]
        ratio = next_mean / mean if mean > 0.0 else math.inf
        reason += (
            f", {num(ratio, 2)}× faster than the next, batch {next_batch} ({num(next_mean, 3)} s)"
        )
        overlap = next_low <= high
        if overlap:
            reason += "; their seed ranges overlap, so the two are not clearly apart"
        if ratio < TIE:
            graded.append(("low", f"within {TIE - 1:.0%} of batch {next_batch}: a tie"))
        elif overlap:
            graded.append(("medium", f"its seed range overlaps batch {next_batch}'s"))
        else:
            graded.append(("high", f"{num(ratio, 2)}× ahead of batch {next_batch}"))
    confidence, reasons = _overall(graded)
    return FastestChoice(batch, mean, (low, high), seeds, reason, confidence, reasons)


def _knee(fit: CriticalBatchFit, evidence: Evidence) -> KneeChoice:
    if fit.b_noise is None or fit.s_min is None or fit.e_min is None:
        return KneeChoice(None, None, None, None, f"no knee: {fit.reason}")
    b_noise = fit.b_noise
    ci = interval_text(fit.b_noise_ci, fit.confidence)
    confidence, reasons = _overall(
        [_rates_evidence(evidence), _seeds_evidence(evidence), *_fit_evidence(fit)]
    )
    measured = fit.reached_batch_sizes or fit.batch_sizes  # a bound alone places no knee
    smallest, largest = min(measured), max(measured)
    if b_noise > largest * _BEYOND:
        return KneeChoice(
            None, b_noise, fit.b_noise_ci, "above",
            f"the knee B_noise ≈ {num(b_noise)} ({ci}) lies beyond the largest batch measured "
            f"({largest}): steps were still falling almost as 1/B there, so larger batches "
            "would still save steps; measure larger batches to place it",
            confidence, reasons,
        )  # fmt: skip
    if b_noise < smallest / _BEYOND:
        return KneeChoice(
            None, b_noise, fit.b_noise_ci, "below",
            f"the knee B_noise ≈ {num(b_noise)} ({ci}) lies below the smallest batch measured "
            f"({smallest}): every batch here is past it, so a larger batch costs samples and "
            "saves few steps; measure smaller batches to place it",
            confidence, reasons,
        )  # fmt: skip
    nearest = min(measured, key=lambda b: abs(math.log(b / b_noise)))
    if confidence == "low":
        weakest = "; ".join(r.removeprefix("low: ") for r in reasons if r.startswith("low:"))
        return KneeChoice(
            None, b_noise, fit.b_noise_ci, "within",
            f"no knee named: B_noise ≈ {num(b_noise)} ({ci}) is too uncertain to stand "
            f"behind ({weakest}); more seeds, more batch sizes or a searched learning rate "
            "would firm it up",
            confidence, reasons,
        )  # fmt: skip
    reason = (
        f"batch {nearest} is the measured batch nearest the knee B_noise ≈ {num(b_noise)} "
        f"({ci}), where steps and samples are each about twice their minimum "
        f"(S_min ≈ {num(fit.s_min)} steps, E_min ≈ {num(fit.e_min)} samples): smaller "
        "batches save samples, larger ones save steps"
    )
    return KneeChoice(nearest, b_noise, fit.b_noise_ci, "within", reason, confidence, reasons)


def recommend(
    points: Sequence[SweepPoint], fit: CriticalBatchFit, evidence: Evidence | None = None
) -> Recommendation:
    """The fastest batch size in wall time and the knee, each with one sentence of reason, its
    uncertainty (the seeds' wall-time range; the bootstrap interval of B_noise) and its
    confidence with the reasons. ``points``: every batch size at its chosen rate (a failed run's
    crossing is None); ``evidence`` defaults to the points' seeds, nothing excluded, rates
    tuned."""
    evidence = evidence or Evidence(seeds=min((len(p.crossings) for p in points), default=1))
    return Recommendation(_fastest(points, evidence), _knee(fit, evidence))
