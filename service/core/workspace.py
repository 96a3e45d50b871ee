"""Work arrays cached per (batch size, dtype), and views cached per flat array.

The hot path (``Model.loss_and_scaled_grad``) allocates nothing: its work arrays come from a
``WorkspaceCache`` and its views into theta and the gradient from a ``ViewCache``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

import numpy as np

from service.core.losses import Head

__all__ = ["MAX_CACHED_BATCH_SIZES", "ViewCache", "Workspace", "WorkspaceCache"]

# Buffers for a few batch sizes are kept (the epoch's full batches plus a short last one,
# validation, a changing batch-size schedule); beyond that the oldest are dropped.
MAX_CACHED_BATCH_SIZES = 8

A = TypeVar("A")


class Workspace(Generic[A]):
    """The work arrays for one (batch size n, dtype): the model's (``arrays``) and the head's
    (``head_work``), its constants set for the gradient factor they were last used with
    (``loss_and_scaled_grad``'s ``factor``; head scale factor/n)."""

    __slots__ = ("arrays", "dtype", "factor", "head_work", "n")

    def __init__(self, n: int, dtype: np.dtype, arrays: A, head_work: Any) -> None:
        self.n = n
        self.dtype = dtype
        self.arrays = arrays
        self.head_work = head_work
        self.factor = 1.0


class WorkspaceCache(Generic[A]):
    """``Workspace``s by (n, dtype), at most ``MAX_CACHED_BATCH_SIZES`` (oldest dropped)."""

    __slots__ = ("_cache", "_head", "_last", "_make_arrays", "_n_outputs")

    def __init__(
        self, head: Head[Any], n_outputs: int, make_arrays: Callable[[int, np.dtype], A]
    ) -> None:
        self._head = head
        self._n_outputs = n_outputs
        self._make_arrays = make_arrays
        self._cache: dict[tuple[int, np.dtype], Workspace[A]] = {}
        # The last workspace used: a step reuses it without hashing a key (~0.6 µs saved).
        self._last: Workspace[A] | None = None

    def get(self, n: int, dtype: np.dtype, factor: float) -> Workspace[A]:
        """The work arrays for n rows of dtype, the head's scale set to factor/n."""
        ws = self._last
        if ws is None or ws.n != n or ws.dtype is not dtype:
            ws = self._cache.get((n, dtype))
            if ws is None:
                if len(self._cache) >= MAX_CACHED_BATCH_SIZES:
                    self._cache.pop(next(iter(self._cache)))
                work = self._head.make_work(n, self._n_outputs, dtype, 1.0 / n)
                ws = Workspace(n, dtype, self._make_arrays(n, dtype), work)
                self._cache[(n, dtype)] = ws
            self._last = ws
        if ws.factor != factor:
            self._head.set_scale(ws.head_work, factor / n)
            ws.factor = factor
        return ws

    def __len__(self) -> int:
        return len(self._cache)


class ViewCache:
    """Views into the flat array last seen, rebuilt only when another array comes in.

    The training loop passes the same theta and gradient arrays every step; building the views
    (slices and reshapes) costs about a microsecond a step for an MLP. The cache holds a
    reference to that one array, so its identity cannot be reused by another while cached.
    """

    __slots__ = ("_array", "_build", "_views")

    def __init__(self, build: Callable[[np.ndarray], Any]) -> None:
        self._build = build
        self._array: np.ndarray | None = None
        self._views: Any = None

    def get(self, array: np.ndarray) -> Any:
        if array is not self._array:
            self._views = self._build(array)
            self._array = array
        return self._views
