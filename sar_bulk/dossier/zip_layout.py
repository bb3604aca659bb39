"""Is a zip laid out exactly as the dossier writer lays it out? (a part of ``verify``)

zipfile reads a zip leniently: it finds members through the central directory at the end and
ignores whatever else the file holds, so data prepended or appended to a dossier, or bytes
smuggled between members, would go unnoticed. This check walks the records themselves: the
first local header at offset 0, each member right after the one before (its data descriptor
included when it has one), the central directory right after the last member, then the ZIP64 end
records when present, then the end record with no comment as the last 22 bytes of the file.
Each local header (and data descriptor) must say what the central directory says about its
member: method, flags, CRC and sizes. zipfile reads only the central directory, Info-ZIP and
streaming readers the local records, so a file where they differ reads as two contents.
Every member is a plain file made on Unix with mode 0600, as the writer makes them: unzip
restores those bits, so a member marked as a symbolic link would be extracted as one. No
member has a comment or an extra field but ZIP64's: Info-ZIP takes names from some.

Usage::

    problems = layout_problems(stream, archive.infolist(), archive.start_dir)
"""

from __future__ import annotations

import stat
import struct
from collections.abc import Sequence
from typing import IO, Final
from zipfile import ZipInfo

__all__ = ["layout_problems"]

# Zip records (APPNOTE 4.3): signatures and fixed sizes the layout check reads.
_LOCAL: Final = b"PK\x03\x04"
_DESCRIPTOR: Final = b"PK\x07\x08"
_EOCD: Final = b"PK\x05\x06"
_EOCD64: Final = b"PK\x06\x06"
_LOCATOR64: Final = b"PK\x06\x07"
_EOCD_SIZE: Final = 22
_LOCATOR64_SIZE: Final = 20
_EOCD64_SIZE: Final = 56
_LOCAL_SIZE: Final = 30
_DATA_DESCRIPTOR_FLAG: Final = 0x08
_ZIP64_MARK: Final = 0xFFFFFFFF
_ZIP64_EXTRA: Final = 0x0001  # the only extra field the writer writes (zipfile, when needed)
# What format.member_info writes: made on Unix (unzip restores the mode bits), mode 0600.
_UNIX: Final = 3
_MEMBER_MODE: Final = 0o600
_DOS_DIRECTORY: Final = 0x10


def layout_problems(stream: IO[bytes], infos: Sequence[ZipInfo], start_dir: int) -> list[str]:
    """The file holds exactly its members and central directory: nothing before, between or
    after them, no zip comment. ``infos`` in central-directory order."""
    problems: list[str] = []
    size = stream.seek(0, 2)
    stream.seek(0)
    if stream.read(4) != _LOCAL or not infos or infos[0].header_offset != 0:
        problems.append("there are bytes before the first member (data was prepended)")
    # The end record is last: its comment length (the final 2 bytes of a comment-free record)
    # must be 0 and its signature exactly 22 bytes before the end.
    tail_size = min(size, _EOCD_SIZE + 0xFFFF)
    stream.seek(size - tail_size)
    tail = stream.read(tail_size)
    at = tail.rfind(_EOCD)
    if at < 0:
        return [*problems, "no end of central directory record"]
    eocd = size - tail_size + at
    comment = struct.unpack("<H", tail[at + 20 : at + 22])[0] if at + 22 <= len(tail) else 0
    if comment:
        problems.append("the zip has a comment (a dossier has none)")
    if eocd + _EOCD_SIZE + comment != size:
        problems.append("there are bytes after the end of the zip (data was appended)")
    disk, cd_disk, on_disk, entries, cd_size, cd_offset = struct.unpack(
        "<HHHHLL", tail[at + 4 : at + 20]
    )
    # One disk, and the count of members (capped at 0xFFFF when ZIP64 records hold the real
    # one): zipfile ignores both, Info-ZIP stops reading the central directory at the count.
    capped = min(len(infos), 0xFFFF)
    miscounted = (disk, cd_disk, on_disk, entries) != (0, 0, capped, capped)
    cd_end = eocd
    stream.seek(max(eocd - _LOCATOR64_SIZE, 0))
    locator = stream.read(_LOCATOR64_SIZE)
    # zipfile writes the ZIP64 end records whenever an offset passes ZIP64_LIMIT, and then the
    # central directory ends where they begin (as zipfile itself finds them: by the locator).
    if locator[:4] == _LOCATOR64 or cd_offset == 0xFFFFFFFF or cd_size == 0xFFFFFFFF:
        record_at = struct.unpack("<Q", locator[8:16])[0] if len(locator) == 20 else -1
        stream.seek(max(record_at, 0))
        record = stream.read(_EOCD64_SIZE)
        if (
            locator[:4] != _LOCATOR64
            or record[:4] != _EOCD64
            or record_at + _EOCD64_SIZE != eocd - _LOCATOR64_SIZE
        ):
            return [*problems, "the ZIP64 end records are not where the writer puts them"]
        disk, cd_disk, on_disk, entries, cd_size, cd_offset = struct.unpack(
            "<LLQQQQ", record[16:56]
        )
        miscounted |= (disk, cd_disk, on_disk, entries) != (0, 0, len(infos), len(infos))
        cd_end = record_at
    if miscounted:
        problems.append(
            "the end record does not count the members of the central directory on disk 0"
        )
    if cd_offset != start_dir or cd_offset + cd_size != cd_end:
        problems.append("the central directory is not where its end record says")
    # zipfile cuts a name at its first NUL (and Info-ZIP does too); other readers do not.
    problems.extend(
        f"member {info.orig_filename!r} has a NUL byte in its name"
        for info in infos
        if info.orig_filename != info.filename
    )
    for info in infos:
        if problem := _extra_problem(info.extra):
            problems.append(f"member {info.filename!r} {problem}")
        if info.comment:
            problems.append(f"member {info.filename!r} has a comment (the writer writes none)")
    problems.extend(
        f"member {info.filename!r} is not a plain file readable by its owner only "
        f"(mode {info.external_attr >> 16:#o})"
        for info in infos
        if not _private_plain_file(info)
    )
    position = 0
    for info in infos:
        if info.header_offset != position:
            problems.append(f"member {info.filename!r} does not follow the one before it")
            return problems
        stream.seek(position)
        header = stream.read(_LOCAL_SIZE)
        if len(header) != _LOCAL_SIZE or header[:4] != _LOCAL:
            problems.append(f"member {info.filename!r} has no local header")
            return problems
        flags = struct.unpack("<H", header[6:8])[0]
        name_len, extra_len = struct.unpack("<HH", header[26:30])
        extra = stream.read(name_len + extra_len)[name_len:]
        if problem := _local_problem(info, header, extra):
            problems.append(f"member {info.filename!r}: {problem}")
        elif _extra_problem(info.extra) is None and (problem := _extra_problem(extra)):
            problems.append(f"member {info.filename!r} (local header) {problem}")
        position += _LOCAL_SIZE + name_len + extra_len + info.compress_size
        if flags & _DATA_DESCRIPTOR_FLAG:
            stream.seek(position)
            zip64 = _zip64_sizes(extra) is not None
            descriptor = stream.read(24 if zip64 else 16)
            if descriptor[:4] != _DESCRIPTOR:
                problems.append(f"member {info.filename!r} lacks its data descriptor")
                return problems
            recorded = struct.unpack("<LQQ" if zip64 else "<LLL", descriptor[4:])
            if recorded != (info.CRC, info.compress_size, info.file_size):
                problems.append(
                    f"member {info.filename!r}: its data descriptor does not match the central "
                    "directory (CRC or sizes)"
                )
            position += len(descriptor)
    if position != start_dir:
        problems.append("there are bytes between the last member and the central directory")
    return problems


def _private_plain_file(info: ZipInfo) -> bool:
    """Made on Unix with mode 0600 (file type: none, or a regular file), as the writer makes
    every member. unzip restores these bits: a member marked as a link is extracted as a
    symbolic link (its content the target), a folder or FIFO as one, and a mode made on
    another system is replaced by unzip's default, readable by everyone."""
    mode = info.external_attr >> 16
    return (
        info.create_system == _UNIX
        and stat.S_IFMT(mode) in (0, stat.S_IFREG)
        and stat.S_IMODE(mode) == _MEMBER_MODE
        and not info.external_attr & _DOS_DIRECTORY
    )


def _local_problem(info: ZipInfo, header: bytes, extra: bytes) -> str | None:
    """How a local header disagrees with its central record (None when it agrees).

    zipfile takes method, CRC and sizes from the central directory only; Info-ZIP and
    streaming readers take them from the local header (or the data descriptor after the data),
    so a disagreement is a file that two tools read as two different contents.
    """
    flags, method = struct.unpack("<HH", header[6:10])
    if method != info.compress_type:
        return f"its local header says compression method {method}, not {info.compress_type}"
    if flags != info.flag_bits:
        return (
            f"its local header has flags {flags:#06x}, the central directory {info.flag_bits:#06x}"
        )
    crc, compressed, size = struct.unpack("<LLL", header[14:26])
    if compressed == size == _ZIP64_MARK:
        sizes = _zip64_sizes(extra)
        if sizes is not None:
            size, compressed = sizes
    recorded = (crc, compressed, size)
    # With a data descriptor the header may leave them zero (the writer does): the descriptor
    # after the data then carries them, and is compared with the central record there.
    if recorded == (info.CRC, info.compress_size, info.file_size) or (
        flags & _DATA_DESCRIPTOR_FLAG and recorded == (0, 0, 0)
    ):
        return None
    return "its local header does not match the central directory (CRC or sizes)"


def _extra_problem(extra: bytes) -> str | None:
    """Why an extra field is not one the writer writes (only ZIP64's, tag 1), or None.

    Readers act on others: Info-ZIP takes a member's name from a Unicode Path field (0x7075),
    so a dossier could extract under names its manifest does not list; times and owners too.
    """
    while extra:
        if len(extra) < 4:
            return "has a damaged extra field"
        tag, length = struct.unpack("<HH", extra[:4])
        if len(extra) < 4 + length:
            return "has a damaged extra field"
        if tag != _ZIP64_EXTRA:
            return (
                f"has extra field {tag:#06x}, which the writer never writes (a reader may take "
                "a name, time or owner from it)"
            )
        extra = extra[4 + length :]
    return None


def _zip64_sizes(extra: bytes) -> tuple[int, int] | None:
    """Size and compressed size from a local header's ZIP64 extra field, if it has one."""
    while len(extra) >= 4:
        tag, length = struct.unpack("<HH", extra[:4])
        if tag == _ZIP64_EXTRA:
            return struct.unpack("<QQ", extra[4:20]) if length >= 16 else (0, 0)
        extra = extra[4 + length :]
    return None
