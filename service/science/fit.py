"""The critical batch size: fit S(B) = S_min (1 + B_noise / B) to a sweep's steps to target.

McCandlish et al. 2018 ("An Empirical Model of Large-Batch Training", §2.3): with the learning
rate re-tuned per batch size, the steps S and samples E = B·S needed to reach a given loss trade
off as S/S_min − 1 = (E/E_min − 1)⁻¹, i.e.

    S(B) = S_min (1 + B_noise / B),    E(B) = E_min (1 + B / B_noise),    E_min = S_min · B_noise.

Below B_noise doubling the batch nearly halves the steps; above it, it nearly doubles the samples.

The fit is least squares in log space, min Σ (ln S − ln Ŝ(B))² (``service.science.profile``):
the measured S spans decades with multiplicative seed scatter, so each point's relative error
must count equally (a plain least squares of S on 1/B is dominated by the smallest batches).

Seeds that never reached the target are right-censored, not dropped: a run that stopped after
c steps says ln S > ln c (``SweepPoint.steps_run``), and averaging only the seeds that reached
would bias the point low (the slow seeds are the missing ones). The fit is the maximum
likelihood for log-normal scatter σ with right-censoring (Tobit), by EM
(``service.science.censored``): each censored ln S is replaced by E[ln S | ln S > ln c] under the
current curve and σ, the curve is refitted by the profile fit, σ re-estimated with the
conditional variances, until nothing moves. Every batch size weighs the same (each of its m
observations 1/m), so without a censored observation this is exactly the profile fit on each
point's geometric mean. A point enters when one of its seeds reached the target; a point where
none did enters with its censored runs only (a lower bound on S at that B) and does not count
toward ``MIN_POINTS``; a seed without a crossing or a step count carries no information and is
left out (then the point's S errs low: pass ``steps_run``).

Uncertainty: percentile intervals from a bootstrap over points and seeds
(``service.science.bootstrap``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial

import numpy as np

from service.science.bootstrap import Interval, bootstrap_intervals
from service.science.censored import MAX_ITERATIONS
from service.science.profile import Observations, censored_curve_fit
from service.science.targets import SweepDataError, TargetCrossing

__all__ = [
    "EASY_STEPS",
    "MIN_POINTS",
    "MIN_S_MIN",
    "CriticalBatchFit",
    "SweepPoint",
    "deeper_target_advice",
    "fit_critical_batch",
]

MIN_POINTS = 3
"""Fewest batch sizes (a seed at the target) a fit accepts: two parameters, one check."""
MIN_S_MIN = 10.0
"""Smallest S_min (steps) a fit accepts: below it the target is reached in a handful of steps
at large batches, where steps are integers and warm-up effects dominate."""

EASY_STEPS = 5.0
"""Largest-batch steps to target at or under which a small S_min is blamed on the problem
(too well-conditioned: any target is a few full-batch steps away), not on the target."""

_EM_MAX_ITERATIONS = MAX_ITERATIONS
_METHOD = "log-space least squares of ln S on ln S_min + ln(1 + B_noise/B)"
_METHOD_CENSORED = (
    "log-space maximum likelihood of ln S on ln S_min + ln(1 + B_noise/B), runs that never "
    "reached the target right-censored (Tobit, EM)"
)


@dataclass(frozen=True)
class SweepPoint:
    """One batch size of a sweep: its crossing of the target per seed (None: never reached),
    and optionally the optimizer steps each seed's run made (aligned with ``crossings``). A
    None crossing with ``steps_run[i]`` > 0 is a censored observation S > steps_run[i]; one
    without (no ``steps_run``, or 0) is left out of the fit. A reached seed's entry is unused."""

    batch_size: int
    crossings: tuple[TargetCrossing | None, ...]
    steps_run: tuple[float, ...] = ()

    @property
    def reached(self) -> bool:
        """Every seed reached the target."""
        return bool(self.crossings) and all(c is not None for c in self.crossings)


@dataclass(frozen=True)
class CriticalBatchFit:
    """The fitted S(B) = s_min (1 + b_noise / B) and E(B) = e_min (1 + B / b_noise).

    ``s_min`` in steps, ``e_min`` in samples, ``b_noise`` in samples per step; all None with
    ``reason`` when the fit is refused. ``r2_log``: 1 − Σ(ln S − ln Ŝ)² / Σ(ln S − mean ln S)²;
    ``rms_relative``: √mean((S/Ŝ − 1)²), S each point's geometric mean with every censored
    ln S at its fitted E[ln S | ln S > ln c]. ``batch_sizes``: the points that entered the fit
    (a seed reached, or censored runs only), ``reached_batch_sizes`` those where a seed
    reached the target; ``resamples``: bootstrap resamples used for the
    intervals; ``censored``: censored runs used; ``sigma_log``: the fitted seed scatter σ of
    ln S (maximum likelihood, so biased low by the two fitted parameters).
    """

    s_min: float | None
    e_min: float | None
    b_noise: float | None
    s_min_ci: Interval | None
    e_min_ci: Interval | None
    b_noise_ci: Interval | None
    r2_log: float | None
    rms_relative: float | None
    batch_sizes: tuple[int, ...]
    n_points: int
    confidence: float
    resamples: int
    method: str = _METHOD
    reason: str | None = None
    censored: int = 0
    sigma_log: float | None = None
    reached_batch_sizes: tuple[int, ...] = ()

    def steps_at(self, batch_size: np.ndarray | float) -> np.ndarray:
        """Ŝ(B) = s_min (1 + b_noise / B), steps; shape of ``batch_size``."""
        if self.s_min is None or self.b_noise is None:
            raise SweepDataError("fit", f"was refused: {self.reason}")
        B = np.asarray(batch_size, dtype=np.float64)
        steps: np.ndarray = self.s_min * (1.0 + self.b_noise / B)
        return steps

    def samples_at(self, batch_size: np.ndarray | float) -> np.ndarray:
        """Ê(B) = B · Ŝ(B) = e_min (1 + B / b_noise), samples; shape of ``batch_size``."""
        samples: np.ndarray = np.asarray(batch_size, dtype=np.float64) * self.steps_at(batch_size)
        return samples


def _refused(
    points: Sequence[SweepPoint],
    fitted: Sequence[int],
    confidence: float,
    reason: str,
    censored: int = 0,
) -> CriticalBatchFit:
    return CriticalBatchFit(
        None, None, None, None, None, None, None, None, tuple(fitted), len(points), confidence, 0,
        reason=reason, censored=censored,
    )  # fmt: skip


def _check_points(points: Sequence[SweepPoint]) -> None:
    seen: set[int] = set()
    for index, point in enumerate(points):
        size = point.batch_size
        if not isinstance(size, int | np.integer) or isinstance(size, bool) or size < 1:
            raise SweepDataError(f"points[{index}].batch_size", f"must be an integer ≥ 1: {size!r}")
        if size in seen:
            raise SweepDataError(
                f"points[{index}].batch_size", f"{size} appears twice (put its seeds together)"
            )
        seen.add(int(size))
        if not point.crossings:
            raise SweepDataError(f"points[{index}].crossings", "needs one entry per seed")
        for crossing in point.crossings:
            if crossing is not None and not math.isfinite(crossing.steps):
                raise SweepDataError(f"points[{index}].crossings", "steps must be finite")
        if point.steps_run and len(point.steps_run) != len(point.crossings):
            raise SweepDataError(
                f"points[{index}].steps_run",
                f"needs one entry per seed ({len(point.crossings)}, as crossings) or none, "
                f"not {len(point.steps_run)}",
            )
        for seed, steps in enumerate(point.steps_run):
            number = isinstance(steps, int | float | np.integer | np.floating)
            if not number or isinstance(steps, bool) or not (math.isfinite(steps) and steps >= 0):
                raise SweepDataError(
                    f"points[{index}].steps_run[{seed}]",
                    f"must be a finite number of steps ≥ 0 (0: unknown), not {steps!r}",
                )


def _seed_observations(point: SweepPoint) -> tuple[list[float], list[float]]:
    """(steps to target of the seeds that reached it, steps run by those censored)."""
    reached = [c.steps for c in point.crossings if c is not None]
    steps_run = point.steps_run or (0.0,) * len(point.crossings)
    bounds = [
        float(n) for c, n in zip(point.crossings, steps_run, strict=True) if c is None and n > 0
    ]
    return reached, bounds


def deeper_target_advice(
    *, target_fraction: float | None = None, target_loss: float | None = None
) -> str:
    """How to ask for a deeper target than the one a sweep used, for the shallow-target
    refusal: an absolute ``target_loss`` → a lower one; a ``target_fraction`` f below 0.95 →
    0.95; from 0.95 up → halve the gap left, 1 − (1 − f)/2 (0.95 → 0.975), or an absolute
    target near the best loss."""
    if target_loss is not None:
        return f"a lower target_loss than {target_loss:.4g}"
    if target_fraction is None or target_fraction < 0.95:
        return "target_fraction 0.95"
    deeper = 1.0 - (1.0 - target_fraction) / 2.0
    return (
        f"target_fraction {deeper:.6g} (this sweep used {target_fraction:g}), or an absolute "
        "target_loss nearer the best loss reached"
    )


def _small_s_min_reason(
    s_min: float, min_s_min: float, largest_steps: float, largest_batch: int, deeper_target: str
) -> str:
    """Why S_min < ``min_s_min`` refuses the fit. When the largest batch reaches the target in
    at most ``EASY_STEPS`` steps the problem is likely too easy: on a well-conditioned loss
    (Hessian ∝ I) a large batch reaches *any* target in a few steps, so a deeper target mostly
    lengthens the small batches' runs and may not lift S_min over the guard."""
    head = f"S_min ≈ {s_min:.3g} steps, under the {min_s_min:g} a fit needs"
    if largest_steps <= EASY_STEPS:
        return (
            f"{head}: the largest batch ({largest_batch}) reaches the target in "
            f"{largest_steps:.2g} steps, so the problem is too well-conditioned (too easy) for "
            "a critical batch to be measurable — large batches reach any target in a few steps "
            "there, and a deeper target may not help; harder data would (ill-conditioned or "
            "correlated features, not standardized away). If the target is only too shallow, "
            f"ask for a deeper one, e.g. {deeper_target}"
        )
    return (
        f"{head}: the target is too shallow to measure a critical batch (the largest batch, "
        f"{largest_batch}, reaches it in {largest_steps:.3g} steps); ask for a deeper target, "
        f"e.g. {deeper_target}"
    )


def fit_critical_batch(
    points: Sequence[SweepPoint],
    *,
    rng: np.random.Generator,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    deeper_target: str = "target_fraction 0.95",
    min_s_min: float = MIN_S_MIN,
) -> CriticalBatchFit:
    """Fit S(B) = S_min (1 + B_noise/B) to the points where a seed reached the target, the
    runs that did not right-censored at their ``steps_run`` (see the module docstring).

    Refused (values None, ``reason`` set) with fewer than three such points, when B_noise is
    not measurable in the range (the optimum on an edge of [B_min/100, B_max·100]), when the
    censored fit does not converge, or when S_min < ``min_s_min`` steps (default
    ``MIN_S_MIN`` = 10), suggesting ``deeper_target`` (see
    :func:`deeper_target_advice`). Lower ``min_s_min`` only where S_min is small by nature and
    steps are resolved to the step: an isotropic quadratic reaches its optimum in about one
    full-batch step whatever the target (``tests/sweeps/test_science.py``).
    ``rng`` drives the bootstrap (``n_resamples`` = 0: no intervals).
    Raises :class:`SweepDataError` on malformed points.
    """
    _check_points(points)
    if not isinstance(n_resamples, int) or n_resamples < 0:
        raise SweepDataError("n_resamples", f"must be an integer ≥ 0, not {n_resamples!r}")
    if not (math.isfinite(confidence) and 0.0 < confidence < 1.0):
        raise SweepDataError("confidence", f"must lie strictly between 0 and 1: {confidence!r}")
    if not (math.isfinite(min_s_min) and min_s_min >= 0.0):
        raise SweepDataError("min_s_min", f"must be a finite number ≥ 0, not {min_s_min!r}")
    entered = []  # (batch size, steps to target, censored steps run) per point that enters
    for point in sorted(points, key=lambda p: p.batch_size):
        reached, bounds = _seed_observations(point)
        if reached or bounds:
            entered.append((int(point.batch_size), reached, bounds))
    fitted = [size for size, _, _ in entered]
    n_reached = sum(1 for _, reached, _ in entered if reached)
    n_censored = sum(len(bounds) for _, _, bounds in entered)
    refuse = partial(_refused, points, fitted, confidence, censored=n_censored)
    if n_reached < MIN_POINTS:
        bounds_only = len(entered) - n_reached
        also = (
            f" ({bounds_only} more entered only as lower bounds: no seed reached the target in "
            "the steps it ran)"
            if bounds_only
            else ""
        )
        return refuse(
            f"only {n_reached} of {len(points)} batch sizes reached the target with at least "
            f"one seed{also}: fitting a critical batch needs at least {MIN_POINTS}"
        )
    if any(steps <= 0.0 for _, reached, _ in entered for steps in reached):
        return refuse("the target is at or above the initial loss (step 0)")
    observations = Observations.of(entered)
    B = observations.batch_sizes
    seeds = observations.seeds[None, :, None]
    weight = (np.arange(observations.log_steps.shape[1]) < seeds) / seeds  # 1/m per seed
    em = censored_curve_fit(
        (observations.log_steps - observations.centre)[None],
        observations.censored[None],
        weight,
        np.arange(B.size)[None, :],
        B,
        max_iterations=_EM_MAX_ITERATIONS,
    )
    if not em.converged[0]:
        return refuse(
            f"the censored fit did not converge in {_EM_MAX_ITERATIONS} iterations "
            f"({n_censored} runs never reached the target): let those runs train longer, so "
            "more of them reach it"
        )
    log_s, log_b = (float(v) for v in em.params[0])
    if log_b == -math.inf:
        return refuse(
            "no measurable critical batch in this range: steps to target barely fall as the "
            f"batch grows, so B_noise lies far below the smallest batch measured ({fitted[0]}) "
            "and every batch here is past the knee (larger batches buy no fewer steps); "
            "measure smaller batches to find it"
        )
    if log_b == math.inf:
        return refuse(
            "no measurable critical batch in this range: steps to target fall as 1/B across "
            "every batch measured (perfect scaling), so B_noise lies far above the largest "
            f"batch measured ({fitted[-1]}); measure larger batches to find the knee"
        )
    b_noise = math.exp(log_b)
    s_min = math.exp(log_s + observations.centre)
    if not (math.isfinite(b_noise) and math.isfinite(s_min) and b_noise > 0.0):
        return refuse("the fit did not converge to finite values")
    if s_min < min_s_min:
        largest, reached, _ = next(e for e in reversed(entered) if e[1])
        largest_steps = math.exp(float(np.mean(np.log(reached))))
        return refuse(_small_s_min_reason(s_min, min_s_min, largest_steps, largest, deeper_target))
    # each point's ln geometric mean, its censored seeds at E[ln S | ln S > ln c]
    y = (weight * em.completed)[0].sum(axis=1) + observations.centre
    log_fitted = np.log(s_min) + np.log1p(b_noise / B)
    ss_total = float(((y - y.mean()) ** 2).sum())
    ss_resid = float(((y - log_fitted) ** 2).sum())
    r2_log = 1.0 - ss_resid / ss_total if ss_total > 0.0 else None
    rms_relative = float(np.sqrt(np.mean((np.exp(y - log_fitted) - 1.0) ** 2)))
    intervals: tuple[Interval | None, Interval | None, Interval | None] = (None, None, None)
    used = 0
    if n_resamples > 0:
        boot = bootstrap_intervals(
            observations,
            rng,
            n_resamples,
            confidence,
            min_points=MIN_POINTS,
            max_iterations=_EM_MAX_ITERATIONS,
        )
        if boot is not None:
            intervals, used = boot[:3], boot[3]
    return CriticalBatchFit(
        s_min=s_min,
        e_min=s_min * b_noise,
        b_noise=b_noise,
        s_min_ci=intervals[0],
        e_min_ci=intervals[1],
        b_noise_ci=intervals[2],
        r2_log=r2_log,
        rms_relative=rms_relative,
        batch_sizes=tuple(fitted),
        n_points=len(points),
        confidence=confidence,
        resamples=used,
        method=_METHOD_CENSORED if n_censored else _METHOD,
        censored=n_censored,
        sigma_log=float(em.sigma[0]),
        reached_batch_sizes=tuple(size for size, reached, _ in entered if reached),
    )
