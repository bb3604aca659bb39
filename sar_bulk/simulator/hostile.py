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
import functools
import struct
import time
import zlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from sar_bulk.simulator import replies
from sar_bulk.simulator.hashing import Draw, stable_digest, stable_unit

__all__ = ["EXACT_NUMBERS", "KINDS", "HostileContext", "hostile_kind_for"]


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


def _page(ctx: HostileContext) -> dict[str, Any]:
    document: dict[str, Any] = orjson.loads(ctx.page_body)
    return document


def _records(document: dict[str, Any]) -> list[dict[str, Any]]:
    data = document.get("Data")
    records: list[dict[str, Any]] = orjson.loads(data) if isinstance(data, str) else []
    return records


def _answer(ctx: HostileContext, document: dict[str, Any]) -> web.StreamResponse:
    return replies.page(orjson.dumps(document), dict(ctx.page_headers))


async def _value_shape(ctx: HostileContext) -> web.StreamResponse:
    """A Web API collection instead of the action's answer: ``{"value": [...]}``."""
    document = _page(ctx)
    return _answer(
        ctx,
        {
            "@odata.context": f"{ctx.base_url}/api/data/v9.0/$metadata#msdyncrm_interactions",
            "value": _records(document),
        },
    )


async def _lowercase_data(ctx: HostileContext) -> web.StreamResponse:
    """The action's answer with ``data`` instead of ``Data`` (and its @odata.context kept)."""
    document = _page(ctx)
    document["data"] = document.pop("Data", "[]")
    return _answer(ctx, document)


async def _error_in_200(ctx: HostileContext) -> web.StreamResponse:
    """A 200 whose body is Dataverse's error shape."""
    body = orjson.dumps(
        {"error": {"code": "0x80040216", "message": "An unexpected error occurred."}}
    )
    return replies.page(body, dict(ctx.page_headers))


async def _data_not_string(ctx: HostileContext) -> web.StreamResponse:
    """``Data`` as the JSON array itself rather than a string holding it."""
    document = _page(ctx)
    document["Data"] = _records(document)
    return _answer(ctx, document)


async def _redirect(ctx: HostileContext) -> web.StreamResponse:
    """307 to another host over plain http (nothing listens there: it must never be tried)."""
    return web.Response(
        status=307,
        headers={"Location": f"http://10.0.0.1/api/data/v9.0/{replies.ACTION}"},
    )


async def _contact_not_found(ctx: HostileContext) -> web.StreamResponse:
    """404 about the contact (0x80040217), not about the action (0x80060888)."""
    return replies.error(404, "0x80040217", f"contact With Id = {ctx.contact_id} Does Not Exist")


async def _record_forbidden(ctx: HostileContext) -> web.StreamResponse:
    """403 about this contact's record (its owner's business unit is out of the role's reach),
    not about the identity: its other contacts answer."""
    return replies.error(
        403,
        "0x80040220",
        f"SecLib::AccessCheckEx failed. Returned hr = -2147187962, ObjectID: {ctx.contact_id}, "
        "OwningUser: another business unit; the caller lacks prvReadContact at that depth.",
    )


_BOMB_MEBIBYTES = 1536


@functools.cache
def _gzip_bomb() -> bytes:
    """~1.6 MB of gzip that inflates to 1.5 GiB of zeros, built in well under a second.

    After a full flush deflate forgets its history, so every further MiB of zeros compresses
    to the same bytes: one segment is made and repeated.
    """
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    mebibyte = bytes(1 << 20)
    segment = compressor.compress(mebibyte) + compressor.flush(zlib.Z_FULL_FLUSH)
    crc = 0
    for _ in range(_BOMB_MEBIBYTES):
        crc = zlib.crc32(mebibyte, crc)
    header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"
    size = (_BOMB_MEBIBYTES << 20) & 0xFFFFFFFF
    trailer = struct.pack("<II", crc, size)
    return header + segment * _BOMB_MEBIBYTES + compressor.flush() + trailer


async def _gzip_bomb_answer(ctx: HostileContext) -> web.StreamResponse:
    """A small gzip body (Content-Encoding: gzip) that inflates to 1.5 GiB."""
    response = web.Response(
        status=200,
        body=_gzip_bomb(),
        headers={**dict(ctx.page_headers), "Content-Encoding": "gzip", "OData-Version": "4.0"},
    )
    response.headers["Content-Type"] = replies.JSON_TYPE
    return response


_DEPTH = 100_000


async def _deep_nesting(ctx: HostileContext) -> web.StreamResponse:
    """``Data`` whose one interaction nests 100,000 arrays deep (with a float inside)."""
    document = _page(ctx)
    head = orjson.dumps(
        {
            "InteractionId": Draw(stable_digest("deep", ctx.contact_id)).guid(),
            "InteractionType": ctx.interaction_type,
            "ContactId": ctx.contact_id,
        }
    )[:-1]
    document["Data"] = "[" + head.decode() + ',"Deep":' + "[" * _DEPTH + "1.5" + "]" * _DEPTH + "}]"
    return _answer(ctx, document)


def _with_field(ctx: HostileContext, field: str) -> web.StreamResponse:
    """The page with ``field`` (raw JSON text) added to every interaction."""
    document = _page(ctx)
    records = _records(document)
    lines = [orjson.dumps(record)[:-1].decode() + "," + field + "}" for record in records]
    document["Data"] = "[" + ",".join(lines) + "]"
    return _answer(ctx, document)


async def _lone_surrogate(ctx: HostileContext) -> web.StreamResponse:
    """Every interaction gains ``"Note": "caf\\ud800"``: the escape of half a character."""
    return _with_field(ctx, '"Note":"caf\\ud800"')


# Numbers a float would change: more digits than a double holds, below and beyond its range,
# and an integer past 64 bits.
EXACT_NUMBERS = "[0.1000000000000000055511151231257827,1.5e-400,1e400,123456789012345678901234]"


async def _exact_numbers(ctx: HostileContext) -> web.StreamResponse:
    """Every interaction gains ``"Exact": [numbers only exact decoding keeps]``."""
    return _with_field(ctx, f'"Exact":{EXACT_NUMBERS}')


async def _foreign_type(ctx: HostileContext) -> web.StreamResponse:
    """One more interaction of this contact, but of another type than the one asked."""
    document = _page(ctx)
    records = _records(document)
    other = "EmailOpened" if ctx.interaction_type == "EmailSent" else "EmailSent"
    records.append(
        {
            "InteractionId": Draw(stable_digest("foreign", ctx.contact_id)).guid(),
            "InteractionType": other,
            "Timestamp": "2024-01-01T00:00:00Z",
            "ContactId": ctx.contact_id,
        }
    )
    document["Data"] = orjson.dumps(records).decode()
    return _answer(ctx, document)


async def _repeated_records(ctx: HostileContext) -> web.StreamResponse:
    """Every interaction of the page comes twice."""
    document = _page(ctx)
    records = _records(document)
    document["Data"] = orjson.dumps(records + records).decode()
    return _answer(ctx, document)


# --- Retry-After the client must not trust (issue 8, item 3): each is a 429 of the requests
# limit for every request about the contact, with one kind of bad Retry-After.

_THROTTLE_MESSAGE = "Rate limit is exceeded. Try again later."


def _throttled_with(retry_after: Callable[[], str]) -> HostileAnswer:
    async def answer(ctx: HostileContext) -> web.StreamResponse:
        headers = {"Retry-After": retry_after()}
        return replies.error(429, "0x80072322", _THROTTLE_MESSAGE, headers)

    return answer


# An honest 429 with a Retry-After of a minute: a client must send nothing else meanwhile,
# even when it met this answer in its pre-flight call rather than in the run.
_throttled_a_minute = _throttled_with(lambda: "60")
# 31 years: a client that obeys it closes its gate for good.
_retry_after_huge = _throttled_with(lambda: "1000000000")
_retry_after_negative = _throttled_with(lambda: "-30")
_retry_after_garbage = _throttled_with(lambda: "soon, maybe")
# An HTTP-date an hour ago: a client that takes it as "wait 0 s" hammers the org.
_retry_after_past_date = _throttled_with(
    lambda: email.utils.formatdate(time.time() - 3600, usegmt=True)
)


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
    "value-shape": _value_shape,
    "lowercase-data": _lowercase_data,
    "error-in-200": _error_in_200,
    "data-not-string": _data_not_string,
    "redirect": _redirect,
    "contact-not-found": _contact_not_found,
    "record-forbidden": _record_forbidden,
    "gzip-bomb": _gzip_bomb_answer,
    "deep-nesting": _deep_nesting,
    "lone-surrogate": _lone_surrogate,
    "exact-numbers": _exact_numbers,
    "foreign-type": _foreign_type,
    "repeated-records": _repeated_records,
    # Retry-After the client must honour (throttle).
    "throttled": _throttled_a_minute,
    # Retry-After the client must bound (throttle).
    "retry-after-huge": _retry_after_huge,
    "retry-after-negative": _retry_after_negative,
    "retry-after-garbage": _retry_after_garbage,
    "retry-after-past-date": _retry_after_past_date,
    # Secrets the client must never repeat (files and secrets).
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
