"""What a client sends to the jobs API (``JobCreate``, ``PredictRequest``), and the job's
statuses, tags and error codes; what it reads back is in :mod:`service.jobs.read_schemas`.

``JobCreate`` is the flat training config with the core's names and defaults
(:class:`service.core.TrainConfig`) plus ``dataset_id``, ``max_runtime_s``, ``name`` and
``tags``. It forbids unknown fields, refuses NaN and infinity, and carries bounds; the core then
validates again, against the dataset, with precise messages.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    FiniteFloat,
    StrictBool,
    StringConstraints,
    model_validator,
)

JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]
FINISHED_STATUSES: tuple[JobStatus, ...] = ("succeeded", "failed", "cancelled")
ErrorCode = Literal["diverged", "time_limit", "lease_expired", "dataset_corrupt", "internal"]

Tag = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=50)]
#: Tags with this prefix name the sweep a job is a point of (``sweep:<id>``): the service sets
#: them, a user may not (a job could otherwise pass for another sweep's point).
SWEEP_TAG_PREFIX = "sweep:"


def _not_reserved(tag: str) -> str:
    if tag.casefold().startswith(SWEEP_TAG_PREFIX):
        raise ValueError(
            f"tags starting with {SWEEP_TAG_PREFIX!r} are reserved: the service tags a sweep's "
            f"own jobs {SWEEP_TAG_PREFIX}<sweep id>; choose another tag"
        )
    return tag


#: A tag a user may give: any :data:`Tag` but a reserved one.
UserTag = Annotated[Tag, AfterValidator(_not_reserved)]
JobName = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
PositiveFloat = Annotated[float, Field(gt=0, allow_inf_nan=False)]
UnitFloat = Annotated[float, Field(ge=0, lt=1, allow_inf_nan=False)]

EXAMPLE_JOB_ID = "0c6f2b9e-8d1a-4f7e-b1c3-5a9d2e4f6a80"
EXAMPLE_DATASET_ID = "5f0c1c9e-3f5d-4a3e-9a51-2f8d2f0c9b11"


#: The largest seed: what a signed 64-bit integer (PostgreSQL's ``bigint``) holds.
MAX_SEED = 2**63 - 1


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class EarlyStoppingIn(_Strict):
    """Stop when ``monitor`` has not improved by more than ``min_delta`` for ``patience`` epochs."""

    monitor: Literal["val_loss", "train_loss"] = "val_loss"
    patience: Annotated[int, Field(strict=True, ge=1, le=100_000)] = 5
    min_delta: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 0.0
    restore_best_weights: StrictBool = True


class LRScheduleIn(_Strict):
    """Learning rate per epoch e: constant lr₀; step lr₀·γ^⌊e/step_size⌋; exponential lr₀·γ^e;
    cosine min_lr + (lr₀ − min_lr)(1 + cos(πe/E))/2; times (e+1)/warmup_epochs while warming up."""

    kind: Literal["constant", "step", "exponential", "cosine"] = "constant"
    step_size: Annotated[int, Field(strict=True, ge=1)] = 1
    gamma: Annotated[float, Field(gt=0, le=1, allow_inf_nan=False)] = 0.1
    min_lr: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 0.0
    warmup_epochs: Annotated[int, Field(strict=True, ge=0)] = 0


MAX_WARMUP_POINTS = 1000
#: The most samples a warmup point may name: far beyond any job, well within 64 bits.
MAX_WARMUP_SAMPLES = 2**62
WarmupPoint = tuple[
    Annotated[int, Field(strict=True, ge=0, le=MAX_WARMUP_SAMPLES)],
    Annotated[int, Field(strict=True, ge=1)],
]


class BatchSizeScheduleIn(_Strict):
    """Batch size per epoch e: constant B₀; grow B₀·factor^⌊e/every_epochs⌋ up to the cap;
    adaptive: every `every_epochs` epochs, toward the measured noise scale B̂ (never shrinking,
    at most ×`max_growth` per change, within [`min_batch_size`, `max_batch_size`]); or warmup:
    the batch of each of `points` from its samples count on (or a probe's, `probe_id`)."""

    kind: Literal["constant", "grow", "adaptive", "warmup"] = "constant"
    factor: Annotated[int, Field(strict=True, ge=2, le=1024)] = 2
    every_epochs: Annotated[int, Field(strict=True, ge=1)] = 1
    max_batch_size: Annotated[int, Field(strict=True, ge=1)] | None = None
    min_batch_size: Annotated[int, Field(strict=True, ge=1)] | None = None
    max_growth: Annotated[float, Field(gt=1, le=1024, allow_inf_nan=False)] = 2.0
    points: Annotated[list[WarmupPoint], Field(max_length=MAX_WARMUP_POINTS)] | None = Field(
        default=None,
        description="warmup: [[samples, batch], …], samples strictly increasing; the batch "
        "changes to each point's at the first step boundary at or after its samples count "
        "(samples seen since the run's start); `batch_size` runs before the first point.",
    )
    probe_id: Annotated[str, StringConstraints(min_length=1, max_length=36)] | None = Field(
        default=None,
        description="warmup: take the points from this probe's measured critical batches "
        "(resolved at submission; the job keeps the points and the probe's id). With "
        "`points` too, the points are used and the id kept as where they came from.",
    )

    @model_validator(mode="after")
    def _warmup_fields(self) -> BatchSizeScheduleIn:
        if self.kind == "warmup" and self.points is None and self.probe_id is None:
            raise ValueError("the warmup schedule needs points, or a probe_id to take them from")
        return self


class InitFromIn(_Strict):
    """A warm start: begin from job `job_id`'s parameters (and optimizer state, unless
    `reset_optimizer`) at the end of its epoch `epoch`."""

    job_id: Annotated[str, StringConstraints(min_length=1, max_length=36)] = Field(
        description="The job to start from: one of yours, on the same dataset and model."
    )
    epoch: Annotated[int, Field(strict=True, ge=1)] = Field(
        description="Its epoch whose end to start from: a kept checkpoint "
        "(`keep_checkpoints`) or its latest (`GET /v1/jobs/{id}/checkpoints`)."
    )
    reset_optimizer: StrictBool = Field(
        default=False,
        description="Start the optimizer afresh (momentum, Adam moments and step count); "
        "needed to change `optimizer`.",
    )


KeepCheckpoints = Annotated[
    list[Annotated[int, Field(strict=True, ge=1, le=100_000)]], Field(max_length=10_000)
]


class EvaluationIn(_Strict):
    """Evaluate the loss on `on` at step 0, every epoch end and ≈ `per_decade` log-spaced steps
    per decade, over a fixed seeded subsample of at most `max_rows` rows."""

    on: Literal["train", "validation"] = "train"
    per_decade: Annotated[int, Field(strict=True, ge=1, le=1000)] = 8
    max_rows: Annotated[int, Field(strict=True, ge=1, le=10_000_000)] = 8192


_EXAMPLE_CREATE: dict[str, Any] = {
    "dataset_id": EXAMPLE_DATASET_ID,
    "model": "linear",
    "optimizer": "sgd",
    "learning_rate": 0.01,
    "batch_size": 32,
    "epochs": 10,
    "validation_split": 0.2,
    "standardize": True,
    "name": "batch 32",
    "tags": ["seed-example"],
}


class JobConfig(_Strict):
    """The training config: the core's names and defaults (:class:`service.core.TrainConfig`),
    every field optional. A job answers with its own, resolved (``JobRead.config``)."""

    model: Literal["linear", "logistic", "softmax", "mlp"] = Field(
        default="linear",
        description="linear (regression), logistic (two classes), softmax (any classes), mlp.",
    )
    hidden_layers: Annotated[
        list[Annotated[int, Field(strict=True, ge=1, le=65_536)]], Field(max_length=16)
    ] = Field(default_factory=list, description="Hidden layer widths; mlp only, at least one.")
    activation: Literal["relu", "tanh"] = Field(default="relu", description="MLP activation.")
    loss: Literal["mse", "huber"] | None = Field(
        default=None,
        description="Regression loss; null = mse for regression, cross-entropy for classes.",
    )
    huber_delta: PositiveFloat = Field(default=1.0, description="Huber loss threshold δ.")
    optimizer: Literal["sgd", "momentum", "nesterov", "adam"] = "sgd"
    learning_rate: PositiveFloat = 0.01
    momentum: UnitFloat = Field(default=0.9, description="momentum / nesterov: μ.")
    beta1: UnitFloat = Field(default=0.9, description="adam: β₁.")
    beta2: UnitFloat = Field(default=0.999, description="adam: β₂.")
    eps: PositiveFloat = Field(default=1e-8, description="adam: ε.")
    weight_decay: Annotated[float, Field(ge=0, allow_inf_nan=False)] = Field(
        default=0.0, description="Coupled L2 weight decay λ (g ← g + λθ)."
    )
    clip_norm: PositiveFloat | None = Field(
        default=None, description="Rescale each gradient to at most this ℓ2 norm."
    )
    batch_size: Annotated[int, Field(strict=True, ge=1)] | None = Field(
        default=32, description="Rows per step; null = the whole training set."
    )
    epochs: Annotated[int, Field(strict=True, ge=1, le=100_000)] = 10
    shuffle: StrictBool = Field(default=True, description="Reshuffle the rows every epoch.")
    drop_last: StrictBool = Field(default=False, description="Drop a final partial batch.")
    seed: Annotated[int, Field(strict=True, ge=0, le=MAX_SEED)] = Field(
        default=0, description="Every random draw derives from it: same seed, same bytes."
    )
    validation_split: UnitFloat = Field(
        default=0.0, description="Fraction of rows held out (seeded) for validation."
    )
    standardize: StrictBool = Field(
        default=False, description="Z-score features with the training split's mean and std."
    )
    dtype: Literal["float32", "float64"] = "float32"
    noise_scale: StrictBool = Field(
        default=False, description="Measure the gradient noise scale B_simple every epoch."
    )
    noise_scale_samples: Annotated[
        int,
        Field(
            strict=True,
            ge=2,
            le=1_000_000,
            description="Rows sampled per noise-scale measurement when the training set is "
            "too large to measure exactly (more than 65,536 rows for linear, logistic and "
            "softmax; more than 2²⁶ rows × parameters for an MLP); below that every row is used.",
        ),
    ] = 1024
    early_stopping: EarlyStoppingIn | None = None
    lr_schedule: LRScheduleIn = Field(default_factory=LRScheduleIn)
    batch_size_schedule: BatchSizeScheduleIn = Field(default_factory=BatchSizeScheduleIn)
    lr_scaling: Literal["none", "linear", "sqrt"] = Field(
        default="none", description="Scale the learning rate with the batch size (B / ref)."
    )
    reference_batch_size: Annotated[int, Field(strict=True, ge=1)] = Field(
        default=32, description="The batch size at which `learning_rate` applies unscaled."
    )
    evaluation: EvaluationIn | None = Field(
        default=None,
        description="Record `evaluations` (step, samples, loss) on a log-spaced step schedule.",
    )


class JobCreate(JobConfig):
    """A training job: the dataset, the training config (every field optional, core defaults),
    a warm start, checkpoints to keep, a time limit, a name and tags."""

    model_config = ConfigDict(
        extra="forbid",
        allow_inf_nan=False,
        json_schema_extra={"examples": [_EXAMPLE_CREATE]},
    )

    dataset_id: Annotated[str, StringConstraints(min_length=1, max_length=36)] = Field(
        description="The dataset to train on."
    )
    init_from: InitFromIn | None = Field(
        default=None,
        description="Warm start from another job's checkpoint; `epochs` then counts on from "
        "its epoch (the job runs epochs epoch+1 … `epochs`).",
    )
    keep_checkpoints: KeepCheckpoints | Literal["all"] | None = Field(
        default=None,
        description='Epochs whose checkpoints to keep for warm starts (or "all"), within '
        "the tenant's checkpoint budget (`BATCHWISE_CHECKPOINT_BUDGET_BYTES`); the latest is "
        "always kept until the job is deleted.",
    )
    max_runtime_s: PositiveFloat | None = Field(
        default=None, description="Stop the job as failed (`time_limit`) after this long."
    )
    name: JobName | None = Field(default=None, description="A label for people; not unique.")
    tags: Annotated[list[Tag], Field(max_length=20)] = Field(
        default_factory=list, description="Labels to filter by (`GET /v1/jobs?tag=`)."
    )

    def train_config(self) -> dict[str, Any]:
        """The fields that make up the core's ``TrainConfig``, as a dict for ``from_dict``."""
        config = self.model_dump(include=set(JobConfig.model_fields))
        schedule = config["batch_size_schedule"]
        schedule["points"] = [] if schedule["points"] is None else schedule["points"]
        return config


class JobSubmit(JobCreate):
    """A training job as a user submits it (``POST /v1/jobs``, a sweep's ``base``): a
    :class:`JobCreate` whose tags may not be reserved ones. The service's own submissions (a
    sweep's points, tagged ``sweep:<id>``) are plain :class:`JobCreate`."""

    tags: Annotated[list[UserTag], Field(max_length=20)] = Field(
        default_factory=list,
        description="Labels to filter by (`GET /v1/jobs?tag=`); `sweep:` tags are the "
        "service's own.",
    )


class PredictRequest(_Strict):
    """Rows to predict, each with the dataset's features in its column order."""

    model_config = ConfigDict(
        extra="forbid",
        allow_inf_nan=False,
        json_schema_extra={"examples": [{"X": [[3.0, 90.0], [4.0, 120.0]]}]},
    )

    X: Annotated[list[list[FiniteFloat]], Field(min_length=1, max_length=100_000)] = Field(
        description="Feature rows (n_rows × n_features)."
    )


__all__ = [
    "EXAMPLE_DATASET_ID",
    "EXAMPLE_JOB_ID",
    "FINISHED_STATUSES",
    "MAX_SEED",
    "MAX_WARMUP_SAMPLES",
    "SWEEP_TAG_PREFIX",
    "BatchSizeScheduleIn",
    "EarlyStoppingIn",
    "ErrorCode",
    "EvaluationIn",
    "InitFromIn",
    "JobConfig",
    "JobCreate",
    "JobStatus",
    "JobSubmit",
    "LRScheduleIn",
    "PredictRequest",
    "Tag",
    "UserTag",
]
