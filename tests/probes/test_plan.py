"""Resolving a probe request: auto epochs, default multipliers, first learning rates."""

from __future__ import annotations

import math

import pytest

from service.probes.plan import auto_epochs, default_multipliers, first_rates


def test_auto_picks_about_six_log_spaced_epochs() -> None:
    assert auto_epochs(100) == [1, 3, 6, 16, 40, 100]
    assert auto_epochs(4) == [1, 2, 3, 4]
    assert auto_epochs(1) == [1]
    assert auto_epochs(0) == []


def test_default_multipliers_fit_the_rows_and_keep_32_steps_in_the_window() -> None:
    # 1,600 rows, batch 8, one-epoch window: 8k ≤ 1600 and 8k·32 ≤ 1600 → k ≤ 6.25.
    assert default_multipliers(8, 1600, 1600) == [1, 2, 4]
    assert default_multipliers(8, 1600, 1_000_000) == [1, 2, 4, 8, 16, 32, 64, 128]
    assert default_multipliers(1, 10**9, 10**12) == [2**j for j in range(12)]


def test_first_rates_search_around_the_sqrt_scaled_rate_or_scale_it() -> None:
    assert first_rates("search", 0.01, 4) == pytest.approx([0.005, 0.02, 0.08])
    assert first_rates("sqrt", 0.01, 9) == pytest.approx([0.03])
    assert first_rates("linear", 0.01, 9) == pytest.approx([0.09])
    assert math.isclose(first_rates("search", 0.1, 1)[1], 0.1)
