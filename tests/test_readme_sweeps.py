"""The README's sweep tour runs as written: its shell blocks, in order, against a real
``batchwise serve`` with embedded workers — the data, the sweep, its wait, its plots, and the
B_noise the README promises."""

from __future__ import annotations

import math
import re
import subprocess
from pathlib import Path

from tests.support.databases import sqlite_url
from tests.support.processes import REPO_ROOT, run_server

README = REPO_ROOT / "README.md"

#: Each block is found by a line it must contain, in the README's order.
TOUR = (
    "BW=http://127.0.0.1:8000",  # the base URL and the json() helper
    "> scales.csv",  # the ill-conditioned data
    "SWEEP=$(",  # the sweep and its wait
    "plots/curves.svg?x=step",  # the curves
    "plots/scaling.png",  # the scaling plot and B_noise
    "['knee']['confidence']",  # the knee's confidence
)
CONFIDENCE = re.compile(r"\['knee'\]\['confidence'\]\"\s+# (\w+)")
PROMISE = re.compile(
    r"json \"\['fit'\]\['b_noise'\]\"\s+# ≈ ([\d.]+), between ([\d.]+) and ([\d.]+)"
)


def sh_blocks(markdown: str) -> list[str]:
    """The bodies of the ```sh fenced blocks, in order."""
    return re.findall(r"^```sh\n(.*?)^```$", markdown, flags=re.MULTILINE | re.DOTALL)


def tour_script(base_url: str) -> str:
    blocks = sh_blocks(README.read_text(encoding="utf-8"))
    chosen = []
    for marker in TOUR:
        matches = [block for block in blocks if marker in block]
        assert len(matches) == 1, f"README: {len(matches)} sh blocks contain {marker!r}"
        chosen.append(matches[0])
    chosen[0] = chosen[0].replace("http://127.0.0.1:8000", base_url)
    return "set -euo pipefail\n" + "\n".join(chosen)


def test_the_readme_sweep_tour_runs_and_keeps_its_promise(tmp_path: Path) -> None:
    match = PROMISE.search(README.read_text(encoding="utf-8"))
    assert match, "README: the b_noise line must say '# ≈ X, between LOW and HIGH'"
    shown, low, high = (float(group) for group in match.groups())
    confidence = CONFIDENCE.search(README.read_text(encoding="utf-8"))
    assert confidence, "README: the knee's confidence line must say '# LEVEL'"
    with run_server(
        database_url=sqlite_url(tmp_path / "readme.sqlite3"),
        data_dir=tmp_path / "data",
        env={"BATCHWISE_WORKERS": "2"},
    ) as base_url:
        work = tmp_path / "work"
        work.mkdir()
        result = subprocess.run(
            ["bash", "-c", tour_script(base_url)],
            cwd=work,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.strip().splitlines()
    # the 422 of curves.svg?x=loss, as the README shows it
    assert any("Input should be 'epoch', 'step', 'samples' or 'time'" in line for line in lines)
    assert lines[-1] == confidence.group(1)
    # fit.b_noise, a number (not None), after the earlier curl outputs that end in no newline
    printed = re.search(r"(\d+(?:\.\d*)?(?:e[-+]?\d+)?)$", lines[-2])
    assert printed, lines[-2][-200:]
    b_noise = float(printed.group(1))
    assert math.isfinite(b_noise)
    assert low <= b_noise <= high
    assert abs(b_noise / shown - 1.0) < 0.05  # the README's figure is this run's, rounded
    for plot in ("curves.svg", "curves.png", "scaling.png"):
        assert (work / plot).stat().st_size > 1000
