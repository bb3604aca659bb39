"""Check that a dossier is complete and unchanged, and the ``verify`` command around it.

Anyone who receives a dossier (the data subject, an auditor, the organisation before sending it)
can run ``sar-bulk verify`` to learn whether it is exactly what sar-bulk wrote. Strict: the file
must have exactly the layout the writer makes, so anything added, removed or changed is named.

- Layout: the file starts with the first member's local header and ends with the end of
  central directory record, with no zip comment; members follow one another with nothing in
  between, the central directory lists exactly them, in order: README.txt, manifest.json, then
  the entries in the order the manifest lists them. Every member's CRC holds (each is read to
  its end in the same single pass that hashes it).
- ``manifest.json`` follows its schema (``sar-bulk/dossier/v2``, or v1 for dossiers written
  before): the question, parts grouped by source in their fixed order, entries with names their
  part may write, counts that add up; every asked interaction type and source has its part.
- Every member but the manifest matches its sha256 and size in the manifest (v1 has no hash of
  README.txt, so there it must be byte for byte the README its manifest produces); row counts
  match line counts; every interaction's ``ContactId`` (any case, braces ignored) is the
  manifest's contact; the file is named after the contact.
- ``verify_dossier(path, expected_sha256=...)`` also compares the whole file's sha256 (the one
  the writer's summary gave, or the sender's): the only check that covers manifest.json itself.

Memory stays bounded however big an entry is: entries are read in 256 KiB chunks and, because
rows are one per line, parsed one line at a time. An entry laid out differently is reported as a
problem rather than loaded whole.

Usage::

    result = verify_dossier(path, expected_sha256=summary.sha256)
    if not result.ok: print(result.problems)
    result.question          # what the dossier answers (v2 form, also for v1)
"""

from __future__ import annotations

import hashlib
import re
import struct
import zipfile
import zlib
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any, Final, Literal, TextIO, TypeGuard

import orjson

from sar_bulk.dossier import format_v1
from sar_bulk.dossier.format import (
    INTERACTIONS,
    MANIFEST_NAME,
    PARTIAL_PREFIX,
    README_NAME,
    SCHEMA,
    PartRef,
    contact_matches,
    dossier_file_name,
    entry_problem,
    part_order,
    source_problem,
)
from sar_bulk.guids import is_canonical_guid
from sar_bulk.sources.interaction_types import ALL_TYPES, InteractionType

__all__ = [
    "VerifyResult",
    "file_sha256",
    "iter_dossiers",
    "run_verify_command",
    "verify_dossier",
]

EXIT_VALID: Final = 0
EXIT_INVALID: Final = 1
EXIT_USAGE: Final = 2

_CHUNK: Final = 256 << 10
_MAX_TEXT_MEMBER: Final = 4 << 20  # README and manifest are a few kB; more is not a dossier
_MAX_MANIFEST: Final = 64 << 20  # v2 lists parts and notes: larger, still bounded
_MAX_LINE: Final = 16 << 20  # one row is a few kB; a longer line is not our layout
# What a damaged or hostile zip can raise while it is read.
_ZIP_ERRORS: Final = (
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
    zlib.error,
    EOFError,
    OSError,
    NotImplementedError,
    RuntimeError,
    ValueError,
    struct.error,
)
_TOP_FIELDS: Final = (
    "schema",
    "contact_id",
    "generated_at",
    "tool",
    "source",
    "interactions",
    "total_interactions",
)
_TOP_FIELDS_V2: Final = (
    "schema",
    "contact_id",
    "generated_at",
    "tool",
    "question",
    "readme",
    "sources",
    "total_interactions",
    "total_rows",
)
_QUESTION_FIELDS: Final = (
    "org_url",
    "sources",
    "interaction_types",
    "date_from",
    "date_to",
    "custom_tables",
)
_PART_FIELDS: Final = ("part", "key", "status", "pages", "rows", "entries", "notes")
_ENTRY_FIELDS_V2: Final = ("name", "kind", "sha256", "bytes", "rows", "pages")
_SOURCE_FIELDS: Final = ("org_url", "action", "date_from", "date_to")
_ENTRY_FIELDS: Final = ("interaction_type", "count", "pages", "path", "sha256", "bytes")
_GENERATED_AT: Final = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")
_WIRE_DATE: Final = re.compile(r"^\d{2}-\d{2}-\d{4}$")
_SHA256: Final = re.compile(r"^[0-9a-f]{64}$")
_CANONICAL_INDEX: Final = {t.value: i for i, t in enumerate(ALL_TYPES)}
ACTION: Final = format_v1.ACTION
entry_name = format_v1.entry_name

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

Layout = Literal["array", "lines", "file"]


@dataclass(frozen=True, slots=True)
class VerifyResult:
    """The verdict on one file; ``problems`` is empty exactly when ``ok``."""

    path: Path
    ok: bool
    contact_id: str | None
    total_interactions: int | None
    problems: tuple[str, ...]
    # What the dossier answers (from its manifest), so a caller can compare without re-reading:
    # ``source`` holds org_url, date_from and date_to (v1's shape, also for v2), and
    # ``question`` the v2 question (derived for v1: sources ["interactions"], no tables).
    source: Mapping[str, Any] | None = None
    interaction_types: tuple[str, ...] = ()
    schema: str | None = None
    question: Mapping[str, Any] | None = None
    sha256: str | None = None  # of the whole file, when expected_sha256 was given


@dataclass(frozen=True, slots=True)
class _Entry:
    """What the manifest promises about one entry."""

    layout: Layout
    count: int | None  # rows; None for a verbatim file
    sha256: str
    bytes: int


@dataclass(frozen=True, slots=True)
class _Manifest:
    contact_id: str | None
    total_interactions: int | None
    entries: dict[str, _Entry]  # by member name, in member order
    source: Mapping[str, Any] | None = None
    interaction_types: tuple[str, ...] = ()
    schema: str | None = None
    question: Mapping[str, Any] | None = None
    readme: _Entry | None = None  # v2 only
    raw: Mapping[str, Any] = field(default_factory=dict)


_NO_MANIFEST: Final = _Manifest(None, None, {})


def _is_count(value: object, minimum: int = 0) -> TypeGuard[int]:
    return type(value) is int and value >= minimum  # bool is an int subclass: not a count


def _is_sha(value: object) -> TypeGuard[str]:
    return isinstance(value, str) and bool(_SHA256.match(value))


def _reason(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


def file_sha256(path: Path) -> str:
    """The sha256 of a whole file, read in chunks (never held whole)."""
    sha = hashlib.sha256()
    with open(path, "rb") as stream:
        while chunk := stream.read(_CHUNK):
            sha.update(chunk)
    return sha.hexdigest()


class _Fields:
    """Shared field checks of both manifest schemas; appends one problem per broken rule."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems

    def _fields(self, where: str, value: object, fields: tuple[str, ...]) -> dict[str, Any] | None:
        if not isinstance(value, dict):
            self.problems.append(f"manifest: {where} is not an object")
            return None
        missing = [f for f in fields if f not in value]
        extra = sorted(str(f) for f in value if f not in fields)
        if missing:
            self.problems.append(f"manifest: {where} lacks {', '.join(missing)}")
        if extra:
            self.problems.append(f"manifest: {where} has unexpected field(s) {', '.join(extra)}")
        return value

    def _common(self, top: dict[str, Any], schema: str) -> str | None:
        """schema, contact_id, generated_at and tool; returns the contact when well formed."""
        if top.get("schema") != schema:
            self.problems.append(f"manifest: schema is not {schema!r}")
        contact_id = top.get("contact_id")
        if not isinstance(contact_id, str) or not is_canonical_guid(contact_id):
            self.problems.append("manifest: contact_id is not a lower-case canonical GUID")
            contact_id = None
        self._generated_at(top.get("generated_at"))
        tool = self._fields("tool", top.get("tool"), ("name", "version"))
        if tool is not None and not all(isinstance(tool.get(k), str) for k in ("name", "version")):
            self.problems.append("manifest: tool name and version must be strings")
        return contact_id

    def _generated_at(self, value: object) -> None:
        try:
            ok = isinstance(value, str) and bool(_GENERATED_AT.match(value))
            if ok:
                datetime.strptime(str(value), "%Y-%m-%dT%H:%M:%SZ")
        except ValueError:
            ok = False
        if not ok:
            self.problems.append(
                "manifest: generated_at is not a UTC time like 2024-01-31T12:00:00Z"
            )

    def _dates(self, where: str, holder: Mapping[str, Any]) -> None:
        for name in ("date_from", "date_to"):
            date = holder.get(name)
            if date is not None and not (isinstance(date, str) and _WIRE_DATE.match(date)):
                self.problems.append(f"manifest: {where}.{name} is neither null nor MM-DD-YYYY")


class _ManifestCheckV1(_Fields):
    """Schema checks of a v1 manifest.json."""

    def run(self, manifest: object) -> _Manifest:
        top = self._fields("the top level", manifest, _TOP_FIELDS)
        if top is None:
            return _NO_MANIFEST
        contact_id = self._common(top, format_v1.SCHEMA)
        source = self._source(top.get("source"))
        listed = top.get("interactions")
        entries, counted = self._interactions(listed)
        total = top.get("total_interactions")
        if not _is_count(total):
            self.problems.append("manifest: total_interactions is not a whole number >= 0")
            total = None
        elif counted is not None and total != counted:
            self.problems.append(
                f"manifest: total_interactions is {total} but the counts add up to {counted}"
            )
        types = tuple(
            row["interaction_type"]
            for row in (listed if isinstance(listed, list) else [])
            if isinstance(row, dict) and isinstance(row.get("interaction_type"), str)
        )
        question = None
        if source is not None:
            question = {
                "org_url": source.get("org_url"),
                "sources": [INTERACTIONS],
                "interaction_types": list(types),
                "date_from": source.get("date_from"),
                "date_to": source.get("date_to"),
                "custom_tables": [],
            }
        return _Manifest(
            contact_id, total, entries, source, types, format_v1.SCHEMA, question, None, top
        )

    def _source(self, value: object) -> dict[str, Any] | None:
        source = self._fields("source", value, _SOURCE_FIELDS)
        if source is None:
            return None
        if not isinstance(source.get("org_url"), str):
            self.problems.append("manifest: source.org_url is not a string")
        if source.get("action") != ACTION:
            self.problems.append(f"manifest: source.action is not {ACTION!r}")
        self._dates("source", source)
        return source

    def _interactions(self, value: object) -> tuple[dict[str, _Entry], int | None]:
        """Entries by member name, and the sum of the counts (None if any count is broken)."""
        if not isinstance(value, list) or not value:
            self.problems.append("manifest: interactions is not a non-empty list")
            return {}, None
        entries: dict[str, _Entry] = {}
        total: int | None = 0
        last = -1
        for number, raw in enumerate(value):
            row = self._fields(f"interactions[{number}]", raw, _ENTRY_FIELDS)
            if row is None:
                total = None
                continue
            name = row.get("interaction_type")
            where = f"interactions[{number}] ({name})"
            index = _CANONICAL_INDEX.get(name) if isinstance(name, str) else None
            if index is None:
                self.problems.append(f"manifest: interactions[{number}] names no interaction type")
            elif index <= last:
                self.problems.append(f"manifest: {where} is repeated or out of canonical order")
            else:
                last = index
            count = row.get("count")
            if not _is_count(count):
                self.problems.append(f"manifest: {where} count is not a whole number >= 0")
                total = None
            elif total is not None:
                total += count
            if not _is_count(row.get("pages"), 1):
                self.problems.append(f"manifest: {where} pages is not a whole number >= 1")
            if index is not None and _is_count(count):
                entry = self._entry(where, ALL_TYPES[index], count, row)
                if entry is not None:
                    entries[entry_name(ALL_TYPES[index])] = entry
        return entries, total

    def _entry(
        self, where: str, kind: InteractionType, count: int, row: dict[str, Any]
    ) -> _Entry | None:
        path, sha, size = row.get("path"), row.get("sha256"), row.get("bytes")
        if count == 0:
            if path is not None or sha is not None or size != 0:
                self.problems.append(
                    f"manifest: {where} has count 0, so path and sha256 must be null and bytes 0"
                )
            return None
        broken = False
        if path != entry_name(kind):
            self.problems.append(f"manifest: {where} path must be {entry_name(kind)!r}")
            broken = True
        if not isinstance(sha, str) or not _SHA256.match(sha):
            self.problems.append(f"manifest: {where} sha256 is not 64 lower-case hex digits")
            broken = True
        if not _is_count(size, 1):
            self.problems.append(f"manifest: {where} bytes is not a whole number >= 1")
            broken = True
        if broken:
            return None
        assert isinstance(sha, str)
        assert isinstance(size, int)
        return _Entry("array", count, sha, size)


class _ManifestCheckV2(_Fields):
    """Schema checks of a v2 manifest.json."""

    def run(self, manifest: object) -> _Manifest:
        top = self._fields("the top level", manifest, _TOP_FIELDS_V2)
        if top is None:
            return _NO_MANIFEST
        contact_id = self._common(top, SCHEMA)
        question = self._question(top.get("question"))
        readme = self._readme(top.get("readme"))
        entries, interactions, rows = self._sources(top.get("sources"), question)
        total = top.get("total_interactions")
        if not _is_count(total):
            self.problems.append("manifest: total_interactions is not a whole number >= 0")
            total = None
        elif interactions is not None and total != interactions:
            self.problems.append(
                f"manifest: total_interactions is {total} but the interactions add up to "
                f"{interactions}"
            )
        total_rows = top.get("total_rows")
        if not _is_count(total_rows):
            self.problems.append("manifest: total_rows is not a whole number >= 0")
        elif rows is not None and total_rows != rows:
            self.problems.append(
                f"manifest: total_rows is {total_rows} but the rows add up to {rows}"
            )
        source = None
        types: tuple[str, ...] = ()
        if question is not None:
            source = {k: question.get(k) for k in ("org_url", "date_from", "date_to")}
            raw_types = question.get("interaction_types")
            types = (
                tuple(t for t in raw_types if isinstance(t, str))
                if isinstance(raw_types, list)
                else ()
            )
        return _Manifest(contact_id, total, entries, source, types, SCHEMA, question, readme, top)

    def _question(self, value: object) -> dict[str, Any] | None:
        question = self._fields("question", value, _QUESTION_FIELDS)
        if question is None:
            return None
        if not isinstance(question.get("org_url"), str):
            self.problems.append("manifest: question.org_url is not a string")
        self._dates("question", question)
        sources = question.get("sources")
        if (
            not isinstance(sources, list)
            or not sources
            or not all(isinstance(s, str) and source_problem(s) is None for s in sources)
            or len(set(sources)) != len(sources)
        ):
            self.problems.append(
                "manifest: question.sources is not a list of distinct source names"
            )
        types = question.get("interaction_types")
        if (
            not isinstance(types, list)
            or not all(isinstance(t, str) and t in _CANONICAL_INDEX for t in types)
            or len(set(types)) != len(types)
        ):
            self.problems.append(
                "manifest: question.interaction_types is not a list of distinct interaction types"
            )
        tables = question.get("custom_tables")
        if not isinstance(tables, list) or not all(isinstance(t, str) for t in tables):
            self.problems.append("manifest: question.custom_tables is not a list of names")
        return question

    def _readme(self, value: object) -> _Entry | None:
        readme = self._fields("readme", value, ("name", "sha256", "bytes"))
        if readme is None:
            return None
        sha, size = readme.get("sha256"), readme.get("bytes")
        if readme.get("name") != README_NAME or not _is_sha(sha) or not _is_count(size, 1):
            self.problems.append(
                f"manifest: readme must name {README_NAME} with its sha256 and bytes"
            )
            return None
        return _Entry("file", None, sha, size)

    def _sources(
        self, value: object, question: Mapping[str, Any] | None
    ) -> tuple[dict[str, _Entry], int | None, int | None]:
        """Entries by member name in member order, and the interactions and rows they hold."""
        if not isinstance(value, list) or not value:
            self.problems.append("manifest: sources is not a non-empty list")
            return {}, None, None
        entries: dict[str, _Entry] = {}
        interactions: int | None = 0
        rows: int | None = 0
        last: PartRef | None = None
        seen: dict[str, set[str]] = {}
        for number, raw in enumerate(value):
            group = self._fields(f"sources[{number}]", raw, ("source", "parts"))
            if group is None:
                interactions = rows = None
                continue
            source = group.get("source")
            if not isinstance(source, str) or source_problem(source) is not None:
                self.problems.append(f"manifest: sources[{number}] names no source")
                interactions = rows = None
                continue
            parts = group.get("parts")
            if not isinstance(parts, list) or not parts:
                self.problems.append(f"manifest: source {source} has no parts")
                continue
            for raw_part in parts:
                part, counted = self._part(source, raw_part, entries)
                if part is None or counted is None:
                    interactions = rows = None
                    continue
                if last is not None and part_order(part) <= part_order(last):
                    self.problems.append(f"manifest: part {part.key} is repeated or out of order")
                last = part
                seen.setdefault(source, set()).add(part.name)
                if rows is not None:
                    rows += counted
                if interactions is not None and source == INTERACTIONS:
                    interactions += counted
        if question is not None:
            self._answers(question, seen)
        return entries, interactions, rows

    def _answers(self, question: Mapping[str, Any], seen: dict[str, set[str]]) -> None:
        """Every asked source has parts, no other source has; every asked type has its part."""
        asked = question.get("sources")
        if isinstance(asked, list):
            for source in asked:
                if source not in seen:
                    self.problems.append(f"manifest: asked source {source} has no part")
            for source in sorted(set(seen) - set(asked)):
                self.problems.append(f"manifest: source {source} was not asked")
        types = question.get("interaction_types")
        if isinstance(types, list) and INTERACTIONS in seen:
            listed = seen[INTERACTIONS]
            missing = [t for t in types if t not in listed]
            extra = sorted(listed - set(types))
            if missing:
                self.problems.append(
                    f"manifest: asked interaction types lack a part: {', '.join(missing)}"
                )
            if extra:
                self.problems.append(f"manifest: parts of types not asked: {', '.join(extra)}")

    def _part(
        self, source: str, raw: object, entries: dict[str, _Entry]
    ) -> tuple[PartRef | None, int | None]:
        row = self._fields(f"a part of {source}", raw, _PART_FIELDS)
        if row is None:
            return None, None
        name = row.get("part")
        if not isinstance(name, str) or not name:
            self.problems.append(f"manifest: a part of {source} has no name")
            return None, None
        part = PartRef(source, name)
        where = f"part {part.key}"
        if source == INTERACTIONS and name not in _CANONICAL_INDEX:
            self.problems.append(f"manifest: {where} names no interaction type")
            return None, None
        if row.get("key") != part.key:
            self.problems.append(f"manifest: {where} key must be {part.key!r}")
        if row.get("status") != "complete":
            self.problems.append(f"manifest: {where} status is not 'complete'")
        if not _is_count(row.get("pages")):
            self.problems.append(f"manifest: {where} pages is not a whole number >= 0")
        if not isinstance(row.get("notes"), dict):
            self.problems.append(f"manifest: {where} notes is not an object")
        listed = row.get("entries")
        if not isinstance(listed, list):
            self.problems.append(f"manifest: {where} entries is not a list")
            return part, None
        counted: int | None = 0
        previous = ""
        for raw_entry in listed:
            entry, name_ = self._entry(part, raw_entry)
            if entry is None or name_ is None:
                counted = None
                continue
            if name_ in entries:
                self.problems.append(f"manifest: entry {name_!r} is listed twice")
            elif name_ <= previous:
                self.problems.append(f"manifest: entry {name_!r} of {where} is out of order")
            previous = name_
            entries[name_] = entry
            if counted is not None:
                counted += entry.count or 0
        rows = row.get("rows")
        if not _is_count(rows):
            self.problems.append(f"manifest: {where} rows is not a whole number >= 0")
        elif counted is not None and rows != counted:
            self.problems.append(f"manifest: {where} rows is {rows} but its entries hold {counted}")
        return part, counted

    def _entry(self, part: PartRef, raw: object) -> tuple[_Entry | None, str | None]:
        row = self._fields(f"an entry of part {part.key}", raw, _ENTRY_FIELDS_V2)
        if row is None:
            return None, None
        name, kind = row.get("name"), row.get("kind")
        sha, size, rows, pages = (row.get(k) for k in ("sha256", "bytes", "rows", "pages"))
        if not isinstance(name, str) or kind not in ("rows", "file"):
            self.problems.append(f"manifest: an entry of part {part.key} lacks a name or kind")
            return None, None
        where = f"entry {name!r}"
        problem = entry_problem(part, name, kind)
        broken = False
        if problem is not None:
            self.problems.append(f"manifest: {problem}")
            broken = True
        if not _is_sha(sha):
            self.problems.append(f"manifest: {where} sha256 is not 64 lower-case hex digits")
            broken = True
        if kind == "rows":
            if not (_is_count(rows, 1) and _is_count(pages, 1) and _is_count(size, 1)):
                self.problems.append(
                    f"manifest: {where} rows, pages and bytes must be whole numbers >= 1"
                )
                broken = True
        elif rows is not None or pages is not None or not _is_count(size):
            self.problems.append(
                f"manifest: {where} is a file: rows and pages must be null, bytes >= 0"
            )
            broken = True
        if broken:
            return None, name
        assert _is_sha(sha)
        assert _is_count(size)
        if kind == "file":
            return _Entry("file", None, sha, size), name
        assert _is_count(rows)
        layout: Layout = "array" if part.source == INTERACTIONS else "lines"
        return _Entry(layout, rows, sha, size), name


class _ArrayLines:
    """Parses a v1 entry one line at a time: ``[``, one object per line, ``]``."""

    __slots__ = ("contact_id", "count", "error", "foreign", "line", "more", "non_objects", "state")

    def __init__(self, contact_id: str | None) -> None:
        self.contact_id = contact_id
        self.state = 0  # 0: before "[", 1: inside, 2: after "]"
        self.count = 0
        self.foreign = 0
        self.non_objects = 0
        self.more = False  # the last object ended with a comma: another must follow
        self.line = 0
        self.error: str | None = None

    def feed(self, raw: bytes) -> None:
        self.line += 1
        line = raw.rstrip(b" \t\r")
        if not line:
            return  # whitespace between JSON tokens is allowed
        if self.state == 1:
            if line == b"]":
                self.state = 2
                if self.more:
                    self.error = f"a comma before the closing ] (line {self.line})"
                return
            self._item(line)
        elif self.state == 0 and line == b"[":
            self.state = 1
        else:
            where = "before the opening [" if self.state == 0 else "after the closing ]"
            self.error = f"unexpected content {where} (line {self.line})"

    def _item(self, line: bytes) -> None:
        if self.count and not self.more:
            self.error = f"a missing comma before line {self.line}"
            return
        self.more = line.endswith(b",")
        try:
            item = orjson.loads(line[:-1] if self.more else line)
        except orjson.JSONDecodeError:
            self.error = f"line {self.line} is not one whole JSON value (v1 puts one per line)"
            return
        self.count += 1
        if type(item) is not dict:
            self.non_objects += 1
        elif self.contact_id is not None and not contact_matches(
            item.get("ContactId"), self.contact_id
        ):
            self.foreign += 1

    def finish(self) -> None:
        if self.error is None and self.state != 2:
            self.error = "it does not end with a closing ]"


class _JsonLines:
    """Parses a JSON-lines entry one line at a time: one JSON object per line, each ended."""

    __slots__ = ("count", "error", "line", "non_objects")

    def __init__(self) -> None:
        self.count = 0
        self.non_objects = 0
        self.line = 0
        self.error: str | None = None

    def feed(self, raw: bytes) -> None:
        self.line += 1
        try:
            item = orjson.loads(raw)
        except orjson.JSONDecodeError:
            self.error = f"line {self.line} is not one whole JSON value (one row per line)"
            return
        self.count += 1
        if type(item) is not dict:
            self.non_objects += 1

    def finish(self, rest: bytes) -> None:
        if self.error is None and rest:
            self.error = "its last line does not end with a newline"


def _layout_problems(
    stream: IO[bytes], infos: Sequence[zipfile.ZipInfo], start_dir: int
) -> list[str]:
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
    cd_size, cd_offset = struct.unpack("<LL", tail[at + 12 : at + 20])
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
        cd_size, cd_offset = struct.unpack("<QQ", record[40:56])
        cd_end = record_at
    if cd_offset != start_dir or cd_offset + cd_size != cd_end:
        problems.append("the central directory is not where its end record says")
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
        position += _LOCAL_SIZE + name_len + extra_len + info.compress_size
        if flags & _DATA_DESCRIPTOR_FLAG:
            stream.seek(position)
            if stream.read(4) != _DESCRIPTOR:
                problems.append(f"member {info.filename!r} lacks its data descriptor")
                return problems
            position += 24 if _has_zip64_extra(extra) else 16
    if position != start_dir:
        problems.append("there are bytes between the last member and the central directory")
    return problems


def _has_zip64_extra(extra: bytes) -> bool:
    while len(extra) >= 4:
        tag, length = struct.unpack("<HH", extra[:4])
        if tag == 0x0001:
            return True
        extra = extra[4 + length :]
    return False


class _Checker:
    """One pass over one open zip, collecting problems."""

    def __init__(self, archive: zipfile.ZipFile, path: Path) -> None:
        self.archive = archive
        self.path = path
        self.problems: list[str] = []

    def run(self) -> _Manifest:
        infos = self.archive.infolist()
        names = Counter(info.filename for info in infos)
        for name, seen in names.items():
            if seen > 1:
                self.problems.append(f"member {name!r} appears {seen} times")
        before = len(self.problems)
        manifest = self._manifest(names)
        manifest_ok = len(self.problems) == before
        if manifest.contact_id is not None:
            expected_name = dossier_file_name(manifest.contact_id)
            if self.path.name != expected_name:
                self.problems.append(
                    f"file is named {self.path.name!r} but holds contact {manifest.contact_id} "
                    f"(expected {expected_name!r})"
                )
        wanted = [README_NAME, MANIFEST_NAME, *manifest.entries]
        missing = sorted(set(wanted) - set(names))
        unexpected = sorted(set(names) - set(wanted))
        self.problems.extend(f"member {n!r} is missing" for n in missing)
        self.problems.extend(f"unexpected member {n!r}" for n in unexpected)
        if not (missing or unexpected) and [i.filename for i in infos] != wanted:
            self.problems.append(
                "members are not in the writer's order (README.txt, manifest.json, then the "
                "entries as the manifest lists them)"
            )
        done: set[str] = set()
        for info in infos:
            if info.filename in done:
                continue
            done.add(info.filename)
            if info.filename == MANIFEST_NAME:
                continue  # already read in full, which checked its CRC
            if info.filename == README_NAME:
                self._readme(info, manifest, manifest_ok)
            elif info.filename in manifest.entries:
                self._entry(info, manifest.entries[info.filename], manifest.contact_id)
            else:
                self._drain(info)
        return manifest

    def _read_text_member(self, info: zipfile.ZipInfo, limit: int) -> bytes | None:
        if info.file_size > limit:
            self.problems.append(f"{info.filename} is too large ({info.file_size} bytes)")
            return None
        try:
            return self.archive.read(info)
        except _ZIP_ERRORS as exc:
            self.problems.append(f"{info.filename} is damaged: {_reason(exc)}")
            return None

    def _manifest(self, names: Counter[str]) -> _Manifest:
        """The checked manifest; an unreadable one is reported once, not once per field."""
        if MANIFEST_NAME not in names:
            return _NO_MANIFEST  # reported with the other missing members
        data = self._read_text_member(self.archive.getinfo(MANIFEST_NAME), _MAX_MANIFEST)
        if data is None:
            return _NO_MANIFEST
        try:
            parsed = orjson.loads(data)
        except orjson.JSONDecodeError:
            self.problems.append("manifest.json is not valid JSON")
            return _NO_MANIFEST
        if isinstance(parsed, dict) and parsed.get("schema") == format_v1.SCHEMA:
            return _ManifestCheckV1(self.problems).run(parsed)
        return _ManifestCheckV2(self.problems).run(parsed)

    def _readme(self, info: zipfile.ZipInfo, manifest: _Manifest, manifest_ok: bool) -> None:
        if manifest.readme is not None:  # v2: hashed in the manifest like any entry
            self._entry(info, manifest.readme, None)
        data = self._read_text_member(info, _MAX_TEXT_MEMBER)
        if data is None:
            return
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            self.problems.append("README.txt is not UTF-8 text")
            return
        if manifest.contact_id is not None and manifest.contact_id not in text:
            self.problems.append("README.txt does not name the contact of the manifest")
        elif (
            # v1 did not hash its README; it is a function of the manifest, so rebuild it.
            manifest.schema == format_v1.SCHEMA
            and manifest_ok
            and text != format_v1.readme_text(manifest.raw)
        ):
            self.problems.append("README.txt is not the one its manifest produces (changed)")

    def _drain(self, info: zipfile.ZipInfo) -> None:
        """Read a member to its end so that a damaged one is reported too."""
        try:
            with self.archive.open(info) as member:
                while member.read(_CHUNK):
                    pass
        except _ZIP_ERRORS as exc:
            self.problems.append(f"{info.filename} is damaged: {_reason(exc)}")

    def _entry(self, info: zipfile.ZipInfo, entry: _Entry, contact_id: str | None) -> None:
        name = info.filename
        sha = hashlib.sha256()
        size = 0
        lines: _ArrayLines | _JsonLines | None = None
        if entry.layout == "array":
            lines = _ArrayLines(contact_id)
        elif entry.layout == "lines":
            lines = _JsonLines()
        pending = b""
        try:
            with self.archive.open(info) as member:
                while chunk := member.read(_CHUNK):
                    sha.update(chunk)
                    size += len(chunk)
                    if lines is None or lines.error is not None:
                        continue  # keep hashing; the layout is already reported
                    parts = (pending + chunk).split(b"\n")
                    pending = parts.pop()
                    for part in parts:
                        lines.feed(part)
                        if lines.error is not None:
                            break  # the first broken line is the one to name
                    if len(pending) > _MAX_LINE:
                        lines.error = f"a line longer than {_MAX_LINE} bytes"
        except _ZIP_ERRORS as exc:
            self.problems.append(f"{name} is damaged: {_reason(exc)}")
            return
        if size != entry.bytes:
            self.problems.append(f"{name} has {size} bytes, the manifest says {entry.bytes}")
        if sha.hexdigest() != entry.sha256:
            self.problems.append(f"{name} does not match its sha256 in the manifest")
        if isinstance(lines, _ArrayLines):
            if lines.error is None:
                if pending:
                    lines.feed(pending)
                lines.finish()
            self._rows(name, lines, entry, "is not a JSON array of one object per line")
            if lines.error is None and lines.foreign:
                self.problems.append(
                    f"{name} holds {lines.foreign} interaction(s) whose ContactId is missing or "
                    "names another contact"
                )
        elif isinstance(lines, _JsonLines):
            if lines.error is None:
                lines.finish(pending)
            self._rows(name, lines, entry, "is not JSON lines")

    def _rows(self, name: str, lines: _ArrayLines | _JsonLines, entry: _Entry, layout: str) -> None:
        if lines.error is not None:
            self.problems.append(f"{name} {layout}: {lines.error}")
            return
        if lines.count != entry.count:
            what = "interactions" if isinstance(lines, _ArrayLines) else "rows"
            self.problems.append(
                f"{name} holds {lines.count} {what}, the manifest says {entry.count}"
            )
        if lines.non_objects:
            self.problems.append(f"{name} holds {lines.non_objects} value(s) that are not objects")


def verify_dossier(path: Path, expected_sha256: str | None = None) -> VerifyResult:
    """Check one dossier file; never raises for a bad file (that is what ``problems`` says).

    With ``expected_sha256`` the whole file's sha256 must be that too (and is returned).
    """
    path = Path(path)
    problems: list[str] = []
    digest: str | None = None
    try:
        if expected_sha256 is not None:
            digest = file_sha256(path)
            if digest != expected_sha256.lower():
                problems.append("the file's sha256 is not the expected one (it was changed)")
        with open(path, "rb") as stream:
            archive = zipfile.ZipFile(stream)
            with archive:
                problems.extend(_layout_problems(stream, archive.infolist(), archive.start_dir))
                checker = _Checker(archive, path)
                manifest = checker.run()
    except _ZIP_ERRORS as exc:
        problems.append(f"not a readable zip file: {_reason(exc)}")
        return VerifyResult(path, False, None, None, tuple(problems), sha256=digest)
    problems.extend(checker.problems)
    return VerifyResult(
        path,
        not problems,
        manifest.contact_id,
        manifest.total_interactions,
        tuple(problems),
        manifest.source,
        manifest.interaction_types,
        manifest.schema,
        manifest.question,
        digest,
    )


def iter_dossiers(paths: Sequence[Path]) -> Iterator[Path]:
    """The files to verify: each file as given, and the ``*.zip`` directly inside each folder.

    Leftovers of interrupted writes (``.sar-bulk-partial-*``) are not dossiers and are skipped.
    """
    for path in paths:
        if path.is_dir():
            yield from sorted(
                child
                for child in path.iterdir()
                if child.name.endswith(".zip")
                and not child.name.startswith(PARTIAL_PREFIX)
                and child.is_file()
            )
        else:
            yield path


def _result_json(result: VerifyResult) -> dict[str, Any]:
    return {
        "path": str(result.path),
        "ok": result.ok,
        "contact_id": result.contact_id,
        "total_interactions": result.total_interactions,
        "problems": list(result.problems),
    }


def _report(out: TextIO, as_json: bool, results: list[VerifyResult], error: str | None) -> None:
    valid = sum(r.ok for r in results)
    if as_json:
        document = {
            "ok": error is None and valid == len(results),
            "error": error,
            "checked": len(results),
            "valid": valid,
            "invalid": len(results) - valid,
            "dossiers": [_result_json(r) for r in results],
        }
        out.write(orjson.dumps(document, option=orjson.OPT_INDENT_2).decode() + "\n")
    elif error is not None:
        out.write(f"error: {error}\n")
    else:
        out.write(
            f"verified {len(results)} dossier(s): {valid} valid, {len(results) - valid} invalid\n"
        )


def _line(result: VerifyResult) -> str:
    if result.ok:
        return (
            f"ok       {result.path}  contact {result.contact_id}, "
            f"{result.total_interactions} interaction(s)\n"
        )
    return f"INVALID  {result.path}: {'; '.join(result.problems)}\n"


def run_verify_command(paths: Sequence[str], *, as_json: bool, out: TextIO) -> int:
    """``sar-bulk verify PATH...``: exit 0 when all are valid, 1 when any is not, 2 on misuse.

    Misuse is: no path, a path that does not exist, or a folder without a single dossier.
    """
    if not paths:
        _report(out, as_json, [], "give at least one dossier (.zip) or folder of dossiers")
        return EXIT_USAGE
    targets: list[Path] = []
    seen: set[Path] = set()
    for text in paths:
        path = Path(text)
        if not path.exists():
            _report(out, as_json, [], f"{text}: no such file or folder")
            return EXIT_USAGE
        found = list(iter_dossiers([path]))
        if path.is_dir() and not found:
            _report(out, as_json, [], f"{text}: folder holds no dossiers (*.zip)")
            return EXIT_USAGE
        for found_path in found:
            if found_path not in seen:
                seen.add(found_path)
                targets.append(found_path)
    results: list[VerifyResult] = []
    for target in targets:
        result = verify_dossier(target)
        results.append(result)
        if not as_json:
            out.write(_line(result))
    _report(out, as_json, results, None)
    return EXIT_VALID if all(r.ok for r in results) else EXIT_INVALID
