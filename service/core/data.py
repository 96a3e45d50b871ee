"""Data handling for the training loop: targets, the validation split, standardisation, epochs.

Inputs ``X : (n_rows, n_features)`` and ``y : (n_rows,)`` may be read-only memory maps (a
strided float64 view of a dataset file, say); nothing here ever writes into them.

Two ways to serve an epoch, chosen by ``max_in_memory_bytes`` (see ``make_epoch_source``):

- ``InMemoryEpochs``: the training rows fit. They are copied ONCE, at the first epoch, into a
  contiguous array of the config's dtype, cast and standardised there (``(x − mean) / std``), in
  file order; each epoch then shuffles an index vector in place and does ONE gather
  ``np.take(rows, positions, axis=0, out=buffer)`` from that copy into a preallocated buffer —
  no per-epoch read of the source, cast or standardisation. The values are the bits the
  per-epoch cast-and-standardise gave: both are the same elementwise IEEE operations on the
  same elements, in another order. Peak memory ≈ 2 × the training rows in the config's dtype
  (the copy and the buffer) + 8 bytes per row of indices.
- ``ChunkedEpochs``: they do not fit. The training rows (in file order) are cut into contiguous
  blocks of ``block_rows``; each epoch permutes the blocks, takes them ``BLOCKS_PER_WINDOW`` at a
  time as a window, shuffles the rows inside the window and gathers the window into a bounded
  buffer. Every row is visited exactly once per epoch; reads stay within a window of blocks, so a
  memory-mapped file larger than RAM trains with ``max_in_memory_bytes`` (+ one batch) of buffer.
  Rows are mixed less than a full shuffle: two rows meet in a batch only if their blocks share a
  window.

Both yield *segments*: ``(X_seg, y_seg)`` buffer views whose length is a multiple of the batch
size, except the last segment of an epoch, which ends with the partial batch (if any).

``AugmentedEpochs`` serves the small-batch plain-SGD fast path (``fused_sgd.AugmentedSGD``) of
an in-memory run: the training rows kept once as [x | 1 | y], and each epoch (the same order as
``InMemoryEpochs``) gathered in cache-sized chunks just before their steps run. While only it
runs, ``InMemoryEpochs``' copy and buffer are never made; batch sizes never shrink, so once a run
leaves the fast path the training loop drops it before ``InMemoryEpochs`` allocates.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from service.core.errors import CoreConfigError
from service.core.tasks import Task

#: Rows per chunk when scanning, casting or evaluating in pieces (bounded temporaries).
CHUNK_BYTES = 1024**2
#: Blocks mixed together in one window of the chunked shuffle.
BLOCKS_PER_WINDOW = 16

Segment = tuple[np.ndarray, np.ndarray]


def chunk_rows(row_bytes: int) -> int:
    """Rows per ``CHUNK_BYTES`` piece, at least 1."""
    return max(1, CHUNK_BYTES // max(1, row_bytes))


def check_inputs(X: np.ndarray, y: np.ndarray, *, name: str = "X", y_name: str = "y") -> None:
    """Shapes and dtypes: ``X`` (n, d) numeric with n, d ≥ 1, ``y`` (n,)."""
    if X.ndim != 2:
        raise CoreConfigError(name, f"must be 2-D (rows, features); got shape {X.shape}")
    if X.shape[0] < 1 or X.shape[1] < 1:
        raise CoreConfigError(name, f"needs at least one row and one column; got shape {X.shape}")
    if X.dtype.kind not in "biuf":
        raise CoreConfigError(name, f"must be numeric; got dtype {X.dtype}")
    if y.ndim != 1 or y.shape[0] != X.shape[0]:
        raise CoreConfigError(
            y_name, f"must have shape ({X.shape[0]},) to match {name}; got {y.shape}"
        )


def check_finite_features(X: np.ndarray, *, name: str = "X") -> None:
    """Raise ``CoreConfigError`` naming the first row with NaN or infinity (chunked scan)."""
    if X.dtype.kind != "f":
        return
    step = chunk_rows(X.shape[1] * X.dtype.itemsize)
    for start in range(0, X.shape[0], step):
        finite = np.isfinite(X[start : start + step]).all(axis=1)
        if not finite.all():
            row = start + int(np.argmin(finite))
            raise CoreConfigError(name, f"row {row} contains NaN or infinity")


def encode_targets(
    y: np.ndarray, task: Task, dtype: np.dtype
) -> tuple[np.ndarray, np.ndarray | None]:
    """Targets as the model wants them, and the class labels.

    regression → ``(y as dtype, None)``; binary → ``(index in {0, 1} as dtype, classes (2,))``;
    multiclass → ``(index int64 in 0..K−1, classes (K,))``. ``classes = np.unique(y)`` (sorted),
    so any numbers work as labels and ``classes[index]`` gives them back.
    """
    if y.dtype.kind not in "biuf":
        raise CoreConfigError("y", f"must be numeric; got dtype {y.dtype}")
    if y.dtype.kind == "f" and not np.isfinite(y).all():
        row = int(np.argmin(np.isfinite(y)))
        raise CoreConfigError("y", f"row {row} is NaN or infinity")
    if task == "regression":
        return np.asarray(y, dtype=dtype), None
    classes, index = np.unique(y, return_inverse=True)
    if task == "binary" and classes.shape[0] != 2:
        raise CoreConfigError(
            "y", f"a binary model needs exactly 2 classes; got {classes.shape[0]}"
        )
    if classes.shape[0] < 2:
        raise CoreConfigError("y", "a classifier needs at least 2 classes; got 1")
    index = index.reshape(-1)
    encoded = index.astype(dtype) if task == "binary" else index.astype(np.int64)
    return encoded, classes


def encode_with_classes(
    y: np.ndarray, task: Task, dtype: np.dtype, classes: np.ndarray | None, *, name: str = "y_val"
) -> np.ndarray:
    """Encode ``y`` with classes found elsewhere (the training labels); unknown labels refused."""
    if task == "regression" or classes is None:
        encoded, _ = encode_targets(y, "regression", dtype)
        return encoded
    index = np.searchsorted(classes, y).clip(0, classes.shape[0] - 1)
    unknown = classes[index] != y
    if unknown.any():
        label = y[int(np.argmax(unknown))].item()
        raise CoreConfigError(name, f"label {label!r} does not occur in the training labels")
    return index.astype(dtype) if task == "binary" else index.astype(np.int64)


def split_rows(n_rows: int, n_val: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Seeded split: ``(train_idx, val_idx)``, each sorted ascending (file order, so the chunked
    path reads contiguously). ``val_idx`` is the first ``n_val`` of a permutation of the rows."""
    if n_val == 0:
        return np.arange(n_rows, dtype=np.intp), np.empty(0, dtype=np.intp)
    perm = rng.permutation(n_rows).astype(np.intp, copy=False)
    val_idx = np.sort(perm[:n_val])
    train_idx = np.sort(perm[n_val:])
    return train_idx, val_idx


@dataclass(frozen=True)
class Standardization:
    """Per-feature ``mean`` and ``std`` (d,) in the training dtype: x ↦ (x − mean)/std."""

    mean: np.ndarray
    std: np.ndarray

    def apply_inplace(self, buffer: np.ndarray) -> None:
        """Standardise ``buffer`` (m, d) in place (it must be ours, never the caller's X)."""
        np.subtract(buffer, self.mean, out=buffer)
        np.divide(buffer, self.std, out=buffer)


def fit_standardization(X: np.ndarray, rows: np.ndarray, dtype: np.dtype) -> Standardization:
    """Mean and population std of ``X[rows]`` per feature, std 0 → 1.

    Chunked with Chan et al.'s pairwise update (float64 accumulators), so no copy of ``X``:
    for chunks a, b: δ = mean_b − mean_a, M2 = M2_a + M2_b + δ²·n_a·n_b/(n_a + n_b).
    """
    d = X.shape[1]
    count = 0
    mean = np.zeros(d, dtype=np.float64)
    m2 = np.zeros(d, dtype=np.float64)
    step = chunk_rows(d * 8)
    for start in range(0, rows.shape[0], step):
        chunk = np.asarray(X[rows[start : start + step]], dtype=np.float64)
        n_b = chunk.shape[0]
        mean_b = chunk.mean(axis=0)
        chunk -= mean_b
        m2_b = np.einsum("ij,ij->j", chunk, chunk)
        delta = mean_b - mean
        total = count + n_b
        mean += delta * (n_b / total)
        m2 += m2_b + delta**2 * (count * n_b / total)
        count = total
    std = np.sqrt(m2 / max(count, 1))
    std[std == 0.0] = 1.0
    return Standardization(mean=mean.astype(dtype), std=std.astype(dtype))


def gather_rows(X: np.ndarray, rows: np.ndarray, out: np.ndarray) -> None:
    """``out[:] = X[rows]`` without a temporary of ``out``'s size.

    Same dtype and C-contiguous: one ``np.take(..., out=)`` (``mode="clip"`` because
    ``mode="raise"`` buffers ``out``; the rows are valid by construction). Otherwise chunked,
    casting each chunk: ``np.take`` would first copy a strided ``X`` whole.
    """
    if X.dtype == out.dtype and X.flags.c_contiguous:
        np.take(X, rows, axis=0, out=out, mode="clip")
        return
    row_bytes = X.itemsize * (X.shape[1] if X.ndim == 2 else 1)
    step = chunk_rows(row_bytes)
    for start in range(0, rows.shape[0], step):
        out[start : start + step] = X[rows[start : start + step]]


class RowReader:
    """Rows of a source ``(X, y_encoded)`` as model inputs: gathered, cast, standardised."""

    def __init__(
        self,
        X: np.ndarray,
        y_encoded: np.ndarray,
        *,
        dtype: np.dtype,
        standardization: Standardization | None,
    ) -> None:
        self.X = X
        self.y = y_encoded
        self.dtype = np.dtype(dtype)
        self.standardization = standardization
        self.n_features = X.shape[1]
        self.row_bytes = self.n_features * self.dtype.itemsize + y_encoded.dtype.itemsize

    def read(self, rows: np.ndarray, X_out: np.ndarray, y_out: np.ndarray) -> None:
        """Fill ``X_out`` (m, d) and ``y_out`` (m,) with ``rows`` (m,) of the source."""
        gather_rows(self.X, rows, X_out)
        np.take(self.y, rows, out=y_out, mode="clip")
        if self.standardization is not None:
            self.standardization.apply_inplace(X_out)

    def empty(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Fresh buffers for ``n`` rows."""
        return np.empty((n, self.n_features), dtype=self.dtype), np.empty(n, dtype=self.y.dtype)


class InMemoryEpochs:
    """The training rows copied once, gathered per epoch into one buffer (module docstring)."""

    def __init__(self, reader: RowReader, rows: np.ndarray) -> None:
        self.reader = reader
        self.rows = rows
        self.n_rows = rows.shape[0]
        self._positions = np.arange(self.n_rows, dtype=np.intp)
        # Made at the first ``segments``: the small-batch fast path (``AugmentedEpochs``)
        # serves its epochs without them.
        self._X_rows, self._y_rows = reader.empty(0)
        self._X, self._y = reader.empty(0)

    def training_rows(self) -> Segment:
        """The training rows ``(n, d)``, ``(n,)`` in file order: C-contiguous, the config's
        dtype, standardised; read from the source once, at the first call."""
        if self._X_rows.shape[0] != self.n_rows:
            self._X_rows, self._y_rows = self.reader.empty(self.n_rows)
            self.reader.read(self.rows, self._X_rows, self._y_rows)
        return self._X_rows, self._y_rows

    def epoch_positions(self, rng: np.random.Generator) -> np.ndarray:
        """The epoch's shuffled positions p (into ``rows``): the epoch serves ``rows[p]``."""
        # Reset before shuffling so the order depends only on the rng state (resumable); in
        # pieces, so no temporary of n indices.
        step = chunk_rows(self._positions.itemsize)
        for start in range(0, self.n_rows, step):
            stop = min(start + step, self.n_rows)
            self._positions[start:stop] = np.arange(start, stop, dtype=np.intp)
        rng.shuffle(self._positions)
        return self._positions

    def segments(self, batch_size: int, rng: np.random.Generator | None) -> Iterator[Segment]:
        """One segment: the whole epoch in order (``rng`` None: the copy itself, file order)."""
        del batch_size  # one segment holds every batch
        X_rows, y_rows = self.training_rows()
        if rng is None:
            yield X_rows, y_rows
            return
        if self._X.shape[0] != self.n_rows:
            self._X, self._y = self.reader.empty(self.n_rows)
        positions = self.epoch_positions(rng)
        np.take(X_rows, positions, axis=0, out=self._X, mode="clip")
        np.take(y_rows, positions, out=self._y, mode="clip")
        yield self._X, self._y


#: The [x | 1 | y] rows of one chunk fill about this much: half a 512 KiB L2 cache, so a
#: chunk is still in cache when its steps read it.
AUGMENTED_CHUNK_BYTES = 256 * 1024


class AugmentedEpochs:
    """The training rows as E = [x | 1 | y] ``(n, d + 2)`` for the small-batch fast path
    (``fused_sgd.AugmentedSGD``): cast and standardised once, in file order.

    Each epoch serves the same row order as ``InMemoryEpochs`` (its ``epoch_positions``, the
    same rng draws) in chunks of about ``AUGMENTED_CHUNK_BYTES``, each gathered just before
    its steps run, while it is in cache. Memory: E is the training rows plus 2 columns, and
    replaces ``InMemoryEpochs``' buffer (never allocated while only this path runs).
    Needs float targets (regression, binary).
    """

    def __init__(self, epochs: InMemoryEpochs) -> None:
        reader = epochs.reader
        self.epochs = epochs
        self.n_rows = epochs.n_rows
        d = reader.n_features
        self.width = d + 2
        self.rows = np.empty((self.n_rows, self.width), dtype=reader.dtype)
        step = chunk_rows(reader.row_bytes)
        X_chunk, y_chunk = reader.empty(min(step, self.n_rows))
        for start in range(0, self.n_rows, step):
            stop = min(start + step, self.n_rows)
            m = stop - start
            reader.read(epochs.rows[start:stop], X_chunk[:m], y_chunk[:m])
            self.rows[start:stop, :d] = X_chunk[:m]
            self.rows[start:stop, d] = 1.0
            self.rows[start:stop, d + 1] = y_chunk[:m]
        self._chunk = np.empty((0, self.width), dtype=reader.dtype)

    def chunk_rows(self, batch_size: int) -> int:
        """Rows per chunk: whole batches, about ``AUGMENTED_CHUNK_BYTES``."""
        per_chunk: int = AUGMENTED_CHUNK_BYTES // (self.width * self.rows.itemsize)
        return max(1, per_chunk // batch_size) * batch_size

    def chunks(self, batch_size: int, rng: np.random.Generator | None) -> Iterator[np.ndarray]:
        """The epoch's rows (n, d + 2) in order, as views of whole batches (the last chunk
        ends with the partial batch, if any); ``rng`` None: file order, no gather."""
        size = self.chunk_rows(batch_size)
        if rng is None:
            for start in range(0, self.n_rows, size):
                yield self.rows[start : start + size]
            return
        positions = self.epochs.epoch_positions(rng)
        if self._chunk.shape[0] != min(size, self.n_rows):
            self._chunk = np.empty((min(size, self.n_rows), self.width), dtype=self.rows.dtype)
        for start in range(0, self.n_rows, size):
            picked = positions[start : start + size]
            m = picked.shape[0]
            np.take(self.rows, picked, axis=0, out=self._chunk[:m], mode="clip")
            yield self._chunk[:m]


class ChunkedEpochs:
    """Block-and-window shuffle with a bounded buffer (see the module docstring)."""

    def __init__(self, reader: RowReader, rows: np.ndarray, *, max_bytes: int) -> None:
        self.reader = reader
        self.rows = rows
        self.n_rows = rows.shape[0]
        window_rows = max(1, min(self.n_rows, max_bytes // reader.row_bytes))
        self.block_rows = max(1, window_rows // BLOCKS_PER_WINDOW)
        self.n_blocks = math.ceil(self.n_rows / self.block_rows)
        self._buffer_rows = 0
        self._X, self._y = reader.empty(0)

    def _buffers(self, rows: int) -> tuple[np.ndarray, np.ndarray]:
        if rows > self._buffer_rows:
            self._X, self._y = self.reader.empty(rows)
            self._buffer_rows = rows
        return self._X, self._y

    def window_indices(self, rng: np.random.Generator | None) -> Iterator[np.ndarray]:
        """The epoch's row order, one window at a time."""
        block_order = np.arange(self.n_blocks) if rng is None else rng.permutation(self.n_blocks)
        br = self.block_rows
        for w in range(0, self.n_blocks, BLOCKS_PER_WINDOW):
            blocks = block_order[w : w + BLOCKS_PER_WINDOW]
            idx = np.concatenate([self.rows[b * br : (b + 1) * br] for b in blocks])
            if rng is not None:
                rng.shuffle(idx)
            yield idx

    def segments(self, batch_size: int, rng: np.random.Generator | None) -> Iterator[Segment]:
        """Windows of whole batches; a partial batch carries over into the next window."""
        window = BLOCKS_PER_WINDOW * self.block_rows
        X_buf, y_buf = self._buffers(window + batch_size - 1)
        carry = 0
        for idx in self.window_indices(rng):
            m = idx.shape[0]
            self.reader.read(idx, X_buf[carry : carry + m], y_buf[carry : carry + m])
            total = carry + m
            full = total - total % batch_size
            if full:
                yield X_buf[:full], y_buf[:full]
                carry = total - full
                # Source and destination do not overlap: carry < batch_size ≤ full.
                X_buf[:carry] = X_buf[full:total]
                y_buf[:carry] = y_buf[full:total]
            else:
                carry = total
        if carry:
            yield X_buf[:carry], y_buf[:carry]


EpochSource = InMemoryEpochs | ChunkedEpochs


def make_epoch_source(reader: RowReader, rows: np.ndarray, *, max_bytes: int) -> EpochSource:
    """In memory when the training rows fit in ``max_bytes`` (config dtype), else chunked."""
    if rows.shape[0] * reader.row_bytes <= max_bytes:
        return InMemoryEpochs(reader, rows)
    return ChunkedEpochs(reader, rows, max_bytes=max_bytes)


class EvalSet:
    """Rows to evaluate on (validation), served in chunks of bounded size.

    Cached once (gathered, standardised) when it fits in ``max_bytes``; otherwise gathered from
    the source chunk by chunk at every evaluation.
    """

    def __init__(self, reader: RowReader, rows: np.ndarray, *, max_bytes: int) -> None:
        self.reader = reader
        self.rows = rows
        self.n_rows = rows.shape[0]
        self.chunk = max(1, min(self.n_rows, chunk_rows(reader.row_bytes) * 8))
        self._cached: Segment | None = None
        if self.n_rows * reader.row_bytes <= max_bytes:
            X_all, y_all = reader.empty(self.n_rows)
            reader.read(rows, X_all, y_all)
            self._cached = (X_all, y_all)
        else:
            self._X, self._y = reader.empty(self.chunk)

    def chunks(self) -> Iterator[Segment]:
        """``(X_chunk, y_chunk)`` views covering every row once, in order."""
        for start in range(0, self.n_rows, self.chunk):
            stop = min(start + self.chunk, self.n_rows)
            if self._cached is not None:
                yield self._cached[0][start:stop], self._cached[1][start:stop]
            else:
                m = stop - start
                self.reader.read(self.rows[start:stop], self._X[:m], self._y[:m])
                yield self._X[:m], self._y[:m]
