"""TrainConfig validation, JSON round trip, and the checks against a dataset's metadata."""

from __future__ import annotations

import json
from typing import Any

import pytest

from service.core import (
    BatchSizeSchedule,
    CoreConfigError,
    EarlyStopping,
    LRSchedule,
    TrainConfig,
    check_config_for_dataset,
    effective_task,
    split_sizes,
)


def test_defaults_are_the_documented_ones() -> None:
    c = TrainConfig()
    assert (c.model, c.optimizer, c.learning_rate, c.batch_size, c.epochs) == (
        "linear",
        "sgd",
        0.01,
        32,
        10,
    )
    assert c.max_in_memory_bytes == 2 * 1024**3
    assert c.lr_schedule == LRSchedule()
    assert c.batch_size_schedule == BatchSizeSchedule()


def test_to_dict_from_dict_round_trip_is_exact_through_json() -> None:
    c = TrainConfig(
        model="mlp",
        hidden_layers=(8, 4),
        activation="tanh",
        loss="huber",
        huber_delta=0.5,
        optimizer="adam",
        learning_rate=0.003,
        clip_norm=2.5,
        batch_size=None,
        epochs=7,
        seed=123,
        validation_split=0.25,
        standardize=True,
        dtype="float64",
        noise_scale=True,
        early_stopping=EarlyStopping(monitor="train_loss", patience=3, min_delta=1e-4),
        lr_schedule=LRSchedule(kind="cosine", min_lr=1e-5, warmup_epochs=2),
        batch_size_schedule=BatchSizeSchedule(kind="grow", factor=4, max_batch_size=256),
        lr_scaling="sqrt",
        reference_batch_size=64,
    )
    data = json.loads(json.dumps(c.to_dict()))
    assert data["hidden_layers"] == [8, 4]
    assert data["lr_schedule"]["kind"] == "cosine"
    back = TrainConfig.from_dict(data)
    assert back == c
    assert back.to_dict() == c.to_dict()


def test_integers_for_floats_are_stored_as_floats_so_round_trips_stay_equal() -> None:
    c = TrainConfig(learning_rate=1, validation_split=0)
    assert isinstance(c.learning_rate, float)
    assert TrainConfig.from_dict(json.loads(json.dumps(c.to_dict()))) == c


@pytest.mark.parametrize(
    ("kwargs", "field", "phrase"),
    [
        ({"batch_size": 0}, "batch_size", "or null for the whole training set"),
        ({"batch_size": True}, "batch_size", "integer"),
        ({"batch_size": 2.5}, "batch_size", "integer"),
        ({"learning_rate": 0.0}, "learning_rate", "> 0.0"),
        ({"learning_rate": float("nan")}, "learning_rate", "finite"),
        ({"model": "tree"}, "model", "'linear'"),
        ({"hidden_layers": (4,)}, "hidden_layers", "only model 'mlp'"),
        ({"model": "mlp"}, "hidden_layers", "at least one"),
        ({"model": "mlp", "hidden_layers": (4, 0)}, "hidden_layers[1]", "≥ 1"),
        ({"model": "logistic", "loss": "mse"}, "loss", "cross-entropy"),
        ({"loss": "hinge"}, "loss", "'mse'"),
        ({"optimizer": "rmsprop"}, "optimizer", "'adam'"),
        ({"momentum": 1.0}, "momentum", "< 1.0"),
        ({"clip_norm": 0.0}, "clip_norm", "> 0.0"),
        ({"epochs": 0}, "epochs", "≥ 1"),
        ({"seed": -1}, "seed", "≥ 0"),
        ({"validation_split": 1.0}, "validation_split", "< 1.0"),
        ({"dtype": "float16"}, "dtype", "'float32'"),
        ({"shuffle": "yes"}, "shuffle", "true or false"),
        ({"noise_scale_samples": 1}, "noise_scale_samples", "≥ 2"),
        ({"lr_scaling": "cubic"}, "lr_scaling", "'sqrt'"),
        ({"reference_batch_size": 0}, "reference_batch_size", "≥ 1"),
        ({"max_in_memory_bytes": 0}, "max_in_memory_bytes", "≥ 1"),
        ({"huber_delta": -1.0}, "huber_delta", "> 0.0"),
        ({"lr_schedule": "cosine"}, "lr_schedule", "LRSchedule"),
    ],
)
def test_bad_values_name_their_field(kwargs: dict[str, Any], field: str, phrase: str) -> None:
    with pytest.raises(CoreConfigError) as info:
        TrainConfig(**kwargs)
    assert info.value.field == field
    assert phrase in info.value.message
    assert str(info.value).startswith(f"{field}: ")


def test_early_stopping_fields_are_prefixed() -> None:
    with pytest.raises(CoreConfigError) as info:
        EarlyStopping(patience=0)
    assert info.value.field == "early_stopping.patience"
    with pytest.raises(CoreConfigError, match=r"^early_stopping.monitor: "):
        EarlyStopping(monitor="accuracy")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"optimiser": "adam"}, "optimiser"),
        ({"lr_schedule": {"kind": "step", "decay": 0.5}}, "lr_schedule.decay"),
        ({"lr_schedule": {"kind": "step", "gamma": 2.0}}, "lr_schedule.gamma"),
        ({"batch_size_schedule": {"kind": "grow", "factor": 1}}, "batch_size_schedule.factor"),
        ({"early_stopping": {"patience": -1}}, "early_stopping.patience"),
        ({"early_stopping": 3}, "early_stopping"),
    ],
)
def test_from_dict_names_unknown_and_bad_nested_fields(data: dict[str, Any], field: str) -> None:
    with pytest.raises(CoreConfigError) as info:
        TrainConfig.from_dict(data)
    assert info.value.field == field


def test_from_dict_refuses_a_non_object() -> None:
    with pytest.raises(CoreConfigError, match=r"^config: "):
        TrainConfig.from_dict([1, 2])  # type: ignore[arg-type]


def test_split_sizes_rounds_the_validation_rows() -> None:
    assert split_sizes(100, 0.0) == (100, 0)
    assert split_sizes(100, 0.2) == (80, 20)
    assert split_sizes(10, 0.25) == (7, 3)  # 2.5 rounds half up
    with pytest.raises(CoreConfigError, match=r"^validation_split: .*no validation row"):
        split_sizes(3, 0.1)
    with pytest.raises(CoreConfigError, match=r"^validation_split: .*no training row"):
        split_sizes(1, 0.9)


def _check(config: TrainConfig, **overrides: Any) -> None:
    meta: dict[str, Any] = {"n_rows": 100, "n_features": 3, "task": "regression", "n_classes": None}
    meta.update(overrides)
    check_config_for_dataset(config, **meta)


def test_check_accepts_what_runs() -> None:
    _check(TrainConfig(batch_size=100))
    _check(TrainConfig(batch_size=80, validation_split=0.2))
    _check(TrainConfig(batch_size=None, validation_split=0.2))
    _check(TrainConfig(model="logistic"), task="binary", n_classes=2)
    _check(TrainConfig(model="softmax"), task="binary", n_classes=2)
    _check(TrainConfig(model="softmax"), task="multiclass", n_classes=5)
    _check(TrainConfig(model="linear", loss="mse"), task="binary", n_classes=2)
    _check(TrainConfig(model="mlp", hidden_layers=(3,)), task="multiclass", n_classes=4)
    _check(TrainConfig(early_stopping=EarlyStopping()), explicit_validation=True)


@pytest.mark.parametrize(
    ("config", "overrides", "field", "phrase"),
    [
        (TrainConfig(batch_size=81, validation_split=0.2), {}, "batch_size", "80 training rows"),
        (TrainConfig(batch_size=101), {}, "batch_size", "null for the whole training set"),
        (TrainConfig(model="logistic"), {}, "model", "regression target"),
        (
            TrainConfig(model="logistic"),
            {"task": "multiclass", "n_classes": 3},
            "model",
            "use 'softmax'",
        ),
        (TrainConfig(model="softmax"), {}, "model", "regression target"),
        (TrainConfig(), {"task": "binary", "n_classes": 2}, "model", "set loss to 'mse'"),
        (TrainConfig(validation_split=0.001), {}, "validation_split", "no validation row"),
        (
            TrainConfig(early_stopping=EarlyStopping()),
            {},
            "early_stopping.monitor",
            "validation",
        ),
        (TrainConfig(validation_split=0.2), {"explicit_validation": True}, "validation_split", ""),
        (TrainConfig(noise_scale=True, batch_size=1), {"n_rows": 1}, "noise_scale", "2 training"),
        (TrainConfig(), {"n_rows": 0}, "dataset", "no rows"),
        (TrainConfig(), {"n_features": 0}, "dataset", "no feature"),
        (TrainConfig(model="softmax"), {"task": "multiclass", "n_classes": 1}, "dataset", "2"),
        (TrainConfig(model="logistic"), {"task": "binary", "n_classes": 3}, "dataset", "not 3"),
    ],
)
def test_check_refuses_what_cannot_run(
    config: TrainConfig, overrides: dict[str, Any], field: str, phrase: str
) -> None:
    with pytest.raises(CoreConfigError) as info:
        _check(config, **overrides)
    assert info.value.field == field
    assert phrase in info.value.message


@pytest.mark.parametrize(
    ("model", "loss", "data_task", "expected"),
    [
        ("linear", None, "regression", "regression"),
        ("linear", "huber", "multiclass", "regression"),
        ("logistic", None, "binary", "binary"),
        ("softmax", None, "binary", "multiclass"),
        ("softmax", None, "multiclass", "multiclass"),
        ("mlp", None, "binary", "binary"),
        ("mlp", None, "multiclass", "multiclass"),
        ("mlp", "mse", "binary", "regression"),
    ],
)
def test_effective_task(model: str, loss: str | None, data_task: str, expected: str) -> None:
    hidden = (2,) if model == "mlp" else ()
    config = TrainConfig(model=model, loss=loss, hidden_layers=hidden)  # type: ignore[arg-type]
    assert effective_task(config, data_task) == expected  # type: ignore[arg-type]
