"""What the sweeps API answers: a sweep (``SweepRead``: its target, points, the critical batch
size fitted to them, the noise scale and the recommendation), and a page of sweeps.

The analysis's answers are computed by :mod:`service.science` as dataclasses; their read
schemas here forbid unknown fields, so a field added there and not here fails every test that
reads a sweep instead of vanishing from the API. Read schemas never hold NaN or infinity (JSON
cannot carry them): a missing or non-finite value is ``null``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from service.jobs.read_schemas import JobCounts
from service.science import Confidence, KneePosition, TargetOn
from service.sweeps.schemas import LRMethod, SweepSpec, SweepStatus


class _Answer(BaseModel):
    model_config = ConfigDict(extra="forbid")


class IntervalRead(_Answer):
    """A bootstrap confidence interval; an end is null when the resamples put it out of reach
    of the data (B_noise below B_min/100 or above B_max·100)."""

    low: float | None
    high: float | None


class TargetCandidateRead(BaseModel):
    """One fraction ``target_fraction: "auto"`` considered."""

    fraction: float
    loss: float
    reached_by_all: bool = Field(description="Every tuned batch size reached it.")
    s_min: float | None = Field(description="S_min of a quick fit at this target (no bootstrap).")
    chosen: bool


class TargetRead(BaseModel):
    """The loss every point must reach, and how it was derived."""

    loss: float | None = Field(description="The target loss; null until it can be derived.")
    on: TargetOn
    method: Literal["fraction", "absolute", "auto"]
    fraction: float | None = Field(
        description="The f of `target_fraction`, as asked or as `auto` chose it."
    )
    initial_loss: float | None = Field(
        description="The loss before training (fraction targets): see `description`."
    )
    best_loss: float | None = Field(description="The best loss any point reached (fraction).")
    description: str = Field(description="How the value was derived, in words.")
    candidates: list[TargetCandidateRead] = Field(
        default_factory=list,
        description="`auto`: each fraction of the ladder, deepest first, and how the data "
        "answered it.",
    )


class LossPairRead(BaseModel):
    """A training and a validation loss (null without a validation split)."""

    train: float | None
    validation: float | None


class ToTargetRead(BaseModel):
    """Cost of reaching the target, interpolated between evaluations; null if never reached."""

    steps: float | None
    samples: float | None
    epochs: float | None
    wall_time_s: float | None


class PointRead(BaseModel):
    """One batch size: its runs, the learning rate chosen, and what that rate achieved
    (means over seeds)."""

    batch_size: int
    job_ids: list[str]
    complete: bool = Field(description="Every run of this batch size has finished.")
    learning_rate: float | None = Field(
        description="The chosen rate: the lowest steps to target, then the best loss reached."
    )
    learning_rates_tried: list[float]
    lr_interior: bool | None = Field(
        description="Whether the chosen rate has a tried rate on each side (searched/given "
        "with ≥ 3 rates); false means the best may lie beyond the range tried, and the point "
        "is left out of the fit (named in `fit.excluded`)."
    )
    lr_edge: Literal["low", "high"] | None = Field(
        description="Which edge of the tried rates the chosen one is on (null: interior)."
    )
    rounds: int = Field(description="Learning-rate rounds this batch size ran in.")
    best: LossPairRead = Field(description="Lowest per-epoch losses, mean over seeds.")
    final: LossPairRead = Field(description="Last epoch's losses, mean over seeds.")
    gap: float | None = Field(description="final.validation − final.train (generalisation gap).")
    to_target: ToTargetRead = Field(
        description="Mean over seeds; null unless every seed of the chosen rate reached it."
    )
    samples_per_s: float | None = Field(description="Mean training throughput of its runs.")


class NoiseAtPointRead(BaseModel):
    """One batch size's B_simple at the target loss (geometric mean over its seeds)."""

    batch_size: int
    b_simple: float | None = Field(description="Null with `reason` when not interpolable.")
    b_simple_corrected: float | None = Field(description="1/(1/B_simple + 1/N).")
    runs: int = Field(description="Runs whose measurements bracket the target.")
    reason: str | None


class NoiseAtTargetRead(BaseModel):
    """B_simple where the runs crossed the target loss (``SweepRead.noise_scale_at_target``)."""

    loss_level: float | None = Field(description="The target loss it is read at.")
    on: TargetOn
    b_simple: float | None = Field(description="The median across points.")
    b_simple_corrected: float | None = Field(
        description="The median corrected: 1/(1/B_simple + 1/N)."
    )
    spread: list[float] | None = Field(description="[lowest, highest] across points.")
    points: list[NoiseAtPointRead]
    reason: str | None = Field(description="Why there is no median, when there is none.")


class ExclusionRead(_Answer):
    """A batch size left out of the fit, why, and what to change so it is not."""

    batch_size: int
    reason: str
    action: str


class FitRead(_Answer):
    """S(B) = S_min (1 + B_noise / B) and E(B) = E_min (1 + B / B_noise), fitted in log space to
    the tuned points (a seed that never reached the target censored at the steps it ran).

    Every estimate is null, with ``reason``, when the fit is refused: fewer than 3 points
    reached the target, S_min < 10 steps, or no knee in range."""

    s_min: float | None = Field(description="S_min: the fewest steps to the target (B → ∞).")
    e_min: float | None = Field(description="E_min: the fewest samples to the target (B → 0).")
    b_noise: float | None = Field(description="B_noise = E_min / S_min: the critical batch.")
    s_min_ci: IntervalRead | None = Field(description="S_min's bootstrap interval.")
    e_min_ci: IntervalRead | None = Field(description="E_min's bootstrap interval.")
    b_noise_ci: IntervalRead | None = Field(description="B_noise's bootstrap interval.")
    r2_log: float | None = Field(description="R² of ln S against the fitted curve.")
    rms_relative: float | None = Field(description="√mean((S/Ŝ − 1)²) over the points.")
    batch_sizes: list[int] = Field(description="The batch sizes fitted.")
    reached_batch_sizes: list[int] = Field(
        description="Those where at least one seed reached the target."
    )
    n_points: int = Field(description="Points offered to the fit.")
    confidence: float = Field(description="The intervals' confidence level, e.g. 0.9.")
    resamples: int = Field(
        description="Bootstrap resamples behind the intervals: 200 while the sweep runs, "
        "1,000 once it has finished."
    )
    method: str = Field(description="How the curve was fitted, in words.")
    reason: str | None = Field(description="Why the fit was refused, when it was.")
    censored: int = Field(description="Runs that never reached the target, used as censored.")
    sigma_log: float | None = Field(
        description="The fitted seed scatter σ of ln S (maximum likelihood)."
    )
    excluded: list[ExclusionRead] = Field(
        description="Batch sizes left out of the fit (best rate at an edge of those tried), "
        "with the reason and what to raise."
    )


class FastestRead(_Answer):
    """The batch size that reached the target in the least mean wall time (null: no point
    reached it with every seed)."""

    batch_size: int | None
    wall_time_s: float | None = Field(description="Its mean wall time to the target.")
    wall_time_range: Annotated[list[float], Field(min_length=2, max_length=2)] | None = Field(
        description="[fastest, slowest] over its seeds."
    )
    seeds: int
    reason: str = Field(description="Why this batch size, in a sentence.")
    confidence: Confidence | None
    confidence_reasons: list[str] = Field(description="Each piece of evidence and its grade.")


class KneeRead(_Answer):
    """The measured batch size nearest B_noise: beyond it, a larger batch saves few steps. Named
    only at medium confidence or better; ``position`` says where B_noise lies otherwise."""

    batch_size: int | None
    b_noise: float | None
    b_noise_ci: IntervalRead | None
    position: KneePosition | None = Field(
        description="B_noise within the measured batch sizes, below or above them (null: no fit)."
    )
    reason: str = Field(description="Why this batch size, or why none, in a sentence.")
    confidence: Confidence | None
    confidence_reasons: list[str] = Field(description="Each piece of evidence and its grade.")


class RecommendationRead(_Answer):
    """A sweep's two answers: the fastest batch size in wall time, and the knee."""

    fastest: FastestRead
    knee: KneeRead


#: ``[epoch, B_simple, loss]``.
NoisePoint = Annotated[list[int | float], Field(min_length=3, max_length=3)]


class NoiseSummaryRead(_Answer):
    """One run's B_simple late in training (of the chosen rate of ``batch_size``): averaged over
    the last quarter of its epochs, with the loss level it was measured at, the correction for
    sampling without replacement 1/(1/B_simple + 1/N), the spread and the trend against loss."""

    batch_size: int
    learning_rate: float
    seed: int
    job_id: str
    b_simple: float | None = Field(description="Null, with `reason`, when not resolved.")
    b_simple_corrected: float | None
    loss_level: float | None = Field(description="The loss it was measured at (mean).")
    train_rows: int = Field(description="N: the training rows.")
    window: list[int] = Field(description="First and last epoch averaged.")
    window_epochs: int = Field(description="Epochs with a measurement in the window.")
    estimates: int = Field(description="Of those, the resolved ones.")
    spread_factor: float | None = Field(description="exp(sd ln B_simple) over the window.")
    trend_slope: float | None = Field(description="d ln B_simple / d ln loss over the run.")
    fold_change: float | None = Field(description="B_simple last / first over the run.")
    first: NoisePoint | None = Field(description="[epoch, B_simple, loss] of the first.")
    last: NoisePoint | None = Field(description="[epoch, B_simple, loss] of the last.")
    reason: str | None
    b_simple_lower_bound: float | None = Field(
        description="When B_simple is not resolved: a lower bound on it, if the data give one."
    )
    b_simple_corrected_lower_bound: float | None
    exact: bool = Field(description="Every record in the window used all the training rows.")


class SweepLinks(BaseModel):
    """Where to go next."""

    self: str
    cancel: str
    jobs: str
    dataset: str


class SweepRead(BaseModel):
    """A sweep: its request, status, target, points and the batch-size analysis."""

    id: str
    dataset_id: str
    name: str | None
    status: SweepStatus
    partial: bool = Field(
        description="True while points are still running: every figure may still change."
    )
    lr_method: LRMethod = Field(
        description="given (learning_rates), searched (lr_search) or scaled (base.lr_scaling "
        "from base.reference_batch_size: the cheap alternative, not tuned per batch size)."
    )
    round: int = Field(description="The learning-rate round submitted last (from 0).")
    batch_sizes: list[int]
    seeds: int
    jobs: JobCounts = Field(description="How many point jobs are in each status.")
    target: TargetRead
    points: list[PointRead]
    fit: FitRead | None = Field(
        description="The critical batch size: S(B) fitted to the tuned points; null before "
        "any point has finished."
    )
    noise_scale: list[NoiseSummaryRead] = Field(
        description="The late-run noise scale of each run of each batch size's chosen rate "
        "run with `noise_scale`."
    )
    noise_scale_at_target: NoiseAtTargetRead | None = Field(
        description="B_simple at the target's loss level: each point's per-epoch B_simple "
        "interpolated (log–log against the loss) to the target, and the median across points; "
        "null without a target or without noise-scale measurements."
    )
    recommendation: RecommendationRead | None = Field(
        description="`fastest`: the batch size that reached the target in the least wall "
        "time; `knee`: the one nearest B_noise, named only at medium confidence or better — "
        "each with a sentence of reason, its `confidence` (high, medium, low) and the reasons "
        "for it. Null on a failed sweep; never from a failed run."
    )
    error: str | None = Field(description="Why the sweep failed.")
    spec: SweepSpec = Field(description="The request, defaults filled in.")
    created_at: datetime
    finished_at: datetime | None
    links: SweepLinks


class SweepSummary(BaseModel):
    """A sweep in a list: no analysis (read the sweep for that)."""

    id: str
    dataset_id: str
    name: str | None
    status: SweepStatus
    lr_method: LRMethod
    round: int
    batch_sizes: list[int]
    created_at: datetime
    finished_at: datetime | None
    links: SweepLinks


class SweepPage(BaseModel):
    """One page of sweeps, newest first."""

    items: list[SweepSummary]
    next_cursor: str | None = Field(
        description="Pass as `cursor` to get the next page; null on the last page."
    )


__all__ = [
    "ExclusionRead",
    "FastestRead",
    "FitRead",
    "IntervalRead",
    "KneeRead",
    "LossPairRead",
    "NoiseAtPointRead",
    "NoiseAtTargetRead",
    "NoiseSummaryRead",
    "PointRead",
    "RecommendationRead",
    "SweepLinks",
    "SweepPage",
    "SweepRead",
    "SweepSummary",
    "TargetCandidateRead",
    "TargetRead",
    "ToTargetRead",
]
