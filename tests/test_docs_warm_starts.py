"""docs/warm-starts.md runs as written: its shell blocks, in order, against a real ``batchwise
serve`` with an embedded worker — the source and its checkpoints, the branch, the budget
read, the warmup and its changes, the command line — and prints what the page shows."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from tests.support.databases import sqlite_url
from tests.support.processes import REPO_ROOT, run_server

DOC = REPO_ROOT / "docs" / "warm-starts.md"


def blocks(markdown: str) -> list[str]:
    """The bodies of the fenced ``sh`` blocks, in order."""
    return re.findall(r"^```sh\n(.*?)^```$", markdown, flags=re.MULTILINE | re.DOTALL)


def script(base_url: str) -> str:
    shell = "\n".join(blocks(DOC.read_text(encoding="utf-8")))
    assert "http://127.0.0.1:8000" in shell
    bin_dir = Path(sys.executable).parent
    setup = f'export PATH="{bin_dir}:$PATH" BATCHWISE_URL="{base_url}"\n'
    return "set -euo pipefail\n" + setup + shell.replace("http://127.0.0.1:8000", base_url)


def shown_changes() -> list[dict[str, object]]:
    """The warmup's changes as the page shows them (its indented JSON lines)."""
    lines = re.findall(r"^    (\{\"epoch\".*\})$", DOC.read_text(encoding="utf-8"), re.MULTILINE)
    assert len(lines) == 3
    return [json.loads(line) for line in lines]


def test_the_warm_starts_page_runs_as_written_and_shows_what_it_prints(tmp_path: Path) -> None:
    with run_server(
        database_url=sqlite_url(tmp_path / "docs.sqlite3"),
        data_dir=tmp_path / "data",
        env={"BATCHWISE_WORKERS": "1"},
        startup_timeout=120.0,
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
    listed = [json.loads(line) for line in lines[:3]]
    assert [(c["epoch"], c["samples_seen"], c["kept"], c["latest"]) for c in listed] == [
        (2, 1000, True, False),
        (4, 2000, True, False),
        (6, 3000, False, True),
    ]
    branch = json.loads(lines[3])
    assert branch["init_from"]["epoch"] == 4
    assert branch["progress"] == 8
    assert json.loads(lines[4]) == {
        "epoch": [5, 6, 7, 8],
        "batch_size": [64, 64, 64, 64],
        "samples_seen": [2500, 3000, 3500, 4000],
    }
    budget = json.loads(lines[5])
    assert budget["keep_checkpoints"] == [2, 4]
    assert budget["epochs"] == [2, 4, 6]
    assert 0 < budget["used_bytes"] < budget["budget_bytes"] == 256 * 1024**2
    assert [json.loads(line) for line in lines[6:9]] == shown_changes()
    assert lines[9] == "grew 8 → 32 at 692 samples (step 87): the warmup point [690, 32]"
    assert re.fullmatch(r"job [0-9a-f-]{36} queued", lines[10])
    assert re.fullmatch(r"job [0-9a-f-]{36} succeeded: epoch 10/10, .*", lines[11])
