"""FittedModel: predictions in the data's labels, serialisation, input checks."""

from __future__ import annotations

import json

import numpy as np
import pytest

from service.core import CoreConfigError, FittedModel, TrainConfig, train


def _fitted(task: str) -> tuple[FittedModel, np.ndarray]:
    rng = np.random.default_rng(0)
    X = rng.normal(loc=5.0, scale=3.0, size=(150, 3))
    if task == "regression":
        y = X @ np.array([1.0, -2.0, 0.5])
        config = TrainConfig(standardize=True, epochs=5)
    elif task == "binary":
        y = np.where(X[:, 0] > 5.0, 7, -1)
        config = TrainConfig(model="logistic", standardize=True, epochs=5)
    else:
        y = np.array([3, 10, 20])[np.digitize(X[:, 1], [3.0, 7.0])]
        config = TrainConfig(
            model="mlp", hidden_layers=(4,), standardize=True, epochs=5, dtype="float64"
        )
    training = train(X, y, config)
    list(training)
    return training.model, X


@pytest.mark.parametrize("task", ["regression", "binary", "multiclass"])
def test_npz_round_trip_predicts_the_same(task: str) -> None:
    model, X = _fitted(task)
    back = FittedModel.from_npz_bytes(model.to_npz_bytes())
    assert back.config == model.config
    assert back.task == model.task
    assert back.theta.tobytes() == model.theta.tobytes()
    assert np.array_equal(back.predict(X), model.predict(X))
    if task != "regression":
        assert np.array_equal(back.predict_proba(X), model.predict_proba(X))


def test_predict_standardises_like_training_and_leaves_input_alone() -> None:
    model, X = _fitted("regression")
    X.setflags(write=False)
    params = model.params()
    assert model.mean is not None
    assert model.std is not None
    by_hand = ((X - model.mean) / model.std) @ params["W"] + params["b"]
    np.testing.assert_allclose(model.predict(X), by_hand, rtol=1e-5)


def test_labels_come_back_as_the_datas_own() -> None:
    binary, X = _fitted("binary")
    assert set(np.unique(binary.predict(X)).tolist()) <= {-1, 7}
    proba = binary.predict_proba(X)
    assert proba.shape == (150, 2)
    assert np.array_equal(binary.predict(X), np.where(proba[:, 1] >= 0.5, 7, -1))
    multi, X = _fitted("multiclass")
    proba3 = multi.predict_proba(X)
    assert proba3.shape == (150, 3)
    np.testing.assert_allclose(proba3.sum(axis=1), 1.0, rtol=1e-12)
    assert np.array_equal(multi.predict(X), np.array([3, 10, 20])[np.argmax(proba3, axis=1)])


def test_to_dict_is_json_and_names_the_params() -> None:
    model, _ = _fitted("multiclass")
    data = json.loads(json.dumps(model.to_dict()))
    assert data["task"] == "multiclass"
    assert data["classes"] == [3, 10, 20]
    assert set(data["params"]) == {"W0", "b0", "W1", "b1"}
    assert np.array_equal(np.array(data["params"]["W0"]), model.params()["W0"])
    assert data["standardization"]["mean"] == model.mean.tolist()  # type: ignore[union-attr]
    assert TrainConfig.from_dict(data["config"]) == model.config


def test_wrong_row_width_names_the_expected_width() -> None:
    model, X = _fitted("regression")
    with pytest.raises(CoreConfigError, match=r"^X: rows must have 3 features \(columns\); got 2"):
        model.predict(X[:, :2])
    with pytest.raises(CoreConfigError, match=r"^X: rows must have 3 features"):
        model.predict(X[0])
    with pytest.raises(CoreConfigError, match=r"^X: must be numeric"):
        model.predict(np.array([["a", "b", "c"]]))


def test_predict_proba_needs_a_classifier() -> None:
    model, X = _fitted("regression")
    with pytest.raises(CoreConfigError, match=r"^model: predict_proba needs a classifier"):
        model.predict_proba(X)


def test_inconsistent_models_are_refused() -> None:
    config = TrainConfig()
    with pytest.raises(CoreConfigError, match=r"^theta: "):
        FittedModel(config=config, task="regression", n_features=3, theta=np.zeros(5))
    with pytest.raises(CoreConfigError, match=r"^classes: "):
        FittedModel(
            config=TrainConfig(model="softmax"), task="multiclass", n_features=2, theta=np.zeros(9)
        )
    with pytest.raises(CoreConfigError, match=r"^std: "):
        FittedModel(
            config=config, task="regression", n_features=2, theta=np.zeros(3), mean=np.zeros(2)
        )
    with pytest.raises(CoreConfigError, match=r"^model: "):
        FittedModel.from_npz_bytes(b"junk")
