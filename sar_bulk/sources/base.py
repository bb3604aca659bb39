"""The source seam: what a source of a contact's data must provide, and what it is given.

Usage::

    source = registry.build("records", deps)         # one per run
    for part in source.parts():                       # e.g. Part("records", "records")
        await source.fetch(scope, part, writer.sink(part))

A *source* is one place the org keeps data about a person: the seed's action
(``interactions``, one part per interaction type), the contact's Dataverse rows (``records``)
and real-time journeys' subject-request export (``realtime``). The engine fans out over
(contact, part); every part of a contact must succeed for its dossier to be written.

A source is given everything it shares with the others (``SourceDeps``: the identity's
throttled, retried HTTP access to the org, the run's settings, the clock) and, per contact,
a ``ContactScope``: a single-flight memo shared by the contact's parts (so the contact's row is
fetched once even when two sources need its e-mail addresses), durable notes that survive a
restart (so a resumed run waits for the export request it already created instead of creating
another), and ``parked()``, which a part wraps around a long wait so that waiting holds no slot
of the contact window.

What a part found goes into a ``PartSink`` (the dossier writer's view of that one part):
JSON rows exactly as the org sent them, verbatim files, and facts for the manifest. A part
fails by raising: a ``DataverseError`` or ``DossierError`` (or ``SourceError``) fails this
contact with its message as the reason; a ``RunStopper`` stops the run.

Adding a source touches its own module and one line in ``registry.py``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Protocol, TypeVar

from sar_bulk.dataverse.fetcher import Fetcher
from sar_bulk.dataverse.http import OrgHttp
from sar_bulk.dates import DateRange
from sar_bulk.sources.interaction_types import InteractionType

__all__ = [
    "Availability",
    "ContactScope",
    "CustomTable",
    "JsonValue",
    "Part",
    "PartSink",
    "Probe",
    "Source",
    "SourceDeps",
    "SourceSettings",
]

_T = TypeVar("_T")

JsonValue = None | bool | int | float | str | Sequence["JsonValue"] | Mapping[str, "JsonValue"]


@dataclass(frozen=True, slots=True, order=True)
class Part:
    """One unit of work for one contact: ``source`` and the part's own ``name``.

    ``key`` names it in the state, the report and failure reasons (``interactions/EmailSent``,
    ``records``, ``realtime``).
    """

    source: str
    name: str

    @property
    def key(self) -> str:
        return self.source if self.name == self.source else f"{self.source}/{self.name}"


@dataclass(frozen=True, slots=True)
class CustomTable:
    """A table the operator names in the config: stored as ``records/<name>.json``.

    ``filter`` is an OData ``$filter`` template; ``{contact_id}`` is replaced by the contact's
    GUID, and a template using ``{email}`` or ``{phone}`` is run once per e-mail or phone of the
    contact (values quoted and escaped for OData before they are put in).
    """

    name: str
    entity_set: str
    filter: str


@dataclass(frozen=True, slots=True)
class SourceSettings:
    """The run's settings that sources read (one value, from ``RunConfig``)."""

    dates: DateRange = field(default_factory=DateRange)
    interaction_types: tuple[InteractionType, ...] = ()
    page_size: int | None = None  # the action's Top
    max_pages: int = 10_000
    odata_page_size: int = 5000  # Prefer: odata.maxpagesize
    custom_tables: tuple[CustomTable, ...] = ()
    excluded_tables: frozenset[str] = frozenset()  # tables the operator chose not to export
    realtime_wait: float = 6 * 3600.0  # how long an export request may take
    realtime_poll: float = 30.0  # how often the progress of waiting requests is read


@dataclass(frozen=True, slots=True)
class SourceDeps:
    """What every source of one run shares: one identity's access to the org, settings, time."""

    http: OrgHttp  # sends to the org (token, timeouts, origin check)
    fetcher: Fetcher  # the identity's throttle and retry policy: fetcher.for_pair(n).call(...)
    settings: SourceSettings
    now: Callable[[], datetime]  # wall clock, for dates in the manifest
    clock: Callable[[], float]  # monotonic, for waits
    sleep: Callable[[float], Awaitable[None]]


class Availability(StrEnum):
    """What the pre-flight found for a source."""

    AVAILABLE = "available"
    MISSING = "missing"  # the org does not have it (404 for the action or the table)
    FORBIDDEN = "forbidden"  # the identity lacks a privilege for it (403)


@dataclass(frozen=True, slots=True)
class Probe:
    """A source's pre-flight answer, with the reason in plain words when not available."""

    source: str
    availability: Availability
    detail: str = ""


class PartSink(Protocol):
    """Where one part of one contact writes what it found (the dossier writer's side)."""

    async def add_rows(self, entry: str, rows: Sequence[Mapping[str, Any]]) -> None:
        """Append rows to the JSON-lines entry ``entry`` (e.g. ``records/contact.json``).

        Rows are written exactly as decoded: numbers decoded as ``orjson.Fragment`` keep
        every digit. A row that cannot be written as JSON fails the part.
        """
        ...

    async def add_file(self, entry: str, chunk: bytes) -> None:
        """Append ``chunk`` to the verbatim entry ``entry`` (e.g. a downloaded export file)."""
        ...

    def note(self, key: str, value: JsonValue) -> None:
        """A fact about this part for the manifest (tables not present, request ids, ...)."""
        ...


class ContactScope(Protocol):
    """Shared by the parts of one contact while it is being answered."""

    @property
    def contact_id(self) -> str:
        """The contact's canonical GUID (validated before it reached here)."""
        ...

    @property
    def number(self) -> int:
        """The contact's place in the run (lower goes first where requests queue)."""
        ...

    @property
    def sources(self) -> frozenset[str]:
        """The sources whose parts this contact gets in this run."""
        ...

    async def once(self, key: str, load: Callable[[], Awaitable[_T]]) -> _T:
        """``load()`` at most once per contact and key; every caller gets its result or error."""
        ...

    async def recall(self, key: str) -> str | None:
        """A note this contact's parts kept in the run state, from this run or an earlier one."""
        ...

    async def remember(self, key: str, value: str) -> None:
        """Keep a note in the run state (durable before this returns)."""
        ...

    def parked(self) -> AbstractAsyncContextManager[None]:
        """Wrap a long wait: the contact gives up its window slot until the block ends."""
        ...


class Source(Protocol):
    """One place the org keeps data about a person."""

    name: str

    def parts(self) -> Sequence[Part]:
        """The parts this source fetches for every contact, in this run's settings."""
        ...

    async def probe(self) -> Probe:
        """One cheap call that says whether this org and identity can use this source."""
        ...

    async def fetch(self, scope: ContactScope, part: Part, sink: PartSink) -> None:
        """Fetch ``part`` for ``scope.contact_id`` into ``sink``; raise to fail it."""
        ...
