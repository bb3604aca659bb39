"""Schema checks of ``manifest.json``, v3, v2 and v1 (a part of ``verify``).

v3 is v2 plus ``index`` (the sha256 and size of index.html), which it must have; v2 is checked
as it was written, without one.

Each rule broken appends one problem in plain words; what the manifest promises about each
member (layout, rows, sha256, bytes) comes back in member order for the content checks.

Usage::

    problems: list[str] = []
    manifest = check_manifest(orjson.loads(data), problems)
    manifest.entries     # {member name: ExpectedEntry}, in the order the members must have
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final, Literal, TypeGuard

from sar_bulk.dossier import format_v1
from sar_bulk.dossier.format import (
    INDEX_NAME,
    INTERACTIONS,
    README_NAME,
    SCHEMA,
    SCHEMA_V2,
    PartRef,
    entry_problem,
    part_order,
    source_problem,
)
from sar_bulk.guids import is_canonical_guid
from sar_bulk.sources.interaction_types import ALL_TYPES, InteractionType

__all__ = ["NO_MANIFEST", "CheckedManifest", "ExpectedEntry", "Layout", "check_manifest"]

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
_TOP_FIELDS_V3: Final = (*_TOP_FIELDS_V2[:6], "index", *_TOP_FIELDS_V2[6:])
_QUESTION_FIELDS: Final = (
    "org_url",
    "sources",
    "interaction_types",
    "date_from",
    "date_to",
    "custom_tables",
    "excluded_tables",
)
_PART_FIELDS: Final = ("part", "key", "status", "pages", "rows", "entries", "notes")
_ENTRY_FIELDS_V2: Final = ("name", "kind", "sha256", "bytes", "rows", "pages")
_SOURCE_FIELDS: Final = ("org_url", "action", "date_from", "date_to")
_ENTRY_FIELDS: Final = ("interaction_type", "count", "pages", "path", "sha256", "bytes")
_GENERATED_AT: Final = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z\Z")
_WIRE_DATE: Final = re.compile(r"^\d{2}-\d{2}-\d{4}\Z")
_SHA256: Final = re.compile(r"^[0-9a-f]{64}\Z")
_CANONICAL_INDEX: Final = {t.value: i for i, t in enumerate(ALL_TYPES)}
ACTION: Final = format_v1.ACTION
entry_name = format_v1.entry_name

Layout = Literal["array", "lines", "file"]


@dataclass(frozen=True, slots=True)
class ExpectedEntry:
    """What the manifest promises about one entry."""

    layout: Layout
    count: int | None  # rows; None for a verbatim file
    sha256: str
    bytes: int


@dataclass(frozen=True, slots=True)
class CheckedManifest:
    contact_id: str | None
    total_interactions: int | None
    entries: dict[str, ExpectedEntry]  # by member name, in member order
    source: Mapping[str, Any] | None = None
    interaction_types: tuple[str, ...] = ()
    schema: str | None = None
    question: Mapping[str, Any] | None = None
    readme: ExpectedEntry | None = None  # v2 and v3
    index: ExpectedEntry | None = None  # v3 only
    raw: Mapping[str, Any] = field(default_factory=dict)
    total_rows: int | None = None  # v2 and v3: every source's rows, interactions among them


NO_MANIFEST: Final = CheckedManifest(None, None, {})


def _is_count(value: object, minimum: int = 0) -> TypeGuard[int]:
    return type(value) is int and value >= minimum  # bool is an int subclass: not a count


def _is_sha(value: object) -> TypeGuard[str]:
    return isinstance(value, str) and bool(_SHA256.match(value))


def check_manifest(parsed: object, problems: list[str]) -> CheckedManifest:
    """Check a parsed manifest against its schema (v1 or v2 when it says so, else v3)."""
    schema = parsed.get("schema") if isinstance(parsed, dict) else None
    if schema == format_v1.SCHEMA:
        return _ManifestCheckV1(problems).run(parsed)
    return _ManifestCheckV2(problems, SCHEMA_V2 if schema == SCHEMA_V2 else SCHEMA).run(parsed)


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

    def run(self, manifest: object) -> CheckedManifest:
        top = self._fields("the top level", manifest, _TOP_FIELDS)
        if top is None:
            return NO_MANIFEST
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
                "excluded_tables": [],
            }
        return CheckedManifest(
            contact_id, total, entries, source, types, format_v1.SCHEMA, question, None, None, top
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

    def _interactions(self, value: object) -> tuple[dict[str, ExpectedEntry], int | None]:
        """Entries by member name, and the sum of the counts (None if any count is broken)."""
        if not isinstance(value, list) or not value:
            self.problems.append("manifest: interactions is not a non-empty list")
            return {}, None
        entries: dict[str, ExpectedEntry] = {}
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
    ) -> ExpectedEntry | None:
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
        return ExpectedEntry("array", count, sha, size)


class _ManifestCheckV2(_Fields):
    """Schema checks of a v3 manifest.json, or of a v2 one (the same without ``index``)."""

    def __init__(self, problems: list[str], schema: str) -> None:
        super().__init__(problems)
        self.schema = schema

    def run(self, manifest: object) -> CheckedManifest:
        v3 = self.schema == SCHEMA
        top = self._fields("the top level", manifest, _TOP_FIELDS_V3 if v3 else _TOP_FIELDS_V2)
        if top is None:
            return NO_MANIFEST
        contact_id = self._common(top, self.schema)
        question = self._question(top.get("question"))
        readme = self._member("readme", README_NAME, top.get("readme"))
        index = self._member("index", INDEX_NAME, top.get("index")) if v3 else None
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
        return CheckedManifest(
            contact_id,
            total,
            entries,
            source,
            types,
            self.schema,
            question,
            readme,
            index,
            top,
            total_rows if _is_count(total_rows) else None,
        )

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
        excluded = question.get("excluded_tables")
        if not isinstance(excluded, list) or not all(isinstance(t, str) for t in excluded):
            self.problems.append("manifest: question.excluded_tables is not a list of names")
        return question

    def _member(self, key: str, name: str, value: object) -> ExpectedEntry | None:
        """``readme`` or ``index``: the name, sha256 and size of README.txt or index.html."""
        member = self._fields(key, value, ("name", "sha256", "bytes"))
        if member is None:
            return None
        sha, size = member.get("sha256"), member.get("bytes")
        if member.get("name") != name or not _is_sha(sha) or not _is_count(size, 1):
            self.problems.append(f"manifest: {key} must name {name} with its sha256 and bytes")
            return None
        return ExpectedEntry("file", None, sha, size)

    def _sources(
        self, value: object, question: Mapping[str, Any] | None
    ) -> tuple[dict[str, ExpectedEntry], int | None, int | None]:
        """Entries by member name in member order, and the interactions and rows they hold."""
        if not isinstance(value, list) or not value:
            self.problems.append("manifest: sources is not a non-empty list")
            return {}, None, None
        entries: dict[str, ExpectedEntry] = {}
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
        self, source: str, raw: object, entries: dict[str, ExpectedEntry]
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

    def _entry(self, part: PartRef, raw: object) -> tuple[ExpectedEntry | None, str | None]:
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
            return ExpectedEntry("file", None, sha, size), name
        assert _is_count(rows)
        layout: Layout = "array" if part.source == INTERACTIONS else "lines"
        return ExpectedEntry(layout, rows, sha, size), name
