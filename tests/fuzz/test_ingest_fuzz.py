"""Hypothesis over the dataset ingestion: any bytes give a dataset or a 4xx, never anything else.

Parser level (many examples, no database): the bytes of ``strategies.dataset_file_bytes`` are
parsed as each of CSV, NPY and NPZ (a file's name can send any bytes to any parser), with
either ``invalid_rows`` and an assortment of targets; JSON bodies go through the route's own
steps (``DatasetCreateJSON`` then ``parse_inline``). Each either yields a dataset that holds
the documented invariants, which summarising and the canonical writer then accept, or raises
a :class:`BatchwiseError` with a 4xx status (a pydantic ``ValidationError`` for the JSON schema,
which the route answers with 422). Any other exception fails the test.

Route level (fewer examples, both databases): the same bytes through ``POST /v1/datasets`` as
a multipart file or a JSON body. Every answer is 201 or a 4xx problem document; a refusal
leaves no ``datasets`` row, no ``dataset_chunks`` row and no file in the spool directory, and a
201 adds exactly one dataset.

All bounded (``max_examples``) and derandomized, so CI sees the same examples every run.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, event, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from pydantic import ValidationError
from sqlalchemy import Engine, text

from service.api.app import create_app
from service.api.upload import spool_dir
from service.config import Settings
from service.datasets.arrays import write_canonical
from service.datasets.ingest import IngestLimits, ParsedDataset, parse_file, parse_inline, summarize
from service.datasets.schemas import DatasetCreateJSON
from service.errors import BatchwiseError

from .strategies import csv_bytes, dataset_file_bytes, inline_json_bytes, npy_bytes, npz_bytes

#: Small limits, so the 413 branches (too many rows, features, bytes) are reached too.
LIMITS = IngestLimits(max_rows=12, max_features=4)
MAX_UPLOAD_BYTES = 2048


def fuzz_settings(max_examples: int) -> hypothesis_settings:
    """Bounded, reproducible (derandomized, no example database), no deadline."""
    return hypothesis_settings(
        max_examples=max_examples,
        derandomize=True,
        database=None,
        deadline=None,
        # tmp_path and the database are shared by the examples on purpose (each example
        # overwrites the one file; the route test checks the counts before and after).
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )


def assert_valid_dataset(parsed: ParsedDataset, tmp_path: Path) -> None:
    """The documented invariants of a parsed dataset; summarising and storing accept it."""
    event("accepted: a dataset")
    X, y = parsed.X, parsed.y
    assert X.dtype == np.float64
    assert X.ndim == 2
    assert X.flags.c_contiguous
    assert y.dtype == np.float64
    assert y.shape == (X.shape[0],)
    assert bool(np.isfinite(X).all())
    assert bool(np.isfinite(y).all())
    assert 1 <= parsed.n_features <= LIMITS.max_features
    assert 1 <= parsed.n_rows <= LIMITS.max_rows
    assert len(parsed.feature_names) == parsed.n_features
    assert parsed.dropped_rows >= 0
    summary = summarize(parsed)
    assert summary.n_rows == parsed.n_rows
    for stats in (*summary.stats, summary.target_stats):  # the response schema has no inf/NaN
        values = [stats.mean, stats.std, stats.min, stats.max]
        assert all(math.isfinite(v) for v in values), stats
        assert stats.min <= stats.mean <= stats.max
    _sha256, size = write_canonical(parsed, tmp_path / "canonical.npy")
    assert size == (tmp_path / "canonical.npy").stat().st_size


def assert_client_error(exc: BatchwiseError) -> None:
    event(f"refused: {exc.status} {type(exc).__name__}")  # --hypothesis-show-statistics
    assert 400 <= exc.status < 500, f"{type(exc).__name__} {exc.status}: {exc.detail}"
    assert exc.detail


#: Mostly the format's own (broken) files, which reach deep; some of any kind, since a file's
#: name alone can send any bytes to any parser.
FILES_FOR = {
    "csv": st.one_of(csv_bytes(), csv_bytes(), dataset_file_bytes()),
    "npy": st.one_of(npy_bytes(), npy_bytes(), dataset_file_bytes()),
    "npz": st.one_of(npz_bytes(), npz_bytes(), dataset_file_bytes()),
}


@pytest.mark.parametrize("fmt", ["csv", "npy", "npz"])
@fuzz_settings(max_examples=150)
@given(
    data=st.data(),
    # Mostly the default (the last column); some valid names and indices, some not.
    target=st.one_of(
        st.none(), st.none(), st.sampled_from(["0", "1", "c1", "x1", "-1", "7", "y", " b "])
    ),
    invalid_rows=st.sampled_from(["error", "drop"]),
)
def test_parse_file_gives_a_dataset_or_a_4xx(
    tmp_path: Path, fmt: str, data: st.DataObject, target: str | None, invalid_rows: str
) -> None:
    path = tmp_path / "upload.part"
    path.write_bytes(data.draw(FILES_FOR[fmt], label="file bytes"))
    try:
        parsed = parse_file(
            path,
            fmt,  # type: ignore[arg-type]
            target=target,
            limits=LIMITS,
            invalid_rows=invalid_rows,  # type: ignore[arg-type]
        )
    except BatchwiseError as exc:
        assert_client_error(exc)
        return
    assert_valid_dataset(parsed, tmp_path)


@fuzz_settings(max_examples=250)
@given(raw=inline_json_bytes())
def test_inline_json_gives_a_dataset_or_a_4xx(tmp_path: Path, raw: bytes) -> None:
    try:
        body = DatasetCreateJSON.model_validate_json(raw)
    except ValidationError:
        event("refused: 422 by the JSON schema")
        return  # the route answers 422 with the field paths
    try:
        parsed = parse_inline(body.X, body.y, limits=LIMITS, feature_names=body.feature_names)
    except BatchwiseError as exc:
        assert_client_error(exc)
        return
    assert_valid_dataset(parsed, tmp_path)


# -- through the route -----------------------------------------------------------------------


def counts(engine: Engine) -> tuple[int, int]:
    """(rows in datasets, rows in dataset_chunks)."""
    with engine.connect() as connection:
        datasets = connection.scalar(text("SELECT count(*) FROM datasets"))
        chunks = connection.scalar(text("SELECT count(*) FROM dataset_chunks"))
    return int(datasets or 0), int(chunks or 0)


@pytest.fixture
def small_limits_client(settings: Settings) -> Iterator[TestClient]:
    limited = settings.model_copy(
        update={
            "max_upload_bytes": MAX_UPLOAD_BYTES,
            "max_rows": LIMITS.max_rows,
            "max_features": LIMITS.max_features,
        }
    )
    with TestClient(create_app(limited)) as client:
        yield client


_UPLOADS = st.one_of(
    st.tuples(
        st.just("multipart"),
        dataset_file_bytes(),
        st.sampled_from(["data.csv", "data.npy", "data.npz", "data.bin", "C:\\x\\d.csv", ""]),
        st.sampled_from(["error", "drop"]),
    ),
    st.tuples(st.just("json"), inline_json_bytes(), st.just(""), st.just("")),
)


@fuzz_settings(max_examples=40)
@given(upload=_UPLOADS)
def test_upload_route_gives_201_or_4xx_and_leaves_nothing_after_a_refusal(
    small_limits_client: TestClient,
    engine: Engine,
    settings: Settings,
    upload: tuple[str, bytes, str, str],
) -> None:
    kind, data, filename, invalid_rows = upload
    before = counts(engine)
    if kind == "multipart":
        response = small_limits_client.post(
            "/v1/datasets",
            files={"file": (filename, data, "application/octet-stream")},
            data={"invalid_rows": invalid_rows},
        )
    else:
        response = small_limits_client.post(
            "/v1/datasets", content=data, headers={"content-type": "application/json"}
        )
    after = counts(engine)
    event(f"{kind}: {response.status_code}")
    spool = spool_dir(settings.data_dir)
    assert not spool.exists() or sorted(spool.iterdir()) == []
    if response.status_code == 201:
        assert after[0] == before[0] + 1
        assert after[1] > before[1]
        assert response.json()["n_rows"] <= LIMITS.max_rows
        return
    assert 400 <= response.status_code < 500, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["status"] == response.status_code
    assert after == before
