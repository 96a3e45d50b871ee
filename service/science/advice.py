"""What a job's noise scale says about its batch size, in one sentence (a sweep's answer is
:mod:`service.science.recommendation`).

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
  When the late |G|² was not resolved, B̂ is only bounded below, B̂ ≳ L: then ρ ≤ B/L, a verdict
  is given when that alone decides it (B/L < 1/4: well below), and otherwise the sentence
  says what ρ ≤ B/L tells.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from service.science.formatting import num
from service.science.noise import NoiseScaleSummary
from service.science.targets import SweepDataError

__all__ = ["BatchSizeAdvice", "Verdict", "advise_batch_size"]

Verdict = Literal["well below", "below", "near", "above", "well above"]


@dataclass(frozen=True)
class BatchSizeAdvice:
    """Where ``batch_size`` sits against the run's late noise scale (module docstring).

    ``noise_scale``: B̂, the corrected B_simple; ``ratio`` = batch_size / B̂;
    ``uncertainty_factor``: the spread factor (None: a single estimate); ``verdict`` and the
    numbers are None when the run has no noise scale, and ``message`` says why.
    ``noise_scale_lower_bound``: when B_simple was not resolved but bounded below, B̂ ≳ this
    (corrected); the verdict is then given only when the bound alone decides it (B/bound
    < 1/4: well below), and ``message`` says what the bound does tell. ``exact``: measured
    over every training row.
    """

    batch_size: int
    noise_scale: float | None
    ratio: float | None
    uncertainty_factor: float | None
    loss_level: float | None
    verdict: Verdict | None
    message: str
    noise_scale_lower_bound: float | None = None
    exact: bool = False


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


def _within_bound(ratio_max: float) -> str:
    """What ρ ≤ ``ratio_max`` (B over the lower bound of B̂) says, when it is not < 1/4."""
    if ratio_max < 0.5:
        return (
            "below or well below it, so a larger batch, with its learning rate re-tuned, "
            "would still cut the steps"
        )
    if ratio_max <= 2.0:
        return "near it or below, not above: a smaller batch would save few samples"
    return "the bound does not place the batch"


def _lower_bound_advice(
    batch_size: int, summary: NoiseScaleSummary, bound: float
) -> BatchSizeAdvice:
    """B_simple not resolved, B̂ ≳ ``bound``: ρ = B/B̂ ≤ B/bound."""
    ratio_max = batch_size / bound
    at = (
        f"the noise scale, which is at least ≈ {num(bound)} at training loss "
        f"{num(summary.loss_level, 2)} (a lower bound: the mean gradient is within the "
        "sampled noise, so B_simple is not resolved"
    )
    verdict: Verdict | None = None
    if ratio_max < 0.25:  # ρ < 1/4 whatever B̂ is above the bound
        verdict = "well below"
        message = f"batch {batch_size} is well below {at}): {_CONSEQUENCE[verdict]}"
    else:
        message = (
            f"batch {batch_size} is at most {num(ratio_max)}× {at}; more noise_scale_samples "
            f"would resolve it): {_within_bound(ratio_max)}"
        )
    return BatchSizeAdvice(
        batch_size, None, None, None, summary.loss_level, verdict, message,
        noise_scale_lower_bound=bound, exact=summary.exact,
    )  # fmt: skip


def advise_batch_size(batch_size: int, summary: NoiseScaleSummary) -> BatchSizeAdvice:
    """One sentence on ``batch_size`` against the run's late noise scale, e.g. "batch 32 is
    well below the measured noise scale ≈ 900 (±3×) at training loss 0.41: a batch several
    times larger, with its learning rate re-tuned, would need fewer steps for about the same
    samples". When B_simple is only bounded below (``summary.b_simple_corrected_lower_bound``)
    the sentence gives the bound and what it tells."""
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise SweepDataError("batch_size", f"must be an integer ≥ 1, not {batch_size!r}")
    noise_scale = summary.b_simple_corrected
    if noise_scale is None or noise_scale <= 0.0:
        bound = summary.b_simple_corrected_lower_bound
        if bound is not None and bound > 0.0:
            return _lower_bound_advice(batch_size, summary, bound)
        return BatchSizeAdvice(
            batch_size, None, None, None, summary.loss_level, None,
            f"no advice for batch {batch_size}: {summary.reason or 'no noise scale measured'}",
            exact=summary.exact,
        )  # fmt: skip
    ratio = batch_size / noise_scale
    verdict = _verdict(ratio)
    factor = summary.spread_factor
    if factor is None:
        uncertainty = "one estimate, spread not measured"
    else:  # "±3×", "±1.4×", "±12×", "±130×"
        uncertainty = f"±{factor:.2g}×" if factor < 10 else f"±{num(factor)}×"
    measured = "exact" if summary.exact else "measured"
    message = (
        f"batch {batch_size} is {verdict} the {measured} noise scale ≈ {num(noise_scale)} "
        f"({uncertainty}) at training loss {num(summary.loss_level, 2)}: "
        f"{_CONSEQUENCE[verdict]}"
    )
    return BatchSizeAdvice(
        batch_size, noise_scale, ratio, factor, summary.loss_level, verdict, message,
        exact=summary.exact,
    )  # fmt: skip
