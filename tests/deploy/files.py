"""Readers and checks of the deployment files (docker-compose.yml, .env.example, Dockerfile,
.dockerignore), shared by the deploy tests. Each check returns its problems as sentences, so
a test asserts ``== []`` on the real files and names the problem for a broken sample.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from service.config import Settings

REPO_ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
ENV_EXAMPLE = REPO_ROOT / ".env.example"
DOCKERFILE = REPO_ROOT / "Dockerfile"
DOCKERIGNORE = REPO_ROOT / ".dockerignore"

#: Every environment name Settings reads: BATCHWISE_ + the field name, upper-cased.
SETTING_NAMES = frozenset(f"BATCHWISE_{name.upper()}" for name in Settings.model_fields)

_BATCHWISE_NAME = re.compile(r"\bBATCHWISE_[A-Z0-9_]+")
#: ``${NAME:-default}`` with no ``${`` inside the default (the innermost ones of a nesting).
_INTERPOLATION = re.compile(r"\$\{(?P<name>\w+)(?::?-(?P<default>[^${}]*))?\}")
_ENV_LINE = re.compile(r"^#?\s*(?P<name>[A-Z][A-Z0-9_]*)=(?P<value>.*)$")


def unknown_settings(names: set[str]) -> list[str]:
    """The ``BATCHWISE_*`` names in ``names`` that no Setting reads (Settings ignores unknown
    variables, so a typo would be silently lost)."""
    return sorted(
        f"{name} is not a setting"
        for name in names
        if name.startswith("BATCHWISE_") and name not in SETTING_NAMES
    )


def batchwise_names(text: str) -> set[str]:
    """Every ``BATCHWISE_*`` word in ``text``."""
    return set(_BATCHWISE_NAME.findall(text))


def _strings(data: object) -> list[str]:
    if isinstance(data, str):
        return [data]
    if isinstance(data, dict):
        return [s for key, value in data.items() for s in _strings(key) + _strings(value)]
    if isinstance(data, list):
        return [s for item in data for s in _strings(item)]
    return []


def interpolation_defaults(text: str) -> dict[str, set[str]]:
    """``${NAME:-default}`` in the values of a compose file (not its comments): name → the
    defaults it is given (``""`` when it has none)."""
    defaults: dict[str, set[str]] = {}
    for value in _strings(yaml.safe_load(text)):
        for match in _INTERPOLATION.finditer(value):
            defaults.setdefault(match["name"], set()).add(match["default"] or "")
    return defaults


def load_compose(text: str) -> dict[str, Any]:
    """The compose file as data (YAML merge keys ``<<`` resolved)."""
    data = yaml.safe_load(text)
    assert isinstance(data, dict)
    return data


def env_example(text: str) -> dict[str, str]:
    """The variables of an ``.env`` file: set ones and commented-out ``# NAME=value`` ones."""
    return {
        match["name"]: match["value"]
        for line in text.splitlines()
        if (match := _ENV_LINE.match(line.strip()))
    }


# --- Dockerfile -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Instruction:
    keyword: str  # upper-cased: FROM, RUN, COPY, ...
    arguments: str  # continuation lines joined with single spaces

    def exec_form(self) -> list[str]:
        """The JSON array of an exec-form instruction (ENTRYPOINT, CMD)."""
        value = json.loads(self.arguments)
        assert isinstance(value, list)
        return [str(item) for item in value]


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def last(self, keyword: str) -> Instruction | None:
        found = self.all(keyword)
        return found[-1] if found else None


def parse_dockerfile(text: str) -> list[Stage]:
    """The Dockerfile's stages in order, each with its instructions (comments dropped,
    backslash continuations joined)."""
    logical: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):  # a comment inside a continued instruction
            continue
        if line.endswith("\\"):
            pending += line[:-1].strip() + " "
            continue
        logical.append((pending + line).strip())
        pending = ""
    stages: list[Stage] = []
    for line in logical:
        keyword, _, arguments = line.partition(" ")
        instruction = Instruction(keyword.upper(), " ".join(arguments.split()))
        if instruction.keyword == "FROM":
            words = [w for w in instruction.arguments.split() if not w.startswith("--")]
            name = words[2] if len(words) == 3 and words[1].lower() == "as" else None
            stages.append(Stage(base=words[0], name=name))
        else:
            assert stages, f"{keyword} before the first FROM"
            stages[-1].instructions.append(instruction)
    return stages


#: Compilers, build tools and caches that have no place in the runtime image.
BUILD_TOOLS = ("gcc", "g++", "clang", "build-essential", "make", "cmake", "python3-dev")


def runtime_stage_problems(stage: Stage) -> list[str]:
    """Why ``stage`` is not a fit last stage: root user, no health check or entry point,
    build tools installed, a pip cache kept, the sources copied instead of a wheel."""
    problems = []
    user = stage.last("USER")
    if user is None or user.arguments.split(":")[0] in ("root", "0"):
        problems.append("the last stage runs as root")
    healthcheck = stage.last("HEALTHCHECK")
    if healthcheck is None or "/healthz" not in healthcheck.arguments:
        problems.append("no HEALTHCHECK on /healthz")
    entrypoint = stage.last("ENTRYPOINT")
    if entrypoint is None or entrypoint.exec_form() != ["batchwise"]:
        problems.append('ENTRYPOINT is not ["batchwise"]')
    for run in stage.all("RUN"):
        words = set(shlex.split(run.arguments.replace(";", " ").replace("&&", " ")))
        problems += [f"installs {tool}" for tool in BUILD_TOOLS if tool in words]
        if "pip" in run.arguments and "install" in words and "--no-cache-dir" not in words:
            problems.append("pip install keeps its cache")
        if "pip" in run.arguments and "install" in words and "--no-index" not in words:
            problems.append("pip install may fetch or compile (no --no-index)")
    for copy in stage.all("COPY"):
        if "--from=" not in copy.arguments:
            problems.append(f"copies from the build context: COPY {copy.arguments}")
    return problems


def dockerignore_problems(ignore_text: str, copied: list[str]) -> list[str]:
    """Whether ``.dockerignore`` ignores everything (``*``) but re-includes each of
    ``copied`` (the build stage's COPY sources)."""
    lines = [
        line.strip()
        for line in ignore_text.splitlines()
        if line.strip() and not line.startswith("#")
    ]
    problems = [] if lines[:1] == ["*"] else ["does not start from ignoring everything (*)"]
    included = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    problems += [f"{path} is not in the build context" for path in copied if path not in included]
    return problems
