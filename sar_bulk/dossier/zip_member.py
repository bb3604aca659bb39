"""Read one member of a dossier zip, checking that its compressed data is exactly the member.

(A part of ``verify``.) zipfile's reader stops at the end of the deflate stream or at the
member's size, whichever comes first, and drops the rest unseen: bytes after the stream inside
the compressed size, or more stream that inflates past the size. A dossier could hide data
there and still verify. This reader inflates the member's compressed bytes itself and refuses
anything left over, as well as a stream cut short; it checks the local header's name and the
CRC as zipfile does, and stops as soon as a member inflates past its size (a zip bomb costs
no more than its stated size).

Usage::

    for chunk in member_chunks(stream, info):   # raises MemberError when the member is bad
        digest.update(chunk)
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator
from typing import IO, Final
from zipfile import ZIP_DEFLATED, ZIP_STORED, ZipInfo

__all__ = ["MemberError", "member_chunks"]

_CHUNK: Final = 256 << 10
_LOCAL: Final = b"PK\x03\x04"
_LOCAL_SIZE: Final = 30
_ENCRYPTED: Final = 0x01
_UTF8_NAME: Final = 0x800


class MemberError(ValueError):
    """The member cannot be read as exactly what its records say."""


def member_chunks(stream: IO[bytes], info: ZipInfo, chunk: int = _CHUNK) -> Iterator[bytes]:
    """The member's content, ``chunk`` bytes at most at a time; ``MemberError`` if it is bad.

    The stream's position is moved: each step seeks where it reads.
    """
    stream.seek(info.header_offset)
    header = stream.read(_LOCAL_SIZE)
    if len(header) != _LOCAL_SIZE or header[:4] != _LOCAL:
        raise MemberError("it has no local header")
    flags, method = struct.unpack("<HH", header[6:10])
    name_len, extra_len = struct.unpack("<HH", header[26:30])
    encoding = "utf-8" if flags & _UTF8_NAME else "cp437"
    if stream.read(name_len) != info.orig_filename.encode(encoding):
        raise MemberError("its local header names another member")
    if flags & _ENCRYPTED:
        raise MemberError("it is encrypted (a dossier never is)")
    if method not in (ZIP_STORED, ZIP_DEFLATED) or method != info.compress_type:
        raise MemberError(f"compression method {method} is not one the writer uses")
    position = info.header_offset + _LOCAL_SIZE + name_len + extra_len
    left = info.compress_size  # compressed bytes still to read
    size = 0
    crc = 0
    inflater = zlib.decompressobj(-zlib.MAX_WBITS) if method == ZIP_DEFLATED else None
    while left:
        stream.seek(position)
        raw = stream.read(min(chunk, left))
        if not raw:
            raise MemberError("the file ends inside it")
        position += len(raw)
        left -= len(raw)
        while raw:
            if inflater is None:
                data, raw = raw, b""
            else:
                if inflater.eof:
                    raise _hidden()
                data = inflater.decompress(raw, chunk)
                raw = inflater.unconsumed_tail
                if inflater.unused_data:
                    raise _hidden()
            size += len(data)
            if size > info.file_size:
                raise _hidden()
            crc = zlib.crc32(data, crc)
            if data:
                yield data
    # All input read, but inflate may still hold output: the end of a long match when the last
    # call stopped at ``chunk`` bytes. It comes with more calls, without input.
    while inflater is not None and not inflater.eof:
        data = inflater.decompress(b"", chunk)
        if not data:
            break
        size += len(data)
        if size > info.file_size:
            raise _hidden()
        crc = zlib.crc32(data, crc)
        yield data
    if inflater is not None and not inflater.eof:
        raise MemberError("its compressed data is cut short")
    if size != info.file_size:
        raise MemberError(f"it holds {size} bytes, its records say {info.file_size}")
    if crc != info.CRC:
        raise MemberError("its CRC-32 does not match (it was changed)")


def _hidden() -> MemberError:
    return MemberError("its compressed data does not end where the member does (bytes are hidden)")
