"""Every way an NPZ archive is refused before its data is read, through the parser: the
status, the member named, and what to do."""

from __future__ import annotations

import bz2
import io
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest

from service.datasets.ingest import IngestLimits, ParsedDataset, parse_file
from service.datasets.ingest_numpy import MAX_FEATURE_NAME_CHARS, MAX_NPZ_DIRECTORY_BYTES
from service.errors import BatchwiseError, InvalidInput, PayloadTooLarge
from tests.support.archives import Member, array_member, declared_member, npz, training_arrays

LIMITS = IngestLimits(max_rows=10_000, max_features=10, max_decompressed_bytes=1024 * 1024)


def parse(tmp_path: Path, archive: bytes, limits: IngestLimits = LIMITS) -> ParsedDataset:
    path = tmp_path / "a.npz"
    path.write_bytes(archive)
    return parse_file(path, "npz", target=None, limits=limits)


def refusal(
    tmp_path: Path, archive: bytes, kind: type[BatchwiseError] = InvalidInput
) -> BatchwiseError:
    with pytest.raises(kind) as info:
        parse(tmp_path, archive)
    return info.value


def test_the_archives_are_valid_npz_files(tmp_path: Path) -> None:
    """The hand-written archives read back with NumPy and pass the parser."""
    X, y = training_arrays(10)
    names = array_member("feature_names.npy", np.array(["a", "b"]))
    archive = npz(X, y, names)
    assert np.array_equal(np.load(io.BytesIO(archive))["X"], np.arange(20.0).reshape(10, 2))
    parsed = parse(tmp_path, archive)
    assert (parsed.n_rows, parsed.feature_names) == (10, ("a", "b"))


def test_other_members_are_ignored_without_being_read(tmp_path: Path) -> None:
    """An unknown member may even be a bomb or corrupt: it is never opened."""
    X, y = training_arrays(10)
    bomb = declared_member("notes.npy", (10**12,), "<U1", data_bytes=16)
    broken = Member("weights.npy", b"not deflate", 10**9, 0)
    assert parse(tmp_path, npz(X, y, bomb, broken)).n_rows == 10


def test_the_decompressed_cap_counts_every_member_read(tmp_path: Path) -> None:
    """X 640 128 B + y 80 128 B + names = just under, then just over, 1 MiB."""
    names_at = declared_member("feature_names.npy", (10,), "<U4")  # 160 B of data
    X = declared_member("X.npy", (8_000, 10), "<f8")
    y = declared_member("y.npy", (8_000,), "<f8")
    total = X.file_size + y.file_size + names_at.file_size
    limits = IngestLimits(max_rows=10_000, max_features=10, max_decompressed_bytes=total)
    with pytest.raises(InvalidInput, match="column name is empty"):  # past the cap: read
        parse(tmp_path, npz(X, y, names_at), limits)
    tight = IngestLimits(max_rows=10_000, max_features=10, max_decompressed_bytes=total - 1)
    with pytest.raises(PayloadTooLarge) as info:
        parse(tmp_path, npz(X, y, names_at), tight)
    assert info.value.errors[0].loc == ("file", "X")
    assert info.value.detail == (
        f"the NPZ arrays hold {total} bytes once decompressed ('X' {X.file_size}, "
        f"'y' {y.file_size}, 'feature_names' {names_at.file_size}), more than {total - 1}, the "
        "limit set by BATCHWISE_MAX_DECOMPRESSED_BYTES; upload fewer rows or features, or a "
        "narrower dtype (float32)"
    )


def test_feature_names_longer_than_the_bound_are_refused_from_the_header(
    tmp_path: Path,
) -> None:
    X, y = training_arrays(10)
    fits = array_member("feature_names.npy", np.array(["a" * MAX_FEATURE_NAME_CHARS, "b"]))
    assert parse(tmp_path, npz(X, y, fits)).feature_names[0] == "a" * MAX_FEATURE_NAME_CHARS
    for dtype in (f"<U{MAX_FEATURE_NAME_CHARS + 1}", f"|S{MAX_FEATURE_NAME_CHARS + 1}"):
        too_long = declared_member("feature_names.npy", (2,), dtype)
        error = refusal(tmp_path, npz(X, y, too_long))
        assert error.errors[0].loc == ("file", "feature_names")
        assert error.errors[0].type == "name_too_long"
        assert f"at most {MAX_FEATURE_NAME_CHARS} are accepted" in error.detail


@pytest.mark.parametrize(
    ("shape", "dtype", "found"),
    [
        ((2, 1), "<U3", "dtype <U3 and shape (2, 1)"),
        ((3,), "<U3", "dtype <U3 and shape (3,)"),
        ((2,), "<f8", "dtype float64 and shape (2,)"),
        ((2,), "|O", "dtype object and shape (2,)"),
    ],
)
def test_feature_names_of_the_wrong_shape_or_dtype_are_refused_unread(
    tmp_path: Path, shape: tuple[int, ...], dtype: str, found: str
) -> None:
    X, y = training_arrays(10)
    # The data after the header is not even valid: it is never read.
    names = declared_member("feature_names.npy", shape, dtype)
    error = refusal(tmp_path, npz(X, y, names))
    message = "'feature_names' must be 2 strings (one per column of 'X'), found"
    assert error.detail == f"feature_names: {message} {found}"


def test_a_member_compressed_other_than_deflate_is_refused_unopened(tmp_path: Path) -> None:
    """bzip2 or LZMA decompress a whole read at once, unbounded: only stored and deflated
    members (what NumPy writes) are read."""
    X, _ = training_arrays(10)
    head = np.lib.format.header_data_from_array_1_0(np.zeros(10))
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, head)
    plain = buffer.getvalue() + bytes(80)
    y_bz2 = Member("y.npy", bz2.compress(plain), len(plain), zlib.crc32(plain), method=12)
    error = refusal(tmp_path, npz(X, y_bz2))
    assert error.errors[0].loc == ("file", "y")
    assert error.detail.startswith(
        "y: array 'y' uses zip compression method 12; only stored (0) and deflated (8) "
        "members are read: save the arrays again with numpy.savez"
    )


def test_an_encrypted_member_is_refused(tmp_path: Path) -> None:
    X, y = training_arrays(10)
    locked = Member(y.name, y.data, y.file_size, y.crc, flags=0x1)
    error = refusal(tmp_path, npz(X, locked))
    assert error.detail == "y: array 'y' is encrypted; upload an NPZ file without a password"


def test_an_array_stored_twice_is_refused(tmp_path: Path) -> None:
    X, y = training_arrays(10)
    error = refusal(tmp_path, npz(X, y, Member("X", X.data, X.file_size, X.crc)))
    assert error.errors[0].loc == ("file", "X")
    assert "holds array 'X' twice ('X.npy' and 'X')" in error.detail


def test_a_central_directory_past_the_bound_is_refused_before_zipfile_reads_it(
    tmp_path: Path,
) -> None:
    X, y = training_arrays(10)
    entry = 46 + len(b"pad")
    fits = (MAX_NPZ_DIRECTORY_BYTES - 2 * (46 + len(b"X.npy"))) // entry
    assert parse(tmp_path, npz(X, y, padding_entries=fits)).n_rows == 10
    error = refusal(tmp_path, npz(X, y, padding_entries=fits + 1))
    assert error.errors[0].loc == ("file",)
    assert error.errors[0].type == "too_many_members"


def test_a_zip64_end_record_that_lies_about_the_directory_is_refused(tmp_path: Path) -> None:
    """A ZIP64 end record (as zipfile reads it: just before its locator) declaring a huge
    central directory is seen; one whose locator points elsewhere is corrupt."""
    X, y = training_arrays(10)
    plain = npz(X, y)
    end_at = len(plain) - 22
    entries, directory_bytes, directory_at = struct.unpack_from("<HLL", plain, end_at + 10)

    def with_zip64(directory: int, points_at_offset: int) -> bytes:
        record = struct.pack(
            "<4sQ2H2L4Q", b"PK\x06\x06", 44, 45, 45, 0, 0, entries, entries, directory,
            directory_at,
        )  # fmt: skip
        record_at = end_at
        locator = struct.pack("<4sLQL", b"PK\x06\x07", 0, record_at + points_at_offset, 1)
        return plain[:end_at] + record + locator + plain[end_at:]

    assert parse(tmp_path, with_zip64(directory_bytes, 0)).n_rows == 10
    huge = refusal(tmp_path, with_zip64(1 << 40, 0))
    assert huge.errors[0].type == "too_many_members"
    elsewhere = refusal(tmp_path, with_zip64(directory_bytes, 8))
    assert elsewhere.detail == (
        "not a valid NPZ file: the ZIP64 end record is not where its locator points"
    )
    zipfile.ZipFile(io.BytesIO(with_zip64(directory_bytes, 0))).testzip()
