"""Write one contact's dossier: each part spools what it finds, then the zip is assembled.

Why spool: zipfile writes one member at a time, while the engine fetches a contact's parts
(40 interaction types, records, real-time exports) concurrently and one part can hold a million
rows or a large export file. So every page of rows and every chunk of a file is appended to its
entry's spool: in memory while the contact is small (``MEMORY_SPOOL_BYTES`` in all), then in
files in a private folder next to the output (same file system, so the final rename is atomic).
The zip is built only when every part is done. Memory stays at about one page or chunk.

Usage::

    request = DossierRequest(contact_id, parts, question, subject)
    async with DossierWriter(out_dir, request, statement=statement) as writer:
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

The format itself (member names, manifest) lives in ``format.py``, the spool and the assembly of
the zip in ``spool.py``, private files and leftovers in ``files.py``. The person's answer
(index.html and README.txt, from ``sar_bulk.answer``) is built at assembly from the spooled
entries by ``answer_feed.py``; ``statement`` is the controller's (``None``: the answer says it
is missing).
"""

from __future__ import annotations

import asyncio
import enum
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Final, TypeVar

import orjson

from sar_bulk.answer import Statement
from sar_bulk.dossier.encryption import Encryptor
from sar_bulk.dossier.files import dossier_path, remove_leftovers, require_canonical
from sar_bulk.dossier.format import (
    INTERACTIONS,
    Question,
    Subject,
    format_timestamp,
    interactions_entry,
    source_problem,
)
from sar_bulk.dossier.spool import DossierSummary, HeldMemory, PartSpool, Spool, encode_rows
from sar_bulk.errors import DossierError
from sar_bulk.sources.base import JsonValue, Part, PartSink
from sar_bulk.sources.interaction_types import ALL_TYPES, InteractionType

__all__ = [
    "DossierRequest",
    "DossierSummary",
    "DossierWriter",
    "HeldMemory",
    "Question",
    "Subject",
    "dossier_path",
    "remove_leftovers",
]

# Pages up to this many rows are encoded on the event loop (microseconds of work).
_INLINE_ITEMS: Final = 64
_WIRE_DATE: Final = re.compile(r"^\d{2}-\d{2}-\d{4}\Z")
_TYPES: Final = frozenset(t.value for t in ALL_TYPES)
_T = TypeVar("_T")


def _utc_now() -> datetime:
    return datetime.now(UTC)


# The parts and question last found valid (one pair; replaced, never grown).
_CHECKED: list[tuple[tuple[Part, ...], Question]] = []


def _check_parts(parts: tuple[Part, ...], question: Question) -> None:
    """Do ``parts`` answer ``question`` exactly, each a valid part? (``DossierError`` if not)"""
    if not parts:
        raise DossierError("a dossier needs at least one part")
    if not all(isinstance(p, Part) for p in parts):
        raise DossierError("parts must be Part values")
    if len(set(parts)) != len(parts):
        raise DossierError("parts lists a part twice")
    for part in parts:
        if problem := source_problem(part.source):
            raise DossierError(problem)
        if part.source == INTERACTIONS and part.name not in _TYPES:
            raise DossierError(f"part {part.key} names no interaction type")
        if part.source not in question.sources:
            raise DossierError(f"part {part.key} is of a source the question does not ask")
    # The manifest must answer the question exactly: verify checks the same two rules.
    sources = {p.source for p in parts}
    if unanswered := [s for s in question.sources if s not in sources]:
        raise DossierError(f"the question asks {', '.join(unanswered)} but no part fetches it")
    types = {p.name for p in parts if p.source == INTERACTIONS}
    if INTERACTIONS in sources and types != set(question.interaction_types):
        raise DossierError("the interactions parts are not the question's interaction types")
    for name, value in (("date_from", question.date_from), ("date_to", question.date_to)):
        if value is not None and not _WIRE_DATE.match(value):
            raise DossierError(f"{name} must be sent as MM-DD-YYYY")


@dataclass(frozen=True, slots=True)
class DossierRequest:
    """What one contact's dossier will hold (``parts``) and what was asked (``question``)."""

    contact_id: str
    parts: tuple[Part, ...]
    question: Question
    subject: Subject = field(default_factory=Subject)

    def __post_init__(self) -> None:
        require_canonical(self.contact_id)
        # The engine gives every contact the same parts and question: checked once, not per
        # contact. Kept by identity, so only immutable values (tuples all through) are kept.
        parts, question = self.parts, self.question
        for checked_parts, checked_question in _CHECKED:
            if checked_parts is parts and checked_question is question:
                return
        _check_parts(parts, question)
        if type(parts) is tuple and all(
            type(v) is tuple for v in (question.sources, question.interaction_types)
        ):
            _CHECKED[:] = [(parts, question)]

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


class _State(enum.Enum):
    OPEN = "open"
    ASSEMBLING = "assembling"  # complete() is writing the zip
    BROKEN = "broken"  # a write failed or was cancelled half-way: only abort() is left
    DONE = "done"
    ABORTED = "aborted"


class _PartSink:
    """The ``PartSink`` of one part: every call goes to the writer, tagged with the part."""

    __slots__ = ("_part", "_writer")

    def __init__(self, writer: DossierWriter, part: PartSpool) -> None:
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

    __slots__ = ("_inflight", "_lock", "_now", "_spool", "_state", "_unrequested")

    def __init__(
        self,
        out_dir: Path,
        request: DossierRequest,
        *,
        now: Callable[[], datetime] = _utc_now,
        encryptor: Encryptor | None = None,
        statement: Statement | None = None,
        memory: HeldMemory | None = None,
    ) -> None:
        # With an encryptor the finished zip becomes <contact-id>.zip.age (encryption.py).
        # ``memory``: the run's bound on data held in memory (one per run; spool.HeldMemory).
        self._spool = Spool(Path(out_dir), request, encryptor, statement, memory)
        self._now = now
        self._lock = asyncio.Lock()
        self._state = _State.OPEN
        self._inflight: asyncio.Future[Any] | None = None
        self._unrequested: set[str] = set()

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
        owner = self._spool.parts.get(part)
        if owner is None:
            self._unrequested.add(getattr(part, "key", repr(part)))
            raise DossierError(
                f"part {getattr(part, 'key', part)!r} came for contact {self.contact_id}, "
                "but it was not requested"
            )
        owner.opened = True
        return _PartSink(self, owner)

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

    async def _add_rows(
        self, owner: PartSpool, entry: str, rows: Sequence[Mapping[str, Any]]
    ) -> None:
        """Spool one page (empty pages count too): in memory while the contact is small, then
        on disk; a small page is encoded here, a big one in the worker thread."""
        async with self._lock:
            self._require_open("add rows to")
            try:
                spool = self._spool.entry(owner, entry, "rows")
            except DossierError:
                self._state = _State.BROKEN
                raise
            owner.pages += 1
            spool.pages += 1
            if not rows:
                return  # counted; nothing to encode (most pages of most types are empty)
            part = owner.part
            if len(rows) > _INLINE_ITEMS:
                await self._in_thread(self._spool.add_rows, spool, rows, self._where(part))
                return
            contact = self.contact_id if part.source == INTERACTIONS else None
            try:
                lines = encode_rows(rows, contact, self._where(part))
            except DossierError:
                self._state = _State.BROKEN  # as when the thread refuses a page
                raise
            if lines:
                chunks = spool.chunks_for(lines)
                if not self._spool.hold(spool, chunks, len(lines)):
                    await self._in_thread(self._spool.write, spool, chunks, len(lines))

    async def _add_file(self, owner: PartSpool, entry: str, chunk: bytes) -> None:
        """Append a chunk of a verbatim file: held while small, else written in the thread."""
        async with self._lock:
            self._require_open("add a file to")
            try:
                if not isinstance(chunk, bytes | bytearray | memoryview):
                    raise DossierError(f"a chunk of {self._where(owner.part)} is not bytes")
                spool = self._spool.entry(owner, entry, "file")
            except DossierError:
                self._state = _State.BROKEN
                raise
            data = (bytes(chunk),)
            if not self._spool.hold(spool, data, 0):
                await self._in_thread(self._spool.write, spool, data, 0)

    def _note(self, owner: PartSpool, key: str, value: JsonValue) -> None:
        self._require_open("note on")
        try:
            if not isinstance(key, str) or not key:
                raise DossierError(f"a note of {self._where(owner.part)} has no name")
            orjson.dumps(value)  # refuse now what the manifest could not hold later
        except Exception as exc:
            self._state = _State.BROKEN
            if isinstance(exc, DossierError):
                raise
            raise DossierError(
                f"a note of {self._where(owner.part)} cannot be written as JSON "
                f"({type(exc).__name__})"
            ) from None
        owner.notes[key] = value

    async def complete(self) -> DossierSummary:
        """Every part is done: write the zip (in a thread) and return what it holds."""
        async with self._lock:
            self._require_open("complete")
            contact = self.contact_id
            if self._unrequested:
                names = ", ".join(sorted(self._unrequested))
                raise DossierError(f"data came for parts not requested for {contact}: {names}")
            missing = [p.key for p in self._spool.request.parts if not self._spool.parts[p].opened]
            if missing:
                raise DossierError(
                    f"the dossier of {contact} is incomplete: no data came for {', '.join(missing)}"
                )
            generated_at = self._now()
            format_timestamp(generated_at)  # a naive clock is refused here, not in the thread
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
