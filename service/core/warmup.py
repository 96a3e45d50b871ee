"""The batch-size warmup within an epoch: which steps run at which batch size (``plan_epoch``),
and the steps themselves (``PhasedSteps``).

The warmup schedule (``BatchSizeSchedule`` kind "warmup") changes the batch at the first step
boundary at or after each point's samples count, so an epoch is cut into phases of constant
batch size. The epoch's rows are drawn once, in the same order as for any other schedule; the
phases take them in turn, so a change moves no row. A phase is an ordinary ``GradientSteps``
over its share of the rows (``_Rows`` hands them out in whole batches; a batch that straddles
two of a chunked epoch's windows is copied together).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from service.core.data import Segment
from service.core.optim import StepFunction
from service.core.records import BatchChange
from service.core.schedules import BatchSizeSchedule, scale_lr
from service.core.state import RunState
from service.core.steps import DivergenceGuard, GradientSteps, StepDiverged

__all__ = ["EpochPlan", "Phase", "PhasedSteps", "plan_epoch", "warmup_plan"]


@dataclass(frozen=True)
class Phase:
    """``steps`` steps of ``batch_size`` rows at ``lr``, from step ``first`` of the epoch,
    consuming ``rows`` rows (the last step may be partial); ``change``: the change it starts
    with, if the batch changed there."""

    first: int
    steps: int
    batch_size: int
    lr: float
    rows: int
    change: BatchChange | None


@dataclass(frozen=True)
class EpochPlan:
    """An epoch's phases, in order; ``steps`` and ``rows`` their totals; ``batch_size`` the
    batch of its last step (what the next epoch compares its first step with)."""

    phases: tuple[Phase, ...]

    @property
    def steps(self) -> int:
        return sum(phase.steps for phase in self.phases)

    @property
    def rows(self) -> int:
        return sum(phase.rows for phase in self.phases)

    @property
    def batch_size(self) -> int:
        return self.phases[-1].batch_size

    def rows_after(self, step: int) -> int:
        """Rows consumed by the epoch's first ``step`` steps."""
        done = 0
        for phase in self.phases:
            if step <= phase.first:
                break
            taken = step - phase.first
            done += phase.rows if taken >= phase.steps else taken * phase.batch_size
        return done


def _reason(
    schedule: BatchSizeSchedule,
    previous: int | None,
    batch: int,
    point: int | None,
    samples: int,
    step: int,
    base: int,
) -> str:
    if point is None:
        why = f"batch_size {base}, before the warmup's first point"
    else:
        at, size = schedule.points[point]
        why = f"the warmup point [{at}, {size}]"
        if schedule.probe_id is not None:
            why += f" (from probe {schedule.probe_id})"
        if size != batch:
            why += f", held at {batch} by the training rows or max_batch_size"
    if previous is None:
        return f"started at {batch} at {samples} samples (step {step}): {why}"
    verb = "grew" if batch > previous else "shrank"
    return f"{verb} {previous} → {batch} at {samples} samples (step {step}): {why}"


def plan_epoch(
    schedule: BatchSizeSchedule,
    *,
    samples: int,
    total_steps: int,
    previous: int | None,
    base: int,
    n_train: int,
    drop_last: bool,
    lr_for: Callable[[int], float],
) -> EpochPlan:
    """The phases of an epoch that starts with ``samples`` seen after ``total_steps`` steps,
    the last step before it at ``previous`` rows (None: none yet); ``base`` the batch before
    the first point, ``lr_for(B)`` the learning rate at batch B."""
    phases: list[Phase] = []
    done = 0  # rows of this epoch consumed
    step = 0
    while done < n_train:
        seen = samples + done
        batch, point = schedule.warmup_batch_at(seen, base, n_train)
        left = n_train - done
        whole = left // batch
        upto = schedule.next_warmup_point(seen)
        if upto is not None and math.ceil((upto - seen) / batch) <= whole:
            steps = math.ceil((upto - seen) / batch)
            rows = steps * batch
        else:  # the rest of the epoch at this batch
            steps = whole + (1 if left % batch and not drop_last else 0)
            rows = min(steps * batch, left)
        if steps == 0:  # drop_last: only a partial batch is left
            break
        lr = lr_for(batch)
        change = None
        if batch != previous:
            reason = _reason(schedule, previous, batch, point, seen, total_steps + step, base)
            change = BatchChange(total_steps + step, seen, batch, lr, reason)
        phases.append(Phase(step, steps, batch, lr, rows, change))
        previous = batch
        done += rows
        step += steps
    return EpochPlan(tuple(phases))


def warmup_plan(state: RunState, epoch0: int, n_train: int) -> EpochPlan:
    """``plan_epoch`` for 0-based epoch ``epoch0`` of ``state``'s run (its counters now)."""
    c = state.config
    base = c.batch_size if c.batch_size is not None else n_train

    def lr_for(batch: int) -> float:
        scaled = scale_lr(c.learning_rate, batch, c.reference_batch_size, c.lr_scaling)
        return c.lr_schedule.lr_at(epoch0, scaled, c.epochs)

    return plan_epoch(
        c.batch_size_schedule,
        samples=state.samples_seen,
        total_steps=state.total_steps,
        previous=state.batch_size,
        base=base,
        n_train=n_train,
        drop_last=c.drop_last,
        lr_for=lr_for,
    )


class _Rows:
    """The epoch's segments handed out again in whole batches of the phase's size."""

    def __init__(self, segments: Iterator[Segment]) -> None:
        self._segments = segments
        self._X, self._y = np.empty((0, 0)), np.empty(0)
        self._at = 0

    def _next(self) -> None:
        self._X, self._y = next(self._segments)
        self._at = 0

    def take(self, rows: int, batch: int) -> Iterator[Segment]:
        """``rows`` rows as segments of whole ``batch``-row batches (the last may end short)."""
        while rows > 0:
            if self._at >= self._X.shape[0]:
                self._next()
            have = self._X.shape[0] - self._at
            want = min(rows, have - have % batch) if have >= batch else 0
            if want:
                a = self._at
                self._at += want
                rows -= want
                yield self._X[a : a + want], self._y[a : a + want]
                continue
            # Fewer than a batch left here: the batch continues in the next segment.
            size = min(batch, rows)
            X_parts, y_parts, got = [], [], 0
            while got < size:
                if self._at >= self._X.shape[0]:
                    self._next()
                n = min(size - got, self._X.shape[0] - self._at)
                # Copies: the next segment may be read into the same buffer.
                X_parts.append(self._X[self._at : self._at + n].copy())
                y_parts.append(self._y[self._at : self._at + n].copy())
                self._at += n
                got += n
            rows -= size
            yield np.concatenate(X_parts), np.concatenate(y_parts)

    def drain(self) -> None:
        """Draw the rest of the epoch (the chunked shuffle draws as it goes)."""
        for _ in self._segments:
            pass


class PhasedSteps:
    """An epoch's steps phase by phase, with ``GradientSteps``' interface: ``run_to(stop)``
    (False when ``should_stop`` said stop), ``loss_sum``; the guard is shared across phases."""

    def __init__(
        self,
        step: StepFunction,
        segments: Iterator[Segment],
        plan: EpochPlan,
        *,
        theta: np.ndarray,
        grad: np.ndarray,
        step_losses: np.ndarray,
        guard: DivergenceGuard,
        should_stop: Callable[[], bool] | None,
    ) -> None:
        self._step, self._rows, self._plan = step, _Rows(segments), plan
        self._theta, self._grad, self._step_losses = theta, grad, step_losses
        self._guard, self._should_stop = guard, should_stop
        self._index = 0
        self._current: GradientSteps | None = None
        self._sums: list[float] = []

    @property
    def loss_sum(self) -> float:
        total = 0.0
        for part in self._sums:
            total += part
        return total + (0.0 if self._current is None else self._current.loss_sum)

    def _open(self, phase: Phase) -> GradientSteps:
        return GradientSteps(
            self._step,
            self._rows.take(phase.rows, phase.batch_size),
            theta=self._theta,
            grad=self._grad,
            lr=phase.lr,
            batch_size=phase.batch_size,
            step_losses=self._step_losses[phase.first : phase.first + phase.steps],
            guard=self._guard,
            should_stop=self._should_stop,
        )

    def run_to(self, stop: int) -> bool:
        phases = self._plan.phases
        while self._index < len(phases):
            phase = phases[self._index]
            if self._current is None:
                if phase.first >= stop:
                    return True
                self._current = self._open(phase)
            try:
                ran = self._current.run_to(min(stop, phase.first + phase.steps) - phase.first)
            except StepDiverged as bad:
                raise StepDiverged(phase.first + bad.step, bad.loss, bad.why) from None
            if not ran:
                return False
            if self._current.done < phase.steps:
                return True
            self._sums.append(self._current.loss_sum)
            self._current = None
            self._index += 1
        self._rows.drain()
        return True
