"""A forged pagination cursor is a 400 naming ``cursor``, never a 500 (issue 11, finding 6):
``decode_cursor`` fuzzed with hypothesis (arbitrary text, arbitrary JSON, timestamps at and
beyond the ends of the representable range), and the finding's own cursor through every list
route on both databases."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from service.api import create_app
from service.config import Settings
from service.errors import BadRequest
from service.pagination import decode_cursor, encode_cursor

LIST_ROUTES = ("/v1/datasets", "/v1/jobs", "/v1/sweeps")
#: The finding: a year-1 time at +14:00 is in year 0 once in UTC.
OUT_OF_RANGE = ["0001-01-01T00:00:00+14:00", "a"]

fuzz = hypothesis_settings(
    max_examples=300,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def cursor_of(value: Any) -> str:
    """``value`` as a cursor is spelt: JSON, base64url without padding."""
    return b64(json.dumps(value).encode())


def decoded_or_refused(cursor: str) -> tuple[datetime, str] | None:
    """What :func:`decode_cursor` makes of ``cursor``: a position in UTC with a printable
    id, or None after a :class:`BadRequest` naming ``("query", "cursor")`` — nothing else."""
    try:
        created_at, row_id = decode_cursor(cursor)
    except BadRequest as exc:
        refused = exc
    else:
        assert created_at.utcoffset() == timedelta(0)
        assert row_id.isascii()
        assert row_id.isprintable()
        return created_at, row_id
    assert refused.status == 400
    assert [error.loc for error in refused.errors] == [("query", "cursor")]
    return None


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=8,
)
offsets = st.integers(min_value=-(24 * 60 - 1), max_value=24 * 60 - 1).map(
    lambda minutes: timezone(timedelta(minutes=minutes))
)
#: Times across the whole range Python represents, at any offset it allows: many of the
#: earliest and latest fall outside the range once converted to UTC.
extreme_times = st.builds(
    lambda moment, offset: moment.replace(tzinfo=offset).isoformat(),
    st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59)),
    offsets,
)
timestamp_texts = (
    extreme_times
    | st.text(max_size=40)
    | st.sampled_from(
        [
            "0001-01-01T00:00:00+14:00",
            "9999-12-31T23:59:59-14:00",
            "2026-01-01T00:00:00+24:00",
            "2026-01-01T00:00:00",
            "2026-01-01",
            "",
        ]
    )
)
ids = st.text(max_size=40) | st.just(str(uuid.UUID(int=0))) | st.sampled_from(["a\x00", "\ud800"])


@fuzz
@given(st.text(max_size=512))
def test_any_text_is_a_position_or_a_400(cursor: str) -> None:
    decoded_or_refused(cursor)


@fuzz
@given(st.binary(max_size=384))
def test_any_bytes_in_base64_are_a_position_or_a_400(raw: bytes) -> None:
    decoded_or_refused(b64(raw))


@fuzz
@given(json_values)
def test_any_json_is_a_position_or_a_400(value: Any) -> None:
    decoded_or_refused(cursor_of(value))


@fuzz
@given(timestamp_texts, ids)
def test_any_time_and_id_pair_is_a_position_or_a_400(created: str, row_id: str) -> None:
    position = decoded_or_refused(cursor_of([created, row_id]))
    if position is not None:  # then it is the same instant, in UTC
        assert position == (datetime.fromisoformat(created).astimezone(UTC), row_id)


@pytest.mark.parametrize(
    ("cursor", "why"),
    [
        (cursor_of(OUT_OF_RANGE), "out of range once in UTC"),
        (cursor_of(["9999-12-31T23:59:59-14:00", "a"]), "beyond year 9999 once in UTC"),
        (cursor_of(["2026-01-01T00:00:00+24:00", "a"]), "an offset of a whole day"),
        (cursor_of(["2026-01-01T00:00:00", "a"]), "no offset"),
        (cursor_of({"2026-01-01T00:00:00+00:00": 0, "a": 1}), "an object, not a pair"),
        (cursor_of(["2026-01-01T00:00:00+00:00", "a", "b"]), "three items"),
        (cursor_of(["2026-01-01T00:00:00+00:00", 7]), "an id that is not a string"),
        (cursor_of(["2026-01-01T00:00:00+00:00", "a\x00"]), "a NUL in the id"),
        (cursor_of(["2026-01-01T00:00:00+00:00", "\ud800"]), "a lone surrogate in the id"),
        (b64(b"\xff\xfe"), "not UTF-8"),
        (b64(b"[1,"), "not JSON"),
        ("a", "not base64"),
        ("!!!!", "not base64url"),
    ],
)
def test_a_malformed_cursor_is_refused(cursor: str, why: str) -> None:
    assert decoded_or_refused(cursor) is None, why


def test_our_own_cursors_still_round_trip() -> None:
    row_id = str(uuid.uuid4())
    for moment in (datetime(1, 1, 1, tzinfo=UTC), datetime(2026, 11, 26, 12, 0, 1, 5, UTC)):
        assert decode_cursor(encode_cursor(moment, row_id)) == (moment, row_id)
    plus_two = datetime(2026, 1, 1, 2, tzinfo=timezone(timedelta(hours=2)))
    assert decode_cursor(encode_cursor(plus_two, row_id)) == (
        datetime(2026, 1, 1, tzinfo=UTC),
        row_id,
    )


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client


@pytest.mark.parametrize("route", LIST_ROUTES)
def test_the_findings_cursor_is_a_400_naming_cursor_on_every_list(
    client: TestClient, route: str
) -> None:
    response = client.get(route, params={"cursor": cursor_of(OUT_OF_RANGE)})
    assert response.status_code == 400, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["errors"] == [
        {"loc": ["query", "cursor"], "msg": "malformed cursor", "type": "value_error"}
    ]
    assert "next_cursor of a previous page" in problem["detail"]


@hypothesis_settings(fuzz, max_examples=100)
@given(created=extreme_times)
def test_valid_cursors_at_the_ends_of_time_reach_the_database_safely(
    client: TestClient, created: str
) -> None:
    """Whatever survives decoding is bound and compared by the real database: a page (empty
    here) or a 400, never a 500."""
    cursor = cursor_of([created, str(uuid.UUID(int=0))])
    response = client.get("/v1/jobs", params={"cursor": cursor})
    assert response.status_code in (200, 400), response.text
    if response.status_code == 200:
        assert response.json() == {"items": [], "next_cursor": None}
