"""The noise-scale summary of one run: B_simple late in training, with its loss level and trend.

B_simple = tr(Σ)/|G|² (``service.core.noise``) grows 10–1000× as training converges (|G|²
shrinks faster than tr(Σ)), so a B_simple means nothing without the loss at which it was
measured. The summary takes a run's per-epoch records and reports:

- the *late* value: over the last quarter of the run's epochs (at least one epoch),
  B_simple = mean tr(Σ) / mean |G|² — the ratio of the averages, as the paper recommends, so an
  epoch whose |G|² estimate came out ≤ 0 (the gradient not resolved above the noise, which is
  what happens when B_simple is large) still counts instead of being dropped, which would bias
  the value low — and the mean loss level over the same epochs;
- the finite-population correction for sampling N training rows without replacement,
  B_corrected = 1/(1/B_simple + 1/N) (≤ N: no batch is larger than the training set);
- when the window's mean |G|² is not positive (sampled estimates: the gradient not resolved
  above the noise), a lower bound instead, B_simple ≳ mean tr(Σ) / mean |ḡ|², with |ḡ|² =
  |G|² + tr(Σ)/n recovered from each record (n its ``n_samples``; E|ḡ|² = |G|² + tr(Σ)/n ≥
  |G|², so the ratio falls short of B_simple), corrected the same way;
- its spread: the geometric standard deviation exp(sd(ln B_simple)) of the per-epoch estimates in
  that window, a factor ≥ 1 (None with fewer than two resolved estimates). It mixes measurement
  scatter with the real drift of B_simple inside the window, so it is an honest upper bound on
  the noise of the average, not a confidence interval;
- the trend over the whole run: the slope of ln B_simple against ln loss (least squares over the
  epochs with a resolved estimate; negative when B_simple grows as the loss falls), and the fold
  change of B_simple from the first to the last resolved epoch, with both loss levels.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from service.core import NoiseRecord
from service.science.targets import SweepDataError

__all__ = [
    "EpochNoise",
    "NoiseScaleSummary",
    "b_simple_at_loss",
    "finite_population_corrected",
    "summarize_noise_scale",
]


@dataclass(frozen=True)
class EpochNoise:
    """One epoch's noise-scale record: ``b_simple`` = trace_sigma / grad_sq_norm (None when
    grad_sq_norm ≤ 0), measured at ``loss_level``. Epochs are numbered from 1. ``n_samples``:
    the rows behind a sampled estimate (None: not recorded, so no lower bound); ``exact``:
    computed over every training row."""

    epoch: int
    b_simple: float | None
    trace_sigma: float
    grad_sq_norm: float
    loss_level: float
    n_samples: int | None = None
    exact: bool = False

    @classmethod
    def from_record(cls, epoch: int, record: NoiseRecord) -> EpochNoise:
        """From the core's per-epoch :class:`~service.core.NoiseRecord`."""
        return cls(
            epoch,
            record.b_simple,
            record.trace_sigma,
            record.grad_sq_norm,
            record.loss_level,
            n_samples=record.n_samples,
            exact=record.exact,
        )

    @property
    def mean_grad_sq_norm(self) -> float | None:
        """|ḡ|², the squared norm of the measured mean gradient: |G|² itself when exact, else
        |G|² + tr(Σ)/n (the estimators' |G|² is |ḡ|² − tr(Σ)/n); None without n_samples."""
        if self.exact:
            return self.grad_sq_norm
        if self.n_samples is None:
            return None
        return self.grad_sq_norm + self.trace_sigma / self.n_samples


@dataclass(frozen=True)
class NoiseScaleSummary:
    """A run's B_simple late in training, with its loss level, correction, spread and trend.

    ``b_simple`` and ``b_simple_corrected`` are None (with ``reason``) when the window's mean
    |G|² is not positive; ``b_simple_lower_bound`` and its corrected twin then carry the
    lower bound when the records give one (module docstring). ``exact``: every record in the
    window was computed over all training rows. ``window``: first and last epoch averaged;
    ``estimates``: resolved per-epoch estimates in it (of ``window_epochs`` records);
    ``spread_factor`` ≥ 1 or None. ``trend_slope`` = d ln B_simple / d ln loss and
    ``fold_change`` = B_last / B_first over the run (None with fewer than two resolved
    epochs, or losses all equal for the slope);
    ``first`` and ``last``: (epoch, B_simple, loss) of the first and last resolved epochs.
    """

    b_simple: float | None
    b_simple_corrected: float | None
    loss_level: float
    train_rows: int
    window: tuple[int, int]
    window_epochs: int
    estimates: int
    spread_factor: float | None
    trend_slope: float | None
    fold_change: float | None
    first: tuple[int, float, float] | None
    last: tuple[int, float, float] | None
    reason: str | None = None
    b_simple_lower_bound: float | None = None
    b_simple_corrected_lower_bound: float | None = None
    exact: bool = False


def _check(records: Sequence[EpochNoise], train_rows: int) -> None:
    if not isinstance(train_rows, int) or isinstance(train_rows, bool) or train_rows < 1:
        raise SweepDataError("train_rows", f"must be an integer ≥ 1, not {train_rows!r}")
    if not records:
        raise SweepDataError("records", "needs at least one epoch with a noise-scale record")
    epochs = [r.epoch for r in records]
    if any(b <= a for a, b in itertools.pairwise(epochs)):
        raise SweepDataError("records", f"epochs must increase strictly: {epochs}")
    for r in records:
        values = (r.trace_sigma, r.grad_sq_norm, r.loss_level)
        if not all(math.isfinite(v) for v in values):
            raise SweepDataError("records", f"epoch {r.epoch}: values must be finite")
        if r.b_simple is not None and not (math.isfinite(r.b_simple) and r.b_simple >= 0.0):
            raise SweepDataError("records", f"epoch {r.epoch}: b_simple must be finite and ≥ 0")


_Mark = tuple[int, float, float]  # (epoch, B_simple, loss level)


def _trend(
    resolved: Sequence[EpochNoise],
) -> tuple[float | None, float | None, _Mark | None, _Mark | None]:
    """(slope of ln B vs ln loss, fold change first → last, first, last) of resolved epochs."""
    if not resolved:
        return None, None, None, None
    head, tail = resolved[0], resolved[-1]
    assert head.b_simple is not None
    assert tail.b_simple is not None
    first = (head.epoch, head.b_simple, head.loss_level)
    last = (tail.epoch, tail.b_simple, tail.loss_level)
    if len(resolved) < 2:
        return None, None, first, last
    fold = tail.b_simple / head.b_simple
    usable = [r for r in resolved if r.loss_level > 0.0]
    if len(usable) < 2:
        return None, fold, first, last
    log_loss = np.log([r.loss_level for r in usable])
    log_b = np.log([r.b_simple for r in usable if r.b_simple is not None])
    centred = log_loss - log_loss.mean()
    denominator = float(centred @ centred)
    slope = float(centred @ (log_b - log_b.mean())) / denominator if denominator > 0.0 else None
    return slope, fold, first, last


def finite_population_corrected(b_simple: float, train_rows: int) -> float:
    """B_corrected = 1/(1/B_simple + 1/N), for sampling N training rows without replacement."""
    return 1.0 / (1.0 / b_simple + 1.0 / train_rows)


def summarize_noise_scale(records: Sequence[EpochNoise], *, train_rows: int) -> NoiseScaleSummary:
    """Summarise a run's per-epoch noise-scale records (epochs increasing); ``train_rows`` N.

    The window is the last ⌈n/4⌉ (≥ 1) of the n epochs from the first record to the last.
    """
    _check(records, train_rows)
    span = records[-1].epoch - records[0].epoch + 1
    width = max(1, math.ceil(span / 4))
    window = [r for r in records if r.epoch > records[-1].epoch - width]
    loss_level = math.fsum(r.loss_level for r in window) / len(window)
    # "resolved": a positive per-epoch estimate (the logarithms below need one)
    window_resolved = [r.b_simple for r in window if r.b_simple is not None and r.b_simple > 0.0]
    spread = None
    if len(window_resolved) >= 2:
        spread = math.exp(float(np.std(np.log(window_resolved), ddof=1)))
    resolved = [r for r in records if r.b_simple is not None and r.b_simple > 0.0]
    slope, fold, first, last = _trend(resolved)
    trace = math.fsum(r.trace_sigma for r in window) / len(window)
    grad_sq = math.fsum(r.grad_sq_norm for r in window) / len(window)
    b_simple: float | None = None
    corrected: float | None = None
    bound: float | None = None
    corrected_bound: float | None = None
    reason = None
    if grad_sq <= 0.0:
        reason = (
            "the mean |G|² over the last quarter is not positive: the gradient is not resolved "
            "above the per-example noise, so B_simple is beyond what this sample measures"
        )
        bound = _lower_bound(window, trace)
        if bound is not None:
            corrected_bound = finite_population_corrected(bound, train_rows)
            reason += f", at least ≈ {bound:.4g} (mean tr(Σ) / mean |ḡ|², a lower bound)"
    elif trace <= 0.0:
        reason = "the mean tr(Σ) over the last quarter is not positive: no gradient noise measured"
    else:
        b_simple = trace / grad_sq
        corrected = finite_population_corrected(b_simple, train_rows)
    return NoiseScaleSummary(
        b_simple=b_simple,
        b_simple_corrected=corrected,
        loss_level=loss_level,
        train_rows=train_rows,
        window=(window[0].epoch, window[-1].epoch),
        window_epochs=len(window),
        estimates=len(window_resolved),
        spread_factor=spread,
        trend_slope=slope,
        fold_change=fold,
        first=first,
        last=last,
        reason=reason,
        b_simple_lower_bound=bound,
        b_simple_corrected_lower_bound=corrected_bound,
        exact=all(r.exact for r in window),
    )


def _lower_bound(window: Sequence[EpochNoise], trace: float) -> float | None:
    """B_simple ≳ mean tr(Σ) / mean |ḡ|² over the window (module docstring), or None when a
    record lacks n_samples or the bound is not a positive finite number."""
    observed = [r.mean_grad_sq_norm for r in window]
    if trace <= 0.0 or any(value is None for value in observed):
        return None
    mean_observed = math.fsum(value or 0.0 for value in observed) / len(window)
    if mean_observed <= 0.0:
        return None
    bound = trace / mean_observed
    return bound if math.isfinite(bound) else None


def b_simple_at_loss(records: Sequence[EpochNoise], loss: float) -> tuple[float | None, str | None]:
    """(B_simple at the loss level ``loss``, None) — or (None, why not) — from a run's
    per-epoch records: at the first pair of consecutive resolved epochs whose loss levels
    bracket ``loss`` (L_a ≥ loss ≥ L_b), ln B_simple interpolated linearly in ln L (B_simple
    grows roughly as a power of the loss as training converges). Not extrapolated: a run
    already below ``loss`` at its first measurement, or never down to it, has no value."""
    resolved = [
        r for r in records if r.b_simple is not None and r.b_simple > 0.0 and r.loss_level > 0.0
    ]
    if not resolved or not (math.isfinite(loss) and loss > 0.0):
        return None, "no epoch's B_simple is resolved" if not resolved else "no positive loss"
    for before, after in itertools.pairwise(resolved):
        if before.loss_level >= loss >= after.loss_level:
            assert before.b_simple is not None
            assert after.b_simple is not None
            span = math.log(before.loss_level) - math.log(after.loss_level)
            t = 0.0 if span == 0.0 else (math.log(before.loss_level) - math.log(loss)) / span
            log_b = (1 - t) * math.log(before.b_simple) + t * math.log(after.b_simple)
            return math.exp(log_b), None
    if len(resolved) == 1 and resolved[0].loss_level == loss:
        return resolved[0].b_simple, None
    first = resolved[0]
    if first.loss_level < loss:
        return None, (
            f"already below the target loss at its first measurement (epoch {first.epoch}, "
            f"loss {first.loss_level:.4g})"
        )
    lowest = min(r.loss_level for r in resolved)
    return None, f"its measured loss never fell to the target (lowest {lowest:.4g})"
