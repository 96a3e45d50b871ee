"""Sweeps: one job per batch size (and seed), compared, and the critical batch size fitted.

The names here are the pure part — NumPy, the standard library and ``service.core`` only (an
import-linter contract holds it): steps to a target loss (``targets``), the critical-batch fit
S(B) = S_min (1 + B_noise/B) (``fit``), a run's noise-scale summary (``noise``), the
learning-rate search (``search``), and the recommendation (``recommendation``) and per-job
batch-size advice (``advice``) built from them. The database side
is imported by its own module path: ``schemas``, ``repository``, ``points`` (a point as a job),
``analysis`` (a sweep's jobs analysed), ``orchestration`` (the learning-rate rounds),
``job_advice`` (one job's batch-size advice), ``service`` (the lifecycle), ``plots_data``.
"""

from service.sweeps.advice import BatchSizeAdvice, Verdict, advise_batch_size
from service.sweeps.fit import (
    MIN_POINTS,
    MIN_S_MIN,
    CriticalBatchFit,
    Interval,
    SweepPoint,
    fit_critical_batch,
)
from service.sweeps.noise import EpochNoise, NoiseScaleSummary, summarize_noise_scale
from service.sweeps.recommendation import (
    Confidence,
    Evidence,
    Exclusion,
    FastestChoice,
    KneeChoice,
    Recommendation,
    recommend,
)
from service.sweeps.search import first_rates, next_rates
from service.sweeps.targets import (
    Evaluation,
    SweepDataError,
    TargetCrossing,
    steps_to_target,
    sweep_target,
    target_from_fraction,
)

__all__ = [
    "MIN_POINTS",
    "MIN_S_MIN",
    "BatchSizeAdvice",
    "Confidence",
    "CriticalBatchFit",
    "EpochNoise",
    "Evaluation",
    "Evidence",
    "Exclusion",
    "FastestChoice",
    "Interval",
    "KneeChoice",
    "NoiseScaleSummary",
    "Recommendation",
    "SweepDataError",
    "SweepPoint",
    "TargetCrossing",
    "Verdict",
    "advise_batch_size",
    "first_rates",
    "fit_critical_batch",
    "next_rates",
    "recommend",
    "steps_to_target",
    "summarize_noise_scale",
    "sweep_target",
    "target_from_fraction",
]
