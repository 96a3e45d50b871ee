"""The probes API's shapes: what a client sends (``ProbeCreate``) and reads back (``ProbeRead``).

A probe measures the critical batch size locally (Merrill et al. 2025, "Critical Batch Size
Revisited"): from checkpoints of a source job (``at_epochs``) it branches ordinary jobs that
continue at ``multipliers`` × the batch size in force there, each for the same
``window_samples``, with the learning rate searched per branch or scaled; a multiplier keeps
up when its loss after the window trails the ×1 branch's by at most ``tolerance`` (relative).
The largest multiplier that keeps up (every smaller one too) is the critical batch there.

Read schemas never hold NaN or infinity: a missing or non-finite value is ``null``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from service.jobs.read_schemas import JobCounts
from service.jobs.schemas import EXAMPLE_JOB_ID

ProbeStatus = Literal["running", "succeeded", "failed", "cancelled"]
FINISHED_PROBE_STATUSES: tuple[ProbeStatus, ...] = ("succeeded", "failed", "cancelled")
ProbeLR = Literal["search", "sqrt", "linear"]
LossOn = Literal["train", "validation"]

#: Bounds that keep one request from queueing an unbounded amount of work.
MAX_CHECKPOINTS = 12
MAX_MULTIPLIERS = 12
MAX_SEEDS = 5
MAX_FIRST_ROUND_JOBS = 400
#: "auto" picks about this many log-spaced epochs of the source run.
AUTO_CHECKPOINTS = 6
#: Default multipliers stop where the window holds fewer steps than this at k × B: a branch of
#: a few steps cannot show that its rate is unstable.
MIN_WINDOW_STEPS = 32
#: The default tolerance: the loss may trail the ×1 branch's by at most 1% (relative).
DEFAULT_TOLERANCE = 0.01

EXAMPLE_PROBE_ID = "3b8e1f6a-9c2d-4e7b-a5f0-8d1c2e3f4a5b"
ProbeName = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


_EXAMPLE_CREATE: dict[str, Any] = {
    "job_id": EXAMPLE_JOB_ID,
    "at_epochs": "auto",
    "multipliers": [1, 2, 4, 8, 16],
    "lr": "search",
    "tolerance": 0.01,
    "seeds": 1,
}


class ProbeCreate(_Strict):
    """A probe of a source job's critical batch size at some of its checkpoints."""

    model_config = ConfigDict(
        extra="forbid", allow_inf_nan=False, json_schema_extra={"examples": [_EXAMPLE_CREATE]}
    )

    job_id: Annotated[str, StringConstraints(min_length=1, max_length=36)] = Field(
        description="The source job (finished or running): its kept checkpoints are branched."
    )
    name: ProbeName | None = Field(default=None, description="A label for people.")
    at_epochs: (
        Annotated[
            list[Annotated[int, Field(strict=True, ge=1)]],
            Field(min_length=1, max_length=MAX_CHECKPOINTS),
        ]
        | Literal["auto"]
    ) = Field(
        default="auto",
        description="The epochs whose end checkpoints are branched (each must be kept by the "
        "source job: `keep_checkpoints`), or `auto`: about 6 log-spaced epochs of the run, "
        "among those the source has kept.",
    )
    multipliers: (
        Annotated[
            list[Annotated[int, Field(strict=True, ge=1)]],
            Field(min_length=1, max_length=MAX_MULTIPLIERS),
        ]
        | None
    ) = Field(
        default=None,
        description="Batch multipliers k (the branch runs k × the batch size in force at the "
        "checkpoint); ×1, the reference, is always run. Default: 1, 2, 4, … while k × B "
        "fits the training rows and the window holds at least 32 steps of k × B (fewer "
        "steps cannot show an unstable rate); the bracket is then open-ended at the cap.",
    )
    window_samples: Annotated[int, Field(strict=True, ge=1)] | None = Field(
        default=None,
        description="Training samples every branch runs before its loss is compared (default: "
        "one epoch of the training rows).",
    )
    lr: ProbeLR = Field(
        default="search",
        description="Each branch's learning rate: `search` brackets it per branch (×4 a round "
        "from the source's rate scaled by √k, then refined by √2 and 2^¼; the lowest loss "
        "after the window wins); `sqrt` / `linear`: the source's rate × √k / × k, one run.",
    )
    max_rounds: Annotated[int, Field(strict=True, ge=1, le=20)] = Field(
        default=6, description="`search`: rounds at most per branch, the first included."
    )
    tolerance: Annotated[float, Field(gt=0, lt=1, allow_inf_nan=False)] = Field(
        default=DEFAULT_TOLERANCE,
        description="A branch keeps up when its loss after the window is at most "
        "(1 + tolerance) × the ×1 branch's loss (means over seeds).",
    )
    loss_on: LossOn = Field(
        default="train",
        description="Which loss is compared: `validation` needs a source with a validation split.",
    )
    seeds: Annotated[int, Field(strict=True, ge=1, le=MAX_SEEDS)] = Field(
        default=1,
        description="Runs per (checkpoint, multiplier, rate): the source's seed, then the next.",
    )


# --- reading ---------------------------------------------------------------------------------


class BranchRead(BaseModel):
    """One multiplier at one checkpoint: its runs, the rate chosen, the loss after the window."""

    multiplier: int
    batch_size: int
    job_ids: list[str]
    complete: bool = Field(description="Every run of this branch has finished.")
    learning_rate: float | None = Field(description="The chosen rate (lowest mean loss).")
    learning_rates_tried: list[float]
    lr_edge: Literal["low", "high"] | None = Field(
        description="`search`: the chosen rate is at this edge of those tried (its best may "
        "lie beyond); null: interior, or not searched."
    )
    loss: float | None = Field(description="Mean over seeds of the loss after the window.")
    losses: list[float | None] = Field(description="Per seed (null: that run failed).")
    relative_gap: float | None = Field(description="loss / ×1 loss − 1.")
    kept_up: bool | None = Field(description="relative_gap ≤ tolerance (null: not yet known).")


class CriticalRead(BaseModel):
    """The critical batch at one checkpoint, with its bracket."""

    batch_size: int | None = Field(
        description="The largest batch that kept up, every smaller multiplier too (null: "
        "not yet known)."
    )
    bracket: list[int | None] = Field(
        description="[largest batch that kept up, smallest that fell behind]; the second is "
        "null when every multiplier kept up (the critical batch is at least the first)."
    )
    multipliers: list[int | None] = Field(description="The bracket as multipliers.")
    open_ended: bool = Field(description="Every multiplier tried kept up.")
    monotone: bool = Field(
        description="False when a multiplier above the first that fell behind kept up again "
        "(noise: consider more seeds)."
    )
    unanimous: bool = Field(description="Every seed's own verdict agrees with the mean's.")
    rule: str = Field(description="How keeping up was decided, across seeds, in words.")
    reason: str | None = Field(description="Why there is no answer yet, when there is none.")


class ProbeCheckpointRead(BaseModel):
    """One checkpoint of the source job: where it was, its branches, the critical batch there,
    and B_simple there."""

    epoch: int
    samples_seen: int | None
    loss: float | None = Field(description="The source's loss (`loss_on`) at this epoch.")
    batch_size: int | None = Field(description="The source's batch size in force (×1).")
    learning_rate: float | None = Field(description="The source's learning rate in force.")
    branches: list[BranchRead]
    critical: CriticalRead
    b_simple: float | None = Field(
        description="B_simple = tr(Σ)/|G|² at this checkpoint, from the source's noise-scale "
        "measurement at this epoch (null with `b_simple_reason` when it did not measure it)."
    )
    b_simple_corrected: float | None = Field(description="1/(1/B_simple + 1/N).")
    b_simple_reason: str | None
    ratio: float | None = Field(description="critical.batch_size / b_simple.")


class ProbeSpecRead(BaseModel):
    """The request with its defaults resolved, and what the service planned from it."""

    model_config = ConfigDict(extra="forbid")

    at_epochs: list[int] = Field(description="The checkpoints branched, `auto` resolved.")
    multipliers: list[int] = Field(description="The multipliers run, the default resolved.")
    asked_multipliers: list[int] | None = Field(
        default=None, description="The multipliers asked for (null: the default)."
    )
    window_samples: int = Field(description="Samples every branch runs (default resolved).")
    lr: ProbeLR
    max_rounds: int
    tolerance: float
    loss_on: LossOn
    seeds: int
    train_rows: int = Field(description="The source's training rows.")
    batch_sizes: dict[str, int | None] = Field(
        description="The source's batch size at each checkpoint (×1), keyed by epoch."
    )
    pending: list[int] = Field(
        default_factory=list,
        description="Checkpoints waiting for the running source to reach and keep them.",
    )
    dropped: dict[str, str] = Field(
        default_factory=dict,
        description="Checkpoints given up, keyed by epoch, with the reason.",
    )
    max_runtime_s: float | None = Field(
        default=None, description="Each branch's time limit (the tenant's default)."
    )
    source_evaluated_on: LossOn | None = Field(
        default=None, description="The loss the source's evaluations were on, if it had any."
    )


class ProbeLinks(BaseModel):
    """Where to go next."""

    self: str
    cancel: str
    jobs: str
    source: str
    plot: str
    dataset: str


class ProbeRead(BaseModel):
    """A probe: its request, status and the critical batch at each checkpoint."""

    id: str
    job_id: str
    dataset_id: str
    name: str | None
    status: ProbeStatus
    partial: bool = Field(description="True while branches are still running.")
    round: int = Field(description="The learning-rate round submitted last (from 0).")
    at_epochs: list[int]
    multipliers: list[int]
    window_samples: int
    tolerance: float
    lr: ProbeLR
    seeds: int
    jobs: JobCounts = Field(description="How many branch jobs are in each status.")
    checkpoints: list[ProbeCheckpointRead]
    error: str | None
    spec: ProbeSpecRead = Field(description="The request, defaults filled in.")
    created_at: datetime
    finished_at: datetime | None
    links: ProbeLinks


class ProbeSummary(BaseModel):
    """A probe in a list: no analysis (read the probe for that)."""

    id: str
    job_id: str
    dataset_id: str
    name: str | None
    status: ProbeStatus
    round: int
    at_epochs: list[int]
    multipliers: list[int]
    created_at: datetime
    finished_at: datetime | None
    links: ProbeLinks


class ProbePage(BaseModel):
    """One page of probes, newest first."""

    items: list[ProbeSummary]
    next_cursor: str | None = Field(
        description="Pass as `cursor` to get the next page; null on the last page."
    )


__all__ = [
    "AUTO_CHECKPOINTS",
    "DEFAULT_TOLERANCE",
    "EXAMPLE_PROBE_ID",
    "FINISHED_PROBE_STATUSES",
    "MAX_CHECKPOINTS",
    "MAX_FIRST_ROUND_JOBS",
    "MAX_MULTIPLIERS",
    "MAX_SEEDS",
    "MIN_WINDOW_STEPS",
    "BranchRead",
    "CriticalRead",
    "LossOn",
    "ProbeCheckpointRead",
    "ProbeCreate",
    "ProbeLR",
    "ProbeLinks",
    "ProbePage",
    "ProbeRead",
    "ProbeSpecRead",
    "ProbeStatus",
    "ProbeSummary",
]
