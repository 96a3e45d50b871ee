"""Finite numbers or ``None``: JSON carries neither NaN nor infinity, so every value the
service stores or sends passes through here first."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any


def finite_or_none(value: Any) -> float | None:
    """``float(value)`` if it is a finite number (not a bool), else ``None``."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def json_safe(value: Any) -> Any:
    """``value`` with every non-finite float (nested in mappings, lists and tuples) as
    ``None`` and tuples as lists; anything else unchanged."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(item) for item in value]
    return value


__all__ = ["finite_or_none", "json_safe"]
