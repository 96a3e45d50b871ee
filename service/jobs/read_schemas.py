"""What the jobs API answers: a job (``JobRead``: progress, losses, error, batch-size advice,
links), a page of jobs, a history, a model and predictions.

Read schemas never hold NaN or infinity (JSON cannot carry them): a missing or non-finite value
is ``null``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, RootModel

from service.jobs.schemas import (
    EXAMPLE_DATASET_ID,
    EXAMPLE_JOB_ID,
    ErrorCode,
    JobConfig,
    JobStatus,
)


class ProgressRead(BaseModel):
    """How far a job is: ``fraction`` = (epoch + step / steps_per_epoch) / epochs, in [0, 1];
    ``eta_s`` = elapsed · (1 − fraction) / fraction while running, else null."""

    epoch: int = Field(description="Epochs completed.")
    epochs: int = Field(description="Epochs asked for (early stopping may end sooner).")
    step: int = Field(description="Step within the running epoch (from the worker's heartbeat).")
    steps_per_epoch: int | None = Field(description="Steps in the running epoch, once known.")
    fraction: float
    eta_s: float | None = Field(description="Estimated seconds left; null unless running.")


class LossesRead(BaseModel):
    """A pair of losses; null until an epoch has finished (or without a validation split)."""

    train_loss: float | None
    val_loss: float | None


class JobErrorRead(BaseModel):
    """Why a job failed."""

    code: ErrorCode | str = Field(
        description="diverged, time_limit, lease_expired, dataset_corrupt or internal."
    )
    message: str


AdviceVerdict = Literal["well below", "below", "near", "above", "well above"]


class BatchSizeAdviceRead(BaseModel):
    """What the job's measured gradient noise scale says about its batch size B.

    B̂ is B_simple = tr(Σ)/|G|² (McCandlish et al. 2018) averaged over the last quarter of the
    measured epochs (mean tr(Σ) / mean |G|²) and corrected for sampling N training rows without
    replacement, 1/(1/B_simple + 1/N). With S(B) = S_min (1 + B̂/B) the ratio ρ = B/B̂ places
    the batch: well below (ρ < 1/4), below (< 1/2), near (≤ 2), above (≤ 4), well above.
    """

    batch_size: int = Field(description="B: the batch size in force in the last measured epoch.")
    message: str = Field(
        description="One sentence: the verdict, B̂ (or its lower bound), its uncertainty, the "
        "training loss it was measured at."
    )
    verdict: AdviceVerdict | None = Field(
        description="well below, below, near, above or well above the noise scale; null when "
        "B_simple was not resolved and its lower bound does not decide it (`message` says "
        "what is known)."
    )
    noise_scale: float | None = Field(
        description="B̂: the late B_simple with the finite-population correction (samples)."
    )
    b_simple: float | None = Field(description="The late B_simple, uncorrected.")
    loss_level: float | None = Field(
        description="The loss at which B̂ was measured (mean over the same epochs): B_simple "
        "grows many-fold as the loss falls, so B̂ means nothing without it."
    )
    uncertainty_factor: float | None = Field(
        description="exp(sd ln B_simple) of the per-epoch estimates averaged (≥ 1; 3 reads "
        "'±3×'); null with a single estimate."
    )
    ratio: float | None = Field(description="ρ = batch_size / noise_scale.")
    window: list[int] = Field(description="First and last epoch averaged.")
    noise_scale_lower_bound: float | None = Field(
        default=None,
        description="When B_simple was not resolved (the late |G|² estimate not positive): "
        "B̂ is at least this, 1/(1/L + 1/N) with L = mean tr(Σ) / mean |ḡ|² (a lower bound); "
        "`verdict` is then given only when the bound alone decides it. Null otherwise.",
    )
    exact: bool = Field(
        default=False,
        description="True when every averaged epoch measured over all the training rows "
        "(nothing estimated); false when on a sample of `noise_scale_samples` rows.",
    )


class JobLinks(BaseModel):
    """Where to go next."""

    self: str
    history: str
    model: str
    predict: str
    cancel: str
    checkpoints: str
    dataset: str


_EXAMPLE_READ: dict[str, Any] = {
    "id": EXAMPLE_JOB_ID,
    "dataset_id": EXAMPLE_DATASET_ID,
    "name": "batch 32",
    "tags": ["seed-example"],
    "status": "running",
    "cancel_requested": False,
    "config": JobConfig(validation_split=0.2, standardize=True).model_dump(mode="json"),
    "max_runtime_s": None,
    "progress": {
        "epoch": 4,
        "epochs": 10,
        "step": 13,
        "steps_per_epoch": 25,
        "fraction": 0.452,
        "eta_s": 1.9,
    },
    "samples_seen": 3616,
    "latest": {"train_loss": 0.052, "val_loss": 0.061},
    "best": {"train_loss": 0.052, "val_loss": 0.061},
    "batch_size_advice": {
        "batch_size": 32,
        "message": "batch 32 is well below the measured noise scale ≈ 900 (±3×) at training "
        "loss 0.41: a batch several times larger, with its learning rate re-tuned, would need "
        "fewer steps for about the same samples",
        "verdict": "well below",
        "noise_scale": 903.1,
        "b_simple": 1250.4,
        "loss_level": 0.41,
        "uncertainty_factor": 3.0,
        "ratio": 0.035,
        "window": [4, 4],
        "noise_scale_lower_bound": None,
        "exact": False,
    },
    "error": None,
    "attempts": 1,
    "max_attempts": 3,
    "created_at": "2026-11-26T12:00:00Z",
    "started_at": "2026-11-26T12:00:01Z",
    "finished_at": None,
    "links": {
        "self": f"/v1/jobs/{EXAMPLE_JOB_ID}",
        "history": f"/v1/jobs/{EXAMPLE_JOB_ID}/history",
        "model": f"/v1/jobs/{EXAMPLE_JOB_ID}/model",
        "predict": f"/v1/jobs/{EXAMPLE_JOB_ID}/predict",
        "cancel": f"/v1/jobs/{EXAMPLE_JOB_ID}/cancel",
        "checkpoints": f"/v1/jobs/{EXAMPLE_JOB_ID}/checkpoints",
        "dataset": f"/v1/datasets/{EXAMPLE_DATASET_ID}",
    },
}


class JobCounts(BaseModel):
    """How many of a sweep's or a probe's jobs are in each status."""

    queued: int = 0
    running: int = 0
    succeeded: int = 0
    failed: int = 0
    cancelled: int = 0

    @property
    def total(self) -> int:
        return self.queued + self.running + self.succeeded + self.failed + self.cancelled

    @property
    def finished(self) -> int:
        return self.succeeded + self.failed + self.cancelled


class InitFromRead(BaseModel):
    """A warm start: the job and epoch whose checkpoint the job started from."""

    job_id: str
    epoch: int
    reset_optimizer: bool


class JobRead(BaseModel):
    """A job: its resolved config, status, progress, losses, error, times and links."""

    model_config = ConfigDict(json_schema_extra={"examples": [_EXAMPLE_READ]})

    id: str = Field(description="The job's id (a UUID).")
    dataset_id: str
    name: str | None
    tags: list[str]
    status: JobStatus
    cancel_requested: bool = Field(description="A cancel was asked for; the worker stops soon.")
    config: JobConfig = Field(
        description="The resolved training config: every field, defaults filled in."
    )
    max_runtime_s: float | None
    progress: ProgressRead
    samples_seen: int
    latest: LossesRead = Field(description="The last finished epoch's losses.")
    best: LossesRead = Field(description="The lowest losses over the finished epochs.")
    batch_size_advice: BatchSizeAdviceRead | None = Field(
        default=None,
        description="`GET /v1/jobs/{id}` only (null in lists and other answers): for a job run "
        "with `noise_scale`, where its batch size sits against the measured gradient noise "
        "scale; null before the first measured epoch or without `noise_scale`.",
    )
    init_from: InitFromRead | None = Field(
        default=None, description="The checkpoint a warm-started job started from."
    )
    keep_checkpoints: list[int] | Literal["all"] | None = Field(
        default=None, description="The epochs whose checkpoints the job keeps."
    )
    error: JobErrorRead | None = Field(description="Set when the job failed.")
    attempts: int = Field(description="Times a worker claimed the job (more after a crash).")
    max_attempts: int
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    links: JobLinks


class JobPage(BaseModel):
    """One page of jobs, newest first."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"items": [_EXAMPLE_READ], "next_cursor": None}]}
    )

    items: list[JobRead]
    next_cursor: str | None = Field(
        description="Pass as `cursor` to get the next page; null on the last page."
    )


class NoiseScaleRead(BaseModel):
    """Gradient noise scale at the end of an epoch: B_simple = tr(Σ)/|G|² (McCandlish et al.
    2018); ``b_simple_corrected`` = 1/(1/B_simple + 1/N) for sampling without replacement;
    ``exact``: over all N training rows (else a sample of ``n_samples``);
    ``b_simple_lower_bound``: B_simple ≳ tr(Σ)/|ḡ|² when the sampled |G|² is not positive."""

    b_simple: float | None
    b_simple_corrected: float | None
    trace_sigma: float | None
    grad_sq_norm: float | None
    loss_level: float | None
    n_samples: int
    exact: bool = False
    b_simple_lower_bound: float | None = None


class StepsRead(BaseModel):
    """Per-step training losses: ``step`` counts optimizer steps from 1 over the whole run."""

    step: list[int]
    loss: list[float]


class EvaluationsRead(BaseModel):
    """The loss evaluated on a log-spaced step schedule (the job's `evaluation`): after
    `step[i]` optimizer steps (0: the initial parameters), `samples[i]` examples seen."""

    step: list[int]
    samples: list[int]
    loss: list[float]


class BatchSizeChangeRead(BaseModel):
    """The batch size changed during ``epoch``: from the run's global step ``step`` (the steps
    done before the first at the new size) and ``samples`` seen, ``batch_size`` rows at
    ``learning_rate``; ``reason`` in words."""

    epoch: int
    step: int
    samples: int
    batch_size: int
    learning_rate: float
    reason: str


class HistoryRead(BaseModel):
    """A job's history so far: one entry per finished epoch in each per-epoch array, and the
    step losses (downsampled when ``max_points`` is given)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "job_id": EXAMPLE_JOB_ID,
                    "status": "running",
                    "task": "regression",
                    "epoch": [1, 2],
                    "train_loss": [0.41, 0.12],
                    "val_loss": [0.38, 0.11],
                    "val_rmse": [0.62, 0.33],
                    "val_r2": [0.58, 0.88],
                    "val_accuracy": None,
                    "learning_rate": [0.01, 0.01],
                    "batch_size": [32, 32],
                    "samples_seen": [800, 1600],
                    "wall_time_s": [0.01, 0.02],
                    "samples_per_s": [80000.0, 80000.0],
                    "noise_scale": [None, None],
                    "batch_size_reason": [None, None],
                    "evaluations": {
                        "step": [0, 1, 2, 25, 50],
                        "samples": [0, 32, 64, 800, 1600],
                        "loss": [2.25, 1.9, 1.7, 0.4, 0.11],
                    },
                    "steps": {"step": [1, 2, 3], "loss": [0.9, 0.5, 0.3]},
                    "total_steps": 50,
                    "downsampled": True,
                }
            ]
        }
    )

    job_id: str
    status: JobStatus
    task: Literal["regression", "binary", "multiclass"] = Field(
        description="The task the model trains for: regression has val_rmse and val_r2, "
        "classification val_accuracy."
    )
    epoch: list[int] = Field(description="Epoch numbers, from 1.")
    train_loss: list[float | None]
    val_loss: list[float | None]
    val_rmse: list[float | None] | None = Field(description="Regression only.")
    val_r2: list[float | None] | None = Field(description="Regression only.")
    val_accuracy: list[float | None] | None = Field(description="Classification only.")
    learning_rate: list[float | None]
    batch_size: list[int]
    samples_seen: list[int]
    wall_time_s: list[float | None]
    samples_per_s: list[float | None]
    noise_scale: list[NoiseScaleRead | None]
    batch_size_reason: list[str | None] = Field(
        description="With the adaptive batch size, why each epoch ran at its batch size."
    )
    batch_size_changes: list[BatchSizeChangeRead] = Field(
        default_factory=list,
        description="With the warmup batch size: every change, in step order (the first "
        "step's included), with the learning rate from then on and why.",
    )
    evaluations: EvaluationsRead = Field(
        description="The evaluations of every epoch, in step order; empty without `evaluation`."
    )
    steps: StepsRead
    total_steps: int = Field(description="Step losses stored, before any downsampling.")
    downsampled: bool = Field(description="Whether `steps` holds fewer points than stored.")


class ModelParams(RootModel[dict[str, list[list[float]] | list[float]]]):
    """Named parameter arrays: a weight matrix "W" (n_features × outputs; an MLP's "W0",
    "W1", … layer by layer) as rows, a bias vector "b" ("b0", "b1", …) as a list."""


class StandardizationRead(BaseModel):
    """The standardisation applied to inputs before the model: x' = (x − mean) / std."""

    mean: list[float] = Field(description="Per feature, in the dataset's column order.")
    std: list[float] = Field(description="Per feature; never 0 (a constant column has 1).")


class ModelRead(BaseModel):
    """A succeeded job's fitted model: named parameters, the standardisation applied to inputs
    before the model (x' = (x − mean) / std), and the class labels for classifiers."""

    job_id: str
    model: str
    task: Literal["regression", "binary", "multiclass"]
    n_features: int
    feature_names: list[str]
    target: str
    config: JobConfig = Field(description="The training config the model was trained with.")
    params: ModelParams = Field(
        description='Named parameter arrays as nested lists: "W", "b" or "W0", "b0", "W1", ….'
    )
    standardization: StandardizationRead | None = Field(
        description="`{mean, std}` per feature, or null when trained without `standardize`."
    )
    classes: list[float] | None


class PredictResponse(BaseModel):
    """Predictions in the dataset's own labels; class probabilities for classifiers (columns in
    the order of ``classes``)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "predictions": [1.0, 0.0],
                    "probabilities": [[0.2, 0.8], [0.9, 0.1]],
                    "classes": [0.0, 1.0],
                }
            ]
        }
    )

    predictions: list[float]
    probabilities: list[list[float]] | None = None
    classes: list[float] | None = None


__all__ = [
    "AdviceVerdict",
    "BatchSizeAdviceRead",
    "EvaluationsRead",
    "HistoryRead",
    "JobCounts",
    "JobErrorRead",
    "JobLinks",
    "JobPage",
    "JobRead",
    "LossesRead",
    "ModelParams",
    "ModelRead",
    "NoiseScaleRead",
    "PredictResponse",
    "ProgressRead",
    "StandardizationRead",
    "StepsRead",
]
