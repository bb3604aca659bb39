"""The ``realtime`` source: real-time journeys' own export of what it holds about a person.

Usage::

    source = RealtimeSource(deps)           # one per run; one part, "realtime"
    await source.fetch(scope, Part("realtime", "realtime"), sink)

For each e-mail address and phone number on the contact's row (shared with ``records``):

1. create an Export request: a ``msdynmkt_gdprrequest`` row named
   ``sar-bulk export <contact id's first 8> <n> <random 8 hex>`` with the identifier as input;
2. wait, parked (holding no slot of the contact window), until its progress is Completed;
3. download its file column in ``Range`` chunks into ``realtime/<n>-gdpr_output.json``, verbatim,
   and note the request id, input kind and value, size and SHA-256 under ``exports``.

Column names and option values come from the org's metadata (``gdpr_schema``), read once per run.
Waiting costs almost nothing: one ``ProgressPoller`` per source instance reads the progress of all
waiting requests of the run, 50 ids per query, every ``realtime_poll`` seconds.

Restarts: the request id is kept with ``scope.remember`` as soon as it is known, so a resumed run
waits for the request it created. A crash between the POST and that note is covered by a note
kept *before* the POST (``pending:<name>``): a resumed run first looks the row up by that unique
name and creates it only when it is not there. The same look-up runs before a POST is sent
again after a lost answer (a timeout after the server created the row).

Requests per contact with k identifiers: 1 contact row (shared with ``records``) + k creates +
k downloads of one request per 4 MiB chunk (+ a look-up per resumed or re-sent create); the
progress queries are per run: one per 50 waiting requests per ``realtime_poll`` seconds. Once per
run: 3 metadata requests.

Measured against the simulator (200 contacts, 487 identifiers, 1 s processing, 0.5 s poll):
487 creates, 25 progress queries for the whole run, 600 chunk downloads of 1 MiB.

Assumptions where the docs are silent: a request that is not Completed within ``realtime_wait``
(counted from when this run starts waiting for it, also after a resume) fails the part; no
failure progress value is documented, so none is looked for; a Completed request without a file
fails it too; a file above ``max_file_bytes`` (default 1 GiB) is refused before its first byte
is stored. A remembered request whose row was deleted meanwhile fails the part (``ExportGone``:
an operator deleted it, or the org lost it, and a person may want to know), and its note is let
go, so the next run makes a new request instead of failing on the deleted one for ever.

The org's word on which row is ours is checked, not taken: a look-up by name takes only a row of
that very name, and a completed request whose input is not the identifier it was made for
(compared without case or outer blanks) fails the part with ``ForeignData`` before a byte of its
file is fetched: a POST answer or a look-up naming another request would otherwise hand one
person's export to another.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import uuid
from collections.abc import Mapping, Sequence
from typing import Any, Final

import orjson
import structlog

from sar_bulk.dataverse.fetcher import PairFetcher
from sar_bulk.dataverse.webapi import (
    BadAnswer,
    QueryRefused,
    ResourceMissing,
    WebApi,
    object_body,
)
from sar_bulk.errors import (
    DataverseError,
    Forbidden,
    ForeignData,
    RequestContext,
    RetryableError,
    RetryBudgetSpent,
    RunStopper,
)
from sar_bulk.sources.base import (
    Availability,
    ContactScope,
    JsonValue,
    Part,
    PartSink,
    Probe,
    SourceDeps,
)
from sar_bulk.sources.gdpr_schema import ENTITY_PATH, LOGICAL_NAME, GdprSchema, SchemaCache
from sar_bulk.sources.odata_filter import (
    any_equal_guid,
    guid_literal,
    identifier,
    query,
    string_literal,
)
from sar_bulk.sources.own_exports import CREATED, GONE, NAME_PREFIX, PENDING, note_key
from sar_bulk.sources.realtime_poller import ProgressPoller, RequestGone, WaitExpired
from sar_bulk.sources.records import Anchor, Identifier, contact_row, identifiers

__all__ = [
    "DEFAULT_MAX_FILE_BYTES",
    "ExportFailed",
    "ExportForbidden",
    "ExportGone",
    "RealtimeSource",
    "created_id",
]

DEFAULT_MAX_FILE_BYTES: Final = 1024 * 1024 * 1024
_log = structlog.get_logger("sar_bulk.sources.realtime")
_ENTITY_ID: Final = re.compile(r"\(([0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12})\)$")
# Added to a contact's number (its place in the queue for the identity's requests, lowest
# first) for its downloads, which so wait behind every other request of every contact (rows,
# creates, pages, polls): every export request made early completes while the run does other
# work, so a run whose downloads went first made its last exports near its end, then idled for
# a whole export's processing time (``scripts/bench.py --only 7``: 1.26 times the ideal).
_DOWNLOADS_AFTER: Final = 1 << 48


class ExportFailed(DataverseError):
    """An export request did not bring a file: not done in time, deleted, or done without one."""

    advice = (
        "look at the request in the app (GdprRequest list); raise realtime_wait if exports "
        "take longer in this org"
    )


class ExportGone(ExportFailed):
    """The export request's row was deleted while the run waited for it."""

    advice = (
        "the next run makes a new export request for this contact; if someone deleted it on "
        "purpose, leave the contact out of the next run"
    )


class ExportForbidden(Forbidden):
    """403 creating or reading an export request."""

    advice = (
        "give the application user a role with Create and Read on msdynmkt_gdprrequest and Read "
        "on file attachments (or leave the realtime source out of the run)"
    )


def created_id(answer_headers: Mapping[str, str], body: bytes, id_column: str) -> str | None:
    """The new row's id: from ``OData-EntityId`` (204) or the returned row (201)."""
    header = answer_headers.get("OData-EntityId")
    if header:
        match = _ENTITY_ID.search(header.strip())
        return str(uuid.UUID(match.group(1))) if match else None
    if body.strip():
        try:
            row = orjson.loads(body)
        except orjson.JSONDecodeError:
            return None
        value = row.get(id_column) if isinstance(row, dict) else None
        if isinstance(value, str):
            try:
                return str(uuid.UUID(value))
            except ValueError:
                return None
    return None


class RealtimeSource:
    """Real-time journeys' subject-request export: one part, ``realtime``."""

    name = "realtime"

    def __init__(self, deps: SourceDeps, *, max_file_bytes: int = DEFAULT_MAX_FILE_BYTES) -> None:
        self._deps = deps
        self._max_file_bytes = max_file_bytes
        self._schemas = SchemaCache()
        self._schema: GdprSchema | None = None
        self._poller = ProgressPoller(
            read=self._read_progress,
            is_done=self._is_done,
            poll=deps.settings.realtime_poll,
            clock=deps.clock,
            sleep=deps.sleep,
            passing=_passing,
        )

    @property
    def poller(self) -> ProgressPoller:
        return self._poller

    def parts(self) -> Sequence[Part]:
        return (Part(self.name, self.name),)

    async def probe(self) -> Probe:
        api = self._api(RequestContext("(pre-flight)", self.name), 0)
        try:
            await api.get_json(api.url(ENTITY_PATH))
        except ResourceMissing as error:
            if not (error.missing_table or error.missing_row):
                # A bare 404 (a proxy's) proves nothing; "missing" would leave the source out
                # of an auto run's every dossier. Raised, it fails the check, naming it.
                raise
            return Probe(
                self.name,
                Availability.MISSING,
                "this org has no real-time journeys (no msdynmkt_gdprrequest table)",
            )
        except Forbidden as error:
            return Probe(self.name, Availability.FORBIDDEN, f"reading metadata: {error.detail}")
        return Probe(
            self.name,
            Availability.AVAILABLE,
            "the privilege to create msdynmkt_gdprrequest rows cannot be checked without "
            "creating one; without it the first contact fails with HTTP 403",
        )

    async def fetch(self, scope: ContactScope, part: Part, sink: PartSink) -> None:
        context = RequestContext(scope.contact_id, part.key)
        pair = self._deps.fetcher.for_pair(scope.number)
        api = self._web_api(context, pair)
        row = await contact_row(scope, api)
        found = identifiers(row)
        if not found:
            sink.note("exports", [])
            sink.note("nothing", "the contact has no e-mail address or phone number to export by")
            return
        schema = await self._load_schema(api, context)
        ids = [await self._request(api, scope, schema, n, item) for n, item in enumerate(found, 1)]
        waited = await self._wait_all(scope, context, ids)
        gone = [
            (item, rid) for item, rid, row in zip(found, ids, waited, strict=True) if row is None
        ]
        if gone:
            # Fails now (a person may want to know), but the notes are let go: the next run
            # makes new requests instead of failing on the deleted ones for ever.
            for item, request_id in gone:
                await scope.remember(note_key(item.kind, item.value), GONE + request_id)
            named = ", ".join(request_id for _, request_id in gone)
            raise ExportGone(
                context,
                f"export request{'s' if len(gone) > 1 else ''} {named} "
                f"{'were' if len(gone) > 1 else 'was'} deleted while waiting",
            )
        rows = [row for row in waited if row is not None]
        # Downloads queue for the identity's requests behind every other request (see
        # ``_DOWNLOADS_AFTER``), among themselves in contact order.
        api = self._web_api(context, pair.queued_as(_DOWNLOADS_AFTER + scope.number))
        exports: list[JsonValue] = []
        for n, (item, request_id, done) in enumerate(zip(found, ids, rows, strict=True), 1):
            if not Anchor.texts(schema.input_column, [item.value]).holds(done):
                raise ForeignData(
                    context,
                    f"export request {request_id} holds another e-mail or phone than the one it "
                    "was made for; its file is not fetched",
                    status=200,
                )
            if done.get(schema.data_column) is None:
                raise ExportFailed(context, f"export request {request_id} completed without a file")
            entry = f"realtime/{n}-gdpr_output.json"

            async def write(chunk: bytes, entry: str = entry) -> None:
                await sink.add_file(entry, chunk)

            url = api.url(f"{schema.entity_set}({request_id})/{schema.data_column}/$value")
            try:
                result = await api.download(url, write=write, max_bytes=self._max_file_bytes)
            except Forbidden as error:
                raise error.retold(
                    ExportForbidden, f"downloading export request {request_id}'s file"
                ) from None
            exports.append(
                {
                    "entry": entry,
                    "request_id": request_id,
                    "input_kind": item.kind,
                    "input": item.value,
                    "size": result.size,
                    "sha256": result.sha256,
                    "file_name": result.file_name,
                }
            )
        sink.note("exports", exports)

    def _api(self, context: RequestContext, priority: int) -> WebApi:
        return self._web_api(context, self._deps.fetcher.for_pair(priority))

    def _web_api(self, context: RequestContext, pair: PairFetcher) -> WebApi:
        return WebApi(self._deps.http, pair, context, now=self._deps.now)

    async def _load_schema(self, api: WebApi, context: RequestContext) -> GdprSchema:
        try:
            self._schema = await self._schemas.get(api)
        except Forbidden as error:
            raise error.retold(
                ExportForbidden, f"reading the metadata of {LOGICAL_NAME}", context=context
            ) from None
        except ResourceMissing as error:
            raise ExportFailed(
                context,
                "this org has no real-time journeys subject-request table (msdynmkt_gdprrequest)",
                status=error.status,
                code=error.code,
            ) from None
        return self._schema

    async def _request(
        self, api: WebApi, scope: ContactScope, schema: GdprSchema, n: int, item: Identifier
    ) -> str:
        """The export request for ``item``: the one this contact made before, else a new one."""
        key = note_key(item.kind, item.value)
        note = await scope.recall(key)
        if note is not None and note.startswith(CREATED):
            # Our own note, but it goes into a URL: only a GUID is taken as it is.
            try:
                return guid_literal(note.removeprefix(CREATED))
            except ValueError:
                raise ExportFailed(api.context, "the run state holds a broken request id") from None
        if note is not None and note.startswith(PENDING):
            name = note.removeprefix(PENDING)
            existing = await api.call(lambda: self._lookup(api, schema, name))
            if existing is not None:
                await scope.remember(key, CREATED + existing)
                return existing
        else:
            name = f"{NAME_PREFIX} {scope.contact_id[:8]} {n} {secrets.token_hex(4)}"
            await scope.remember(key, PENDING + name)
        request_id = await self._create(api, schema, name, item.value)
        await scope.remember(key, CREATED + request_id)
        return request_id

    async def _create(self, api: WebApi, schema: GdprSchema, name: str, value: str) -> str:
        body = orjson.dumps(
            {
                schema.name_column: name,
                schema.type_column: schema.export_value,
                schema.input_column: value,
            }
        )
        url = api.url(identifier(schema.entity_set))
        headers = {"Content-Type": "application/json; charset=utf-8"}
        tries = 0

        async def attempt() -> str:
            nonlocal tries
            tries += 1
            if tries > 1:
                # The previous try may have created the row before its answer was lost.
                existing = await self._lookup(api, schema, name)
                # Two requests in this one paced try: the look-up is charged to the pace too,
                # or a run at the org's exact limit meets a 429 for each lost answer.
                self._deps.fetcher.throttle.count_request()
                if existing is not None:
                    _log.info("export.found_by_name", contact=api.context.contact_id, tries=tries)
                    return existing
            answer = await api.send("POST", url, body=body, headers=headers)
            request_id = created_id(answer.headers, answer.body, schema.id_column)
            if request_id is None:
                raise BadAnswer(api.context, "the created request's id is not in the answer")
            return request_id

        try:
            return await api.call(attempt)
        except Forbidden as error:
            raise error.retold(
                ExportForbidden, f"creating an export request ({LOGICAL_NAME})"
            ) from None
        except QueryRefused as error:
            raise error.retold(
                QueryRefused, f"creating an export request ({LOGICAL_NAME})"
            ) from None

    async def _lookup(self, api: WebApi, schema: GdprSchema, name: str) -> str | None:
        """The id of the request named ``name`` (one request, no retry: for ``api.call``)."""
        url = api.url(
            identifier(schema.entity_set)
            + query(
                {
                    "$select": f"{schema.id_column},{schema.name_column}",
                    "$filter": f"{identifier(schema.name_column)} eq {string_literal(name)}",
                }
            )
        )
        answer = await api.send("GET", url)
        rows = object_body(api.context, answer.body).get("value")
        if not isinstance(rows, list):
            raise BadAnswer(api.context, "the answer has no 'value' list of rows")
        for row in rows:
            if not isinstance(row, dict) or row.get(schema.name_column) != name:
                continue  # the filter was not applied: only a row of this very name is ours
            value = row.get(schema.id_column)
            if isinstance(value, str) and (found := _guid(value)) is not None:
                return found
        return None

    async def _wait_all(
        self, scope: ContactScope, context: RequestContext, ids: list[str]
    ) -> list[Mapping[str, Any] | None]:
        """Each request's completed row, or None for one deleted while waiting (the others are
        waited for all the same, so that every deleted one of the contact is known at once)."""
        limit = self._deps.settings.realtime_wait

        async def one(request_id: str) -> Mapping[str, Any] | None:
            try:
                return await self._poller.wait(request_id, limit)
            except RequestGone:
                return None

        try:
            async with scope.parked(), asyncio.TaskGroup() as group:
                tasks = [group.create_task(one(rid)) for rid in ids]
        except ExceptionGroup as group_error:
            # The engine wants one error of the tree: the first that ended the wait.
            first = group_error.exceptions[0]
            if isinstance(first, WaitExpired):
                failure = self._poller.last_failure
                why = (
                    f" (the last progress query failed: {failure.detail})"
                    if isinstance(failure, DataverseError)
                    else ""
                )
                raise ExportFailed(
                    context, f"export request {first} not completed within {limit:g} s{why}"
                ) from None
            if isinstance(first, DataverseError) and not isinstance(first, RunStopper):
                # The query was about every waiting request of the run: say which contact and
                # what it means for it, with this source's advice (not the action's).
                kind = ExportForbidden if isinstance(first, Forbidden) else ExportFailed
                raise first.retold(
                    kind, "reading the progress of its export requests", context=context
                ) from None
            raise first from None
        return [task.result() for task in tasks]

    def _is_done(self, row: Mapping[str, Any]) -> bool:
        schema = self._schema
        return schema is not None and row.get(schema.progress_column) == schema.completed_value

    async def _read_progress(self, ids: Sequence[str]) -> Mapping[str, Mapping[str, Any]]:
        """One query over a batch of waiting request ids: ``{id: row}``."""
        schema = self._schema
        if schema is None:  # waits start only after the schema is loaded
            raise RuntimeError("progress read before the schema was loaded")
        context = RequestContext(f"({len(ids)} waiting)", f"{self.name}/progress")
        api = self._api(context, 0)
        columns = ",".join(
            (schema.id_column, schema.progress_column, schema.data_column, schema.input_column)
        )
        url = api.url(
            identifier(schema.entity_set)
            + query({"$select": columns, "$filter": any_equal_guid(schema.id_column, ids)})
        )
        found: dict[str, Mapping[str, Any]] = {}
        async for rows in api.pages(url, page_size=max(len(ids), 1) * 2):
            for row in rows:
                value = row.get(schema.id_column)
                if isinstance(value, str) and (guid := _guid(value)) is not None:
                    found[guid] = row
        return found


def _passing(error: Exception) -> bool:
    """A failed progress read worth asking again at the next poll (the export goes on)."""
    return isinstance(error, RetryableError | RetryBudgetSpent)


def _guid(value: str) -> str | None:
    """A row id from the org in canonical form, or None when it is no GUID (never raised)."""
    try:
        return str(uuid.UUID(value))
    except ValueError:
        return None
