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

Never a wrong answer: a dossier that silently misses data, or holds someone else's, is itself a
breach. So a 200 is a page only when it is the action's answer (see ``decode_page``), values are
kept exactly as sent (``jsonexact``), a page holding another contact's or another type's
interaction is refused whole (``ForeignData``), and a 404 stops the run only when the action
itself is missing (``classify_error``).
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Final

import orjson

from sar_bulk.dataverse import jsonexact
from sar_bulk.dataverse.http import OrgHttp, dop_hint
from sar_bulk.dataverse.idset import DigestSet
from sar_bulk.errors import (
    ActionMissing,
    AuthRejected,
    BadRequest,
    DataverseError,
    Forbidden,
    ForeignData,
    MalformedResponse,
    NotFound,
    OverLimit,
    PagingError,
    RequestContext,
    ServerError,
    Throttled,
    Transient,
    normalise_code,
)
from sar_bulk.guids import canonical_guid
from sar_bulk.sources.interaction_types import InteractionType

__all__ = [
    "MAX_SKIP_TOKEN",
    "SEGMENT_MISSING_CODE",
    "DataverseClient",
    "Page",
    "PageFetcher",
    "Query",
    "classify_error",
    "decode_page",
    "parse_retry_after",
]

# SQL errors Dataverse reports with a 500 that pass by themselves (deadlock, timeout).
_TRANSIENT_SQL_CODES: Final = frozenset({normalise_code(-2147204784), normalise_code(-2147204783)})
_MAX_DETAIL = 300
_JSON_BODY: Final = {"Content-Type": "application/json; charset=utf-8"}
_ACTION_RESPONSE: Final = "msdyncrm_LoadInteractionsPublicResponse"
_ACTION_KEYS: Final = frozenset({"Data", "NextSkipToken"})
# A skip token is an opaque cursor of a few hundred characters; one beyond this is refused
# rather than sent back (and kept) page after page.
MAX_SKIP_TOKEN: Final = 64 * 1024
# 404 "Resource not found for the segment '...'": the URL's segment (action, table) is unknown.
SEGMENT_MISSING_CODE: Final = "0x80060888"
_SEGMENT_MESSAGE: Final = "resource not found for the segment"
# Repeated InteractionIds are counted by 8-byte digest (about 8 bytes each in a DigestSet),
# for at most this many ids per (contact, type) (~8 MB); past it, new ids are not remembered.
_MAX_TRACKED_IDS: Final = 1_000_000


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
    """One answer: the interactions exactly as sent, where to continue, the server's dop hint.

    ``repeats`` counts the interactions whose InteractionId came before in the same
    (contact, type), on this page or an earlier one (set by ``DataverseClient.pages``); they
    are kept, as sent, and reported.
    """

    number: int
    interactions: list[dict[str, Any]]
    next_skip_token: str | None
    dop_hint: int | None = None
    repeats: int = 0


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

    async def fetch_page(
        self,
        query: Query,
        skip_token: str | None,
        number: int,
        *,
        context: RequestContext | None = None,
    ) -> Page:
        """Fetch one page (a 401 gets one fresh token, then fails); ``context`` names it
        (``query.context(number)`` unless the caller already made it)."""
        if context is None:
            context = query.context(number)
        body = orjson.dumps(query.body(skip_token))
        answer = await self.http.send(context, "POST", self._url, body=body, headers=_JSON_BODY)
        if answer.status != 200:
            raise classify_error(context, answer.status, answer.headers, answer.body, self._now())
        interactions, next_token = decode_page(query, answer.body, number, context=context)
        return Page(number, interactions, next_token, dop_hint(answer.headers))

    async def pages(self, query: Query, *, fetch: PageFetcher | None = None) -> AsyncIterator[Page]:
        """Every page of one (contact, type), following NextSkipToken.

        A token that repeats, or more than ``max_pages`` pages, raises ``PagingError``. Only
        digests of tokens and InteractionIds are kept, so memory stays bounded whatever the
        server sends; each page's ``repeats`` says how many of its ids came before.
        """
        fetch_one = fetch or self.fetch_page
        seen_tokens: set[bytes] = set()
        seen_ids = DigestSet()
        token: str | None = None
        number = 1
        while True:
            page = await fetch_one(query, token, number)
            repeats = _count_repeats(page.interactions, seen_ids)
            if repeats:
                page = replace(page, repeats=repeats)
            token = page.next_skip_token
            yield page
            del page  # a big page must not stay alive while the next one is fetched
            if token is None:
                return
            digest = hashlib.blake2b(token.encode("utf-8", "surrogatepass"), digest_size=16)
            if digest.digest() in seen_tokens:
                raise PagingError(query.context(number), "NextSkipToken repeated an earlier one")
            if number >= self._max_pages:
                raise PagingError(
                    query.context(number), f"more than {self._max_pages} pages (max_pages)"
                )
            seen_tokens.add(digest.digest())
            number += 1


def _count_repeats(interactions: list[dict[str, Any]], seen: DigestSet) -> int:
    """How many InteractionIds of this page are already in ``seen``; adds the new ones."""
    repeats = 0
    for item in interactions:
        ident = item.get("InteractionId")
        if not isinstance(ident, str):
            continue
        digest = hashlib.blake2b(ident.encode("utf-8", "surrogatepass"), digest_size=8).digest()
        value = int.from_bytes(digest, "little")
        if len(seen) < _MAX_TRACKED_IDS:
            repeats += not seen.add(value)  # one lookup: add says whether it was new
        elif value in seen:
            repeats += 1
    return repeats


def decode_page(
    query: Query, raw: bytes, number: int = 1, *, context: RequestContext | None = None
) -> tuple[list[dict[str, Any]], str | None]:
    """Decode a 200 answer to ``query``: the body, then the JSON array held in its ``Data``.

    The contract (anything else raises ``MalformedResponse``, retried like a fault):

    * the body is a JSON object without an ``error`` member;
    * ``Data`` is a string holding a JSON array of objects (``"[]"`` is an empty page), or
      null or absent *only* in a body that is recognisably the action's answer (its
      ``@odata.context`` names the action's response type) and has no member besides
      ``@odata.*``, ``Data`` and ``NextSkipToken`` -- so ``{}``, ``{"value": [...]}`` or
      ``{"data": ...}`` are never taken for "no interactions";
    * ``NextSkipToken`` is a string or null; null, ``""`` or absent mean no more pages.

    Values are decoded exactly (``jsonexact``). An interaction whose ``ContactId`` or
    ``InteractionType`` is not the one asked for raises ``ForeignData``; a skip token over
    ``MAX_SKIP_TOKEN`` characters raises ``OverLimit``. ``context`` names the page in errors
    (``query.context(number)`` when not given).
    """
    if context is None:
        context = query.context(number)

    def malformed(why: str) -> MalformedResponse:
        return MalformedResponse(context, why, status=200)

    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise malformed(f"the body is not JSON ({_sniff(raw)})") from None
    if not isinstance(document, dict):
        raise malformed("the body is not a JSON object")
    if "error" in document:
        code, _ = _error_body(raw)
        raise malformed(f"a 200 that carries an error (code {code or 'none'})")
    data = document.get("Data")
    if data is None:
        if not _is_action_answer(document):
            raise malformed("the body is not the action's answer (no Data string)")
        interactions: list[dict[str, Any]] = []
    elif not isinstance(data, str):
        raise malformed("Data is not a string holding a JSON array")
    else:
        try:
            decoded = jsonexact.loads(data)
        except jsonexact.JsonRefused as exc:
            raise malformed(f"Data does not hold JSON that can be kept exactly: {exc}") from None
        if type(decoded) is not list or not all(type(x) is dict for x in decoded):
            raise malformed("Data does not hold a JSON array of objects")
        _refuse_foreign(query, context, decoded)
        interactions = decoded
    token = document.get("NextSkipToken")
    if token is not None and not isinstance(token, str):
        raise malformed("NextSkipToken is neither a string nor null")
    if token is not None and len(token) > MAX_SKIP_TOKEN:
        raise OverLimit(
            context,
            f"NextSkipToken is {len(token)} characters long, over the cap of {MAX_SKIP_TOKEN}",
            status=200,
        )
    return interactions, token or None


def _is_action_answer(document: dict[str, Any]) -> bool:
    """The body names the action's response type and holds nothing the decoder would skip."""
    odata_context = document.get("@odata.context")
    if not isinstance(odata_context, str) or not odata_context.endswith(_ACTION_RESPONSE):
        return False
    return all(key in _ACTION_KEYS or key.startswith("@odata.") for key in document)


def _refuse_foreign(
    query: Query, context: RequestContext, interactions: list[dict[str, Any]]
) -> None:
    """Every interaction must be the asked contact's and of the asked type, or none is kept."""
    contact, itype = query.contact_id, query.interaction_type.value
    for item in interactions:
        if not _same_contact(item.get("ContactId"), contact):
            raise ForeignData(
                context,
                "the page holds an interaction whose ContactId is missing or names another contact",
                status=200,
            )
        if item.get("InteractionType") != itype:
            raise ForeignData(
                context,
                f"the page holds an interaction whose InteractionType is missing or not {itype}",
                status=200,
            )


def _same_contact(value: object, contact_id: str) -> bool:
    if value == contact_id:
        return True  # the common case, without parsing
    if not isinstance(value, str):
        return False
    try:
        return canonical_guid(value) == canonical_guid(contact_id)
    except ValueError:
        return False


def classify_error(
    context: RequestContext,
    status: int,
    headers: Mapping[str, str],
    raw: bytes,
    now: datetime,
    *,
    segment_missing: type[DataverseError] = ActionMissing,
) -> DataverseError:
    """Turn a non-200 answer into the matching error of the tree.

    A 404 is ``segment_missing`` only when Dataverse says the URL's *segment* does not exist
    (code 0x80060888, "Resource not found for the segment ..."): for the action that means the
    org no longer has it (``ActionMissing``, the default, stops the run); a Web API source
    passes what a missing table means to it. Any other 404 (e.g. 0x80040217 "contact With
    Id = ... Does Not Exist", or a bare 404 from something in front of the org) is
    ``NotFound``: that contact fails, the run goes on.
    """
    code, message = _error_body(raw)
    detail = message or _sniff(raw)
    if status == 429:
        return Throttled(
            context,
            detail,
            retry_after=parse_retry_after(headers.get("Retry-After"), _server_now(headers, now)),
            code=code,
        )
    if status == 401:
        return AuthRejected(context, "token refused twice", status=status, code=code)
    if status == 403:
        return Forbidden(context, detail, status=status, code=code)
    if status == 404:
        if code == SEGMENT_MISSING_CODE or message.lower().startswith(_SEGMENT_MESSAGE):
            return segment_missing(context, detail, status=status, code=code)
        return NotFound(context, detail, status=status, code=code)
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


def _server_now(headers: Mapping[str, str], now: datetime) -> datetime:
    """The answer's ``Date`` (the server's clock), else ``now``.

    An HTTP-date Retry-After is a moment on the *server's* clock: read against ours, a skew of
    minutes makes it "in the past" (the default wait, hammering the org through a penalty it
    extends) or minutes too long. Untrusted like the rest: the throttle bounds the result.
    """
    value = headers.get("Date")
    if value is None:
        return now
    try:
        when = parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError, OverflowError):
        return now
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP-date (read against
    ``now``, which ``classify_error`` takes from the answer's ``Date`` when it has one)."""
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
