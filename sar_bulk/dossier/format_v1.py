"""The earlier dossier format ``sar-bulk/dossier/v1``, kept so that ``verify`` still checks it.

sar-bulk now writes ``sar-bulk/dossier/v2`` (``format.py``). Dossiers written before keep this
layout; the verifier rebuilds their README.txt from their manifest with ``readme_text`` below and
requires it byte for byte (v1 has no hash of the README), and the tests build v1 fixtures with
``build_manifest``. Nothing here may change: it describes files that already exist.

A dossier is ``<contact-id>.zip`` (lower-case canonical GUID) with these members, in this order:

1. ``README.txt``: a plain-language page for the data subject (UTF-8, CRLF line ends so that any
   text editor shows it properly).
2. ``manifest.json``: what the dossier holds, with the sha256 and size of every entry.
3. ``interactions/<InteractionType>.json`` for each requested type that has interactions, in the
   canonical order of the 40 types.

README and manifest come first so that someone who opens the zip in a file manager sees them at
the top. Every member has the fixed timestamp 1980-01-01 00:00:00, mode 0600 and DEFLATE
compression, so the interaction entries are byte-identical for the same server data.

An interaction entry is a JSON array with **one compact JSON object per line**::

    [
    {"InteractionId":"...","ContactId":"...",...},
    {"InteractionId":"...","ContactId":"...",...}
    ]

That is still plain JSON, it is friendlier to read, and it lets the verifier parse a 500 MB entry
line by line with bounded memory. Compact JSON never holds a raw newline (strings escape it), so
each line is exactly one interaction. The objects are the server's, field for field, in the
server's order across pages.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import orjson

from sar_bulk.dossier.format import MANIFEST_NAME, README_NAME, TOOL_NAME
from sar_bulk.sources.interaction_types import ALL_TYPES, InteractionType

__all__ = [
    "ACTION",
    "ENTRY_CLOSE",
    "ENTRY_OPEN",
    "ENTRY_SEPARATOR",
    "SCHEMA",
    "EntryStats",
    "build_manifest",
    "entry_name",
    "manifest_bytes",
    "readme_text",
]

SCHEMA: Final = "sar-bulk/dossier/v1"
ACTION: Final = "msdyncrm_LoadInteractionsPublic"
ENTRY_FOLDER: Final = "interactions/"

# An entry is ENTRY_OPEN + objects joined by ENTRY_SEPARATOR + ENTRY_CLOSE.
ENTRY_OPEN: Final = b"[\n"
ENTRY_SEPARATOR: Final = b",\n"
ENTRY_CLOSE: Final = b"\n]\n"

_WIRE_DATE = re.compile(r"^(\d{2})-(\d{2})-(\d{4})$")


@dataclass(frozen=True, slots=True)
class EntryStats:
    """What the manifest says about one requested type."""

    interaction_type: InteractionType
    count: int
    pages: int
    sha256: str | None  # of the entry's bytes; None when count is 0 (no entry)
    bytes: int  # size of the entry; 0 when count is 0

    @property
    def path(self) -> str | None:
        return entry_name(self.interaction_type) if self.count else None


def entry_name(interaction_type: InteractionType) -> str:
    """Member name of a type's entry (only ever built from the enum, never from input)."""
    return f"{ENTRY_FOLDER}{InteractionType(interaction_type).value}.json"


def build_manifest(
    *,
    contact_id: str,
    generated_at: str,
    tool_version: str,
    org_url: str,
    date_from: str | None,
    date_to: str | None,
    entries: Sequence[EntryStats],
) -> dict[str, Any]:
    """The manifest as a dict, keys in the documented order, entries in canonical type order."""
    ordered = sorted(entries, key=lambda e: ALL_TYPES.index(e.interaction_type))
    return {
        "schema": SCHEMA,
        "contact_id": contact_id,
        "generated_at": generated_at,
        "tool": {"name": TOOL_NAME, "version": tool_version},
        "source": {
            "org_url": org_url,
            "action": ACTION,
            "date_from": date_from,
            "date_to": date_to,
        },
        "interactions": [
            {
                "interaction_type": e.interaction_type.value,
                "count": e.count,
                "pages": e.pages,
                "path": e.path,
                "sha256": e.sha256,
                "bytes": e.bytes,
            }
            for e in ordered
        ],
        "total_interactions": sum(e.count for e in ordered),
    }


def manifest_bytes(manifest: Mapping[str, Any]) -> bytes:
    """Indented so that a person can read it; a final newline like any text file."""
    return orjson.dumps(manifest, option=orjson.OPT_INDENT_2) + b"\n"


def _readable_day(wire: str) -> str:
    """MM-DD-YYYY (what the action takes) as YYYY-MM-DD, which no reader can misread."""
    match = _WIRE_DATE.match(wire)
    if match is None:
        return wire
    month, day, year = match.groups()
    return f"{year}-{month}-{day}"


def _period(date_from: str | None, date_to: str | None) -> str:
    if date_from and date_to:
        return f"from {_readable_day(date_from)} to {_readable_day(date_to)} (whole days, UTC)"
    if date_from:
        return f"from {_readable_day(date_from)} (whole days, UTC) onwards"
    if date_to:
        return f"up to and including {_readable_day(date_to)} (whole days, UTC)"
    return "everything recorded (no date range was set)"


def readme_text(manifest: Mapping[str, Any]) -> str:
    """README.txt for the data subject, built from the manifest so the two always agree."""
    source = manifest["source"]
    rows = manifest["interactions"]
    width = max(len("Type"), *(len(row["interaction_type"]) for row in rows))
    table = [f"  {'Type':<{width}}  {'Count':>9}  Meaning"]
    for row in rows:
        meaning = InteractionType(row["interaction_type"]).meaning
        table.append(f"  {row['interaction_type']:<{width}}  {row['count']:>9,}  {meaning}")
    table.append(f"  {'Total':<{width}}  {manifest['total_interactions']:>9,}")
    lines = [
        "Your marketing interaction data",
        "===============================",
        "",
        "This file answers a request for a copy of your personal data (a subject access",
        "request, Article 15 GDPR). It holds the marketing interactions that the organisation",
        "below recorded about you in Dynamics 365 Marketing, exactly as that system returned them.",
        "",
        f"Your contact id:  {manifest['contact_id']}",
        f"Period covered:   {_period(source['date_from'], source['date_to'])}",
        f"Organisation:     {source['org_url']}",
        f"Prepared on:      {manifest['generated_at']} (UTC)",
        "",
        "Interactions by type",
        "--------------------",
        "",
        *table,
        "",
        "What is in this file",
        "--------------------",
        "",
        f"  {README_NAME:<28}this page",
        f"  {MANIFEST_NAME:<28}a technical list of the contents, with a sha256 checksum of",
        f"  {'':<28}each file, so anyone can check that nothing was changed",
        f"  {ENTRY_FOLDER + '<Type>.json':<28}your interactions of one type; a file exists only",
        f"  {'':<28}for types that have interactions",
        "",
        "How to open the interaction files",
        "---------------------------------",
        "",
        "The files in the interactions folder are JSON, a plain-text format. Any text editor",
        "(Notepad, TextEdit, gedit) opens them; a web browser such as Firefox shows them as a",
        "readable, foldable tree when you drag a file into its window. Each line between the",
        "opening [ and the closing ] is one interaction. Field names say what they hold, for",
        'example "Timestamp" (when it happened, in UTC) or "EmailAddressUsed".',
        "Spreadsheet programs such as Excel (Data > Get Data > From File > From JSON) can",
        "import them as a table.",
        "",
    ]
    return "\r\n".join(lines)
