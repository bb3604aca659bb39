"""The wire format of the simulated Web API: headers, error shape, pages and Retry-After.

Every JSON answer carries ``Content-Type: application/json; odata.metadata=minimal`` and
``OData-Version: 4.0``; errors use ``{"error": {"code": "0x...", "message": "..."}}``; a 401 has
an empty body and a ``WWW-Authenticate`` challenge, as Dataverse sends.

Pages vary the way an undocumented API may: the last page ends with ``"NextSkipToken": null``,
``""`` or no key at all, and an empty result is ``"Data": "[]"`` (usually), ``null`` or absent,
chosen by a stable hash of the query. ``Data`` is always a *string* holding a JSON array, and
every page names the action's response type in ``@odata.context``: that is what tells a client
an answer with a null or absent ``Data`` is the action's "nothing found", not some other body.
"""

from __future__ import annotations

import email.utils
import math
from typing import Any

import orjson
from aiohttp import web

from sar_bulk.simulator.config import RetryAfterFormat
from sar_bulk.simulator.hashing import stable_unit
from sar_bulk.simulator.protection import Remaining, Throttled

__all__ = [
    "ACTION",
    "JSON_TYPE",
    "error",
    "format_retry_after",
    "page",
    "page_body",
    "rate_headers",
    "throttled",
    "unauthorized",
]

JSON_TYPE = "application/json; odata.metadata=minimal"
ACTION = "msdyncrm_LoadInteractionsPublic"
_BASE_HEADERS = {"OData-Version": "4.0"}


def _json(status: int, body: bytes, headers: dict[str, str] | None = None) -> web.Response:
    response = web.Response(status=status, body=body, headers={**_BASE_HEADERS, **(headers or {})})
    response.headers["Content-Type"] = JSON_TYPE
    return response


def error(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> web.Response:
    """An answer in Dataverse's error shape."""
    body = orjson.dumps({"error": {"code": code, "message": message}})
    return _json(status, body, headers)


def unauthorized(base_url: str, *, token_rejected: bool = False) -> web.Response:
    """401 with an empty body and the Bearer challenge naming the org as resource.

    A token that was sent but refused (foreign or expired) adds ``error=invalid_token``, as
    Dataverse does; a missing one gets the bare challenge.
    """
    error_part = (
        "error=invalid_token, error_description=Error during token validation!, "
        if token_rejected
        else ""
    )
    challenge = (
        f"Bearer {error_part}authorization_uri=https://login.microsoftonline.com/common/oauth2/"
        f"authorize, resource_id={base_url}"
    )
    return web.Response(status=401, headers={**_BASE_HEADERS, "WWW-Authenticate": challenge})


def format_retry_after(seconds: float, style: RetryAfterFormat, wall_now: float) -> str:
    """``Retry-After`` in the requested style; never shorter than ``seconds``.

    ``seconds`` rounds up to a whole second (at least 1); ``fractional`` keeps milliseconds (for
    time-scaled tests); ``http-date`` is an IMF-fixdate, rounded up because it has 1 s resolution.
    """
    if style == "fractional":
        return f"{max(0.001, math.ceil(seconds * 1000) / 1000):.3f}"
    if style == "http-date":
        return email.utils.formatdate(math.ceil(wall_now + max(seconds, 0.0)), usegmt=True)
    return str(max(1, math.ceil(seconds)))


def rate_headers(remaining: Remaining) -> dict[str, str]:
    """Dataverse's diagnostic headers (documented as not for pacing)."""
    return {
        "x-ms-ratelimit-burst-remaining-xrm-requests": str(remaining.requests),
        "x-ms-ratelimit-time-remaining-xrm-requests": f"{remaining.execution_ms:,.2f}",
    }


def throttled(
    refusal: Throttled, style: RetryAfterFormat, wall_now: float, remaining: Remaining
) -> web.Response:
    """429 with the limit's code and message and a ``Retry-After``."""
    headers = {"Retry-After": format_retry_after(refusal.retry_after, style, wall_now)}
    headers.update(rate_headers(remaining))
    return error(429, refusal.limit.code, refusal.message, headers)


def page_body(
    base_url: str, records: list[dict[str, Any]], next_token: str | None, *, style_key: str
) -> bytes:
    """The JSON body of one page; ``style_key`` picks the end-of-paging spelling stably."""
    body: dict[str, Any] = {
        "@odata.context": f"{base_url}/api/data/v9.0/$metadata#Microsoft.Dynamics.CRM."
        f"{ACTION}Response",
    }
    if records:
        body["Data"] = orjson.dumps(records).decode()
    else:
        empty = stable_unit("empty-data", style_key)
        if empty < 0.8:
            body["Data"] = "[]"
        elif empty < 0.9:
            body["Data"] = None
    if next_token is not None:
        body["NextSkipToken"] = next_token
    else:
        ending = int(stable_unit("end-of-paging", style_key) * 3)
        if ending == 0:
            body["NextSkipToken"] = None
        elif ending == 1:
            body["NextSkipToken"] = ""
    return orjson.dumps(body)


def page(body: bytes, headers: dict[str, str]) -> web.Response:
    """200 with a page body and the success headers (dop hint, rate headers, affinity cookie)."""
    return _json(200, body, headers)
