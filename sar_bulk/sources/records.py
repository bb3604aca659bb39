"""The ``records`` source: the contact's own Dataverse rows, stored exactly as the org sent them.

Usage::

    source = RecordsSource(deps)            # one per run; one part, "records"
    await source.fetch(scope, Part("records", "records"), sink)

Entries (JSON lines, one row per line, every column, with formatted values)::

    records/contact.json          contacts(<id>), the row itself
    records/lead.json             leads, _parentcontactid_value = id
    records/account.json          accounts, _primarycontactid_value = id
    records/parent_account.json   accounts, accountid = the contact's _parentcustomerid_value
    records/activityparty.json    activityparties, _partyid_value = id (sender, recipient, ...)
    records/activitypointer.json  activitypointers regarding the contact, then those it is a
                                  party of (by activityid, 50 a query), each with its parties
                                  inline ($expand=activitypointer_activity_parties)
    records/msdynmkt_contactpointconsent4.json
                                  consent: msdynmkt_contactpointvalue = each e-mail/phone
    records/msdynmkt_gdprrequest.json
                                  earlier subject requests: input = each e-mail/phone (the
                                  export requests this run made are left out: ``own_exports``)
    records/<name>.json           each custom table of the settings

Requests per contact: 1 (contact row, shared with ``realtime`` through ``scope.once``) + 4
(leads, accounts, activity parties, activities regarding it) + 1 per 50 activities it is a party
of but not regarding (usually 0 or 1) + 1 when it has a parent customer (its account)
+ 2 when the contact has an e-mail or phone
(consent and earlier requests: one query each, all values or-ed) + 1 per custom table (per
e-mail or phone when its template uses ``{email}``/``{phone}``); each query one more request per
further page of ``odata_page_size`` rows. So 7 to 9 for a usual contact, 5 without e-mail or
phone.
Once per run: 3 metadata requests for the subject-request table (``gdpr_schema``).

Outcomes, noted under ``tables`` as ``{table: rows | "not present" | "excluded"}``:
* a table this org does not have (404, code 0x80060888) is "not present"; the part succeeds;
* a table the identity may not read (403) fails the part: an answer that skipped it would be
  incomplete. The operator can list it in ``excluded_tables`` (then it is not asked for at all);
* a contact that does not exist (404 with code 0x80040217 on ``contacts(<id>)``) fails the part
  (``ContactMissing``); another 404 there (no code: a proxy, a gateway) fails it as what it is,
  never saying the contact does not exist;
* a row that is not the contact's fails the part (``ForeignData``, as the action does): every
  row of a known table must hold the column its query asked for (``contactid``,
  ``_parentcontactid_value``, ``msdynmkt_contactpointvalue``, ...) with the contact's value
  (GUIDs in any case, e-mails and phones without case or outer blanks, as Dataverse compares
  them). A missing column counts as another contact's. Custom tables are the operator's
  filters and are not checked;
* a row sent twice for one table (its id repeated, on one page or across pages whose nextLinks
  differ) fails the part (``PagingError``): a dossier must not count a row twice, nor page
  through the same rows up to ``max_pages``. A row without its id fails it too.

Assumptions where the docs are silent: the e-mail columns are ``emailaddress1..3`` and the
phones ``telephone1..3`` and ``mobilephone``; Dataverse returns at most 5,000 expanded parties
per activity, far above what an activity has.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Final, Literal

from sar_bulk.dataverse.idset import DigestSet
from sar_bulk.dataverse.webapi import (
    FORMATTED_VALUES,
    BadAnswer,
    QueryRefused,
    ResourceMissing,
    WebApi,
)
from sar_bulk.errors import (
    ConfigError,
    DataverseError,
    Forbidden,
    ForeignData,
    PagingError,
    RequestContext,
)
from sar_bulk.guids import canonical_guid, is_canonical_guid
from sar_bulk.sources.base import (
    Availability,
    ContactScope,
    CustomTable,
    JsonValue,
    Part,
    PartSink,
    Probe,
    SourceDeps,
)
from sar_bulk.sources.gdpr_schema import LOGICAL_NAME, GdprSchema, SchemaCache
from sar_bulk.sources.odata_filter import (
    any_equal,
    any_equal_guid,
    equal_guid,
    identifier,
    query,
    render_template,
    template_fields,
)
from sar_bulk.sources.own_exports import NAME_PREFIX, own_requests

__all__ = [
    "CONTACT_ROW_KEY",
    "Anchor",
    "ContactMissing",
    "Identifier",
    "RecordsSource",
    "TableForbidden",
    "contact_row",
    "identifiers",
]

CONTACT_ROW_KEY: Final = "contact-row"
EMAIL_COLUMNS: Final = ("emailaddress1", "emailaddress2", "emailaddress3")
PHONE_COLUMNS: Final = ("telephone1", "telephone2", "telephone3", "mobilephone")
CONSENT_TABLE: Final = "msdynmkt_contactpointconsent4"
_ID_BATCH: Final = 50  # ids per "(activityid eq a or ...)" query: a URL well under limits
ACTIVITY_PARTIES: Final = "activitypointer_activity_parties"  # each activity's parties, inline
_PROBE_CONTACT: Final = "(pre-flight)"
_PROBE_PATH: Final = (
    "contacts?$top=1&$select=contactid&$filter=contactid eq 00000000-0000-0000-0000-000000000000"
)


class ContactMissing(DataverseError):
    """404 for ``contacts(<id>)``: the org has no contact with this id."""

    advice = "check the id in the contacts file; a deleted contact has nothing left to export"


class TableForbidden(Forbidden):
    """403 reading a table: the answer would be incomplete without it."""

    advice = (
        "give the application user read privilege on this table, or list it in "
        "excluded_tables to answer without it"
    )


@dataclass(frozen=True, slots=True)
class Identifier:
    """An e-mail address or phone number of the contact: what consent and exports are keyed by."""

    kind: Literal["email", "phone"]
    value: str


@dataclass(frozen=True, slots=True)
class Anchor:
    """What every row a query returns must hold: ``column`` equal to one of ``accepted``.

    GUIDs are compared in canonical form; texts (e-mails, phones) without case or outer blanks,
    as Dataverse compares them in a filter. A row without the column is not the contact's.
    """

    column: str
    accepted: frozenset[str]
    text: bool = False

    @classmethod
    def guids(cls, column: str, values: Iterable[str]) -> Anchor:
        return cls(column, frozenset(value.lower() for value in values))

    @classmethod
    def texts(cls, column: str, values: Iterable[str]) -> Anchor:
        return cls(column, frozenset(_fold(value) for value in values), text=True)

    def holds(self, row: Mapping[str, Any]) -> bool:
        value = row.get(self.column)
        if not isinstance(value, str):
            return False
        if self.text:
            return _fold(value) in self.accepted
        if value in self.accepted:
            return True  # the usual case, without parsing
        try:
            return canonical_guid(value) in self.accepted
        except ValueError:
            return False


def _fold(text: str) -> str:
    return text.strip().casefold()


def identifiers(row: Mapping[str, Any]) -> list[Identifier]:
    """The contact's e-mail addresses, then phones, in column order, blanks and repeats dropped."""
    found: list[Identifier] = []
    seen: set[str] = set()
    for kind, columns in (("email", EMAIL_COLUMNS), ("phone", PHONE_COLUMNS)):
        for column in columns:
            value = row.get(column)
            # A NUL cannot be put in a filter (nor is it an address): such a value is skipped.
            if (
                isinstance(value, str)
                and value.strip()
                and "\x00" not in value
                and value not in seen
            ):
                seen.add(value)
                found.append(Identifier(kind, value))  # type: ignore[arg-type]
    return found


async def contact_row(scope: ContactScope, api: WebApi) -> dict[str, Any]:
    """The contact's row with formatted values, fetched once per contact for every source."""

    async def load() -> dict[str, Any]:
        url = api.url(f"contacts({scope.contact_id})")
        try:
            row = await api.get_json(url, {"Prefer": FORMATTED_VALUES})
        except ResourceMissing as error:
            if not error.missing_row:
                raise
            raise ContactMissing(
                error.context, "the contact does not exist", status=error.status, code=error.code
            ) from None
        if not Anchor.guids("contactid", [scope.contact_id]).holds(row):
            # Inside the memo: every part of the contact fails alike, none keeps the row.
            raise ForeignData(
                api.context,
                "the contact's row has a contactid that is missing or names another contact",
                status=200,
            )
        return row

    return await scope.once(CONTACT_ROW_KEY, load)


class RecordsSource:
    """The contact's Dataverse rows: one part, ``records``."""

    name = "records"

    def __init__(self, deps: SourceDeps) -> None:
        self._deps = deps
        self._schemas = SchemaCache()
        for table in deps.settings.custom_tables:
            _check_custom(table)

    def parts(self) -> Sequence[Part]:
        return (Part(self.name, self.name),)

    async def probe(self) -> Probe:
        deps = self._deps
        api = WebApi(
            deps.http,
            deps.fetcher.for_pair(0),
            RequestContext(_PROBE_CONTACT, self.name),
            now=deps.now,
        )
        try:
            # The filter (on a GUID no row has) keeps the probe's cost at one indexed lookup.
            await api.get_json(api.url(_PROBE_PATH))
        except Forbidden as error:
            return Probe(self.name, Availability.FORBIDDEN, f"reading contacts: {error.detail}")
        except ResourceMissing as error:
            if not error.missing_table:
                # A bare 404 (a proxy's) proves nothing; "missing" would leave the source out
                # of an auto run's every dossier. Raised, it fails the check, naming it.
                raise
            return Probe(self.name, Availability.MISSING, f"no contacts table: {error.detail}")
        return Probe(self.name, Availability.AVAILABLE)

    async def fetch(self, scope: ContactScope, part: Part, sink: PartSink) -> None:
        deps = self._deps
        context = RequestContext(scope.contact_id, part.key)
        api = WebApi(deps.http, deps.fetcher.for_pair(scope.number), context, now=deps.now)
        row = await contact_row(scope, api)
        await sink.add_rows("records/contact.json", [row])
        tables: dict[str, JsonValue] = {"contact": 1}
        cid = scope.contact_id
        for table, entity_set, column in (
            ("lead", "leads", "_parentcontactid_value"),
            ("account", "accounts", "_primarycontactid_value"),
        ):
            tables[table] = await self._table(
                api,
                sink,
                table,
                entity_set,
                [equal_guid(column, cid)],
                anchor=Anchor.guids(column, [cid]),
                key=f"{table}id",
            )
        tables.update(await self._activities(api, sink, cid))
        tables["parent_account"] = await self._parent_account(api, sink, row)
        found = identifiers(row)
        values = [item.value for item in found]
        tables[CONSENT_TABLE] = await self._table(
            api,
            sink,
            CONSENT_TABLE,
            "msdynmkt_contactpointconsent4s",
            [any_equal("msdynmkt_contactpointvalue", values)] if values else [],
            anchor=Anchor.texts("msdynmkt_contactpointvalue", values),
            key=f"{CONSENT_TABLE}id",
        )
        tables[LOGICAL_NAME] = await self._requests(api, sink, scope, found)
        for custom in deps.settings.custom_tables:
            tables[custom.name] = await self._table(
                api, sink, custom.name, custom.entity_set, _custom_filters(custom, cid, found)
            )
        if not values:
            sink.note("identifiers", "the contact has no e-mail address or phone number")
        sink.note("tables", tables)

    async def _activities(self, api: WebApi, sink: PartSink, cid: str) -> dict[str, JsonValue]:
        """The contact's party rows, then every activity regarding it or with it as a party."""
        party_of: dict[str, None] = {}  # ordered, O(1) membership
        regarding: set[str] = set()

        def activity_of(row: Mapping[str, Any]) -> None:
            value = row.get("_activityid_value")
            if isinstance(value, str) and is_canonical_guid(value.lower()):
                party_of.setdefault(value.lower())

        def activity_id(row: Mapping[str, Any]) -> None:
            value = row.get("activityid")
            if isinstance(value, str):
                regarding.add(value.lower())

        parties = await self._table(
            api,
            sink,
            "activityparty",
            "activityparties",
            [equal_guid("_partyid_value", cid)],
            keep=activity_of,
            anchor=Anchor.guids("_partyid_value", [cid]),
            key="activitypartyid",
        )
        filters = [equal_guid("_regardingobjectid_value", cid)]
        table = "activitypointer"
        activities = await self._table(
            api,
            sink,
            table,
            "activitypointers",
            filters,
            expand=ACTIVITY_PARTIES,
            keep=activity_id,
            anchor=Anchor.guids("_regardingobjectid_value", [cid]),
            key="activityid",
        )
        others = [value for value in party_of if value not in regarding]
        if others and isinstance(activities, int):
            batches = [
                any_equal_guid("activityid", others[i : i + _ID_BATCH])
                for i in range(0, len(others), _ID_BATCH)
            ]
            more = await self._table(
                api,
                sink,
                table,
                "activitypointers",
                batches,
                expand=ACTIVITY_PARTIES,
                anchor=Anchor.guids("activityid", others),
                key="activityid",
            )
            activities = activities + more if isinstance(more, int) else more
        return {"activitypointer": activities, "activityparty": parties}

    async def _parent_account(
        self, api: WebApi, sink: PartSink, row: Mapping[str, Any]
    ) -> JsonValue:
        """The account of ``parentcustomerid`` (a customer lookup: a contact id finds none)."""
        if "account" in self._deps.settings.excluded_tables:
            return "excluded"
        parent = row.get("_parentcustomerid_value")
        if not isinstance(parent, str) or not parent:
            return 0
        try:
            text = equal_guid("accountid", parent)
        except ValueError:
            raise BadAnswer(api.context, "_parentcustomerid_value is not a GUID") from None
        anchor = Anchor.guids("accountid", [parent])
        return await self._table(
            api, sink, "parent_account", "accounts", [text], anchor=anchor, key="accountid"
        )

    async def _requests(
        self, api: WebApi, sink: PartSink, scope: ContactScope, found: list[Identifier]
    ) -> JsonValue:
        """Earlier subject requests made with one of the contact's e-mails or phones, without
        the export requests this run made (``own_exports``: they are the ``realtime`` part)."""
        if LOGICAL_NAME in self._deps.settings.excluded_tables:
            return "excluded"
        try:
            schema = await self._schemas.get(api)
        except ResourceMissing as error:
            if error.missing_table or error.missing_row:
                return "not present"
            raise
        values = [item.value for item in found]
        filters = [any_equal(schema.input_column, values)] if values else []

        async def earlier(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
            # Only a run with the realtime part has its export requests in the dossier; notes
            # an earlier run left (a contact that failed then) name earlier requests.
            if "realtime" not in scope.sources or not any(
                _named_like_ours(row, schema.name_column) for row in rows
            ):
                return rows
            # Read after the rows were seen: a row this run made was noted before it existed.
            mine = await own_requests(scope, ((item.kind, item.value) for item in found))
            return [row for row in rows if not _ours(row, schema, mine)]

        anchor = Anchor.texts(schema.input_column, values)
        return await self._table(
            api,
            sink,
            LOGICAL_NAME,
            schema.entity_set,
            filters,
            select=earlier,
            anchor=anchor,
            key=schema.id_column,
        )

    async def _table(
        self,
        api: WebApi,
        sink: PartSink,
        table: str,
        entity_set: str,
        filters: list[str],
        *,
        expand: str = "",
        keep: Callable[[Mapping[str, Any]], None] | None = None,
        select: Callable[[list[dict[str, Any]]], Awaitable[list[dict[str, Any]]]] | None = None,
        anchor: Anchor | None = None,
        key: str | None = None,
    ) -> JsonValue:
        """Every row matching any of ``filters`` (one query each) into ``records/<table>.json``.

        With ``anchor``, a page holding a row that is not the contact's fails the part before
        any of that page is written (``ForeignData``); with ``key`` (the table's id column), a
        row whose id came before fails it (``PagingError``).
        """
        settings = self._deps.settings
        if table in settings.excluded_tables:
            return "excluded"
        count = 0
        entry = f"records/{table}.json"
        ids = DigestSet()  # the table's row ids so far, over all its queries (~8 bytes each)
        for text in filters:
            params = {"$filter": text, **({"$expand": expand} if expand else {})}
            url = api.url(identifier(entity_set) + query(params))
            page = 0
            try:
                async for rows in api.pages(
                    url,
                    page_size=settings.odata_page_size,
                    prefer=(FORMATTED_VALUES,),
                    max_pages=settings.max_pages,
                ):
                    page += 1
                    if anchor is not None and not all(anchor.holds(row) for row in rows):
                        raise ForeignData(
                            replace(api.context, page=page),
                            f"{table} ({entity_set}) sent a row whose {anchor.column} is missing "
                            "or is not the contact's",
                            status=200,
                        )
                    if key is not None:
                        _add_ids(replace(api.context, page=page), table, entity_set, key, rows, ids)
                    if rows and select is not None:
                        rows = await select(rows)
                    if rows:
                        await sink.add_rows(entry, rows)
                        count += len(rows)
                    if keep is not None:
                        for row in rows:
                            keep(row)
            except ResourceMissing as error:
                if error.missing_table:
                    return "not present"
                raise
            except Forbidden as error:
                raise error.retold(TableForbidden, f"reading {table} ({entity_set})") from None
            except QueryRefused as error:
                raise error.retold(QueryRefused, f"querying {table} ({entity_set})") from None
        return count


def _add_ids(
    context: RequestContext,
    table: str,
    entity_set: str,
    key: str,
    rows: Sequence[Mapping[str, Any]],
    ids: DigestSet,
) -> None:
    """Add the rows' ids to ``ids`` (as 64-bit digests: a contact may have millions of rows);
    one seen before (or none at all) fails the part."""
    for row in rows:
        value = row.get(key)
        if not isinstance(value, str) or not value:
            raise BadAnswer(context, f"{table} ({entity_set}) sent a row without its {key}")
        digest = hashlib.blake2b(value.lower().encode("utf-8", "surrogatepass"), digest_size=8)
        if not ids.add(int.from_bytes(digest.digest(), "little")):
            raise PagingError(
                context,
                f"{table} ({entity_set}) sent a row twice (the same {key}): the org's paging "
                "repeats rows",
            )


def _named_like_ours(row: Mapping[str, Any], name_column: str) -> bool:
    name = row.get(name_column)
    return isinstance(name, str) and name.startswith(NAME_PREFIX)


def _ours(row: Mapping[str, Any], schema: GdprSchema, mine: set[str]) -> bool:
    """Is ``row`` an export request this run made (by its name or its id)?"""
    if not _named_like_ours(row, schema.name_column):
        return False
    name, rid = row.get(schema.name_column), row.get(schema.id_column)
    return name in mine or (isinstance(rid, str) and rid.lower() in mine)


def _check_custom(table: CustomTable) -> None:
    try:
        identifier(table.entity_set)
    except ValueError:
        raise ConfigError(
            f"custom table {table.name!r}: entity set {table.entity_set!r} is not a plain name"
        ) from None
    fields = template_fields(table.filter)
    if {"email", "phone"} <= fields:
        raise ConfigError(
            f"custom table {table.name!r}: a filter may use {{email}} or {{phone}}, not both"
        )
    if "/" in table.name or table.name in ("contact", ""):
        raise ConfigError(f"custom table name {table.name!r} cannot be used as an entry name")


def _custom_filters(table: CustomTable, contact_id: str, found: list[Identifier]) -> list[str]:
    """The filter once, or once per e-mail / phone when the template names one."""
    fields = template_fields(table.filter)
    for kind in ("email", "phone"):
        if kind in fields:
            return [
                render_template(table.filter, contact_id=contact_id, **{kind: item.value})
                for item in found
                if item.kind == kind
            ]
    return [render_template(table.filter, contact_id=contact_id)]
