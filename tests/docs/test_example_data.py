"""The shipped example data are what ``examples/make_examples.py`` writes, byte for byte, and
big enough for the docs' sweep."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from tests.support.processes import REPO_ROOT

EXAMPLES = REPO_ROOT / "examples"


def test_the_example_files_are_what_the_script_writes(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("make_examples", EXAMPLES / "make_examples.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(tmp_path)
    for name in ("line.csv", "scales.csv"):
        assert (tmp_path / name).read_bytes() == (EXAMPLES / name).read_bytes(), name


def test_the_sweep_data_hold_the_largest_batch_swept() -> None:
    rows = (EXAMPLES / "scales.csv").read_text(encoding="utf-8").splitlines()
    assert rows[0] == "x0,x1,x2,x3,y"
    assert len(rows) - 1 == 4000 >= 512  # the docs sweep batch sizes 8 … 512, no hold-out
