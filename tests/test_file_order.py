"""The order pytest-xdist hands test files out in: longest first, by ``tests/durations.json``
(``tests/conftest.py``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, cast

import pytest

from tests.conftest import DURATIONS, longest_files_first

REPO_ROOT = Path(__file__).resolve().parents[1]


class Item:
    def __init__(self, nodeid: str) -> None:
        self.nodeid = nodeid


def test_files_go_longest_first_each_keeping_its_tests_together_and_in_order() -> None:
    collected = [
        Item("tests/a.py::one"),
        Item("tests/a.py::two"),
        Item("tests/b.py::one"),
        Item("tests/c.py::one"),  # not recorded: counted as a second, tied with a.py
        Item("tests/d.py::one"),
        Item("tests/d.py::two[x]"),
    ]
    items = cast(list[pytest.Item], list(collected))
    longest_files_first(items, {"tests/a.py": 1.0, "tests/b.py": 9.0, "tests/d.py": 3.5})
    assert [cast(Any, item).nodeid for item in items] == [
        "tests/b.py::one",
        "tests/d.py::one",
        "tests/d.py::two[x]",
        "tests/a.py::one",
        "tests/a.py::two",
        "tests/c.py::one",
    ]


def test_the_recorded_durations_name_only_files_that_exist() -> None:
    recorded = json.loads(DURATIONS.read_text())
    missing = [file for file in recorded if not (REPO_ROOT / file).is_file()]
    assert not missing, f"refresh {DURATIONS.name} (pytest --record-durations): {missing}"
