"""Hostile NPZ archives, written byte by byte: members whose NPY header declares any shape over
data that deflates to almost nothing, entries whose zip sizes disagree with their header, and
central directories padded with entries.

A member is raw-deflated (zip method 8) or stored (0); its declared size (``file_size``) is
what the zip entry says it holds once decompressed, true or not.
"""

from __future__ import annotations

import io
import math
import struct
import zlib
from dataclasses import dataclass

import numpy as np

# The zip records (APPNOTE.TXT 4.3.7, 4.3.12, 4.3.16): local file header, central directory
# entry, end of central directory.
_LOCAL = struct.Struct("<4s5H3L2H")
_CENTRAL = struct.Struct("<4s6H3L5H2L")
_END = struct.Struct("<4s4H2LH")
_ZERO_CHUNK = bytes(16 * 1024 * 1024)


@dataclass(frozen=True)
class Member:
    name: str
    data: bytes  # as stored in the archive (deflated, unless method is 0)
    file_size: int  # the decompressed size the entry declares
    crc: int
    method: int = zlib.DEFLATED
    flags: int = 0


def npy_header(shape: tuple[int, ...], descr: str) -> bytes:
    """An NPY 1.0 header declaring ``shape`` of ``descr``, whatever data follows."""
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buffer, {"descr": descr, "fortran_order": False, "shape": shape}
    )
    return buffer.getvalue()


def _deflated(head: bytes, zeros: int) -> tuple[bytes, int]:
    """``head`` then ``zeros`` zero bytes, raw-deflated; and the CRC-32 of the whole.

    After a full flush a deflate stream starts afresh, so one zero chunk compressed between
    full flushes gives bytes that may be repeated: building a 1 GB bomb takes milliseconds.
    """
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    parts = [compressor.compress(head) + compressor.flush(zlib.Z_FULL_FLUSH)]
    crc = zlib.crc32(head)
    whole, rest = divmod(zeros, len(_ZERO_CHUNK))
    if whole:
        chunk = compressor.compress(_ZERO_CHUNK) + compressor.flush(zlib.Z_FULL_FLUSH)
        parts.append(chunk * whole)
        for _ in range(whole):
            crc = zlib.crc32(_ZERO_CHUNK, crc)
    parts.append(compressor.compress(_ZERO_CHUNK[:rest]) + compressor.flush())
    crc = zlib.crc32(_ZERO_CHUNK[:rest], crc)
    return b"".join(parts), crc


def array_member(name: str, array: np.ndarray) -> Member:
    """An honest member holding ``array``, as ``numpy.savez_compressed`` writes it."""
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    data, crc = _deflated(buffer.getvalue(), 0)
    return Member(name, data, len(buffer.getvalue()), crc)


def declared_member(
    name: str, shape: tuple[int, ...], descr: str, *, data_bytes: int | None = None
) -> Member:
    """A member whose header declares ``shape`` of ``descr``, followed by ``data_bytes`` zero
    bytes (default: exactly what the header declares, so the entry is honest and only the
    shape is hostile). The entry's size is true to the bytes that follow the header."""
    head = npy_header(shape, descr)
    if data_bytes is None:
        data_bytes = math.prod(shape) * np.dtype(descr).itemsize
    data, crc = _deflated(head, data_bytes)
    return Member(name, data, len(head) + data_bytes, crc)


def npz(*members: Member, padding_entries: int = 0) -> bytes:
    """The archive of ``members``, its central directory padded with ``padding_entries``
    entries named ``pad`` (pointing at the first member: never read, only listed)."""
    out = bytearray()
    central = bytearray()
    for m in members:
        name = m.name.encode()
        offset = len(out)
        out += _LOCAL.pack(
            b"PK\x03\x04", 20, m.flags, m.method, 0, 0x21, m.crc, len(m.data), m.file_size,
            len(name), 0,
        )  # fmt: skip
        out += name + m.data
        central += _central_entry(m, name, offset)
    if padding_entries:
        pad = _central_entry(members[0], b"pad", 0)
        central += pad * padding_entries
    entries = min(len(members) + padding_entries, 0xFFFF)
    end = _END.pack(b"PK\x05\x06", 0, 0, entries, entries, len(central), len(out), 0)
    return bytes(out + central + end)


def _central_entry(m: Member, name: bytes, offset: int) -> bytes:
    head = _CENTRAL.pack(
        b"PK\x01\x02", 20, 20, m.flags, m.method, 0, 0x21, m.crc, len(m.data), m.file_size,
        len(name), 0, 0, 0, 0, 0, offset,
    )  # fmt: skip
    return head + name


def training_arrays(n_rows: int = 100) -> tuple[Member, Member]:
    """Honest ``X`` (n_rows, 2) and ``y`` members."""
    X = np.arange(2.0 * n_rows).reshape(n_rows, 2)
    return array_member("X.npy", X), array_member("y.npy", X[:, 0] - X[:, 1])
