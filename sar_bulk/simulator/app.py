"""The aiohttp application: the action's handler and the routes (the Web API is webapi.py).

A request meets these checks in turn, and the first that fails answers it:

1. the org has no such action (``action_missing``, or ``org_kind`` realtime/dataverse) -> 404;
2. ``Authorization: Bearer <token>`` with the configured prefix, not older than
   ``token_lifetime`` (counted from the first time the simulator saw it) -> else 401;
   identities in ``forbidden_identities``, or in ``revoked_after`` once they have sent that
   many requests -> 403;
3. protocol headers (Content-Type, Accept, OData versions) -> 400;
4. the body and, if any, its skip token -> 400;
5. service protection for the identity (the part of the token before the first ".") -> 429;
6. latency, then a fault drawn for this request (500/502/503/drop/slow/malformed);
7. the page.

Assumption about ``Top`` (its documentation only says it "limits how many interactions come
back"): ``Top`` is taken as the page size, capped by the server's ``page_size``, and paging with
``NextSkipToken`` goes on until the result is exhausted; ``Top`` 0 means the server's page size.
When a result ends exactly on a full page, the server sometimes (stably per query) still hands out
a token, and the page after it is empty, as paging APIs that do not look ahead do.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import orjson
from aiohttp import web

from sar_bulk.simulator import replies, webapi
from sar_bulk.simulator.config import SimulatorConfig
from sar_bulk.simulator.counters import Counters, Visit
from sar_bulk.simulator.dataset import Dataset
from sar_bulk.simulator.faults import SIGN_IN_PAGE, FaultPicker
from sar_bulk.simulator.gate import apply_fault, authenticate, base_url, lose_answer
from sar_bulk.simulator.hashing import Draw, stable_digest, stable_unit
from sar_bulk.simulator.hostile import KINDS as HOSTILE_KINDS
from sar_bulk.simulator.hostile import HostileContext, hostile_kind_for
from sar_bulk.simulator.protection import ServiceProtection, Throttled
from sar_bulk.simulator.realtime import Realtime
from sar_bulk.simulator.rows import OrgRows
from sar_bulk.simulator.skiptoken import Position, SkipTokenCodec
from sar_bulk.simulator.state import STATE, SimulatorState
from sar_bulk.simulator.validation import (
    INVALID_ARGUMENT,
    LoadRequest,
    Rejection,
    bearer_token,
    check_headers,
    parse_body,
)

__all__ = ["STATE", "SimulatorState", "create_app"]

API_ROOT = "/api/data/v9.0/"
API_ROOTS = ("/api/data/v9.0/", "/api/data/v9.1/", "/api/data/v9.2/")
NOT_FOUND = "0x80060888"
PRIVILEGE_MISSING = "0x80040220"
_EXTRA_EMPTY_PAGE_SHARE = 0.5


def _base_url(request: web.Request) -> str:
    return base_url(request)


def _forbidden(identity: str) -> web.Response:
    user = Draw(stable_digest("user", identity)).guid()
    return replies.error(
        403,
        PRIVILEGE_MISSING,
        f"Principal user (Id={user}, type=8, roleCount=0, privilegeCount=0, accessMode=4) is "
        "missing prvReadmsdyncrm_interaction privilege on entity 'msdyncrm_interaction'. "
        "Assign the application user a security role that includes this privilege.",
    )


def _bad_request(visit: Visit, rejection: Rejection) -> web.Response:
    visit.outcome("bad_request")
    return replies.error(rejection.status, rejection.code, rejection.message)


async def _action(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    visit = state.counters.visit()
    visit.kind("action")
    try:
        return await _check_and_answer(request, state, visit)
    finally:
        visit.close()


def _revoked(state: SimulatorState, identity: str) -> bool:
    """The identity's role was removed after ``revoked_after[identity]`` of its requests."""
    after = state.config.revoked_after.get(identity)
    return after is not None and state.counters.requests_of(identity) > after


async def _check_and_answer(
    request: web.Request, state: SimulatorState, visit: Visit
) -> web.StreamResponse:
    config = state.config
    if config.action_missing or config.org_kind in ("realtime", "dataverse"):
        visit.outcome("not_found")
        return replies.error(
            404, NOT_FOUND, f"Resource not found for the segment '{replies.ACTION}'."
        )
    identity = authenticate(request, state, visit)
    if isinstance(identity, web.Response):
        return identity
    if identity in config.forbidden_identities or _revoked(state, identity):
        visit.outcome("forbidden")
        return _forbidden(identity)
    rejection = check_headers(request.headers)
    if rejection is not None:
        return _bad_request(visit, rejection)
    parsed = parse_body(await request.read())
    if isinstance(parsed, Rejection):
        return _bad_request(visit, parsed)
    position = Position(1, 0)
    if parsed.skip_token is not None:
        opened = state.skip_tokens.open(parsed.skip_token, parsed.query())
        if opened is None:
            return _bad_request(
                visit,
                Rejection(
                    400,
                    INVALID_ARGUMENT,
                    "Invalid SkipToken: it was not issued for this query. Send back the "
                    "NextSkipToken of the previous page unchanged.",
                ),
            )
        position = opened
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
        return await _answer(request, state, visit, parsed, position, identity)
    finally:
        state.protection.release(verdict)


async def _answer(
    request: web.Request,
    state: SimulatorState,
    visit: Visit,
    query: LoadRequest,
    position: Position,
    identity: str,
) -> web.StreamResponse:
    config = state.config
    fault, broken = await apply_fault(request, state, visit)
    if broken is not None:
        return broken
    body = _page_body(state, _base_url(request), query, position)
    if fault == "malformed":
        return _malformed(state, body)
    headers = replies.rate_headers(state.protection.remaining(identity))
    if config.dop_hint is not None:
        headers["x-ms-dop-hint"] = str(config.dop_hint)
    hostile = hostile_kind_for(
        config.seed, query.contact_id, config.hostile_contacts, config.hostile_share
    )
    if hostile is not None:
        visit.fault(f"hostile:{hostile}")
        context = HostileContext(
            request=request,
            base_url=_base_url(request),
            contact_id=query.contact_id,
            interaction_type=query.interaction_type.value,
            page_number=position.page,
            page_body=body,
            page_headers=headers,
            token=bearer_token(request.headers.get("Authorization")) or "",
        )
        return await HOSTILE_KINDS[hostile](context)
    visit.served(query.contact_id, query.interaction_type.value)
    if fault == "lost":
        return lose_answer(request)
    response = replies.page(body, headers)
    response.set_cookie("ARRAffinity", state.affinity, path="/", httponly=True, secure=True)
    return response


def _page_body(state: SimulatorState, base_url: str, query: LoadRequest, at: Position) -> bytes:
    config = state.config
    size = config.page_size if not query.top else min(query.top, config.page_size)
    args = (query.contact_id, query.interaction_type, query.date_from, query.date_to)
    total = state.dataset.count(*args)
    records = state.dataset.page(*args, offset=at.offset, limit=size)
    following = at.offset + len(records)
    more = following < total or (
        bool(records)
        and len(records) == size
        and stable_unit(config.seed, "extra-empty-page", query.query()) < _EXTRA_EMPTY_PAGE_SHARE
    )
    token = (
        state.skip_tokens.issue(query.query(), Position(at.page + 1, following)) if more else None
    )
    return replies.page_body(base_url, records, token, style_key=f"{config.seed}|{query.query()}")


def _malformed(state: SimulatorState, body: bytes) -> web.Response:
    kind = state.faults.malformed_kind()
    if kind == "html":
        return web.Response(status=200, body=SIGN_IN_PAGE, content_type="text/html")
    if kind == "truncated":
        broken = body[: max(1, len(body) // 2)]  # a strict prefix of an object is never JSON
    else:
        page = orjson.loads(body)
        page["Data"] = '{"Message": "Object reference not set to an instance of an object."}'
        broken = orjson.dumps(page)
    return replies.page(broken, {})


async def _counters(request: web.Request) -> web.Response:
    snapshot = request.app[STATE].counters.snapshot()
    return web.Response(body=orjson.dumps(snapshot), content_type="application/json")


async def _reset(request: web.Request) -> web.Response:
    request.app[STATE].counters.reset()
    return web.Response(status=204)


def create_app(
    config: SimulatorConfig,
    *,
    clock: Callable[[], float] = time.monotonic,
    wall_clock: Callable[[], float] = time.time,
) -> web.Application:
    """The simulator as an aiohttp application (``clock`` drives limits and token ages)."""
    app = web.Application()
    app[STATE] = SimulatorState(
        config=config,
        dataset=Dataset(config.seed, config.heavy_contacts, heavy_fraction=config.heavy_fraction),
        protection=ServiceProtection(
            request_limit=config.request_limit,
            identity_limits=config.identity_limits,
            window_seconds=config.window_seconds,
            concurrency_limit=config.concurrency_limit,
            execution_time_limit=config.execution_time_limit,
            concurrency_retry_after=config.concurrency_retry_after,
            clock=clock,
        ),
        counters=Counters(),
        faults=FaultPicker(config.seed, config.fault_rates()),
        skip_tokens=SkipTokenCodec.for_seed(config.seed),
        clock=clock,
        wall_clock=wall_clock,
        affinity=stable_digest("affinity", config.seed).hex(),
        rows=OrgRows(
            config.seed,
            missing_contact_share=config.missing_contact_share,
            missing_contacts=config.missing_contacts,
        ),
        realtime=Realtime(
            config.seed,
            delay=config.realtime_delay,
            never_share=config.realtime_never_share,
            never_inputs=config.realtime_never_inputs,
            clock=clock,
            wall_clock=wall_clock,
        ),
    )
    for root in API_ROOTS:
        app.router.add_post(root + replies.ACTION, _action)
        app.router.add_route("*", root + "{tail:.*}", webapi.handle)
    app.router.add_get("/_sim/counters", _counters)
    app.router.add_post("/_sim/reset", _reset)
    return app
