"""The ``interactions`` source: the seed's action, one part per interaction type.

Usage::

    source = InteractionsSource(deps)
    probe = await source.probe()                 # one call for the nil GUID
    for part in source.parts():                  # Part("interactions", "EmailSent"), ...
        await source.fetch(scope, part, sink)    # every page into interactions/EmailSent.json

``msdyncrm_LoadInteractionsPublic`` answers one (contact, type) at a time, a page at a time; the
paging rules live in ``DataverseClient.pages`` and the throttle and retries in the fetcher, so
this module only says what to ask for and where the rows go. Every page is handed to the sink,
an empty one too: it proves the type was asked and answered.

Microsoft retired the action from cloud orgs in 2026: its probe then answers MISSING, and a run
in ``auto`` mode goes on with the other sources.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import structlog

from sar_bulk.dataverse.client import DataverseClient, Query
from sar_bulk.errors import ActionMissing, BadRequest, Forbidden, NotFound
from sar_bulk.sources.base import (
    Availability,
    ContactScope,
    Part,
    PartSink,
    Probe,
    SourceDeps,
)
from sar_bulk.sources.interaction_types import InteractionType

__all__ = ["NAME", "PROBE_CONTACT", "RETIRED", "InteractionsSource", "entry_for"]

NAME: Final = "interactions"
# A contact id that need not exist: a 200, or a 400 about the contact, proves the action is there
# and the identity may run it.
PROBE_CONTACT: Final = "00000000-0000-0000-0000-000000000000"
RETIRED: Final = (
    "this org has no msdyncrm_LoadInteractionsPublic action (HTTP 404). Microsoft retired "
    "outbound marketing, and this action with it, from its cloud orgs, so this org cannot "
    "answer subject-access requests through it. Real-time journeys handles them through the "
    "msdynmkt_gdprrequest table instead."
)
_log = structlog.get_logger("sar_bulk.sources.interactions")


def entry_for(interaction_type: InteractionType) -> str:
    """The dossier entry of one type: ``interactions/<Type>.json``."""
    return f"{NAME}/{interaction_type.value}.json"


class InteractionsSource:
    """One part per requested interaction type; pages go through the identity's fetcher."""

    name: str = NAME

    def __init__(self, deps: SourceDeps, client: DataverseClient | None = None) -> None:
        self._deps = deps
        self._client = client or deps.fetcher.client
        settings = deps.settings
        types = settings.interaction_types
        self._parts = tuple(Part(NAME, t.value) for t in types)
        self._types = {t.value: t for t in InteractionType}  # looked up once per part
        self.dop_hint: int | None = None  # the probe's x-ms-dop-hint, for the throttle
        self.pages = 0  # pages written, every contact
        self.repeats = 0  # rows the client saw twice across pages (Page.repeats, if known)

    def parts(self) -> Sequence[Part]:
        return self._parts

    async def probe(self) -> Probe:
        """Call the action once; a token or transport failure is raised, not answered."""
        query = Query(PROBE_CONTACT, InteractionType.EmailSent, top=1)
        try:
            page = await self._client.fetch_page(query, None, 1)
        except BadRequest as exc:
            detail = f"the action answered (400 for the probe contact: {exc.detail})"
            return Probe(NAME, Availability.AVAILABLE, detail)
        except Forbidden as exc:
            return Probe(
                NAME,
                Availability.FORBIDDEN,
                "the identity may not run msdyncrm_LoadInteractionsPublic (HTTP 403, code "
                f"{exc.code or 'none'}): give its application user a security role that can",
            )
        except NotFound as exc:
            # A 404 about the probe contact (0x80040217), not about the action: it answered.
            detail = f"the action answered (404 for the probe contact, code {exc.code or 'none'})"
            return Probe(NAME, Availability.AVAILABLE, detail)
        except ActionMissing:
            return Probe(NAME, Availability.MISSING, RETIRED)
        self.dop_hint = page.dop_hint
        return Probe(NAME, Availability.AVAILABLE, "the action answered")

    async def fetch(self, scope: ContactScope, part: Part, sink: PartSink) -> None:
        """Every page of one type for the contact, in server order, into its entry."""
        itype = self._types.get(part.name) if part.source == NAME else None
        if itype is None:
            raise ValueError(f"{part.key} is not a part of the interactions source")
        settings = self._deps.settings
        query = Query(
            scope.contact_id,
            itype,
            date_from=settings.dates.wire_from,
            date_to=settings.dates.wire_to,
            top=settings.page_size,
        )
        pair = self._deps.fetcher.for_pair(scope.number)
        entry = entry_for(itype)
        pages = repeats = 0
        async for page in self._client.pages(query, fetch=pair.fetch):
            rows = page.interactions
            # Page.repeats (rows also on an earlier page) comes with the hardened client.
            repeats += int(getattr(page, "repeats", 0) or 0)
            del page  # the loop variable would keep a big page alive past its writing
            await sink.add_rows(entry, rows)
            del rows
            pages += 1
        self.pages += pages
        self.repeats += repeats
        sink.note("pages", pages)
        if repeats:
            sink.note("repeats", repeats)
            _log.warning("page.repeats", contact=scope.contact_id, part=part.key, rows=repeats)
