"""Logging for every entry point: JSON lines for machines, plain text for people.

``configure_logging(level, fmt)`` installs one handler on the root logger. ``fmt="auto"``
picks text when the stream is a terminal and JSON lines otherwise (a container, a file, a
pipe). A JSON line is one object::

    {"time": "2026-01-02T03:04:05.678Z", "level": "INFO", "logger": "service.worker",
     "message": "…", "worker_id": "host:41:ab12cd34", "job_id": "…", "attempt": 1}

``request_id``, ``job_id`` and ``worker_id`` come from :func:`log_context` (context variables,
so every line logged inside a request or a job carries them, whoever logs it) or from a
call's ``extra=``; other ``extra=`` fields are added as they are; ``exception`` holds the
traceback text. Standard library only: the bottom layer, importable from anywhere.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, Literal, TextIO

LogFormat = Literal["auto", "json", "text"]

#: The context fields, in the order they are written.
CONTEXT_FIELDS = ("request_id", "job_id", "worker_id")

_context: dict[str, ContextVar[str | None]] = {
    name: ContextVar(f"batchwise_{name}", default=None) for name in CONTEXT_FIELDS
}

# Attributes every LogRecord has: anything else on a record came from ``extra=``.
_RECORD_ATTRIBUTES = frozenset(
    logging.LogRecord("", logging.INFO, "", 0, "", None, None).__dict__
) | {"message", "asctime", "color_message", "taskName"}  # color_message: uvicorn's ANSI copy

#: Marks the handler :func:`configure_logging` installs, so a second call replaces it.
_HANDLER_NAME = "batchwise"


@contextmanager
def log_context(
    *, request_id: str | None = None, job_id: str | None = None, worker_id: str | None = None
) -> Iterator[None]:
    """Within the block, every log line of this thread or task carries the given ids
    (``None`` leaves a field as it was)."""
    given = {"request_id": request_id, "job_id": job_id, "worker_id": worker_id}
    tokens = [(_context[name], _context[name].set(v)) for name, v in given.items() if v]
    try:
        yield
    finally:
        for variable, token in reversed(tokens):
            variable.reset(token)


def current_context() -> dict[str, str]:
    """The ids :func:`log_context` has set here, by field name."""
    return {name: value for name in CONTEXT_FIELDS if (value := _context[name].get())}


class ContextFilter(logging.Filter):
    """Copies the context ids onto each record (an ``extra=`` value wins)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name, value in current_context().items():
            if getattr(record, name, None) is None:
                setattr(record, name, value)
        return True


def _extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The record's context ids, then its other ``extra=`` fields, in a stable order."""
    fields = {name: v for name in CONTEXT_FIELDS if (v := getattr(record, name, None)) is not None}
    for key, value in record.__dict__.items():
        if key not in _RECORD_ATTRIBUTES and key not in fields and not key.startswith("_"):
            fields[key] = value
    return fields


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ms), level, logger, message, the context ids,
    ``extra=`` fields, and ``exception`` (the traceback text) when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        created = datetime.fromtimestamp(record.created, UTC)
        line: dict[str, Any] = {
            "time": created.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        line |= _extra_fields(record)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exception"] = record.exc_text
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        # default=str: an extra that JSON cannot hold (a Path, a datetime) is still written.
        try:
            return json.dumps(line, ensure_ascii=False, default=str, allow_nan=False)
        except ValueError:  # NaN or infinity: not JSON, so written as text
            safe = {k: repr(v) if isinstance(v, float) else v for k, v in line.items()}
            return json.dumps(safe, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """``time LEVEL logger: message [request_id=… job_id=…]``, then any traceback."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 (stdlib name)
        text = super().formatMessage(record)
        fields = _extra_fields(record)
        if fields:
            text += " [" + " ".join(f"{key}={value}" for key, value in fields.items()) + "]"
        return text


def resolve_format(fmt: LogFormat, stream: TextIO) -> Literal["json", "text"]:
    """``auto`` → ``text`` on a terminal, ``json`` otherwise."""
    if fmt != "auto":
        return fmt
    try:
        return "text" if stream.isatty() else "json"
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return "json"


def configure_logging(
    level: str = "info", fmt: LogFormat = "auto", *, stream: TextIO | None = None
) -> Literal["json", "text"]:
    """Send every logger's lines at ``level`` and above to ``stream`` (default stderr) in
    ``fmt``; returns the format in force. Calling it again replaces the handler it installed.
    """
    stream = stream if stream is not None else sys.stderr
    resolved = resolve_format(fmt, stream)
    handler = logging.StreamHandler(stream)
    handler.set_name(_HANDLER_NAME)
    handler.addFilter(ContextFilter())
    handler.setFormatter(JsonFormatter() if resolved == "json" else TextFormatter())
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(level.upper())
    # Alembic narrates every context it opens; our own line says what a migration did.
    logging.getLogger("alembic").setLevel(logging.NOTSET if level == "debug" else logging.WARNING)
    return resolved


__all__ = [
    "CONTEXT_FIELDS",
    "ContextFilter",
    "JsonFormatter",
    "LogFormat",
    "TextFormatter",
    "configure_logging",
    "current_context",
    "log_context",
    "resolve_format",
]
