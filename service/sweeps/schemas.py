"""What a client sends to the sweeps API (``SweepCreate``); what it reads back is in
:mod:`service.sweeps.read_schemas`.

A sweep runs one job config (``base``: the fields of ``POST /v1/jobs`` but ``dataset_id``,
``batch_size`` and ``name``) at every batch size of ``batch_sizes``, with the learning rate
given (``learning_rates``), searched (``lr_search``) or scaled from the base rate
(``base.lr_scaling``), ``seeds`` times each. Cross-field rules (distinct batch sizes, one way to
choose the learning rate, one target, a validation set for ``target_on = validation``) are the
service's, so each 422 can name the exact field (``batch_sizes[3]``).
"""

from __future__ import annotations

import math
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


class SweepSpec(_Strict):
    """What a sweep runs: a base job config, the batch sizes, how to choose each batch size's
    learning rate, the target loss and how many seeds. A sweep answers with its own, defaults
    filled in (``SweepRead.spec``)."""

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


class SweepCreate(SweepSpec):
    """A sweep: a dataset, a name, and what to run on it (:class:`SweepSpec`)."""

    model_config = ConfigDict(
        extra="forbid", allow_inf_nan=False, json_schema_extra={"examples": [_EXAMPLE_CREATE]}
    )

    dataset_id: Annotated[str, StringConstraints(min_length=1, max_length=36)] = Field(
        description="The dataset every point trains on."
    )
    name: SweepName | None = Field(default=None, description="A label for people.")


__all__ = [
    "DEFAULT_TARGET_FRACTION",
    "EXAMPLE_SWEEP_ID",
    "FINISHED_SWEEP_STATUSES",
    "MAX_BATCH_SIZES",
    "MAX_FIRST_ROUND_JOBS",
    "MAX_LEARNING_RATES",
    "MAX_SEEDS",
    "NOT_IN_BASE",
    "TARGET_LADDER",
    "LRMethod",
    "LRSearchIn",
    "SweepBase",
    "SweepCreate",
    "SweepSpec",
    "SweepStatus",
    "TargetOn",
]
