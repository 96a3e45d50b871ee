"""Warm starts: a run that starts from another run's checkpoint with settings of its own.

    Training(X, y, config, init_from=checkpoint, reset_optimizer=False)

Unlike a resume (the same config, continued), a warm start may change anything that leaves
the model and its rows alone — batch size, learning rate, schedules, epochs, the optimizer's
hyper-parameters, the seed, and the optimizer kind with ``reset_optimizer``. What must match
is in ``FIXED_FIELDS`` and checked by ``check_warm_start``.

Epochs count on from the checkpoint's: a run from epoch e runs epochs e+1 … ``config.epochs``,
with the samples seen and global steps carried over, so every schedule reads the same epoch
and sample counts it would have read in the source. The shuffle and noise-sample generators
continue from the checkpoint's states when the seed is the source's — a warm start that
changes nothing continues the source bit for bit — and start afresh from the new seed
otherwise; the validation split and the evaluation rows stay the source's (``split_seed``).
"""

from __future__ import annotations

import numpy as np

from service.core.checkpoint import Checkpoint
from service.core.config import TrainConfig
from service.core.errors import CoreConfigError
from service.core.state import RunState

__all__ = ["FIXED_FIELDS", "check_warm_start", "warm_start", "warm_start_config_error"]

#: Config fields a warm start must share with its source: the model, and the rows it sees.
FIXED_FIELDS: tuple[str, ...] = (
    "model",
    "hidden_layers",
    "activation",
    "loss",
    "huber_delta",
    "dtype",
    "standardize",
    "validation_split",
)


def warm_start_config_error(source: TrainConfig, config: TrainConfig) -> CoreConfigError | None:
    """The first reason ``config`` cannot start from a checkpoint of ``source`` that the
    configs alone show (the field named), or None."""
    for name in FIXED_FIELDS:
        theirs, ours = getattr(source, name), getattr(config, name)
        if theirs != ours:
            return CoreConfigError(
                name,
                f"must stay {_shown(theirs)} as in the job it starts from (got {_shown(ours)}); "
                "a warm start keeps the model and its rows",
            )
    if source.data_seed != config.data_seed:
        return CoreConfigError(
            "split_seed",
            f"must be {source.data_seed}, the seed of the source's validation split",
        )
    return None


def _shown(value: object) -> str:
    if isinstance(value, tuple):
        return repr(list(value))
    return repr(value)


def check_warm_start(state: RunState, checkpoint: Checkpoint, *, reset_optimizer: bool) -> None:
    """``CoreConfigError`` (naming the field) unless ``state``'s run can start from
    ``checkpoint``: the fields above equal, the same data and classes, the same optimizer kind
    unless it is reset, and epochs left to run."""
    config = state.config
    error = warm_start_config_error(checkpoint.config, config)
    if error is not None:
        raise error
    if checkpoint.task != state.task or checkpoint.n_features != state.n_features:
        raise CoreConfigError("init_from", "the checkpoint was made on different data")
    same_classes = (checkpoint.classes is None and state.classes is None) or (
        checkpoint.classes is not None
        and state.classes is not None
        and np.array_equal(checkpoint.classes, state.classes)
    )
    if not same_classes:
        raise CoreConfigError("init_from", "the checkpoint was made with other class labels")
    if checkpoint.theta.shape != state.theta.shape or checkpoint.theta.dtype != state.theta.dtype:
        raise CoreConfigError("init_from", "the checkpoint's parameters do not fit this model")
    if not reset_optimizer and checkpoint.config.optimizer != config.optimizer:
        raise CoreConfigError(
            "optimizer",
            f"the checkpoint holds {checkpoint.config.optimizer!r} state: keep that optimizer, "
            "or set reset_optimizer to start another afresh",
        )
    if config.epochs <= checkpoint.epoch:
        raise CoreConfigError(
            "epochs",
            f"epochs counts on from the checkpoint's epoch {checkpoint.epoch}: set it above "
            f"{checkpoint.epoch} (e.g. {checkpoint.epoch + 1} for one more epoch)",
        )


def warm_start(state: RunState, checkpoint: Checkpoint, *, reset_optimizer: bool) -> None:
    """Put ``checkpoint``'s parameters, counters and (unless ``reset_optimizer``) optimizer
    state into ``state``; its generators too when the seed is the source's (module docstring).
    Early stopping's memory carries over when its settings are the source's."""
    config = state.config
    np.copyto(state.theta, checkpoint.theta)
    if not reset_optimizer:
        state.optimizer.load_state_dict(checkpoint.optimizer_state)
    if config.seed == checkpoint.config.seed:
        state.shuffle_rng.bit_generator.state = checkpoint.rng_states["shuffle"]
        state.noise_rng.bit_generator.state = checkpoint.rng_states["noise"]
    state.epoch = checkpoint.epoch
    state.samples_seen = checkpoint.samples_seen
    state.total_steps = checkpoint.total_steps
    state.reference = checkpoint.divergence_reference
    if (
        config.early_stopping is not None
        and config.early_stopping == checkpoint.config.early_stopping
    ):
        state.best_value = checkpoint.best_value
        state.best_epoch = checkpoint.best_epoch
        state.wait = checkpoint.epochs_without_improvement
        if checkpoint.best_theta is not None:
            state.best_theta = checkpoint.best_theta.copy()
    # The run goes on past the source's end, whatever ended it there.
    state.finished = None
    kind = config.batch_size_schedule.kind
    same_kind = kind == checkpoint.config.batch_size_schedule.kind
    if same_kind and kind in ("adaptive", "warmup") and checkpoint.batch_size is not None:
        state.batch_size = checkpoint.batch_size
        state.batch_size_reason = checkpoint.batch_size_reason
