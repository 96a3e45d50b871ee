"""The adaptive batch size in training: it follows the measured noise scale as documented."""

from __future__ import annotations

import numpy as np
import pytest

from service.core import BatchSizeSchedule, TrainConfig, Training, train
from service.core.measurements import EXACT_NOISE_MAX_ROWS


def linear_problem(noise: float, n: int = 2000, d: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Isotropic Gaussian X, y = X w + noise·ε. With noise 0 the gradient noise scale of
    linear MSE at any θ is B_simple = d + 1 exactly in expectation (g_i = 2 x_i x_iᵀ (θ − w));
    with |w| = 0.1 and noise 1 it starts near d (|w|² + 1)/|w|² ≈ 500 and grows as θ → w."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(n, d))
    w = np.full(d, 0.1 / np.sqrt(d)) if noise else rng.normal(size=d)
    return X, X @ w + noise * rng.normal(size=n)


def test_a_large_noise_scale_grows_the_batch_by_the_cap_up_to_the_max() -> None:
    X, y = linear_problem(noise=1.0)
    config = TrainConfig(
        batch_size=8,
        epochs=5,
        learning_rate=0.005,
        lr_scaling="linear",
        reference_batch_size=8,
        batch_size_schedule=BatchSizeSchedule(kind="adaptive", max_batch_size=64),
    )
    records = list(train(X, y, config))
    assert [r.batch_size for r in records] == [8, 16, 32, 64, 64]
    # the learning rate follows by the config's rule: linear from B_ref = 8
    assert [r.learning_rate for r in records] == pytest.approx(
        [0.005 * r.batch_size / 8 for r in records]
    )
    # the measurement drove it (adaptive turns it on), and the history says so
    assert all(r.noise_scale is not None for r in records)
    # after epoch 1 θ is near w already, and B_simple is large: 2,000 rows are within the
    # exact budget, so it is measured over all of them, B̂ = 1/(1/B_simple + 1/2000)
    first = records[0].noise_scale
    assert first is not None
    assert first.exact
    assert first.b_simple is not None
    assert first.b_simple > 1000
    assert first.b_simple_corrected == pytest.approx(1 / (1 / first.b_simple + 1 / 2000))
    assert records[0].batch_size_reason == "started at 8 (batch_size 8)"
    assert records[1].batch_size_reason == (
        f"grew 8 → 16 toward the noise scale B̂ ≈ {first.b_simple_corrected:.4g} measured "
        "after epoch 1, held by the ×2 cap per change"
    )
    assert "max_batch_size 64" in (records[4].batch_size_reason or "")


def test_a_small_noise_scale_keeps_the_batch() -> None:
    X, y = linear_problem(noise=0.0)
    config = TrainConfig(
        batch_size=32,
        epochs=4,
        learning_rate=0.01,
        batch_size_schedule=BatchSizeSchedule(kind="adaptive"),
    )
    records = list(train(X, y, config))
    assert [r.batch_size for r in records] == [32, 32, 32, 32]
    for record in records:
        assert record.noise_scale is not None
        assert record.noise_scale.b_simple_corrected is not None
        assert record.noise_scale.b_simple_corrected < 16  # ≈ d + 1 = 6
        assert record.learning_rate == 0.01  # lr_scaling none keeps it
    assert "is not above it (never shrinks)" in (records[1].batch_size_reason or "")


def test_every_epochs_and_the_min_batch_size() -> None:
    X, y = linear_problem(noise=1.0)
    config = TrainConfig(
        batch_size=4,
        epochs=5,
        learning_rate=0.005,
        batch_size_schedule=BatchSizeSchedule(
            kind="adaptive", min_batch_size=10, every_epochs=2, max_growth=3
        ),
    )
    records = list(train(X, y, config))
    assert [r.batch_size for r in records] == [10, 10, 30, 30, 90]
    assert "changes every 2 epochs" in (records[1].batch_size_reason or "")


def test_other_kinds_record_no_reason() -> None:
    X, y = linear_problem(noise=1.0, n=100)
    record = next(iter(train(X, y, TrainConfig(epochs=1))))
    assert record.batch_size_reason is None
    assert record.noise_scale is None


def test_adaptive_state_rides_in_the_checkpoint() -> None:
    X, y = linear_problem(noise=1.0)
    config = TrainConfig(
        batch_size=8,
        epochs=4,
        learning_rate=0.005,
        batch_size_schedule=BatchSizeSchedule(kind="adaptive"),
    )
    interrupted = train(X, y, config)
    for record in interrupted:
        if record.epoch == 2:
            break
    checkpoint = interrupted.checkpoint()
    assert (checkpoint.batch_size, checkpoint.epoch) == (32, 2)
    restored = type(checkpoint).from_bytes(checkpoint.to_bytes())
    assert restored.batch_size == 32
    assert restored.batch_size_reason == checkpoint.batch_size_reason
    resumed = list(Training(X, y, config, resume_from=restored))
    full = list(train(X, y, config))
    assert [r.batch_size for r in resumed] == [r.batch_size for r in full[2:]] == [32, 64]
    for a, b in zip(resumed, full[2:], strict=True):
        assert a.step_losses.tobytes() == b.step_losses.tobytes()
        assert a.batch_size_reason == b.batch_size_reason


def test_the_next_batch_is_the_measured_noise_scale_when_the_cap_allows() -> None:
    X, y = linear_problem(noise=1.0)
    config = TrainConfig(
        batch_size=8,
        epochs=2,
        learning_rate=1e-4,  # θ stays near 0, where B_simple ≈ d (|w|² + 1)/|w|² ≈ 500
        batch_size_schedule=BatchSizeSchedule(kind="adaptive", max_growth=1000),
    )
    first, second = list(train(X, y, config))
    assert first.noise_scale is not None
    assert first.noise_scale.b_simple_corrected is not None
    measured = first.noise_scale.b_simple_corrected
    assert 100 < measured < 2000
    assert second.batch_size == int(np.floor(measured + 0.5))
    assert second.batch_size_reason == (
        f"grew 8 → {second.batch_size} toward the noise scale B̂ ≈ {measured:.4g} "
        "measured after epoch 1"
    )


def test_a_gradient_within_the_sampled_noise_grows_the_batch_to_the_lower_bound() -> None:
    # Above the exact budget, 64 sampled rows at θ ≈ 0 on pure-noise targets: after epoch 1
    # |G|² ≈ |ḡ|² − tr(Σ)/64 is not positive (this seed), so B̂ is only bounded below,
    # B̂ ≳ 1/(1/L + 1/N) with L = tr(Σ)/|ḡ|² ≥ 64, and the batch follows the bound.
    n = EXACT_NOISE_MAX_ROWS + 4464
    rng = np.random.default_rng(1)
    X, y = rng.standard_normal((n, 2)), rng.standard_normal(n)
    config = TrainConfig(
        batch_size=8,
        epochs=2,
        learning_rate=1e-4,
        noise_scale_samples=64,
        seed=1,
        batch_size_schedule=BatchSizeSchedule(kind="adaptive", max_growth=1000),
    )
    first, second = list(train(X, y, config))
    noise = first.noise_scale
    assert noise is not None
    assert noise.b_simple is None
    assert noise.b_simple_lower_bound is not None
    bound = 1.0 / (1.0 / noise.b_simple_lower_bound + 1.0 / n)
    assert second.batch_size == int(np.floor(bound + 0.5))
    assert second.batch_size > 100  # well above the 64 rows sampled
    assert second.batch_size_reason == (
        f"grew 8 → {second.batch_size} toward the noise scale measured after epoch 1, "
        f"B̂ ≳ {bound:.4g} (the mean gradient was within the sample's noise)"
    )
