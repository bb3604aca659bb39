"""``AnswerView``: everything the answer shows, built while the writer spools, in bounded memory.

Usage (the dossier writer, at assembly time)::

    builder = AnswerBuilder(contact_id, Question(system=org_url, sources=("interactions",
                            "records", "realtime"), types=requested, date_from=..., date_to=...))
    for itype, row in spooled_interactions:        # any order, one row at a time
        builder.add_interaction(itype, row)
    for table, row in spooled_records:             # "contact", "leads", "msdynmkt_...4s", ...
        builder.add_record(table, row)
    builder.add_export("realtime/1-gdpr_output.json", size, sha256, content_if_small)
    view = builder.build(prepared_at=now, statement=load_statement(...), name=None)
    html = render_html(view); text = render_text(view)

Why a builder: one contact can hold a million interactions. The builder keeps counts, first and
last dates and monthly counts for every type, but only the newest ``row_cap`` rows of each type
(a min-heap on the timestamp), ``record_cap`` rows of each other table, and the parsed content of
export files no bigger than ``SUMMARY_LIMIT``. The full data stays in the dossier's JSON files,
which the answer names ("N more in interactions/EmailSent.json").
"""

from __future__ import annotations

import functools
import heapq
import itertools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any, Final

import orjson

from sar_bulk.answer.statement import Statement
from sar_bulk.sources.interaction_types import ALL_TYPES

__all__ = [
    "SOURCES",
    "SUMMARY_LIMIT",
    "AnswerBuilder",
    "AnswerView",
    "ExportFile",
    "Question",
    "RecordTable",
    "TypeRows",
    "parse_stamp",
    "parse_when",
]

SOURCES: Final[dict[str, str]] = {
    "interactions": "Marketing interactions (outbound marketing)",
    "records": "Records in the customer database (Dataverse)",
    "realtime": "Real-time journeys (the product's own export)",
}
"""The sources sar-bulk can search, and what a person calls them."""

SUMMARY_LIMIT: Final = 64 * 1024
"""Export files up to this size are parsed for a readable summary; bigger ones are only listed."""

_CONTACT_TABLES: Final = frozenset({"contact", "contacts"})
_ALL_TYPE_NAMES: Final = tuple(t.value for t in ALL_TYPES)
_NEVER: Final = datetime.min.replace(tzinfo=UTC)
_from_iso: Final = datetime.fromisoformat


def parse_when(value: object) -> datetime | None:
    """An ISO 8601 timestamp as the org sends it (``2024-03-04T13:10:00Z``), else ``None``."""
    return parse_stamp(value) if isinstance(value, str) else None


def parse_stamp(value: str) -> datetime | None:
    """``parse_when`` of a string (shared with ``fields.shown_cells``)."""
    if len(value) < 10:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    tz = parsed.tzinfo
    if tz is UTC:  # "...Z" and "+00:00" parse to UTC itself: nothing to convert
        return parsed
    if tz is None:
        return parsed.replace(tzinfo=UTC)
    try:
        return parsed.astimezone(UTC)
    except OverflowError:  # before year 1 or after 9999 in UTC: no time a date can show
        return None


@dataclass(frozen=True, slots=True)
class Question:
    """What was asked of the org: where, which sources and types, and which period."""

    system: str
    sources: tuple[str, ...] = tuple(SOURCES)
    types: tuple[str, ...] = tuple(t.value for t in ALL_TYPES)
    date_from: date | None = None
    date_to: date | None = None
    # Tables of the records source the operator chose not to export (--exclude-tables).
    tables_not_searched: tuple[str, ...] = ()

    @property
    def sources_not_searched(self) -> tuple[str, ...]:
        return tuple(s for s in SOURCES if s not in self.sources)

    @property
    def types_not_searched(self) -> tuple[str, ...]:
        if "interactions" not in self.sources:
            return _ALL_TYPE_NAMES
        types = self.types
        return _types_not_in(types if isinstance(types, tuple) else tuple(types))


@functools.lru_cache(maxsize=64)
def _types_not_in(types: tuple[str, ...]) -> tuple[str, ...]:
    """The 40 types but ``types``, in canonical order; a run asks every contact the same
    question, and each answer asks this twice (a loop over an enum's members each time)."""
    asked = frozenset(types)
    return tuple(t for t in _ALL_TYPE_NAMES if t not in asked)


@dataclass(frozen=True, slots=True)
class TypeRows:
    """One interaction type: its count, first and last time, and the newest rows (newest first)."""

    name: str
    count: int
    first: datetime | None
    last: datetime | None
    rows: tuple[Mapping[str, Any], ...]

    @property
    def file(self) -> str:
        return f"interactions/{self.name}.json"

    @property
    def more(self) -> int:
        return self.count - len(self.rows)


@dataclass(frozen=True, slots=True)
class RecordTable:
    """The rows of one Dataverse table other than the contact itself (capped)."""

    table: str
    count: int
    rows: tuple[Mapping[str, Any], ...]

    @property
    def file(self) -> str:
        return f"records/{self.table}.json"

    @property
    def more(self) -> int:
        return self.count - len(self.rows)


@dataclass(frozen=True, slots=True)
class ExportFile:
    """A file of the real-time journeys export, kept verbatim in the dossier."""

    name: str
    size: int
    sha256: str
    summary: tuple[tuple[str, str], ...] | None = None


@dataclass(slots=True)
class _Derived:
    """What ``AnswerView``'s properties derive from its interactions (see ``_derived``)."""

    done: bool = False
    total_interactions: int = 0
    held_types: tuple[TypeRows, ...] = ()
    empty_types: tuple[str, ...] = ()
    first: datetime | None = None
    last: datetime | None = None


@dataclass(frozen=True, slots=True)
class AnswerView:
    """The input of ``render_html`` and ``render_text``: one person's answer, ready to show."""

    contact_id: str
    name: str | None
    prepared_at: datetime
    question: Question
    statement: Statement | None
    interactions: tuple[TypeRows, ...]
    monthly: tuple[tuple[str, int], ...]
    contact: Mapping[str, Any] | None = None
    consents: tuple[Mapping[str, Any], ...] = ()
    consent_count: int = 0
    consent_file: str = "records/msdynmkt_contactpointconsent4.json"
    records: tuple[RecordTable, ...] = ()
    exports: tuple[ExportFile, ...] = ()
    received: date | None = None
    answered: date | None = None
    # What the properties below derive from ``interactions``, worked out at the first use: the
    # renderers ask for them some forty times per answer.
    _derived: _Derived = field(
        default_factory=lambda: _Derived(), init=False, repr=False, compare=False
    )

    @property
    def total_interactions(self) -> int:
        return self._derive().total_interactions

    @property
    def held_types(self) -> tuple[TypeRows, ...]:
        return self._derive().held_types

    @property
    def empty_types(self) -> tuple[str, ...]:
        return self._derive().empty_types

    @property
    def first(self) -> datetime | None:
        return self._derive().first

    @property
    def last(self) -> datetime | None:
        return self._derive().last

    def _derive(self) -> _Derived:
        derived = self._derived
        if not derived.done:
            kinds = self.interactions
            derived.total_interactions = sum(t.count for t in kinds)
            derived.held_types = tuple(t for t in kinds if t.count)
            derived.empty_types = tuple(t.name for t in kinds if not t.count)
            derived.first = min((t.first for t in kinds if t.first), default=None)
            derived.last = max((t.last for t in kinds if t.last), default=None)
            derived.done = True
        return derived


@dataclass(slots=True)
class _TypeAcc:
    count: int = 0
    first: datetime | None = None
    last: datetime | None = None
    newest: list[tuple[datetime, int, Mapping[str, Any]]] = field(default_factory=list)


@dataclass(slots=True)
class _TableAcc:
    count: int = 0
    rows: list[Mapping[str, Any]] = field(default_factory=list)


class AnswerBuilder:
    """Accumulates one contact's rows as they stream past; ``build`` returns the ``AnswerView``."""

    __slots__ = (
        "_contact",
        "_contact_id",
        "_exports",
        "_monthly",
        "_question",
        "_record_cap",
        "_row_cap",
        "_seq",
        "_tables",
        "_types",
    )

    def __init__(
        self, contact_id: str, question: Question, *, row_cap: int = 500, record_cap: int = 100
    ) -> None:
        self._contact_id = contact_id
        self._question = question
        self._row_cap = row_cap
        self._record_cap = record_cap
        self._types: dict[str, _TypeAcc] = {}
        self._monthly: dict[str, int] = {}
        self._tables: dict[str, _TableAcc] = {}
        self._contact: Mapping[str, Any] | None = None
        self._exports: list[ExportFile] = []
        self._seq = itertools.count()

    @property
    def contact_name(self) -> str | None:
        """The name on the contact record added so far (``None`` without one)."""
        return _name_of(self._contact)

    def add_interaction(self, itype: str, row: Mapping[str, Any]) -> None:
        """One interaction of ``itype`` (the org's JSON object); keeps what the answer shows."""
        self.add_interactions(itype, (row,))

    def add_interactions(self, itype: str, rows: Iterable[Mapping[str, Any]]) -> None:
        """Interactions of ``itype``, one after the other (what ``add_interaction`` does for
        each, with the type's state looked up once)."""
        acc = self._types.get(itype)
        if acc is None:
            acc = self._types[itype] = _TypeAcc()
        monthly = self._monthly
        newest = acc.newest
        cap = self._row_cap
        seq = self._seq
        first, last = acc.first, acc.last
        count = 0
        for row in rows:
            count += 1
            value = row.get("Timestamp")
            stamp: str = value if isinstance(value, str) else ""
            if len(stamp) == 20 and stamp[19] == "Z" and stamp[4] == stamp[7] == "-":
                # The org's usual form ("2024-03-04T13:10:00Z"): parse_stamp's result without
                # its call (a time in UTC itself), and the month's key straight from the text.
                try:
                    when = _from_iso(stamp)
                except ValueError:
                    when = None
                if when is not None and when.tzinfo is not UTC:
                    when = parse_stamp(stamp)
                month = stamp[:7]
            else:
                when = parse_stamp(stamp)
                month = f"{when.year:04d}-{when.month:02d}" if when is not None else ""
            if when is not None:
                if first is None or when < first:
                    first = when
                if last is None or when > last:
                    last = when
                monthly[month] = monthly.get(month, 0) + 1
            # Min-heap on (time, arrival): the oldest kept row is dropped first, so the heap
            # ends up holding the newest row_cap rows whatever order the pages came in. Until
            # it is full the rows are only collected (build sorts them): most types never are.
            item = (when or _NEVER, -next(seq), row)
            if len(newest) < cap:
                newest.append(item)
                if len(newest) == cap:
                    heapq.heapify(newest)
            elif cap:
                heapq.heappushpop(newest, item)
        acc.count += count
        acc.first, acc.last = first, last

    def add_record(self, table: str, row: Mapping[str, Any]) -> None:
        """One Dataverse row of ``table`` (``contact``, ``leads``, ...), as the org sent it."""
        if table in _CONTACT_TABLES and self._contact is None:
            self._contact = row
            return
        acc = self._tables.setdefault(table, _TableAcc())
        acc.count += 1
        if len(acc.rows) < self._record_cap:
            acc.rows.append(row)

    def add_export(self, name: str, size: int, sha256: str, content: bytes | None = None) -> None:
        """One verbatim export file; pass ``content`` when it is small enough to summarise."""
        summary = None
        if content is not None and len(content) <= SUMMARY_LIMIT:
            summary = _summarise(content)
        self._exports.append(ExportFile(name, size, sha256, summary))

    def build(
        self,
        *,
        prepared_at: datetime,
        statement: Statement | None,
        name: str | None = None,
        received: date | None = None,
        answered: date | None = None,
    ) -> AnswerView:
        asked = self._question.types if "interactions" in self._question.sources else ()
        names = list(dict.fromkeys([*asked, *self._types]))
        interactions = tuple(self._type_rows(n) for n in names)
        consent_table, consents = next(
            ((t, acc) for t, acc in self._tables.items() if "contactpointconsent" in t),
            ("msdynmkt_contactpointconsent4", None),
        )
        # One table is "your consent and contact preferences"; any other consent table (a
        # custom table of an older consent entity) is listed like any other table, not dropped.
        others = tuple(
            RecordTable(table, acc.count, tuple(acc.rows))
            for table, acc in self._tables.items()
            if acc is not consents
        )
        return AnswerView(
            contact_id=self._contact_id,
            name=name or _name_of(self._contact),
            prepared_at=prepared_at,
            question=self._question,
            statement=statement,
            interactions=interactions,
            monthly=tuple(sorted(self._monthly.items())),
            contact=self._contact,
            consents=tuple(consents.rows) if consents else (),
            consent_count=consents.count if consents else 0,
            consent_file=f"records/{consent_table}.json",
            records=others,
            exports=tuple(self._exports),
            received=received,
            answered=answered,
        )

    def _type_rows(self, itype: str) -> TypeRows:
        acc = self._types.get(itype)
        if acc is None:
            return TypeRows(itype, 0, None, None, ())
        rows = tuple(row for _, _, row in sorted(acc.newest, reverse=True))
        return TypeRows(itype, acc.count, acc.first, acc.last, rows)


def _name_of(contact: Mapping[str, Any] | None) -> str | None:
    if not contact:
        return None
    full = contact.get("fullname")
    if isinstance(full, str) and full.strip():
        return full.strip()
    parts = [contact.get(k) for k in ("firstname", "lastname")]
    joined = " ".join(p.strip() for p in parts if isinstance(p, str) and p.strip())
    return joined or None


def _summarise(content: bytes) -> tuple[tuple[str, str], ...] | None:
    """Top-level fields of a small JSON export as (label, short text); ``None`` if not JSON."""
    try:
        document = orjson.loads(content)
    except orjson.JSONDecodeError:
        return None
    if isinstance(document, list):
        return (("Entries", f"{len(document):,}"),)
    if not isinstance(document, dict):
        return (("Value", str(document)[:200]),)
    summary: list[tuple[str, str]] = []
    for key, value in itertools.islice(document.items(), 50):
        if isinstance(value, list):
            text = _plural(len(value), "entry", "entries")
        elif isinstance(value, dict):
            text = _plural(len(value), "field", "fields")
        else:
            text = "" if value is None else str(value)[:200]
        summary.append((str(key), text))
    return tuple(summary)


def _plural(count: int, one: str, many: str) -> str:
    return f"{count:,} {one if count == 1 else many}"
