"""Finite numbers or None: what JSON can carry."""

from __future__ import annotations

import math

from service.core.finite import finite_or_none, json_safe


def test_json_safe_replaces_nan_and_inf_also_nested() -> None:
    record = {"a": math.nan, "b": 1.5, "c": {"d": math.inf, "e": 2}, "f": None, "g": "x"}
    assert json_safe(record) == {
        "a": None,
        "b": 1.5,
        "c": {"d": None, "e": 2},
        "f": None,
        "g": "x",
    }


def test_json_safe_cleans_lists_and_makes_tuples_lists() -> None:
    assert json_safe({"a": [1.0, -math.inf], "b": (math.nan, 2)}) == {
        "a": [1.0, None],
        "b": [None, 2],
    }


def test_finite_or_none_takes_numbers_only() -> None:
    assert finite_or_none(2) == 2.0
    assert finite_or_none(0.5) == 0.5
    assert finite_or_none(math.nan) is None
    assert finite_or_none(math.inf) is None
    assert finite_or_none(True) is None
    assert finite_or_none("1.0") is None
    assert finite_or_none(None) is None
