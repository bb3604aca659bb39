"""The Web API v9.2 of the simulated org: table rows, metadata, and real-time export requests.

Served under ``/api/data/v9.{0,1,2}/`` (``{id}`` is a dashed GUID)::

    GET  contacts({id})                     GET  {set}?$filter=...   (every table below)
    GET  leads | accounts | activitypointers | activityparties
    GET  msdynmkt_contactpointconsent4s     GET  msdynmkt_gdprrequests[({id})]
    POST msdynmkt_gdprrequests
    GET  msdynmkt_gdprrequests({id})/msdynmkt_dsrrequestdata/$value   (Range: bytes=a-b)
    GET  EntityDefinitions(LogicalName='x')[/Attributes...]   (metadata.py)

This module routes and checks; rendering.py finds and renders rows, exports.py creates requests
and serves their files, metadata.py answers EntityDefinitions.

Misbehaviour on purpose: ``contacts({id})`` of a contact in ``misfiled_contacts`` answers with
another contact's row (the client must refuse it).

A request meets, in turn: the token (401), the path (404 for a table this ``org_kind`` lacks, 405),
the privilege (403 for ``forbidden_identities`` and ``forbidden_tables``), the query options (400),
service protection (429), latency and faults (the action's, see gate.py), then the answer.
Paging: ``Prefer: odata.maxpagesize=N`` (default ``max_page_size``) and ``@odata.nextLink``, an
absolute URL with the same query and an opaque ``$skiptoken`` bound to it. Annotations only when
``Prefer: odata.include-annotations=...`` asks for them; ``Preference-Applied`` names what was
honoured.
"""

from __future__ import annotations

import re
from typing import Any

import orjson
from aiohttp import web
from yarl import URL

from sar_bulk.simulator import replies
from sar_bulk.simulator.counters import Visit
from sar_bulk.simulator.exports import Answer, create, parse_create, prepare_download
from sar_bulk.simulator.faults import SIGN_IN_PAGE
from sar_bulk.simulator.gate import apply_fault, authenticate, base_url, lose_answer
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
from sar_bulk.simulator.refusal import (
    INVALID,
    NOT_FOUND,
    PRIVILEGE_MISSING,
    ROW_MISSING,
    Refusal,
    json_answer,
)
from sar_bulk.simulator.rendering import ID_TYPES, find_rows, render
from sar_bulk.simulator.rows import Row
from sar_bulk.simulator.skiptoken import Position
from sar_bulk.simulator.state import STATE, SimulatorState
from sar_bulk.simulator.tables import GDPR, TABLES, Table, table_by_logical

__all__ = ["handle"]

_PARTIES_NAV = "activitypointer_activity_parties"
_KEYED = re.compile(r"([A-Za-z0-9_]+)\(([^)]*)\)(/.*)?")
_METADATA = re.compile(r"EntityDefinitions\(LogicalName='([A-Za-z0-9_]+)'\)(/.*)?")
_QUERY_OPTIONS = ("$filter", "$select", "$expand", "$skiptoken", "$top")


def _expand_parties(expand: str | None) -> tuple[bool, tuple[str, ...] | None]:
    """``$expand=activitypointer_activity_parties[($select=a,b)]`` -> (wanted, its $select)."""
    if expand is None:
        return False, None
    match = re.fullmatch(rf"{_PARTIES_NAV}(?:\(\$select=([A-Za-z0-9_,]+)\))?", expand.strip())
    if match is None:
        raise Refusal(
            400,
            NOT_FOUND,
            f"Could not find a navigation property for the $expand '{expand}'; the simulated org "
            f"expands only {_PARTIES_NAV} on activitypointers.",
        )
    return True, parse_select(match[1]) if match[1] else None


def _check_columns(table: Table, columns: set[str], where: str) -> None:
    for column in sorted(columns):
        if column not in table.columns:
            raise Refusal(
                400,
                NOT_FOUND,
                f"Could not find a property named '{column}' on type "
                f"'Microsoft.Dynamics.CRM.{table.logical}' ({where}).",
            )


def _check_types(table: Table, expr: Expr) -> None:
    """Dataverse refuses ``guidcolumn eq 'text'`` and ``textcolumn eq <guid>``: so does this org."""
    if isinstance(expr, Eq):
        is_id = table.columns[expr.column][1] in ID_TYPES
        if expr.value is not None and is_id != isinstance(expr.value, Guid):
            left, right = ("Edm.Guid", "Edm.String") if is_id else ("Edm.String", "Edm.Guid")
            if not isinstance(expr.value, str):
                right = "Edm.Int32" if not isinstance(expr.value, bool) else "Edm.Boolean"
            if is_id or isinstance(expr.value, Guid):
                raise Refusal(
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
    except Refusal as refusal:
        visit.outcome(refusal.outcome)
        return replies.error(refusal.status, refusal.code, refusal.message)
    finally:
        visit.close()


async def _route(request: web.Request, state: SimulatorState, visit: Visit) -> web.StreamResponse:
    tail = request.match_info.get("tail", "")
    version = request.path.split("/")[3]
    segment = tail.split("/", 1)[0].split("(", 1)[0]
    if segment == replies.ACTION:
        raise Refusal(
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
            raise Refusal(
                404,
                ROW_MISSING,
                f"Could not find an entity with the logical name '{metadata[1]}'.",
                "not_found",
            )
    if table is None or not table.present(config.org_kind):
        raise Refusal(
            404, NOT_FOUND, f"Resource not found for the segment '{segment}'.", "not_found"
        )
    allowed = ("GET", "POST") if table is GDPR and not keyed else ("GET",)
    if request.method not in allowed:
        raise Refusal(
            405,
            "0x8006088a",
            f"The requested resource does not support http method '{request.method}'.",
        )
    forbidden = config.forbidden_tables
    if (
        identity in config.forbidden_identities
        or table.logical in forbidden
        or f"{identity}:{table.logical}" in forbidden
    ):
        raise Refusal(
            403,
            PRIVILEGE_MISSING,
            _privilege_message(identity, table, metadata is not None),
            "forbidden",
        )
    body = await request.read() if request.method == "POST" else b""
    answer = _prepare(request, state, table, version, metadata, keyed, body, identity)
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
        response = await answer()
        if fault == "lost":
            return lose_answer(request)
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
    body: bytes,
    identity: str,
) -> Answer:
    """Check the query now (400 before service protection, as for the action); answer later."""
    query = request.query
    try:
        prefer = parse_prefer(request.headers.getall("Prefer", []))
        select = parse_select(query.get("$select"))
    except QueryError as exc:
        raise Refusal(400, INVALID, str(exc)) from None
    context = f"{base_url(request)}/api/data/{version}/$metadata"
    if metadata is not None:
        try:
            document = answer_metadata(
                table,
                metadata[2] or "",
                seed=state.config.seed,
                options=state.realtime.options,
                select=select,
                expand=query.get("$expand"),
                context=context,
            )
        except QueryError as exc:
            raise Refusal(400, INVALID, str(exc)) from None
        except MetadataNotFound as exc:
            raise Refusal(404, NOT_FOUND, str(exc), "not_found") from None

        async def metadata_answer() -> web.Response:
            return json_answer(200, document)

        return metadata_answer
    if request.method == "POST":
        fields = parse_create(request, state, body)

        async def made() -> web.Response:
            return create(request, state, table, version, fields, identity)

        return made
    expand, party_select = _expand_parties(query.get("$expand"))
    if expand and table.entity_set != "activitypointers":
        raise Refusal(
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
        raise Refusal(
            400, INVALID, f"The query option '{unknown[0]}' is not supported by the simulated org."
        )
    text = query.get("$filter")
    if not text:
        raise Refusal(
            400,
            INVALID,
            "The simulated org builds rows on demand and cannot list the whole "
            f"'{table.entity_set}' table: add a $filter on {' or '.join(table.anchors)} with eq.",
        )
    try:
        expr = parse_filter(text)
    except QueryError as exc:
        raise Refusal(400, NOT_FOUND, str(exc)) from None
    _check_columns(table, expr.columns(), "$filter")
    _check_types(table, expr)
    anchors = expr.anchors()
    if anchors is None or any(column not in table.anchors for column, _ in anchors):
        raise Refusal(
            400,
            INVALID,
            f"The simulated org answers a '{table.entity_set}' query only when its $filter pins "
            f"{' or '.join(table.anchors)} with eq (or In); got '{text}'.",
        )
    size = min(prefer.max_page_size or state.config.max_page_size, state.config.max_page_size)
    top = query.get("$top")
    if top is not None and (not top.isdigit() or int(top) < 1):
        raise Refusal(400, INVALID, f"Invalid $top '{top}'.")
    key = orjson.dumps(
        [table.entity_set, text, query.get("$select"), query.get("$expand"), top, size]
    ).decode()
    offset = 0
    token = query.get("$skiptoken")
    if token is not None:
        position = state.skip_tokens.open(token, key)
        if position is None:
            raise Refusal(
                400,
                INVALID,
                "Invalid $skiptoken: it was not issued for this query. Follow @odata.nextLink "
                "unchanged (and keep the same Prefer: odata.maxpagesize).",
            )
        offset = position.offset

    async def collection() -> web.Response:
        seen: dict[str, Row] = {}
        for column, value in anchors:
            for row in find_rows(state, table, column, value):
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
        return json_answer(200, body, _applied(prefer, page_size_used=True))

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
    out = render(row, table, select, prefer)
    if expand:
        found = state.rows.activity(row.values["activityid"])
        parties = found[1] if found else []
        out[_PARTIES_NAV] = [
            render(p, TABLES["activityparties"], party_select, prefer) for p in parties
        ]
    return out


def _neighbour(row_id: str) -> str:
    """Another id next to ``row_id`` (its last hex digit changed): whose row a misfile sends."""
    last = "0" if row_id[-1] != "0" else "1"
    return row_id[:-1] + last


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
) -> Answer:
    row_id = keyed[2]
    if not is_dashed_guid(row_id):
        raise Refusal(
            400,
            INVALID,
            f"Bad Request - Error in query syntax: '{row_id}' is not a valid key for "
            f"{table.entity_set} (a GUID without quotes or braces).",
        )
    row_id = row_id.lower()
    if table.entity_set == "activityparties":
        # Documented: activityparty supports RetrieveMultiple only (query the collection).
        raise Refusal(
            400,
            INVALID,
            "The 'Retrieve' method does not support entities of type 'activityparty'. Query "
            "activityparties with $filter=_activityid_value eq {id} instead.",
        )
    rest = keyed[3]
    if rest is not None and (table is not GDPR or rest != "/msdynmkt_dsrrequestdata/$value"):
        raise Refusal(
            404,
            NOT_FOUND,
            f"Resource not found for the segment '{rest.strip('/').split('/')[0]}'.",
            "not_found",
        )
    found = find_rows(state, table, table.primary_id, Guid(row_id))
    if found and table.entity_set == "contacts" and row_id in state.config.misfiled_contacts:
        found = find_rows(state, table, table.primary_id, Guid(_neighbour(row_id))) or found
    if not found:
        raise Refusal(
            404, ROW_MISSING, f"{table.logical} With Id = {row_id} Does Not Exist", "not_found"
        )
    row = found[0]
    if rest is not None:
        return prepare_download(request, state, row_id)

    async def single() -> web.Response:
        body = {
            "@odata.context": f"{context}#{table.entity_set}/$entity",
            **_with_parties(state, row, table, select, prefer, expand, party_select),
        }
        return json_answer(200, body, _applied(prefer, page_size_used=False))

    return single
