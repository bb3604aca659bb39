"""Write one contact's dossier: spool pages to disk as they arrive, then assemble the zip.

Why spool: zipfile writes one member at a time, while the engine fetches the 40 types of a contact
concurrently and a single contact can have a million interactions. So every page is appended to
a per-type file in a private folder next to the output (same file system, so the final rename is
atomic) and the zip is built only when every requested type is done. Memory stays at about one
page however big the contact is.

Usage::

    async with DossierWriter(out_dir, DossierRequest(contact_id, types, org_url)) as writer:
        await writer.add_page(InteractionType.EmailSent, page)   # any type, any order
        ...
        summary = await writer.complete()   # leaving the block without this discards everything

Guarantees:

- A final name ``<out>/<contact-id>.zip`` only ever holds a complete zip: it is written under a
  ``.sar-bulk-partial-`` name, fsynced, renamed with ``os.replace``, and the folder is fsynced.
- Whatever an interrupted write leaves behind starts with ``.sar-bulk-partial-``;
  ``remove_leftovers`` deletes it at the start of the next run.
- Dossiers are created 0600 and folders the writer creates 0700, whatever the umask.
- Every interaction must name this contact in ``ContactId``; a page that holds another
  contact's interaction is refused, because a dossier must never disclose someone else's data.

The format itself (member names, manifest, README) lives in ``dossier_format.py``.
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
from sar_bulk.dossier.encryption import ENCRYPTED_SUFFIX, Encryptor
from sar_bulk.dossier.format import (
    ENTRY_CLOSE,
    ENTRY_OPEN,
    ENTRY_SEPARATOR,
    MANIFEST_NAME,
    PARTIAL_PREFIX,
    README_NAME,
    EntryStats,
    build_manifest,
    contact_matches,
    dossier_file_name,
    entry_name,
    format_timestamp,
    manifest_bytes,
    member_info,
    readme_text,
)
from sar_bulk.errors import DossierError
from sar_bulk.guids import is_canonical_guid
from sar_bulk.sources.interaction_types import ALL_TYPES, InteractionType

__all__ = [
    "DossierRequest",
    "DossierSummary",
    "DossierWriter",
    "dossier_path",
    "remove_leftovers",
]

_FILE_MODE: Final = 0o600
_DIR_MODE: Final = 0o700
_CHUNK: Final = 1 << 20
# A contact's pages stay in memory up to this many bytes, then spill to its spool folder.
MEMORY_SPOOL_BYTES: Final = 256 * 1024
# Pages up to this many interactions are encoded on the event loop (microseconds of work).
_INLINE_ITEMS: Final = 64
_WIRE_DATE: Final = re.compile(r"^\d{2}-\d{2}-\d{4}$")
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
    """What was asked for one contact; the manifest records it."""

    contact_id: str
    interaction_types: tuple[InteractionType, ...]
    org_url: str
    date_from: str | None = None  # as sent, MM-DD-YYYY
    date_to: str | None = None

    def __post_init__(self) -> None:
        _require_canonical(self.contact_id)
        if not self.interaction_types:
            raise DossierError("a dossier needs at least one interaction type")
        if not all(isinstance(t, InteractionType) for t in self.interaction_types):
            raise DossierError("interaction_types must be InteractionType members")
        if len(set(self.interaction_types)) != len(self.interaction_types):
            raise DossierError("interaction_types lists a type twice")
        for name, value in (("date_from", self.date_from), ("date_to", self.date_to)):
            if value is not None and not _WIRE_DATE.match(value):
                raise DossierError(f"{name} must be sent as MM-DD-YYYY")


@dataclass(frozen=True, slots=True)
class DossierSummary:
    """What was written: enough for the run report and the state file."""

    path: Path
    contact_id: str
    total_interactions: int
    counts: dict[InteractionType, int]
    zip_bytes: int  # of the file at ``path`` (the encrypted one when encrypting)
    sha256: str = ""  # of the file at ``path``
    inner_sha256: str | None = None  # encrypted: the SHA-256 of the zip inside the .age file


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


def _encode_page(interactions: Sequence[Mapping[str, Any]], contact_id: str) -> list[bytes]:
    """One compact JSON line per interaction, unchanged; refuses other contacts' data."""
    lines: list[bytes] = []
    for item in interactions:
        obj = item
        if type(obj) is not dict:
            if not isinstance(obj, Mapping):
                raise DossierError(f"an interaction of contact {contact_id} is not a JSON object")
            obj = dict(obj)
        if not contact_matches(obj.get("ContactId"), contact_id):
            raise DossierError(
                f"a page for contact {contact_id} holds an interaction whose ContactId is "
                "missing or names another contact; it is not written to protect that person"
            )
        try:
            # A copy of exactly the right size: orjson's result keeps its ~4 KiB output buffer,
            # so a page of 5,000 lines of ~400 bytes would otherwise hold ~20 MB, not ~2 MB.
            lines.append(bytes(memoryview(orjson.dumps(obj))))
        except orjson.JSONEncodeError:
            lines.append(_dumps_exact(obj, contact_id))
    return lines


def _dumps_exact(obj: Mapping[str, Any], contact_id: str) -> bytes:
    """The standard library's compact JSON, for what orjson refuses (integers beyond 64 bits)."""
    try:
        text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise DossierError(
            f"an interaction of contact {contact_id} cannot be written as JSON: {exc}"
        ) from None
    return text.encode("utf-8")


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _copy_entry(source: IO[bytes], target: IO[bytes]) -> None:
    """Stream a spool file into its zip member (a seam the tests use to interrupt assembly)."""
    shutil.copyfileobj(source, target, _CHUNK)


class _TypeSpool:
    """One type's pages so far: held in memory or spooled to a file, with running hash and CRC."""

    __slots__ = ("count", "crc", "file", "held", "items_bytes", "pages", "sha")

    def __init__(self) -> None:
        self.pages = 0
        self.count = 0
        self.items_bytes = 0
        self.file: Path | None = None
        self.held: list[bytes] = []
        # Hash and CRC of the entry as it will be: opening bracket now, closing one at the end.
        self.sha = hashlib.sha256(ENTRY_OPEN)
        self.crc = zlib.crc32(ENTRY_OPEN)

    @property
    def entry_bytes(self) -> int:
        return len(ENTRY_OPEN) + self.items_bytes + len(ENTRY_CLOSE)

    def chunks_for(self, lines: list[bytes]) -> tuple[bytes, ...]:
        """The bytes a page adds to the entry; pages after the first start with a separator."""
        joined = ENTRY_SEPARATOR.join(lines)
        return (ENTRY_SEPARATOR, joined) if self.count else (joined,)

    def account(self, chunks: tuple[bytes, ...], items: int) -> None:
        for chunk in chunks:
            self.sha.update(chunk)
            self.crc = zlib.crc32(chunk, self.crc)
            self.items_bytes += len(chunk)
        self.count += items

    def stats(self, interaction_type: InteractionType) -> EntryStats:
        if not self.count:
            return EntryStats(interaction_type, 0, self.pages, None, 0)
        sha = self.sha.copy()
        sha.update(ENTRY_CLOSE)
        return EntryStats(
            interaction_type, self.count, self.pages, sha.hexdigest(), self.entry_bytes
        )

    def entry_crc(self) -> int:
        return zlib.crc32(ENTRY_CLOSE, self.crc)


class _Spool:
    """The pages of one contact until assembly.

    Most contacts are small: their pages stay in memory, up to ``MEMORY_SPOOL_BYTES`` per
    contact, and never touch the disk before the zip is written (no spool folder, no thread hop
    per page). The first page that would pass that bound spills everything to files in a
    private folder, and from then on every page goes to disk, so memory stays bounded by the
    bound plus one page however big the contact is. ``hold`` runs on the event loop (it does no
    I/O); every other method runs in a worker thread, one call at a time.
    """

    def __init__(
        self, out_dir: Path, request: DossierRequest, encryptor: Encryptor | None = None
    ) -> None:
        self.out_dir = out_dir
        self.request = request
        self.encryptor = encryptor
        self.types = {t: _TypeSpool() for t in ALL_TYPES if t in request.interaction_types}
        self._partial = f"{PARTIAL_PREFIX}{request.contact_id}-{secrets.token_hex(4)}"
        self._folder: Path | None = None  # created when the pages spill to disk
        self._zip = out_dir / f"{self._partial}.zip"
        self._held_bytes = 0

    def hold(self, interaction_type: InteractionType, lines: list[bytes]) -> bool:
        """Keep a page in memory if the bound allows; False when it must go to disk."""
        spool = self.types[interaction_type]
        if lines:
            chunks = spool.chunks_for(lines)
            size = sum(len(chunk) for chunk in chunks)
            if self._folder is not None or self._held_bytes + size > MEMORY_SPOOL_BYTES:
                return False
            spool.held.extend(chunks)
            self._held_bytes += size
            spool.account(chunks, len(lines))
        spool.pages += 1
        return True

    def add(
        self, interaction_type: InteractionType, interactions: Sequence[Mapping[str, Any]]
    ) -> None:
        lines = _encode_page(interactions, self.request.contact_id)
        if not self.hold(interaction_type, lines):
            self.write(interaction_type, lines)

    def write(self, interaction_type: InteractionType, lines: list[bytes]) -> None:
        """Append a page to its spool file, spilling what memory holds first."""
        spool = self.types[interaction_type]
        self._spill()
        chunks = spool.chunks_for(lines)
        self._append(spool, interaction_type, chunks)
        spool.account(chunks, len(lines))
        spool.pages += 1

    def _spill(self) -> None:
        if self._folder is not None:
            return
        _ensure_folder(self.out_dir)
        folder = self.out_dir / self._partial
        os.mkdir(folder, _DIR_MODE)
        os.chmod(folder, _DIR_MODE)
        self._folder = folder
        for interaction_type, spool in self.types.items():
            if spool.held:
                self._append(spool, interaction_type, tuple(spool.held))
                spool.held.clear()
        self._held_bytes = 0

    def _append(
        self, spool: _TypeSpool, interaction_type: InteractionType, chunks: tuple[bytes, ...]
    ) -> None:
        # Open per page rather than holding up to 40 descriptors per contact: with many
        # contacts in flight that would exhaust the process's file limit, and an open is cheap.
        assert self._folder is not None
        if spool.file is None:
            spool.file = self._folder / f"{interaction_type.value}.part"
            fd = _create_private(spool.file)
        else:
            fd = os.open(spool.file, os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC)
        with open(fd, "wb") as out:
            for chunk in chunks:
                out.write(chunk)

    def assemble(self, generated_at: str) -> DossierSummary:
        """Build the zip under a partial name, make it durable, rename it, drop the spool."""
        request = self.request
        _ensure_folder(self.out_dir)
        stats = [spool.stats(t) for t, spool in self.types.items()]
        manifest = build_manifest(
            contact_id=request.contact_id,
            generated_at=generated_at,
            tool_version=__version__,
            org_url=request.org_url,
            date_from=request.date_from,
            date_to=request.date_to,
            entries=stats,
        )
        manifest_data = manifest_bytes(manifest)
        readme_data = readme_text(manifest).encode("utf-8")
        final = dossier_path(self.out_dir, request.contact_id)
        fd = _create_private(self._zip)
        try:
            with open(fd, "wb", buffering=_CHUNK) as raw:
                with zipfile.ZipFile(raw, "w", allowZip64=True) as archive:
                    archive.writestr(member_info(README_NAME, len(readme_data)), readme_data)
                    archive.writestr(member_info(MANIFEST_NAME, len(manifest_data)), manifest_data)
                    for interaction_type, spool in self.types.items():
                        if spool.count:
                            self._write_entry(archive, interaction_type, spool)
                raw.flush()
                os.fsync(raw.fileno())
                zip_bytes = raw.tell()
            zip_sha256 = _file_sha256(self._zip)
            inner_sha256: str | None = None
            if self.encryptor is None:
                os.replace(self._zip, final)
                sha256 = zip_sha256
            else:
                # The zip is the same as without encryption; the final name gets its age file.
                final = final.with_name(final.name + ENCRYPTED_SUFFIX)
                sha256, zip_bytes = self.encryptor.seal(self._zip, final)
                inner_sha256 = zip_sha256
        except BaseException:
            _remove_quietly(self._zip)
            raise
        _fsync_folder(self.out_dir)
        self.discard()
        return DossierSummary(
            path=final,
            contact_id=request.contact_id,
            total_interactions=manifest["total_interactions"],
            counts={s.interaction_type: s.count for s in stats},
            zip_bytes=zip_bytes,
            sha256=sha256,
            inner_sha256=inner_sha256,
        )

    def _write_entry(
        self, archive: zipfile.ZipFile, interaction_type: InteractionType, spool: _TypeSpool
    ) -> None:
        # The exact size is known, so zipfile switches to ZIP64 by itself when it is needed.
        info = member_info(entry_name(interaction_type), spool.entry_bytes)
        with archive.open(info, "w") as target:
            target.write(ENTRY_OPEN)
            if spool.file is None:
                target.writelines(spool.held)
            else:
                with open(spool.file, "rb") as source:
                    _copy_entry(source, target)
            target.write(ENTRY_CLOSE)
        # The manifest's sha256 was taken while spooling; the CRC zipfile just computed over
        # the bytes read back must agree, or the spool changed on disk.
        if info.file_size != spool.entry_bytes or spool.entry_crc() != info.CRC:
            raise DossierError(
                f"the spool of {interaction_type} for contact {self.request.contact_id} "
                "changed on disk while the dossier was assembled; run again"
            )

    def discard(self) -> None:
        for spool in self.types.values():
            spool.held.clear()
        if self._folder is not None:
            _remove_quietly(self._folder)
        _remove_quietly(self._zip)


class _State(enum.Enum):
    OPEN = "open"
    BROKEN = "broken"  # a write failed or was cancelled half-way: only abort() is left
    DONE = "done"
    ABORTED = "aborted"


class DossierWriter:
    """Collects one contact's pages and turns them into ``<out>/<contact-id>.zip``.

    Pages of one type must be added in server order; types may interleave freely. Calls are
    serialised per writer (each is one hop to a worker thread), so concurrent calls are safe.
    """

    __slots__ = ("_inflight", "_lock", "_now", "_spool", "_state", "_unrequested")

    def __init__(
        self,
        out_dir: Path,
        request: DossierRequest,
        *,
        now: Callable[[], datetime] = _utc_now,
        encryptor: Encryptor | None = None,
    ) -> None:
        self._spool = _Spool(Path(out_dir), request, encryptor)
        self._now = now
        self._lock = asyncio.Lock()
        self._state = _State.OPEN
        self._inflight: asyncio.Future[Any] | None = None
        self._unrequested: set[InteractionType] = set()

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

    async def add_page(
        self, interaction_type: InteractionType, interactions: Sequence[Mapping[str, Any]]
    ) -> None:
        """Spool one page (empty pages count too): in memory while the contact is small, then
        on disk; a small page is encoded here, a big one in the worker thread."""
        kind = self._requested(interaction_type)
        async with self._lock:
            self._require_open("add a page to")
            if len(interactions) > _INLINE_ITEMS:
                await self._in_thread(self._spool.add, kind, interactions)
                return
            try:
                lines = _encode_page(interactions, self.contact_id)
            except DossierError:
                self._state = _State.BROKEN  # as when the thread refuses a page
                raise
            if not self._spool.hold(kind, lines):
                await self._in_thread(self._spool.write, kind, lines)

    async def complete(self) -> DossierSummary:
        """Every requested type is done: write the zip (in a thread) and return what it holds."""
        async with self._lock:
            self._require_open("complete")
            contact = self.contact_id
            if self._unrequested:
                names = ", ".join(sorted(self._unrequested))
                raise DossierError(f"pages came for types not requested for {contact}: {names}")
            missing = [t.value for t, spool in self._spool.types.items() if not spool.pages]
            if missing:
                raise DossierError(
                    f"the dossier of {contact} is incomplete: no page came for {', '.join(missing)}"
                )
            generated_at = format_timestamp(self._now())
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

    def _requested(self, interaction_type: InteractionType) -> InteractionType:
        try:
            kind = InteractionType(interaction_type)
        except ValueError:
            raise DossierError(f"{interaction_type!r} is not an interaction type") from None
        if kind not in self._spool.types:
            self._unrequested.add(kind)
            raise DossierError(
                f"a page of {kind} came for contact {self.contact_id}, "
                "but that type was not requested"
            )
        return kind

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
