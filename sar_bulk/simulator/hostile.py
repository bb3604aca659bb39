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


async def _echo_token(ctx: HostileContext) -> web.StreamResponse:
    """A 400 in Dataverse's error shape whose message repeats the bearer token it received.

    Servers (and proxies) that echo the request in an error are common; the client keeps an
    error's message as its detail, so this is how a token could reach a report or a log.
    """
    # The token bare, without "Bearer" before it: only knowing the value can catch it.
    message = f"Invalid request for contact {ctx.contact_id}; the token was {ctx.token}"
    return replies.error(400, "0x80040203", message)


KINDS: dict[str, HostileAnswer] = {
    "no-data": _no_data,
    "echo-token": _echo_token,
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
