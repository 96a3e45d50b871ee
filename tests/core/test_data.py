"""Targets, the seeded split, standardisation, and the two ways of serving an epoch."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from service.core import CoreConfigError, TrainConfig, Training
from service.core import data as data_module
from service.core.data import (
    AugmentedEpochs,
    ChunkedEpochs,
    EvalSet,
    InMemoryEpochs,
    RowReader,
    check_finite_features,
    check_inputs,
    encode_targets,
    encode_with_classes,
    fit_standardization,
    gather_rows,
    make_epoch_source,
    split_rows,
)


def _row_id_data(n: int, d: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """X[:, 0] = y = the row's index, so every served row names itself."""
    X = np.zeros((n, d), dtype=np.float64)
    X[:, 0] = np.arange(n)
    return X, np.arange(n, dtype=np.float64)


def test_binary_labels_map_to_indices_and_back() -> None:
    y = np.array([7, -1, 7, 7, -1])
    encoded, classes = encode_targets(y, "binary", np.dtype(np.float32))
    assert classes is not None
    assert classes.tolist() == [-1, 7]
    assert encoded.dtype == np.float32
    assert encoded.tolist() == [1.0, 0.0, 1.0, 1.0, 0.0]
    assert classes[encoded.astype(int)].tolist() == y.tolist()


def test_multiclass_labels_are_int64_indices() -> None:
    y = np.array([20.0, 3.0, 10.0, 3.0])
    encoded, classes = encode_targets(y, "multiclass", np.dtype(np.float64))
    assert classes is not None
    assert classes.tolist() == [3.0, 10.0, 20.0]
    assert encoded.dtype == np.int64
    assert encoded.tolist() == [2, 0, 1, 0]


def test_target_errors_name_the_problem() -> None:
    with pytest.raises(CoreConfigError, match=r"^y: a binary model needs exactly 2 classes; got 3"):
        encode_targets(np.array([1, 2, 3]), "binary", np.dtype(np.float32))
    with pytest.raises(CoreConfigError, match=r"^y: row 1 is NaN"):
        encode_targets(np.array([1.0, np.nan]), "regression", np.dtype(np.float32))
    with pytest.raises(CoreConfigError, match=r"^y: must be numeric"):
        encode_targets(np.array(["a", "b"]), "binary", np.dtype(np.float32))
    with pytest.raises(CoreConfigError, match=r"^y: a classifier needs at least 2 classes"):
        encode_targets(np.array([4, 4]), "multiclass", np.dtype(np.float32))


def test_encode_with_classes_uses_the_training_labels_and_refuses_new_ones() -> None:
    classes = np.array([3, 10, 20])
    got = encode_with_classes(np.array([20, 3]), "multiclass", np.dtype(np.float32), classes)
    assert got.tolist() == [2, 0]
    with pytest.raises(CoreConfigError, match=r"^y_val: label 11 does not occur"):
        encode_with_classes(np.array([3, 11]), "multiclass", np.dtype(np.float32), classes)


def test_split_rows_is_seeded_disjoint_and_sorted() -> None:
    train, val = split_rows(50, 10, np.random.default_rng(3))
    train2, val2 = split_rows(50, 10, np.random.default_rng(3))
    assert np.array_equal(train, train2)
    assert np.array_equal(val, val2)
    assert val.shape == (10,)
    assert np.array_equal(np.sort(np.concatenate([train, val])), np.arange(50))
    assert np.all(np.diff(train) > 0)
    assert np.all(np.diff(val) > 0)
    _, val3 = split_rows(50, 10, np.random.default_rng(4))
    assert not np.array_equal(val, val3)
    train0, val0 = split_rows(5, 0, np.random.default_rng(0))
    assert train0.tolist() == [0, 1, 2, 3, 4]
    assert val0.shape == (0,)


def test_standardization_uses_the_given_rows_and_is_exact_in_chunks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(3.0, 2.0, size=(1000, 4))
    X[:, 2] = 5.0  # a constant column: std 0 → 1
    rows = np.sort(rng.choice(1000, size=700, replace=False))
    monkeypatch.setattr(data_module, "CHUNK_BYTES", 64 * 4 * 8)  # 64-row chunks: 11 merges
    s = fit_standardization(X, rows, np.dtype(np.float64))
    expected_std = X[rows].std(axis=0)
    expected_std[2] = 1.0
    np.testing.assert_allclose(s.mean, X[rows].mean(axis=0), rtol=1e-13)
    np.testing.assert_allclose(s.std, expected_std, rtol=1e-12)
    assert s.std[2] == 1.0


def test_gather_rows_with_a_cast_matches_fancy_indexing(monkeypatch: pytest.MonkeyPatch) -> None:
    X = np.arange(60, dtype=np.float64).reshape(20, 3) / 7
    rows = np.array([5, 0, 19, 3, 3])
    monkeypatch.setattr(data_module, "CHUNK_BYTES", 2 * 3 * 8)  # two rows per chunk
    out = np.empty((5, 3), dtype=np.float32)
    gather_rows(X, rows, out)
    assert np.array_equal(out, X[rows].astype(np.float32))
    same = np.empty((5, 3), dtype=np.float64)
    gather_rows(X, rows, same)
    assert np.array_equal(same, X[rows])


def test_input_checks_name_the_array() -> None:
    with pytest.raises(CoreConfigError, match=r"^X: must be 2-D"):
        check_inputs(np.zeros(3), np.zeros(3))
    with pytest.raises(CoreConfigError, match=r"^y: must have shape \(4,\)"):
        check_inputs(np.zeros((4, 2)), np.zeros(3))
    with pytest.raises(CoreConfigError, match=r"^X: needs at least one row"):
        check_inputs(np.zeros((0, 2)), np.zeros(0))
    with pytest.raises(CoreConfigError, match=r"^X: must be numeric"):
        check_inputs(np.array([["a"]]), np.zeros(1))
    X = np.zeros((10, 2))
    X[7, 1] = np.inf
    with pytest.raises(CoreConfigError, match=r"^X: row 7 contains NaN or infinity"):
        check_finite_features(X)


def test_in_memory_epoch_is_one_shuffled_permutation_of_the_training_rows() -> None:
    X, y = _row_id_data(40)
    rows = np.arange(0, 40, 2)
    reader = RowReader(X, y, dtype=np.dtype(np.float32), standardization=None)
    source = make_epoch_source(reader, rows, max_bytes=10**6)
    assert isinstance(source, InMemoryEpochs)
    rng = np.random.default_rng(1)
    orders = []
    for _ in range(2):
        segments = list(source.segments(7, rng))
        assert len(segments) == 1
        seg_X, seg_y = segments[0]
        assert np.array_equal(seg_X[:, 0], seg_y)
        orders.append(seg_y.copy())
        assert np.array_equal(np.sort(seg_y), rows)
    assert not np.array_equal(orders[0], orders[1])
    assert not np.array_equal(orders[0], rows)
    (file_order, _), *_ = source.segments(7, None)
    assert np.array_equal(file_order[:, 0], rows)


@pytest.mark.parametrize("batch_size", [1, 7, 64, 500])
def test_chunked_epoch_visits_every_row_exactly_once(batch_size: int) -> None:
    X, y = _row_id_data(1000)
    rng_split = np.random.default_rng(0)
    rows, _ = split_rows(1000, 100, rng_split)
    reader = RowReader(X, y, dtype=np.dtype(np.float64), standardization=None)
    max_bytes = 160 * reader.row_bytes  # 160-row windows of 16 blocks of 10 rows
    source = make_epoch_source(reader, rows, max_bytes=max_bytes)
    assert isinstance(source, ChunkedEpochs)
    assert source.block_rows == 10
    rng = np.random.default_rng(5)
    epochs = []
    for _ in range(2):
        served = []  # segments are views of one buffer: copy each before the next
        for seg_X, seg_y in source.segments(batch_size, rng):
            assert np.array_equal(seg_X[:, 0], seg_y)
            served.append(seg_y.copy())
        assert all(s.shape[0] % batch_size == 0 for s in served[:-1])
        order = np.concatenate(served)
        assert np.array_equal(np.sort(order), rows)  # every training row once, no val row
        epochs.append(order)
    assert not np.array_equal(epochs[0], epochs[1])
    assert not np.array_equal(epochs[0], rows)
    # The buffer stays bounded: one window plus one batch.
    assert source._X.shape[0] <= 160 + batch_size - 1


def test_chunked_epoch_without_shuffle_is_file_order() -> None:
    X, y = _row_id_data(100)
    rows = np.arange(100)
    reader = RowReader(X, y, dtype=np.dtype(np.float64), standardization=None)
    source = ChunkedEpochs(reader, rows, max_bytes=32 * reader.row_bytes)
    order = np.concatenate([seg_y.copy() for _, seg_y in source.segments(6, None)])
    assert np.array_equal(order, rows)


@pytest.mark.parametrize("batch_size", [1, 7, 40])
def test_augmented_epochs_serve_the_in_memory_order_as_x_one_y_rows(
    batch_size: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 4)) * 3.0 + 1.0  # float64 source, float32 training
    y = rng.normal(size=300).astype(np.float32)  # encoded targets are in the training dtype
    rows = np.sort(rng.choice(300, size=250, replace=False))
    s = fit_standardization(X, rows, np.dtype(np.float32))
    reader = RowReader(X, y, dtype=np.dtype(np.float32), standardization=s)
    monkeypatch.setattr(data_module, "CHUNK_BYTES", 24 * 10)  # built in 10-row pieces
    monkeypatch.setattr(data_module, "AUGMENTED_CHUNK_BYTES", 24 * 80)  # ~80-row chunks
    plain, augmented = InMemoryEpochs(reader, rows), InMemoryEpochs(reader, rows)
    fused = AugmentedEpochs(augmented)
    assert fused.rows.shape == (250, 6)
    assert fused.rows.dtype == np.float32
    assert augmented._X.shape[0] == 0  # InMemoryEpochs' own buffer is never allocated
    rng_plain, rng_fused = np.random.default_rng(4), np.random.default_rng(4)
    for shuffle in (True, True, False):
        (X_seg, y_seg), *_ = plain.segments(batch_size, rng_plain if shuffle else None)
        chunks = [c.copy() for c in fused.chunks(batch_size, rng_fused if shuffle else None)]
        assert all(c.shape[0] % batch_size == 0 for c in chunks[:-1])
        assert all(c.shape[0] <= max(80, batch_size) for c in chunks)
        served = np.concatenate(chunks)
        assert np.array_equal(served[:, :4], X_seg)  # same rows, same order, same bits
        assert np.all(served[:, 4] == 1.0)
        assert np.array_equal(served[:, 5], y_seg)
    assert rng_plain.bit_generator.state == rng_fused.bit_generator.state


def test_standardisation_happens_in_our_buffer_not_in_the_input() -> None:
    X = np.arange(12, dtype=np.float64).reshape(6, 2)
    X.setflags(write=False)
    rows = np.arange(6)
    s = fit_standardization(X, rows, np.dtype(np.float64))
    reader = RowReader(X, np.zeros(6), dtype=np.dtype(np.float64), standardization=s)
    (seg_X, _), *_ = InMemoryEpochs(reader, rows).segments(2, None)
    np.testing.assert_allclose(seg_X.mean(axis=0), 0.0, atol=1e-15)
    np.testing.assert_allclose(seg_X.std(axis=0), 1.0)
    assert X[5, 1] == 11.0


def test_eval_set_streams_in_chunks_when_it_does_not_fit(monkeypatch: pytest.MonkeyPatch) -> None:
    X, y = _row_id_data(50)
    rows = np.arange(3, 50, 3)
    reader = RowReader(X, y, dtype=np.dtype(np.float64), standardization=None)
    monkeypatch.setattr(data_module, "CHUNK_BYTES", 32)  # 8-row evaluation chunks
    cached = EvalSet(reader, rows, max_bytes=10**6)
    streamed = EvalSet(reader, rows, max_bytes=1)
    got_cached = np.concatenate([c_y.copy() for _, c_y in cached.chunks()])
    got_streamed = np.concatenate([c_y.copy() for _, c_y in streamed.chunks()])
    assert np.array_equal(got_cached, rows)
    assert np.array_equal(got_streamed, rows)
    assert streamed.chunk < rows.shape[0]


def _strided_source(tmp_path: Path, n: int, d: int) -> tuple[np.ndarray, np.ndarray]:
    """A dataset file as workers open it: a float64 (n, d + 1) memory map, X a strided view."""
    rng = np.random.default_rng(3)
    table = np.lib.format.open_memmap(tmp_path / "data.npy", mode="w+", shape=(n, d + 1))
    table[:] = rng.normal(size=(n, d + 1)) * 5.0 + 2.0
    table.flush()
    del table
    mapped = np.load(tmp_path / "data.npy", mmap_mode="r")
    return mapped[:, :d], mapped[:, d]


def test_in_memory_epochs_copy_the_rows_once_contiguous_in_the_config_dtype(
    tmp_path: Path,
) -> None:
    X, y_raw = _strided_source(tmp_path, 500, 6)
    assert not X.flags.c_contiguous
    y = np.asarray(y_raw, dtype=np.float32)
    rows = np.sort(np.random.default_rng(0).choice(500, size=400, replace=False))
    s = fit_standardization(X, rows, np.dtype(np.float32))
    reader = RowReader(X, y, dtype=np.dtype(np.float32), standardization=s)
    reads: list[int] = []
    read = reader.read

    def counting_read(which: np.ndarray, X_out: np.ndarray, y_out: np.ndarray) -> None:
        reads.append(which.shape[0])
        read(which, X_out, y_out)

    reader.read = counting_read  # type: ignore[method-assign]
    source = InMemoryEpochs(reader, rows)
    rng, replay = np.random.default_rng(8), np.random.default_rng(8)
    for _ in range(3):
        (X_seg, y_seg), *_ = source.segments(32, rng)
        # the bits the per-epoch gather, cast and standardisation gave
        order = rows[InMemoryEpochs(reader, rows).epoch_positions(replay)]
        X_old, y_old = np.empty((400, 6), np.float32), np.empty(400, np.float32)
        read(order, X_old, y_old)
        assert X_seg.tobytes() == X_old.tobytes()
        assert y_seg.tobytes() == y_old.tobytes()
    assert reads == [400]  # the source was read once, whatever the epochs
    X_rows, y_rows = source.training_rows()
    assert X_rows.flags.c_contiguous
    assert X_rows.dtype == np.float32
    assert X_rows.shape == (400, 6)
    assert y_rows.dtype == np.float32
    (X_file_order, _), *_ = source.segments(32, None)
    assert X_file_order is X_rows  # no shuffle: the copy itself, no gather


def test_gathering_from_a_strided_source_copies_no_whole_array(tmp_path: Path) -> None:
    X, _ = _strided_source(tmp_path, 20_000, 8)
    rows = np.random.default_rng(1).permutation(20_000)[:500]
    out = np.empty((500, 8))
    tracemalloc.start()
    try:
        gather_rows(X, rows, out)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert np.array_equal(out, X[rows])
    assert peak < X.nbytes / 10  # np.take would first copy X (1.28 MB) whole


def test_training_from_a_dataset_file_stays_within_two_and_a_half_training_copies(
    tmp_path: Path,
) -> None:
    n, d = 40_000, 32
    X, y = _strided_source(tmp_path, n, d)
    config = TrainConfig(batch_size=128, epochs=3, standardize=True)
    training_bytes = n * (d + 1) * 4  # the training rows and targets in float32
    list(Training(X[:200], y[:200], config))  # imports and caches, not the run, out of the peak
    tracemalloc.start()
    try:
        training = Training(X, y, config)
        records = list(training)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(records) == 3
    assert peak <= 2.5 * training_bytes, peak / training_bytes
