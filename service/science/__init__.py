"""The batch-size science: pure maths over a run's measurements, below jobs and sweeps.

NumPy, the standard library and ``service.core`` only (an import-linter contract holds it):
steps to a target loss (``targets``), a job's stored epochs read as evaluations and noise
measurements (``records``), the critical-batch fit S(B) = S_min (1 + B_noise/B) (``fit``, with
its profile least squares in ``profile``, the censored EM in ``censored`` and the intervals in
``bootstrap``), a run's noise-scale summary (``noise``), the learning-rate search (``search``),
a sweep's recommendation (``recommendation``) and one job's batch-size advice (``advice``).
"""

from service.science.advice import BatchSizeAdvice, Verdict, advise_batch_size
from service.science.bootstrap import Interval
from service.science.fit import (
    EASY_STEPS,
    MIN_POINTS,
    MIN_S_MIN,
    CriticalBatchFit,
    SweepPoint,
    deeper_target_advice,
    fit_critical_batch,
)
from service.science.noise import (
    EpochNoise,
    NoiseScaleSummary,
    b_simple_at_loss,
    finite_population_corrected,
    summarize_noise_scale,
)
from service.science.recommendation import (
    Confidence,
    Evidence,
    Exclusion,
    FastestChoice,
    KneeChoice,
    KneePosition,
    Recommendation,
    recommend,
)
from service.science.records import epoch_noise, evaluations_of
from service.science.search import first_rates, next_rates
from service.science.targets import (
    Evaluation,
    SweepDataError,
    TargetCrossing,
    TargetOn,
    steps_to_target,
    sweep_target,
    target_from_fraction,
)

__all__ = [
    "EASY_STEPS",
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
    "KneePosition",
    "NoiseScaleSummary",
    "Recommendation",
    "SweepDataError",
    "SweepPoint",
    "TargetCrossing",
    "TargetOn",
    "Verdict",
    "advise_batch_size",
    "b_simple_at_loss",
    "deeper_target_advice",
    "epoch_noise",
    "evaluations_of",
    "finite_population_corrected",
    "first_rates",
    "fit_critical_batch",
    "next_rates",
    "recommend",
    "steps_to_target",
    "summarize_noise_scale",
    "sweep_target",
    "target_from_fraction",
]
