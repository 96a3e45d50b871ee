"""Evaluations on the log-spaced step schedule: the schedule, the values, and that they change
nothing else."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from service.core import CoreConfigError, TrainConfig, Training, TrainingDiverged, train
from service.core.config import Evaluation, check_config_for_dataset
from service.core.schedules import log_spaced_steps


def noisy_regression(n: int = 100, d: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    return X, X @ rng.normal(size=d) + 0.3 * rng.normal(size=n) + 1.0


def test_log_spaced_steps_are_distinct_rounded_powers() -> None:
    # 10^(k/8) for k = 0 … 16, rounded half up, duplicates once
    assert log_spaced_steps(8, 0, 100) == [1, 2, 3, 4, 6, 7, 10, 13, 18, 24, 32, 42, 56, 75, 100]
    assert log_spaced_steps(1, 0, 10**6) == [1, 10, 100, 1000, 10**4, 10**5, 10**6]
    assert log_spaced_steps(3, 0, 1000) == [1, 2, 5, 10, 22, 46, 100, 215, 464, 1000]
    # a window of the same schedule: a pure function of the step
    assert log_spaced_steps(8, 13, 25) == [18, 24]
    assert log_spaced_steps(8, 999, 1400) == [1000, 1334]
    assert log_spaced_steps(8, 10, 10) == []
    long = log_spaced_steps(8, 0, 10**6)
    assert len(long) == len(set(long))
    assert long == sorted(long)
    assert sum(1 for s in long if 10**5 < s <= 10**6) == 8  # per_decade per decade


def test_log_spaced_steps_refuse_a_bad_density() -> None:
    with pytest.raises(CoreConfigError, match=r"^per_decade: must be an integer ≥ 1"):
        log_spaced_steps(0, 0, 10)


@pytest.mark.parametrize(
    "fields",
    [{}, {"optimizer": "momentum"}, {"max_in_memory_bytes": 1500}],
    ids=["fast-path", "general-step", "chunked"],
)
def test_evaluation_steps_and_samples_for_a_run(fields: dict[str, object]) -> None:
    X, y = noisy_regression(100)
    config = TrainConfig(
        batch_size=8, epochs=3, learning_rate=0.01, evaluation=Evaluation(), **fields
    )
    records = list(train(X, y, config))
    # 13 steps an epoch (12 of 8 rows, then 4): log steps inside each epoch, then its end
    steps = [[e.step for e in r.evaluations] for r in records]
    assert steps == [[0, 1, 2, 3, 4, 6, 7, 10, 13], [18, 24, 26], [32, 39]]
    samples = [[e.samples for e in r.evaluations] for r in records]
    assert samples == [[0, 8, 16, 24, 32, 48, 56, 80, 100], [140, 188, 200], [248, 300]]
    assert [r.evaluations[-1].step for r in records] == [r.total_steps for r in records]


def test_step_zero_is_the_loss_at_the_initial_parameters_and_the_end_the_final_one() -> None:
    X, y = noisy_regression(120)
    config = TrainConfig(batch_size=16, epochs=2, dtype="float64", evaluation=Evaluation())
    training = train(X, y, config)
    records = list(training)
    # linear models start at θ = 0: J(0) = mean(y²) over the (whole) training set
    assert records[0].evaluations[0].loss == pytest.approx(float(np.mean(y**2)), rel=1e-12)
    final = float(np.mean((training.model.predict(X) - y) ** 2))
    assert records[-1].evaluations[-1].loss == pytest.approx(final, rel=1e-12)


def test_evaluation_on_validation_matches_the_validation_loss_at_epoch_ends() -> None:
    X, y = noisy_regression(200)
    config = TrainConfig(
        batch_size=16,
        epochs=3,
        dtype="float64",
        validation_split=0.25,
        evaluation=Evaluation(on="validation"),
    )
    records = list(train(X, y, config))
    for record in records:
        assert record.val_loss is not None
        assert record.evaluations[-1].loss == pytest.approx(record.val_loss, rel=1e-12)


def test_the_subsample_is_seeded_and_at_most_max_rows() -> None:
    X, y = noisy_regression(300)
    config = TrainConfig(
        batch_size=300, epochs=1, dtype="float64", evaluation=Evaluation(max_rows=50)
    )
    training = Training(X, y, config)
    first = next(iter(training)).evaluations[0].loss
    assert next(iter(Training(X, y, config))).evaluations[0].loss == first
    # J(0) = mean(y²) over some 50 training rows: not the whole set's, and one of its subsets
    assert first != pytest.approx(float(np.mean(y**2)), rel=1e-9)
    assert training._evaluation_set is not None
    picked = training._evaluation_set.rows
    assert picked.shape == (50,)
    assert np.all(np.diff(picked) > 0)
    assert first == pytest.approx(float(np.mean(y[picked] ** 2)), rel=1e-12)


@pytest.mark.parametrize(
    "fields",
    [
        {"batch_size": 8},  # the fused small-batch step
        {"batch_size": 100},  # the scaled-gradient step
        {"batch_size": 8, "optimizer": "adam"},  # the general step
        {"batch_size": 8, "model": "logistic"},
        {"batch_size": 8, "max_in_memory_bytes": 1500},  # chunked
    ],
    ids=["fused", "scaled", "general", "logistic-fused", "chunked"],
)
def test_turning_evaluations_on_changes_no_training_bit(fields: dict[str, object]) -> None:
    X, y = noisy_regression(400)
    if fields.get("model") == "logistic":
        y = (y > 1.0).astype(np.float64)
    base = TrainConfig(epochs=3, learning_rate=0.02, noise_scale=True, **fields)  # type: ignore[arg-type]
    on = dataclasses.replace(base, evaluation=Evaluation(max_rows=64))
    plain, evaluated = train(X, y, base), train(X, y, on)
    for a, b in zip(plain, evaluated, strict=True):
        assert a.step_losses.tobytes() == b.step_losses.tobytes()
        assert a.noise_scale == b.noise_scale
        assert (a.train_loss, a.samples_seen) == (b.train_loss, b.samples_seen)
        assert a.evaluations == ()
        assert len(b.evaluations) >= 1
    assert plain.model.theta.tobytes() == evaluated.model.theta.tobytes()


def test_evaluations_are_in_the_record_dict() -> None:
    X, y = noisy_regression(50)
    config = TrainConfig(batch_size=25, epochs=1, evaluation=Evaluation(per_decade=1))
    record = next(iter(train(X, y, config)))
    assert [e["step"] for e in record.to_dict()["evaluations"]] == [0, 1, 2]
    assert set(record.to_dict()["evaluations"][0]) == {"step", "samples", "loss"}
    off = next(iter(train(X, y, TrainConfig(batch_size=25, epochs=1))))
    assert off.to_dict()["evaluations"] == []


def test_a_non_finite_evaluation_loss_is_a_divergence() -> None:
    X, y = noisy_regression(40)
    config = TrainConfig(batch_size=8, epochs=2, evaluation=Evaluation())  # float32
    with pytest.raises(TrainingDiverged) as info:
        list(train(X, y * 1e20, config))  # J(0) = mean(y²) overflows float32
    assert (info.value.epoch, info.value.step) == (1, 0)
    assert "evaluation loss at the initial parameters is inf" in str(info.value)
    assert math.isinf(info.value.loss)


def test_evaluation_config_is_validated_and_round_trips() -> None:
    config = TrainConfig(evaluation=Evaluation(on="validation", per_decade=4, max_rows=100))
    assert TrainConfig.from_dict(config.to_dict()) == config
    assert config.to_dict()["evaluation"] == {"on": "validation", "per_decade": 4, "max_rows": 100}
    assert TrainConfig.from_dict({}).evaluation is None
    for data, message in [
        ({"on": "test"}, r"^evaluation\.on: must be one of 'train', 'validation'"),
        ({"per_decade": 0}, r"^evaluation\.per_decade: must be an integer ≥ 1"),
        ({"per_decade": 1001}, r"^evaluation\.per_decade: must be ≤ 1000"),
        ({"max_rows": 0}, r"^evaluation\.max_rows: must be an integer ≥ 1"),
        ({"every": 3}, r"^evaluation\.every: unknown field"),
    ]:
        with pytest.raises(CoreConfigError, match=message):
            TrainConfig.from_dict({"evaluation": data})
    with pytest.raises(CoreConfigError, match=r"^evaluation: must be an Evaluation or null"):
        TrainConfig(evaluation="train")  # type: ignore[arg-type]


def test_evaluating_on_validation_needs_a_validation_set() -> None:
    config = TrainConfig(evaluation=Evaluation(on="validation"))
    with pytest.raises(CoreConfigError, match=r"^evaluation\.on: 'validation' needs a valid"):
        check_config_for_dataset(
            config, n_rows=100, n_features=2, task="regression", n_classes=None
        )
    check_config_for_dataset(
        config,
        n_rows=100,
        n_features=2,
        task="regression",
        n_classes=None,
        explicit_validation=True,
    )
