"""The examples of README.md and docs/*.md: their fenced blocks, and how output shown in them
compares with output printed.

A fenced block whose info string starts with ``sh``, ``console`` or ``python`` is an example
and is run by ``tests/docs``; one whose info string also says ``illustration`` (```` ```sh
illustration ````) is shown, not run. Other languages (``text``, ``json``, ``yaml``) are never run.

- ``sh``: commands. A line ending in ``# -> 202`` must leave that HTTP status from its last
  ``curl``; every command must succeed.
- ``console``: ``$ command`` lines (a line ending in ``\\`` continues on the next), each
  followed by the output it prints (stdout and stderr). ``# -> exit 1`` after a command says
  its exit status; ``# -> 409`` its last ``curl``'s HTTP status.
- ``python``: code; its ``# -> text`` comments, in order, are the lines it prints.

In shown output, ``…`` or ``...`` stands for any text within a line, a line of just ``…`` or
``...`` for any number of lines, and ``≈ 1.2`` for a number near 1.2 (see :func:`near`);
runs of spaces match any run of spaces.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

LANGUAGES = ("sh", "console", "python")
ILLUSTRATION = "illustration"
FENCE = re.compile(r"^```(?P<info>[^`\n]*)\n(?P<body>.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
#: ``# -> 202``, ``# -> exit 1`` or ``# -> printed text`` at the end of a line.
ARROW = re.compile(r"\s+# -> (?P<what>.*)$")
STATUS = re.compile(r"^\d{3}$")
EXIT = re.compile(r"^exit (\d+)$")
ELLIPSIS = ("...", "…")
NUMBER = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
APPROX = re.compile(rf"≈\s*({NUMBER})")


@dataclass(frozen=True)
class Block:
    """One fenced block: where it is, its language, its text, and whether it is run."""

    path: Path
    line: int  # of the block's first body line, 1-based
    language: str
    body: str
    runnable: bool

    @property
    def where(self) -> str:
        return f"{self.path.name}:{self.line}"


@dataclass
class Command:
    """One command of an example, with what it must do."""

    text: str
    line: int  # of its first line in the markdown file
    status: int | None = None  # HTTP status of its last curl
    exit_code: int = 0
    output: list[str] | None = None  # lines shown (console only)
    where: str = ""


@dataclass
class Lines:
    """A sh block's lines with the HTTP statuses they must leave, by markdown line."""

    text: list[tuple[int, str]] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)


def blocks(path: Path) -> list[Block]:
    """Every sh, console and python block of a markdown file, in order."""
    markdown = path.read_text(encoding="utf-8")
    found = []
    for match in FENCE.finditer(markdown):
        words = match.group("info").split()
        if not words or words[0] not in LANGUAGES:
            continue
        line = markdown.count("\n", 0, match.start("body")) + 1
        runnable = ILLUSTRATION not in words[1:]
        found.append(Block(path, line, words[0], match.group("body"), runnable))
    return found


def arrow(line: str) -> tuple[str, str | None]:
    """A line without its ``# -> …`` comment, and the comment's text (None without one)."""
    match = ARROW.search(line)
    if match is None:
        return line, None
    return line[: match.start()], match.group("what").strip()


def sh_lines(block: Block) -> Lines:
    """A sh block as numbered lines, the ``# -> NNN`` of each line read off."""
    result = Lines()
    for offset, raw in enumerate(block.body.splitlines()):
        number = block.line + offset
        _, what = arrow(raw)
        if what is not None:
            if not STATUS.match(what):
                raise ValueError(f"{block.path.name}:{number}: a sh line's '# -> ' is a status")
            result.statuses[number] = int(what)
        result.text.append((number, raw))
    return result


def console_commands(block: Block) -> list[Command]:
    """A console block's ``$`` commands, each with its continuation lines and output shown."""
    commands: list[Command] = []
    lines = block.body.splitlines()
    index = 0
    while index < len(lines):
        raw, number = lines[index], block.line + index
        if not raw.startswith("$ "):
            if not commands:
                raise ValueError(f"{block.path.name}:{number}: output before any '$ ' command")
            assert commands[-1].output is not None
            commands[-1].output.append(raw)
            index += 1
            continue
        text = [raw[2:]]
        while text[-1].endswith("\\") and index + 1 < len(lines):
            index += 1
            text.append(lines[index])
        command = Command("\n".join(text), number, output=[], where=f"{block.path.name}:{number}")
        _, what = arrow(text[-1])
        if what is not None:
            if STATUS.match(what):
                command.status = int(what)
            elif exit_match := EXIT.match(what):
                command.exit_code = int(exit_match.group(1))
            else:
                raise ValueError(f"{command.where}: '# -> {what}': a status or 'exit N'")
        commands.append(command)
        index += 1
    return commands


def python_expected(block: Block) -> list[str]:
    """The lines a python block says it prints: its ``# -> …`` comments, in order."""
    return [what for line in block.body.splitlines() if (what := arrow(line)[1]) is not None]


# --- comparing output -----------------------------------------------------------------------


def near(shown: str, value: float) -> bool:
    """``≈ shown`` holds for ``value`` within 10 % of it, or within one unit of its last
    shown digit, whichever is wider (``≈ 0.01`` accepts 0 to 0.02)."""
    decimals = len(shown.split(".")[1]) if "." in shown and "e" not in shown.lower() else 0
    expected = float(shown)
    return abs(value - expected) <= max(0.1 * abs(expected), 10.0**-decimals)


def _pattern(shown: str) -> tuple[re.Pattern[str], list[str]]:
    """A regex for one shown line, and the numbers its ``≈`` stand for, in order."""
    parts, approx, position = [], [], 0
    tokens = re.compile(rf"{APPROX.pattern}|\.\.\.|…|\s+")
    for token in tokens.finditer(shown):
        parts.append(re.escape(shown[position : token.start()]))
        if token.group(1) is not None:
            parts.append(f"(?:≈\\s*)?({NUMBER})")  # the printed text may say ≈ too
            approx.append(token.group(1))
        elif token.group(0) in ELLIPSIS:
            parts.append(".*?")
        else:
            parts.append(r"\s+")
        position = token.end()
    parts.append(re.escape(shown[position:]))
    return re.compile("".join(parts)), approx


def line_matches(shown: str, printed: str) -> bool:
    pattern, approx = _pattern(shown.strip())
    match = pattern.fullmatch(printed.strip())
    if match is None:
        return False
    return all(near(s, float(v)) for s, v in zip(approx, match.groups(), strict=True))


def output_matches(shown: list[str], printed: list[str]) -> bool:
    """Whether printed lines are the shown ones (a line of ``…`` spanning any number)."""
    if not shown:
        return not printed
    head, rest = shown[0].strip(), shown[1:]
    if head in ELLIPSIS:
        return any(output_matches(rest, printed[skip:]) for skip in range(len(printed) + 1))
    return bool(printed) and line_matches(head, printed[0]) and output_matches(rest, printed[1:])
