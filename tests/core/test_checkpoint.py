"""Checkpoint bytes: exact round trip, no pickle, clear errors on foreign bytes."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

from service.core import Checkpoint, CoreConfigError, EarlyStopping, TrainConfig, train


def _checkpoint() -> Checkpoint:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(120, 3))
    y = np.array([3, 10, 20])[rng.integers(0, 3, size=120)]
    config = TrainConfig(
        model="softmax",
        optimizer="adam",
        epochs=3,
        standardize=True,
        validation_split=0.25,
        early_stopping=EarlyStopping(patience=5),
    )
    training = train(X, y, config)
    for record in training:
        if record.epoch == 2:
            break
    return training.checkpoint()


def test_round_trip_keeps_every_field_exactly() -> None:
    original = _checkpoint()
    back = Checkpoint.from_bytes(original.to_bytes())
    assert back.config == original.config
    assert back.epoch == original.epoch == 2
    assert back.theta.tobytes() == original.theta.tobytes()
    assert back.theta.dtype == np.float32
    assert set(back.optimizer_state) == {"m", "v", "step"}
    for key, value in original.optimizer_state.items():
        assert back.optimizer_state[key].tobytes() == value.tobytes()
    assert back.rng_states == original.rng_states
    assert back.classes is not None
    assert back.classes.tolist() == [3, 10, 20]
    assert back.mean is not None
    assert original.mean is not None
    assert back.mean.tobytes() == original.mean.tobytes()
    assert back.best_theta is not None
    assert original.best_theta is not None
    assert back.best_theta.tobytes() == original.best_theta.tobytes()
    for name in (
        "task",
        "n_features",
        "samples_seen",
        "total_steps",
        "divergence_reference",
        "best_value",
        "best_epoch",
        "epochs_without_improvement",
        "finished",
    ):
        assert getattr(back, name) == getattr(original, name), name
    assert back.samples_seen == 2 * 90


def test_bytes_are_a_plain_npz_without_pickle() -> None:
    data = _checkpoint().to_bytes()
    with np.load(io.BytesIO(data), allow_pickle=False) as archive:
        assert {"header", "theta", "optimizer.m", "optimizer.v", "optimizer.step"} <= set(
            archive.files
        )
        assert all(archive[name].dtype != object for name in archive.files)


@pytest.mark.parametrize("data", [b"", b"not a zip", b"PK\x03\x04garbage"])
def test_garbage_bytes_are_refused(data: bytes) -> None:
    with pytest.raises(CoreConfigError, match=r"^checkpoint: unreadable"):
        Checkpoint.from_bytes(data)


def test_a_fitted_model_file_is_not_a_checkpoint() -> None:
    rng = np.random.default_rng(1)
    X = rng.normal(size=(40, 2))
    training = train(X, X[:, 0], TrainConfig(epochs=1))
    list(training)
    with pytest.raises(CoreConfigError, match=r"^checkpoint: not a batchwise.checkpoint"):
        Checkpoint.from_bytes(training.model.to_npz_bytes())


def test_a_checkpoint_missing_an_array_is_refused() -> None:
    data = _checkpoint().to_bytes()
    with np.load(io.BytesIO(data), allow_pickle=False) as archive:
        arrays = {name: archive[name] for name in archive.files if name != "theta"}
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    with pytest.raises(CoreConfigError, match=r"^checkpoint: incomplete"):
        Checkpoint.from_bytes(buffer.getvalue())


def test_a_checkpoint_from_before_the_adaptive_batch_size_still_loads() -> None:
    original = _checkpoint()
    assert (original.batch_size, original.batch_size_reason) == (None, None)  # not adaptive
    archive = dict(np.load(io.BytesIO(original.to_bytes())))
    header = json.loads(archive["header"].tobytes().decode())
    del header["batch_size"], header["batch_size_reason"]
    archive["header"] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
    buffer = io.BytesIO()
    np.savez(buffer, **archive)
    back = Checkpoint.from_bytes(buffer.getvalue())
    assert (back.batch_size, back.batch_size_reason) == (None, None)
    assert back.theta.tobytes() == original.theta.tobytes()
