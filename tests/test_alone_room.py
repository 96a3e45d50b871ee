"""The room of ``tests/conftest.py`` under pytest-xdist: an ``alone`` test holds it exclusively,
and keeps it (without passing the gate again) when the next test is ``alone`` too; any other
test shares it. Each test looks through a handle of its own (flock locks belong to the open
file, so this process's own hold shows as a conflict)."""

from __future__ import annotations

import fcntl

import pytest

from tests.conftest import _ROOM, _worker_room


def can_lock(mode: int) -> bool:
    with _ROOM.open("rb") as room:
        try:
            fcntl.flock(room, mode | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        fcntl.flock(room, fcntl.LOCK_UN)
        return True


@pytest.fixture(autouse=True)
def under_xdist(request: pytest.FixtureRequest) -> None:
    if not hasattr(request.config, "workerinput"):
        pytest.skip("the room exists only under pytest-xdist (the suite's default, -n 2)")


#: The gate passes counted by the first test, read by the second: they run in this order on
#: one worker, as the suite distributes whole files (``--dist loadfile``).
ENTRIES: list[int] = []


@pytest.mark.alone
def test_an_alone_test_holds_the_room_exclusively() -> None:
    assert not can_lock(fcntl.LOCK_SH)
    ENTRIES.append(_worker_room().entries)


@pytest.mark.alone
def test_the_next_alone_test_still_holds_it_without_passing_the_gate_again() -> None:
    assert not can_lock(fcntl.LOCK_SH)
    assert ENTRIES, "runs right after the test above, on the same worker"
    assert _worker_room().entries == ENTRIES[0]


def test_a_test_after_them_shares_it() -> None:
    assert can_lock(fcntl.LOCK_SH)
    assert not can_lock(fcntl.LOCK_EX)
