"""What the "start a job" and "start a sweep" forms are prefilled with, from the dataset.

Every value is one the API accepts for that dataset: a batch size never above the training
rows, a model that fits the task. The user may change any of them before submitting.
"""

from __future__ import annotations

from dataclasses import dataclass

from service.core import split_sizes
from service.core.models import MODEL_KINDS
from service.core.optim import OPTIMIZER_NAMES
from service.datasets.schemas import DatasetRead

#: Below this many rows a validation split would leave too few rows to learn from.
MIN_ROWS_FOR_VALIDATION = 50
VALIDATION_SPLIT = 0.2
#: The sweep's batch sizes are powers of two in [SWEEP_SMALLEST, SWEEP_LARGEST] (capped by
#: the training rows), thinned to every other power when more than SWEEP_MAX_POINTS fit.
SWEEP_SMALLEST, SWEEP_LARGEST, SWEEP_MAX_POINTS = 8, 4096, 6

MODEL_FOR_TASK = {"regression": "linear", "binary": "logistic", "multiclass": "softmax"}


@dataclass(frozen=True)
class FormDefaults:
    """The forms' initial values for one dataset."""

    model: str
    validation_split: float
    train_rows: int
    batch_size: int
    sweep_batch_sizes: tuple[int, ...]
    learning_rate: float = 0.01
    epochs: int = 10
    target_fraction: float = 0.9  # offered when "fraction of the loss gap" is picked
    #: The choices the forms offer: exactly what the core accepts.
    models: tuple[str, ...] = MODEL_KINDS
    optimizers: tuple[str, ...] = OPTIMIZER_NAMES


def sweep_batch_sizes(train_rows: int) -> tuple[int, ...]:
    """Powers of two from 8 up to min(train_rows, 4096), every other one past six of them
    (8, 32, 128, …: a wide range in few points is what the S(B) fit needs); for fewer than
    16 training rows, powers of two from 1."""
    smallest = SWEEP_SMALLEST if train_rows >= 2 * SWEEP_SMALLEST else 1
    sizes: list[int] = []
    size = smallest
    while size <= min(train_rows, SWEEP_LARGEST):
        sizes.append(size)
        size *= 2
    if len(sizes) > SWEEP_MAX_POINTS:
        sizes = sizes[::2]
    return tuple(sizes)


def form_defaults(dataset: DatasetRead) -> FormDefaults:
    """The forms' defaults for ``dataset``: its task's model, a 20% validation split when
    there are at least 50 rows, batch 32 (or the training rows, if fewer)."""
    validation_split = VALIDATION_SPLIT if dataset.n_rows >= MIN_ROWS_FOR_VALIDATION else 0.0
    train_rows = split_sizes(dataset.n_rows, validation_split)[0]
    return FormDefaults(
        model=MODEL_FOR_TASK[dataset.task],
        validation_split=validation_split,
        train_rows=train_rows,
        batch_size=min(32, train_rows),
        sweep_batch_sizes=sweep_batch_sizes(train_rows),
    )


__all__ = ["FormDefaults", "form_defaults", "sweep_batch_sizes"]
