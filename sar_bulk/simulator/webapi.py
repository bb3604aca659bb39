"""The Web API v9.2 of the simulated org: table rows, metadata, and real-time export requests.

Served under ``/api/data/v9.{0,1,2}/`` (``{id}`` is a dashed GUID)::

    GET  contacts({id})                     GET  {set}?$filter=...   (every table below)
    GET  leads | accounts | activitypointers | activityparties
    GET  msdynmkt_contactpointconsent4s     GET  msdynmkt_gdprrequests[({id})]
    POST msdynmkt_gdprrequests
    GET  msdynmkt_gdprrequests({id})/msdynmkt_dsrrequestdata/$value   (Range: bytes=a-b)
    GET  EntityDefinitions(LogicalName='x')[/Attributes...]   (metadata.py)

A request meets, in turn: the token (401), the path (404 for a table this ``org_kind`` lacks, 405),
the privilege (403 for ``forbidden_identities`` and ``forbidden_tables``), the query options (400),
service protection (429), latency and faults (the action's, see gate.py), then the answer.
Paging: ``Prefer: odata.maxpagesize=N`` (default ``max_page_size``) and ``@odata.nextLink``, an
absolute URL with the same query and an opaque ``$skiptoken`` bound to it. Annotations only when
``Prefer: odata.include-annotations=...`` asks for them; ``Preference-Applied`` names what was
honoured.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from typing import Any

import orjson
from aiohttp import web
from yarl import URL

from sar_bulk.simulator import replies
from sar_bulk.simulator.counters import Visit
from sar_bulk.simulator.faults import SIGN_IN_PAGE
from sar_bulk.simulator.gate import apply_fault, authenticate, base_url
from sar_bulk.simulator.guids import is_dashed_guid
from sar_bulk.simulator.hashing import Draw, stable_digest
from sar_bulk.simulator.metadata import MetadataNotFound, answer_metadata
from sar_bulk.simulator.odata import (
    AnyOf,
    Eq,
    Expr,
    Guid,
    Prefer,
    QueryError,
    parse_filter,
    parse_prefer,
    parse_select,
)
from sar_bulk.simulator.protection import Throttled
from sar_bulk.simulator.realtime import FILE_NAME
from sar_bulk.simulator.rows import Row
from sar_bulk.simulator.skiptoken import Position
from sar_bulk.simulator.state import STATE, SimulatorState
from sar_bulk.simulator.tables import GDPR, TABLES, Table, table_by_logical

__all__ = ["handle"]

NOT_FOUND = "0x80060888"
ROW_MISSING = "0x80040217"
PRIVILEGE_MISSING = "0x80040220"
INVALID = "0x80040203"
OPTION_OUT_OF_RANGE = "0x8004431a"
NO_FILE = "0x80060891"
_FORMATTED = "OData.Community.Display.V1.FormattedValue"
_LOOKUP = "Microsoft.Dynamics.CRM.lookuplogicalname"
_NAVIGATION = "Microsoft.Dynamics.CRM.associatednavigationproperty"
_PARTIES_NAV = "activitypointer_activity_parties"
_KEYED = re.compile(r"([A-Za-z0-9_]+)\(([^)]*)\)(/.*)?")
_METADATA = re.compile(r"EntityDefinitions\(LogicalName='([A-Za-z0-9_]+)'\)(/.*)?")
_RANGE = re.compile(r"bytes=(\d+)-(\d*)")
_ID_TYPES = ("Uniqueidentifier", "Lookup", "Owner")
_CREATE_COLUMNS = ("msdynmkt_name", "msdynmkt_dsrrequesttype", "msdynmkt_dsrrequestinput")
_QUERY_OPTIONS = ("$filter", "$select", "$expand", "$skiptoken", "$top")


class _Refusal(Exception):
    """Raised while checking a request; ``handle`` turns it into Dataverse's error answer."""

    def __init__(self, status: int, code: str, message: str, outcome: str = "bad_request") -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.outcome = status, code, message, outcome


def _json(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> web.Response:
    response = web.Response(
        status=status, body=orjson.dumps(body), headers={"OData-Version": "4.0", **(headers or {})}
    )
    response.headers["Content-Type"] = replies.JSON_TYPE
    return response


# ----- rows: finding and rendering ----------------------------------------------------------------


def _find(state: SimulatorState, table: Table, column: str, value: Any) -> list[Row]:
    """The rows an anchor equality selects (a superset is fine: the filter is applied after)."""
    rows, realtime = state.rows, state.realtime
    key = str(value).lower() if isinstance(value, str) else None
    if key is None:
        return []
    if table.columns[column][1] in _ID_TYPES and not is_dashed_guid(key):
        return []
    found: list[Row | None]
    if table.entity_set == "contacts":
        found = [rows.contact_row(key)]
    elif table.entity_set == "leads":
        found = [rows.lead(key)] if column == "leadid" else list(rows.leads(key))
    elif table.entity_set == "accounts":
        found = [rows.account(key)] if column == "accountid" else list(rows.primary_accounts(key))
    elif table.entity_set == "activitypointers":
        if column == "activityid":
            one = rows.activity(key)
            found = [one[0] if one else None]
        else:
            found = [a for a, _ in rows.activities(key)]
    elif table.entity_set == "activityparties":
        if column == "_activityid_value":
            one = rows.activity(key)
            found = list(one[1]) if one else []
        elif column == "_partyid_value":
            found = [p for _, parties in rows.activities(key) for p in parties]
        else:
            found = []
    elif table.entity_set == "msdynmkt_contactpointconsent4s":
        found = list(rows.consents(str(value)))
    else:
        if column == table.primary_id:
            request = realtime.by_id(key)
            found = [realtime.row(request) if request else None]
        else:
            found = [realtime.row(r) for r in realtime.by_input(str(value))]
    return [r for r in found if r is not None]


def _render(
    row: Row, table: Table, select: tuple[str, ...] | None, prefer: Prefer
) -> dict[str, Any]:
    columns = (
        list(table.columns)
        if select is None
        else [table.primary_id, *(c for c in select if c != table.primary_id)]
    )
    etag = int.from_bytes(
        stable_digest(orjson.dumps(row.values, option=orjson.OPT_SORT_KEYS))[:4], "big"
    )
    out: dict[str, Any] = {"@odata.etag": f'W/"{etag}"'}
    for column in columns:
        value = row.values.get(column)
        out[column] = value
        if value is None:
            continue
        if column in row.formatted and prefer.wants(_FORMATTED):
            out[f"{column}@{_FORMATTED}"] = row.formatted[column]
        if column in row.lookups:
            target, navigation = row.lookups[column]
            if prefer.wants(_NAVIGATION):
                out[f"{column}@{_NAVIGATION}"] = navigation
            if prefer.wants(_LOOKUP):
                out[f"{column}@{_LOOKUP}"] = target
    return out


def _expand_parties(expand: str | None) -> tuple[bool, tuple[str, ...] | None]:
    """``$expand=activitypointer_activity_parties[($select=a,b)]`` -> (wanted, its $select)."""
    if expand is None:
        return False, None
    match = re.fullmatch(rf"{_PARTIES_NAV}(?:\(\$select=([A-Za-z0-9_,]+)\))?", expand.strip())
    if match is None:
        raise _Refusal(
            400,
            NOT_FOUND,
            f"Could not find a navigation property for the $expand '{expand}'; the simulated org "
            f"expands only {_PARTIES_NAV} on activitypointers.",
        )
    return True, parse_select(match[1]) if match[1] else None


def _check_columns(table: Table, columns: set[str], where: str) -> None:
    for column in sorted(columns):
        if column not in table.columns:
            raise _Refusal(
                400,
                NOT_FOUND,
                f"Could not find a property named '{column}' on type "
                f"'Microsoft.Dynamics.CRM.{table.logical}' ({where}).",
            )


def _check_types(table: Table, expr: Expr) -> None:
    """Dataverse refuses ``guidcolumn eq 'text'`` and ``textcolumn eq <guid>``: so does this org."""
    if isinstance(expr, Eq):
        is_id = table.columns[expr.column][1] in _ID_TYPES
        if expr.value is not None and is_id != isinstance(expr.value, Guid):
            left, right = ("Edm.Guid", "Edm.String") if is_id else ("Edm.String", "Edm.Guid")
            if not isinstance(expr.value, str):
                right = "Edm.Int32" if not isinstance(expr.value, bool) else "Edm.Boolean"
            if is_id or isinstance(expr.value, Guid):
                raise _Refusal(
                    400,
                    NOT_FOUND,
                    "A binary operator with incompatible types was detected. Found operand types "
                    f"'{left}' and '{right}' for operator kind 'Equal'.",
                )
    elif not isinstance(expr, AnyOf):
        for part in expr.parts:
            _check_types(table, part)


# ----- routing ------------------------------------------------------------------------------------


async def handle(request: web.Request) -> web.StreamResponse:
    """Every request under the API root except a POST of the action."""
    state = request.app[STATE]
    visit = state.counters.visit()
    try:
        return await _route(request, state, visit)
    except _Refusal as refusal:
        visit.outcome(refusal.outcome)
        return replies.error(refusal.status, refusal.code, refusal.message)
    finally:
        visit.close()


async def _route(request: web.Request, state: SimulatorState, visit: Visit) -> web.StreamResponse:
    tail = request.match_info.get("tail", "")
    version = request.path.split("/")[3]
    segment = tail.split("/", 1)[0].split("(", 1)[0]
    if segment == replies.ACTION:
        raise _Refusal(
            405,
            "0x8006088a",
            f"The requested resource does not support http method '{request.method}'.",
        )
    metadata = _METADATA.fullmatch(tail)
    keyed = _KEYED.fullmatch(tail)
    table = TABLES.get(segment)
    kind = "metadata" if metadata else "query"
    if table is GDPR:
        kind = (
            "create" if request.method == "POST" else ("download" if keyed and keyed[3] else "poll")
        )
    visit.kind(kind)
    identity = authenticate(request, state, visit)
    if isinstance(identity, web.Response):
        return identity
    config = state.config
    if metadata is not None:
        table = table_by_logical(metadata[1])
        if table is None or not table.present(config.org_kind):
            raise _Refusal(
                404,
                ROW_MISSING,
                f"Could not find an entity with the logical name '{metadata[1]}'.",
                "not_found",
            )
    if table is None or not table.present(config.org_kind):
        raise _Refusal(
            404, NOT_FOUND, f"Resource not found for the segment '{segment}'.", "not_found"
        )
    allowed = ("GET", "POST") if table is GDPR and not keyed else ("GET",)
    if request.method not in allowed:
        raise _Refusal(
            405,
            "0x8006088a",
            f"The requested resource does not support http method '{request.method}'.",
        )
    if identity in config.forbidden_identities or table.logical in config.forbidden_tables:
        raise _Refusal(
            403,
            PRIVILEGE_MISSING,
            _privilege_message(identity, table, metadata is not None),
            "forbidden",
        )
    answer = _prepare(request, state, table, version, metadata, keyed)
    body = await request.read() if request.method == "POST" else b""
    create = _parse_create(request, state, body) if request.method == "POST" else None
    verdict = state.protection.admit(identity)
    if isinstance(verdict, Throttled):
        visit.throttled(verdict.limit.value)
        return replies.throttled(
            verdict,
            config.retry_after_format,
            state.wall_clock(),
            state.protection.remaining(identity),
        )
    try:
        fault, broken = await apply_fault(request, state, visit)
        if broken is not None:
            return broken
        if create is not None:
            response = _create(request, state, table, version, create, identity)
        else:
            response = await answer()
        if fault == "malformed" and response.status < 300:
            return web.Response(status=200, body=SIGN_IN_PAGE, content_type="text/html")
        visit.outcome("ok")
        response.headers.update(replies.rate_headers(state.protection.remaining(identity)))
        if config.dop_hint is not None:
            response.headers["x-ms-dop-hint"] = str(config.dop_hint)
        return response
    finally:
        state.protection.release(verdict)


def _privilege_message(identity: str, table: Table, metadata: bool) -> str:
    user = Draw(stable_digest("user", identity)).guid()
    return (
        f"Principal user (Id={user}, type=8, roleCount=1, privilegeCount=0, accessMode=4) is "
        "missing "
        f"{table.privilege} privilege on entity '{table.logical}'. Assign the application user a "
        "security role that includes this privilege."
    )


def _prepare(
    request: web.Request,
    state: SimulatorState,
    table: Table,
    version: str,
    metadata: re.Match[str] | None,
    keyed: re.Match[str] | None,
) -> Callable[[], Any]:
    """Check the query now (400 before service protection, as for the action); answer later."""
    query = request.query
    try:
        prefer = parse_prefer(request.headers.getall("Prefer", []))
        select = parse_select(query.get("$select"))
    except QueryError as exc:
        raise _Refusal(400, INVALID, str(exc)) from None
    context = f"{base_url(request)}/api/data/{version}/$metadata"
    if metadata is not None:
        try:
            body = answer_metadata(
                table,
                metadata[2] or "",
                seed=state.config.seed,
                options=state.realtime.options,
                select=select,
                expand=query.get("$expand"),
                context=context,
            )
        except QueryError as exc:
            raise _Refusal(400, INVALID, str(exc)) from None
        except MetadataNotFound as exc:
            raise _Refusal(404, NOT_FOUND, str(exc), "not_found") from None

        async def metadata_answer() -> web.Response:
            return _json(200, body)

        return metadata_answer
    if request.method == "POST":

        async def nothing() -> None:
            return None

        return nothing
    expand, party_select = _expand_parties(query.get("$expand"))
    if expand and table.entity_set != "activitypointers":
        raise _Refusal(
            400,
            NOT_FOUND,
            f"Could not find a navigation property named '{_PARTIES_NAV}' on type "
            f"'Microsoft.Dynamics.CRM.{table.logical}'.",
        )
    _check_columns(table, set(select or ()), "$select")
    if party_select:
        _check_columns(TABLES["activityparties"], set(party_select), "$expand $select")
    if keyed is not None:
        return _prepare_keyed(
            request, state, table, keyed, select, prefer, expand, party_select, context
        )
    unknown = [name for name in query if name.startswith("$") and name not in _QUERY_OPTIONS]
    if unknown:
        raise _Refusal(
            400, INVALID, f"The query option '{unknown[0]}' is not supported by the simulated org."
        )
    text = query.get("$filter")
    if not text:
        raise _Refusal(
            400,
            INVALID,
            "The simulated org builds rows on demand and cannot list the whole "
            f"'{table.entity_set}' table: add a $filter on {' or '.join(table.anchors)} with eq.",
        )
    try:
        expr = parse_filter(text)
    except QueryError as exc:
        raise _Refusal(400, NOT_FOUND, str(exc)) from None
    _check_columns(table, expr.columns(), "$filter")
    _check_types(table, expr)
    anchors = expr.anchors()
    if anchors is None or any(column not in table.anchors for column, _ in anchors):
        raise _Refusal(
            400,
            INVALID,
            f"The simulated org answers a '{table.entity_set}' query only when its $filter pins "
            f"{' or '.join(table.anchors)} with eq (or In); got '{text}'.",
        )
    size = min(prefer.max_page_size or state.config.max_page_size, state.config.max_page_size)
    top = query.get("$top")
    if top is not None and (not top.isdigit() or int(top) < 1):
        raise _Refusal(400, INVALID, f"Invalid $top '{top}'.")
    key = orjson.dumps(
        [table.entity_set, text, query.get("$select"), query.get("$expand"), top, size]
    ).decode()
    offset = 0
    token = query.get("$skiptoken")
    if token is not None:
        position = state.skip_tokens.open(token, key)
        if position is None:
            raise _Refusal(
                400,
                INVALID,
                "Invalid $skiptoken: it was not issued for this query. Follow @odata.nextLink "
                "unchanged (and keep the same Prefer: odata.maxpagesize).",
            )
        offset = position.offset

    async def collection() -> web.Response:
        seen: dict[str, Row] = {}
        for column, value in anchors:
            for row in _find(state, table, column, value):
                seen.setdefault(row.values[table.primary_id], row)
        matching = [r for r in seen.values() if expr.matches(r.values)]
        if top is not None:
            matching = matching[: int(top)]
        page = matching[offset : offset + size]
        items = [_with_parties(state, r, table, select, prefer, expand, party_select) for r in page]
        body: dict[str, Any] = {"@odata.context": f"{context}#{table.entity_set}", "value": items}
        following = offset + len(page)
        if following < len(matching):
            next_token = state.skip_tokens.issue(key, Position(following // size + 2, following))
            params = {k: v for k, v in query.items() if k != "$skiptoken"}
            params["$skiptoken"] = next_token
            body["@odata.nextLink"] = str(
                URL(f"{base_url(request)}/api/data/{version}/{table.entity_set}").with_query(params)
            )
        return _json(200, body, _applied(prefer, page_size_used=True))

    return collection


def _applied(prefer: Prefer, *, page_size_used: bool) -> dict[str, str]:
    applied = prefer.applied(page_size_used)
    return {"Preference-Applied": applied} if applied else {}


def _with_parties(
    state: SimulatorState,
    row: Row,
    table: Table,
    select: tuple[str, ...] | None,
    prefer: Prefer,
    expand: bool,
    party_select: tuple[str, ...] | None,
) -> dict[str, Any]:
    out = _render(row, table, select, prefer)
    if expand:
        found = state.rows.activity(row.values["activityid"])
        parties = found[1] if found else []
        out[_PARTIES_NAV] = [
            _render(p, TABLES["activityparties"], party_select, prefer) for p in parties
        ]
    return out


def _prepare_keyed(
    request: web.Request,
    state: SimulatorState,
    table: Table,
    keyed: re.Match[str],
    select: tuple[str, ...] | None,
    prefer: Prefer,
    expand: bool,
    party_select: tuple[str, ...] | None,
    context: str,
) -> Callable[[], Any]:
    row_id = keyed[2]
    if not is_dashed_guid(row_id):
        raise _Refusal(
            400,
            INVALID,
            f"Bad Request - Error in query syntax: '{row_id}' is not a valid key for "
            f"{table.entity_set} (a GUID without quotes or braces).",
        )
    row_id = row_id.lower()
    rest = keyed[3]
    if rest is not None and (table is not GDPR or rest != "/msdynmkt_dsrrequestdata/$value"):
        raise _Refusal(
            404,
            NOT_FOUND,
            f"Resource not found for the segment '{rest.strip('/').split('/')[0]}'.",
            "not_found",
        )
    found = _find(state, table, table.primary_id, Guid(row_id))
    if not found:
        raise _Refusal(
            404, ROW_MISSING, f"{table.logical} With Id = {row_id} Does Not Exist", "not_found"
        )
    row = found[0]
    if rest is not None:
        return _prepare_download(request, state, row_id)

    async def single() -> web.Response:
        body = {
            "@odata.context": f"{context}#{table.entity_set}/$entity",
            **_with_parties(state, row, table, select, prefer, expand, party_select),
        }
        return _json(200, body, _applied(prefer, page_size_used=False))

    return single


# ----- real-time export requests ------------------------------------------------------------------


def _parse_create(request: web.Request, state: SimulatorState, raw: bytes) -> dict[str, Any]:
    content_type = request.headers.get("Content-Type", "")
    if content_type.partition(";")[0].strip().lower() != "application/json":
        raise _Refusal(
            400,
            "0x80048d19",
            "A supported MIME type could not be found that matches the content type of the "
            f"payload ({content_type or 'none'!r}).",
        )
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise _Refusal(
            400, "0x80048d19", "Error identified in Payload provided by the user: invalid JSON."
        ) from None
    if not isinstance(body, dict):
        raise _Refusal(
            400, "0x80048d19", "Error identified in Payload provided by the user: not an object."
        )
    for name in body:
        if name not in _CREATE_COLUMNS:
            raise _Refusal(
                400,
                NOT_FOUND,
                f"The property '{name}' does not exist on type "
                "'Microsoft.Dynamics.CRM.msdynmkt_gdprrequest' or is set by the system. Make "
                "sure to only use property names that are defined by the type.",
            )
    options = state.realtime.options
    kind = body.get("msdynmkt_dsrrequesttype")
    if not isinstance(kind, int) or isinstance(kind, bool):
        raise _Refusal(
            400,
            INVALID,
            "msdynmkt_dsrrequesttype is required and must be an option value (Edm.Int32); read "
            "the values from the column's OptionSet.",
        )
    if kind not in (options.export, options.delete):
        raise _Refusal(
            400,
            OPTION_OUT_OF_RANGE,
            f"A validation error occurred. The value {kind} of 'msdynmkt_dsrrequesttype' on "
            "record of type 'msdynmkt_gdprrequest' is outside the valid range.",
        )
    value = body.get("msdynmkt_dsrrequestinput")
    if not isinstance(value, str) or not value.strip():
        raise _Refusal(
            400,
            INVALID,
            "msdynmkt_dsrrequestinput is required: the end user's e-mail address or phone number.",
        )
    name = body.get("msdynmkt_name", "")
    if not isinstance(name, str) or len(name) > 100 or len(value) > 100:
        raise _Refusal(
            400,
            INVALID,
            "msdynmkt_name and msdynmkt_dsrrequestinput must be strings of at most 100 characters.",
        )
    return {"name": name, "type": kind, "input": value}


def _create(
    request: web.Request,
    state: SimulatorState,
    table: Table,
    version: str,
    create: dict[str, Any],
    identity: str,
) -> web.Response:
    owner = Draw(stable_digest("user", identity)).guid()
    made = state.realtime.create(create["name"], create["type"], create["input"], owner)
    location = f"{base_url(request)}/api/data/{version}/{table.entity_set}({made.request_id})"
    headers = {"OData-EntityId": location, "Location": location}
    prefer = parse_prefer(request.headers.getall("Prefer", []))
    if prefer.return_representation:
        row = _render(
            state.realtime.row(made), table, parse_select(request.query.get("$select")), prefer
        )
        context = f"{base_url(request)}/api/data/{version}/$metadata"
        body = {"@odata.context": f"{context}#{table.entity_set}/$entity", **row}
        return _json(201, body, {**headers, "Preference-Applied": "return=representation"})
    return web.Response(status=204, headers={"OData-Version": "4.0", **headers})


def _prepare_download(
    request: web.Request, state: SimulatorState, row_id: str
) -> Callable[[], Any]:
    realtime = state.realtime
    found = realtime.by_id(row_id)
    if found is None or realtime.file_id(found) is None:
        raise _Refusal(
            404,
            NO_FILE,
            f"No file attachment found for attribute: msdynmkt_dsrrequestdata EntityId: {row_id}.",
            "not_found",
        )
    identifier = found.input
    wanted = request.headers.get("Range")
    match = _RANGE.fullmatch(wanted.strip()) if wanted else None
    if wanted is not None and match is None:
        raise _Refusal(
            416, INVALID, f"The Range header '{wanted}' is not of the form bytes=first-last."
        )
    config = state.config

    async def download() -> web.Response:
        data = await asyncio.to_thread(realtime.export_file, identifier)
        size = len(data)
        headers = {
            "x-ms-file-size": str(size),
            "x-ms-file-name": FILE_NAME,
            "x-ms-chunk-size": str(config.file_chunk_size),
            "OData-Version": "4.0",
        }
        if match is None:
            if size > config.whole_file_limit:
                return replies.error(
                    400,
                    INVALID,
                    f"The file is {size} bytes, more than {config.whole_file_limit} can be "
                    "downloaded in one request: ask for it in chunks with a Range header.",
                )
            return web.Response(
                status=200, body=data, headers=headers, content_type="application/octet-stream"
            )
        first = int(match[1])
        last = int(match[2]) if match[2] else size - 1
        if first >= size or last < first:
            return replies.error(
                416,
                INVALID,
                f"The range bytes={first}-{match[2]} is outside the file of {size} bytes.",
                {"Content-Range": f"bytes */{size}"},
            )
        # Less than asked for, as a server may: a client must loop on what it got.
        end = min(last, size - 1, first + config.file_chunk_size - 1)
        headers["Content-Range"] = f"bytes {first}-{end}/{size}"
        return web.Response(
            status=206,
            body=data[first : end + 1],
            headers=headers,
            content_type="application/octet-stream",
        )

    return download
