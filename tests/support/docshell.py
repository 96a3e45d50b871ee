"""One bash session that runs a markdown file's sh and console examples in order, and the
report it leaves: what each command printed, its exit status, its last HTTP status.

The session's output carries markers (lines starting with ``\\x1e``) between the examples'
own output. ``curl`` is a function that also dumps the response headers to a file, so a
``# -> 202`` can be checked; a user's curl behaves the same without it.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.docblocks import Block, Command, console_commands, output_matches, sh_lines

MARK = "\x1e"
#: The address examples show; the runner puts the real server's in its place.
SHOWN_URL = "http://127.0.0.1:8000"
PRELUDE = f"""\
set -eEo pipefail
exec 2>&1
__bw_headers=$(mktemp)
__bw_pid=$BASHPID
curl() {{ command curl -D "$__bw_headers" "$@"; }}
__bw_status() {{ grep -a '^HTTP/' "$__bw_headers" 2>/dev/null | tail -n 1 | cut -d' ' -f2; }}
# Reported by the session itself: a subshell's failure fails the command that ran it.
__bw_fail() {{
    [ "$BASHPID" != "$__bw_pid" ] || printf "\\n{MARK}FAIL %s %s\\n" "$__bw_line" "$1"
}}
trap '__bw_fail $?' ERR
"""


@dataclass
class Report:
    """What the session said: per command id, output lines, exit code and HTTP status."""

    output: dict[int, list[str]] = field(default_factory=dict)
    exit_code: dict[int, int] = field(default_factory=dict)
    status: dict[int, str] = field(default_factory=dict)
    failed_at: tuple[int, int] | None = None  # (markdown line, exit status) of a failing sh line
    reached_end: bool = False


def script(examples: list[Block]) -> tuple[str, list[Command]]:
    """The bash script for a file's sh and console blocks, and the commands it checks.

    A sh line runs as written, after setting ``__bw_line`` to its markdown line (so a failure
    names it); a console command runs with its output fenced by markers, its exit status caught.
    """
    out = [PRELUDE]
    checks: list[Command] = []
    for block in examples:
        if block.language == "sh":
            lines = sh_lines(block)
            buffer: list[tuple[int, str]] = []  # the lines of the command being read
            for number, text in lines.text:
                if not buffer:
                    out.append(f"__bw_line={number}")
                buffer.append((number, text))
                out.append(text)
                if _continues("\n".join(line for _, line in buffer)):
                    continue
                for at, _ in buffer:
                    if at in lines.statuses:
                        checks.append(
                            Command(text, at, status=lines.statuses[at], where=_at(block, at))
                        )
                        out.append(
                            f'printf "\\n{MARK}STATUS {len(checks) - 1} %s\\n" "$(__bw_status)"'
                        )
                buffer = []
        else:
            for command in console_commands(block):
                index = len(checks)
                checks.append(command)
                out.append(f'__bw_line={command.line}; __bw_rc=0; : > "$__bw_headers"')
                out.append(f'printf "\\n{MARK}OUT {index}\\n"')
                out.append(f"{{ {command.text}\n}} || __bw_rc=$?")
                out.append(f'printf "\\n{MARK}END {index} %s %s\\n" "$__bw_rc" "$(__bw_status)"')
    out.append(f'printf "\\n{MARK}DONE\\n"')
    return "\n".join(out) + "\n", checks


def _at(block: Block, line: int) -> str:
    return f"{block.path.name}:{line}"


def _continues(text: str) -> bool:
    """Whether a command's text so far goes on to the next line: a trailing backslash, pipe or
    ``&&``, or a quote left open (a JSON body spread over lines, say)."""
    if text.rstrip().endswith(("\\", "|", "&&", "(")):
        return True
    try:
        shlex.split(text, comments=True)
    except ValueError:
        return True
    return False


MARKER = re.compile(rf"^{MARK}(OUT|END|STATUS|FAIL|DONE)(?: (.*))?$")


def read_report(text: str) -> Report:
    """Parse a session's output into a :class:`Report`."""
    report = Report()
    current: int | None = None
    captured: list[str] = []
    for line in text.split("\n"):
        marker = MARKER.match(line)
        if marker is None:
            if current is not None:
                captured.append(line)
            continue
        kind, rest = marker.group(1), (marker.group(2) or "").split(" ")
        if kind == "OUT":
            current, captured = int(rest[0]), []
        elif kind == "END" and current is not None:
            body = "\n".join(captured)
            body = body.removesuffix("\n")  # the newline before this marker
            report.output[current] = body.splitlines()
            report.exit_code[current] = int(rest[1])
            report.status[current] = rest[2] if len(rest) > 2 else ""
            current = None
        elif kind == "STATUS":
            report.status[int(rest[0])] = rest[1] if len(rest) > 1 else ""
        elif kind == "FAIL" and report.failed_at is None and current is None:
            # (inside a console command its exit status is what counts)
            report.failed_at = (int(rest[0]), int(rest[1]))
        elif kind == "DONE":
            report.reached_end = True
    return report


def run_shell(examples: list[Block], base_url: str, work: Path) -> list[str]:
    """Run the sh and console examples in one bash session; what went wrong, if anything."""
    text, checks = script(examples)
    env = {k: v for k, v in os.environ.items() if not k.startswith("BATCHWISE_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["BATCHWISE_URL"] = base_url  # what the terminal client's default is to a user
    result = subprocess.run(
        ["bash", "-c", text.replace(SHOWN_URL, base_url)],
        cwd=work,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    report = read_report(result.stdout)
    failures = []
    if report.failed_at is not None:
        line, status = report.failed_at
        failures.append(f"{examples[0].path.name}:{line}: a command exited {status}")
    elif not report.reached_end:
        failures.append(f"the session ended early (exit {result.returncode})")
    for index, command in enumerate(checks):
        if index not in report.status and index not in report.output:
            continue  # not reached: the failure above says why
        got = report.status.get(index, "")
        if command.status is not None and got != str(command.status):
            failures.append(f"{command.where}: HTTP {got or 'nothing'}, shown {command.status}")
        if command.output is None:
            continue
        printed = [line.replace(base_url, SHOWN_URL) for line in report.output.get(index, [])]
        if report.exit_code.get(index) != command.exit_code:
            failures.append(
                f"{command.where}: exit {report.exit_code.get(index)}, shown {command.exit_code}"
                + "".join(f"\n    | {line}" for line in printed)
            )
        if not output_matches(command.output, printed):
            failures.append(
                f"{command.where}: printed\n"
                + "".join(f"    | {line}\n" for line in printed)
                + "  shown\n"
                + "".join(f"    | {line}\n" for line in command.output)
            )
    if failures:
        failures.append("session output:\n" + result.stdout[-6000:])
    return failures
