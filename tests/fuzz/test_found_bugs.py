"""The bugs the fuzzers found, each pinned by its minimal reproduction (both were 500s)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from service.datasets.ingest import IngestLimits, parse_file, parse_inline, summarize
from service.errors import InvalidInput

LIMITS = IngestLimits(max_rows=100, max_features=10)


def _npy_with_header(header: bytes) -> bytes:
    """An NPY 1.0 file whose header text is ``header`` (padded, as NumPy writes it)."""
    text = header + b" " * (-(10 + len(header) + 1) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + len(text).to_bytes(2, "little") + text


@pytest.mark.parametrize(
    "header",
    [
        b"{'descr': '<f8', 'fortran_order': False, 'shape': (2, 2",  # unclosed bracket
        b"{'descr': '<f8', 'fortran_order': False, 'shape': (2, 2), '''}",  # unclosed string
        b"{'descr': '<f8', 'fortran_order': False, 'shape': (2, 2)) }",  # unmatched bracket
    ],
)
def test_corrupt_npy_header_is_422_not_500(tmp_path: Path, header: bytes) -> None:
    path = tmp_path / "bad.npy"
    path.write_bytes(_npy_with_header(header))
    with pytest.raises(InvalidInput) as caught:
        parse_file(path, "npy", target=None, limits=LIMITS)
    assert caught.value.errors[0].type == "corrupt_file"
    assert "not a valid NPY file" in caught.value.detail


def test_statistics_of_values_near_the_float64_limit_are_exact_and_finite() -> None:
    """Finite values up to 1.8e308 overflowed the sums and squares: mean and std were inf or
    NaN (the response said ``null`` where its schema says number; PostgreSQL's JSON refuses
    ``Infinity``). Scaled by a power of two, they come out exact."""
    big = 1.7e308
    parsed = parse_inline([[big], [-big], [1e308]], [big, big, 0.0], limits=LIMITS)
    summary = summarize(parsed)
    (feature,) = summary.stats
    assert feature.mean == pytest.approx((big - big + 1e308) / 3, rel=1e-15)
    m = math.ldexp(feature.mean, -1024)
    scaled = [math.ldexp(v, -1024) - m for v in (big, -big, 1e308)]  # scaled: no overflow
    expected_std = math.ldexp(math.sqrt(sum(d * d for d in scaled) / 3), 1024)
    assert feature.std == pytest.approx(expected_std, rel=1e-12)
    assert summary.target_stats.mean == pytest.approx(big / 3 * 2, rel=1e-15)
    assert summary.target_stats.std == pytest.approx(big / 3 * math.sqrt(2), rel=1e-12)
    for value in (feature.mean, feature.std, summary.target_stats.mean, summary.target_stats.std):
        assert math.isfinite(value)


def test_scaling_keeps_ordinary_statistics_bit_exact() -> None:
    """A power-of-two scale is exact in binary: small data gives NumPy's own figures."""
    X = np.array([[2.0, 60.0], [3.0, 90.0], [4.0, 120.0], [0.1, -7.25]])
    y = np.array([100.5, 150.25, 210.0, 3.0])
    summary = summarize(parse_inline(X.tolist(), y.tolist(), limits=LIMITS))
    assert [s.mean for s in summary.stats] == pytest.approx(X.mean(axis=0).tolist(), rel=1e-15)
    assert [s.std for s in summary.stats] == pytest.approx(X.std(axis=0).tolist(), rel=1e-15)
    assert summary.target_stats.std == pytest.approx(float(y.std()), rel=1e-15)
