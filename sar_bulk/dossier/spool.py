"""The spool of one contact's dossier: entries held in memory or on disk, then the zip.

Used by ``writer.py`` (which serialises calls and runs the blocking ones in a thread)::

    spool = Spool(out_dir, request)
    entry = spool.entry(part, "records/contact.json", "rows")
    lines = encode_rows(rows, None, "part records of contact ...")
    if not spool.hold(entry, entry.chunks_for(lines), len(lines)):
        spool.write(entry, entry.chunks_for(lines), len(lines))     # in a worker thread
    summary = spool.assemble(generated_at)                          # in a worker thread

Each entry keeps a running sha256 and CRC of its bytes as they will be in the zip, so the
manifest is known before assembly and a spool file changed on disk is caught before the rename.
The zip is written as a stream through ``_HashingStream``, so its sha256 comes for free.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import secrets
import shutil
import threading
import zipfile
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Final

import orjson

from sar_bulk._version import __version__
from sar_bulk.dossier.answer_feed import answer_files_for
from sar_bulk.dossier.encryption import ENCRYPTED_SUFFIX, Encryptor
from sar_bulk.dossier.files import (
    DIR_MODE,
    create_private,
    dossier_path,
    ensure_folder,
    fsync_folder,
    remove_quietly,
)
from sar_bulk.dossier.format import (
    INDEX_NAME,
    INTERACTIONS,
    MANIFEST_NAME,
    PARTIAL_PREFIX,
    README_NAME,
    DossierView,
    EntryView,
    Kind,
    MemberHash,
    PartView,
    build_manifest,
    contact_matches,
    entry_problem,
    format_timestamp,
    manifest_bytes,
    member_info,
    part_order,
    rows_layout,
)
from sar_bulk.errors import DossierError
from sar_bulk.sources.base import Part

if TYPE_CHECKING:
    from sar_bulk.answer import Statement
    from sar_bulk.dossier.writer import DossierRequest

__all__ = [
    "MEMORY_SPOOL_BYTES",
    "RUN_HELD_BYTES",
    "DossierSummary",
    "EntrySpool",
    "HeldMemory",
    "PartSpool",
    "Spool",
    "encode_rows",
]

_CHUNK: Final = 1 << 20
# What the zip's writer gathers at most before a write: below malloc's mmap threshold (128 KiB),
# so the buffer comes from the heap rather than a fresh mapping, and above most dossiers' size.
_WRITE_CHUNK: Final = 64 * 1024
# A contact's data stays in memory up to this many bytes, then spills to its spool folder.
MEMORY_SPOOL_BYTES: Final = 256 * 1024
# And all contacts' data held in memory at once, run-wide (``HeldMemory``).
RUN_HELD_BYTES: Final = 64 * 1024 * 1024


class HeldMemory:
    """The bytes all contacts of a run hold in memory before assembly, bounded.

    Why a bound beyond the per-contact one: contacts waiting for real-time exports (parked, up
    to ``--max-parked``, 10,000 by default) keep what their other parts fetched until their
    exports are in; at 256 KiB each that is gigabytes, far above a pod's memory limit. Past
    ``limit`` a contact's data goes to its spool folder, as a big contact's does.
    ``take`` and ``give`` run on the event loop and in worker threads: a lock.
    """

    __slots__ = ("_lock", "_used", "limit")

    def __init__(self, limit: int = RUN_HELD_BYTES) -> None:
        self.limit = limit
        self._used = 0
        self._lock = threading.Lock()

    @property
    def used(self) -> int:
        return self._used

    def take(self, size: int) -> bool:
        with self._lock:
            if self._used + size > self.limit:
                return False
            self._used += size
            return True

    def give(self, size: int) -> None:
        with self._lock:
            self._used -= size


@dataclass(frozen=True, slots=True)
class DossierSummary:
    """What was written: enough for the run report and the state file."""

    path: Path
    contact_id: str
    total_interactions: int
    total_rows: int  # rows of every part, interactions included
    counts: dict[str, int]  # rows by part key
    zip_bytes: int  # of the file at ``path`` (the .zip.age one when encrypting)
    sha256: str  # of the file at ``path``, as written
    inner_sha256: str | None = None  # encrypted: the zip's inside the .zip.age file


def encode_rows(
    rows: Sequence[Mapping[str, Any]], contact_id: str | None, where: str
) -> list[bytes]:
    """One compact JSON line per row, unchanged; a row that cannot be written fails the part.

    ``contact_id`` is given for interactions: each must name the contact. Any failure (a lone
    surrogate, nesting too deep, no memory, a value that is not JSON) becomes a ``DossierError``
    that names ``where`` (contact and part) and the kind of failure, never the content.
    """
    try:
        return _encode(rows, contact_id, where)
    except DossierError:
        raise
    except Exception as exc:
        raise DossierError(
            f"a row of {where} cannot be written as JSON ({type(exc).__name__}); "
            "the part fails and no dossier is written for this contact"
        ) from None


def _encode(rows: Sequence[Mapping[str, Any]], contact_id: str | None, where: str) -> list[bytes]:
    lines: list[bytes] = []
    for item in rows:
        obj = item
        if type(obj) is not dict:
            if not isinstance(obj, Mapping):
                raise DossierError(f"a row of {where} is not a JSON object")
            obj = dict(obj)
        if contact_id is not None and not contact_matches(obj.get("ContactId"), contact_id):
            raise DossierError(
                f"a page of {where} holds an interaction whose ContactId is missing or names "
                "another contact; it is not written to protect that person"
            )
        try:
            # A copy of exactly the right size: orjson's result keeps its ~4 KiB output buffer,
            # so a page of 5,000 lines of ~400 bytes would otherwise hold ~20 MB, not ~2 MB.
            lines.append(bytes(memoryview(orjson.dumps(obj))))
        except orjson.JSONEncodeError as exc:
            if "64-bit" not in str(exc):
                raise
            lines.append(_dumps_exact(obj))
    return lines


def _dumps_exact(obj: Mapping[str, Any]) -> bytes:
    """The standard library's compact JSON, for integers beyond 64 bits (orjson refuses them)."""
    text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return text.encode("utf-8")


@functools.lru_cache(maxsize=16)
def _in_part_order(parts: tuple[Part, ...]) -> tuple[Part, ...]:
    """A request's parts in member order; the engine gives every contact the same tuple."""
    return tuple(sorted(parts, key=part_order))


def _by_name(spool: EntrySpool) -> str:
    return spool.name


def _copy_entry(source: IO[bytes], target: IO[bytes]) -> None:
    """Stream a spool file into its zip member (a seam the tests use to interrupt assembly)."""
    shutil.copyfileobj(source, target, _CHUNK)


class _HashingStream:
    """The zip's output: hashes every byte and writes it to the file descriptor, in big pieces.

    It cannot seek, so zipfile streams members with data descriptors instead of going back to
    patch local headers: what was hashed is exactly what is in the file. zipfile writes a
    dossier in dozens of small pieces (headers, compressor output, data descriptors, the
    central directory); they are gathered here and hashed and written once per
    ``_WRITE_CHUNK``, so a typical dossier costs one hash update and one ``write``. It writes
    to the descriptor itself rather than through a buffered file object: that one's 1 MiB
    buffer was mapped and unmapped for every dossier, and opening it cost an fstat and an
    lseek; each system call lets go of the GIL, which the event loop then takes.
    """

    __slots__ = ("fd", "pending", "sha", "size")

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.sha = hashlib.sha256()
        self.size = 0
        self.pending = bytearray()

    def write(self, data: bytes) -> int:
        size = len(data)
        self.size += size
        if len(self.pending) + size < _WRITE_CHUNK:
            self.pending += data
        else:  # a big piece (a member spooled to disk) goes out as it is, not copied
            self.flush()
            self._out(data)
        return size

    def tell(self) -> int:
        return self.size

    def seek(self, offset: int, whence: int = 0) -> int:
        raise OSError("the dossier is written as a stream")

    def seekable(self) -> bool:
        return False

    def flush(self) -> None:
        """Hash and write what was gathered."""
        if self.pending:
            self._out(self.pending)
            self.pending.clear()

    def _out(self, data: bytes | bytearray) -> None:
        self.sha.update(data)
        with memoryview(data) as view:
            done = 0
            while done < len(view):  # a short write is written on
                done += os.write(self.fd, view[done:])

    def close(self) -> None:
        """The descriptor is closed by its owner, after the fsync."""


class PartSpool:
    """One requested part of the contact so far: its pages, notes and entries.

    The writer's sink of a part holds this object, so a page reaches its part's counters without
    hashing the ``Part`` (a dataclass hashed in Python: several per page added up).
    """

    __slots__ = ("entries", "notes", "opened", "pages", "part")

    def __init__(self, part: Part) -> None:
        self.part = part
        self.pages = 0  # add_rows calls, empty pages included
        self.notes: dict[str, Any] = {}
        self.opened = False  # a sink was handed out for it
        self.entries: list[EntrySpool] = []  # in order of creation


class EntrySpool:
    """One entry so far: held in memory or spooled to a file, with running hash and CRC."""

    __slots__ = (
        "close",
        "crc",
        "data_bytes",
        "file",
        "held",
        "kind",
        "name",
        "number",
        "open",
        "pages",
        "part",
        "rows",
        "separator",
        "sha",
    )

    def __init__(self, number: int, part: Part, name: str, kind: Kind) -> None:
        self.number = number
        self.part = part
        self.name = name
        self.kind = kind
        if kind == "rows":
            self.open, self.separator, self.close = rows_layout(part.source)
        else:
            self.open = self.separator = self.close = b""
        self.pages = 0
        self.rows = 0
        self.data_bytes = 0
        self.file: Path | None = None
        self.held: list[bytes] = []
        # Hash and CRC of the entry as it will be: opening now, closing at the end. The hash
        # is started by the first data: most entries of a contact never get any.
        self.sha: hashlib._Hash | None = None
        self.crc = zlib.crc32(self.open)

    @property
    def entry_bytes(self) -> int:
        return len(self.open) + self.data_bytes + len(self.close)

    @property
    def written(self) -> bool:
        """A rows entry exists once it has a row; a file entry once a chunk came."""
        return self.rows > 0 if self.kind == "rows" else True

    def chunks_for(self, lines: list[bytes]) -> tuple[bytes, ...]:
        """The bytes rows add to the entry; rows after the first start with a separator."""
        joined = self.separator.join(lines)
        return (self.separator, joined) if self.rows else (joined,)

    def _hash(self) -> hashlib._Hash:
        if self.sha is None:
            self.sha = hashlib.sha256(self.open)
        return self.sha

    def account(self, chunks: tuple[bytes, ...], rows: int) -> None:
        sha = self._hash()
        for chunk in chunks:
            sha.update(chunk)
            self.crc = zlib.crc32(chunk, self.crc)
            self.data_bytes += len(chunk)
        self.rows += rows

    def view(self) -> EntryView:
        sha = self._hash().copy()
        sha.update(self.close)
        rows = self.kind == "rows"
        return EntryView(
            self.name,
            self.kind,
            sha.hexdigest(),
            self.entry_bytes,
            self.rows if rows else None,
            self.pages if rows else None,
        )

    def entry_crc(self) -> int:
        return zlib.crc32(self.close, self.crc)


class Spool:
    """The entries of one contact until assembly.

    Most contacts are small: their data stays in memory, up to ``MEMORY_SPOOL_BYTES`` per
    contact, and never touches the disk before the zip is written (no spool folder, no thread
    hop per page). The first page or chunk that would pass that bound spills everything to
    files in a private folder, and from then on everything goes to disk, so memory stays
    bounded by the bound plus one page however big the contact is. ``hold`` and ``entry`` run
    on the event loop (no I/O); every other method runs in a worker thread, one call at a time.
    """

    def __init__(
        self,
        out_dir: Path,
        request: DossierRequest,
        encryptor: Encryptor | None = None,
        statement: Statement | None = None,
        memory: HeldMemory | None = None,
    ) -> None:
        self.out_dir = out_dir
        self.memory = memory if memory is not None else HeldMemory()
        self.request = request
        self.encryptor = encryptor
        self.statement = statement
        self.entries: dict[str, EntrySpool] = {}
        # In member order, so that assembly walks them without sorting.
        self.parts: dict[Part, PartSpool] = {p: PartSpool(p) for p in _in_part_order(request.parts)}
        self._partial = f"{PARTIAL_PREFIX}{request.contact_id}-{secrets.token_hex(4)}"
        self._folder: Path | None = None  # created when the data spills to disk
        self._zip = out_dir / f"{self._partial}.zip"
        self._zip_gone = False
        self._held_bytes = 0

    def entry(self, owner: PartSpool, name: str, kind: Kind) -> EntrySpool:
        """The spool of ``name``, created on first use; a name belongs to one part and kind."""
        spool = self.entries.get(name)
        part = owner.part
        if spool is None:
            if problem := entry_problem(part, name, kind):
                raise DossierError(f"{problem} (contact {self.request.contact_id})")
            spool = self.entries[name] = EntrySpool(len(self.entries), part, name, kind)
            owner.entries.append(spool)
        elif (spool.part is not part and spool.part != part) or spool.kind != kind:
            raise DossierError(
                f"entry {name!r} of contact {self.request.contact_id} is already written by "
                f"part {spool.part.key} as {spool.kind}"
            )
        return spool

    def hold(self, spool: EntrySpool, chunks: tuple[bytes, ...], rows: int) -> bool:
        """Keep data in memory if the bound allows; False when it must go to disk."""
        size = sum(len(chunk) for chunk in chunks)
        if size and (
            self._folder is not None
            or self._held_bytes + size > MEMORY_SPOOL_BYTES
            or not self.memory.take(size)
        ):
            return False
        spool.held.extend(c for c in chunks if c)
        self._held_bytes += size
        spool.account(chunks, rows)
        return True

    def add_rows(self, spool: EntrySpool, rows: Sequence[Mapping[str, Any]], where: str) -> None:
        """Encode and spool a big page (in the worker thread)."""
        contact = self.request.contact_id if spool.part.source == INTERACTIONS else None
        lines = encode_rows(rows, contact, where)
        if lines:
            chunks = spool.chunks_for(lines)
            if not self.hold(spool, chunks, len(lines)):
                self.write(spool, chunks, len(lines))

    def write(self, spool: EntrySpool, chunks: tuple[bytes, ...], rows: int) -> None:
        """Append to the entry's spool file, spilling what memory holds first."""
        self._spill()
        self._append(spool, chunks)
        spool.account(chunks, rows)

    def _spill(self) -> None:
        if self._folder is not None:
            return
        ensure_folder(self.out_dir)
        folder = self.out_dir / self._partial
        os.mkdir(folder, DIR_MODE)
        os.chmod(folder, DIR_MODE)
        self._folder = folder
        for spool in self.entries.values():
            if spool.held:
                self._append(spool, tuple(spool.held))
                spool.held.clear()
        self._give_back()

    def _give_back(self) -> None:
        self.memory.give(self._held_bytes)
        self._held_bytes = 0

    def _append(self, spool: EntrySpool, chunks: tuple[bytes, ...]) -> None:
        # Open per page rather than holding a descriptor per entry: with many contacts in
        # flight that would exhaust the process's file limit, and an open is cheap.
        assert self._folder is not None
        if spool.file is None:
            spool.file = self._folder / f"{spool.number}.part"
            fd = create_private(spool.file)
        else:
            fd = os.open(spool.file, os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC)
        with open(fd, "wb") as out:
            for chunk in chunks:
                out.write(chunk)

    def view(self, generated_at: str) -> tuple[DossierView, list[EntrySpool]]:
        """The dossier as README and manifest see it, and its entries in member order."""
        parts: list[PartView] = []
        members: list[EntrySpool] = []
        for owner in self.parts.values():
            # Most parts hold one entry (a type's), and most of those have no row.
            entries = [s for s in owner.entries if s.written] if owner.entries else []
            if not entries:
                parts.append(PartView(owner.part, owner.pages, (), owner.notes))
                continue
            if len(entries) > 1:
                entries.sort(key=_by_name)
            members.extend(entries)
            views = tuple([s.view() for s in entries])
            parts.append(PartView(owner.part, owner.pages, views, owner.notes))
        request = self.request
        view = DossierView(request.contact_id, generated_at, request.question, tuple(parts))
        return view, members

    def assemble(self, generated_at: datetime) -> DossierSummary:
        """Build the zip under a partial name, make it durable, rename it, drop the spool."""
        request = self.request
        view, members = self.view(format_timestamp(generated_at))
        answer = answer_files_for(
            request, members, statement=self.statement, prepared_at=generated_at
        )
        readme_data, index_data = answer[README_NAME], answer[INDEX_NAME]
        manifest = build_manifest(
            view,
            readme=MemberHash.of(README_NAME, readme_data),
            index=MemberHash.of(INDEX_NAME, index_data),
            tool_version=__version__,
        )
        manifest_data = manifest_bytes(manifest)
        final = dossier_path(self.out_dir, request.contact_id)
        try:
            fd = create_private(self._zip)
        except (FileNotFoundError, NotADirectoryError):
            # The output folder went away (or is not one): made again as a 0700 folder, or
            # refused with the reason. Not looked at before every dossier: it is almost always
            # there, and two stat calls per dossier add up.
            ensure_folder(self.out_dir)
            fd = create_private(self._zip)
        try:
            try:
                stream = _HashingStream(fd)
                with zipfile.ZipFile(stream, "w", allowZip64=True) as archive:
                    archive.writestr(member_info(README_NAME, len(readme_data)), readme_data)
                    archive.writestr(member_info(INDEX_NAME, len(index_data)), index_data)
                    archive.writestr(member_info(MANIFEST_NAME, len(manifest_data)), manifest_data)
                    for spool in members:
                        self._write_entry(archive, spool)
                stream.flush()
                os.fsync(fd)
            finally:
                os.close(fd)
            size, sha256, inner_sha256 = stream.size, stream.sha.hexdigest(), None
            if self.encryptor is None:
                os.replace(self._zip, final)
            else:
                # The same zip, sealed: encrypted beside it, renamed onto <id>.zip.age, and the
                # plaintext removed (seal never leaves it behind, whatever fails).
                final = final.with_name(final.name + ENCRYPTED_SUFFIX)
                inner_sha256 = sha256
                sha256, size = self.encryptor.seal(self._zip, final)
        except BaseException:
            remove_quietly(self._zip)
            raise
        self._zip_gone = True  # renamed (or sealed and removed): nothing to clean up there
        fsync_folder(self.out_dir)
        self.discard()
        return DossierSummary(
            path=final,
            contact_id=request.contact_id,
            total_interactions=manifest["total_interactions"],
            total_rows=manifest["total_rows"],
            counts={p["key"]: p["rows"] for s in manifest["sources"] for p in s["parts"]},
            zip_bytes=size,
            sha256=sha256,
            inner_sha256=inner_sha256,
        )

    def _write_entry(self, archive: zipfile.ZipFile, spool: EntrySpool) -> None:
        # The exact size is known, so zipfile switches to ZIP64 by itself when it is needed.
        info = member_info(spool.name, spool.entry_bytes)
        with archive.open(info, "w") as target:
            if spool.file is None:
                # One write: each write is a zlib call that lets go of the GIL and a round of
                # zipfile's bookkeeping; the copy is of held data, at most MEMORY_SPOOL_BYTES.
                target.write(b"".join((spool.open, *spool.held, spool.close)))
            else:
                target.write(spool.open)
                with open(spool.file, "rb") as source:
                    _copy_entry(source, target)
                target.write(spool.close)
        # The manifest's sha256 was taken while spooling; the CRC zipfile just computed over
        # the bytes read back must agree, or the spool changed on disk.
        if info.file_size != spool.entry_bytes or spool.entry_crc() != info.CRC:
            raise DossierError(
                f"the spool of {spool.name} for contact {self.request.contact_id} "
                "changed on disk while the dossier was assembled; run again"
            )

    def discard(self) -> None:
        for spool in self.entries.values():
            spool.held.clear()
        self._give_back()
        if self._folder is not None:
            remove_quietly(self._folder)
        if not self._zip_gone:
            remove_quietly(self._zip)
