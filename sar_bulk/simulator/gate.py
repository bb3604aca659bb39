"""What every call meets, the action and the Web API alike: the token, then latency and faults.

Usage (inside a handler)::

    identity = authenticate(request, state, visit)
    if isinstance(identity, web.StreamResponse):
        return identity                      # 401
    ...                                      # 404/403/400 checks, then service protection
    fault, broken = await apply_fault(request, state, visit)
    if broken is not None:
        return broken                        # 500/502/503/dropped connection

One place, so a Web API call costs and fails exactly like an action call.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from sar_bulk.simulator import replies
from sar_bulk.simulator.counters import Visit
from sar_bulk.simulator.faults import (
    GATEWAY_502,
    SERVICE_UNAVAILABLE_503,
    SQL_TRANSIENT_CODE,
    SQL_TRANSIENT_MESSAGE,
)
from sar_bulk.simulator.state import SimulatorState
from sar_bulk.simulator.validation import bearer_token, identity_of

__all__ = ["apply_fault", "authenticate", "base_url", "lose_answer"]


def base_url(request: web.Request) -> str:
    return f"{request.scheme}://{request.host}"


def authenticate(request: web.Request, state: SimulatorState, visit: Visit) -> str | web.Response:
    """The identity of a valid bearer token, or the 401 to send."""
    config = state.config
    token = bearer_token(request.headers.get("Authorization"))
    if token is None or not token.startswith(config.token_prefix):
        visit.outcome("unauthorized")
        return replies.unauthorized(base_url(request), token_rejected=token is not None)
    identity = identity_of(token)
    visit.identify(identity)
    if state.token_expired(token):
        visit.outcome("unauthorized")
        return replies.unauthorized(base_url(request), token_rejected=True)
    return identity


def lose_answer(request: web.Request) -> web.Response:
    """Close the connection: the answer returned here never reaches the client."""
    if request.transport is not None:
        request.transport.close()
    return web.Response()


async def apply_fault(
    request: web.Request, state: SimulatorState, visit: Visit
) -> tuple[str | None, web.Response | None]:
    """Latency, then the fault drawn for this admitted request.

    Returns the fault's name and, for faults that replace the answer, the answer to send.
    ``slow`` has already waited when this returns; ``malformed`` is the caller's to build, and
    ``lost`` the caller's to carry out before it closes the connection (``lose_answer``).
    """
    config = state.config
    delay = config.latency + state.faults.jitter(config.latency_jitter)
    fault = state.faults.pick()
    if delay > 0:
        await asyncio.sleep(delay)
    if fault is not None:
        visit.fault(fault)
    if fault == "500":
        return fault, replies.error(500, SQL_TRANSIENT_CODE, SQL_TRANSIENT_MESSAGE)
    if fault in ("502", "503"):
        body = GATEWAY_502 if fault == "502" else SERVICE_UNAVAILABLE_503
        return fault, web.Response(status=int(fault), body=body, content_type="text/html")
    if fault == "drop":
        return fault, lose_answer(request)
    if fault == "slow":
        await asyncio.sleep(config.slow_seconds)
    return fault, None
