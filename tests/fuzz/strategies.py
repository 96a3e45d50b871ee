"""Hypothesis strategies for dataset uploads: bytes that are nearly CSV, NPY or NPZ, and JSON.

Fully arbitrary bytes almost never get past a parser's first check, so most of the examples
are valid files broken a little (a cell that is not a number, a truncated header, a flipped
byte): those reach the deep branches, where a missed exception would hide.
"""

from __future__ import annotations

import io
import json
from typing import Any

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

# -- CSV -------------------------------------------------------------------------------------

_NUMBERS = st.one_of(
    st.integers(-(10**6), 10**6).map(str),
    st.floats(allow_nan=False, allow_infinity=False, width=64).map(repr),
    st.sampled_from(["0", "-0.5", ".5", "5.", "1e-3", "+2", "1E5", "1.7e308", "-1.7e308"]),
)
_ODD_CELLS = st.sampled_from(
    [
        "",
        " ",
        "nan",
        "NaN",
        "inf",
        "-inf",
        "abc",
        '"1"',
        '"a,b"',
        " 2 ",
        "\t3",
        "1,000",
        "0x1f",
        "1_000",
        "--1",
        "1e",
        "é",
        "😀",
        '"',
        '""',
        "\x00",
        "1 2",
    ]
)
_NAMES = st.one_of(
    st.sampled_from(["a", "b", "y", "price", " x ", '"q"', "", "1", "a", "é"]),
    st.text(min_size=0, max_size=6),
)


@st.composite
def csv_bytes(draw: st.DrawFn) -> bytes:
    """A valid CSV (unique names, numeric rows), then none or a few breakages: an odd cell or
    name, a ragged row, another encoding, a few raw bytes."""
    n_columns = draw(st.one_of(st.integers(2, 5), st.integers(1, 6)))
    header = [f"c{i}" for i in range(n_columns)]
    rows = [[draw(_NUMBERS) for _ in range(n_columns)] for _ in range(draw(st.integers(0, 14)))]
    for _ in range(draw(st.sampled_from([0, 0, 0, 1, 2, 4]))):
        where = draw(st.integers(0, len(rows)))
        if where == len(rows):  # the header
            header[draw(st.integers(0, n_columns - 1))] = draw(_NAMES)
        elif draw(st.booleans()) and rows[where]:
            rows[where][draw(st.integers(0, len(rows[where]) - 1))] = draw(_ODD_CELLS)
        else:
            rows[where] = rows[where][: draw(st.integers(0, n_columns))] + draw(
                st.lists(_NUMBERS, max_size=1)
            )
    newline = draw(st.sampled_from(["\n", "\n", "\r\n", "\r"]))
    text = newline.join(",".join(line) for line in [header, *rows])
    text += draw(st.sampled_from(["", newline, newline * 3, newline + " " + newline]))
    encoding = draw(st.sampled_from(["utf-8", "utf-8", "utf-8", "utf-8-sig", "utf-16", "latin-1"]))
    data = text.encode(encoding, errors="replace")
    if draw(st.integers(0, 4)) == 4:  # rarely: Hypothesis leans to 0
        at = draw(st.integers(0, len(data)))
        data = data[:at] + draw(st.binary(min_size=1, max_size=4)) + data[at:]
    return data


# -- NPY and NPZ -----------------------------------------------------------------------------

_DTYPES = st.sampled_from(
    ["<f8", ">f8", "<f4", "<f2", "<i8", "<i2", "|u1", "|b1", "<c16", "<U3", "|S2", "<M8[s]"]
).map(np.dtype)
_ARRAYS = _DTYPES.flatmap(
    lambda dtype: hnp.arrays(dtype, hnp.array_shapes(min_dims=0, max_dims=3, max_side=4))
)


def _npy(array: np.ndarray, fortran: bool) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.asfortranarray(array) if fortran else array, allow_pickle=False)
    return buffer.getvalue()


@st.composite
def mutated(draw: st.DrawFn, data: bytes) -> bytes:
    """``data`` unchanged, truncated, with a byte changed, or with a slice replaced."""
    kind = draw(st.sampled_from(["same", "same", "same", "truncate", "flip", "splice"]))
    if kind == "same" or not data:
        return data
    at = draw(st.integers(0, len(data) - 1))
    if kind == "truncate":
        return data[:at]
    if kind == "flip":
        return data[:at] + bytes([data[at] ^ draw(st.integers(1, 255))]) + data[at + 1 :]
    return data[:at] + draw(st.binary(max_size=8)) + data[at + draw(st.integers(0, 8)) :]


#: What a client would send: a 2-D numeric array with a few rows, NaN and inf sometimes.
_GOOD_ARRAYS = st.tuples(
    st.sampled_from(["<f8", "<f4", ">f8", "<i8", "|u1", "|b1"]).map(np.dtype),
    st.integers(0, 14),
    st.integers(1, 6),
).flatmap(lambda spec: hnp.arrays(spec[0], (spec[1], spec[2])))


@st.composite
def npy_bytes(draw: st.DrawFn) -> bytes:
    """An NPY file of a good array or of any small one (any dtype, 0 to 3 dimensions),
    C or Fortran order, perhaps mutated."""
    array = draw(st.one_of(_GOOD_ARRAYS, _GOOD_ARRAYS, _ARRAYS))
    return draw(mutated(_npy(array, draw(st.booleans()))))


@st.composite
def npz_bytes(draw: st.DrawFn) -> bytes:
    """An NPZ archive with ``X`` and ``y`` (mostly), sometimes ``feature_names`` and a stray
    key, perhaps compressed, perhaps mutated."""
    n_rows = draw(st.integers(0, 14))
    n_features = draw(st.integers(0, 5))
    members: dict[str, Any] = {}
    if draw(st.integers(0, 5)) > 0:
        members["X"] = draw(st.one_of(*[hnp.arrays(np.float64, (n_rows, n_features))] * 3, _ARRAYS))
    if draw(st.integers(0, 5)) < 5:
        members["y"] = draw(st.one_of(*[hnp.arrays(np.float64, (n_rows,))] * 3, _ARRAYS))
    if draw(st.integers(0, 3)) == 3:
        names = [f"f{i}" for i in range(n_features)]
        members["feature_names"] = np.array(
            draw(st.one_of(st.just(names), st.lists(_NAMES, max_size=4))), dtype=str
        )
    if draw(st.integers(0, 3)) == 3:
        members[draw(st.sampled_from(["Z", "x", "X.npy"]))] = draw(_ARRAYS)
    buffer = io.BytesIO()
    save = np.savez_compressed if draw(st.booleans()) else np.savez
    save(buffer, allow_pickle=False, **members)
    return draw(mutated(buffer.getvalue()))


def dataset_file_bytes() -> st.SearchStrategy[bytes]:
    """Any of the above, or arbitrary bytes."""
    return st.one_of(csv_bytes(), npy_bytes(), npz_bytes(), st.binary(max_size=300))


# -- JSON ------------------------------------------------------------------------------------

_JSON_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(width=64),  # NaN and ±inf too: json.dumps writes NaN / Infinity
    st.text(max_size=5),
)
_JSON_VALUES = st.recursive(
    _JSON_SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=3), inner, max_size=3)
    ),
    max_leaves=12,
)
_FINITE = st.one_of(st.integers(-10, 10), st.floats(allow_nan=False, allow_infinity=False))
_ODD_NUMBERS = st.one_of(
    st.floats(width=64), st.integers(-(2**1100), 2**1100), st.booleans(), _JSON_SCALARS
)


@st.composite
def inline_json_bytes(draw: st.DrawFn) -> bytes:
    """A ``POST /v1/datasets`` JSON body: a valid one, or one with a breakage (a ragged row, a
    wrong ``y`` length, a non-number, a huge integer, NaN, an extra key, odd names); or any
    JSON value; or bytes that are not JSON at all."""
    kind = draw(st.sampled_from(["dataset", "dataset", "dataset", "dataset", "value", "bytes"]))
    if kind == "bytes":
        return draw(st.binary(max_size=200))
    if kind == "value":
        return json.dumps(draw(_JSON_VALUES)).encode()
    n_rows = draw(st.integers(0, 14))
    n_features = draw(st.integers(0, 5))
    X: list[Any] = [[draw(_FINITE) for _ in range(n_features)] for _ in range(n_rows)]
    y: list[Any] = [draw(_FINITE) for _ in range(n_rows)]
    body: dict[str, Any] = {"X": X, "y": y}
    if draw(st.integers(0, 3)) == 0:
        body["feature_names"] = draw(
            st.one_of(st.just([f"f{i}" for i in range(n_features)]), st.lists(_NAMES, max_size=4))
        )
    if draw(st.integers(0, 3)) == 0:
        body["name"] = draw(st.one_of(st.text(max_size=5), _JSON_VALUES))
    for _ in range(draw(st.sampled_from([0, 0, 0, 1, 2]))):
        breakage = draw(st.sampled_from(["cell", "row", "y", "key"]))
        row = draw(st.integers(0, n_rows - 1)) if X else 0
        if breakage == "cell" and X and n_features and isinstance(X[row], list) and X[row]:
            X[row][draw(st.integers(0, len(X[row]) - 1))] = draw(_ODD_NUMBERS)
        elif breakage == "row" and X:
            X[row] = draw(st.one_of(_JSON_VALUES, st.lists(_FINITE)))
        elif breakage == "y":
            body["y"] = y[: draw(st.integers(0, n_rows))] + draw(st.lists(_ODD_NUMBERS, max_size=2))
        else:
            body[draw(st.sampled_from(["extra", "x", "Y"]))] = draw(_JSON_VALUES)
    return json.dumps(body).encode()


__all__ = [
    "csv_bytes",
    "dataset_file_bytes",
    "inline_json_bytes",
    "mutated",
    "npy_bytes",
    "npz_bytes",
]
