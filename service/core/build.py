"""``build_model``: the model for a kind and a task, refusing nonsense with the field named."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from service.core.errors import CoreConfigError
from service.core.losses import Head, HuberHead, LogisticHead, MSEHead, SoftmaxHead
from service.core.mlp import MLPModel
from service.core.models import MODEL_KINDS, LinearModel, LogisticModel, Model, SoftmaxModel
from service.core.tasks import Task
from service.core.validation import is_count

__all__ = ["build_model"]

_TASKS: tuple[str, ...] = ("regression", "binary", "multiclass")
_ACTIVATIONS: tuple[str, ...] = ("relu", "tanh")


def build_model(
    kind: str,
    *,
    task: str,
    n_features: int,
    n_classes: int | None = None,
    loss: str | None = None,
    huber_delta: float = 1.0,
    hidden_layers: Sequence[int] = (),
    activation: str = "relu",
) -> Model[Any]:
    """The model for ``kind`` on a ``task``; CoreConfigError (naming the field) on nonsense.

    - linear: regression only, loss "mse" (default) or "huber" (with huber_delta > 0).
    - logistic: binary only; softmax: multiclass (K = n_classes ≥ 2) or binary (K = 2).
    - mlp: any task, at least one hidden layer; the head follows the task (linear with
      mse/huber, logistic, softmax).
    - Classification losses are cross-entropy: ``loss`` must be None or "cross_entropy".
    - ``n_classes``: required (≥ 2) for multiclass; None or 2 for binary; None for regression.
    """
    if kind not in MODEL_KINDS:
        raise CoreConfigError("model", f"must be one of {', '.join(MODEL_KINDS)}, not {kind!r}")
    if task not in _TASKS:
        raise CoreConfigError("task", f"must be one of {', '.join(_TASKS)}, not {task!r}")
    if not is_count(n_features) or n_features < 1:
        raise CoreConfigError("n_features", f"must be an integer ≥ 1, not {n_features!r}")
    if activation not in _ACTIVATIONS:
        raise CoreConfigError(
            "activation", f"must be one of {', '.join(_ACTIVATIONS)}, not {activation!r}"
        )
    hidden = tuple(hidden_layers)
    if kind == "mlp":
        if not hidden:
            raise CoreConfigError("hidden_layers", "the mlp model needs at least one hidden layer")
        if not all(is_count(h) and h >= 1 for h in hidden):
            raise CoreConfigError("hidden_layers", f"widths must be integers ≥ 1, not {hidden!r}")
    elif hidden:
        raise CoreConfigError("hidden_layers", f"only the mlp model has hidden layers, not {kind}")

    n_outputs = 1
    if task == "multiclass":
        if n_classes is None or not is_count(n_classes) or n_classes < 2:
            raise CoreConfigError(
                "n_classes", f"a multiclass task needs an integer ≥ 2, not {n_classes!r}"
            )
        n_outputs = int(n_classes)
    elif task == "binary":
        if n_classes is not None and n_classes != 2:
            raise CoreConfigError("n_classes", f"a binary task has 2 classes, not {n_classes!r}")
    elif n_classes is not None:
        raise CoreConfigError("n_classes", "a regression task has no classes")

    if kind == "linear" and task != "regression":
        raise CoreConfigError(
            "model", f"linear fits a regression target; use logistic or softmax for {task}"
        )
    if kind == "logistic" and task != "binary":
        raise CoreConfigError(
            "model", f"logistic fits a binary target; use softmax or linear for {task}"
        )
    if kind == "softmax":
        if task == "regression":
            raise CoreConfigError("model", "softmax fits a class target; use linear for regression")
        n_outputs = 2 if task == "binary" else n_outputs

    head: Head[Any]
    if task == "regression":
        if loss is None or loss == "mse":
            head = MSEHead()
        elif loss == "huber":
            if not isinstance(huber_delta, int | float) or not (
                math.isfinite(huber_delta) and huber_delta > 0
            ):
                raise CoreConfigError(
                    "huber_delta", f"must be a finite number > 0, not {huber_delta!r}"
                )
            head = HuberHead(float(huber_delta))
        else:
            raise CoreConfigError("loss", f"must be mse or huber for regression, not {loss!r}")
    else:
        if loss is not None and loss != "cross_entropy":
            raise CoreConfigError(
                "loss", f"classification uses cross-entropy (leave loss unset), not {loss!r}"
            )
        head = SoftmaxHead() if n_outputs > 1 else LogisticHead()

    typed_task: Task = task  # type: ignore[assignment]  # checked against _TASKS above
    if kind == "mlp":
        return MLPModel(
            task=typed_task,
            n_features=int(n_features),
            n_outputs=n_outputs,
            head=head,
            hidden_layers=[int(h) for h in hidden],
            activation=activation,
        )
    cls = {"linear": LinearModel, "logistic": LogisticModel, "softmax": SoftmaxModel}[kind]
    return cls(task=typed_task, n_features=int(n_features), n_outputs=n_outputs, head=head)
