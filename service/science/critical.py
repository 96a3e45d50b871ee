"""The critical batch size measured directly, and the batch-size warmup that follows it.

Merrill et al. 2025 ("Critical Batch Size Revisited", arXiv 2505.23971): from a checkpoint of a
small-batch run, branch at k × its batch size for the same number of samples (the learning
rate re-tuned or scaled per branch) and ask whether the loss keeps up with the ×1 branch. The
largest k that keeps up is the critical batch at that point of training.

The rule across seeds (:data:`RULE`): a multiplier keeps up when the mean of its seeds' losses
after the window is at most (1 + tolerance) × the mean of the ×1 branch's; a failed run
(diverged) counts as an infinite loss, so a branch with a failed seed never keeps up. Means,
not every seed, because a branch's seeds and the ×1 branch's are different draws of the same
noise: a per-seed rule would judge the noise. Each seed's own verdict (seed s of ×k against
seed s of ×1, the same data order) is reported beside it, and ``unanimous`` says whether they
all agree with the mean's.

The critical multiplier is the largest one such that it and every smaller one kept up;
the bracket is [that, the smallest that fell behind] (open above when every one kept up).
A multiplier above the first that fell behind which keeps up again makes ``monotone`` false:
the bracket still ends at the first that fell behind (the conservative reading).

What it recovers. On a noisy quadratic (H, Σ) with the rate tuned per branch, the loss each
branch reaches after the window follows in closed form from the second-moment recursion
D ← (I − εH) D (I − εH) + ε² Σ / B, and so does the critical batch the criterion finds
(``tests/probes/test_closed_form.py`` checks the probe against it). For a short window the
greedy picture (McCandlish et al. 2018) says why: a batch B makes progress per sample ∝
1/(B + B_noise), B_noise = tr(HΣ)/GᵀHG, so a branch keeps up when it loses at most a fraction δ
of the ×1 branch's progress — δ = tolerance × L₁ / ΔL₁ (L₁ the ×1 branch's loss after the
window, ΔL₁ its gain there) — while k B₀ ≤ (B₀ + δ B_noise)/(1 − δ): at δ = ½ that is
B₀ + B_noise, the batch where the progress per sample halves. A tight tolerance (1%, when the
×1 branch gains much more than 2% of its loss) therefore answers a batch well below B_noise:
conservative by design. :func:`tolerance_for_progress` turns a δ into the tolerance that asks it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

__all__ = [
    "DEFAULT_TOLERANCE",
    "RULE",
    "CriticalBatch",
    "MultiplierVerdict",
    "critical_batch",
    "tolerance_for_progress",
    "warmup_points",
]

#: The loss may trail the ×1 branch's by at most this much, relative.
DEFAULT_TOLERANCE = 0.01
RULE = (
    "a multiplier keeps up when the mean over seeds of its loss after the window is at most "
    "(1 + tolerance) × the ×1 branch's mean (a failed seed counts as an infinite loss); the "
    "critical batch is the largest multiplier that keeps up with every smaller one"
)


@dataclass(frozen=True)
class MultiplierVerdict:
    """How one multiplier did: its mean loss over seeds (inf when a seed failed), the
    relative gap to ×1, the verdict, and each seed's own verdict (None: no paired ×1 seed)."""

    multiplier: int
    loss: float
    relative_gap: float
    kept_up: bool
    seed_verdicts: tuple[bool | None, ...]


@dataclass(frozen=True)
class CriticalBatch:
    """The critical multiplier at one checkpoint and its bracket.

    ``kept_up``: the largest multiplier that kept up with every smaller one (≥ 1: ×1 keeps up
    with itself); ``fell_behind``: the smallest that did not (None: every one kept up, so the
    critical batch is at least ``kept_up`` — ``open_ended``). Multiply by the batch size in
    force at the checkpoint for batch sizes. ``reason`` is set (and the rest empty) when there
    is no answer: no finite ×1 loss.
    """

    kept_up: int | None
    fell_behind: int | None
    open_ended: bool
    monotone: bool
    unanimous: bool
    verdicts: tuple[MultiplierVerdict, ...]
    tolerance: float
    reason: str | None = None


def _loss(value: float | None) -> float:
    """A seed's loss, a failed or missing one as inf."""
    return math.inf if value is None or not math.isfinite(value) else float(value)


def _mean(values: Sequence[float | None]) -> float:
    losses = [_loss(v) for v in values]
    return math.inf if any(math.isinf(v) for v in losses) else math.fsum(losses) / len(losses)


def _keeps_up(loss: float, reference: float, tolerance: float) -> bool:
    return math.isfinite(loss) and loss <= (1.0 + tolerance) * reference


def critical_batch(
    losses: Mapping[int, Sequence[float | None]], *, tolerance: float = DEFAULT_TOLERANCE
) -> CriticalBatch:
    """The critical multiplier from ``losses``: multiplier → the loss after the window, one per
    seed in seed order (None or non-finite: that run failed). Must hold multiplier 1 (the
    reference); multipliers without losses are left out (not yet run).
    """
    if not 0.0 < tolerance < 1.0 or not math.isfinite(tolerance):
        raise ValueError(f"tolerance must lie in (0, 1), not {tolerance!r}")
    if any(k < 1 for k in losses):
        raise ValueError("multipliers must be at least 1")
    reference_seeds = list(losses.get(1, ()))
    reference = _mean(reference_seeds) if reference_seeds else math.inf
    if not math.isfinite(reference) or reference < 0.0:
        return CriticalBatch(
            kept_up=None,
            fell_behind=None,
            open_ended=False,
            monotone=True,
            unanimous=True,
            verdicts=(),
            tolerance=tolerance,
            reason="the ×1 branch has no finite loss after the window (not run yet, or a "
            "seed failed)",
        )
    verdicts: list[MultiplierVerdict] = []
    for k in sorted(losses):
        seeds = list(losses[k])
        if not seeds:
            continue
        loss = _mean(seeds)
        gap = loss / reference - 1.0 if reference > 0.0 else (0.0 if loss == 0.0 else math.inf)
        per_seed = tuple(
            _keeps_up(_loss(seed), _loss(reference_seeds[i]), tolerance)
            if i < len(reference_seeds) and math.isfinite(_loss(reference_seeds[i]))
            else None
            for i, seed in enumerate(seeds)
        )
        verdicts.append(
            MultiplierVerdict(k, loss, gap, _keeps_up(loss, reference, tolerance), per_seed)
        )
    kept_up, fell_behind = 1, None
    for verdict in verdicts:
        if not verdict.kept_up:
            fell_behind = verdict.multiplier
            break
        kept_up = verdict.multiplier
    monotone = fell_behind is None or not any(
        v.kept_up for v in verdicts if v.multiplier > fell_behind
    )
    unanimous = all(seed is None or seed == v.kept_up for v in verdicts for seed in v.seed_verdicts)
    return CriticalBatch(
        kept_up=kept_up,
        fell_behind=fell_behind,
        open_ended=fell_behind is None,
        monotone=monotone,
        unanimous=unanimous,
        verdicts=tuple(verdicts),
        tolerance=tolerance,
    )


def tolerance_for_progress(
    fraction_lost: float, *, reference_loss: float, reference_gain: float
) -> float:
    """The tolerance at which keeping up means losing at most ``fraction_lost`` (δ) of the ×1
    branch's progress over the window: δ × ΔL₁ / L₁. At δ = ½ the criterion recovers the
    McCandlish critical batch B₀ + B_noise on a noisy quadratic (see the module docstring)."""
    if not 0.0 < fraction_lost < 1.0:
        raise ValueError("fraction_lost must lie in (0, 1)")
    if reference_loss <= 0.0 or reference_gain <= 0.0:
        raise ValueError("the ×1 branch must have a positive loss and have made progress")
    return fraction_lost * reference_gain / reference_loss


def warmup_points(
    measurements: Sequence[tuple[float, float]],
    *,
    start_batch: int,
    max_batch: int | None = None,
) -> list[tuple[int, int]]:
    """A batch-size warmup from measured critical batches, as in Merrill et al. 2025: start at
    ``start_batch``; at each measurement (samples seen, critical batch size), in order of
    samples, double the batch while the critical batch is at least twice the current one
    (never above ``max_batch``). Returns ``[(samples, batch), …]``: ``(0, start_batch)`` first,
    then one point per change, the batch in force from that many samples on.

    A measurement whose critical batch is open-ended (every multiplier kept up) should pass its
    lower bound (the largest batch that kept up): the schedule then grows no faster than the
    evidence. Non-finite or non-positive critical batches are skipped (no evidence there).
    """
    if start_batch < 1:
        raise ValueError("start_batch must be at least 1")
    if max_batch is not None and max_batch < start_batch:
        raise ValueError("max_batch must be at least start_batch")
    points = [(0, start_batch)]
    batch = start_batch
    for samples, critical in sorted(measurements, key=lambda m: m[0]):
        if not (math.isfinite(samples) and math.isfinite(critical)) or critical <= 0.0:
            continue
        grown = batch
        while critical >= 2 * grown and (max_batch is None or 2 * grown <= max_batch):
            grown *= 2
        if grown != batch:
            batch = grown
            at = max(round(samples), 0)
            if points[-1][0] == at:
                points[-1] = (at, batch)
            else:
                points.append((at, batch))
    return points
