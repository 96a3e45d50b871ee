"""The canonical stored form: exact bytes, a stable sha256, and read-only memory maps."""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path

import numpy as np
import pytest

from service.datasets import ingest_common
from service.datasets.arrays import (
    CanonicalFileError,
    canonical_header,
    open_canonical,
    write_canonical,
)
from service.datasets.ingest import ParsedDataset

#: sha256 of the canonical file of small(); pinned so that any change of bytes is noticed
#: (NumPy 2.4's own np.save of the same array gives the same bytes).
SMALL_SHA256 = "c7b2ddf18e46fb8de15b770b142fff8c216f33672a1b00a12918b4eb62ec185a"


def small() -> ParsedDataset:
    X = np.array([[1.0, 2.0], [3.0, 4.0], [-0.5, 1e300]])
    y = np.array([5.0, 6.0, 7.0])
    return ParsedDataset(X=X, y=y, feature_names=("a", "b"), target_name="t")


def expected_bytes(parsed: ParsedDataset) -> bytes:
    """The canonical file, built by hand from the NPY 1.0 specification."""
    n_rows, n_columns = parsed.X.shape[0], parsed.X.shape[1] + 1
    text = f"{{'descr': '<f8', 'fortran_order': False, 'shape': ({n_rows}, {n_columns}), }}"
    text += " " * (-(10 + len(text) + 1) % 64) + "\n"
    header = b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text.encode()
    data = np.column_stack([parsed.X, parsed.y]).astype("<f8")
    return header + data.tobytes(order="C")


def test_canonical_bytes_are_the_npy_spec_with_the_target_last(tmp_path: Path) -> None:
    parsed = small()
    dest = tmp_path / "d.npy"
    sha256, size = write_canonical(parsed, dest)
    content = dest.read_bytes()
    assert content == expected_bytes(parsed)
    assert size == len(content) == 128 + 3 * 3 * 8
    assert sha256 == hashlib.sha256(content).hexdigest()
    loaded = np.load(dest)
    assert loaded.dtype == np.float64
    assert loaded.shape == (3, 3)
    assert np.array_equal(loaded, np.column_stack([parsed.X, parsed.y]))


def test_header_is_64_byte_aligned_for_any_shape() -> None:
    for shape in [(2, 2), (10**9, 10_001), (123_456, 7)]:
        header = canonical_header(*shape)
        assert len(header) % 64 == 0
        assert header.endswith(b"\n")
        assert str(shape).encode() in header


def test_sha256_is_stable(tmp_path: Path) -> None:
    first, _ = write_canonical(small(), tmp_path / "one.npy")
    second, _ = write_canonical(small(), tmp_path / "two.npy")
    assert first == second == hashlib.sha256(expected_bytes(small())).hexdigest()
    assert first == SMALL_SHA256


def test_writing_in_many_chunks_gives_the_same_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = np.random.default_rng(0)
    X = np.ascontiguousarray(rng.standard_normal((101, 4)))
    parsed = ParsedDataset(
        X=X, y=rng.standard_normal(101), feature_names=tuple("abcd"), target_name="t"
    )
    monkeypatch.setattr(ingest_common, "ROW_CHUNK_BYTES", 3 * 5 * 8)  # 3 rows per write
    sha256, size = write_canonical(parsed, tmp_path / "d.npy")
    content = (tmp_path / "d.npy").read_bytes()
    assert content == expected_bytes(parsed)
    assert (sha256, size) == (hashlib.sha256(content).hexdigest(), len(content))


def test_write_leaves_no_partial_file(tmp_path: Path) -> None:
    write_canonical(small(), tmp_path / "d.npy")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.npy"]


def test_open_canonical_memory_maps_read_only_views(tmp_path: Path) -> None:
    parsed = small()
    write_canonical(parsed, tmp_path / "d.npy")
    X, y = open_canonical(tmp_path / "d.npy", 2)
    assert isinstance(X.base, np.memmap) or isinstance(X, np.memmap)
    assert np.array_equal(X, parsed.X)
    assert np.array_equal(y, parsed.y)
    assert X.shape == (3, 2)
    assert y.shape == (3,)
    assert not X.flags.writeable
    assert not y.flags.writeable
    with pytest.raises(ValueError, match="read-only"):
        X[0, 0] = 1.0
    with pytest.raises(ValueError, match="read-only"):
        y[0] = 1.0


def test_open_canonical_without_mmap_reads_into_memory(tmp_path: Path) -> None:
    parsed = small()
    write_canonical(parsed, tmp_path / "d.npy")
    X, y = open_canonical(tmp_path / "d.npy", 2, mmap=False)
    assert not isinstance(X, np.memmap)
    assert not isinstance(X.base, np.memmap)
    assert np.array_equal(X, parsed.X)
    assert np.array_equal(y, parsed.y)


def test_open_canonical_refuses_a_mismatched_or_corrupt_file(tmp_path: Path) -> None:
    path = tmp_path / "d.npy"
    write_canonical(small(), path)
    with pytest.raises(CanonicalFileError, match=r"shape \(n, 4\), found dtype float64, shape"):
        open_canonical(path, 3)
    np.save(tmp_path / "f32.npy", np.zeros((3, 3), dtype=np.float32))
    with pytest.raises(CanonicalFileError, match="found dtype float32"):
        open_canonical(tmp_path / "f32.npy", 2)
    np.save(tmp_path / "fortran.npy", np.asfortranarray(np.zeros((3, 3))))
    with pytest.raises(CanonicalFileError, match="C-order"):
        open_canonical(tmp_path / "fortran.npy", 2)
    (tmp_path / "junk.npy").write_bytes(b"junk")
    with pytest.raises(CanonicalFileError, match="not a readable NPY file"):
        open_canonical(tmp_path / "junk.npy", 2)
    truncated = tmp_path / "truncated.npy"
    truncated.write_bytes(path.read_bytes()[:-8])
    with pytest.raises(CanonicalFileError, match="not a readable NPY file"):
        open_canonical(truncated, 2)
