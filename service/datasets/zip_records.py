"""The end records of a zip archive, read as :mod:`zipfile` reads them (APPNOTE.TXT
4.3.14-4.3.16), for what they declare before :mod:`zipfile` parses the archive: opening one
builds an object per central-directory entry, so its size is checked first."""

from __future__ import annotations

import os
import struct
import zipfile
from typing import BinaryIO

_END = struct.Struct("<4s4H2LH")  # signature, disks, entries ×2, directory size, offset, comment
_END_SIGNATURE = b"PK\x05\x06"
_ZIP64_LOCATOR = struct.Struct("<4sLQL")  # signature, disk, zip64 end record offset, disks
_ZIP64_LOCATOR_SIGNATURE = b"PK\x06\x07"
_ZIP64_END = struct.Struct("<4sQ2H2L4Q")  # …, entries ×2, directory size, directory offset
_ZIP64_END_SIGNATURE = b"PK\x06\x06"


def central_directory_bytes(f: BinaryIO) -> int:
    """The central directory size a zip archive's end records declare, found as
    ``zipfile._EndRecData`` finds them: the end record last in the file, else the last one
    in its final 64 KiB (after which a comment may follow); a ZIP64 end record just before
    its locator, which must point at it. 0 when there is no end record (``zipfile`` then
    refuses the file)."""
    file_size = f.seek(0, os.SEEK_END)
    tail_start = max(0, file_size - _END.size - 0xFFFF)
    f.seek(tail_start)
    tail = f.read()
    at = len(tail) - _END.size
    if not (at >= 0 and tail[at:].startswith(_END_SIGNATURE) and tail.endswith(b"\0\0")):
        at = tail.rfind(_END_SIGNATURE)
        if at < 0 or len(tail) - at < _END.size:
            return 0
    directory_bytes: int = _END.unpack_from(tail, at)[5]
    locator_at = tail_start + at - _ZIP64_LOCATOR.size
    record_at = locator_at - _ZIP64_END.size
    if record_at < 0:
        return directory_bytes
    f.seek(record_at)
    record = f.read(_ZIP64_END.size + _ZIP64_LOCATOR.size)
    signature, _, pointed_at, _ = _ZIP64_LOCATOR.unpack_from(record, _ZIP64_END.size)
    if signature != _ZIP64_LOCATOR_SIGNATURE:
        return directory_bytes
    fields = _ZIP64_END.unpack_from(record)
    if fields[0] != _ZIP64_END_SIGNATURE or pointed_at != record_at:
        raise zipfile.BadZipFile("the ZIP64 end record is not where its locator points")
    zip64_directory_bytes: int = fields[8]
    return max(directory_bytes, zip64_directory_bytes)


__all__ = ["central_directory_bytes"]
