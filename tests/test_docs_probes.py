"""docs/probes.md runs as written: its shell blocks, in order, against a real ``batchwise
serve`` with embedded workers — the source job, the probe and its table, the plot, the list,
the cancel refused, the warmup job and its history, the refusals — and prints what the page
shows."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from tests.support.databases import sqlite_url
from tests.support.processes import REPO_ROOT, run_server

DOC = REPO_ROOT / "docs" / "probes.md"


def blocks(markdown: str, language: str) -> list[str]:
    """The bodies of the fenced blocks of ``language`` ("" for a bare fence), in order."""
    return re.findall(rf"^```{language}\n(.*?)^```$", markdown, flags=re.MULTILINE | re.DOTALL)


def script(base_url: str) -> str:
    shell = blocks(DOC.read_text(encoding="utf-8"), "sh")
    assert shell
    assert "BW=http://127.0.0.1:8000" in shell[0]
    shell[0] = shell[0].replace("http://127.0.0.1:8000", base_url)
    return "set -euo pipefail\n" + "\n".join(shell)


ROW = re.compile(r"(\d+) (\d+) (\d+) (\[\d+, (?:\d+|None)\]) ([\d.]+) ([\d.]+)")


def rows(lines: list[str]) -> list[tuple[str, ...]]:
    """(epoch, samples, critical batch, bracket, B_simple, ratio) of each line."""
    parsed = [ROW.fullmatch(line) for line in lines]
    assert all(parsed), lines
    return [match.groups() for match in parsed if match]


def shown_table() -> list[tuple[str, ...]]:
    """The probe's table as the page shows it: the bare block after the probe's read."""
    bare = blocks(DOC.read_text(encoding="utf-8"), "")
    tables = [block for block in bare if block.startswith("1 2000 ")]
    assert len(tables) == 1
    return rows(tables[0].strip().splitlines())


def test_the_probes_page_runs_as_written_and_shows_what_it_prints(tmp_path: Path) -> None:
    with run_server(
        database_url=sqlite_url(tmp_path / "docs.sqlite3"),
        data_dir=tmp_path / "data",
        env={"BATCHWISE_WORKERS": "2"},
    ) as base_url:
        work = tmp_path / "work"
        work.mkdir()
        result = subprocess.run(
            ["bash", "-c", script(base_url)],
            cwd=work,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.strip().splitlines()
    assert re.fullmatch(r"probe [0-9a-f]{8}: epoch \d+, ×\d+, lr [\d.]+, seed \d", lines[0])
    table, expected = rows(lines[1:7]), shown_table()
    # epoch, samples, critical batch and bracket exactly; B_simple and the ratio as rounded
    # on the page, within 5 % (another BLAS may round the float32 gradients otherwise).
    assert [row[:4] for row in table] == [row[:4] for row in expected]
    for row, shown in zip(table, expected, strict=True):
        for measured, page in zip(row[4:], shown[4:], strict=True):
            assert abs(float(measured) / float(page) - 1) < 0.05, (row, shown)
    assert lines[7:] == [
        "succeeded",  # the list's newest probe
        "409",  # a finished probe is not cancelled
        "[[0, 128]]",  # the warmup's points, resolved from the probe
        lines[10],
        "['body', 'at_epochs', 0]",
        "404",
    ]
    assert lines[10].startswith("started at 128 at 0 samples (step 0): the warmup point [0, 128]")
    assert b"<svg" in (work / "critical.svg").read_bytes()[:500]
