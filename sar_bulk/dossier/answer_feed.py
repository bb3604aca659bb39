"""The person's answer (index.html and README.txt) from a contact's spooled entries.

Usage (``Spool.assemble``, in the worker thread, before the zip is written)::

    files = answer_files_for(request, entries, statement=statement, prepared_at=now)
    files["index.html"], files["README.txt"]          # UTF-8 bytes, hashed in the manifest

Why read the spool back rather than feed an ``AnswerBuilder`` as pages arrive: ``add_rows`` runs
on the event loop, which every contact of the run shares, while assembly already runs in a
worker thread. Reading back costs one ``orjson.loads`` per run of whole lines (the spool is in
memory for most contacts, else in the page cache it was just written to) and keeps the hot path
as it was. The builder keeps bounded samples, so memory stays bounded too: a run of lines is at
most one read of ``_CHUNK`` bytes.

What goes where: interactions rows by their part's type; ``records/<table>.json`` rows by
``<table>`` (``contact`` is the person's record and gives their name); every file entry
(real-time exports) as an export, its content parsed only when small. The name is the contact
record's full name when the records source ran and found one, else ``Subject.name``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Final

import orjson

from sar_bulk.answer import AnswerBuilder, Statement, answer_files
from sar_bulk.answer import Question as AnswerQuestion
from sar_bulk.answer.view import SUMMARY_LIMIT
from sar_bulk.dossier.format import INTERACTIONS, wire_day

if TYPE_CHECKING:
    from sar_bulk.dossier.spool import EntrySpool
    from sar_bulk.dossier.writer import DossierRequest

__all__ = ["answer_files_for"]

_CHUNK: Final = 256 * 1024  # also what one orjson call reads at most (_batch)
_RECORDS: Final = "records"


def answer_files_for(
    request: DossierRequest,
    entries: Sequence[EntrySpool],
    *,
    statement: Statement | None,
    prepared_at: datetime,
) -> dict[str, bytes]:
    """``{"index.html": ..., "README.txt": ...}`` of one contact, from its entries."""
    question = request.question
    builder = AnswerBuilder(
        request.contact_id,
        AnswerQuestion(
            system=question.org_url,
            sources=question.sources,
            types=question.interaction_types,
            date_from=wire_day(question.date_from),
            date_to=wire_day(question.date_to),
            tables_not_searched=question.excluded_tables if _RECORDS in question.sources else (),
        ),
    )
    for spool in entries:
        source = spool.part.source
        if spool.kind == "file":
            small = spool.entry_bytes <= SUMMARY_LIMIT
            content = b"".join(_chunks(spool)) if small else None
            builder.add_export(spool.name, spool.entry_bytes, spool.view().sha256, content)
        elif source == INTERACTIONS:
            builder.add_interactions(spool.part.name, _rows(spool))
        elif source == _RECORDS:
            table = spool.name.removeprefix(f"{_RECORDS}/").removesuffix(".json")
            for row in _rows(spool):
                builder.add_record(table, row)
    subject = request.subject
    name = None if builder.contact_name else subject.name
    view = builder.build(
        prepared_at=prepared_at,
        statement=statement,
        name=name,
        received=subject.received,
        answered=prepared_at.date(),
    )
    return answer_files(view)


def _chunks(spool: EntrySpool) -> Iterator[bytes]:
    """The entry's data as spooled (without its opening and closing bytes)."""
    if spool.file is None:
        yield from spool.held
        return
    with open(spool.file, "rb") as source:
        while chunk := source.read(_CHUNK):
            yield chunk


def _rows(spool: EntrySpool) -> Iterator[dict[str, object]]:
    """Each row of a rows entry: one compact JSON object per line, as ``encode_rows`` wrote."""
    # Interactions lines end with the array's separator, so a run of whole lines is an array
    # but for its brackets: one orjson call reads them all.
    batched = spool.part.source == INTERACTIONS
    # The start of a line not yet ended, in pieces: a line longer than a chunk (one big row the
    # server sent) is joined once when it ends, not copied again with every chunk.
    pending: list[bytes] = []
    for chunk in _chunks(spool):
        cut = chunk.rfind(b"\n")
        if cut < 0:
            pending.append(chunk)
            continue
        block = b"".join((*pending, chunk[:cut]))
        pending = [chunk[cut + 1 :]]
        yield from _batch(block) if batched else _lines(block)
    yield from _lines(b"".join(pending))


def _batch(block: bytes) -> Iterator[dict[str, object]]:
    """The rows of whole interactions lines, as ``_lines`` reads them, in one ``orjson.loads``;
    ``_lines`` itself when that cannot read them all, or finds other than one value a line."""
    try:
        values = orjson.loads(b"[" + block.rstrip(b",") + b"]")
    except orjson.JSONDecodeError:
        return _lines(block)
    if not isinstance(values, list) or len(values) != block.count(b"\n") + 1:
        return _lines(block)
    return (v for v in values if isinstance(v, dict) and v)


def _lines(block: bytes) -> Iterator[dict[str, object]]:
    """The rows of whole lines, one at a time; an empty object or other value is no row."""
    for line in block.split(b"\n"):
        if row := _row(line):
            yield row


def _row(line: bytes) -> dict[str, object] | None:
    # Interactions lines end with the array's separator comma; the spool holds no brackets.
    line = line.rstrip(b",")
    if not line:
        return None
    try:
        value = orjson.loads(line)
    except orjson.JSONDecodeError:
        value = _exact(line)
    return value if isinstance(value, dict) else None


def _exact(line: bytes) -> object:
    """What orjson refuses but the spool may hold verbatim (1e400, integers beyond 64 bits): the
    standard library reads it. A row neither can read still counts, shown without fields: the
    answer is a summary, the row itself is in the entry unchanged."""
    try:
        return json.loads(line, parse_float=Decimal)  # exact, as the entry holds it
    except (ValueError, RecursionError):
        return {}
