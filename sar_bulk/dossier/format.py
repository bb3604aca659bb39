"""The dossier format ``sar-bulk/dossier/v3``: the one place that says what a dossier holds.

The writer (``writer.py``) builds dossiers from these definitions and the verifier (``verify.py``)
checks them against the same definitions, so the two cannot drift apart. The earlier format v1
(interactions only) lives in ``format_v1.py`` for the verifier.

A dossier is ``<contact-id>.zip`` (lower-case canonical GUID) with these members, in this order:

1. ``README.txt``: the answer to the data subject in plain text (UTF-8, CRLF line ends), the
   same content as index.html (``sar_bulk.answer``).
2. ``index.html``: the answer as one self-contained page: who holds what about the person, why,
   for how long and what they can do about it (Article 15 GDPR).
3. ``manifest.json``: the question that was asked, then the parts grouped by source, each with
   its entries (name, sha256, bytes, rows, pages), its notes and its status; plus the sha256 of
   README.txt and of index.html. Every member but the manifest itself is hashed there.
4. The entries, part by part in a fixed order (sources ``interactions``, ``records``,
   ``realtime``, then any other by name; interaction types in their canonical order; other parts
   by name), and within a part by entry name:

   - ``interactions/<Type>.json``: a JSON array with one compact object per line (as in v1);
   - ``records/<table>.json`` and any other rows entry: JSON lines, one compact row per line;
   - ``realtime/...`` and any other file entry: the bytes exactly as the org sent them.

A rows entry exists only when it holds at least one row; a file entry exists once a chunk came
(even an empty one). Every member has the fixed timestamp 1980-01-01 00:00:00, mode 0600 and
DEFLATE compression, so entries are byte-identical for the same server data.

Versions: v3 adds index.html (and the manifest's ``index``); v2 (``SCHEMA_V2``, a technical
README.txt, no index.html) is what sar-bulk wrote before, and the verifier still
checks it strictly as v2. A v3 manifest without ``index``, or a v3 zip without index.html,
fails: index.html is never optional in v3.

Usage::

    view = DossierView(contact_id, generated_at, question, parts)
    manifest = build_manifest(view, readme=MemberHash.of(README_NAME, readme_bytes),
                              index=MemberHash.of(INDEX_NAME, html_bytes), tool_version=v)
"""

from __future__ import annotations

import hashlib
import re
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any, Final, Literal, Protocol

import orjson

from sar_bulk.guids import canonical_guid
from sar_bulk.sources.interaction_types import ALL_TYPES, InteractionType

__all__ = [
    "ENTRY_CLOSE",
    "ENTRY_OPEN",
    "ENTRY_SEPARATOR",
    "INDEX_NAME",
    "KNOWN_SOURCES",
    "MANIFEST_NAME",
    "PARTIAL_PREFIX",
    "README_NAME",
    "SCHEMA",
    "SCHEMA_V2",
    "TOOL_NAME",
    "DossierView",
    "EntryView",
    "MemberHash",
    "PartLike",
    "PartRef",
    "PartView",
    "Question",
    "build_manifest",
    "contact_matches",
    "dossier_file_name",
    "entry_problem",
    "format_timestamp",
    "interactions_entry",
    "manifest_bytes",
    "member_info",
    "part_order",
    "question_matches",
    "rows_layout",
    "wire_day",
]

SCHEMA: Final = "sar-bulk/dossier/v3"
SCHEMA_V2: Final = "sar-bulk/dossier/v2"  # written before index.html; still verified
TOOL_NAME: Final = "sar-bulk"
README_NAME: Final = "README.txt"
INDEX_NAME: Final = "index.html"
MANIFEST_NAME: Final = "manifest.json"
INTERACTIONS: Final = "interactions"

# Temporary files and folders of an unfinished write start with this, so the next run can find
# and remove them and nobody mistakes them for dossiers.
PARTIAL_PREFIX: Final = ".sar-bulk-partial-"

# An interactions entry is ENTRY_OPEN + objects joined by ENTRY_SEPARATOR + ENTRY_CLOSE.
ENTRY_OPEN: Final = b"[\n"
ENTRY_SEPARATOR: Final = b",\n"
ENTRY_CLOSE: Final = b"\n]\n"
# Any other rows entry is JSON lines: every row ends with a newline.
_LINES: Final = (b"", b"\n", b"\n")

# What each source is, in plain words, in the order the dossier lists them.
KNOWN_SOURCES: Final[Mapping[str, str]] = {
    INTERACTIONS: "marketing interactions (e-mails sent, opened, clicked, web visits, ...)"
    " recorded by Dynamics 365 Customer Insights - Journeys, by type",
    "records": "rows of named tables that hold you: your contact record, leads, accounts,"
    " activities, consent, earlier subject requests and tables the organisation added",
    "realtime": "the export file that real-time journeys produce for a subject request,"
    " one per e-mail address or phone number of yours, exactly as it was produced",
}

Kind = Literal["rows", "file"]
_SOURCE_RANK: Final = {source: rank for rank, source in enumerate(KNOWN_SOURCES)}

# The earliest time a zip header can hold; fixed so that entries do not depend on the clock.
MEMBER_DATE_TIME: Final = (1980, 1, 1, 0, 0, 0)
_UNIX: Final = 3  # "made by" system in the central directory: makes the mode bits meaningful
_MEMBER_MODE: Final = 0o600
# \Z, not $: $ also matches before a final newline, which would let "a.json\n" through.
_SEGMENT: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,99}\Z")
_SOURCE: Final = re.compile(r"^[a-z][a-z0-9_-]{0,39}\Z")
_WIRE_DATE: Final = re.compile(r"^(\d{2})-(\d{2})-(\d{4})\Z")
_TYPE_INDEX: Final = {t.value: i for i, t in enumerate(ALL_TYPES)}
# Each type's member name, looked up once per entry (building it goes through the enum).
_TYPE_ENTRY: Final = {t.value: f"{INTERACTIONS}/{t.value}.json" for t in ALL_TYPES}


class PartLike(Protocol):
    """What the format needs of a part: ``sources.base.Part`` is one. A protocol, so that the
    verifier does not import the sources (and with them the HTTP client) to check a file."""

    @property
    def source(self) -> str: ...

    @property
    def name(self) -> str: ...

    @property
    def key(self) -> str: ...


@dataclass(frozen=True, slots=True)
class PartRef:
    """A part as the verifier reads it from a manifest (same ``key`` rule as ``Part``)."""

    source: str
    name: str

    @property
    def key(self) -> str:
        return self.source if self.name == self.source else f"{self.source}/{self.name}"


@dataclass(frozen=True, slots=True)
class Question:
    """What was asked for the contact; the manifest records it and a resumed run compares it."""

    org_url: str
    sources: tuple[str, ...]
    interaction_types: tuple[str, ...] = ()  # canonical order; empty when interactions not asked
    date_from: str | None = None  # as sent, MM-DD-YYYY
    date_to: str | None = None
    custom_tables: tuple[str, ...] = ()
    excluded_tables: tuple[str, ...] = ()  # tables the operator chose not to export

    def as_json(self) -> dict[str, Any]:
        return {
            "org_url": self.org_url,
            "sources": list(self.sources),
            "interaction_types": list(self.interaction_types),
            "date_from": self.date_from,
            "date_to": self.date_to,
            "custom_tables": list(self.custom_tables),
            "excluded_tables": list(self.excluded_tables),
        }


@dataclass(frozen=True, slots=True)
class Subject:
    """Who asked and when, as far as the run knows (optional CSV columns, the contact's record).

    ``received`` is the day the request arrived; ``due`` the day the answer is owed (one month
    later, Article 12(3) GDPR, or up to three with ``extension_reason``).
    """

    name: str | None = None
    received: date | None = None
    due: date | None = None
    extension_reason: str | None = None


@dataclass(frozen=True, slots=True)
class MemberHash:
    """A member the manifest hashes outside the parts: README.txt and index.html."""

    name: str
    sha256: str
    size: int

    @classmethod
    def of(cls, name: str, data: bytes) -> MemberHash:
        return cls(name, hashlib.sha256(data).hexdigest(), len(data))

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "sha256": self.sha256, "bytes": self.size}


@dataclass(frozen=True, slots=True)
class EntryView:
    """One entry as the manifest and README see it."""

    name: str
    kind: Kind
    sha256: str
    bytes: int
    rows: int | None  # rows entries only
    pages: int | None  # rows entries only: how many add_rows calls fed it


@dataclass(frozen=True, slots=True)
class PartView:
    part: PartLike
    pages: int  # add_rows calls of the part, empty ones included
    entries: tuple[EntryView, ...]
    notes: Mapping[str, Any] = field(default_factory=dict)

    @property
    def rows(self) -> int:
        return sum(e.rows or 0 for e in self.entries)


@dataclass(frozen=True, slots=True)
class DossierView:
    """The small view of a dossier that README.txt and the manifest are built from."""

    contact_id: str
    generated_at: str
    question: Question
    parts: tuple[PartView, ...]  # in part_order

    @property
    def total_interactions(self) -> int:
        return sum(p.rows for p in self.parts if p.part.source == INTERACTIONS)


def question_matches(found: Mapping[str, Any] | None, asked: Question) -> bool:
    """Does a dossier whose manifest holds the question ``found`` answer ``asked``?

    ``found`` is ``VerifyResult.question`` (v1 dossiers get a derived one). Lists compare as
    sets: the order a question was written in does not change what it asks.
    """
    if not isinstance(found, Mapping):
        return False
    expected = asked.as_json()
    for key, value in expected.items():
        got = found.get(key)
        if isinstance(value, list):
            if not isinstance(got, list) or sorted(map(str, got)) != sorted(value):
                return False
        elif got != value:
            return False
    return True


def part_order(part: PartLike) -> tuple[int, str, int, str]:
    """Sort key of parts: known sources first, in their order; types in canonical order."""
    rank = _SOURCE_RANK.get(part.source, len(_SOURCE_RANK))
    return (rank, part.source, _TYPE_INDEX.get(part.name, -1), part.name)


def interactions_entry(interaction_type: InteractionType | str) -> str:
    """Member name of a type's entry (only ever built from the enum, never from input)."""
    return f"{INTERACTIONS}/{InteractionType(interaction_type).value}.json"


def rows_layout(source: str) -> tuple[bytes, bytes, bytes]:
    """(open, separator, close) of a rows entry of ``source``."""
    if source == INTERACTIONS:
        return ENTRY_OPEN, ENTRY_SEPARATOR, ENTRY_CLOSE
    return _LINES


def source_problem(source: str) -> str | None:
    return None if _SOURCE.match(source) else f"source name {source!r} is not allowed"


def entry_problem(part: PartLike, entry: str, kind: Kind) -> str | None:
    """Why ``entry`` cannot be a member of ``part`` (None when it can).

    Names are ``<source>/<segment>[/<segment>]`` with plain segments, so no entry can escape
    its folder, hide (leading dot) or collide with README.txt or manifest.json.
    """
    if part.source == INTERACTIONS:
        expected = _TYPE_ENTRY.get(part.name)
        if expected is None:
            return f"part {part.key} names no interaction type"
        if kind != "rows" or entry != expected:
            return f"part {part.key} writes only rows to {expected}"
        return None
    segments = entry.split("/")
    if segments[0] != part.source or not 2 <= len(segments) <= 3:
        return f"entry {entry!r} of part {part.key} must be {part.source}/<name>"
    if not all(_SEGMENT.match(s) for s in segments[1:]):
        return f"entry {entry!r} of part {part.key} has a name that is not allowed"
    if kind == "rows" and not entry.endswith(".json"):
        return f"rows entry {entry!r} of part {part.key} must end with .json"
    return None


def dossier_file_name(contact_id: str) -> str:
    """File name of a contact's dossier; ``contact_id`` must already be canonical."""
    return f"{contact_id}.zip"


def member_info(name: str, size: int) -> zipfile.ZipInfo:
    """A ZipInfo with everything fixed that would otherwise vary between runs or platforms.

    ``size`` is the uncompressed size; zipfile uses it to decide whether the member needs ZIP64.
    """
    info = zipfile.ZipInfo(name, date_time=MEMBER_DATE_TIME)
    # A hand-built ZipInfo would be stored uncompressed without this.
    info.compress_type = zipfile.ZIP_DEFLATED
    info.create_system = _UNIX
    info.external_attr = _MEMBER_MODE << 16
    info.file_size = size
    return info


def wire_day(value: str | None) -> date | None:
    """A question's MM-DD-YYYY date as a ``date`` (``None`` when absent or malformed)."""
    match = _WIRE_DATE.match(value or "")
    if match is None:
        return None
    month, day, year = (int(g) for g in match.groups())
    try:
        return date(year, month, day)
    except ValueError:
        return None


def format_timestamp(moment: datetime) -> str:
    """ISO 8601 in UTC with a ``Z``, to the second; naive datetimes are refused (ambiguous)."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("generated_at must be timezone-aware")
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def contact_matches(value: object, contact_id: str) -> bool:
    """True when an interaction's ``ContactId`` names ``contact_id`` (any case, braces ignored)."""
    if value == contact_id:
        return True  # the common case, without parsing
    if not isinstance(value, str):
        return False
    try:
        return canonical_guid(value) == contact_id
    except ValueError:
        return False


def _entry_json(entry: EntryView) -> dict[str, Any]:
    return {
        "name": entry.name,
        "kind": entry.kind,
        "sha256": entry.sha256,
        "bytes": entry.bytes,
        "rows": entry.rows,
        "pages": entry.pages,
    }


def build_manifest(
    view: DossierView, *, readme: MemberHash, index: MemberHash, tool_version: str
) -> dict[str, Any]:
    """The manifest as a dict, keys in the documented order, parts grouped by source."""
    sources: list[dict[str, Any]] = []
    # Each part's rows counted once here (PartView.rows sums its entries at every call).
    total_rows = total_interactions = 0
    # Most parts of a contact have no entry and no notes (40 interaction types, a few with
    # data): those skip the work that would only give 0, [] and {}.
    group: list[dict[str, Any]] = []
    group_source = None
    for part_view in view.parts:
        part = part_view.part
        source = part.source
        entries = part_view.entries
        rows = sum(e.rows or 0 for e in entries) if entries else 0  # PartView.rows
        total_rows += rows
        if source == INTERACTIONS:
            total_interactions += rows
        if source != group_source:
            group, group_source = [], source
            sources.append({"source": source, "parts": group})
        notes = part_view.notes
        group.append(
            {
                "part": part.name,
                "key": part.key,
                "status": "complete",
                "pages": part_view.pages,
                "rows": rows,
                "entries": [_entry_json(e) for e in entries] if entries else [],
                "notes": dict(sorted(notes.items())) if notes else {},
            }
        )
    return {
        "schema": SCHEMA,
        "contact_id": view.contact_id,
        "generated_at": view.generated_at,
        "tool": {"name": TOOL_NAME, "version": tool_version},
        "question": view.question.as_json(),
        "readme": readme.as_json(),
        "index": index.as_json(),
        "sources": sources,
        "total_interactions": total_interactions,
        "total_rows": total_rows,
    }


def manifest_bytes(manifest: Mapping[str, Any]) -> bytes:
    """Indented so that a person can read it; a final newline like any text file."""
    return orjson.dumps(manifest, option=orjson.OPT_INDENT_2) + b"\n"
