"""The learning-rate search of one batch size (``service.science.search``): it brackets and then
refines a known optimum, from far too low and far too high, and jumps to a tuned neighbour."""

from __future__ import annotations

import math

import pytest

from service.science.search import (
    EXPAND,
    REFINE_STEPS,
    Rank,
    best_of,
    edge_of,
    first_rates,
    next_rates,
    scaled_rate,
)
from service.sweeps.schemas import LRSearchIn

FINEST = REFINE_STEPS[-1]
#: Gradient descent on f(θ) = ½ Σ h_i θ_i² with curvatures in [H_MIN, H_MAX].
H_MIN, H_MAX = 1.0, 10.0
#: The rate that converges fastest, in closed form: it balances the slowest and the fastest
#: direction, |1 − η h_min| = |1 − η h_max| ⇒ η* = 2 / (h_min + h_max).
BEST = 2.0 / (H_MIN + H_MAX)
EPSILON = 1e-6  # the target: f ≤ ε f₀


def quadratic_rank(rate: float) -> Rank:
    """Steps for gradient descent at ``rate`` to bring the quadratic to the target: the
    contraction per step is ρ(η) = max(|1 − η h_min|, |1 − η h_max|), so t = ln ε / (2 ln ρ);
    ρ ≥ 1 diverges (a failed run)."""
    rho = max(abs(1.0 - rate * H_MIN), abs(1.0 - rate * H_MAX))
    if rho >= 1.0:
        return 1, math.inf, math.inf
    steps = math.log(EPSILON) / (2.0 * math.log(rho))
    return 0, steps, EPSILON


def search(start: float, max_rounds: int) -> tuple[dict[float, Rank], int]:
    """Run the search as the sweep does: round 0's three rates, then ``next_rates`` per
    round until it proposes nothing or the rounds run out; (every rate's rank, rounds used)."""
    tried = {rate: quadratic_rank(rate) for rate in first_rates(start, 8, 8, "sqrt")}
    rounds = 1
    while rounds < max_rounds and (proposals := next_rates(tried)):
        tried |= {rate: quadratic_rank(rate) for rate in proposals}
        rounds += 1
    return tried, rounds


@pytest.mark.parametrize("factor", [1 / 100, 100.0])
def test_the_search_brackets_and_refines_a_known_optimum(factor: float) -> None:
    default_rounds = LRSearchIn(start=1.0).max_rounds
    tried, rounds = search(BEST * factor, default_rounds)
    assert next_rates(tried) == []  # done within the default budget, not cut off
    assert rounds <= default_rounds
    best = best_of(tried)
    assert edge_of(tried) is None
    rates = sorted(tried)
    below, above = rates[rates.index(best) - 1], rates[rates.index(best) + 1]
    # Both neighbours within the finest step, and the optimum between them.
    assert best / below <= FINEST * (1 + 1e-9)
    assert above / best <= FINEST * (1 + 1e-9)
    assert below < BEST < above
    assert abs(math.log(best / BEST)) <= math.log(FINEST)


def test_divergence_bounds_the_bracket_from_above() -> None:
    tried = {rate: quadratic_rank(rate) for rate in (0.05, 0.19, 0.8)}  # 0.8 diverges
    assert quadratic_rank(0.8)[0] == 1
    assert best_of(tried) == 0.19
    assert edge_of(tried) is None  # bracketed: the next round refines, it does not expand


def test_every_rate_diverged_walks_down_by_four() -> None:
    tried = dict.fromkeys((1.0, 4.0, 16.0), (1, math.inf, math.inf))
    assert best_of(tried) == 1.0
    assert edge_of(tried) == "low"
    assert next_rates(tried) == [pytest.approx(1.0 / EXPAND)]


def test_a_best_rate_at_the_top_expands_by_four_or_jumps_to_a_farther_hint() -> None:
    tried = {0.01: (0, 30.0, 0.1), 0.04: (0, 20.0, 0.1), 0.16: (0, 10.0, 0.1)}
    assert edge_of(tried) == "high"
    assert next_rates(tried) == [pytest.approx(0.64)]
    assert next_rates(tried, hint=0.3) == [pytest.approx(0.64)]  # nearer than ×4: ignored
    assert next_rates(tried, hint=5.0) == [pytest.approx(5.0)]  # a tuned neighbour: jump


def test_a_jump_that_overshot_is_halved_in_log_space() -> None:
    tried = {0.04: (0, 20.0, 0.1), 0.16: (0, 10.0, 0.1), 10.24: (1, math.inf, math.inf)}
    assert edge_of(tried) is None
    assert sorted(next_rates(tried)) == [
        pytest.approx(0.16 / math.sqrt(2)),
        pytest.approx(math.sqrt(0.16 * 10.24)),
    ]


def test_refining_moves_by_root_two_then_the_fourth_root_of_two() -> None:
    tried = {0.25: (0, 20.0, 0.1), 1.0: (0, 10.0, 0.1), 4.0: (0, 15.0, 0.1)}
    assert sorted(next_rates(tried)) == [
        pytest.approx(1 / math.sqrt(2)),
        pytest.approx(math.sqrt(2)),
    ]
    tried |= {1 / math.sqrt(2): (0, 12.0, 0.1), math.sqrt(2): (0, 11.0, 0.1)}
    assert sorted(next_rates(tried)) == [pytest.approx(2**-0.25), pytest.approx(2**0.25)]
    tried |= {2**-0.25: (0, 10.5, 0.1), 2**0.25: (0, 10.5, 0.1)}
    assert next_rates(tried) == []


def test_round_zero_scales_the_start_from_the_smallest_batch() -> None:
    assert first_rates(0.01, 32, 8, "sqrt") == pytest.approx([0.005, 0.02, 0.08])
    assert first_rates(0.01, 32, 8, "linear") == pytest.approx([0.01, 0.04, 0.16])
    assert first_rates(0.01, 32, 8, "none") == pytest.approx([0.0025, 0.01, 0.04])
    assert scaled_rate(0.1, 64, 16, "sqrt") == pytest.approx(0.05)


def test_a_single_rate_that_ran_looks_both_ways_and_one_that_failed_looks_down() -> None:
    assert next_rates({0.1: (0, 10.0, 0.1)}) == [pytest.approx(0.025), pytest.approx(0.4)]
    assert next_rates({0.1: (1, math.inf, math.inf)}) == [pytest.approx(0.025)]
