"""Dataset ingestion: formats, exact values, every refusal with its exact location, summaries."""

from __future__ import annotations

import re
import zipfile
from pathlib import Path

import numpy as np
import pytest

from service.datasets import ingest, ingest_common, ingest_csv
from service.datasets.ingest import (
    IngestLimits,
    ParsedDataset,
    detect_format,
    parse_file,
    parse_inline,
    summarize,
)
from service.errors import BatchwiseError, InvalidInput, PayloadTooLarge, UnsupportedMediaType

LIMITS = IngestLimits(max_rows=1_000, max_features=50)


def write(tmp_path: Path, content: bytes | str, name: str = "data.csv") -> Path:
    path = tmp_path / name
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


def parse_csv_text(
    tmp_path: Path,
    content: bytes | str,
    *,
    target: str | None = None,
    limits: IngestLimits = LIMITS,
    invalid_rows: ingest.InvalidRows = "error",
) -> ParsedDataset:
    path = write(tmp_path, content)
    return parse_file(path, "csv", target=target, limits=limits, invalid_rows=invalid_rows)


def locs(error: BatchwiseError) -> list[tuple[str | int, ...]]:
    return [e.loc for e in error.errors]


def assert_clean(parsed: ParsedDataset) -> None:
    """The ParsedDataset contract: float64, C-contiguous, finite, consistent shapes."""
    assert parsed.X.dtype == np.float64
    assert parsed.y.dtype == np.float64
    assert parsed.X.flags.c_contiguous
    assert parsed.y.flags.c_contiguous
    assert parsed.X.ndim == 2
    assert parsed.y.shape == (parsed.X.shape[0],)
    assert len(parsed.feature_names) == parsed.X.shape[1]
    assert np.isfinite(parsed.X).all()
    assert np.isfinite(parsed.y).all()


# -- detect_format --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("filename", "content_type", "head", "expected"),
    [
        ("data.csv", "application/octet-stream", b"\x93NUMPY\x01\x00", "npy"),  # magic wins
        (None, None, b"PK\x03\x04rest", "npz"),
        ("DATA.CSV", None, b"a,b\n1,2\n", "csv"),
        ("dir\\data.npy", None, b"garbage", "npy"),  # a Windows path; the NPY parser refuses
        ("x.npz", None, b"", "npz"),
        (None, "text/csv; charset=utf-8", b"a,b\n", "csv"),
        ("upload", "application/vnd.ms-excel", b"a,b\n", "csv"),
        ("upload.bin", "application/x-npy", b"", "npy"),
    ],
)
def test_detect_format_by_magic_then_extension_then_content_type(
    filename: str | None, content_type: str | None, head: bytes, expected: str
) -> None:
    assert detect_format(filename, content_type, head) == expected


def test_detect_format_refuses_unknown_naming_what_was_seen_and_accepted() -> None:
    with pytest.raises(UnsupportedMediaType) as info:
        detect_format("table.xlsx", "application/octet-stream", b"\x00\x01")
    assert info.value.status == 415
    detail = info.value.detail
    assert "'table.xlsx'" in detail
    assert "'application/octet-stream'" in detail
    assert "CSV" in detail
    assert "NPY" in detail
    assert "NPZ" in detail


def test_detect_format_refuses_gzip_even_when_named_csv() -> None:
    with pytest.raises(UnsupportedMediaType, match="gzip"):
        detect_format("data.csv.gz", None, b"\x1f\x8b\x08\x00")
    with pytest.raises(UnsupportedMediaType, match="no file name, no content type"):
        detect_format(None, None, b"a,b\n")


# -- CSV: good files ------------------------------------------------------------------------------


def test_csv_round_trip_is_exact_for_every_float64(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    data = rng.standard_normal((50, 4)) * 10.0 ** rng.integers(-300, 300, size=(50, 4))
    data[0, 0], data[1, 1] = 5e-324, -1.7976931348623157e308  # smallest subnormal, most negative
    lines = ["a,b,c,target"] + [",".join(repr(float(v)) for v in row) for row in data]
    parsed = parse_csv_text(tmp_path, "\n".join(lines) + "\n")
    assert_clean(parsed)
    assert np.array_equal(parsed.X, data[:, :3])
    assert np.array_equal(parsed.y, data[:, 3])
    assert parsed.feature_names == ("a", "b", "c")
    assert parsed.target_name == "target"
    assert parsed.dropped_rows == 0


def test_csv_target_by_name_by_index_and_default_last(tmp_path: Path) -> None:
    content = "a,b,c\n1,2,3\n4,5,6\n"
    default = parse_csv_text(tmp_path, content)
    by_name = parse_csv_text(tmp_path, content, target="a")
    by_index = parse_csv_text(tmp_path, content, target="1")
    assert (default.target_name, default.feature_names) == ("c", ("a", "b"))
    assert np.array_equal(default.y, [3.0, 6.0])
    assert (by_name.target_name, by_name.feature_names) == ("a", ("b", "c"))
    assert np.array_equal(by_name.X, [[2.0, 3.0], [5.0, 6.0]])
    assert np.array_equal(by_name.y, [1.0, 4.0])
    assert (by_index.target_name, by_index.feature_names) == ("b", ("a", "c"))
    assert np.array_equal(by_index.X, [[1.0, 3.0], [4.0, 6.0]])
    assert np.array_equal(by_index.y, [2.0, 5.0])


def test_csv_target_name_wins_over_an_index_of_the_same_spelling(tmp_path: Path) -> None:
    parsed = parse_csv_text(tmp_path, "x,0,z\n1,2,3\n4,5,6\n", target="0")
    assert parsed.target_name == "0"
    assert np.array_equal(parsed.y, [2.0, 5.0])


def test_csv_accepts_bom_crlf_spaces_quoted_names_and_trailing_blank_lines(
    tmp_path: Path,
) -> None:
    content = b'\xef\xbb\xbf "a" ,"b c",\tt \r\n 1 ,\t2,3\r\n4 , 5 , 6\r\n\r\n  \r\n'
    parsed = parse_csv_text(tmp_path, content)
    assert parsed.feature_names == ("a", "b c")
    assert parsed.target_name == "t"
    assert np.array_equal(parsed.X, [[1.0, 2.0], [4.0, 5.0]])
    assert np.array_equal(parsed.y, [3.0, 6.0])


def test_csv_accepts_quoted_numbers_and_a_missing_final_line_break(tmp_path: Path) -> None:
    parsed = parse_csv_text(tmp_path, 'a,b\n"1.5","2"\n3,"-4e1"')
    assert np.array_equal(parsed.X, [[1.5], [3.0]])
    assert np.array_equal(parsed.y, [2.0, -40.0])


def test_csv_number_forms_give_pythons_float_exactly(tmp_path: Path) -> None:
    tokens = ["+.5", "5.", "1E+05", "-0", "007", "1e-400", "-1.5e-3", "123456789012345678901"]
    content = "a,b\n" + "".join(f"{token},{i}\n" for i, token in enumerate(tokens))
    parsed = parse_csv_text(tmp_path, content)
    expected = np.array([float(t) for t in tokens])
    assert np.array_equal(parsed.X[:, 0], expected)
    assert np.array_equal(np.signbit(parsed.X[:, 0]), np.signbit(expected))  # -0 stays -0


def random_cell(rng: np.random.Generator) -> str:
    """A random string of the bytes the fast path lets through (digits, signs, e, ., spaces)."""
    return "".join(rng.choice(list("0123456789+-.eE \t"), size=rng.integers(0, 6)))


def reference_value(cell: str) -> float | None:
    """The documented grammar, read independently: a finite decimal number, else None."""
    token = cell.strip(" \t")
    if not re.fullmatch(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?", token):
        return None
    value = float(token)
    return value if np.isfinite(value) else None


def test_csv_random_cells_parse_exactly_as_the_grammar_says(tmp_path: Path) -> None:
    # Whatever NumPy's parser accepts must agree with the documented grammar, value for value.
    rng = np.random.default_rng(11)
    good_rows: list[list[str]] = []
    bad_cells: list[str] = []
    while len(good_rows) < 400 or len(bad_cells) < 60:
        cells = [random_cell(rng), random_cell(rng)]
        values = [reference_value(cell) for cell in cells]
        if None not in values:
            good_rows.append(cells)
        elif reference_value(cells[0]) is not None and cells[1].strip(" \t"):
            bad_cells.append(cells[1])
    parsed = parse_csv_text(tmp_path, "a,b\n" + "".join(f"{a},{b}\n" for a, b in good_rows))
    expected = np.array([[float(cell) for cell in row] for row in good_rows])
    assert np.array_equal(parsed.X[:, 0], expected[:, 0])
    assert np.array_equal(parsed.y, expected[:, 1])
    assert np.array_equal(np.signbit(parsed.y), np.signbit(expected[:, 1]))
    for cell in bad_cells[:60]:
        with pytest.raises(InvalidInput) as info:
            parse_csv_text(tmp_path, f"a,b\n1,2\n3,{cell}\n5,6\n")
        assert locs(info.value) == [("file", "line 3", "column 'b'")], cell


@pytest.mark.parametrize("block_bytes", [1, 7, 64, 1000])
def test_csv_small_blocks_give_the_same_arrays(tmp_path: Path, block_bytes: int) -> None:
    rng = np.random.default_rng(block_bytes)
    data = rng.standard_normal((120, 3)).round(rng.integers(0, 17))
    lines = ["p,q,r"] + [",".join(repr(float(v)) for v in row) for row in data]
    # A NaN row far from the start sends one block down the slow path.
    lines.insert(60, "nan,1,2")
    path = write(tmp_path, "\r\n".join(lines) + "\r\n")
    parsed = ingest_csv.parse_csv(
        path, target=None, limits=LIMITS, invalid_rows="drop", block_bytes=block_bytes
    )
    assert_clean(parsed)
    assert parsed.dropped_rows == 1
    assert np.array_equal(parsed.X, data[:, :2])
    assert np.array_equal(parsed.y, data[:, 2])


def test_csv_output_grows_when_later_rows_are_shorter_than_the_first(tmp_path: Path) -> None:
    # The first block has long rows, so the size estimate falls short and X must grow.
    long_rows = [f"{1 / 3!r},{2 / 3!r}" for _ in range(20)]
    short_rows = [f"{i},{-i}" for i in range(2000)]
    path = write(tmp_path, "\n".join(["a,b", *long_rows, *short_rows]) + "\n")
    parsed = ingest_csv.parse_csv(
        path, target=None, limits=LIMITS.__class__(10_000, 5), block_bytes=800
    )
    assert_clean(parsed)
    assert parsed.n_rows == 2020
    assert np.array_equal(parsed.X[:20, 0], np.full(20, 1 / 3))
    assert np.array_equal(parsed.X[20:, 0], np.arange(2000.0))
    assert np.array_equal(parsed.y[20:], -np.arange(2000.0))


# -- CSV: refusals, each naming where -------------------------------------------------------------


@pytest.mark.parametrize("content", [b"", b"\xef\xbb\xbf", b"\n\n  \r\n"])
def test_csv_empty_file(tmp_path: Path, content: bytes) -> None:
    with pytest.raises(InvalidInput, match="the file is empty") as info:
        parse_csv_text(tmp_path, content)
    assert info.value.status == 422
    assert locs(info.value) == [("file",)]


def test_csv_blank_first_line_is_not_a_header(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="line 1 is blank") as info:
        parse_csv_text(tmp_path, "\na,b\n1,2\n3,4\n")
    assert locs(info.value) == [("file", "line 1")]


def test_csv_header_only(tmp_path: Path) -> None:
    for content in ("a,b", "a,b\n", "a,b\r\n\r\n"):
        with pytest.raises(InvalidInput, match="header row but no data rows") as info:
            parse_csv_text(tmp_path, content)
        assert locs(info.value) == [("file",)]


def test_csv_fewer_than_two_rows(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="at least two rows, found 1") as info:
        parse_csv_text(tmp_path, "a,b\n1,2\n")
    assert locs(info.value) == [("file",)]


def test_csv_ragged_row_names_line_and_counts(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput) as info:
        parse_csv_text(tmp_path, "a,b,c\n1,2,3\n4,5\n7,8,9\n")
    [error] = info.value.errors
    assert error.loc == ("file", "line 3")
    assert error.msg == "expected 3 fields (as in the header), found 2"
    assert info.value.detail == "line 3: expected 3 fields (as in the header), found 2"


def test_csv_trailing_comma_is_an_extra_field(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match=r"expected 2 fields .* found 3") as info:
        parse_csv_text(tmp_path, "a,b\n1,2\n3,4,\n")
    assert locs(info.value) == [("file", "line 3")]


@pytest.mark.parametrize("invalid_rows", ["error", "drop"])
@pytest.mark.parametrize(
    "cell", ["abc", "1,5", "1_000", "0x10", "1.2.3", "1e", "+-1", ".", "1 2", "12%", "١٢"]
)
def test_csv_non_numeric_cell_names_line_and_column_even_when_dropping(
    tmp_path: Path, cell: str, invalid_rows: ingest.InvalidRows
) -> None:
    quoted = f'"{cell}"' if "," in cell else cell
    with pytest.raises(InvalidInput) as info:
        parse_csv_text(tmp_path, f"a,age\n1,2\n3,{quoted}\n", invalid_rows=invalid_rows)
    [error] = info.value.errors
    assert error.loc == ("file", "line 3", "column 'age'")
    assert error.msg == f"{cell!r} is not a number"


@pytest.mark.parametrize(
    ("cell", "message"),
    [
        ("nan", "'nan' is not a finite number"),
        ("NaN", "'NaN' is not a finite number"),
        ("-inf", "'-inf' is not a finite number"),
        ("Infinity", "'Infinity' is not a finite number"),
        ("1e309", "'1e309' overflows float64"),
        ("-2e308", "'-2e308' overflows float64"),
        ("", "the cell is empty"),
        ("  ", "the cell is empty"),
    ],
)
def test_csv_non_finite_cell_is_an_error_naming_line_and_column(
    tmp_path: Path, cell: str, message: str
) -> None:
    with pytest.raises(InvalidInput) as info:
        parse_csv_text(tmp_path, f"a,b,c\n1,2,3\n4,5,6\n7,{cell},9\n")
    [error] = info.value.errors
    assert error.loc == ("file", "line 4", "column 'b'")
    assert error.msg.startswith(message)


def test_csv_drop_mode_drops_and_counts_non_finite_rows(tmp_path: Path) -> None:
    content = "a,b,c\n1,2,3\nnan,5,6\n7,,9\n10,11,1e999\n12,13,14\n -inf ,1,2\n"
    parsed = parse_csv_text(tmp_path, content, invalid_rows="drop")
    assert parsed.dropped_rows == 4
    assert np.array_equal(parsed.X, [[1.0, 2.0], [12.0, 13.0]])
    assert np.array_equal(parsed.y, [3.0, 14.0])


def test_csv_drop_mode_that_leaves_one_row_says_how_many_were_dropped(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="found 1 after dropping 2") as info:
        parse_csv_text(tmp_path, "a,b\n1,2\nnan,1\n3,inf\n", invalid_rows="drop")
    assert locs(info.value) == [("file",)]


def test_csv_several_problems_are_all_listed(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput) as info:
        parse_csv_text(tmp_path, "a,b\n1,x\n2\n3,nan\n4,5\n")
    assert locs(info.value) == [
        ("file", "line 2", "column 'b'"),
        ("file", "line 3"),
        ("file", "line 4", "column 'b'"),
    ]
    # A text cell among them: what to do about text follows the count.
    assert "'x' is not a number (and 2 more problems). Every column must hold numbers: " in (
        info.value.detail
    )


def test_csv_empty_and_duplicate_column_names(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput) as info:
        parse_csv_text(tmp_path, "a,,b, a\n1,2,3,4\n5,6,7,8\n")
    assert [(e.loc, e.msg) for e in info.value.errors] == [
        (("file", "line 1", "column index 1"), "the column name is empty"),
        (
            ("file", "line 1", "column index 3"),
            "duplicate column name 'a' (also column index 0)",
        ),
    ]


def test_csv_target_absent_lists_the_columns(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput) as info:
        parse_csv_text(tmp_path, "age,height,label\n1,2,3\n4,5,6\n", target="price")
    [error] = info.value.errors
    assert error.loc == ("target",)
    assert error.msg == (
        "target column 'price' is not in the file; its columns are 'age', 'height', 'label'"
    )


def test_csv_target_index_out_of_range(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match=r"index 3 is out of range.*indices 0 to 2") as info:
        parse_csv_text(tmp_path, "a,b,c\n1,2,3\n4,5,6\n", target="3")
    assert locs(info.value) == [("target",)]


def test_csv_bytes_that_are_not_utf8_name_the_line(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput) as info:
        parse_csv_text(tmp_path, b"a,b\n1,2\n3,\xe9t\xe9\n")
    [error] = info.value.errors
    assert error.loc == ("file", "line 3")
    assert error.msg == "not valid UTF-8: byte 0xe9 at position 2 of the line"
    with pytest.raises(InvalidInput) as info:
        parse_csv_text(tmp_path, b"caf\xe9,b\n1,2\n3,4\n")
    assert locs(info.value) == [("file", "line 1")]


def test_csv_utf8_names_are_fine(tmp_path: Path) -> None:
    parsed = parse_csv_text(tmp_path, "âge,größe\n1,2\n3,4\n".encode())
    assert parsed.feature_names == ("âge",)
    assert parsed.target_name == "größe"


def test_csv_blank_line_inside_the_data_names_the_blank_line(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput) as info:
        parse_csv_text(tmp_path, "a,b\n1,2\n3,4\n\n \n5,6\n")
    [error] = info.value.errors
    assert error.loc == ("file", "line 4")
    assert error.msg.startswith("blank line inside the data")


@pytest.mark.parametrize("block_bytes", [2, 5, 9, 4096])
def test_csv_blank_line_found_across_block_boundaries(tmp_path: Path, block_bytes: int) -> None:
    rows = "".join(f"{i},{i}\n" for i in range(30))
    path = write(tmp_path, f"a,b\n{rows}\n{rows}")
    with pytest.raises(InvalidInput) as info:
        ingest_csv.parse_csv(path, target=None, limits=LIMITS, block_bytes=block_bytes)
    assert locs(info.value) == [("file", "line 32")]


@pytest.mark.parametrize("block_bytes", [3, 16, 4096])
def test_csv_error_line_numbers_hold_across_blocks(tmp_path: Path, block_bytes: int) -> None:
    rows = [f"{i},{i}.5" for i in range(200)]
    rows[150] = "150,oops"
    path = write(tmp_path, "a,b\r\n" + "\r\n".join(rows) + "\r\n")
    with pytest.raises(InvalidInput) as info:
        ingest_csv.parse_csv(path, target=None, limits=LIMITS, block_bytes=block_bytes)
    assert locs(info.value) == [("file", "line 152", "column 'b'")]


def test_csv_header_of_numbers_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="header row of column names") as info:
        parse_csv_text(tmp_path, "1,2\n3,4\n5,6\n")
    assert locs(info.value) == [("file", "line 1")]


def test_csv_single_column_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="at least two") as info:
        parse_csv_text(tmp_path, "a\n1\n2\n")
    assert locs(info.value) == [("file", "line 1")]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("a;b\n1;2\n3;4\n", r"at least two .* \(it looks separated by semicolons; use commas\)"),
        ("a\tb\n1\t2\n3\t4\n", r"\(it looks separated by tabs; use commas\)"),
        ("a,b\r1,2\r3,4\r", "bare carriage return"),
    ],
)
def test_csv_other_separators_are_named(tmp_path: Path, content: str, message: str) -> None:
    with pytest.raises(InvalidInput, match=message) as info:
        parse_csv_text(tmp_path, content)
    assert locs(info.value) == [("file", "line 1")]


def test_csv_too_many_rows_stops_reading_early(tmp_path: Path) -> None:
    # Rows past the limit are garbage: reading them would be a 422, not the 413 we expect.
    rows = "".join(f"{i},{i}\n" for i in range(20)) + "x,y\n" * 1000
    path = write(tmp_path, "a,b\n" + rows)
    limits = IngestLimits(max_rows=10, max_features=5)
    with pytest.raises(PayloadTooLarge) as info:
        ingest_csv.parse_csv(path, target=None, limits=limits, block_bytes=32)
    assert info.value.status == 413
    assert "more than 10 rows" in info.value.detail
    assert "BATCHWISE_MAX_ROWS" in info.value.detail


def test_csv_too_many_features_is_refused_from_the_header(tmp_path: Path) -> None:
    header = ",".join(f"f{i}" for i in range(6))
    with pytest.raises(PayloadTooLarge) as info:
        parse_csv_text(tmp_path, header + "\nx\n", limits=IngestLimits(100, 4))
    assert "5 feature columns, more than 4" in info.value.detail
    assert "BATCHWISE_MAX_FEATURES" in info.value.detail
    assert locs(info.value) == [("file", "line 1")]


def test_csv_header_without_line_break_past_the_limit_is_too_many_features(
    tmp_path: Path,
) -> None:
    path = write(tmp_path, ",".join(f"c{i}" for i in range(400_000)))
    with pytest.raises(PayloadTooLarge, match="BATCHWISE_MAX_FEATURES"):
        ingest_csv.parse_csv(path, target=None, limits=IngestLimits(10, 5), block_bytes=1 << 16)


def test_csv_endless_data_line_is_refused_naming_it(tmp_path: Path) -> None:
    path = write(tmp_path, "a,b\n1,2\n" + "9" * (1 << 21))
    with pytest.raises(InvalidInput, match="without a line break") as info:
        ingest_csv.parse_csv(path, target=None, limits=LIMITS, block_bytes=1 << 16)
    assert locs(info.value) == [("file", "line 3")]


# -- NPY ------------------------------------------------------------------------------------------


def save_npy(tmp_path: Path, array: np.ndarray, name: str = "data.npy") -> Path:
    path = tmp_path / name
    np.save(path, array, allow_pickle=True)
    return path


def test_npy_round_trip_target_last_by_default(tmp_path: Path) -> None:
    data = np.random.default_rng(1).standard_normal((6, 4))
    parsed = parse_file(save_npy(tmp_path, data), "npy", target=None, limits=LIMITS)
    assert_clean(parsed)
    assert parsed.feature_names == ("x0", "x1", "x2")
    assert parsed.target_name == "y"
    assert np.array_equal(parsed.X, data[:, :3])
    assert np.array_equal(parsed.y, data[:, 3])


def test_npy_target_by_index_or_positional_name_keeps_feature_positions(tmp_path: Path) -> None:
    data = np.arange(12.0).reshape(4, 3)
    path = save_npy(tmp_path, data)
    for target in ("0", "x0"):
        parsed = parse_file(path, "npy", target=target, limits=LIMITS)
        assert parsed.feature_names == ("x1", "x2")
        assert parsed.target_name == "y"
        assert np.array_equal(parsed.X, data[:, 1:])
        assert np.array_equal(parsed.y, data[:, 0])
    with pytest.raises(InvalidInput, match="'x0', 'x1', 'x2'") as info:
        parse_file(path, "npy", target="label", limits=LIMITS)
    assert locs(info.value) == [("target",)]


@pytest.mark.parametrize(
    "array",
    [
        np.arange(8, dtype=np.int32).reshape(4, 2),
        np.array([[True, False], [False, True]]),
        np.arange(8.0).reshape(4, 2).astype(">f8"),
        np.asfortranarray(np.arange(8.0).reshape(4, 2)),
        np.arange(8, dtype=np.float32).reshape(4, 2) / 3,
        np.arange(8, dtype=np.uint64).reshape(4, 2),
    ],
)
def test_npy_numeric_dtypes_and_orders_convert_exactly(tmp_path: Path, array: np.ndarray) -> None:
    parsed = parse_file(save_npy(tmp_path, array), "npy", target=None, limits=LIMITS)
    assert_clean(parsed)
    expected = array.astype(np.float64)
    assert np.array_equal(parsed.X, expected[:, :1])
    assert np.array_equal(parsed.y, expected[:, 1])


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (np.arange(5.0), r"2-D array \(rows, columns\), found shape \(5,\)"),
        (np.zeros((2, 2, 2)), r"found shape \(2, 2, 2\)"),
        (np.array([["a", "b"], ["c", "d"]]), "dtype <U1; numbers are needed"),
        (np.array([[1, None], [2, 3]], dtype=object), "dtype object; numbers are needed"),
        (np.ones((3, 2), dtype=np.complex128), "dtype complex128"),
        (np.zeros(3, dtype=[("a", "f8"), ("b", "f8")]), "numbers are needed"),
        (np.zeros((5, 1)), "1 column"),
        (np.zeros((1, 3)), "at least two rows, found 1"),
        (np.zeros((0, 3)), "at least two rows, found 0"),
    ],
)
def test_npy_refusals(tmp_path: Path, array: np.ndarray, message: str) -> None:
    with pytest.raises(InvalidInput, match=message) as info:
        parse_file(save_npy(tmp_path, array), "npy", target=None, limits=LIMITS)
    assert locs(info.value) == [("file",)]


def test_npy_corrupt_files(tmp_path: Path) -> None:
    good = save_npy(tmp_path, np.ones((10, 3)))
    truncated = write(tmp_path, good.read_bytes()[:-8], "truncated.npy")
    no_magic = write(tmp_path, b"not an npy file at all", "junk.npy")
    bad_header = write(tmp_path, b"\x93NUMPY\x01\x00\x10\x00{'descr': oops}\n", "header.npy")
    for path in (truncated, no_magic, bad_header):
        with pytest.raises(InvalidInput, match="not a valid NPY file") as info:
            parse_file(path, "npy", target=None, limits=LIMITS)
        assert locs(info.value) == [("file",)]


def test_npy_limits_are_checked_from_the_header_before_any_data(tmp_path: Path) -> None:
    # A header that claims a billion rows, with no data behind it: 413, not "corrupt".
    header = np.lib.format.header_data_from_array_1_0(np.zeros((1, 3)))
    header["shape"] = (10**9, 3)
    path = tmp_path / "huge.npy"
    with path.open("wb") as f:
        np.lib.format.write_array_header_1_0(f, header)
    with pytest.raises(PayloadTooLarge, match="BATCHWISE_MAX_ROWS"):
        parse_file(path, "npy", target=None, limits=LIMITS)
    with pytest.raises(PayloadTooLarge, match=r"51 feature columns.*BATCHWISE_MAX_FEATURES"):
        parse_file(save_npy(tmp_path, np.zeros((3, 52))), "npy", target=None, limits=LIMITS)


def test_npy_non_finite_rows_error_or_drop(tmp_path: Path) -> None:
    data = np.arange(15.0).reshape(5, 3)
    data[1, 2] = np.nan
    data[3, 0] = -np.inf
    path = save_npy(tmp_path, data)
    with pytest.raises(InvalidInput) as info:
        parse_file(path, "npy", target=None, limits=LIMITS)
    assert locs(info.value) == [("file", "row 1", "column 'x2'"), ("file", "row 3", "column 'x0'")]
    assert info.value.errors[0].msg == "nan is not a finite number"
    parsed = parse_file(path, "npy", target=None, limits=LIMITS, invalid_rows="drop")
    assert parsed.dropped_rows == 2
    assert np.array_equal(parsed.X, data[[0, 2, 4], :2])
    assert np.array_equal(parsed.y, [2, 8, 14])


# -- NPZ ------------------------------------------------------------------------------------------


def save_npz(tmp_path: Path, compressed: bool = False, **arrays: np.ndarray) -> Path:
    path = tmp_path / "data.npz"
    if compressed:
        np.savez_compressed(path, allow_pickle=True, **arrays)
    else:
        np.savez(path, allow_pickle=True, **arrays)
    return path


@pytest.mark.parametrize("compressed", [False, True])
def test_npz_round_trip(tmp_path: Path, compressed: bool) -> None:
    rng = np.random.default_rng(3)
    X, y = rng.standard_normal((7, 3)), rng.integers(0, 2, size=7)
    path = save_npz(tmp_path, compressed, X=X, y=y, notes=np.array([1, 2]))
    parsed = parse_file(path, "npz", target=None, limits=LIMITS)
    assert_clean(parsed)
    assert parsed.feature_names == ("x0", "x1", "x2")
    assert parsed.target_name == "y"
    assert np.array_equal(parsed.X, X)
    assert np.array_equal(parsed.y, y.astype(np.float64))
    assert parse_file(path, "npz", target="y", limits=LIMITS).target_name == "y"


def test_npz_feature_names_and_column_shaped_y(tmp_path: Path) -> None:
    X, y = np.arange(6.0).reshape(3, 2), np.array([[1.0], [2.0], [3.0]])
    path = save_npz(tmp_path, X=X, y=y, feature_names=np.array(["age", "height"]))
    parsed = parse_file(path, "npz", target=None, limits=LIMITS)
    assert parsed.feature_names == ("age", "height")
    assert np.array_equal(parsed.y, [1.0, 2.0, 3.0])


@pytest.mark.parametrize(
    ("arrays", "loc", "message"),
    [
        ({"X": np.ones((3, 2))}, ("file",), "missing 'y', found 'X'"),
        ({"data": np.ones((3, 2))}, ("file",), "missing 'X' and 'y', found 'data'"),
        ({"X": np.ones(3), "y": np.ones(3)}, ("file", "X"), r"'X' must be 2-D.*\(3,\)"),
        ({"X": np.ones((3, 2)), "y": np.ones((3, 2))}, ("file", "y"), r"'y' must be 1-D"),
        ({"X": np.ones((3, 2)), "y": np.ones(4)}, ("file", "y"), "'X' has 3 rows but 'y' has 4"),
        ({"X": np.ones((3, 0)), "y": np.ones(3)}, ("file", "X"), "no feature columns"),
        ({"X": np.array([["a"]] * 3), "y": np.ones(3)}, ("file", "X"), "dtype <U1"),
        ({"X": np.ones((3, 2)), "y": np.array(["a", "b", "c"])}, ("file", "y"), "dtype <U1"),
        ({"X": np.ones((1, 2)), "y": np.ones(1)}, ("file", "X"), "at least two rows, found 1"),
        (
            {"X": np.ones((3, 2)), "y": np.ones(3), "feature_names": np.array(["a"])},
            ("file", "feature_names"),
            "must be 2 strings",
        ),
        (
            {"X": np.ones((3, 2)), "y": np.ones(3), "feature_names": np.array(["a", "y"])},
            ("file", "feature_names", "column index 2"),
            "duplicate column name 'y'",
        ),
    ],
)
def test_npz_refusals(
    tmp_path: Path, arrays: dict[str, np.ndarray], loc: tuple[str, ...], message: str
) -> None:
    with pytest.raises(InvalidInput, match=message) as info:
        parse_file(save_npz(tmp_path, False, **arrays), "npz", target=None, limits=LIMITS)
    assert locs(info.value) == [loc]


def test_npz_object_arrays_are_never_unpickled(tmp_path: Path) -> None:
    path = save_npz(tmp_path, X=np.array([[1, None]] * 3, dtype=object), y=np.ones(3))
    with pytest.raises(InvalidInput, match="dtype object") as info:
        parse_file(path, "npz", target=None, limits=LIMITS)
    assert locs(info.value) == [("file", "X")]


def test_npz_target_other_than_y_is_refused(tmp_path: Path) -> None:
    path = save_npz(tmp_path, X=np.ones((3, 2)), y=np.ones(3))
    with pytest.raises(InvalidInput, match="leave target unset") as info:
        parse_file(path, "npz", target="x0", limits=LIMITS)
    assert locs(info.value) == [("target",)]


def test_npz_corrupt_archives(tmp_path: Path) -> None:
    good = save_npz(tmp_path, compressed=True, X=np.ones((50, 2)), y=np.ones(50))
    truncated = write(tmp_path, good.read_bytes()[:100], "truncated.npz")
    with pytest.raises(InvalidInput, match="not a valid NPZ file") as info:
        parse_file(truncated, "npz", target=None, limits=LIMITS)
    assert locs(info.value) == [("file",)]
    # A valid zip whose member is not an NPY array.
    path = tmp_path / "fake.npz"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("X.npy", b"nonsense")
        archive.writestr("y.npy", b"nonsense")
    with pytest.raises(InvalidInput, match="array 'X' is not a valid NPY file") as info:
        parse_file(path, "npz", target=None, limits=LIMITS)
    assert locs(info.value) == [("file", "X")]


def test_npz_limits(tmp_path: Path) -> None:
    path = save_npz(tmp_path, X=np.ones((12, 3)), y=np.ones(12))
    with pytest.raises(PayloadTooLarge, match="BATCHWISE_MAX_ROWS"):
        parse_file(path, "npz", target=None, limits=IngestLimits(10, 5))
    with pytest.raises(PayloadTooLarge, match="3 feature columns, more than 2"):
        parse_file(path, "npz", target=None, limits=IngestLimits(100, 2))


def test_npz_non_finite_target_names_column_y_or_drops(tmp_path: Path) -> None:
    X, y = np.arange(8.0).reshape(4, 2), np.array([1.0, np.inf, 3.0, 4.0])
    path = save_npz(tmp_path, X=X, y=y)
    with pytest.raises(InvalidInput) as info:
        parse_file(path, "npz", target=None, limits=LIMITS)
    assert locs(info.value) == [("file", "row 1", "column 'y'")]
    parsed = parse_file(path, "npz", target=None, limits=LIMITS, invalid_rows="drop")
    assert parsed.dropped_rows == 1
    assert np.array_equal(parsed.y, [1.0, 3.0, 4.0])
    assert np.array_equal(parsed.X, X[[0, 2, 3]])


# -- inline JSON ----------------------------------------------------------------------------------


def test_inline_round_trip() -> None:
    parsed = parse_inline([[1, 2.5], [3, -4]], [0, 1], limits=LIMITS)
    assert_clean(parsed)
    assert np.array_equal(parsed.X, [[1.0, 2.5], [3.0, -4.0]])
    assert np.array_equal(parsed.y, [0.0, 1.0])
    assert parsed.feature_names == ("x0", "x1")
    assert parsed.target_name == "y"
    named = parse_inline([[1], [2]], [3, 4], limits=LIMITS, feature_names=["age"])
    assert named.feature_names == ("age",)


@pytest.mark.parametrize(
    ("X", "y", "loc", "message"),
    [
        ([[1, 2], [3]], [1, 2], ("body", "X", 1), "expected a list of 2 numbers"),
        ([[1, 2], [3, "4"]], [1, 2], ("body", "X", 1, 1), "'4' is not a number"),
        ([[1, 2], [3, None]], [1, 2], ("body", "X", 1, 1), "None is not a number"),
        ([[1, 2], [3, float("nan")]], [1, 2], ("body", "X", 1, 1), "nan is not finite"),
        ([[1, 2], [3, 10**400]], [1, 2], ("body", "X", 1, 1), "overflows float64"),
        ([[1, 2], [3, 4]], [1, 2, 3], ("body", "y"), "y has 3 values but X has 2 rows"),
        ([[1, 2], [3, 4]], [1, "b"], ("body", "y", 1), "'b' is not a number"),
        ([[1, 2], [3, 4]], [1, float("inf")], ("body", "y", 1), "inf is not finite"),
        ([[1, 2]], [1], ("body", "X"), "at least two rows, found 1"),
        ([], [], ("body", "X"), "at least two rows, found 0"),
        ([[], []], [1, 2], ("body", "X", 0), "no features"),
        ([3, 4], [1, 2], ("body", "X", 0), "must be a list of numbers"),
    ],
)
def test_inline_refusals(
    X: list[object], y: list[object], loc: tuple[str | int, ...], message: str
) -> None:
    with pytest.raises(InvalidInput, match=message) as info:
        parse_inline(X, y, limits=LIMITS)  # type: ignore[arg-type]  # wrong on purpose
    assert locs(info.value)[0] == loc


def test_inline_feature_names_must_fit() -> None:
    with pytest.raises(InvalidInput, match="1 feature names for 2 columns") as info:
        parse_inline([[1, 2], [3, 4]], [1, 2], limits=LIMITS, feature_names=["a"])
    assert locs(info.value) == [("body", "feature_names")]
    with pytest.raises(InvalidInput, match="duplicate column name 'y'") as info:
        parse_inline([[1, 2], [3, 4]], [1, 2], limits=LIMITS, feature_names=["a", "y"])
    assert locs(info.value) == [("body", "feature_names", "column index 2")]


def test_inline_limits() -> None:
    with pytest.raises(PayloadTooLarge, match="BATCHWISE_MAX_ROWS"):
        parse_inline([[1]] * 11, [1] * 11, limits=IngestLimits(10, 5))
    with pytest.raises(PayloadTooLarge, match="BATCHWISE_MAX_FEATURES"):
        parse_inline([[1] * 6] * 2, [1, 2], limits=IngestLimits(10, 5))


# -- summarize ------------------------------------------------------------------------------------


@pytest.mark.parametrize("chunk_bytes", [16, 1 << 22])  # many chunks merged; one chunk
def test_summary_stats_match_numpy(monkeypatch: pytest.MonkeyPatch, chunk_bytes: int) -> None:
    monkeypatch.setattr(ingest_common, "ROW_CHUNK_BYTES", chunk_bytes)
    rng = np.random.default_rng(5)
    X = rng.standard_normal((301, 3)) * [1.0, 1e3, 1e-3] + [0.0, 1e6, -5.0]
    y = rng.standard_normal(301)
    summary = summarize(ParsedDataset(X=X, y=y, feature_names=("a", "b", "c"), target_name="t"))
    assert (summary.n_rows, summary.n_features) == (301, 3)
    assert [s.name for s in summary.stats] == ["a", "b", "c"]
    for j, stats in enumerate(summary.stats):
        assert stats.mean == pytest.approx(X[:, j].mean(), rel=1e-12, abs=1e-15)
        assert stats.std == pytest.approx(X[:, j].std(), rel=1e-10)
        assert (stats.min, stats.max) == (X[:, j].min(), X[:, j].max())
    assert summary.target_stats.name == "t"
    assert summary.target_stats.std == pytest.approx(y.std(), rel=1e-12)
    assert summary.task == "regression"
    assert summary.classes is None


@pytest.mark.parametrize(
    ("y", "task", "classes"),
    [
        ([1.0, -1.0, 1.0, -1.0, 1.0, 1.0], "binary", (-1.0, 1.0)),
        ([0.0, 1.0, 2.0, 2.0, 1.0, 0.0], "multiclass", (0.0, 1.0, 2.0)),
        ([0.5, 1.5, 2.5, 3.5, 4.5, 5.5], "regression", None),
    ],
)
def test_summary_task_and_classes(
    y: list[float], task: str, classes: tuple[float, ...] | None
) -> None:
    X = np.arange(12.0).reshape(6, 2)
    parsed = ParsedDataset(X=X, y=np.array(y), feature_names=("a", "b"), target_name="t")
    summary = summarize(parsed)
    assert summary.task == task
    assert summary.classes == classes


def test_summary_of_a_parsed_csv_carries_dropped_rows(tmp_path: Path) -> None:
    parsed = parse_csv_text(tmp_path, "a,b\n1,0\n2,1\nnan,1\n3,0\n", invalid_rows="drop")
    summary = summarize(parsed)
    assert summary.dropped_rows == 1
    assert summary.task == "binary"
    assert summary.stats[0].mean == 2.0
    assert summary.stats[0].std == pytest.approx(np.sqrt(2 / 3))
