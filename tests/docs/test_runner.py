"""The docs runner itself: what it collects, how shown output compares, and that an example
that drifts from what it shows fails, naming its line."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.docblocks import blocks, console_commands, line_matches, output_matches
from tests.support.docshell import run_shell


@pytest.fixture
def base_url() -> Iterator[str]:
    """A tiny HTTP server: 200 on /ok, 404 elsewhere (the runner's status checks need one)."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status = 200 if self.path == "/ok" else 404
            self.send_response(status)
            self.end_headers()
            self.wfile.write(b'{"n": 218.4}')

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def write(tmp_path: Path, markdown: str) -> Path:
    path = tmp_path / "doc.md"
    path.write_text(markdown, encoding="utf-8")
    return path


def test_blocks_are_collected_by_language_and_illustrations_are_marked(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "# t\n\n```sh\necho a\n```\n\n```sh illustration\ndocker compose up\n```\n\n"
        "```json\n{}\n```\n\n```console\n$ echo b\nb\n```\n",
    )
    found = [(block.language, block.line, block.runnable) for block in blocks(path)]
    assert found == [("sh", 4, True), ("sh", 8, False), ("console", 16, True)]
    command = console_commands(blocks(path)[2])[0]
    assert (command.text, command.output, command.line) == ("echo b", ["b"], 16)


def test_shown_output_compares_loosely_where_it_says_so() -> None:
    assert line_matches("b_noise ≈ 218, id …", "b_noise 217.58265, id 5f0c-aa")
    assert line_matches("knee ≈ 220 (S_min ≈ 56)", "knee ≈ 220 (S_min ≈ 57)")
    assert not line_matches("≈ 218", "250")  # past 10 %
    assert line_matches("≈ 0.01", "0.0195")  # one unit of the last shown digit
    assert line_matches("a   b", "a b")
    assert not line_matches("a b", "a c")
    assert output_matches(["first", "...", "last"], ["first", "x", "y", "last"])
    assert output_matches(["first", "…", "last"], ["first", "last"])
    assert not output_matches(["first", "last"], ["first", "x", "last"])


def test_a_drifted_example_fails_naming_its_line(tmp_path: Path, base_url: str) -> None:
    path = write(
        tmp_path,
        "```sh\n"
        "curl -s http://127.0.0.1:8000/ok -o /dev/null   # -> 200\n"
        "curl -s http://127.0.0.1:8000/gone -o /dev/null   # -> 200\n"
        "```\n\n"
        "```console\n"
        "$ curl -s http://127.0.0.1:8000/ok\n"
        '{"n": ≈ 218}\n'
        "$ echo 3\n"
        "4\n"
        "$ false   # -> exit 1\n"
        "$ false\n"
        "```\n",
    )
    failures = run_shell(blocks(path), base_url, tmp_path)
    assert failures[0] == "doc.md:3: HTTP 404, shown 200"
    assert failures[1].startswith("doc.md:9: printed\n    | 3\n")
    assert failures[2].startswith("doc.md:12: exit 1, shown 0")
    assert len(failures) == 4  # and the session's output


def test_a_failing_sh_command_stops_the_file_and_names_its_line(
    tmp_path: Path, base_url: str
) -> None:
    path = write(tmp_path, "```sh\necho one\nls no-such-file\necho never\n```\n")
    failures = run_shell(blocks(path), base_url, tmp_path)
    assert failures[0] == "doc.md:3: a command exited 2"
    assert "never" not in failures[-1]
