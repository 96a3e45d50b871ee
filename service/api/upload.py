"""Streaming request bodies: multipart uploads spooled to temporary files, with a hard size cap.

Starlette's ``request.form()`` spools files too, but it reads the whole body before anyone can
say "too large". Here the raw ``request.stream()`` feeds python-multipart's streaming parser
directly, every byte is counted, and the read stops at the first byte past the limit
(:class:`PayloadTooLarge`, 413). A ``Content-Length`` over the limit is refused before reading.

Only the parts named in ``file_fields`` are written to disk (under ``spool_dir``, never whole
in memory); other file parts are counted and discarded; text fields are kept in memory up to
``MAX_FIELD_BYTES`` each. Every spooled file is deleted when the ``receive_multipart`` context
ends, whatever happened, so a refused upload leaves nothing behind: a full disk too, whose
``OSError`` (ENOSPC) may come from a write or only from the final flush of a closing file.
The API answers that ``OSError`` with 507 (:mod:`service.api.problems`).

A refusal raised before the body has been read to its end carries ``Connection: close``: the
rest is never read, so the connection cannot carry another request (RFC 9112 §9.6). Closing
at once stops the server from reading on: uvicorn would otherwise drain the unread rest of a
large body, and keep the bytes past a lying ``Content-Length`` buffered in the connection for
its keep-alive timeout (figures in docs/performance.md).
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import AsyncIterator, Collection, Iterator
from contextlib import asynccontextmanager, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import BinaryIO

import anyio.to_thread
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, MultipartState, parse_options_header
from starlette.requests import ClientDisconnect, Request

from service.errors import BadRequest, BatchwiseError, PayloadTooLarge

MAX_FIELD_BYTES = 64 * 1024  # a text form field (name, target, ...) is short
MAX_FIELDS = 32  # parts of any kind: a form with more is not one of ours


UPLOAD_LIMIT_NAME = "BATCHWISE_MAX_UPLOAD_BYTES"

logger = logging.getLogger("service.api")


def spool_dir(data_dir: Path) -> Path:
    """Where upload bodies are spooled: ``<data_dir>/spool``."""
    return data_dir / "spool"


def clear_spool(spool_dir: Path) -> list[Path]:
    """Delete every file left in ``spool_dir``; the paths deleted.

    For start-up, before any request: a file outlives its request only when the process died
    mid-upload or mid-ingest (kill -9, out of memory, power cut), and nothing can resume it.
    ``batchwise serve`` calls it once, before it starts its API processes (the app does not:
    with several processes on one data dir, one restarting would delete another's upload in
    flight).
    """
    if not spool_dir.is_dir():
        return []
    left = sorted(path for path in spool_dir.iterdir() if path.is_file())
    for path in left:
        path.unlink(missing_ok=True)
        logger.warning("removed %s from the spool: an upload that never finished", path.name)
    return left


def _too_large(max_bytes: int, limit_name: str) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"The request body is larger than the limit of {max_bytes} bytes ({limit_name})."
    )


def check_content_length(
    request: Request, max_bytes: int, limit_name: str = UPLOAD_LIMIT_NAME
) -> None:
    """Refuse a declared ``Content-Length`` over ``max_bytes`` before reading a byte."""
    declared = request.headers.get("content-length")
    if declared is None:
        return
    try:
        length = int(declared)
    except ValueError:
        raise BadRequest(f"Content-Length {declared!r} is not an integer.") from None
    if length > max_bytes:
        raise _too_large(max_bytes, limit_name)


@contextmanager
def _closing_connection_on_refusal() -> Iterator[None]:
    """Add ``Connection: close`` to a refusal raised inside (see the module docstring)."""
    try:
        yield
    except BatchwiseError as exc:
        exc.headers.setdefault("Connection", "close")
        raise


async def _limited_stream(
    request: Request, max_bytes: int, limit_name: str = UPLOAD_LIMIT_NAME
) -> AsyncIterator[bytes]:
    """The request body in the chunks the server hands over; raises once past ``max_bytes``."""
    check_content_length(request, max_bytes, limit_name)
    received = 0
    try:
        async for chunk in request.stream():
            received += len(chunk)
            if received > max_bytes:
                raise _too_large(max_bytes, limit_name)
            if chunk:
                yield chunk
    except ClientDisconnect:
        raise BadRequest("The client disconnected before the request body was complete.") from None


async def read_body(
    request: Request, *, max_bytes: int, limit_name: str = UPLOAD_LIMIT_NAME
) -> bytes:
    """The whole body, for small JSON requests; 413 as soon as it passes ``max_bytes``
    (``limit_name`` names the limit in the message)."""
    body = bytearray()
    with _closing_connection_on_refusal():
        async for chunk in _limited_stream(request, max_bytes, limit_name):
            body += chunk
    return bytes(body)


@dataclass
class SpooledFile:
    """A file part written to disk: ``path`` holds exactly the part's bytes."""

    field_name: str
    filename: str | None
    content_type: str | None
    path: Path
    size: int = 0


@dataclass
class MultipartForm:
    """A received multipart body: text ``fields``, spooled ``files`` and the names of the file
    parts that were not asked for (``ignored_files``: their bytes were discarded)."""

    fields: dict[str, str] = field(default_factory=dict)
    files: dict[str, SpooledFile] = field(default_factory=dict)
    ignored_files: list[str] = field(default_factory=list)
    duplicate_fields: list[str] = field(default_factory=list)


class _PartKind:
    TEXT, FILE, DISCARD = "text", "file", "discard"


class _MultipartSink:
    """python-multipart callbacks → :class:`MultipartForm`; file bytes queue in ``pending``
    so the caller writes them off the event loop."""

    def __init__(self, spool_dir: Path, file_fields: Collection[str]) -> None:
        self.spool_dir = spool_dir
        self.file_fields = file_fields
        self.form = MultipartForm()
        self.handles: list[BinaryIO] = []
        self.pending: list[tuple[BinaryIO, SpooledFile, bytes]] = []
        self.parts = 0
        self._headers: dict[bytes, bytes] = {}
        self._header_name = b""
        self._header_value = b""
        self._kind = _PartKind.DISCARD
        self._name = ""
        self._text = bytearray()
        self._file: tuple[BinaryIO, SpooledFile] | None = None

    def on_part_begin(self) -> None:
        self.parts += 1
        if self.parts > MAX_FIELDS:
            raise BadRequest(f"The multipart body has more than {MAX_FIELDS} parts.")
        self._headers = {}
        self._text = bytearray()
        self._file = None

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def on_header_end(self) -> None:
        self._headers[self._header_name.strip().lower()] = self._header_value.strip()
        self._header_name = self._header_value = b""

    def on_headers_finished(self) -> None:
        disposition, options = parse_options_header(self._headers.get(b"content-disposition"))
        if disposition != b"form-data" or b"name" not in options:
            raise BadRequest(
                'Every multipart part needs "Content-Disposition: form-data; name=..."'
            )
        self._name = options[b"name"].decode("utf-8", "replace")
        if self._name in self.form.fields or self._name in self.form.files:
            self.form.duplicate_fields.append(self._name)
        if b"filename" not in options:
            self._kind = _PartKind.TEXT
            return
        if self._name not in self.file_fields or self._name in self.form.files:
            self._kind = _PartKind.DISCARD
            self.form.ignored_files.append(self._name)
            return
        raw_name = options[b"filename"].decode("utf-8", "replace")
        # Browsers on Windows once sent full paths; keep only the last component.
        filename = PureWindowsPath(PurePosixPath(raw_name).name).name or None
        content_type = self._headers.get(b"content-type")
        fd, path = tempfile.mkstemp(dir=self.spool_dir, prefix="upload-", suffix=".part")
        handle = os.fdopen(fd, "wb")
        self.handles.append(handle)
        spooled = SpooledFile(
            field_name=self._name,
            filename=filename,
            content_type=content_type.decode("latin-1") if content_type else None,
            path=Path(path),
        )
        self.form.files[self._name] = spooled
        self._file = (handle, spooled)
        self._kind = _PartKind.FILE

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._kind == _PartKind.FILE:
            assert self._file is not None
            handle, spooled = self._file
            self.pending.append((handle, spooled, data[start:end]))
        elif self._kind == _PartKind.TEXT:
            self._text += data[start:end]
            if len(self._text) > MAX_FIELD_BYTES:
                raise BadRequest(
                    f"Form field {self._name!r} is longer than {MAX_FIELD_BYTES} bytes."
                )

    def on_part_end(self) -> None:
        if self._kind == _PartKind.TEXT:
            try:
                self.form.fields[self._name] = self._text.decode("utf-8")
            except UnicodeDecodeError:
                raise BadRequest(f"Form field {self._name!r} is not UTF-8 text.") from None


def _write_pending(pending: list[tuple[BinaryIO, SpooledFile, bytes]]) -> None:
    for handle, spooled, data in pending:
        handle.write(data)
        spooled.size += len(data)


@asynccontextmanager
async def receive_multipart(
    request: Request,
    *,
    spool_dir: Path,
    max_bytes: int,
    file_fields: Collection[str] = ("file",),
) -> AsyncIterator[MultipartForm]:
    """Stream a ``multipart/form-data`` body into a :class:`MultipartForm`.

    Raises :class:`PayloadTooLarge` past ``max_bytes`` of body (parts and boundaries counted),
    :class:`BadRequest` for a body that is not well-formed multipart. The spooled files exist
    inside the ``async with`` block only.
    """
    _, params = parse_options_header(request.headers.get("content-type"))
    boundary = params.get(b"boundary")
    sink = _MultipartSink(spool_dir, file_fields)
    with _closing_connection_on_refusal():
        if not boundary:
            raise BadRequest("The multipart/form-data Content-Type has no boundary parameter.")
        try:
            parser = MultipartParser(
                boundary,
                callbacks={
                    "on_part_begin": sink.on_part_begin,
                    "on_part_data": sink.on_part_data,
                    "on_part_end": sink.on_part_end,
                    "on_header_field": sink.on_header_field,
                    "on_header_value": sink.on_header_value,
                    "on_header_end": sink.on_header_end,
                    "on_headers_finished": sink.on_headers_finished,
                },
            )
        except MultipartParseError as exc:  # e.g. an over-long boundary
            raise BadRequest(f"Malformed multipart body: {exc}") from None
    spool_dir.mkdir(parents=True, exist_ok=True)
    try:
        with _closing_connection_on_refusal():
            async for chunk in _limited_stream(request, max_bytes):
                try:
                    parser.write(chunk)
                except MultipartParseError as exc:
                    raise BadRequest(f"Malformed multipart body: {exc}") from None
                if sink.pending:
                    batch, sink.pending = sink.pending, []
                    await anyio.to_thread.run_sync(_write_pending, batch)
            if parser.state != MultipartState.END:
                raise BadRequest("The multipart body ended before its closing boundary.")
        for handle in sink.handles:
            handle.close()
        yield sink.form
    finally:
        for handle in sink.handles:
            # A file whose flush already failed (disk full) fails again here: it is being
            # deleted anyway, and the first error is the one that propagates.
            with suppress(OSError):
                handle.close()
        for spooled in sink.form.files.values():
            spooled.path.unlink(missing_ok=True)


__all__ = [
    "MAX_FIELDS",
    "MAX_FIELD_BYTES",
    "UPLOAD_LIMIT_NAME",
    "MultipartForm",
    "SpooledFile",
    "check_content_length",
    "clear_spool",
    "read_body",
    "receive_multipart",
    "spool_dir",
]
