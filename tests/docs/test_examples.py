"""Every example in README.md and docs/*.md runs as shown, against a real ``batchwise serve``.

One server (embedded workers, SQLite in ``batchwise-data`` under a fresh working directory
that also holds ``examples/``, as a clone does) per markdown file. The file's sh and console
blocks run in order in one bash session, then its python blocks in order in one namespace.
``http://127.0.0.1:8000`` in an example is the server's real address. What an example must
show — HTTP statuses, exit statuses, printed output — is described in
:mod:`tests.support.docblocks`.
"""

from __future__ import annotations

import contextlib
import io
import traceback
from pathlib import Path

import pytest

from tests.support.databases import sqlite_url
from tests.support.docblocks import Block, blocks, output_matches, python_expected
from tests.support.docshell import SHOWN_URL, run_shell
from tests.support.processes import REPO_ROOT, run_server

DOCS = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]
#: Workers per file: two where a sweep or a probe runs its many jobs, none where no job does
#: (each is a process).
WORKERS = {"README.md": 2, "sweeps.md": 2, "probes.md": 2, "deployment.md": 0, "operations.md": 0}
#: Files whose examples need a server set up otherwise (keys are made and checked there).
SERVER_ENV = {
    "deployment.md": {"BATCHWISE_AUTH": "on"},
    "reliability.md": {"BATCHWISE_METRICS_TOKEN": "example-metrics-token"},
}
#: A loaded machine can take long to import and migrate; the examples themselves are not timed.
STARTUP_TIMEOUT_S = 120.0
#: Illustrations are few: docker compose, other machines, a deployment's database.
MOST_ILLUSTRATIONS = 16


def runnable(path: Path) -> list[Block]:
    return [block for block in blocks(path) if block.runnable]


def run_python(
    examples: list[Block], base_url: str, work: Path, monkeypatch: pytest.MonkeyPatch
) -> list[str]:
    """Run the python examples in order in one namespace, each printing what it shows."""
    monkeypatch.chdir(work)
    monkeypatch.delenv("BATCHWISE_API_KEY", raising=False)
    namespace: dict[str, object] = {"__name__": "__main__"}
    failures = []
    for block in examples:
        stdout = io.StringIO()
        source = block.body.replace(SHOWN_URL, base_url)
        code = compile("\n" * (block.line - 1) + source, str(block.path.name), "exec")
        try:
            with contextlib.redirect_stdout(stdout):
                exec(code, namespace)
        except Exception:
            failures.append(f"{block.where}: raised\n{traceback.format_exc()}")
            break
        printed = stdout.getvalue().replace(base_url, SHOWN_URL).splitlines()
        shown = python_expected(block)
        if not output_matches(shown, printed):
            failures.append(f"{block.where}: printed {printed}, shown {shown}")
    return failures


@pytest.mark.timeout(900)  # a sweep or two on a busy 2-core machine; quiet, a minute for all
@pytest.mark.parametrize(
    "path", [path for path in DOCS if runnable(path)], ids=lambda path: path.name
)
def test_the_examples_run_as_shown(
    path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    examples = runnable(path)
    work = tmp_path / "work"
    data = work / "batchwise-data"
    data.mkdir(parents=True)
    (work / "examples").symlink_to(REPO_ROOT / "examples")
    env = {"BATCHWISE_WORKERS": str(WORKERS.get(path.name, 1)), **SERVER_ENV.get(path.name, {})}
    failures = []
    with run_server(
        database_url=sqlite_url(data / "batchwise.db"),
        data_dir=data,
        env=env,
        startup_timeout=STARTUP_TIMEOUT_S,
    ) as base_url:
        shell = [block for block in examples if block.language != "python"]
        if shell:
            failures += run_shell(shell, base_url, work)
        python = [block for block in examples if block.language == "python"]
        if python and not failures:
            failures += run_python(python, base_url, work, monkeypatch)
    assert not failures, "\n".join(failures)


def test_the_docs_are_mostly_examples_that_run() -> None:
    """Illustrations (not run) stay the exception; every docs file is linked from the README."""
    every = [block for path in DOCS for block in blocks(path)]
    shown_only = [block.where for block in every if not block.runnable]
    assert len(every) - len(shown_only) >= 40
    assert len(shown_only) <= MOST_ILLUSTRATIONS, shown_only
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    unlinked = [path.name for path in DOCS[1:] if f"docs/{path.name}" not in readme]
    assert unlinked == []
