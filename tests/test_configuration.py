"""docs/configuration.md's table names every setting, with its default, and nothing else."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic_core import PydanticUndefined

from service.config import Settings

CONFIGURATION = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"
ROW = re.compile(r"^\| `BATCHWISE_([A-Z_]+)` \| (.*?) \| (.*) \|$")


def _default_text(name: str) -> str:
    default = Settings.model_fields[name].default
    if default is None or default is PydanticUndefined:
        return "—"
    return f"`{default}`"


def expected_table() -> list[tuple[str, str]]:
    """(environment variable, default as shown) for every setting, in declaration order."""
    return [(f"BATCHWISE_{name.upper()}", _default_text(name)) for name in Settings.model_fields]


def documented_table() -> list[tuple[str, str]]:
    rows = []
    for line in CONFIGURATION.read_text(encoding="utf-8").splitlines():
        match = ROW.match(line)
        if match:
            rows.append((f"BATCHWISE_{match.group(1)}", match.group(2)))
    return rows


def test_configuration_table_matches_settings() -> None:
    assert documented_table() == expected_table()


def test_every_setting_has_a_description() -> None:
    undocumented = [name for name, field in Settings.model_fields.items() if not field.description]
    assert undocumented == []
