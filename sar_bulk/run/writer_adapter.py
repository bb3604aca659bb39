"""Bridge from the engine's part-based view to today's dossier writer, until writer v2 lands.

Usage::

    writer = open_writer(out, contact_id, parts, question, now=now)
    async with writer:
        await source.fetch(scope, part, writer.sink(part))
        summary = await writer.complete()

The engine speaks the v2 API (``writer.sink(part) -> PartSink``, a question, a summary with a
SHA-256); today's ``DossierWriter`` takes pages per interaction type. This module is the only
place in the run package that knows that: it maps ``interactions/<Type>.json`` rows onto
``add_page`` and refuses anything else with a ``DossierError``. When ``DossierRequest(contact_id,
parts, question)`` and ``writer.sink`` exist, ``open_writer`` becomes a one-line constructor and
``question_of`` reads the manifest's question.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Final

from sar_bulk.dossier.verify import VerifyResult
from sar_bulk.dossier.writer import DossierRequest, DossierSummary, DossierWriter
from sar_bulk.errors import DossierError
from sar_bulk.sources.base import JsonValue, Part, PartSink
from sar_bulk.sources.interaction_types import InteractionType

__all__ = ["PartWriter", "file_sha256", "open_writer", "question_of"]

_INTERACTIONS: Final = "interactions"
_CHUNK: Final = 1 << 20


class _TypeSink:
    """One interaction type's part, as a PartSink over ``DossierWriter.add_page``."""

    __slots__ = ("_entry", "_type", "_writer", "notes")

    def __init__(self, writer: DossierWriter, part: Part) -> None:
        self._writer = writer
        self._type = InteractionType(part.name)
        self._entry = f"{_INTERACTIONS}/{part.name}.json"
        self.notes: dict[str, JsonValue] = {}

    async def add_rows(self, entry: str, rows: Sequence[Mapping[str, Any]]) -> None:
        if entry != self._entry:
            raise DossierError(f"this dossier writer cannot hold entry {entry}")
        await self._writer.add_page(self._type, rows)

    async def add_file(self, entry: str, chunk: bytes) -> None:
        raise DossierError(f"this dossier writer cannot hold verbatim entry {entry}")

    def note(self, key: str, value: JsonValue) -> None:
        self.notes[key] = value  # today's manifest has no place for part facts


class PartWriter:
    """The v2-shaped face of today's writer: ``sink(part)``, ``complete()``, ``abort()``."""

    def __init__(self, writer: DossierWriter) -> None:
        self._writer = writer

    def sink(self, part: Part) -> PartSink:
        if part.source != _INTERACTIONS:
            raise DossierError(f"this dossier writer cannot hold part {part.key}")
        return _TypeSink(self._writer, part)

    async def complete(self) -> DossierSummary:
        return await self._writer.complete()

    async def abort(self) -> None:
        await self._writer.abort()

    async def __aenter__(self) -> PartWriter:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._writer.__aexit__(None, None, None)


def open_writer(
    out: Path,
    contact_id: str,
    parts: Sequence[Part],
    question: Mapping[str, Any],
    *,
    now: Callable[[], datetime],
) -> PartWriter:
    """A writer for one contact's parts (only ``interactions`` parts until writer v2)."""
    others = [p.key for p in parts if p.source != _INTERACTIONS]
    if others:
        raise DossierError(f"this dossier writer cannot hold parts {', '.join(others)}")
    request = DossierRequest(
        contact_id=contact_id,
        interaction_types=tuple(InteractionType(p.name) for p in parts),
        org_url=str(question["org"]),
        date_from=question.get("date_from"),
        date_to=question.get("date_to"),
    )
    return PartWriter(DossierWriter(out, request, now=now))


def question_of(result: VerifyResult) -> dict[str, Any]:
    """The question a valid dossier answers, in the engine's shape (see ``Engine.question``).

    A v2 manifest states it (``source.question``); today's holds the org, the dates and the
    interaction types, which is the question of an interactions-only run.
    """
    source = result.source or {}
    stated = source.get("question")
    if isinstance(stated, dict):
        return stated
    return {
        "org": source.get("org_url"),
        "date_from": source.get("date_from"),
        "date_to": source.get("date_to"),
        "parts": sorted(f"{_INTERACTIONS}/{t}" for t in result.interaction_types),
        "custom_tables": [],
        "excluded_tables": [],
    }


def file_sha256(path: Path) -> str:
    """The SHA-256 of a file, read a MiB at a time (call it in a thread)."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()
