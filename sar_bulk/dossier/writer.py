"""Write one contact's dossier: each part spools what it finds, then the zip is assembled.

Why spool: zipfile writes one member at a time, while the engine fetches a contact's parts
(40 interaction types, records, real-time exports) concurrently and one part can hold a million
rows or a large export file. So every page of rows and every chunk of a file is appended to its
entry's spool: in memory while the contact is small (``MEMORY_SPOOL_BYTES`` in all), then in
files in a private folder next to the output (same file system, so the final rename is atomic).
The zip is built only when every part is done. Memory stays at about one page or chunk.

Usage::

    request = DossierRequest(contact_id, parts, question)
    async with DossierWriter(out_dir, request) as writer:
        sink = writer.sink(Part("records", "records"))      # one PartSink per part
        await sink.add_rows("records/contact.json", rows)  # any part, any order
        await sink.add_file("realtime/a@b.json", chunk)
        sink.note("tables_absent", ["msdynmkt_consent"])
        summary = await writer.complete()   # leaving the block without this discards everything

Guarantees:

- A final name ``<out>/<contact-id>.zip`` only ever holds a complete zip: it is written under a
  ``.sar-bulk-partial-`` name, fsynced, renamed with ``os.replace``, and the folder is fsynced.
- Whatever an interrupted write leaves behind starts with ``.sar-bulk-partial-``;
  ``remove_leftovers`` deletes it at the start of the next run.
- Dossiers are created 0600 and folders the writer creates 0700, whatever the umask.
- Every interaction must name this contact in ``ContactId``; a page that holds another
  contact's interaction is refused, because a dossier must never disclose someone else's data.
- One row that cannot be written (a lone surrogate, nesting too deep, no memory, a value that
  is not JSON) raises ``DossierError`` naming contact and part, never its content; the writer is
  then broken: ``complete`` is refused and ``abort`` cleans up. Nothing else is affected.
- The summary carries the zip's sha256, computed from the bytes as they are written (the zip
  is written as a stream, members with data descriptors, so nothing is read back).

The format itself (member names, manifest, README) lives in ``format.py``.
"""

from __future__ import annotations

import asyncio
import enum
import hashlib
import json
import os
import re
import secrets
import shutil
import zipfile
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Final, TypeVar

import orjson

from sar_bulk._version import __version__
from sar_bulk.dossier.format import (
    INTERACTIONS,
    MANIFEST_NAME,
    PARTIAL_PREFIX,
    README_NAME,
    DossierView,
    EntryView,
    Kind,
    PartView,
    Question,
    build_manifest,
    contact_matches,
    dossier_file_name,
    entry_problem,
    format_timestamp,
    interactions_entry,
    manifest_bytes,
    member_info,
    part_order,
    readme_text,
    rows_layout,
    source_problem,
)
from sar_bulk.errors import DossierError
from sar_bulk.guids import is_canonical_guid
from sar_bulk.sources.base import JsonValue, Part, PartSink
from sar_bulk.sources.interaction_types import ALL_TYPES, InteractionType

__all__ = [
    "MEMORY_SPOOL_BYTES",
    "DossierRequest",
    "DossierSummary",
    "DossierWriter",
    "Question",
    "dossier_path",
    "remove_leftovers",
]

_FILE_MODE: Final = 0o600
_DIR_MODE: Final = 0o700
_CHUNK: Final = 1 << 20
# A contact's pages stay in memory up to this many bytes, then spill to its spool folder.
MEMORY_SPOOL_BYTES: Final = 256 * 1024
# Pages up to this many rows are encoded on the event loop (microseconds of work).
_INLINE_ITEMS: Final = 64
_WIRE_DATE: Final = re.compile(r"^\d{2}-\d{2}-\d{4}$")
_TYPES: Final = frozenset(t.value for t in ALL_TYPES)
_T = TypeVar("_T")


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _require_canonical(contact_id: str) -> None:
    if not is_canonical_guid(contact_id):
        raise DossierError(
            "a dossier needs the contact id in canonical form (lower-case dashed GUID); "
            "normalise it with canonical_guid first"
        )


@dataclass(frozen=True, slots=True)
class DossierRequest:
    """What one contact's dossier will hold (``parts``) and what was asked (``question``)."""

    contact_id: str
    parts: tuple[Part, ...]
    question: Question

    def __post_init__(self) -> None:
        _require_canonical(self.contact_id)
        if not self.parts:
            raise DossierError("a dossier needs at least one part")
        if not all(isinstance(p, Part) for p in self.parts):
            raise DossierError("parts must be Part values")
        if len(set(self.parts)) != len(self.parts):
            raise DossierError("parts lists a part twice")
        for part in self.parts:
            if problem := source_problem(part.source):
                raise DossierError(problem)
            if part.source == INTERACTIONS and part.name not in _TYPES:
                raise DossierError(f"part {part.key} names no interaction type")
            if part.source not in self.question.sources:
                raise DossierError(f"part {part.key} is of a source the question does not ask")
        question = self.question
        # The manifest must answer the question exactly: verify checks the same two rules.
        sources = {p.source for p in self.parts}
        if unanswered := [s for s in question.sources if s not in sources]:
            raise DossierError(f"the question asks {', '.join(unanswered)} but no part fetches it")
        types = {p.name for p in self.parts if p.source == INTERACTIONS}
        if INTERACTIONS in sources and types != set(question.interaction_types):
            raise DossierError("the interactions parts are not the question's interaction types")
        for name, value in (("date_from", question.date_from), ("date_to", question.date_to)):
            if value is not None and not _WIRE_DATE.match(value):
                raise DossierError(f"{name} must be sent as MM-DD-YYYY")

    @classmethod
    def for_interactions(
        cls,
        contact_id: str,
        interaction_types: Sequence[InteractionType],
        org_url: str,
        date_from: str | None = None,
        date_to: str | None = None,
    ) -> DossierRequest:
        """The request of the interactions-only engine: one part per interaction type."""
        if not interaction_types:
            raise DossierError("a dossier needs at least one interaction type")
        if not all(isinstance(t, InteractionType) for t in interaction_types):
            raise DossierError("interaction_types must be InteractionType members")
        if len(set(interaction_types)) != len(interaction_types):
            raise DossierError("interaction_types lists a type twice")
        ordered = tuple(t.value for t in ALL_TYPES if t in interaction_types)
        question = Question(org_url, (INTERACTIONS,), ordered, date_from, date_to)
        return cls(contact_id, tuple(Part(INTERACTIONS, t) for t in ordered), question)


@dataclass(frozen=True, slots=True)
class DossierSummary:
    """What was written: enough for the run report and the state file."""

    path: Path
    contact_id: str
    total_interactions: int
    total_rows: int  # rows of every part, interactions included
    counts: dict[str, int]  # rows by part key
    zip_bytes: int
    sha256: str  # of the whole zip, as written


def dossier_path(out_dir: Path, contact_id: str) -> Path:
    """Where the dossier of ``contact_id`` lives; refuses anything but a canonical GUID."""
    _require_canonical(contact_id)
    return Path(out_dir) / dossier_file_name(contact_id)


def remove_leftovers(out_dir: Path, owns: Callable[[str], bool] | None = None) -> int:
    """Delete what interrupted writes left in ``out_dir``; returns how many items went.

    Only names starting with ``.sar-bulk-partial-`` are touched, and with ``owns`` only those of
    contacts it accepts (shards sharing a folder each clean their own). Call it before any
    writer of this run starts: it would also remove the spool of a writer that is running.
    """
    try:
        entries = list(os.scandir(out_dir))
    except FileNotFoundError:
        return 0
    except OSError as exc:
        raise DossierError(f"cannot list output folder {out_dir}: {exc.strerror}") from exc
    removed = 0
    for entry in entries:
        if not entry.name.startswith(PARTIAL_PREFIX):
            continue
        contact = entry.name[len(PARTIAL_PREFIX) : len(PARTIAL_PREFIX) + 36]
        if owns is not None and not (is_canonical_guid(contact) and owns(contact)):
            continue
        try:
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise DossierError(
                f"cannot remove leftover {entry.path} of an interrupted run: {exc.strerror}; "
                "remove it by hand"
            ) from exc
        removed += 1
    return removed


def _ensure_folder(path: Path) -> None:
    """Create ``path`` and missing parents as 0700 (set explicitly: umask may be anything)."""
    missing: list[Path] = []
    current = path
    while not current.exists() and current.parent != current:
        missing.append(current)
        current = current.parent
    for folder in reversed(missing):
        try:
            os.mkdir(folder, _DIR_MODE)
        except FileExistsError:
            continue
        os.chmod(folder, _DIR_MODE)
    if not path.is_dir():
        raise DossierError(f"output folder {path} exists but is not a folder")


def _create_private(path: Path) -> int:
    """A new 0600 file; fails if the name exists (never follows or reuses someone's file)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(path, flags, _FILE_MODE)
    try:
        os.fchmod(fd, _FILE_MODE)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _fsync_folder(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove_quietly(path: Path) -> None:
    """Best-effort clean-up: what stays behind has a partial name and goes at the next run."""
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    except OSError:
        pass


def _encode_rows(
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


def _copy_entry(source: IO[bytes], target: IO[bytes]) -> None:
    """Stream a spool file into its zip member (a seam the tests use to interrupt assembly)."""
    shutil.copyfileobj(source, target, _CHUNK)


class _HashingStream:
    """The zip's output: writes through to the file and hashes every byte on the way.

    It cannot seek, so zipfile streams members with data descriptors instead of going back to
    patch local headers: what was hashed is exactly what is in the file.
    """

    __slots__ = ("out", "sha", "size")

    def __init__(self, out: IO[bytes]) -> None:
        self.out = out
        self.sha = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.sha.update(data)
        self.size += len(data)
        return self.out.write(data)

    def tell(self) -> int:
        return self.size

    def seek(self, offset: int, whence: int = 0) -> int:
        raise OSError("the dossier is written as a stream")

    def seekable(self) -> bool:
        return False

    def flush(self) -> None:
        self.out.flush()

    def close(self) -> None:
        """The file is closed by its owner, after the fsync."""


class _EntrySpool:
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
        # Hash and CRC of the entry as it will be: opening now, closing at the end.
        self.sha = hashlib.sha256(self.open)
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

    def account(self, chunks: tuple[bytes, ...], rows: int) -> None:
        for chunk in chunks:
            self.sha.update(chunk)
            self.crc = zlib.crc32(chunk, self.crc)
            self.data_bytes += len(chunk)
        self.rows += rows

    def view(self) -> EntryView:
        sha = self.sha.copy()
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


class _Spool:
    """The entries of one contact until assembly.

    Most contacts are small: their data stays in memory, up to ``MEMORY_SPOOL_BYTES`` per
    contact, and never touches the disk before the zip is written (no spool folder, no thread
    hop per page). The first page or chunk that would pass that bound spills everything to
    files in a private folder, and from then on everything goes to disk, so memory stays
    bounded by the bound plus one page however big the contact is. ``hold`` and ``entry`` run
    on the event loop (no I/O); every other method runs in a worker thread, one call at a time.
    """

    def __init__(self, out_dir: Path, request: DossierRequest) -> None:
        self.out_dir = out_dir
        self.request = request
        self.entries: dict[str, _EntrySpool] = {}
        self.pages: dict[Part, int] = dict.fromkeys(request.parts, 0)
        self.notes: dict[Part, dict[str, Any]] = {p: {} for p in request.parts}
        self._partial = f"{PARTIAL_PREFIX}{request.contact_id}-{secrets.token_hex(4)}"
        self._folder: Path | None = None  # created when the data spills to disk
        self._zip = out_dir / f"{self._partial}.zip"
        self._held_bytes = 0

    def entry(self, part: Part, name: str, kind: Kind) -> _EntrySpool:
        """The spool of ``name``, created on first use; a name belongs to one part and kind."""
        spool = self.entries.get(name)
        if spool is None:
            if problem := entry_problem(part, name, kind):
                raise DossierError(f"{problem} (contact {self.request.contact_id})")
            spool = self.entries[name] = _EntrySpool(len(self.entries), part, name, kind)
        elif spool.part != part or spool.kind != kind:
            raise DossierError(
                f"entry {name!r} of contact {self.request.contact_id} is already written by "
                f"part {spool.part.key} as {spool.kind}"
            )
        return spool

    def hold(self, spool: _EntrySpool, chunks: tuple[bytes, ...], rows: int) -> bool:
        """Keep data in memory if the bound allows; False when it must go to disk."""
        size = sum(len(chunk) for chunk in chunks)
        if size and (self._folder is not None or self._held_bytes + size > MEMORY_SPOOL_BYTES):
            return False
        spool.held.extend(c for c in chunks if c)
        self._held_bytes += size
        spool.account(chunks, rows)
        return True

    def add_rows(self, spool: _EntrySpool, rows: Sequence[Mapping[str, Any]], where: str) -> None:
        """Encode and spool a big page (in the worker thread)."""
        contact = self.request.contact_id if spool.part.source == INTERACTIONS else None
        lines = _encode_rows(rows, contact, where)
        if lines:
            chunks = spool.chunks_for(lines)
            if not self.hold(spool, chunks, len(lines)):
                self.write(spool, chunks, len(lines))

    def write(self, spool: _EntrySpool, chunks: tuple[bytes, ...], rows: int) -> None:
        """Append to the entry's spool file, spilling what memory holds first."""
        self._spill()
        self._append(spool, chunks)
        spool.account(chunks, rows)

    def _spill(self) -> None:
        if self._folder is not None:
            return
        _ensure_folder(self.out_dir)
        folder = self.out_dir / self._partial
        os.mkdir(folder, _DIR_MODE)
        os.chmod(folder, _DIR_MODE)
        self._folder = folder
        for spool in self.entries.values():
            if spool.held:
                self._append(spool, tuple(spool.held))
                spool.held.clear()
        self._held_bytes = 0

    def _append(self, spool: _EntrySpool, chunks: tuple[bytes, ...]) -> None:
        # Open per page rather than holding a descriptor per entry: with many contacts in
        # flight that would exhaust the process's file limit, and an open is cheap.
        assert self._folder is not None
        if spool.file is None:
            spool.file = self._folder / f"{spool.number}.part"
            fd = _create_private(spool.file)
        else:
            fd = os.open(spool.file, os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC)
        with open(fd, "wb") as out:
            for chunk in chunks:
                out.write(chunk)

    def view(self, generated_at: str) -> tuple[DossierView, list[_EntrySpool]]:
        """The dossier as README and manifest see it, and its entries in member order."""
        parts: list[PartView] = []
        members: list[_EntrySpool] = []
        for part in sorted(self.request.parts, key=part_order):
            entries = sorted(
                (s for s in self.entries.values() if s.part == part and s.written),
                key=lambda s: s.name,
            )
            members.extend(entries)
            views = tuple(s.view() for s in entries)
            parts.append(PartView(part, self.pages[part], views, self.notes[part]))
        request = self.request
        view = DossierView(request.contact_id, generated_at, request.question, tuple(parts))
        return view, members

    def assemble(self, generated_at: str) -> DossierSummary:
        """Build the zip under a partial name, make it durable, rename it, drop the spool."""
        request = self.request
        _ensure_folder(self.out_dir)
        view, members = self.view(generated_at)
        readme_data = readme_text(view).encode("utf-8")
        manifest = build_manifest(
            view,
            readme_sha256=hashlib.sha256(readme_data).hexdigest(),
            readme_bytes=len(readme_data),
            tool_version=__version__,
        )
        manifest_data = manifest_bytes(manifest)
        final = dossier_path(self.out_dir, request.contact_id)
        fd = _create_private(self._zip)
        try:
            with open(fd, "wb", buffering=_CHUNK) as raw:
                stream = _HashingStream(raw)
                with zipfile.ZipFile(stream, "w", allowZip64=True) as archive:
                    archive.writestr(member_info(README_NAME, len(readme_data)), readme_data)
                    archive.writestr(member_info(MANIFEST_NAME, len(manifest_data)), manifest_data)
                    for spool in members:
                        self._write_entry(archive, spool)
                raw.flush()
                os.fsync(raw.fileno())
            os.replace(self._zip, final)
        except BaseException:
            _remove_quietly(self._zip)
            raise
        _fsync_folder(self.out_dir)
        self.discard()
        return DossierSummary(
            path=final,
            contact_id=request.contact_id,
            total_interactions=view.total_interactions,
            total_rows=manifest["total_rows"],
            counts={p.part.key: p.rows for p in view.parts},
            zip_bytes=stream.size,
            sha256=stream.sha.hexdigest(),
        )

    def _write_entry(self, archive: zipfile.ZipFile, spool: _EntrySpool) -> None:
        # The exact size is known, so zipfile switches to ZIP64 by itself when it is needed.
        info = member_info(spool.name, spool.entry_bytes)
        with archive.open(info, "w") as target:
            target.write(spool.open)
            if spool.file is None:
                target.writelines(spool.held)
            else:
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
        if self._folder is not None:
            _remove_quietly(self._folder)
        _remove_quietly(self._zip)


class _State(enum.Enum):
    OPEN = "open"
    ASSEMBLING = "assembling"  # complete() is writing the zip
    BROKEN = "broken"  # a write failed or was cancelled half-way: only abort() is left
    DONE = "done"
    ABORTED = "aborted"


class _PartSink:
    """The ``PartSink`` of one part: every call goes to the writer, tagged with the part."""

    __slots__ = ("_part", "_writer")

    def __init__(self, writer: DossierWriter, part: Part) -> None:
        self._writer = writer
        self._part = part

    async def add_rows(self, entry: str, rows: Sequence[Mapping[str, Any]]) -> None:
        await self._writer._add_rows(self._part, entry, rows)

    async def add_file(self, entry: str, chunk: bytes) -> None:
        await self._writer._add_file(self._part, entry, chunk)

    def note(self, key: str, value: JsonValue) -> None:
        self._writer._note(self._part, key, value)


class DossierWriter:
    """Collects one contact's parts and turns them into ``<out>/<contact-id>.zip``.

    Rows of one entry must be added in server order; parts and entries may interleave freely.
    Calls are serialised per writer (each is at most one hop to a worker thread), so concurrent
    calls from the parts of a contact are safe.
    """

    __slots__ = ("_inflight", "_lock", "_now", "_opened", "_spool", "_state", "_unrequested")

    def __init__(
        self,
        out_dir: Path,
        request: DossierRequest,
        *,
        now: Callable[[], datetime] = _utc_now,
    ) -> None:
        self._spool = _Spool(Path(out_dir), request)
        self._now = now
        self._lock = asyncio.Lock()
        self._state = _State.OPEN
        self._inflight: asyncio.Future[Any] | None = None
        self._unrequested: set[str] = set()
        self._opened: set[Part] = set()

    @property
    def contact_id(self) -> str:
        return self._spool.request.contact_id

    async def __aenter__(self) -> DossierWriter:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._state is not _State.DONE:
            await self.abort()

    def sink(self, part: Part) -> PartSink:
        """Where ``part`` writes; a part not in the request is refused (and fails complete)."""
        if part not in self._spool.pages:
            self._unrequested.add(getattr(part, "key", repr(part)))
            raise DossierError(
                f"part {getattr(part, 'key', part)!r} came for contact {self.contact_id}, "
                "but it was not requested"
            )
        self._opened.add(part)
        return _PartSink(self, part)

    async def add_page(
        self, interaction_type: InteractionType, interactions: Sequence[Mapping[str, Any]]
    ) -> None:
        """Compatibility for the interactions-only engine: one page of one type's part."""
        try:
            kind = InteractionType(interaction_type)
        except ValueError:
            raise DossierError(f"{interaction_type!r} is not an interaction type") from None
        sink = self.sink(Part(INTERACTIONS, kind.value))
        await sink.add_rows(interactions_entry(kind), interactions)

    def _where(self, part: Part) -> str:
        return f"part {part.key} of contact {self.contact_id}"

    async def _add_rows(self, part: Part, entry: str, rows: Sequence[Mapping[str, Any]]) -> None:
        """Spool one page (empty pages count too): in memory while the contact is small, then
        on disk; a small page is encoded here, a big one in the worker thread."""
        async with self._lock:
            self._require_open("add rows to")
            try:
                spool = self._spool.entry(part, entry, "rows")
            except DossierError:
                self._state = _State.BROKEN
                raise
            self._spool.pages[part] += 1
            spool.pages += 1
            where = self._where(part)
            if len(rows) > _INLINE_ITEMS:
                await self._in_thread(self._spool.add_rows, spool, rows, where)
                return
            contact = self.contact_id if part.source == INTERACTIONS else None
            try:
                lines = _encode_rows(rows, contact, where)
            except DossierError:
                self._state = _State.BROKEN  # as when the thread refuses a page
                raise
            if lines:
                chunks = spool.chunks_for(lines)
                if not self._spool.hold(spool, chunks, len(lines)):
                    await self._in_thread(self._spool.write, spool, chunks, len(lines))

    async def _add_file(self, part: Part, entry: str, chunk: bytes) -> None:
        """Append a chunk of a verbatim file: held while small, else written in the thread."""
        async with self._lock:
            self._require_open("add a file to")
            try:
                if not isinstance(chunk, bytes | bytearray | memoryview):
                    raise DossierError(f"a chunk of {self._where(part)} is not bytes")
                spool = self._spool.entry(part, entry, "file")
            except DossierError:
                self._state = _State.BROKEN
                raise
            data = (bytes(chunk),)
            if not self._spool.hold(spool, data, 0):
                await self._in_thread(self._spool.write, spool, data, 0)

    def _note(self, part: Part, key: str, value: JsonValue) -> None:
        self._require_open("note on")
        try:
            if not isinstance(key, str) or not key:
                raise DossierError(f"a note of {self._where(part)} has no name")
            orjson.dumps(value)  # refuse now what the manifest could not hold later
        except Exception as exc:
            self._state = _State.BROKEN
            if isinstance(exc, DossierError):
                raise
            raise DossierError(
                f"a note of {self._where(part)} cannot be written as JSON ({type(exc).__name__})"
            ) from None
        self._spool.notes[part][key] = value

    async def complete(self) -> DossierSummary:
        """Every part is done: write the zip (in a thread) and return what it holds."""
        async with self._lock:
            self._require_open("complete")
            contact = self.contact_id
            if self._unrequested:
                names = ", ".join(sorted(self._unrequested))
                raise DossierError(f"data came for parts not requested for {contact}: {names}")
            missing = [p.key for p in self._spool.request.parts if p not in self._opened]
            if missing:
                raise DossierError(
                    f"the dossier of {contact} is incomplete: no data came for {', '.join(missing)}"
                )
            generated_at = format_timestamp(self._now())
            # No note or row may change the parts while the thread reads them.
            self._state = _State.ASSEMBLING
            summary = await self._in_thread(self._spool.assemble, generated_at)
            self._state = _State.DONE
            return summary

    async def abort(self) -> None:
        """Discard the spool and any partial zip. Idempotent; a finished dossier stays."""
        async with self._lock:
            if self._inflight is not None and not self._inflight.done():
                # A cancelled call's thread is still writing: let it finish before deleting.
                await asyncio.wait([self._inflight])
            if self._state in (_State.DONE, _State.ABORTED):
                return
            self._state = _State.ABORTED
            await asyncio.to_thread(self._spool.discard)

    def _require_open(self, action: str) -> None:
        if self._state is not _State.OPEN:
            raise DossierError(
                f"cannot {action} the dossier of {self.contact_id}: the writer is "
                f"{self._state.value}"
            )

    async def _in_thread(self, func: Callable[..., _T], *args: Any) -> _T:
        """Run blocking work in a thread that outlives a cancellation of the caller.

        Cancelling the caller must not leave a half-written file behind a writer that looks
        usable, so the thread is shielded, the writer is marked broken, and abort() waits for
        the thread before it deletes anything.
        """
        task = asyncio.ensure_future(asyncio.to_thread(func, *args))
        task.add_done_callback(_retrieve)
        self._inflight = task
        try:
            return await asyncio.shield(task)
        except BaseException as exc:
            self._state = _State.BROKEN
            if isinstance(exc, OSError):
                raise DossierError(
                    f"cannot write the dossier of {self.contact_id} in "
                    f"{self._spool.out_dir}: {exc.strerror or exc}"
                ) from exc
            raise


def _retrieve(task: asyncio.Future[Any]) -> None:
    """Mark a shielded thread's failure as seen; the awaiting caller already reported it."""
    if not task.cancelled():
        task.exception()
