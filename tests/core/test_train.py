"""The training loop: convergence, determinism, resume, stopping, divergence, memory, records."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from service.core import (
    BatchSizeSchedule,
    Checkpoint,
    CoreConfigError,
    EarlyStopping,
    EpochRecord,
    LRSchedule,
    TrainConfig,
    Training,
    TrainingDiverged,
    train,
)
from service.core.build import build_model
from service.core.config import Evaluation


def regression_data(n: int = 400, d: int = 5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Well-conditioned Gaussian X, noise-free y = X w + 0.5."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    w = rng.normal(size=d)
    return X, X @ w + 0.5


def blobs(n: int, k: int, d: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """k well-separated Gaussian clusters; labels 0..k-1."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=6.0, size=(k, d))
    labels = rng.integers(0, k, size=n)
    return centres[labels] + rng.normal(size=(n, d)), labels


def run(training: Training) -> list[EpochRecord]:
    return list(training)


def collect(training: Training, into: list[EpochRecord]) -> None:
    """Append records as they come (so those before an exception are kept)."""
    into.extend(training)


def lstsq(X: np.ndarray, y: np.ndarray) -> np.ndarray:
    A = np.column_stack([X, np.ones(X.shape[0])])
    solution: np.ndarray = np.linalg.lstsq(A, y, rcond=None)[0]
    return solution


def history_bytes(records: list[EpochRecord]) -> bytes:
    """Every field but the timings, as exact bytes."""
    out = b""
    for r in records:
        fields = r.to_dict()
        del fields["wall_time_s"], fields["samples_per_s"]
        out += json.dumps(fields).encode() + r.step_losses.tobytes()
    return out


@pytest.mark.parametrize("batch_size", [None, 16])
def test_linear_regression_converges_to_least_squares(batch_size: int | None) -> None:
    X, y = regression_data()
    config = TrainConfig(
        batch_size=batch_size,
        learning_rate=0.1 if batch_size is None else 0.02,
        epochs=300 if batch_size is None else 60,
        dtype="float64",
    )
    training = train(X, y, config)
    records = run(training)
    assert training.stop_reason == "completed"
    assert len(records) == config.epochs
    theta = training.model.theta
    expected = lstsq(X, y)
    assert np.linalg.norm(theta - expected) / np.linalg.norm(expected) < 1e-3
    params = training.model.params()
    assert np.array_equal(np.concatenate([params["W"], params["b"]]), theta)


def test_logistic_regression_separates_with_the_datas_own_labels() -> None:
    X, labels = blobs(600, 2, seed=1)
    y = np.where(labels == 1, 7, -1)
    training = train(X, y, TrainConfig(model="logistic", epochs=20, validation_split=0.25))
    records = run(training)
    assert records[-1].val_accuracy is not None
    assert records[-1].val_accuracy > 0.95
    assert records[-1].val_rmse is None
    predicted = training.model.predict(X)
    assert set(np.unique(predicted).tolist()) == {-1, 7}
    assert np.mean(predicted == y) > 0.95
    proba = training.model.predict_proba(X[:5])
    assert proba.shape == (5, 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-6)


def test_softmax_separates_with_the_datas_own_labels() -> None:
    X, labels = blobs(900, 3, seed=2)
    y = np.array([3, 10, 20])[labels]
    training = train(X, y, TrainConfig(model="softmax", epochs=20, validation_split=0.2))
    records = run(training)
    assert records[-1].val_accuracy is not None
    assert records[-1].val_accuracy > 0.95
    predicted = training.model.predict(X)
    assert set(np.unique(predicted).tolist()) == {3, 10, 20}
    assert np.mean(predicted == y) > 0.95
    assert training.model.classes is not None
    assert training.model.classes.tolist() == [3, 10, 20]


def _rich_config(**overrides: Any) -> TrainConfig:
    fields: dict[str, Any] = {
        "model": "mlp",
        "hidden_layers": (8,),
        "optimizer": "adam",
        "learning_rate": 0.01,
        "batch_size": 16,
        "epochs": 6,
        "validation_split": 0.2,
        "standardize": True,
        "noise_scale": True,
        "noise_scale_samples": 64,
        "batch_size_schedule": BatchSizeSchedule(kind="grow", factor=2, every_epochs=2),
        "lr_schedule": LRSchedule(kind="cosine", warmup_epochs=1),
        "seed": 11,
    }
    fields.update(overrides)
    return TrainConfig(**fields)


def test_same_seed_same_bytes_different_seed_different() -> None:
    X, y = regression_data(300, 4)
    a, b = train(X, y, _rich_config()), train(X, y, _rich_config())
    c = train(X, y, _rich_config(seed=12))
    ra, rb, rc = run(a), run(b), run(c)
    assert history_bytes(ra) == history_bytes(rb)
    assert a.model.theta.tobytes() == b.model.theta.tobytes()
    assert history_bytes(ra) != history_bytes(rc)
    assert a.model.theta.tobytes() != c.model.theta.tobytes()
    assert all(r.noise_scale is not None for r in ra)


def test_turning_noise_scale_on_does_not_change_the_training() -> None:
    X, y = regression_data(300, 4)
    with_noise = train(X, y, _rich_config(noise_scale=True))
    without = train(X, y, _rich_config(noise_scale=False))
    r1, r2 = run(with_noise), run(without)
    assert [r.step_losses.tobytes() for r in r1] == [r.step_losses.tobytes() for r in r2]
    assert with_noise.model.theta.tobytes() == without.model.theta.tobytes()
    assert all(r.noise_scale is None for r in r2)


_RESUME_SCRIPT = """
import sys
import numpy as np
from service.core import Checkpoint, Training

data = np.load(sys.argv[1])
with open(sys.argv[2], "rb") as f:
    checkpoint = Checkpoint.from_bytes(f.read())
training = Training(data["X"], data["y"], checkpoint.config, resume_from=checkpoint)
records = list(training)
np.savez(
    sys.argv[3],
    theta=training.model.theta,
    step_losses=np.concatenate([r.step_losses for r in records]),
    epochs=np.array([r.epoch for r in records]),
    history=np.frombuffer(sys.modules["__main__"].history(records), dtype=np.uint8),
)
"""


def _history_source() -> str:
    return (
        "import json\n"
        "def history(records):\n"
        "    out = b''\n"
        "    for r in records:\n"
        "        fields = r.to_dict()\n"
        "        del fields['wall_time_s'], fields['samples_per_s']\n"
        "        out += json.dumps(fields).encode() + r.step_losses.tobytes()\n"
        "    return out\n"
    )


@pytest.mark.parametrize(
    "config",
    [
        _rich_config(early_stopping=EarlyStopping(patience=50)),
        TrainConfig(
            model="softmax",
            optimizer="nesterov",
            batch_size=10,
            epochs=5,
            noise_scale=True,
            max_in_memory_bytes=2000,  # the chunked path
            seed=3,
        ),
        TrainConfig(
            batch_size=8,
            epochs=5,
            validation_split=0.2,
            standardize=True,
            batch_size_schedule=BatchSizeSchedule(kind="grow", factor=4, every_epochs=2),
            seed=7,
        ),
        TrainConfig(
            batch_size=8,
            epochs=5,
            learning_rate=0.005,
            lr_scaling="sqrt",
            reference_batch_size=8,
            batch_size_schedule=BatchSizeSchedule(kind="adaptive", max_batch_size=128),
            evaluation=Evaluation(max_rows=100, per_decade=4),
            seed=5,
        ),
    ],
    ids=[
        "mlp-adam-in-memory",
        "softmax-nesterov-chunked",
        "linear-sgd-fast-path-then-general",
        "adaptive-with-evaluations",
    ],
)
def test_resume_in_a_fresh_process_is_bit_identical(tmp_path: Path, config: TrainConfig) -> None:
    if config.model == "softmax":
        X, y = blobs(200, 3, seed=4)
    else:
        X, y = regression_data(300, 4)
    if config.batch_size_schedule.kind == "adaptive":  # noisy targets: a large noise scale
        y = y + np.random.default_rng(1).normal(size=y.shape[0])
    np.savez(tmp_path / "data.npz", X=X, y=y)

    full = train(X, y, config)
    full_records = run(full)
    interrupted = train(X, y, config)
    for record in interrupted:
        if record.epoch == 2:
            break
    checkpoint = interrupted.checkpoint()
    assert checkpoint.epoch == 2
    (tmp_path / "ckpt.bin").write_bytes(checkpoint.to_bytes())

    script = tmp_path / "resume.py"
    script.write_text(_history_source() + _RESUME_SCRIPT)
    subprocess.run(
        [
            sys.executable,
            str(script),
            str(tmp_path / "data.npz"),
            str(tmp_path / "ckpt.bin"),
            str(tmp_path / "out.npz"),
        ],
        check=True,
        capture_output=True,
    )
    out = np.load(tmp_path / "out.npz")
    later = full_records[2:]
    if config.batch_size_schedule.kind == "adaptive":  # it grew across the checkpoint
        assert [r.batch_size for r in full_records] == [8, 9, 11, 15, 20]
    assert out["epochs"].tolist() == [r.epoch for r in later]
    assert out["history"].tobytes() == history_bytes(later)
    assert out["theta"].tobytes() == full.model.theta.tobytes()


@pytest.mark.parametrize("optimizer", ["momentum", "sgd"], ids=["general-step", "sgd-fast-path"])
def test_should_stop_drops_the_partial_epoch_and_resumes_identically(optimizer: str) -> None:
    X, y = regression_data(200, 3)
    config = TrainConfig(batch_size=10, epochs=4, optimizer=optimizer, seed=5)
    calls = 0

    def stop_in_epoch_three() -> bool:
        nonlocal calls
        calls += 1
        return calls == 2 * 20 + 7  # epoch boundary checks: one before each epoch's steps

    training = train(X, y, config, should_stop=stop_in_epoch_three)
    records = run(training)
    assert [r.epoch for r in records] == [1, 2]
    assert training.stop_reason == "stopped"
    checkpoint = training.checkpoint()
    assert checkpoint.epoch == 2
    assert training.model.theta.tobytes() == checkpoint.theta.tobytes()

    full = train(X, y, config)
    full_records = run(full)
    resumed = train(X, y, config, resume_from=Checkpoint.from_bytes(checkpoint.to_bytes()))
    assert history_bytes(run(resumed)) == history_bytes(full_records[2:])
    assert resumed.model.theta.tobytes() == full.model.theta.tobytes()
    assert resumed.stop_reason == "completed"


def test_should_stop_before_the_first_epoch_trains_nothing() -> None:
    X, y = regression_data(50, 2)
    training = train(X, y, TrainConfig(), should_stop=lambda: True)
    assert run(training) == []
    assert training.stop_reason == "stopped"
    assert training.checkpoint().epoch == 0


def test_resuming_a_finished_run_yields_nothing() -> None:
    X, y = regression_data(50, 2)
    config = TrainConfig(epochs=2)
    done = train(X, y, config)
    run(done)
    again = train(X, y, config, resume_from=done.checkpoint())
    assert run(again) == []
    assert again.stop_reason == "completed"
    assert again.model.theta.tobytes() == done.model.theta.tobytes()


def test_resume_refuses_a_checkpoint_of_another_config() -> None:
    X, y = regression_data(50, 2)
    first = train(X, y, TrainConfig(epochs=2))
    run(first)
    with pytest.raises(CoreConfigError, match=r"^resume_from: .*different config"):
        train(X, y, TrainConfig(epochs=2, seed=1), resume_from=first.checkpoint())


def test_divergence_names_epoch_step_and_remedy() -> None:
    X, y = regression_data(200, 5)
    X = X * 30.0  # badly scaled features: lr 0.5 explodes
    config = TrainConfig(learning_rate=0.5, batch_size=20, epochs=5)
    training = train(X, y, config)
    seen: list[EpochRecord] = []
    with pytest.raises(TrainingDiverged) as info:
        collect(training, seen)
    err = info.value
    assert err.epoch == 1
    assert err.step >= 2
    assert f"epoch 1, step {err.step}" in str(err)
    assert "lower the learning rate (now 0.5) or set standardize" in str(err)
    # Within epoch 1 the reference is its first step's loss, which a tiny rate also reaches.
    (first,) = run(train(X, y, TrainConfig(learning_rate=1e-12, batch_size=20, epochs=1)))
    reference = float(first.step_losses[0])
    assert f"the loss {err.loss:.4g} is over 1e+06 × the loss of epoch 1's first step " in str(err)
    assert str(err).split("first step ")[1].startswith(f"({reference:.4g});")
    assert err.loss > 1e6 * reference
    assert seen == []
    assert training.stop_reason == "diverged"
    assert np.all(np.isfinite(training.model.theta))


@pytest.mark.parametrize(
    ("scale", "learning_rate", "dtype"),
    [(30.0, 0.5, "float64"), (30.0, 0.5, "float32"), (1e20, 0.01, "float32")],
    ids=["explodes-float64", "explodes-float32", "overflows-at-the-first-step"],
)
def test_divergence_on_the_fast_path_names_the_same_step(
    scale: float, learning_rate: float, dtype: str
) -> None:
    X, y = regression_data(300, 5)
    X = X * scale
    y = X @ np.ones(5)
    config = TrainConfig(learning_rate=learning_rate, batch_size=4, epochs=3, dtype=dtype)
    errors = []
    for cfg in (config, _as_general_step(config)):
        training = train(X, y, cfg)
        with pytest.raises(TrainingDiverged) as info:
            run(training)
        assert np.all(np.isfinite(training.model.theta))
        assert training.checkpoint().epoch == 0
        errors.append(info.value)
    fast, general = errors
    assert (fast.epoch, fast.step) == (general.epoch, general.step)
    assert str(fast).split(":")[0] == str(general).split(":")[0]
    if scale > 1e6:
        assert fast.step == 1
        assert "the loss is inf" in str(fast)


def test_divergence_after_good_epochs_keeps_their_records_finite() -> None:
    X, y = regression_data(200, 3)
    # A warmup schedule: epoch 1 at lr/10 trains fine, epoch 2 at the full lr explodes.
    config = TrainConfig(
        learning_rate=6.0,
        batch_size=20,
        epochs=4,
        lr_schedule=LRSchedule(kind="constant", warmup_epochs=10),
        dtype="float64",
    )
    seen: list[EpochRecord] = []
    with pytest.raises(TrainingDiverged) as info:
        collect(train(X, y, config), seen)
    assert info.value.epoch == len(seen) + 1 >= 2
    # After epoch 1 the reference is epoch 1's train loss (the mean of its step losses).
    reference = seen[0].train_loss
    assert f"is over 1e+06 × epoch 1's train loss ({reference:.4g});" in str(info.value)
    assert info.value.loss > 1e6 * reference
    for record in seen:
        assert math.isfinite(record.train_loss)
        assert np.all(np.isfinite(record.step_losses))


def test_read_only_memmap_trains_and_is_unchanged(tmp_path: Path) -> None:
    X, y = regression_data(300, 4)
    np.save(tmp_path / "X.npy", X.astype(np.float32))
    np.save(tmp_path / "y.npy", y)
    X_map = np.load(tmp_path / "X.npy", mmap_mode="r")
    y_map = np.load(tmp_path / "y.npy", mmap_mode="r")
    before = np.array(X_map)
    config = TrainConfig(standardize=True, validation_split=0.2, epochs=3, noise_scale=True)
    training = train(X_map, y_map, config)
    records = run(training)
    assert len(records) == 3
    assert np.array_equal(np.asarray(X_map), before)
    chunked = train(X_map, y_map, TrainConfig(epochs=2, max_in_memory_bytes=1000))
    assert len(run(chunked)) == 2
    assert np.array_equal(np.asarray(X_map), before)


@pytest.mark.parametrize(
    "batch_sizes",
    [(64, 64), (256, 256), (64, 256)],
    ids=["fast-path", "general-step", "both"],
)
def test_in_memory_path_peak_memory_is_within_two_and_a_half_datasets(
    batch_sizes: tuple[int, int],
) -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40_000, 32)).astype(np.float32)
    y = (X @ rng.normal(size=32)).astype(np.float32)
    dataset_bytes = X.nbytes + y.nbytes
    first, second = batch_sizes
    schedule = BatchSizeSchedule()
    if second > first:  # epoch 1 on the fast path, epoch 2 on the general step
        schedule = BatchSizeSchedule(kind="grow", factor=second // first, every_epochs=1)
    config = TrainConfig(
        batch_size=first,
        epochs=2,
        validation_split=0.2,
        standardize=True,
        batch_size_schedule=schedule,
    )
    tracemalloc.start()
    try:
        training = train(X, y, config)
        run(training)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak <= 2.5 * dataset_bytes, peak / dataset_bytes


def test_early_stopping_stops_and_restores_the_best_epoch() -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(400, 2))
    y = X @ np.array([1.0, 1.0])
    X_val = rng.normal(size=(200, 2))
    y_val = X_val @ np.array([1.0, 0.0])  # val loss falls, then rises as θ → (1, 1)
    config = TrainConfig(
        epochs=100,
        batch_size=400,
        learning_rate=0.05,
        dtype="float64",
        early_stopping=EarlyStopping(patience=3),
    )
    training = train(X, y, config, X_val=X_val, y_val=y_val)
    records = run(training)
    assert training.stop_reason == "early_stopping"
    val = [r.val_loss for r in records if r.val_loss is not None]
    assert len(val) == len(records)
    best = int(np.argmin(val))
    assert len(records) == best + 1 + 3
    predicted = training.model.predict(X_val)
    assert np.mean((y_val - predicted) ** 2) == pytest.approx(val[best], rel=1e-12)
    assert training.checkpoint().finished == "early_stopping"


def test_standardize_uses_training_split_statistics_only() -> None:
    X, y = regression_data(200, 3)
    X[:, 1] += 100.0 * (np.arange(200) % 5 == 0)  # rows that shift the mean a lot
    training = train(X, y, TrainConfig(standardize=True, validation_split=0.3, epochs=1))
    model = training.model
    assert model.mean is not None
    assert model.std is not None
    rows = training.train_rows
    assert rows.shape == (140,)
    np.testing.assert_allclose(model.mean, X[rows].mean(axis=0), rtol=1e-5)
    np.testing.assert_allclose(model.std, X[rows].std(axis=0), rtol=1e-5)
    assert not np.allclose(model.mean, X.mean(axis=0), rtol=1e-3)


def test_schedules_show_up_in_the_records() -> None:
    X, y = regression_data(100, 2)
    config = TrainConfig(
        batch_size=8,
        epochs=6,
        learning_rate=0.01,
        batch_size_schedule=BatchSizeSchedule(kind="grow", factor=2, every_epochs=1),
        lr_scaling="linear",
        reference_batch_size=8,
        lr_schedule=LRSchedule(kind="step", step_size=2, gamma=0.5),
    )
    records = run(train(X, y, config))
    assert [r.batch_size for r in records] == [8, 16, 32, 64, 100, 100]
    assert [r.steps for r in records] == [13, 7, 4, 2, 1, 1]
    expected_lr = [0.01 * b / 8 * 0.5 ** (e // 2) for e, b in enumerate([8, 16, 32, 64, 100, 100])]
    assert [r.learning_rate for r in records] == pytest.approx(expected_lr, rel=1e-12)
    assert [r.samples_seen for r in records] == [100, 200, 300, 400, 500, 600]
    assert records[-1].total_steps == 28
    assert [r.step_losses.shape[0] for r in records] == [r.steps for r in records]


def test_drop_last_and_full_batch_counts() -> None:
    X, y = regression_data(100, 2)
    dropped = run(train(X, y, TrainConfig(batch_size=30, drop_last=True, epochs=2)))
    assert [r.steps for r in dropped] == [3, 3]
    assert [r.samples_seen for r in dropped] == [90, 180]
    full = run(train(X, y, TrainConfig(batch_size=None, epochs=2)))
    assert [(r.steps, r.batch_size) for r in full] == [(1, 100), (1, 100)]


@pytest.mark.parametrize("optimizer", ["momentum", "sgd"], ids=["general-step", "sgd-fast-path"])
def test_train_loss_is_the_mean_of_step_losses_over_file_order_without_shuffle(
    optimizer: str,
) -> None:
    X, y = regression_data(50, 3)
    # Momentum 0 is plain SGD through the general step, bit for bit (b = 0·b + g = g);
    # "sgd" takes the fused small-batch path: the same steps, rounded in another order.
    config = TrainConfig(
        batch_size=20, epochs=2, shuffle=False, dtype="float64", optimizer=optimizer, momentum=0.0
    )
    records = run(training := train(X, y, config))
    # The same steps by hand: slices in file order, plain SGD.
    model = build_model("linear", task="regression", n_features=3)
    theta = np.zeros(model.n_params)
    grad = np.empty_like(theta)
    losses = []
    for _ in range(2):
        for a in range(0, 50, 20):
            losses.append(model.loss_and_grad(theta, X[a : a + 20], y[a : a + 20], grad))
            theta -= 0.01 * grad
    if optimizer == "momentum":
        assert np.array_equal(training.model.theta, theta)
        assert records[0].train_loss == pytest.approx(np.mean(losses[:3]), rel=1e-15)
        assert records[1].step_losses.tolist() == np.array(losses[3:], dtype=np.float32).tolist()
    else:
        np.testing.assert_allclose(training.model.theta, theta, rtol=1e-13)
        assert records[0].train_loss == pytest.approx(np.mean(losses[:3]), rel=1e-13)
        np.testing.assert_allclose(records[1].step_losses, losses[3:], rtol=1e-7)
    assert training.checkpoint().optimizer_state["step"] == 6


def _as_general_step(config: TrainConfig) -> TrainConfig:
    """The same run through loss_and_grad + Optimizer.step: momentum 0 is plain SGD."""
    return TrainConfig(**{**vars(config), "optimizer": "momentum", "momentum": 0.0})


_FAST_PATH_CASES = [
    # the fused [x | 1 | y] step (B ≤ 64), with a short last batch, or dropping it
    {"batch_size": 1, "epochs": 2},
    {"batch_size": 7, "drop_last": True},
    {"batch_size": 64, "standardize": True},
    {"batch_size": 7, "dtype": "float32", "standardize": True},
    {"model": "logistic", "batch_size": 16},
    {"model": "logistic", "batch_size": 5, "dtype": "float32"},
    # the scaled gradient + one add (B > 64, or a model without the fused step)
    {"batch_size": 65},
    {"loss": "huber", "batch_size": 16},
    {"model": "softmax", "batch_size": 16},
    {"model": "mlp", "hidden_layers": (6,), "batch_size": 16},
    {"model": "mlp", "hidden_layers": (6,), "batch_size": 16, "dtype": "float32"},
]


def _fields_id(fields: dict[str, Any]) -> str:
    return "-".join(f"{key}={value}" for key, value in fields.items())


@pytest.mark.parametrize("fields", _FAST_PATH_CASES, ids=_fields_id)
def test_plain_sgd_fast_paths_follow_the_general_step(fields: dict[str, Any]) -> None:
    if fields.get("model") in ("logistic", "softmax"):
        X, y = blobs(230, 2 if fields["model"] == "logistic" else 3, seed=3)
        X = X / 6.0
    else:
        X, y = regression_data(230, 4)
    config = TrainConfig(
        **{"epochs": 3, "learning_rate": 0.02, "validation_split": 0.1, "dtype": "float64"} | fields
    )
    fast, general = train(X, y, config), train(X, y, _as_general_step(config))
    fast_records, general_records = run(fast), run(general)
    float32 = config.dtype == "float32"
    rtol = 1e-4 if float32 else 1e-10
    for a, b in zip(fast_records, general_records, strict=True):
        assert (a.epoch, a.steps, a.batch_size, a.samples_seen) == (
            b.epoch,
            b.steps,
            b.batch_size,
            b.samples_seen,
        )
        np.testing.assert_allclose(a.step_losses, b.step_losses, rtol=rtol, atol=1e-7)
        assert a.train_loss == pytest.approx(b.train_loss, rel=rtol)
        assert a.val_loss == pytest.approx(b.val_loss, rel=rtol)
    np.testing.assert_allclose(fast.model.theta, general.model.theta, rtol=rtol, atol=1e-6)
    steps = fast.checkpoint().optimizer_state["step"]
    assert steps == general.checkpoint().optimizer_state["step"] == fast_records[-1].total_steps
    # and the fast path is as deterministic as the general one
    again = train(X, y, config)
    assert history_bytes(run(again)) == history_bytes(fast_records)
    assert again.model.theta.tobytes() == fast.model.theta.tobytes()


def test_explicit_validation_metrics_match_their_formulas() -> None:
    X, y = regression_data(300, 3, seed=1)
    X_val, y_val = regression_data(80, 3, seed=1)
    y_val = y_val + np.random.default_rng(9).normal(size=80)
    config = TrainConfig(epochs=3, dtype="float64")
    training = train(X, y, config, X_val=X_val, y_val=y_val)
    record = run(training)[-1]
    residual = y_val - training.model.predict(X_val)
    mse = float(np.mean(residual**2))
    assert record.val_loss == pytest.approx(mse, rel=1e-12)
    assert record.val_rmse == pytest.approx(math.sqrt(mse), rel=1e-12)
    r2 = 1 - np.sum(residual**2) / np.sum((y_val - y_val.mean()) ** 2)
    assert record.val_r2 == pytest.approx(r2, rel=1e-10)


def test_float32_end_to_end_and_mlp_noise_scale_is_finite() -> None:
    X, labels = blobs(300, 3, seed=5)
    config = TrainConfig(
        model="mlp", hidden_layers=(6,), epochs=3, noise_scale=True, noise_scale_samples=128
    )
    training = train(X, labels, config)
    records = run(training)
    assert training.model.theta.dtype == np.float32
    assert all(p.dtype == np.float32 for p in training.model.params().values())
    for record in records:
        assert record.step_losses.dtype == np.float32
        noise = record.noise_scale
        assert noise is not None
        assert noise.exact  # 300 rows × 51 parameters: within the exact budget
        assert noise.n_samples == 300
        assert math.isfinite(noise.loss_level)
        if noise.b_simple is not None:
            assert noise.b_simple_corrected == pytest.approx(1 / (1 / noise.b_simple + 1 / 300))


def test_linear_noise_scale_matches_per_example_formula() -> None:
    X, y = regression_data(100, 2)
    y = y + np.random.default_rng(1).normal(size=100)
    config = TrainConfig(epochs=1, noise_scale=True, noise_scale_samples=100, dtype="float64")
    training = train(X, y, config)
    noise = run(training)[0].noise_scale
    assert noise is not None
    model = build_model("linear", task="regression", n_features=2)
    G = model.per_example_grads(training.model.theta, X, y)
    trace = float(np.sum((G - G.mean(axis=0)) ** 2) / 99)
    assert noise.trace_sigma == pytest.approx(trace, rel=1e-10)
    assert noise.loss_level == pytest.approx(model.loss(training.model.theta, X, y), rel=1e-12)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"X_val": np.zeros((5, 3))}, "X_val"),
        ({"X_val": np.zeros((5, 2)), "y_val": np.zeros(5)}, "X_val"),
        ({"X_val": np.zeros((5, 3)), "y_val": np.zeros(4)}, "y_val"),
    ],
)
def test_bad_validation_sets_are_refused(kwargs: dict[str, Any], field: str) -> None:
    X, y = regression_data(50, 3)
    with pytest.raises(CoreConfigError) as info:
        train(X, y, TrainConfig(), **kwargs)
    assert info.value.field == field


def test_bad_inputs_are_refused_before_training() -> None:
    X, y = regression_data(50, 3)
    with pytest.raises(CoreConfigError, match=r"^batch_size: 64 is larger than the 50"):
        train(X, y, TrainConfig(batch_size=64))
    X_bad = X.copy()
    X_bad[9, 0] = np.nan
    with pytest.raises(CoreConfigError, match=r"^X: row 9"):
        train(X_bad, y, TrainConfig())
    with pytest.raises(CoreConfigError, match=r"^model: 'logistic'"):
        train(X, y, TrainConfig(model="logistic"))
    labels = np.array([0, 1] * 25)
    with pytest.raises(CoreConfigError, match=r"^y_val: label 5"):
        train(X, labels, TrainConfig(model="logistic"), X_val=X[:3], y_val=np.array([0, 1, 5]))
