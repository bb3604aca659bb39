"""Hostile answers: an org (or something in front of it) that misbehaves on purpose.

Usage::

    config = SimulatorConfig(hostile_contacts={contact: "redirect"}, hostile_share={"no-data": 0.1})

Unlike the random faults of ``faults.py`` (which hit a share of *requests*, and which a client is
expected to survive by retrying), a hostile kind is bound to a *contact*: every answer about that
contact misbehaves the same way, so a test can say exactly which dossier must fail and why, and a
resume meets the same misbehaviour again. A contact is hostile when ``hostile_contacts`` names it,
or else when a stable hash of (seed, kind, contact) falls below ``hostile_share[kind]``.

Each kind is one function from the normal answer it replaces (``HostileContext``) to the response
the client gets. It runs after authentication, validation and service protection, so a hostile
answer costs the identity a request like any other. Add a kind by writing its function and
registering it in ``KINDS``; tests, the demo and ``sar-bulk simulate --hostile`` pick it up.
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

import orjson
from aiohttp import web

from sar_bulk.simulator import replies
from sar_bulk.simulator.hashing import stable_unit

__all__ = ["KINDS", "HostileContext", "hostile_kind_for"]


@dataclass(frozen=True, slots=True)
class HostileContext:
    """What a hostile kind may use to build its answer."""

    request: web.Request
    base_url: str
    contact_id: str
    interaction_type: str
    page_number: int
    # The body the org would have sent (a complete, correct page) and its headers.
    page_body: bytes
    page_headers: Mapping[str, str]
    token: str


HostileAnswer = Callable[[HostileContext], Awaitable[web.StreamResponse]]


async def _no_data(ctx: HostileContext) -> web.StreamResponse:
    """A 200 whose body has no ``Data`` key at all: ``{}``."""
    return replies.page(orjson.dumps({}), dict(ctx.page_headers))


# --- Retry-After the client must not trust (issue 8, item 3): each is a 429 of the requests
# limit for every request about the contact, with one kind of bad Retry-After.

_THROTTLE_MESSAGE = "Rate limit is exceeded. Try again later."


def _throttled_with(retry_after: Callable[[], str]) -> HostileAnswer:
    async def answer(ctx: HostileContext) -> web.StreamResponse:
        headers = {"Retry-After": retry_after()}
        return replies.error(429, "0x80072322", _THROTTLE_MESSAGE, headers)

    return answer


# 31 years: a client that obeys it closes its gate for good.
_retry_after_huge = _throttled_with(lambda: "1000000000")
_retry_after_negative = _throttled_with(lambda: "-30")
_retry_after_garbage = _throttled_with(lambda: "soon, maybe")
# An HTTP-date an hour ago: a client that takes it as "wait 0 s" hammers the org.
_retry_after_past_date = _throttled_with(
    lambda: email.utils.formatdate(time.time() - 3600, usegmt=True)
)

KINDS: dict[str, HostileAnswer] = {
    "no-data": _no_data,
    # Retry-After the client must bound (throttle).
    "retry-after-huge": _retry_after_huge,
    "retry-after-negative": _retry_after_negative,
    "retry-after-garbage": _retry_after_garbage,
    "retry-after-past-date": _retry_after_past_date,
}


def hostile_kind_for(
    seed: int,
    contact_id: str,
    contacts: Mapping[str, str],
    shares: Mapping[str, float],
) -> str | None:
    """The hostile kind bound to this contact, if any (``contacts`` wins over ``shares``)."""
    named = contacts.get(contact_id)
    if named is not None:
        return named
    for kind, share in shares.items():
        if share > 0 and stable_unit(seed, "hostile", kind, contact_id) < share:
            return kind
    return None
