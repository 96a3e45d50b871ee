"""What a sweep and a job's noise scale say about batch size, in one sentence each.

- :func:`recommend`: from a sweep's points and fit, the batch size that reached the target in the
  least wall time (mean over seeds; wall time is the workers' own, so it depends on their
  hardware and load) and the one at the knee, B ≈ B_noise: the measured batch size nearest to
  B_noise in log distance, or none when B_noise lies beyond the measured range (more than half a
  doubling, a factor √2, outside the smallest or largest batch fitted).
- :func:`advise_batch_size`: for a job run with ``noise_scale``, where its batch size B sits
  against the late, finite-population-corrected noise scale B̂ (``NoiseScaleSummary``). With
  S(B) = S_min (1 + B̂/B) and E(B) = E_min (1 + B/B̂) the ratio ρ = B/B̂ places it:

  | ρ = B/B̂      | verdict     | steps S/S_min | samples E/E_min |
  | ------------- | ----------- | ------------- | --------------- |
  | < 1/4         | well below  | > 5           | < 1.25          |
  | [1/4, 1/2)    | below       | 3 – 5         | 1.25 – 1.5      |
  | [1/2, 2]      | near        | 1.5 – 3       | 1.5 – 3         |
  | (2, 4]        | above       | 1.25 – 1.5    | 3 – 5           |
  | > 4           | well above  | < 1.25        | > 5             |

  The verdict uses the central B̂; its uncertainty is stated beside it as the spread factor of
  the late per-epoch estimates ("±3×": the estimates scatter by a factor of about 3 around B̂).
  B_simple is an estimate of the critical batch, not B_noise itself (they agree when the loss's
  curvature is isotropic), so these are orders of magnitude, which the bands are wide enough for.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from service.sweeps.fit import CriticalBatchFit, Interval, SweepPoint
from service.sweeps.noise import NoiseScaleSummary
from service.sweeps.targets import SweepDataError

__all__ = [
    "BatchSizeAdvice",
    "FastestChoice",
    "KneeChoice",
    "Recommendation",
    "Verdict",
    "advise_batch_size",
    "recommend",
]

Verdict = Literal["well below", "below", "near", "above", "well above"]
_BEYOND = math.sqrt(2.0)  # B_noise this far outside the fitted batches is beyond the range


@dataclass(frozen=True)
class FastestChoice:
    """The batch size with the least mean wall time to the target (None: no point reached it
    with every seed); ``wall_time_range`` is the min–max over its seeds."""

    batch_size: int | None
    wall_time_s: float | None
    wall_time_range: tuple[float, float] | None
    seeds: int
    reason: str


@dataclass(frozen=True)
class KneeChoice:
    """The measured batch size nearest B_noise, or None with ``position`` "below" / "above"
    when B_noise lies beyond the measured range (``position`` None when there is no fit)."""

    batch_size: int | None
    b_noise: float | None
    b_noise_ci: Interval | None
    position: Literal["within", "below", "above"] | None
    reason: str


@dataclass(frozen=True)
class Recommendation:
    """A sweep's two answers: the fastest batch size in wall time, and the knee."""

    fastest: FastestChoice
    knee: KneeChoice


@dataclass(frozen=True)
class BatchSizeAdvice:
    """Where ``batch_size`` sits against the run's late noise scale (module docstring).

    ``noise_scale``: B̂, the corrected B_simple; ``ratio`` = batch_size / B̂;
    ``uncertainty_factor``: the spread factor (None: a single estimate); ``verdict`` and the
    numbers are None when the run has no noise scale, and ``message`` says why.
    """

    batch_size: int
    noise_scale: float | None
    ratio: float | None
    uncertainty_factor: float | None
    loss_level: float | None
    verdict: Verdict | None
    message: str


def _fmt(value: float, significant: int = 2) -> str:
    """``value`` to ``significant`` figures, with thousands separators: 912 → "910",
    0.4127 → "0.41", 123456 → "120,000"."""
    if value == 0.0 or not math.isfinite(value):
        return f"{value:g}"
    digits = significant - 1 - math.floor(math.log10(abs(value)))
    rounded = round(value, digits)
    if abs(rounded) >= 1000:
        return f"{rounded:,.0f}"
    return f"{rounded:.{max(digits, 0)}f}"


def _fmt_interval(interval: Interval | None, confidence: float) -> str:
    if interval is None:
        return "no interval: no bootstrap"
    label = f"{confidence * 100:.0f}% CI"
    if interval.low is None and interval.high is None:
        return f"{label} unbounded both ways"
    if interval.low is None:
        return f"{label} ≤ {_fmt(interval.high or 0.0)}"
    if interval.high is None:
        return f"{label} ≥ {_fmt(interval.low)}, unbounded above"
    return f"{label} {_fmt(interval.low)}–{_fmt(interval.high)}"


def _fastest(points: Sequence[SweepPoint]) -> FastestChoice:
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
        f"mean of {seeds} seeds, range {_fmt(low, 3)}–{_fmt(high, 3)} s"
        if seeds > 1
        else "one seed, so the run-to-run spread is not measured"
    )
    reason = (
        f"batch {batch} reached the target in the least wall time, {_fmt(mean, 3)} s ({spread})"
    )
    if len(times) > 1:
        next_mean, next_low, _, _, next_batch = times[1]
        ratio = next_mean / mean if mean > 0.0 else math.inf
        reason += (
            f", {_fmt(ratio, 2)}× faster than the next, batch {next_batch} ({_fmt(next_mean, 3)} s)"
        )
        if next_low <= high:
            reason += "; their seed ranges overlap, so the two are not clearly apart"
    return FastestChoice(batch, mean, (low, high), seeds, reason)


def _knee(fit: CriticalBatchFit) -> KneeChoice:
    if fit.b_noise is None or fit.s_min is None or fit.e_min is None:
        return KneeChoice(None, None, None, None, f"no knee: {fit.reason}")
    b_noise = fit.b_noise
    ci = _fmt_interval(fit.b_noise_ci, fit.confidence)
    smallest, largest = min(fit.batch_sizes), max(fit.batch_sizes)
    if b_noise > largest * _BEYOND:
        return KneeChoice(
            None, b_noise, fit.b_noise_ci, "above",
            f"the knee B_noise ≈ {_fmt(b_noise)} ({ci}) lies beyond the largest batch measured "
            f"({largest}): steps were still falling almost as 1/B there, so larger batches "
            "would still save steps; measure larger batches to place it",
        )  # fmt: skip
    if b_noise < smallest / _BEYOND:
        return KneeChoice(
            None, b_noise, fit.b_noise_ci, "below",
            f"the knee B_noise ≈ {_fmt(b_noise)} ({ci}) lies below the smallest batch measured "
            f"({smallest}): every batch here is past it, so a larger batch costs samples and "
            "saves few steps; measure smaller batches to place it",
        )  # fmt: skip
    nearest = min(fit.batch_sizes, key=lambda b: abs(math.log(b / b_noise)))
    reason = (
        f"batch {nearest} is the measured batch nearest the knee B_noise ≈ {_fmt(b_noise)} "
        f"({ci}), where steps and samples are each about twice their minimum "
        f"(S_min ≈ {_fmt(fit.s_min)} steps, E_min ≈ {_fmt(fit.e_min)} samples): smaller "
        "batches save samples, larger ones save steps"
    )
    return KneeChoice(nearest, b_noise, fit.b_noise_ci, "within", reason)


def recommend(points: Sequence[SweepPoint], fit: CriticalBatchFit) -> Recommendation:
    """The fastest batch size in wall time and the knee, each with one sentence of reason and
    its uncertainty (the seeds' wall-time range; the bootstrap interval of B_noise)."""
    return Recommendation(_fastest(points), _knee(fit))


def _verdict(ratio: float) -> Verdict:
    if ratio < 0.25:
        return "well below"
    if ratio < 0.5:
        return "below"
    if ratio <= 2.0:
        return "near"
    if ratio <= 4.0:
        return "above"
    return "well above"


_CONSEQUENCE: dict[Verdict, str] = {
    "well below": "a batch several times larger, with its learning rate re-tuned, would need "
    "fewer steps for about the same samples",
    "below": "a batch about twice as large, with its learning rate re-tuned, would still cut "
    "the steps by a third or more for a modest increase in samples",
    "near": "this is the knee, where steps and samples are each within about 3× of their "
    "minimum: a larger batch saves few steps, a smaller one few samples",
    "above": "a smaller batch, with its learning rate re-tuned, would need only slightly more "
    "steps and fewer samples (less compute)",
    "well above": "most of each batch is redundant: a batch several times smaller, with its "
    "learning rate re-tuned, would need about the same steps for far fewer samples",
}


def advise_batch_size(batch_size: int, summary: NoiseScaleSummary) -> BatchSizeAdvice:
    """One sentence on ``batch_size`` against the run's late noise scale, e.g. "batch 32 is
    well below the measured noise scale ≈ 900 (±3×) at loss 0.41: a batch several times
    larger, with its learning rate re-tuned, would need fewer steps for about the same
    samples"."""
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise SweepDataError("batch_size", f"must be an integer ≥ 1, not {batch_size!r}")
    noise_scale = summary.b_simple_corrected
    if noise_scale is None or noise_scale <= 0.0:
        return BatchSizeAdvice(
            batch_size, None, None, None, summary.loss_level, None,
            f"no advice for batch {batch_size}: {summary.reason or 'no noise scale measured'}",
        )  # fmt: skip
    ratio = batch_size / noise_scale
    verdict = _verdict(ratio)
    factor = summary.spread_factor
    if factor is None:
        uncertainty = "one estimate, spread not measured"
    else:  # "±3×", "±1.4×", "±12×", "±130×"
        uncertainty = f"±{factor:.2g}×" if factor < 10 else f"±{_fmt(factor)}×"
    message = (
        f"batch {batch_size} is {verdict} the measured noise scale ≈ {_fmt(noise_scale)} "
        f"({uncertainty}) at loss {_fmt(summary.loss_level, 2)}: {_CONSEQUENCE[verdict]}"
    )
    return BatchSizeAdvice(
        batch_size, noise_scale, ratio, factor, summary.loss_level, verdict, message
    )
