"""The learning task a target column implies, shared by the models and dataset ingestion."""

from __future__ import annotations

from typing import Literal

import numpy as np

Task = Literal["regression", "binary", "multiclass"]

#: Largest number of distinct integer values still read as class labels.
MAX_CLASSES = 50


def infer_task(y: np.ndarray) -> Task:
    """The task a target vector ``y`` (shape (n,)) implies.

    - exactly 2 distinct values -> ``"binary"`` (whatever the values are);
    - integer-valued (every value equal to its rounding; NaN is not), 3..50 distinct values,
      and at most half as many distinct values as rows -> ``"multiclass"``;
    - anything else (including 0 or 1 distinct value) -> ``"regression"``.

    Non-numeric arrays (e.g. strings) with 2 distinct values are binary; with more they count
    as integer-valued only if numeric, so they fall to regression, and the caller must reject
    a non-numeric regression target.
    """
    arr = np.asarray(y).reshape(-1)
    n = arr.shape[0]
    distinct = np.unique(arr)
    k = distinct.shape[0]
    if k == 2:
        return "binary"
    if 3 <= k <= MAX_CLASSES and 2 * k <= n and _integer_valued(distinct):
        return "multiclass"
    return "regression"


def _integer_valued(values: np.ndarray) -> bool:
    if values.dtype.kind in "iub":
        return True
    if values.dtype.kind != "f":
        return False
    with np.errstate(invalid="ignore"):
        return bool(np.all(np.isfinite(values)) and np.all(values == np.round(values)))
