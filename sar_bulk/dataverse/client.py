"""One call of ``msdyncrm_LoadInteractionsPublic``: request, decoding, error classification, paging.

Usage::

    async with create_session(Timeouts()) as session:
        client = DataverseClient(OrgHttp(session, OrgUrl.parse(url), tokens))
        query = Query(contact_id, InteractionType.EmailSent)
        async for page in client.pages(query):
            ...

This module knows the wire format and nothing about pacing or retrying: ``pages`` takes the
function that fetches one page, so the engine can wrap ``fetch_page`` in its throttle and retry
policy (see ``fetcher.py``) while the paging rules stay here.

Wire facts (Dataverse Web API): the body's ``Data`` is a *string* holding a JSON array, so it is
decoded twice; ``NextSkipToken`` is null on the last page, and ``""`` or a missing key are
treated the same way; errors come as ``{"error": {"code": "0x...", "message": "..."}}`` or, from
gateways, as HTML or nothing.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Final

import orjson

from sar_bulk.dataverse.http import OrgHttp
from sar_bulk.errors import (
    ActionMissing,
    AuthRejected,
    BadRequest,
    DataverseError,
    Forbidden,
    MalformedResponse,
    PagingError,
    RequestContext,
    ServerError,
    Throttled,
    Transient,
    normalise_code,
)
from sar_bulk.sources.interaction_types import InteractionType

__all__ = [
    "DataverseClient",
    "Page",
    "PageFetcher",
    "Query",
    "classify_error",
    "decode_page",
    "dop_hint",
    "parse_retry_after",
]

# SQL errors Dataverse reports with a 500 that pass by themselves (deadlock, timeout).
_TRANSIENT_SQL_CODES: Final = frozenset({normalise_code(-2147204784), normalise_code(-2147204783)})
_MAX_DETAIL = 300
_JSON_BODY: Final = {"Content-Type": "application/json; charset=utf-8"}
_DIGIT_MAP: Final = bytes(0x30 if 0x30 <= b <= 0x39 else 0x2E for b in range(256))
_DIGIT_RUN: Final = b"0" * 19
# The run must be a JSON number (after ':', '[' or ','), not digits inside a hex InteractionId.
_LONG_NUMBER: Final = re.compile(rb"[:\[,]\s*-?\d{19}")


@dataclass(frozen=True, slots=True)
class Query:
    """What to ask for: one contact, one type, optional range and page size."""

    contact_id: str
    interaction_type: InteractionType
    date_from: str | None = None
    date_to: str | None = None
    top: int | None = None

    def body(self, skip_token: str | None) -> dict[str, object]:
        body: dict[str, object] = {
            "ContactId": self.contact_id,
            "InteractionType": self.interaction_type.value,
        }
        if self.date_from is not None:
            body["DateFrom"] = self.date_from
        if self.date_to is not None:
            body["DateTo"] = self.date_to
        if self.top is not None:
            body["Top"] = self.top
        if skip_token is not None:
            body["SkipToken"] = skip_token
        return body

    def context(self, page: int) -> RequestContext:
        return RequestContext(self.contact_id, f"interactions/{self.interaction_type.value}", page)


@dataclass(frozen=True, slots=True)
class Page:
    """One answer: the interactions exactly as sent, where to continue, the server's dop hint."""

    number: int
    interactions: list[dict[str, Any]]
    next_skip_token: str | None
    dop_hint: int | None = None


PageFetcher = Callable[[Query, str | None, int], Awaitable[Page]]


class DataverseClient:
    """Calls the action for one org with one identity's tokens."""

    def __init__(
        self,
        http: OrgHttp,
        *,
        max_pages: int = 10_000,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.http = http
        self._url = http.org.action_url
        self._max_pages = max_pages
        self._now = now

    async def fetch_page(self, query: Query, skip_token: str | None, number: int) -> Page:
        """Fetch one page (a 401 gets one fresh token, then fails)."""
        context = query.context(number)
        body = orjson.dumps(query.body(skip_token))
        answer = await self.http.send(context, "POST", self._url, body=body, headers=_JSON_BODY)
        if answer.status != 200:
            raise classify_error(context, answer.status, answer.headers, answer.body, self._now())
        interactions, next_token = decode_page(context, answer.body)
        return Page(number, interactions, next_token, dop_hint(answer.headers))

    async def pages(self, query: Query, *, fetch: PageFetcher | None = None) -> AsyncIterator[Page]:
        """Every page of one (contact, type), following NextSkipToken.

        A token that repeats, or more than ``max_pages`` pages, raises ``PagingError``.
        """
        fetch_one = fetch or self.fetch_page
        seen: set[str] = set()
        token: str | None = None
        number = 1
        while True:
            page = await fetch_one(query, token, number)
            token = page.next_skip_token
            yield page
            del page  # a big page must not stay alive while the next one is fetched
            if token is None:
                return
            if token in seen:
                raise PagingError(query.context(number), "NextSkipToken repeated an earlier one")
            if number >= self._max_pages:
                raise PagingError(
                    query.context(number), f"more than {self._max_pages} pages (max_pages)"
                )
            seen.add(token)
            number += 1


def dop_hint(headers: Mapping[str, str]) -> int | None:
    value = headers.get("x-ms-dop-hint")
    if value is None:
        return None
    try:
        hint = int(value.strip())
    except ValueError:
        return None
    return hint if hint > 0 else None


def decode_page(context: RequestContext, raw: bytes) -> tuple[list[dict[str, Any]], str | None]:
    """Decode a 200 answer: the body, then the JSON array held in its ``Data`` string.

    A missing or null ``Data`` is an empty page; a null, empty or missing ``NextSkipToken`` means
    no more pages. Anything else that is not the action's shape raises ``MalformedResponse``.
    """

    def malformed(why: str) -> MalformedResponse:
        return MalformedResponse(context, why, status=200)

    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise malformed(f"the body is not JSON ({_sniff(raw)})") from None
    exact = _may_hold_long_integers(raw)
    if not isinstance(document, dict):
        raise malformed("the body is not a JSON object")
    data = document.get("Data")
    if data is None:
        interactions: list[dict[str, Any]] = []
    elif not isinstance(data, str):
        raise malformed("Data is not a string holding a JSON array")
    else:
        try:
            decoded = json.loads(data, parse_constant=_refuse) if exact else orjson.loads(data)
        except ValueError:  # orjson.JSONDecodeError and json.JSONDecodeError both are
            raise malformed("Data does not hold valid JSON") from None
        if not isinstance(decoded, list) or not all(isinstance(x, dict) for x in decoded):
            raise malformed("Data does not hold a JSON array of objects")
        interactions = decoded
    token = document.get("NextSkipToken")
    if token is not None and not isinstance(token, str):
        raise malformed("NextSkipToken is neither a string nor null")
    return interactions, token or None


def _may_hold_long_integers(raw: bytes) -> bool:
    """True when the body has a number of 19 digits: an integer orjson would turn into a float.

    orjson silently changes integers beyond 64 bits into floats; the standard library keeps
    them exact, so such pages are decoded with it. Mapping every byte to digit-or-not and
    searching for the run is a C-speed scan, about ten times faster than a regex, which then
    only confirms the rare hit (hex ids hold digit runs too).
    """
    return _DIGIT_RUN in raw.translate(_DIGIT_MAP) and _LONG_NUMBER.search(raw) is not None


def _refuse(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def classify_error(
    context: RequestContext,
    status: int,
    headers: Mapping[str, str],
    raw: bytes,
    now: datetime,
) -> DataverseError:
    """Turn a non-200 answer into the matching error of the tree."""
    code, message = _error_body(raw)
    detail = message or _sniff(raw)
    if status == 429:
        return Throttled(
            context,
            detail,
            retry_after=parse_retry_after(headers.get("Retry-After"), now),
            code=code,
        )
    if status == 401:
        return AuthRejected(context, "token refused twice", status=status, code=code)
    if status == 403:
        return Forbidden(context, detail, status=status, code=code)
    if status == 404:
        return ActionMissing(context, detail, status=status, code=code)
    if status == 400:
        return BadRequest(context, detail, status=status, code=code)
    if status in (502, 503, 504) or (status == 500 and (code in _TRANSIENT_SQL_CODES or not code)):
        # A 500 without Dataverse's error body comes from a gateway, not from Dataverse.
        return Transient(context, detail, status=status, code=code)
    return ServerError(context, detail, status=status, code=code)


def _error_body(raw: bytes) -> tuple[str, str]:
    """Dataverse's ``{"error": {"code", "message"}}`` if the body holds it, else empty strings."""
    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return "", ""
    error = document.get("error") if isinstance(document, dict) else None
    if not isinstance(error, dict):
        return "", ""
    message = error.get("message")
    text = message[:_MAX_DETAIL] if isinstance(message, str) else ""
    return normalise_code(error.get("code")), text


def _sniff(raw: bytes) -> str:
    """Say what a body looks like without quoting it (it may hold personal data)."""
    if not raw.strip():
        return "empty body"
    head = raw.lstrip()[:64].lower()
    if head.startswith((b"<!doctype html", b"<html")):
        return f"an HTML page of {len(raw)} bytes"
    return f"{len(raw)} bytes that are not the action's JSON"


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP-date."""
    if value is None:
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return max(0.0, (when - now).total_seconds())
    if seconds != seconds or seconds in (float("inf"), float("-inf")):  # NaN or infinite
        return None
    return max(0.0, seconds)
