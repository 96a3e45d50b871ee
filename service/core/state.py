"""A run's state between epochs: what a checkpoint holds, taken (``snapshot``), put back
(``restore``) and checked against the run that resumes it (``check_resumable``)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from service.core.checkpoint import Checkpoint
from service.core.config import TrainConfig
from service.core.data import Standardization
from service.core.errors import CoreConfigError
from service.core.optim import Optimizer
from service.core.tasks import Task

__all__ = ["RunState"]


@dataclass(eq=False)
class RunState:
    """The parameters, the optimizer, the shuffle and noise-sample generators (the arrays and
    objects the loop updates in place) and the counters of a run; constant: what it runs on.

    ``reference``: the divergence reference (the first epoch's train loss; None before).
    ``best_*``, ``wait``: early stopping's. ``finished``: "completed" or "early_stopping" once
    the run has ended. ``batch_size``, ``batch_size_reason``: the adaptive batch size of the
    next epoch and why; the warmup's batch of the last step run and why (None before it, and
    for the other kinds).
    """

    config: TrainConfig
    task: Task
    n_features: int
    classes: np.ndarray | None
    standardization: Standardization | None
    theta: np.ndarray
    optimizer: Optimizer
    shuffle_rng: np.random.Generator
    noise_rng: np.random.Generator
    epoch: int = 0
    samples_seen: int = 0
    total_steps: int = 0
    reference: float | None = None
    best_value: float | None = None
    best_epoch: int = 0
    wait: int = 0
    best_theta: np.ndarray | None = None
    finished: str | None = None
    batch_size: int | None = None
    batch_size_reason: str | None = None

    def check_resumable(self, checkpoint: Checkpoint) -> None:
        """``CoreConfigError("resume_from", …)`` unless ``checkpoint`` is of this config and
        data, and not past its epochs."""
        if checkpoint.config != self.config:
            raise CoreConfigError("resume_from", "the checkpoint was made with a different config")
        if checkpoint.task != self.task or checkpoint.n_features != self.n_features:
            raise CoreConfigError("resume_from", "the checkpoint was made on different data")
        same_classes = (checkpoint.classes is None and self.classes is None) or (
            checkpoint.classes is not None
            and self.classes is not None
            and np.array_equal(checkpoint.classes, self.classes)
        )
        if not same_classes:
            raise CoreConfigError("resume_from", "the checkpoint was made with other class labels")
        if checkpoint.theta.shape != self.theta.shape or checkpoint.theta.dtype != self.theta.dtype:
            raise CoreConfigError(
                "resume_from", "the checkpoint's parameters do not fit this model"
            )
        if checkpoint.epoch > self.config.epochs:
            raise CoreConfigError("resume_from", "the checkpoint is past the configured epochs")

    def snapshot(self) -> Checkpoint:
        """The state as a ``Checkpoint`` (copies: later steps do not change it)."""
        standardization = self.standardization
        return Checkpoint(
            config=self.config,
            epoch=self.epoch,
            theta=self.theta.copy(),
            optimizer_state=self.optimizer.state_dict(),
            rng_states={
                "shuffle": self.shuffle_rng.bit_generator.state,
                "noise": self.noise_rng.bit_generator.state,
            },
            task=self.task,
            n_features=self.n_features,
            samples_seen=self.samples_seen,
            total_steps=self.total_steps,
            classes=self.classes,
            mean=None if standardization is None else standardization.mean,
            std=None if standardization is None else standardization.std,
            divergence_reference=self.reference,
            best_value=self.best_value,
            best_epoch=self.best_epoch,
            epochs_without_improvement=self.wait,
            best_theta=None if self.best_theta is None else self.best_theta.copy(),
            finished=self.finished,
            batch_size=self.batch_size,
            batch_size_reason=self.batch_size_reason,
        )

    def restore(self, checkpoint: Checkpoint) -> None:
        """Put ``checkpoint`` back, into the same arrays and generators."""
        np.copyto(self.theta, checkpoint.theta)
        self.optimizer.load_state_dict(checkpoint.optimizer_state)
        self.shuffle_rng.bit_generator.state = checkpoint.rng_states["shuffle"]
        self.noise_rng.bit_generator.state = checkpoint.rng_states["noise"]
        self.epoch = checkpoint.epoch
        self.samples_seen = checkpoint.samples_seen
        self.total_steps = checkpoint.total_steps
        self.reference = checkpoint.divergence_reference
        self.best_value = checkpoint.best_value
        self.best_epoch = checkpoint.best_epoch
        self.wait = checkpoint.epochs_without_improvement
        self.best_theta = None if checkpoint.best_theta is None else checkpoint.best_theta.copy()
        self.finished = checkpoint.finished
        remembers = self.config.batch_size_schedule.kind in ("adaptive", "warmup")
        if remembers and checkpoint.batch_size is not None:
            self.batch_size = checkpoint.batch_size
            self.batch_size_reason = checkpoint.batch_size_reason

    def update_early_stopping(self, epoch: int, train_loss: float, val_loss: float | None) -> None:
        """Keras rule: improved when value < best − min_delta; stop after ``patience`` misses
        (``finished`` = "early_stopping", the best epoch's θ back with restore_best_weights)."""
        es = self.config.early_stopping
        if es is None:
            return
        value = val_loss if es.monitor == "val_loss" else train_loss
        assert value is not None  # check_config_for_dataset demands a validation set
        if self.best_value is None or value < self.best_value - es.min_delta:
            self.best_value = value
            self.best_epoch = epoch
            self.wait = 0
            if es.restore_best_weights:
                if self.best_theta is None:
                    self.best_theta = self.theta.copy()
                else:
                    np.copyto(self.best_theta, self.theta)
            return
        self.wait += 1
        if self.wait >= es.patience:
            self.finished = "early_stopping"
            if es.restore_best_weights and self.best_theta is not None:
                np.copyto(self.theta, self.best_theta)
