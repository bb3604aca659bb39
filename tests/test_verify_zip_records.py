"""The verifier reads the zip's records the way every reader does, not only the way zipfile does.

zipfile finds a member through the central directory and trusts it for the compression method,
CRC and sizes; Info-ZIP, streaming readers and Windows take them from the member's local header
or its data descriptor. A dossier whose records disagree is read differently by different tools,
so verify must refuse it even when zipfile reads it cleanly. Files here are real dossiers from
the writer, patched byte by byte; Info-ZIP, when installed, shows what a recipient would get.
"""

from __future__ import annotations

import io
import shutil
import stat
import struct
import subprocess
import zipfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

import orjson
import pytest
from test_verify import CONTACT_ROWS, EXPORT, SENT, _dossier, _members, _rebuild, _reseal

from sar_bulk.dossier import verify as verify_module
from sar_bulk.dossier.format import member_info
from sar_bulk.dossier.verify import verify_dossier
from sar_bulk.dossier.zip_member import member_chunks

_CENTRAL = b"PK\x01\x02"


@pytest.fixture
async def path(tmp_path: Path) -> Path:
    """A dossier as the writer makes it: members with data descriptors."""
    return await _dossier(tmp_path / "out")


def _local(data: bytearray, name: str) -> tuple[int, int, zipfile.ZipInfo]:
    """Offset of ``name``'s local header, where its data starts, and its central record."""
    with zipfile.ZipFile(io.BytesIO(bytes(data))) as archive:
        info = archive.getinfo(name)
    at = info.header_offset
    name_len, extra_len = struct.unpack("<HH", data[at + 26 : at + 30])
    return at, at + 30 + name_len + extra_len, info


def _central(data: bytearray, name: str) -> int:
    """Offset of ``name``'s central directory record."""
    with zipfile.ZipFile(io.BytesIO(bytes(data))) as archive:
        at = archive.start_dir
    while data[at : at + 4] == _CENTRAL:
        name_len, extra_len, comment_len = struct.unpack("<HHH", data[at + 28 : at + 34])
        if bytes(data[at + 46 : at + 46 + name_len]) == name.encode():
            return at
        at += 46 + name_len + extra_len + comment_len
    raise AssertionError(f"{name} has no central record")


def _stored_in_local_header(data: bytearray) -> None:
    """Only the local header says 'stored': the central directory still says deflate."""
    at, _, _ = _local(data, SENT)
    struct.pack_into("<H", data, at + 8, zipfile.ZIP_STORED)


def _descriptor_crc(data: bytearray) -> None:
    _, start, info = _local(data, SENT)
    struct.pack_into("<L", data, start + info.compress_size + 4, 0xDEADBEEF)


def _descriptor_sizes(data: bytearray) -> None:
    _, start, info = _local(data, SENT)
    struct.pack_into("<LL", data, start + info.compress_size + 8, 5, 7)


def _two_readings(data: bytearray) -> None:
    """zipfile inflates the entry (hash ok); Info-ZIP copies the raw deflate bytes (CRC ok).

    The local header says: stored, no data descriptor, CRC and sizes of the raw bytes (the
    deflate stream and the old descriptor). The central record keeps deflate and the real CRC
    and takes the longer compressed size, so the members still follow one another.
    """
    at, start, info = _local(data, SENT)
    raw = bytes(data[start : start + info.compress_size + 16])
    flags = info.flag_bits & ~0x08
    struct.pack_into("<HH", data, at + 6, flags, zipfile.ZIP_STORED)
    struct.pack_into("<LLL", data, at + 14, zlib.crc32(raw), len(raw), len(raw))
    central = _central(data, SENT)
    struct.pack_into("<H", data, central + 8, flags)
    struct.pack_into("<L", data, central + 20, len(raw))


@pytest.mark.parametrize(
    ("patch", "problem"),
    [
        (_stored_in_local_header, "its local header says compression method 0, not 8"),
        (
            _descriptor_crc,
            "its data descriptor does not match the central directory (CRC or sizes)",
        ),
        (
            _descriptor_sizes,
            "its data descriptor does not match the central directory (CRC or sizes)",
        ),
        (_two_readings, "its local header says compression method 0, not 8"),
    ],
)
def test_local_records_that_disagree_with_the_central_directory_fail(
    path: Path, patch: Callable[[bytearray], None], problem: str
) -> None:
    data = bytearray(path.read_bytes())
    patch(data)
    path.write_bytes(bytes(data))
    with zipfile.ZipFile(path) as archive:
        assert archive.testzip() is None  # zipfile alone sees nothing wrong
    result = verify_dossier(path)
    assert not result.ok
    assert f"member '{SENT}': {problem}" in result.problems


def test_info_zip_reads_other_bytes_than_the_verifier_hashed(path: Path) -> None:
    """Why it matters: the recipient's unzip extracts something else, and says all is well."""
    original = _members(path)[SENT]
    data = bytearray(path.read_bytes())
    _two_readings(data)
    path.write_bytes(bytes(data))
    assert _members(path)[SENT] == original  # what zipfile (and so the hash check) reads
    assert not verify_dossier(path).ok
    if shutil.which("unzip") is not None:
        tested = subprocess.run(["unzip", "-tq", str(path)], capture_output=True, check=False)
        assert tested.returncode == 0, tested.stdout  # Info-ZIP finds no error either...
        seen = subprocess.run(["unzip", "-p", str(path), SENT], capture_output=True, check=True)
        assert seen.stdout != original  # ...and hands over the raw deflate bytes


def test_a_rebuilt_zip_with_a_wrong_crc_in_a_local_header_fails(path: Path) -> None:
    """Without data descriptors the local header carries CRC and sizes: they must agree too."""
    _rebuild(path, _members(path))
    assert verify_dossier(path).ok
    data = bytearray(path.read_bytes())
    at, _, _ = _local(data, SENT)
    struct.pack_into("<L", data, at + 14, 0x12345678)
    path.write_bytes(bytes(data))
    result = verify_dossier(path)
    problem = "its local header does not match the central directory (CRC or sizes)"
    assert result.problems == (f"member '{SENT}': {problem}",)


@pytest.mark.parametrize(
    ("field", "value"),
    [(10, 6), (10, 8), (8, 6), (4, 1), (6, 1)],
    ids=["one-less", "one-more", "entries-on-disk", "disk-number", "directory-disk"],
)
def test_an_end_record_that_miscounts_or_names_another_disk_fails(
    path: Path, field: int, value: int
) -> None:
    """zipfile walks the central directory by its size; Info-ZIP trusts the counts."""
    data = bytearray(path.read_bytes())
    struct.pack_into("<H", data, len(data) - 22 + field, value)
    path.write_bytes(bytes(data))
    with zipfile.ZipFile(path) as archive:
        assert archive.testzip() is None  # zipfile alone sees nothing wrong
    result = verify_dossier(path)
    assert "the end record does not count the members of the central directory on disk 0" in (
        result.problems
    )
    if field == 10 and shutil.which("unzip") is not None:
        listed = subprocess.run(["unzip", "-l", str(path)], capture_output=True, check=False)
        assert listed.returncode != 0, listed.stdout  # the recipient's unzip stumbles


def _with_mode(path: Path, name: str, data: bytes, mode: int, system: int = 3) -> None:
    """Put ``data`` (its hash and size resealed in the manifest) as ``name`` with ``mode``."""
    members = _members(path)
    manifest = orjson.loads(members["manifest.json"])
    _reseal(members, manifest, name, data)
    members["manifest.json"] = orjson.dumps(manifest, option=orjson.OPT_INDENT_2)
    with zipfile.ZipFile(path, "w") as archive:
        for member, content in members.items():
            info = member_info(member, len(content))
            if member == name:
                info.external_attr = mode << 16
                info.create_system = system
            archive.writestr(info, content)


def test_a_member_that_unzip_makes_a_symbolic_link_fails(path: Path, tmp_path: Path) -> None:
    """A verbatim file whose mode says 'link': unzip creates a link out of the folder."""
    _with_mode(path, EXPORT, b"../../../../etc/hostname", stat.S_IFLNK | 0o777)
    result = verify_dossier(path)
    assert not result.ok
    assert result.problems == (
        f"member '{EXPORT}' is not a plain file readable by its owner only (mode 0o120777)",
    )
    if shutil.which("unzip") is not None:
        into = tmp_path / "unzipped"
        into.mkdir()
        subprocess.run(["unzip", "-q", str(path)], cwd=into, capture_output=True, check=True)
        assert (into / EXPORT).is_symlink()  # what the recipient would have got


@pytest.mark.parametrize(
    ("mode", "system"),
    [
        (stat.S_IFREG | 0o644, 3),  # everyone on the recipient's machine may read it
        (stat.S_IFREG | 0o4700, 3),  # setuid
        (stat.S_IFDIR | 0o700, 3),
        (stat.S_IFIFO | 0o600, 3),
        (0o600, 0),  # made on MS-DOS: unzip ignores the mode and applies its default
    ],
)
def test_a_member_that_is_not_a_private_plain_file_fails(
    path: Path, mode: int, system: int
) -> None:
    _with_mode(path, CONTACT_ROWS, _members(path)[CONTACT_ROWS], mode, system)
    result = verify_dossier(path)
    assert not result.ok
    assert any("is not a plain file readable by its owner only" in p for p in result.problems)


def test_a_plain_private_member_passes_with_or_without_its_file_type(path: Path) -> None:
    _with_mode(path, CONTACT_ROWS, _members(path)[CONTACT_ROWS], stat.S_IFREG | 0o600)
    assert verify_dossier(path).ok


def test_a_member_name_with_a_nul_byte_fails(path: Path) -> None:
    """zipfile (and Info-ZIP) cut a name at NUL, other readers keep all of it: the name the
    manifest lists is not the member's name."""
    members = _members(path)
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            marked = f"{name}#/../../x" if name == CONTACT_ROWS else name
            archive.writestr(member_info(marked, len(data)), data)
    # The NUL goes into both records' bytes: zipfile's own writer would cut the name there.
    raw = f"{CONTACT_ROWS}#/../../x".encode()
    path.write_bytes(path.read_bytes().replace(raw, raw.replace(b"#", b"\x00")))
    with zipfile.ZipFile(path) as archive:
        assert CONTACT_ROWS in archive.namelist()  # what zipfile shows
    result = verify_dossier(path)
    assert not result.ok
    assert f"member {CONTACT_ROWS + chr(0) + '/../../x'!r} has a NUL byte in its name" in (
        result.problems
    )


_GIB = 1 << 30


def _zeros_deflated(size: int) -> bytes:
    """A raw deflate stream of ``size`` zero bytes, built from one repeated block (fast)."""
    step = 1 << 20
    assert size % step == 0
    block = zlib.compressobj(9, zlib.DEFLATED, -15)
    repeated = block.compress(b"\0" * step) + block.flush(zlib.Z_FULL_FLUSH)
    end = zlib.compressobj(9, zlib.DEFLATED, -15).flush(zlib.Z_FINISH)  # an empty last block
    return repeated * (size // step) + end


def _with_deflated(path: Path, name: str, raw: bytes, crc: int, size: int) -> None:
    """Member ``name`` (a new one goes last) holds the deflate bytes ``raw``; its records say
    deflate, ``crc`` and ``size``, whatever ``raw`` really inflates to."""
    members = _members(path)
    members.setdefault(name, b"")
    with zipfile.ZipFile(path, "w") as archive:
        for member, body in members.items():
            if member == name:
                info = member_info(member, len(raw))
                info.compress_type = zipfile.ZIP_STORED  # the raw bytes, patched below
                archive.writestr(info, raw)
            else:
                archive.writestr(member_info(member, len(body)), body)
    data = bytearray(path.read_bytes())
    at, _, _ = _local(data, name)
    central = _central(data, name)
    struct.pack_into("<H", data, at + 8, zipfile.ZIP_DEFLATED)
    struct.pack_into("<LLL", data, at + 14, crc, len(raw), size)
    struct.pack_into("<H", data, central + 10, zipfile.ZIP_DEFLATED)
    struct.pack_into("<LLL", data, central + 16, crc, len(raw), size)
    path.write_bytes(bytes(data))


def _with_bomb(path: Path, name: str, size: int) -> None:
    """Put ``size`` zero bytes as member ``name`` (about 1 KiB per MiB), the manifest as is."""
    crc = 0
    chunk = b"\0" * (1 << 24)
    for _ in range(size // len(chunk)):
        crc = zlib.crc32(chunk, crc)
    _with_deflated(path, name, _zeros_deflated(size), crc, size)


@pytest.fixture
def inflated(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the bytes verify inflates (its member reader's chunks, passed through unchanged)."""
    counted = [0]

    def counting(stream: IO[bytes], info: zipfile.ZipInfo) -> Iterator[bytes]:
        for chunk in member_chunks(stream, info):
            counted[0] += len(chunk)
            yield chunk

    monkeypatch.setattr(verify_module, "member_chunks", counting)
    return counted


def test_an_unexpected_zip_bomb_member_is_named_without_inflating_it(
    path: Path, inflated: list[int]
) -> None:
    _with_bomb(path, "realtime/bomb.json", _GIB)
    with zipfile.ZipFile(path) as archive:
        assert archive.getinfo("realtime/bomb.json").file_size == _GIB
    result = verify_dossier(path)
    assert result.problems == ("unexpected member 'realtime/bomb.json'",)
    assert 0 < inflated[0] < 1 << 20  # the real members only, not 1 GiB of zeros


def test_an_entry_larger_than_the_manifest_says_is_named_without_inflating_it(
    path: Path, inflated: list[int]
) -> None:
    _with_bomb(path, EXPORT, _GIB)
    result = verify_dossier(path)
    assert result.problems == (
        f"{EXPORT} has {_GIB} bytes, the manifest says 18",
        f"{EXPORT} does not match its sha256 in the manifest",
    )
    assert 0 < inflated[0] < 1 << 20


def _with_extra(path: Path, name: str, extra: bytes, comment: bytes = b"") -> None:
    """Rebuild the dossier with ``extra`` (local and central) and ``comment`` on ``name``."""
    members = _members(path)
    with zipfile.ZipFile(path, "w") as archive:
        for member, content in members.items():
            info = member_info(member, len(content))
            if member == name:
                info.extra = extra
                info.comment = comment
            archive.writestr(info, content)


def _unicode_path(name: str, shown: str) -> bytes:
    """Info-ZIP's Unicode Path extra field: readers that know it use ``shown`` as the name."""
    body = struct.pack("<BL", 1, zlib.crc32(name.encode())) + shown.encode()
    return struct.pack("<HH", 0x7075, len(body)) + body


class _UnicodePathReader(zipfile.ZipFile):
    """zipfile as Python 3.12 and later read a name: from the Unicode Path field when present
    (3.11 ignores the field), so that this reading is tested on every interpreter."""

    def _RealGetContents(self) -> None:
        super()._RealGetContents()  # type: ignore[misc]  # private, not in typeshed
        for info in self.filelist:
            extra = info.extra
            while len(extra) >= 4:
                kind, size = struct.unpack("<HH", extra[:4])
                if kind == 0x7075:
                    info.filename = extra[9 : 4 + size].decode()
                extra = extra[4 + size :]
        self.NameToInfo = {info.filename: info for info in self.filelist}


@pytest.mark.parametrize("reader", ["this-python", "unicode-path-reader"])
def test_a_member_that_unzip_extracts_under_another_name_fails(
    path: Path, tmp_path: Path, reader: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _with_extra(path, CONTACT_ROWS, _unicode_path(CONTACT_ROWS, "records/someone-else.json"))
    if reader == "unicode-path-reader":
        monkeypatch.setattr(zipfile, "ZipFile", _UnicodePathReader)
    with zipfile.ZipFile(path) as archive:
        # The central directory names the member CONTACT_ROWS; zipfile takes the field's name
        # from Python 3.12 on. verify checks the central directory's name on every Python.
        assert [info.orig_filename for info in archive.infolist()].count(CONTACT_ROWS) == 1
        if reader == "unicode-path-reader":
            assert "records/someone-else.json" in archive.namelist()
    result = verify_dossier(path)
    assert not result.ok
    assert result.problems == (
        f"member '{CONTACT_ROWS}' has extra field 0x7075, which the writer never writes "
        "(a reader may take a name, time or owner from it)",
    )
    if shutil.which("unzip") is not None:
        into = tmp_path / "unzipped"
        into.mkdir()
        subprocess.run(["unzip", "-q", str(path)], cwd=into, capture_output=True, check=True)
        assert (into / "records" / "someone-else.json").is_file()  # what the recipient gets
        assert not (into / CONTACT_ROWS).exists()


@pytest.mark.parametrize(
    ("extra", "comment", "problem"),
    [
        (struct.pack("<HH", 0x5455, 5) + b"\x01\0\0\0\0", b"", "has extra field 0x5455"),
        (b"", b"read me", "has a comment"),
    ],
    ids=["timestamp", "comment"],
)
def test_extra_fields_and_comments_the_writer_never_writes_fail(
    path: Path, extra: bytes, comment: bytes, problem: str
) -> None:
    _with_extra(path, CONTACT_ROWS, extra, comment)
    result = verify_dossier(path)
    assert not result.ok
    assert any(p.startswith(f"member '{CONTACT_ROWS}' {problem}") for p in result.problems), (
        result.problems
    )


def _with_raw(path: Path, name: str, raw: bytes, content: bytes) -> None:
    """Member ``name`` holds the deflate bytes ``raw``; its records say it inflates to
    ``content`` (CRC and size): what zipfile reads when it stops at the central size."""
    _with_deflated(path, name, raw, zlib.crc32(content), len(content))


def _deflate(data: bytes) -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    return compressor.compress(data) + compressor.flush()


HIDING = " is damaged: its compressed data does not end where the member does (bytes are hidden)"
HIDDEN = b'{"someone": "else", "email": "x@example.com"}\n' * 3


@pytest.mark.parametrize("name", [CONTACT_ROWS, "README.txt", "manifest.json"])
def test_bytes_hidden_after_a_members_deflate_stream_fail(path: Path, name: str) -> None:
    """Bytes after the end of the deflate stream, inside the member's compressed size: zipfile
    and Info-ZIP stop at the stream's end and never see them."""
    content = _members(path)[name]
    _with_raw(path, name, _deflate(content) + HIDDEN, content)
    with zipfile.ZipFile(path) as archive:
        assert archive.read(name) == content  # the hidden bytes are invisible to zipfile
    result = verify_dossier(path)
    assert not result.ok
    assert f"{name}{HIDING}" in result.problems
    if shutil.which("unzip") is not None:
        tested = subprocess.run(["unzip", "-tq", str(path)], capture_output=True, check=False)
        assert tested.returncode == 0, tested.stdout  # Info-ZIP sees nothing either


def test_a_deflate_stream_that_goes_on_past_the_members_size_fails(path: Path) -> None:
    """zipfile stops inflating at the central size: more data in the stream is hidden."""
    content = _members(path)[CONTACT_ROWS]
    _with_raw(path, CONTACT_ROWS, _deflate(content + HIDDEN), content)
    with zipfile.ZipFile(path) as archive:
        assert archive.read(CONTACT_ROWS) == content
    result = verify_dossier(path)
    assert f"{CONTACT_ROWS}{HIDING}" in result.problems


def test_a_deflate_stream_without_its_last_block_fails(path: Path) -> None:
    """zipfile takes the end of the compressed bytes as the end; the stream says it goes on."""
    content = _members(path)[CONTACT_ROWS]
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    unfinished = compressor.compress(content) + compressor.flush(zlib.Z_SYNC_FLUSH)
    _with_raw(path, CONTACT_ROWS, unfinished, content)
    with zipfile.ZipFile(path) as archive:
        assert archive.read(CONTACT_ROWS) == content
    result = verify_dossier(path)
    assert f"{CONTACT_ROWS} is damaged: its compressed data is cut short" in result.problems


def test_a_local_header_naming_another_member_fails(path: Path) -> None:
    data = bytearray(path.read_bytes())
    name_at = _local(data, CONTACT_ROWS)[0] + 30
    assert bytes(data[name_at : name_at + len(CONTACT_ROWS)]) == CONTACT_ROWS.encode()
    data[name_at : name_at + 7] = b"RECORDS"  # same length: nothing else moves
    path.write_bytes(bytes(data))
    result = verify_dossier(path)
    assert f"{CONTACT_ROWS} is damaged: its local header names another member" in result.problems


@pytest.mark.parametrize("chunk", [1, 7, 4096, 256 << 10])
@pytest.mark.parametrize(
    "content", [b"\0" * 1_000_000, bytes(range(256)) * 3000 + b"x" * 70_000], ids=["zeros", "mixed"]
)
def test_the_member_reader_gives_every_byte_whatever_its_chunk(chunk: int, content: bytes) -> None:
    """Inflate can hold output after the last input byte (a long match cut at ``chunk``): the
    reader must still give it, or a good dossier would be called cut short."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(member_info("records/contact.json", len(content)), content)
    info = zipfile.ZipFile(buffer).infolist()[0]
    assert b"".join(member_chunks(buffer, info, chunk)) == content
