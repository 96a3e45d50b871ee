"""What the Batchwise API answers, as :class:`~typing.TypedDict` views of the fields this client
and its callers read (the server may send more)."""

from __future__ import annotations

from typing import Any, Literal, TypedDict

JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]
SweepStatus = Literal["running", "succeeded", "failed", "cancelled"]
FINISHED_JOB_STATUSES = frozenset({"succeeded", "failed", "cancelled"})
FINISHED_SWEEP_STATUSES = frozenset({"succeeded", "failed", "cancelled"})


class FieldErrorDict(TypedDict):
    """One entry of a problem's ``errors``: where (``loc``) and what (``msg``, ``type``)."""

    loc: list[str | int]
    msg: str
    type: str


class Dataset(TypedDict):
    """``GET /v1/datasets/{id}``."""

    id: str
    name: str
    n_rows: int
    n_features: int
    feature_names: list[str]
    target: str
    task: Literal["regression", "binary", "multiclass"]
    classes: list[float] | None
    stats: list[dict[str, Any]]
    source_format: str
    sha256: str
    size_bytes: int
    dropped_rows: int
    created_at: str


class Progress(TypedDict):
    """``fraction`` = (epoch + step / steps_per_epoch) / epochs, in [0, 1]."""

    epoch: int
    epochs: int
    step: int
    steps_per_epoch: int | None
    fraction: float
    eta_s: float | None


class Losses(TypedDict):
    """Train and validation loss (null before the first epoch, or without validation)."""

    train_loss: float | None
    val_loss: float | None


class JobErrorDict(TypedDict):
    """Why a job failed: ``code`` (diverged, time_limit, …) and a message."""

    code: str
    message: str


class Job(TypedDict):
    """``GET /v1/jobs/{id}``."""

    id: str
    dataset_id: str
    name: str | None
    tags: list[str]
    status: JobStatus
    cancel_requested: bool
    config: dict[str, Any]
    max_runtime_s: float | None
    progress: Progress
    samples_seen: int
    latest: Losses
    best: Losses
    error: JobErrorDict | None
    attempts: int
    max_attempts: int
    created_at: str
    started_at: str | None
    finished_at: str | None
    links: dict[str, str]
    batch_size_advice: dict[str, Any] | None
    init_from: dict[str, Any] | None
    keep_checkpoints: list[int] | str | None


class Steps(TypedDict):
    """Per-step training losses; ``step`` counts optimizer steps from 1."""

    step: list[int]
    loss: list[float]


class History(TypedDict):
    """``GET /v1/jobs/{id}/history``: one entry per finished epoch in each per-epoch list."""

    job_id: str
    status: JobStatus
    task: Literal["regression", "binary", "multiclass"]
    epoch: list[int]
    train_loss: list[float | None]
    val_loss: list[float | None]
    val_rmse: list[float | None] | None
    val_r2: list[float | None] | None
    val_accuracy: list[float | None] | None
    learning_rate: list[float | None]
    batch_size: list[int]
    samples_seen: list[int]
    wall_time_s: list[float | None]
    samples_per_s: list[float | None]
    noise_scale: list[dict[str, Any] | None]
    steps: Steps
    total_steps: int
    downsampled: bool


class SweepTarget(TypedDict):
    """The loss every point must reach, and how it was derived (``description``)."""

    loss: float | None
    on: Literal["train", "validation"]
    method: Literal["fraction", "absolute", "auto"]
    fraction: float | None
    initial_loss: float | None
    best_loss: float | None
    description: str
    candidates: list[dict[str, Any]]


class LossPair(TypedDict):
    """A training and a validation loss."""

    train: float | None
    validation: float | None


class ToTarget(TypedDict):
    """Cost of reaching the target (interpolated); null where never reached."""

    steps: float | None
    samples: float | None
    epochs: float | None
    wall_time_s: float | None


class SweepPoint(TypedDict):
    """One batch size of a sweep: its chosen learning rate and what it achieved."""

    batch_size: int
    job_ids: list[str]
    complete: bool
    learning_rate: float | None
    learning_rates_tried: list[float]
    lr_interior: bool | None
    lr_edge: Literal["low", "high"] | None
    rounds: int
    best: LossPair
    final: LossPair
    gap: float | None
    to_target: ToTarget
    samples_per_s: float | None


class Sweep(TypedDict):
    """``GET /v1/sweeps/{id}``: status, target, points and the batch-size analysis."""

    id: str
    dataset_id: str
    name: str | None
    status: SweepStatus
    partial: bool
    lr_method: Literal["given", "searched", "scaled"]
    round: int
    batch_sizes: list[int]
    seeds: int
    jobs: dict[str, int]
    target: SweepTarget
    points: list[SweepPoint]
    fit: dict[str, Any] | None
    noise_scale: list[dict[str, Any]]
    noise_scale_at_target: dict[str, Any] | None
    recommendation: dict[str, Any] | None
    error: str | None
    spec: dict[str, Any]
    created_at: str
    finished_at: str | None
    links: dict[str, str]


class SweepSummary(TypedDict):
    """One entry of ``GET /v1/sweeps``: the sweep without its points and analysis."""

    id: str
    dataset_id: str
    name: str | None
    status: SweepStatus
    lr_method: Literal["given", "searched", "scaled"]
    round: int
    batch_sizes: list[int]
    created_at: str
    finished_at: str | None
    links: dict[str, str]


class DatasetPage(TypedDict):
    """``GET /v1/datasets``: one page, newest first; ``next_cursor`` null on the last."""

    items: list[Dataset]
    next_cursor: str | None


class JobPage(TypedDict):
    """``GET /v1/jobs``: one page, newest first; ``next_cursor`` null on the last."""

    items: list[Job]
    next_cursor: str | None


class SweepPage(TypedDict):
    """``GET /v1/sweeps``: one page, newest first; ``next_cursor`` null on the last."""

    items: list[SweepSummary]
    next_cursor: str | None


class Model(TypedDict):
    """``GET /v1/jobs/{id}/model``: named parameter arrays as nested lists (``W``, ``b`` or
    ``W0``, ``b0``, …), the input standardisation ``{mean, std}`` (x' = (x − mean) / std) or
    null, and the class labels for classifiers."""

    job_id: str
    model: str
    task: Literal["regression", "binary", "multiclass"]
    n_features: int
    feature_names: list[str]
    target: str
    config: dict[str, Any]
    params: dict[str, Any]
    standardization: dict[str, list[float]] | None
    classes: list[float] | None


class Prediction(TypedDict):
    """``POST /v1/jobs/{id}/predict``: one prediction per row (values, or the dataset's class
    labels), and for classifiers the probabilities (n_rows, n_classes) in ``classes`` order."""

    predictions: list[float]
    probabilities: list[list[float]] | None
    classes: list[float] | None


ProbeStatus = Literal["running", "succeeded", "failed", "cancelled"]
FINISHED_PROBE_STATUSES = frozenset({"succeeded", "failed", "cancelled"})


class ProbeBranch(TypedDict):
    """One multiplier at one checkpoint: the rate chosen, the loss after the window, whether
    it kept up with ×1."""

    multiplier: int
    batch_size: int
    job_ids: list[str]
    complete: bool
    learning_rate: float | None
    learning_rates_tried: list[float]
    lr_edge: Literal["low", "high"] | None
    loss: float | None
    losses: list[float | None]
    relative_gap: float | None
    kept_up: bool | None


class ProbeCritical(TypedDict):
    """The critical batch at a checkpoint: ``bracket`` [kept up, fell behind or null]."""

    batch_size: int | None
    bracket: list[int | None]
    multipliers: list[int | None]
    open_ended: bool
    monotone: bool
    unanimous: bool
    rule: str
    reason: str | None


class ProbeCheckpoint(TypedDict):
    """One checkpoint of a probe's source: its branches, the critical batch, B_simple."""

    epoch: int
    samples_seen: int | None
    loss: float | None
    batch_size: int | None
    learning_rate: float | None
    branches: list[ProbeBranch]
    critical: ProbeCritical
    b_simple: float | None
    b_simple_corrected: float | None
    b_simple_reason: str | None
    ratio: float | None


class ProbeSummary(TypedDict):
    """One entry of ``GET /v1/probes``: the probe without its checkpoints."""

    id: str
    job_id: str
    dataset_id: str
    name: str | None
    status: ProbeStatus
    round: int
    at_epochs: list[int]
    multipliers: list[int]
    created_at: str
    finished_at: str | None
    links: dict[str, str]


class Probe(ProbeSummary):
    """``GET /v1/probes/{id}``: the critical batch at each checkpoint of the source job."""

    partial: bool
    window_samples: int
    tolerance: float
    lr: Literal["search", "sqrt", "linear"]
    seeds: int
    jobs: dict[str, int]
    checkpoints: list[ProbeCheckpoint]
    error: str | None
    spec: dict[str, Any]


class ProbePage(TypedDict):
    """``GET /v1/probes``: one page, newest first; ``next_cursor`` null on the last."""

    items: list[ProbeSummary]
    next_cursor: str | None
