"""An epoch's minibatch steps behind one interface, and the divergence rule they share.

``run_to(stop)`` takes the epoch's steps up to ``stop`` (a count within the epoch), writing
each step's loss into ``step_losses`` and adding it to ``loss_sum``; it returns False when
``should_stop()`` said stop (asked between steps). The training loop calls it once per
evaluation stop, then once for the epoch's end, so the steps are the same (bit for bit) with
evaluations or without.

- ``GradientSteps``: one step at a time, ``Optimizer.minibatch_step`` on slice views of the
  source's segments, each loss checked at once.
- ``FusedSteps``: the fused plain-SGD kernel (``fused_sgd.AugmentedSGD``) over cache-sized
  chunks of [x | 1 | y] rows (``data.AugmentedEpochs``), its losses computed and checked per
  chunk: a diverging chunk runs on to its end, and the first bad step is still named exactly.

Divergence (``DivergenceGuard``): a step loss that is not finite, or above 10⁶ × the reference
(the first step's loss during epoch 1, then the first epoch's train loss), raises
``StepDiverged`` with the step (1-based within the epoch).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import numpy as np

from service.core.data import Segment
from service.core.fused_sgd import AugmentedSGD
from service.core.optim import Optimizer, StepFunction

__all__ = [
    "DIVERGENCE_FACTOR",
    "DivergenceGuard",
    "FusedSteps",
    "GradientSteps",
    "StepDiverged",
]

#: A loss above this multiple of the reference loss counts as divergence.
DIVERGENCE_FACTOR = 1e6
#: Step losses are stored as float32; anything above its range would not be finite there.
FLOAT32_MAX = float(np.finfo(np.float32).max)


class StepDiverged(Exception):
    """Step ``step`` (1-based within the epoch) had loss ``loss``; ``why`` says what is wrong."""

    def __init__(self, step: int, loss: float, why: str) -> None:
        super().__init__(why)
        self.step = step
        self.loss = loss
        self.why = why


def _limit(reference: float) -> float:
    """The largest step loss allowed: 10⁶ × the reference, within float32's range."""
    if reference > 0.0:
        return min(DIVERGENCE_FACTOR * reference, FLOAT32_MAX)
    return FLOAT32_MAX


class DivergenceGuard:
    """The divergence rule for one epoch, from the run's ``reference`` (None during epoch 1
    until its first step, whose loss becomes the reference). ``limit``: a step loss must be
    below it."""

    def __init__(self, reference: float | None, *, first_epoch: bool) -> None:
        self.reference = reference
        self.first_epoch = first_epoch
        self.limit = FLOAT32_MAX if reference is None else _limit(reference)

    def check(self, step: int, loss: float) -> float:
        """Raise ``StepDiverged`` when ``loss`` (of 1-based ``step``) diverged, else return the
        limit for the steps after it (set by this one when it is the first)."""
        if not loss < self.limit:
            raise StepDiverged(step, loss, self._reason(loss))
        if self.reference is None:
            self.reference = loss
            self.limit = _limit(loss)
        return self.limit

    def check_all(self, first_step: int, losses: np.ndarray) -> None:
        """``check`` of the steps ``first_step``, ``first_step + 1``, … at once."""
        if self.reference is None:
            self.check(first_step, float(losses[0]))
        bad = np.flatnonzero(~(losses < self.limit))  # NaN is never < limit
        if bad.shape[0]:
            loss = float(losses[bad[0]])
            raise StepDiverged(first_step + int(bad[0]), loss, self._reason(loss))

    def _reason(self, loss: float) -> str:
        if not math.isfinite(loss):
            return f"the loss is {loss}"
        reference = self.reference
        if reference is None or reference <= 0.0 or loss >= FLOAT32_MAX:
            return f"the loss {loss:.4g} overflows float32"
        # The reference named as the docs name it: what it was measured on, then its value.
        what = "the loss of epoch 1's first step" if self.first_epoch else "epoch 1's train loss"
        return f"the loss {loss:.4g} is over {DIVERGENCE_FACTOR:g} × {what} ({reference:.4g})"


class GradientSteps:
    """The epoch's steps one batch at a time (see the module docstring). ``theta`` is updated
    in place; ``grad`` is the step's scratch."""

    def __init__(
        self,
        step: StepFunction,
        segments: Iterator[Segment],
        *,
        theta: np.ndarray,
        grad: np.ndarray,
        lr: float,
        batch_size: int,
        step_losses: np.ndarray,
        guard: DivergenceGuard,
        should_stop: Callable[[], bool] | None,
    ) -> None:
        self._step = step
        self._segments = segments
        self._theta, self._grad, self._lr, self._batch_size = theta, grad, lr, batch_size
        self._step_losses = step_losses
        self._guard = guard
        self._should_stop = should_stop
        self._X_seg, self._y_seg = np.empty((0, 0)), np.empty(0)  # the current segment
        self._start = 0  # the next step's first row in it
        self.done = 0
        self.loss_sum = 0.0

    def run_to(self, stop: int) -> bool:
        # Locals: attribute look-ups cost more than the steps at small batch sizes.
        step_fn, theta, grad = self._step, self._theta, self._grad
        lr, B = self._lr, self._batch_size
        step_losses, guard, should_stop = self._step_losses, self._guard, self._should_stop
        # The first step always goes to the guard: its loss may set the reference.
        limit = -math.inf if guard.reference is None else guard.limit
        steps = step_losses.shape[0]
        step, loss_sum = self.done, self.loss_sum
        X_seg, y_seg, a = self._X_seg, self._y_seg, self._start
        n_seg = X_seg.shape[0]
        while step < stop:
            if a >= n_seg:
                X_seg, y_seg = next(self._segments)
                n_seg, a = X_seg.shape[0], 0
            end = min(n_seg, a + (stop - step) * B)
            for start in range(a, end, B):
                # should_stop is asked after every step, after an evaluation there: so here,
                # before each step but the epoch's first, and after the last one below.
                if should_stop is not None and step and should_stop():
                    return False
                loss = step_fn(theta, X_seg[start : start + B], y_seg[start : start + B], grad, lr)
                if not loss < limit:
                    limit = guard.check(step + 1, loss)
                step_losses[step] = loss
                loss_sum += loss
                step += 1
            a = end
        self._X_seg, self._y_seg, self._start = X_seg, y_seg, a
        self.done, self.loss_sum = step, loss_sum
        if step == steps:
            if should_stop is not None and should_stop():
                return False
            for _ in self._segments:  # the rest (drop_last's partial batch) still draws
                pass
        return True


class FusedSteps:
    """The epoch's steps on the fused plain-SGD kernel (see the module docstring). The
    parameters live in the kernel from construction and are stored back into ``theta`` at
    every ``run_to``'s end."""

    def __init__(
        self,
        optimizer: Optimizer,
        kernel: AugmentedSGD,
        chunks: Iterator[np.ndarray],
        *,
        theta: np.ndarray,
        lr: float,
        batch_size: int,
        step_losses: np.ndarray,
        guard: DivergenceGuard,
        should_stop: Callable[[], bool] | None,
    ) -> None:
        self._optimizer = optimizer
        self._kernel = kernel
        self._chunks = chunks
        self._theta, self._lr, self._batch_size = theta, lr, batch_size
        self._step_losses = step_losses
        self._guard = guard
        self._should_stop = should_stop
        self._rows = np.empty((0, 0))  # what is left of the current chunk
        self.done = 0
        self.loss_sum = 0.0
        kernel.load(theta)

    def run_to(self, stop: int) -> bool:
        kernel, B, steps = self._kernel, self._batch_size, self._step_losses.shape[0]
        while self.done < stop:
            if not self._rows.shape[0]:
                # drop_last drops the partial batch
                self._rows = next(self._chunks)[: (steps - self.done) * B]
            rows = self._rows
            # Up to the stop, if it falls in this chunk (stops before the end: whole batches).
            cut = min(rows.shape[0], (stop - self.done) * B)
            piece, self._rows = rows[:cut], rows[cut:]
            if not self._optimizer.run_fused(kernel, piece, B, self._lr, self._should_stop):
                return False
            losses = kernel.step_losses(piece, B)
            self._guard.check_all(self.done + 1, losses)
            self._step_losses[self.done : self.done + losses.shape[0]] = losses
            self.loss_sum += float(losses.sum())
            self.done += losses.shape[0]
        kernel.store(self._theta)
        return True
