"""Generic Dataverse Web API requests: JSON reads, paging, creating a row, ranged downloads.

Usage::

    api = WebApi(deps.http, deps.fetcher.for_pair(scope.number), context, now=deps.now)
    row = await api.get_json(api.url("contacts(<id>)"), FORMATTED)
    async for rows in api.pages(api.url("leads?$filter=..."), page_size=5000):
        await sink.add_rows("records/lead.json", rows)
    created = await api.post_json(api.url("msdynmkt_gdprrequests"), {...})
    result = await api.download(url, write=sink_writer, max_bytes=cap)

Every request goes through ``OrgHttp.send`` (origin check, token, timeouts) inside the pair's
``PairFetcher.call`` (the identity's throttle and retry policy), so one attempt function per
request raises the error tree: ``classify_error`` for a non-2xx answer, except that a 404 here is
a ``ResourceMissing`` (a table or a row, not the retired action: it must not stop the run) and a
403 a ``ReadForbidden`` (whose advice is about privileges on tables, not the retired action's
role) and a 400 a ``QueryRefused`` (whose advice is about the query, not the action's dates and
interaction types), and ``BadAnswer`` (a ``MalformedResponse``, whose advice speaks of this
contact's part) for a 2xx whose body is not the expected JSON shape.

Paging follows ``@odata.nextLink`` with ``Prefer: odata.maxpagesize=N``; a nextLink off the
org's origin, to another resource than the query's (Dataverse's nextLink is the query's own URL
with a ``$skiptoken``: another path would be another table's or another row's data), one seen
before (compared by digest, so memory stays small) or one page more than ``max_pages`` stops
with a ``PagingError``.

Downloads ask for ``Range`` chunks and continue from what arrived (a server may send less than
asked); ``x-ms-file-size`` gives the total, which must stay the same, stay under the cap and be
met exactly. Chunks are handed to ``write`` as they come: memory holds one chunk. An answer that
names no size at all (neither ``x-ms-file-size`` nor a ``Content-Range`` total) is refused, even
a 200: Dataverse sends the size with every file, and a body without it is something else (a
proxy's sign-in page) that would otherwise be stored as the file.

JSON is decoded by ``jsonexact.loads``, which keeps every digit of every number as sent.

A Web API request carries the person's own values (e-mail addresses and phones in ``$filter``
literals, an identifier in a create's body), and Dataverse's error messages may echo them ("Syntax
error at position 40 in 'emailaddress1 eq ...'"). Error messages end up in logs and reports, so
every value the request sent is replaced by ``[value]`` in the server's text before it becomes an
error, and anything that still looks like an e-mail address by ``[e-mail]``.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Final, TypeVar
from urllib.parse import unquote, urlsplit

import orjson

from sar_bulk.dataverse import jsonexact
from sar_bulk.dataverse.client import classify_error
from sar_bulk.dataverse.fetcher import PairFetcher
from sar_bulk.dataverse.http import Answer, OrgHttp
from sar_bulk.dataverse.jsonexact import JsonRefused
from sar_bulk.errors import (
    BadRequest,
    DataverseError,
    Forbidden,
    MalformedResponse,
    NotFound,
    PagingError,
    RequestContext,
)

__all__ = [
    "FORMATTED_VALUES",
    "MISSING_ROW",
    "MISSING_SEGMENT",
    "BadAnswer",
    "Download",
    "QueryRefused",
    "ReadForbidden",
    "ResourceMissing",
    "TooLarge",
    "WebApi",
    "object_body",
]

_T = TypeVar("_T")

MISSING_SEGMENT: Final = "0x80060888"  # "Resource not found for the segment": no such table
MISSING_ROW: Final = "0x80040217"  # "... Does Not Exist": no such row
FORMATTED_VALUES: Final = 'odata.include-annotations="OData.Community.Display.V1.FormattedValue"'
_SIZE: Final = re.compile(r"[0-9]{1,18}")
DEFAULT_CHUNK: Final = 4 * 1024 * 1024  # Dataverse's own recommended file chunk size
MIN_CHUNK: Final = 64 * 1024  # a download may take about twice total / this many chunks
# An OData string literal in a query option ('' is a quote inside it).
_LITERAL: Final = re.compile(r"'((?:[^']|'')*)'")
# What an e-mail address looks like in an error message, whatever the request sent.
_EMAIL: Final = re.compile(r"[^\s'\"<>(),;:@]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")
_CONTENT_RANGE: Final = re.compile(r"bytes ([0-9]{1,18})-([0-9]{1,18})/([0-9]{1,18})")


class ResourceMissing(NotFound):
    """404 from the Web API: no such table (``MISSING_SEGMENT``) or row (``MISSING_ROW``)."""

    advice = "check that this org has the table and the row"

    @property
    def missing_table(self) -> bool:
        return self.code == MISSING_SEGMENT

    @property
    def missing_row(self) -> bool:
        return self.code == MISSING_ROW


class BadAnswer(MalformedResponse):
    """A 2xx that is not what the Web API sends: not JSON, no rows, a file without its size."""

    advice = (
        "a proxy or gateway may be in the way, or the org answered outside the Web API's "
        "contract; retried where a new answer may differ, then this contact's part fails"
    )


class ReadForbidden(Forbidden):
    """403 from the Web API: the identity lacks a privilege on a table (the message names it)."""

    advice = (
        "give the application user a security role with the privilege the message names "
        "(read privilege on that table)"
    )


class QueryRefused(BadRequest):
    """400 from the Web API: Dataverse refused a query (the message says what it could not use)."""

    advice = (
        "Dataverse refused the request as sent (the message says what); for a custom table "
        "check its entity_set and filter in custom_tables, otherwise report it"
    )


class TooLarge(DataverseError):
    """A file larger than the configured cap: refused before it is downloaded."""

    advice = "raise the size cap if the file is expected to be this large"


@dataclass(frozen=True, slots=True)
class Download:
    """What a download brought: its size, SHA-256 and the name the server gave it."""

    size: int
    sha256: str
    file_name: str | None


class WebApi:
    """Web API requests for one (contact, part), each inside the pair's throttle and retry."""

    __slots__ = ("_context", "_http", "_now", "_pair")

    def __init__(
        self,
        http: OrgHttp,
        pair: PairFetcher,
        context: RequestContext,
        *,
        now: Callable[[], datetime],
    ) -> None:
        self._http = http
        self._pair = pair
        self._context = context
        self._now = now

    @property
    def context(self) -> RequestContext:
        """What these requests are about (for errors raised by a caller)."""
        return self._context

    def url(self, path: str) -> str:
        """A v9.2 Web API URL on the org."""
        return self._http.org.api_url(path)

    async def call(self, attempt: Callable[[], Awaitable[_T]]) -> _T:
        """Run ``attempt`` (built from ``send``) inside the pair's throttle and retry."""
        return await self._pair.call(attempt, context=self._context)

    async def send(
        self,
        method: str,
        url: str,
        *,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Answer:
        """One request, no retry: a non-2xx answer raises the error tree (for ``call``)."""
        answer = await self._http.send(self._context, method, url, body=body, headers=headers)
        self._check(self._context, answer, url, body)
        return answer

    async def get_json(
        self, url: str, headers: Mapping[str, str] | None = None, *, page: int = 1
    ) -> dict[str, Any]:
        """GET ``url``; a 2xx must hold a JSON object."""
        context = self._context if page == 1 else replace(self._context, page=page)

        async def attempt() -> dict[str, Any]:
            answer = await self._http.send(context, "GET", url, headers=headers)
            self._check(context, answer, url)
            return object_body(context, answer.body)

        # The context also names the request when the wait at a closed gate is over budget.
        return await self._pair.call(attempt, context=context)

    async def post_json(
        self, url: str, body: Mapping[str, Any], headers: Mapping[str, str] | None = None
    ) -> Answer:
        """POST a JSON body; the 2xx answer comes back as it is (204 carries OData-EntityId).

        A POST that creates a row is retried only on what the fetcher retries; a caller that must
        not create twice looks its row up first (see ``realtime``).
        """
        payload = orjson.dumps(body)
        sent = {"Content-Type": "application/json; charset=utf-8", **(headers or {})}
        context = self._context

        async def attempt() -> Answer:
            answer = await self._http.send(context, "POST", url, body=payload, headers=sent)
            self._check(context, answer, url, payload)
            return answer

        return await self._pair.call(attempt, context=context)

    async def pages(
        self,
        url: str,
        *,
        page_size: int,
        prefer: tuple[str, ...] = (),
        max_pages: int = 10_000,
    ) -> AsyncIterator[list[dict[str, Any]]]:
        """The ``value`` rows of each page, following ``@odata.nextLink``."""
        headers = {"Prefer": ", ".join((f"odata.maxpagesize={page_size}", *prefer))}
        seen: set[bytes] = set()
        resource = _resource(url)
        number = 1
        next_url: str | None = url
        while next_url is not None:
            document = await self.get_json(next_url, headers, page=number)
            context = replace(self._context, page=number)
            rows = document.get("value")
            if not isinstance(rows, list) or not all(isinstance(row, dict) for row in rows):
                raise BadAnswer(context, "the answer has no 'value' list of rows")
            yield rows
            link = document.get("@odata.nextLink")
            if link is None or link == "":
                return
            if not isinstance(link, str):
                raise BadAnswer(context, "@odata.nextLink is not a string")
            if not self._http.org.owns(link):
                raise PagingError(context, "@odata.nextLink points off the org's origin")
            if _resource(link) != resource:
                raise PagingError(
                    context, "@odata.nextLink points to another resource than the query's"
                )
            digest = hashlib.sha256(link.encode("utf-8")).digest()
            if digest in seen:
                raise PagingError(context, "@odata.nextLink repeated an earlier page")
            seen.add(digest)
            number += 1
            if number > max_pages:
                raise PagingError(context, f"more than {max_pages} pages")
            next_url = link

    async def download(
        self,
        url: str,
        *,
        write: Callable[[bytes], Awaitable[None]],
        max_bytes: int,
        chunk: int = DEFAULT_CHUNK,
    ) -> Download:
        """Fetch a file column's ``$value`` in ``Range`` chunks into ``write``."""
        offset = 0
        total: int | None = None
        name: str | None = None
        digest = hashlib.sha256()
        number = 1
        while total is None or offset < total:
            context = replace(self._context, page=number)
            wanted = f"bytes={offset}-{offset + chunk - 1}"
            answer = await self._ranged(context, url, wanted)
            size = _file_size(context, answer)
            if size > max_bytes:
                raise TooLarge(context, f"the file has {size} bytes, above the cap of {max_bytes}")
            if total is not None and size != total:
                raise BadAnswer(context, "x-ms-file-size changed between chunks")
            total = size
            name = name or answer.headers.get("x-ms-file-name")
            body = answer.body
            if answer.status == 200 and offset > 0:
                raise BadAnswer(context, "the server ignored Range after the first chunk")
            if len(body) > chunk and answer.status == 206:
                raise BadAnswer(context, "a chunk came larger than asked")
            if offset + len(body) > total:
                raise BadAnswer(context, "more bytes came than x-ms-file-size")
            if not body and offset < total:
                raise BadAnswer(context, "an empty chunk before the end of the file")
            if answer.status == 206:
                _check_range(context, answer.headers.get("Content-Range"), offset, len(body), total)
                # Chunks smaller than asked are allowed (x-ms-chunk-size), tiny ones are not
                # endless: a 1 GiB file a byte at a time would cost a request per byte.
                most = 2 + 2 * -(-total // min(chunk, MIN_CHUNK))
                if number > most:
                    raise BadAnswer(
                        context, f"the file took more than {most} chunks: they are too small"
                    )
            elif answer.status != 200:
                raise BadAnswer(context, f"HTTP {answer.status} for a file download")
            digest.update(body)
            await write(body)
            offset += len(body)
            number += 1
            if answer.status == 200 and offset != total:
                raise BadAnswer(context, "the whole file came shorter than its size")
        return Download(offset, digest.hexdigest(), name)

    async def _ranged(self, context: RequestContext, url: str, wanted: str) -> Answer:
        async def attempt() -> Answer:
            answer = await self._http.send(context, "GET", url, headers={"Range": wanted})
            if answer.status == 416 and _empty_file(answer):
                # No byte range exists in an empty file: the answer is the whole (empty) file.
                headers = {k: v for k, v in answer.headers.items() if k.lower() != "content-range"}
                return Answer(206, {**headers, "x-ms-file-size": "0"}, b"")
            self._check(context, answer, url)
            return answer

        return await self._pair.call(attempt, context=context)

    def _check(
        self, context: RequestContext, answer: Answer, url: str, body: bytes | None = None
    ) -> None:
        if 200 <= answer.status < 300:
            return
        error = classify_error(context, answer.status, answer.headers, answer.body, self._now())
        error = error.with_detail(without_sent_values(error.detail, url, body))
        if answer.status == 404:
            # classify_error speaks of the retired action; here a 404 is a table or a row, and
            # neither may stop the run.
            raise error.retold(ResourceMissing)
        if isinstance(error, Forbidden):
            # classify_error's advice is the retired action's ("a role that may run the action").
            raise error.retold(ReadForbidden)
        if isinstance(error, BadRequest):
            # classify_error's advice is about the action's contact id, types and dates.
            raise error.retold(QueryRefused)
        raise error


def without_sent_values(detail: str, url: str, body: bytes | None = None) -> str:
    """The server's ``detail`` with every value the request sent taken out.

    The values are the quoted literals of the URL's query options (``$filter=emailaddress1 eq
    'a@b.example'``) and the strings of a JSON body; each is replaced wherever it appears,
    without regard to case, by ``[value]``, and what still looks like an e-mail address by
    ``[e-mail]``. Values under three characters are left: they would take out half the text.
    """
    sent: set[str] = set()
    for pair in urlsplit(url).query.split("&"):
        option = unquote(pair.partition("=")[2])  # not parse_qsl: "+" stays a plus in a phone
        sent.update(match.group(1).replace("''", "'") for match in _LITERAL.finditer(option))
    if body:
        with contextlib.suppress(orjson.JSONDecodeError):  # not JSON: no values to take out
            _strings_of(orjson.loads(body), sent)
    # A literal comes back as sent (quotes doubled) or as meant: both forms go.
    forms = {form for v in sent if len(v) >= 3 for form in (v, v.replace("'", "''"))}
    for value in sorted(forms, key=len, reverse=True):
        detail = re.sub(re.escape(value), "[value]", detail, flags=re.IGNORECASE)
    return _EMAIL.sub("[e-mail]", detail)


def _strings_of(value: Any, found: set[str]) -> None:
    if isinstance(value, str):
        found.add(value)
    elif isinstance(value, dict):
        for item in value.values():
            _strings_of(item, found)
    elif isinstance(value, list):
        for item in value:
            _strings_of(item, found)


def object_body(context: RequestContext, raw: bytes) -> dict[str, Any]:
    """A 2xx body that must be a JSON object, else ``BadAnswer``."""
    try:
        document = jsonexact.loads(raw)
    except JsonRefused as exc:
        raise BadAnswer(context, f"{len(raw)} bytes that are not usable JSON: {exc}") from None
    if not isinstance(document, dict):
        raise BadAnswer(context, "the answer is not a JSON object")
    return document


def _resource(url: str) -> str:
    """The path a URL names (the table or row), percent-decoded, without its query."""
    return unquote(urlsplit(url).path)


def _empty_file(answer: Answer) -> bool:
    """A 416 that says the file has no bytes (``Content-Range: bytes */0``)."""
    return answer.headers.get("Content-Range", "").replace(" ", "") == "bytes*/0"


def _check_range(
    context: RequestContext, header: str | None, offset: int, length: int, total: int
) -> None:
    """A 206's ``Content-Range``, when sent, must name the bytes asked for and that came."""
    if header is None:
        return
    match = _CONTENT_RANGE.fullmatch(header.strip())
    if match is None:
        raise BadAnswer(context, "Content-Range is not 'bytes first-last/size'")
    first, last, size = (int(group) for group in match.groups())
    if first != offset or last - first + 1 != length or size != total:
        raise BadAnswer(context, "Content-Range does not match the bytes asked for and sent")


def _file_size(context: RequestContext, answer: Answer) -> int:
    """The file's whole size: ``x-ms-file-size``, else ``Content-Range``'s total."""
    text = answer.headers.get("x-ms-file-size")
    if text is None:
        content_range = answer.headers.get("Content-Range", "")
        text = content_range.rpartition("/")[2] if "/" in content_range else None
    if text is None:
        raise BadAnswer(
            context,
            f"HTTP {answer.status} came without x-ms-file-size: not a Dataverse file download",
        )
    text = text.strip()
    # int() alone would take "+5", "1_000" and other digits than ASCII ones.
    if not _SIZE.fullmatch(text):
        raise BadAnswer(context, "x-ms-file-size is not a byte count")
    return int(text)
