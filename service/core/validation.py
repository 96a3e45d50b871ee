"""Eager checks of config values, each raising ``CoreConfigError`` that names the field.

A bool is an int in Python, but a JSON ``true`` for a batch size is a client bug, not 1: every
check here refuses bools where it wants numbers.
"""

from __future__ import annotations

import math

import numpy as np

from service.core.errors import CoreConfigError

__all__ = ["check_choice", "check_int", "check_real", "is_count", "is_int", "is_real"]


def is_int(value: object) -> bool:
    """A Python int, not a bool."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_count(value: object) -> bool:
    """A Python or NumPy integer (a size read off an array's shape), not a bool."""
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def is_real(value: object) -> bool:
    """A Python int or float, not a bool (NaN and infinity included)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def check_choice(field: str, value: object, choices: tuple[object, ...]) -> None:
    """``value`` is one of the strings in ``choices``."""
    if not isinstance(value, str) or value not in choices:
        allowed = ", ".join(repr(c) for c in choices)
        raise CoreConfigError(field, f"must be one of {allowed}; got {value!r}")


def check_int(field: str, value: object, *, minimum: int, null_means: str | None = None) -> None:
    """``value`` is an int ≥ ``minimum``; ``null_means`` says what null stands for, when allowed."""
    if not is_int(value) or value < minimum:  # type: ignore[operator]  # is_int: an int
        extra = f" or null for {null_means}" if null_means else ""
        raise CoreConfigError(field, f"must be an integer ≥ {minimum}{extra}; got {value!r}")


def check_real(
    field: str,
    value: object,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    min_open: bool = False,
    max_open: bool = False,
) -> float:
    """``value`` as a ``float``: a finite real in the range (open ends where asked)."""
    if not is_real(value) or not math.isfinite(value):  # type: ignore[arg-type]
        raise CoreConfigError(field, f"must be a finite number; got {value!r}")
    number: float = value  # type: ignore[assignment]  # is_real: an int or float
    if minimum is not None and (number <= minimum if min_open else number < minimum):
        raise CoreConfigError(field, f"must be {'>' if min_open else '≥'} {minimum}; got {value!r}")
    if maximum is not None and (number >= maximum if max_open else number > maximum):
        raise CoreConfigError(field, f"must be {'<' if max_open else '≤'} {maximum}; got {value!r}")
    return float(number)
