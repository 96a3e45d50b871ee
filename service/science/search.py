"""The learning-rate search of one batch size: bracket the best rate, then refine around it.

The learning rate must be re-tuned per batch size (Shallue et al. 2018, "Measuring the Effects
of Data Parallelism on Neural Network Training"); a fit of S(B) over rates that were not tuned
measures the rates, not the batch sizes. Each batch size is searched on its own, from the rates
it has run and how each did (its :data:`Rank`):

1. **Bracket.** While the best rate is the lowest or the highest tried, the next round tries
   ``EXPAND`` (×4) beyond that edge — or, moving up or down, the guess scaled from a tuned
   neighbouring batch size (``hint``) when that lies farther out, so a large batch jumps to
   near its answer instead of crawling there. A run that diverged, failed, or never reached
   the target ranks below every run that did, so divergence at the top bounds the bracket from
   above and a batch size whose every rate diverged walks down.
2. **Refine.** Once a tried rate lies on each side of the best, each side whose gap is wider
   than the finest step gets the best rate moved by the coarsest of ``REFINE_STEPS`` (√2, then
   2^¼) that is still finer than that gap (a gap wider than ×4, left by a jump, is halved in
   log space first). The search of that batch size is done when both
   neighbours lie within 2^¼ of the best.

Round 0 runs :func:`first_rates`: the guess ÷4, the guess and ×4, the guess being ``start``
scaled from the smallest batch size by the sweep's rule (√B or B). Everything here is a pure
function of the rates tried, so a read and the orchestration always agree.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Literal

__all__ = [
    "EXPAND",
    "REFINE_STEPS",
    "Edge",
    "Rank",
    "ScalingRule",
    "best_of",
    "edge_of",
    "first_rates",
    "next_rates",
    "scaled_rate",
]

#: The bracketing step: each round beyond an edge moves the rate by this factor.
EXPAND = 4.0
#: The refining steps, coarsest first: √2, then 2^¼ (the search's resolution).
REFINE_STEPS = (math.sqrt(2.0), 2.0**0.25)
#: Rates within this relative distance are the same rate (floating-point products of steps).
_SAME = 1e-9

ScalingRule = Literal["sqrt", "linear", "none"]
Edge = Literal["low", "high"]

#: How a rate did, lower is better: (failed: 0 or 1, mean steps to target or inf, mean best
#: loss or inf). Ties go to the lower rate.
Rank = tuple[int, float, float]


def best_of(ranks: Mapping[float, Rank]) -> float:
    """The best rate: the lowest rank, then the lower rate."""
    return min(ranks, key=lambda rate: (*ranks[rate], rate))


def edge_of(ranks: Mapping[float, Rank]) -> Edge | None:
    """Which edge of the tried rates the best one is on (None: interior). A single rate is on
    both; it is reported as ``high`` only when it is the one rate and it did not fail."""
    best = best_of(ranks)
    if best >= max(ranks) and (len(ranks) > 1 or ranks[best][0] == 0):
        return "high"
    if best <= min(ranks):
        return "low"
    return None


def scaled_rate(rate: float, from_batch: int, to_batch: int, rule: ScalingRule) -> float:
    """``rate`` tuned at ``from_batch`` moved to ``to_batch`` by ``rule``: ×√(B'/B), ×B'/B or ×1."""
    ratio = to_batch / from_batch
    if rule == "sqrt":
        return rate * math.sqrt(ratio)
    if rule == "linear":
        return rate * ratio
    return rate


def first_rates(start: float, batch_size: int, smallest: int, rule: ScalingRule) -> list[float]:
    """Round 0 of ``batch_size``: its guess ÷ ``EXPAND``, the guess, × ``EXPAND``; the guess
    is ``start`` (meant for the smallest batch size) scaled by ``rule``."""
    guess = scaled_rate(start, smallest, batch_size, rule)
    return [guess / EXPAND, guess, guess * EXPAND]


def _tried(rate: float, rates: Sequence[float]) -> bool:
    return any(abs(rate / other - 1.0) <= _SAME for other in rates)


def _refine(best: float, neighbour: float) -> float | None:
    """The rate to try between ``best`` and its nearest tried ``neighbour`` on one side, or
    None when they are within the finest step."""
    gap = max(neighbour / best, best / neighbour)
    if gap > EXPAND * (1.0 + 1e-6):  # a wide gap (a hint that overshot): halve it in log space
        return math.sqrt(best * neighbour)
    for step in REFINE_STEPS:
        if gap > step * (1.0 + 1e-6):
            return best * step if neighbour > best else best / step
    return None


def next_rates(ranks: Mapping[float, Rank], *, hint: float | None = None) -> list[float]:
    """The rates one batch size runs next, from how its tried rates ranked (empty: its search
    is done). ``hint``: a guess scaled from a tuned neighbouring batch size, used only to jump
    further while bracketing."""
    if not ranks:
        raise ValueError("next_rates needs at least one tried rate")
    rates = sorted(ranks)
    best = best_of(ranks)
    edge = edge_of(ranks)
    if len(rates) == 1 and edge == "high":  # one rate that ran: look both ways
        proposals = [best / EXPAND, best * EXPAND]
    elif edge == "high":
        step = best * EXPAND
        proposals = [hint if hint is not None and hint > step else step]
    elif edge == "low":
        step = best / EXPAND
        proposals = [hint if hint is not None and hint < step else step]
    else:
        index = rates.index(best)
        proposals = [
            rate
            for neighbour in (rates[index - 1], rates[index + 1])
            if (rate := _refine(best, neighbour)) is not None
        ]
    return [rate for rate in proposals if not _tried(rate, rates)]
