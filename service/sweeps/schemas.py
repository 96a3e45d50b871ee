"""The sweeps API's shapes: what a client sends (``SweepCreate``) and reads back (``SweepRead``).

A sweep runs one job config (``base``: the fields of ``POST /v1/jobs`` but ``dataset_id``,
``batch_size`` and ``name``) at every batch size of ``batch_sizes``, with the learning rate
given (``learning_rates``), searched (``lr_search``) or scaled from the base rate
(``base.lr_scaling``), ``seeds`` times each. Cross-field rules (distinct batch sizes, one way to
choose the learning rate, one target, a validation set for ``target_on = validation``) are the
service's, so each 422 can name the exact field (``batch_sizes[3]``).

Read schemas never hold NaN or infinity: a missing or non-finite value is ``null``.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    WithJsonSchema,
    create_model,
)
from pydantic.fields import FieldInfo

from service.jobs.schemas import EXAMPLE_DATASET_ID, JobSubmit
from service.science import TargetOn

SweepStatus = Literal["running", "succeeded", "failed", "cancelled"]
FINISHED_SWEEP_STATUSES: tuple[SweepStatus, ...] = ("succeeded", "failed", "cancelled")
LRMethod = Literal["given", "searched", "scaled"]

#: ``JobSubmit`` fields a sweep sets itself, so ``base`` may not carry them.
NOT_IN_BASE = ("dataset_id", "batch_size", "name")
#: The default target: the deepest fraction of :data:`TARGET_LADDER` that the data supports.
DEFAULT_TARGET_FRACTION: Literal["auto"] = "auto"
#: The fractions ``target_fraction: "auto"`` chooses from, shallowest first.
TARGET_LADDER = (0.9, 0.95, 0.97, 0.98, 0.99, 0.995, 0.999)
#: Bounds that keep one request from queueing an unbounded amount of work.
MAX_BATCH_SIZES = 12
MAX_LEARNING_RATES = 12
MAX_SEEDS = 10
MAX_FIRST_ROUND_JOBS = 400

EXAMPLE_SWEEP_ID = "7d1e5c3a-2b4f-4e8a-9c6d-1f0a3b5e7c92"

PositiveFloat = Annotated[float, Field(gt=0, allow_inf_nan=False)]
SweepName = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


#: Defaults a sweep's points take that differ from a job's: a sweep measures the noise scale,
#: so it can report B_simple at its target beside the fitted B_noise.
BASE_DEFAULTS = {"noise_scale": True}


def _base_fields() -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for name, info in JobSubmit.model_fields.items():
        if name in NOT_IN_BASE:
            continue
        if name in BASE_DEFAULTS:
            info = FieldInfo.merge_field_infos(info, default=BASE_DEFAULTS[name])
        fields[name] = (info.annotation, info)
    return fields


if TYPE_CHECKING:  # pragma: no cover - the real class is built from JobSubmit below

    class SweepBase(_Strict):
        """The job config every point runs (``POST /v1/jobs`` fields but those set per point)."""

else:
    # Built from JobSubmit's fields (a user's: no reserved tags), so the two can never drift
    # apart: same names, defaults, bounds and descriptions, minus what each point sets itself.
    SweepBase = create_model(
        "SweepBase",
        __base__=_Strict,
        __doc__="The job config every point runs: the fields of `POST /v1/jobs` except "
        "`dataset_id`, `batch_size` (from `batch_sizes`) and `name` (set per point).",
        **_base_fields(),
    )


def _target_fraction(value: object) -> object:
    if value is None or value == "auto":
        return value
    wrong = ValueError("must be a number strictly between 0 and 1, or 'auto'")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise wrong
    if not (math.isfinite(value) and 0.0 < value < 1.0):
        raise wrong
    return float(value)


#: A fraction in (0, 1) or "auto", checked before the union so every 422 names the field
#: itself (a plain union would name the member that failed, NaN included).
TargetFraction = Annotated[
    float | Literal["auto"] | None,
    BeforeValidator(_target_fraction),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
                {"const": "auto", "type": "string"},
                {"type": "null"},
            ]
        }
    ),
]


class LRSearchIn(_Strict):
    """Search the learning rate of each batch size until its best is bracketed, then refine it
    (:mod:`service.science.search`): the first round runs guess/4, guess and guess·4, the guess
    being ``start`` scaled from the smallest batch size by ``scaling``; while a batch size's
    best rate is the lowest or highest it has run, the next round goes ×4 beyond that edge (or
    jumps to a tuned neighbour's rate, scaled); once bracketed, it refines by √2, then 2^¼, up
    to ``max_rounds`` rounds in all."""

    start: PositiveFloat = Field(
        description="The first guess at the smallest batch size (100× off is fine: the search "
        "moves ×4 a round until it brackets the best rate)."
    )
    max_rounds: Annotated[int, Field(strict=True, ge=1, le=20)] = Field(
        default=10, description="Rounds at most, the first included."
    )
    scaling: Literal["sqrt", "linear", "none"] = Field(
        default="sqrt",
        description="How a guess moves from one batch size to another: ×√(B'/B), ×B'/B or "
        "unchanged. Seeds the first round and the jumps from a tuned neighbour.",
    )


_EXAMPLE_CREATE: dict[str, Any] = {
    "dataset_id": EXAMPLE_DATASET_ID,
    "name": "linear, batch 8 to 512",
    "base": {"model": "linear", "epochs": 10, "standardize": True, "validation_split": 0.2},
    "batch_sizes": [8, 32, 128, 512],
    "lr_search": {"start": 0.01},
    "target_on": "train",
    "seeds": 1,
}


class SweepCreate(_Strict):
    """A sweep: a dataset, a base job config, the batch sizes, how to choose each batch size's
    learning rate, the target loss and how many seeds."""

    model_config = ConfigDict(
        extra="forbid", allow_inf_nan=False, json_schema_extra={"examples": [_EXAMPLE_CREATE]}
    )

    dataset_id: Annotated[str, StringConstraints(min_length=1, max_length=36)] = Field(
        description="The dataset every point trains on."
    )
    name: SweepName | None = Field(default=None, description="A label for people.")
    base: SweepBase = Field(
        default_factory=SweepBase,
        description="The job config every point runs: the fields of `POST /v1/jobs` except "
        "`dataset_id`, `batch_size` and `name`.",
    )
    batch_sizes: Annotated[
        list[Annotated[int, Field(strict=True, ge=1)]],
        Field(min_length=2, max_length=MAX_BATCH_SIZES),
    ] = Field(description="2 to 12 distinct batch sizes.")
    learning_rates: (
        Annotated[list[PositiveFloat], Field(min_length=1, max_length=MAX_LEARNING_RATES)] | None
    ) = Field(
        default=None,
        description="Run every batch size at each of these rates and keep its best "
        "(`lr_method` = given). Not with `lr_search`.",
    )
    lr_search: LRSearchIn | None = Field(
        default=None,
        description="Search each batch size's rate until its best is bracketed (×4 a round), "
        "then refine it (√2, then 2^¼) (`lr_method` = searched). Not with `learning_rates`.",
    )
    target_fraction: TargetFraction = Field(
        default=None,
        description="The target loss closes this fraction of the gap between the initial loss "
        "and the best loss any point reaches. `auto` (the default when neither it nor "
        "`target_loss` is given): the deepest of 0.9, 0.95, 0.97, 0.98, 0.99, 0.995, 0.999 "
        "that every tuned batch size reaches with S_min ≥ 10 steps, chosen from the finished "
        "histories (no extra runs).",
    )
    target_loss: Annotated[float, Field(ge=0, allow_inf_nan=False)] | None = Field(
        default=None, description="An absolute target loss instead of `target_fraction`."
    )
    target_on: TargetOn = Field(
        default="train",
        description="Which loss must reach the target: `validation` needs "
        "`base.validation_split` > 0.",
    )
    seeds: Annotated[int, Field(strict=True, ge=1, le=MAX_SEEDS)] = Field(
        default=1, description="Runs per (batch size, rate), seeds base.seed, base.seed + 1, …"
    )


# --- reading ---------------------------------------------------------------------------------


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
    jobs: dict[str, int] = Field(description="How many point jobs are in each status.")
    target: TargetRead
    points: list[PointRead]
    fit: dict[str, Any] | None = Field(
        description="S(B) = S_min (1 + B_noise / B) fitted in log space to the tuned points "
        "(a seed that never reached the target is censored at the steps it ran): s_min, "
        "e_min, b_noise, their bootstrap intervals (*_ci; 200 resamples while the sweep runs, "
        "1,000 once it has finished), r2_log, rms_relative, the batch sizes fitted, "
        "`censored` runs, `sigma_log`, and `excluded`: the batch sizes left out (best rate at "
        "an edge) with the reason and what to raise; values null with `reason` "
        "when refused (fewer than 3 points reached the target, S_min < 10 steps, no knee in "
        "range)."
    )
    noise_scale: list[dict[str, Any]] = Field(
        description="The late-run summary, per run of each batch size's chosen rate run with "
        "`noise_scale`: B_simple averaged over the last quarter of the run, the loss level it "
        "was measured at, the finite-population correction 1/(1/B_simple + 1/N), the spread, "
        "and the trend of B_simple against loss."
    )
    noise_scale_at_target: NoiseAtTargetRead | None = Field(
        description="B_simple at the target's loss level: each point's per-epoch B_simple "
        "interpolated (log–log against the loss) to the target, and the median across points; "
        "null without a target or without noise-scale measurements."
    )
    recommendation: dict[str, Any] | None = Field(
        description="`fastest`: the batch size that reached the target in the least wall "
        "time; `knee`: the one nearest B_noise, named only at medium confidence or better — "
        "each with a sentence of reason, its uncertainty, its `confidence` (high, medium, low) "
        "and the reasons for it. Null on a failed sweep; never from a failed run."
    )
    error: str | None = Field(description="Why the sweep failed.")
    spec: dict[str, Any] = Field(description="The request, defaults filled in.")
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
    "DEFAULT_TARGET_FRACTION",
    "EXAMPLE_SWEEP_ID",
    "FINISHED_SWEEP_STATUSES",
    "TARGET_LADDER",
    "LRMethod",
    "LRSearchIn",
    "LossPairRead",
    "NoiseAtPointRead",
    "NoiseAtTargetRead",
    "PointRead",
    "SweepBase",
    "SweepCreate",
    "SweepLinks",
    "SweepPage",
    "SweepRead",
    "SweepStatus",
    "SweepSummary",
    "TargetCandidateRead",
    "TargetOn",
    "TargetRead",
    "ToTargetRead",
]
