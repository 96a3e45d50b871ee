"""What a training job can set (``TrainConfig``), validated eagerly, and checks against a dataset.

Every field has a documented default; ``TrainConfig(**fields)`` raises ``CoreConfigError`` naming
the first bad field (``"batch_size: must be ≥ 1 or null for the whole training set"``). A config
round-trips exactly through JSON:
``TrainConfig.from_dict(json.loads(json.dumps(c.to_dict()))) == c``.

``check_config_for_dataset`` refuses, from a dataset's metadata alone (rows, features, task,
classes), what cannot run, so the API can answer 422 before a worker loads any data.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from service.core.errors import CoreConfigError
from service.core.schedules import BatchSizeSchedule, LRSchedule
from service.core.tasks import Task
from service.core.validation import check_choice, check_int, check_real

ModelKind = Literal["linear", "logistic", "softmax", "mlp"]
Activation = Literal["relu", "tanh"]
LossName = Literal["mse", "huber"]
OptimizerName = Literal["sgd", "momentum", "nesterov", "adam"]
DType = Literal["float32", "float64"]
LRScaling = Literal["none", "linear", "sqrt"]
Monitor = Literal["val_loss", "train_loss"]
EvaluationOn = Literal["train", "validation"]

GiB = 1024**3


def _real(obj: object, field: str, attr: str, **bounds: Any) -> None:
    """Check ``obj.attr`` with ``check_real`` and store it as a ``float``, so that
    ``to_dict``/``from_dict`` round-trips to an equal object."""
    object.__setattr__(obj, attr, check_real(field, getattr(obj, attr), **bounds))


@dataclass(frozen=True)
class EarlyStopping:
    """Stop when ``monitor`` has not improved by more than ``min_delta`` for ``patience`` epochs.

    An epoch improves when ``value < best − min_delta``. With ``restore_best_weights`` the
    parameters of the best epoch are restored when the run stops early (Keras semantics).
    """

    monitor: Monitor = "val_loss"
    patience: int = 5
    min_delta: float = 0.0
    restore_best_weights: bool = True

    def __post_init__(self) -> None:
        check_choice("early_stopping.monitor", self.monitor, get_args(Monitor))
        check_int("early_stopping.patience", self.patience, minimum=1)
        _real(self, "early_stopping.min_delta", "min_delta", minimum=0.0)
        if not isinstance(self.restore_best_weights, bool):
            raise CoreConfigError("early_stopping.restore_best_weights", "must be true or false")


@dataclass(frozen=True)
class Evaluation:
    """Evaluate the loss on ``on`` ("train" | "validation") at log-spaced global steps.

    Steps: 0 (the initial parameters), every epoch end, and round(10^(k/``per_decade``)) for
    k = 0, 1, … (``schedules.log_spaced_steps``: ≈ per_decade per decade, distinct integers).
    The loss is the mean over a fixed subsample of at most ``max_rows`` rows of the chosen set,
    drawn once from its own seeded stream (the whole set when it is smaller).
    """

    on: EvaluationOn = "train"
    per_decade: int = 8
    max_rows: int = 8192

    def __post_init__(self) -> None:
        check_choice("evaluation.on", self.on, get_args(EvaluationOn))
        check_int("evaluation.per_decade", self.per_decade, minimum=1)
        if self.per_decade > 1000:
            raise CoreConfigError(
                "evaluation.per_decade", f"must be ≤ 1000; got {self.per_decade!r}"
            )
        check_int("evaluation.max_rows", self.max_rows, minimum=1)


@dataclass(frozen=True)
class TrainConfig:
    """Every setting of a training job. Defaults in brackets.

    Model: ``model`` ["linear"] one of linear | logistic | softmax | mlp; ``hidden_layers`` [()]
    widths of the MLP's hidden layers (MLP only, at least one); ``activation`` ["relu"] relu | tanh;
    ``loss`` [None] mse | huber for regression heads, None = mse for regression and cross-entropy
    for classification (setting mse/huber on a classification target fits the labels as numbers,
    a regression); ``huber_delta`` [1.0].

    Optimiser: ``optimizer`` ["sgd"] sgd | momentum | nesterov | adam; ``learning_rate`` [0.01];
    ``momentum`` [0.9]; ``beta1`` [0.9]; ``beta2`` [0.999]; ``eps`` [1e-8]; ``weight_decay`` [0.0]
    (coupled L2); ``clip_norm`` [None] rescale the gradient to at most this ℓ2 norm.

    Batching: ``batch_size`` [32] rows per step, None = the whole training set; ``epochs`` [10];
    ``shuffle`` [True] reshuffle every epoch; ``drop_last`` [False] drop a final partial batch;
    ``seed`` [0] every random draw derives from it; ``split_seed`` [None] when set, the
    initial parameters, the validation split and the evaluation subsample derive from it
    instead (a warm start with another seed keeps its source's rows); ``validation_split``
    [0.0] seeded fraction of rows held out (0 ≤ f < 1); ``standardize`` [False] z-score
    features with training-split stats; ``dtype`` ["float32"]; ``max_in_memory_bytes``
    [2 GiB] above this the epoch gather is chunked.

    Science: ``noise_scale`` [False] measure the gradient noise scale every epoch, exactly over
    every training row when they fit ``train``'s budget, else from ``noise_scale_samples``
    [1024] sampled rows (an adaptive ``batch_size_schedule`` measures it too);
    ``early_stopping`` [None]; ``lr_schedule`` [constant]; ``batch_size_schedule`` [constant]
    constant | grow | adaptive; ``lr_scaling`` ["none"] none | linear | sqrt scaling of the
    learning rate with the batch size from ``reference_batch_size`` [32]; ``evaluation``
    [None] the loss at log-spaced steps (``Evaluation``).
    """

    model: ModelKind = "linear"
    hidden_layers: tuple[int, ...] = ()
    activation: Activation = "relu"
    loss: LossName | None = None
    huber_delta: float = 1.0
    optimizer: OptimizerName = "sgd"
    learning_rate: float = 0.01
    momentum: float = 0.9
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    weight_decay: float = 0.0
    clip_norm: float | None = None
    batch_size: int | None = 32
    epochs: int = 10
    shuffle: bool = True
    drop_last: bool = False
    seed: int = 0
    split_seed: int | None = None
    validation_split: float = 0.0
    standardize: bool = False
    dtype: DType = "float32"
    noise_scale: bool = False
    noise_scale_samples: int = 1024
    early_stopping: EarlyStopping | None = None
    lr_schedule: LRSchedule = field(default_factory=LRSchedule)
    batch_size_schedule: BatchSizeSchedule = field(default_factory=BatchSizeSchedule)
    lr_scaling: LRScaling = "none"
    reference_batch_size: int = 32
    max_in_memory_bytes: int = 2 * GiB
    evaluation: Evaluation | None = None

    def __post_init__(self) -> None:
        check_choice("model", self.model, get_args(ModelKind))
        if isinstance(self.hidden_layers, list):
            object.__setattr__(self, "hidden_layers", tuple(self.hidden_layers))
        if not isinstance(self.hidden_layers, tuple):
            raise CoreConfigError("hidden_layers", "must be a list of layer widths")
        for i, width in enumerate(self.hidden_layers):
            check_int(f"hidden_layers[{i}]", width, minimum=1)
        if self.model == "mlp" and not self.hidden_layers:
            raise CoreConfigError("hidden_layers", "model 'mlp' needs at least one hidden layer")
        if self.model != "mlp" and self.hidden_layers:
            raise CoreConfigError(
                "hidden_layers", f"only model 'mlp' has hidden layers, not {self.model!r}"
            )
        check_choice("activation", self.activation, get_args(Activation))
        if self.loss is not None:
            check_choice("loss", self.loss, get_args(LossName))
            if self.model in ("logistic", "softmax"):
                raise CoreConfigError(
                    "loss",
                    f"model {self.model!r} always uses cross-entropy; leave loss null",
                )
        _real(self, "huber_delta", "huber_delta", minimum=0.0, min_open=True)
        check_choice("optimizer", self.optimizer, get_args(OptimizerName))
        _real(self, "learning_rate", "learning_rate", minimum=0.0, min_open=True)
        _real(self, "momentum", "momentum", minimum=0.0, maximum=1.0, max_open=True)
        _real(self, "beta1", "beta1", minimum=0.0, maximum=1.0, max_open=True)
        _real(self, "beta2", "beta2", minimum=0.0, maximum=1.0, max_open=True)
        _real(self, "eps", "eps", minimum=0.0, min_open=True)
        _real(self, "weight_decay", "weight_decay", minimum=0.0)
        if self.clip_norm is not None:
            _real(self, "clip_norm", "clip_norm", minimum=0.0, min_open=True)
        if self.batch_size is not None:
            check_int("batch_size", self.batch_size, minimum=1, null_means="the whole training set")
        check_int("epochs", self.epochs, minimum=1)
        for flag in ("shuffle", "drop_last", "standardize", "noise_scale"):
            if not isinstance(getattr(self, flag), bool):
                raise CoreConfigError(flag, f"must be true or false; got {getattr(self, flag)!r}")
        check_int("seed", self.seed, minimum=0)
        if self.split_seed is not None:
            check_int("split_seed", self.split_seed, minimum=0)
        _real(self, "validation_split", "validation_split", minimum=0.0, maximum=1.0, max_open=True)
        check_choice("dtype", self.dtype, get_args(DType))
        check_int("noise_scale_samples", self.noise_scale_samples, minimum=2)
        if self.early_stopping is not None and not isinstance(self.early_stopping, EarlyStopping):
            raise CoreConfigError("early_stopping", "must be an EarlyStopping or null")
        if not isinstance(self.lr_schedule, LRSchedule):
            raise CoreConfigError("lr_schedule", "must be an LRSchedule")
        if not isinstance(self.batch_size_schedule, BatchSizeSchedule):
            raise CoreConfigError("batch_size_schedule", "must be a BatchSizeSchedule")
        check_choice("lr_scaling", self.lr_scaling, get_args(LRScaling))
        check_int("reference_batch_size", self.reference_batch_size, minimum=1)
        check_int("max_in_memory_bytes", self.max_in_memory_bytes, minimum=1)
        if self.evaluation is not None and not isinstance(self.evaluation, Evaluation):
            raise CoreConfigError("evaluation", "must be an Evaluation or null")

    @property
    def data_seed(self) -> int:
        """The seed of the initial parameters, the validation split and the evaluation rows."""
        return self.seed if self.split_seed is None else self.split_seed

    @property
    def measures_noise_scale(self) -> bool:
        """Whether every epoch measures the noise scale (asked for, or the adaptive batch)."""
        return self.noise_scale or self.batch_size_schedule.kind == "adaptive"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict: nested dataclasses as dicts, ``hidden_layers`` as a list."""
        out = dataclasses.asdict(self)
        out["hidden_layers"] = list(self.hidden_layers)
        # Fields only some configs use are left out at their defaults, so every other
        # config reads as it did before they existed.
        if self.split_seed is None:
            del out["split_seed"]
        schedule = out["batch_size_schedule"]
        if self.batch_size_schedule.kind == "warmup":
            schedule["points"] = [list(point) for point in self.batch_size_schedule.points]
        else:
            del schedule["points"], schedule["probe_id"]
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainConfig:
        """Build from ``to_dict()`` output (or a job's JSON); missing keys take their defaults.

        Raises ``CoreConfigError`` naming an unknown key (``"optimiser: unknown field"``).
        """
        if not isinstance(data, Mapping):
            raise CoreConfigError("config", "must be an object")
        kwargs = dict(_known_fields(cls, data, prefix=""))
        nested: dict[str, type[Any]] = {
            "early_stopping": EarlyStopping,
            "lr_schedule": LRSchedule,
            "batch_size_schedule": BatchSizeSchedule,
            "evaluation": Evaluation,
        }
        for name, nested_cls in nested.items():
            value = kwargs.get(name)
            if value is None or isinstance(value, nested_cls):
                continue
            if not isinstance(value, Mapping):
                raise CoreConfigError(name, "must be an object")
            kwargs[name] = _build_nested(nested_cls, value, prefix=name)
        if isinstance(kwargs.get("hidden_layers"), list):
            kwargs["hidden_layers"] = tuple(kwargs["hidden_layers"])
        return cls(**kwargs)


def _known_fields(cls: type[Any], data: Mapping[str, Any], *, prefix: str) -> dict[str, Any]:
    names = {f.name for f in dataclasses.fields(cls)}
    for key in data:
        if key not in names:
            raise CoreConfigError(f"{prefix}{key}", "unknown field")
    return dict(data)


def _build_nested(cls: type[Any], data: Mapping[str, Any], *, prefix: str) -> Any:
    kwargs = _known_fields(cls, data, prefix=f"{prefix}.")
    try:
        return cls(**kwargs)
    except CoreConfigError as exc:
        if exc.field.startswith(f"{prefix}."):
            raise
        raise CoreConfigError(f"{prefix}.{exc.field}", exc.message) from exc


def split_sizes(n_rows: int, validation_split: float) -> tuple[int, int]:
    """``(n_train, n_val)`` for ``n_rows`` rows: ``n_val = round(n_rows · validation_split)``.

    Raises ``CoreConfigError`` on ``validation_split`` when a split is asked for but leaves
    no validation row or no training row.
    """
    if validation_split <= 0.0:
        return n_rows, 0
    n_val = math.floor(n_rows * validation_split + 0.5)
    if n_val < 1:
        raise CoreConfigError(
            "validation_split",
            f"{validation_split} of {n_rows} rows leaves no validation row; raise it or set 0",
        )
    if n_rows - n_val < 1:
        raise CoreConfigError(
            "validation_split", f"{validation_split} of {n_rows} rows leaves no training row"
        )
    return n_rows - n_val, n_val


def effective_task(config: TrainConfig, data_task: Task) -> Task:
    """The task the model trains for, given the target's (see ``check_config_for_dataset``)."""
    if config.model == "linear":
        if data_task != "regression" and config.loss is None:
            raise CoreConfigError(
                "model",
                f"'linear' is for regression, and the target is {data_task}: use 'logistic' or "
                "'softmax', or set loss to 'mse' or 'huber' to fit the labels as numbers",
            )
        return "regression"
    if config.model == "logistic":
        if data_task != "binary":
            what = "a regression target" if data_task == "regression" else "more than two classes"
            hint = "" if data_task == "regression" else "; use 'softmax'"
            raise CoreConfigError("model", f"'logistic' needs two classes, not {what}{hint}")
        return "binary"
    if config.model == "softmax":
        if data_task == "regression":
            raise CoreConfigError("model", "'softmax' needs class labels, not a regression target")
        return "multiclass"
    # mlp: the head follows the target, unless an explicit regression loss asks for numbers.
    if config.loss is not None:
        return "regression"
    return data_task


def check_config_for_dataset(
    config: TrainConfig,
    *,
    n_rows: int,
    n_features: int,
    task: Task,
    n_classes: int | None,
    explicit_validation: bool = False,
) -> None:
    """Refuse, with ``CoreConfigError`` naming the field, a config that cannot run on this data.

    Rules (the model–target rules are ``effective_task``'s):

    - ``validation_split`` must leave ≥ 1 validation row and ≥ 1 training row;
    - ``batch_size`` ≤ the training rows (after the split); null means all of them;
    - ``logistic`` needs a binary target; ``softmax`` any classification target (2 classes
      included); ``linear`` a regression target — unless ``loss`` is set to mse/huber, which
      fits the labels as numbers; ``mlp`` takes its head from the target the same way;
    - early stopping on ``val_loss`` and evaluations on ``validation`` need a validation set
      (``explicit_validation`` says one will be passed); ``noise_scale`` and the adaptive batch
      size need ≥ 2 training rows; classification needs ≥ 2 classes.
    """
    if n_rows < 1:
        raise CoreConfigError("dataset", "has no rows")
    if n_features < 1:
        raise CoreConfigError("dataset", "has no feature columns")
    if explicit_validation and config.validation_split > 0.0:
        raise CoreConfigError(
            "validation_split", "set either validation_split or an explicit validation set"
        )
    n_train, _ = split_sizes(n_rows, config.validation_split)
    if config.batch_size is not None and config.batch_size > n_train:
        split = (
            f" after holding out {config.validation_split} for validation"
            if config.validation_split > 0.0
            else ""
        )
        raise CoreConfigError(
            "batch_size",
            f"{config.batch_size} is larger than the {n_train} training rows{split}; "
            "lower it or set null for the whole training set",
        )
    if task != "regression" and (n_classes is None or n_classes < 2):
        raise CoreConfigError("dataset", f"a {task} target needs at least 2 classes")
    if task == "binary" and n_classes != 2:
        raise CoreConfigError("dataset", f"a binary target has 2 classes, not {n_classes}")
    effective_task(config, task)
    es = config.early_stopping
    if (
        es is not None
        and es.monitor == "val_loss"
        and not (explicit_validation or config.validation_split > 0.0)
    ):
        raise CoreConfigError(
            "early_stopping.monitor",
            "'val_loss' needs a validation set: set validation_split > 0 or monitor 'train_loss'",
        )
    has_validation = explicit_validation or config.validation_split > 0.0
    if (
        config.evaluation is not None
        and config.evaluation.on == "validation"
        and not has_validation
    ):
        raise CoreConfigError(
            "evaluation.on",
            "'validation' needs a validation set: set validation_split > 0 or evaluate on 'train'",
        )
    if config.noise_scale and n_train < 2:
        raise CoreConfigError("noise_scale", "needs at least 2 training rows")
    if config.batch_size_schedule.kind == "adaptive" and n_train < 2:
        raise CoreConfigError(
            "batch_size_schedule.kind",
            "'adaptive' measures the noise scale, which needs at least 2 training rows",
        )
