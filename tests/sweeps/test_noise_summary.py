"""The noise-scale summary of a run: late average, loss level, correction, spread and trend,
checked by hand on small examples."""

from __future__ import annotations

import math

import pytest

from service.core import NoiseRecord
from service.science import EpochNoise, SweepDataError, summarize_noise_scale


def record(epoch: int, trace: float, grad_sq: float, loss: float) -> EpochNoise:
    b_simple = trace / grad_sq if grad_sq > 0.0 else None
    return EpochNoise(epoch, b_simple, trace, grad_sq, loss)


def power_law_run() -> list[EpochNoise]:
    """8 epochs with B_simple = 50 / loss² exactly, |G|² = 0.01 · loss."""
    losses = [1.0, 0.8, 0.6, 0.5, 0.4, 0.35, 0.3, 0.25]
    return [
        record(epoch, (50.0 / loss**2) * (0.01 * loss), 0.01 * loss, loss)
        for epoch, loss in enumerate(losses, start=1)
    ]


def test_summary_numbers_by_hand() -> None:
    summary = summarize_noise_scale(power_law_run(), train_rows=1000)
    # window: the last ⌈8/4⌉ = 2 epochs, 7 (loss 0.3) and 8 (loss 0.25):
    #   tr(Σ) = 50/0.3 · 0.01 = 1/0.6 and 50/0.25 · 0.01 = 2; |G|² = 0.003 and 0.0025
    #   B_simple = mean tr(Σ) / mean |G|² = (1/0.6 + 2) / (0.003 + 0.0025) = 666.67
    assert summary.window == (7, 8)
    assert summary.window_epochs == 2
    assert summary.estimates == 2
    assert summary.b_simple == pytest.approx((1 / 0.6 + 2.0) / 0.0055)
    assert summary.b_simple == pytest.approx(2000 / 3)
    # 1/(1/666.67 + 1/1000) = 1/(0.0015 + 0.001) = 400
    assert summary.b_simple_corrected == pytest.approx(400.0)
    assert summary.loss_level == pytest.approx(0.275)
    assert summary.train_rows == 1000
    # per-epoch estimates 555.56 and 800: sd of the two logs = ln(800/555.56)/√2 = ln 1.44/√2
    assert summary.spread_factor == pytest.approx(math.exp(math.log(1.44) / math.sqrt(2.0)))
    # ln B = ln 50 − 2 ln loss exactly, and 50 → 800 from first to last
    assert summary.trend_slope == pytest.approx(-2.0)
    assert summary.fold_change == pytest.approx(16.0)
    assert summary.first == pytest.approx((1, 50.0, 1.0))
    assert summary.last == pytest.approx((8, 800.0, 0.25))
    assert summary.reason is None


@pytest.mark.parametrize(
    ("epochs", "window"), [(1, (1, 1)), (3, (3, 3)), (4, (4, 4)), (5, (4, 5)), (12, (10, 12))]
)
def test_the_window_is_the_last_quarter_and_at_least_one_epoch(
    epochs: int, window: tuple[int, int]
) -> None:
    records = [record(e, 1.0 * e, 0.01, 1.0 / e) for e in range(1, epochs + 1)]
    summary = summarize_noise_scale(records, train_rows=10_000)
    assert summary.window == window
    assert summary.window_epochs == window[1] - window[0] + 1


def test_an_unresolved_epoch_still_counts_in_the_ratio_of_means() -> None:
    records = [
        record(1, 1.0, 0.1, 1.0),
        record(2, 1.5, 0.05, 0.8),
        record(3, 2.0, 0.02, 0.6),
        record(4, 2.0, 0.01, 0.5),
        record(5, 2.0, 0.005, 0.45),
        record(6, 2.0, 0.004, 0.42),
        record(7, 2.0, -0.001, 0.41),  # |G|² estimate below zero: no per-epoch B_simple
        record(8, 3.0, 0.011, 0.40),
    ]
    summary = summarize_noise_scale(records, train_rows=1_000_000)
    # (2 + 3)/2 / ((−0.001 + 0.011)/2) = 2.5 / 0.005
    assert summary.b_simple == pytest.approx(500.0)
    assert summary.estimates == 1
    assert summary.spread_factor is None
    assert summary.last == pytest.approx((8, 3.0 / 0.011, 0.40))


def test_no_resolved_gradient_gives_no_b_simple_but_a_reason() -> None:
    # the window is epoch 2 alone (⌈2/4⌉ = 1), whose |G|² estimate is negative
    summary = summarize_noise_scale(
        [record(1, 2.0, 0.005, 0.4), record(2, 2.0, -0.01, 0.3)], train_rows=100
    )
    assert summary.b_simple is None
    assert summary.b_simple_corrected is None
    assert summary.reason is not None
    assert "not resolved" in summary.reason
    # the trend still comes from the resolved epoch alone: no slope, no fold change
    assert summary.first == summary.last == pytest.approx((1, 400.0, 0.4))
    assert summary.trend_slope is None
    assert summary.fold_change is None


def test_no_noise_gives_no_b_simple_but_a_reason() -> None:
    # the core reports b_simple = 0 when tr(Σ) = 0; it is no estimate to take logs of
    summary = summarize_noise_scale([record(1, 0.0, 0.01, 0.5)], train_rows=100)
    assert summary.b_simple is None
    assert summary.estimates == 0
    assert summary.reason is not None
    assert "no gradient noise" in summary.reason


def test_equal_losses_give_a_fold_change_but_no_slope() -> None:
    summary = summarize_noise_scale(
        [record(1, 1.0, 0.01, 0.5), record(2, 2.0, 0.01, 0.5)], train_rows=100
    )
    assert summary.fold_change == pytest.approx(2.0)
    assert summary.trend_slope is None


def test_from_record_takes_the_core_record() -> None:
    core = NoiseRecord(
        b_simple=200.0,
        b_simple_corrected=1 / (1 / 200 + 1 / 1000),
        trace_sigma=2.0,
        grad_sq_norm=0.01,
        loss_level=0.41,
        n_samples=1000,
    )
    assert EpochNoise.from_record(3, core) == EpochNoise(3, 200.0, 2.0, 0.01, 0.41, 1000)
    summary = summarize_noise_scale([EpochNoise.from_record(3, core)], train_rows=1000)
    assert summary.b_simple_corrected == pytest.approx(core.b_simple_corrected)
    assert summary.exact is False
    exact = NoiseRecord(**{**vars(core), "exact": True})
    assert EpochNoise.from_record(3, exact).exact is True
    assert summarize_noise_scale([EpochNoise.from_record(3, exact)], train_rows=1000).exact


def test_an_unresolved_window_gives_a_lower_bound_with_its_loss_level() -> None:
    # Window: the last ⌈8/4⌉ = 2 epochs. Each has tr(Σ) = 2 on n = 100 sampled rows and
    # |G|² ≈ −0.005, −0.015, so |ḡ|² = |G|² + tr(Σ)/n = 0.015, 0.005 (the sample's mean
    # gradient): B_simple ≳ mean tr(Σ) / mean |ḡ|² = 2/0.01 = 200.
    early = [EpochNoise(k, 50.0, 1.0, 0.02, 1.0 / k, n_samples=100) for k in range(1, 7)]
    late = [
        EpochNoise(7, None, 2.0, -0.005, 0.3, n_samples=100),
        EpochNoise(8, None, 2.0, -0.015, 0.2, n_samples=100),
    ]
    summary = summarize_noise_scale([*early, *late], train_rows=1000)
    assert (summary.b_simple, summary.b_simple_corrected) == (None, None)
    assert summary.window == (7, 8)
    assert summary.loss_level == pytest.approx(0.25)
    assert summary.b_simple_lower_bound == pytest.approx(200.0)
    assert summary.b_simple_corrected_lower_bound == pytest.approx(1 / (1 / 200 + 1 / 1000))
    assert summary.reason is not None
    assert summary.reason.startswith("the mean |G|² over the last quarter is not positive")
    assert summary.reason.endswith("at least ≈ 200 (mean tr(Σ) / mean |ḡ|², a lower bound)")
    # a record without its sample size gives no bound, and the reason says only why
    unsized = summarize_noise_scale(
        [*early, late[0], EpochNoise(8, None, 2.0, -0.015, 0.2)], train_rows=1000
    )
    assert (unsized.b_simple_lower_bound, unsized.b_simple_corrected_lower_bound) == (None, None)
    assert unsized.reason is not None
    assert "lower bound" not in unsized.reason


@pytest.mark.parametrize(
    ("records", "train_rows", "match"),
    [
        ([], 100, "records: needs at least one epoch"),
        ([record(1, 1.0, 0.01, 0.5)], 0, "train_rows: must be an integer ≥ 1"),
        ([record(1, 1.0, 0.01, 0.5)], True, "train_rows"),
        ([record(2, 1.0, 0.01, 0.5), record(2, 1.0, 0.01, 0.4)], 100, "epochs must increase"),
        ([record(1, math.nan, 0.01, 0.5)], 100, "epoch 1: values must be finite"),
        ([EpochNoise(1, -5.0, 1.0, 0.01, 0.5)], 100, "b_simple must be finite and ≥ 0"),
    ],
)
def test_malformed_records_are_refused(
    records: list[EpochNoise], train_rows: int, match: str
) -> None:
    with pytest.raises(SweepDataError, match=match):
        summarize_noise_scale(records, train_rows=train_rows)
