"""A scripted Web API on loopback, and dict-backed stand-ins for the engine's scope and sink.

``ScriptedOrg`` is a real aiohttp server: each test answers requests with plain functions keyed
by method and path (after ``/api/data/v9.2/``), and reads the log of what arrived. It lets the
source tests pin exact wire behaviour (a chunk shorter than asked, a nextLink that loops) that a
full simulator would make hard to provoke. ``source_deps`` builds the real client side around it:
OrgHttp, token provider, throttle, fetcher.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlsplit

import orjson
from aiohttp import web
from support import RotatingCredential

from sar_bulk.dataverse.auth import TokenProvider
from sar_bulk.dataverse.client import DataverseClient
from sar_bulk.dataverse.fetcher import Fetcher
from sar_bulk.dataverse.http import OrgHttp, Timeouts, create_session
from sar_bulk.dataverse.org import OrgUrl
from sar_bulk.dataverse.retry import RetryPolicy
from sar_bulk.dataverse.throttle import Throttle, ThrottleSettings
from sar_bulk.sources.base import JsonValue, SourceDeps, SourceSettings

_T = TypeVar("_T")
API = "/api/data/v9.2/"


@dataclass(frozen=True)
class Seen:
    """One request as the server saw it."""

    method: str
    path: str  # after /api/data/v9.2/, percent-decoded
    params: dict[str, str]
    headers: Mapping[str, str]
    body: bytes


Handler = Callable[[Seen], Awaitable[web.StreamResponse] | web.StreamResponse]


def json_response(
    body: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> web.Response:
    return web.Response(
        body=orjson.dumps(body),
        status=status,
        headers={"Content-Type": "application/json; odata.metadata=minimal", **(headers or {})},
    )


def error_response(status: int, code: str, message: str) -> web.Response:
    return json_response({"error": {"code": code, "message": message}}, status)


def missing_segment(name: str) -> web.Response:
    return error_response(404, "0x80060888", f"Resource not found for the segment '{name}'.")


@dataclass
class ScriptedOrg:
    """Answers by ``routes[(method, path)]``; anything else is a missing segment."""

    routes: dict[tuple[str, str], Handler] = field(default_factory=dict)
    fallback: Handler | None = None  # asked for any path no route names
    log: list[Seen] = field(default_factory=list)
    base_url: str = ""

    def on(self, method: str, path: str, handler: Handler) -> None:
        self.routes[(method, path)] = handler

    def seen(self, method: str, path: str) -> list[Seen]:
        return [s for s in self.log if s.method == method and s.path == path]

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raw = request.rel_url.raw_path
        path = urlsplit(str(request.rel_url)).path
        assert raw.startswith(API), raw
        seen = Seen(
            request.method,
            path[len(API) :],
            dict(parse_qsl(request.rel_url.raw_query_string, keep_blank_values=True)),
            dict(request.headers),
            await request.read(),
        )
        self.log.append(seen)
        handler = self.routes.get((seen.method, seen.path), self.fallback)
        if handler is None:
            return missing_segment(seen.path)
        result = handler(seen)
        if isinstance(result, web.StreamResponse):
            return result
        return await result


@asynccontextmanager
async def scripted_org() -> AsyncIterator[ScriptedOrg]:
    org = ScriptedOrg()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", org._handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    org.base_url = f"http://127.0.0.1:{port}"
    try:
        yield org
    finally:
        await runner.cleanup()


class FakeClock:
    """Monotonic time that moves only when the code under test sleeps."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


@asynccontextmanager
async def source_deps(
    org: ScriptedOrg | str, settings: SourceSettings | None = None, clock: FakeClock | None = None
) -> AsyncIterator[SourceDeps]:
    """The real client side (session, tokens, throttle, fetcher) pointed at ``org`` (or a URL)."""
    clock = clock or FakeClock()
    timeouts = Timeouts(request=10.0, connect=5.0)
    url = OrgUrl.parse(org if isinstance(org, str) else org.base_url)
    loop = asyncio.get_running_loop()
    async with (
        TokenProvider(RotatingCredential(), url.scope) as tokens,
        create_session(timeouts) as session,
    ):
        http = OrgHttp(session, url, tokens, timeouts=timeouts)
        fetcher = Fetcher(
            DataverseClient(http),
            Throttle(ThrottleSettings(rate=1000.0, concurrency=8), clock=loop.time),
            RetryPolicy(base=0.01, cap=0.02, attempts=3, budget=5.0),
        )
        yield SourceDeps(
            http=http,
            fetcher=fetcher,
            settings=settings or SourceSettings(),
            now=lambda: datetime(2026, 11, 30, tzinfo=UTC),
            clock=clock,
            sleep=clock.sleep,
        )


class DictScope:
    """A ``ContactScope`` over dicts: memo, durable notes, and a count of parked waits."""

    def __init__(
        self,
        contact_id: str,
        number: int = 1,
        notes: dict[str, str] | None = None,
        sources: frozenset[str] = frozenset({"interactions", "records", "realtime"}),
    ):
        self._contact_id = contact_id
        self._number = number
        self.sources = sources
        self.notes: dict[str, str] = notes if notes is not None else {}
        self._memo: dict[str, asyncio.Task[Any]] = {}
        self.parked_now = 0
        self.parked_total = 0

    @property
    def contact_id(self) -> str:
        return self._contact_id

    @property
    def number(self) -> int:
        return self._number

    async def once(self, key: str, load: Callable[[], Awaitable[_T]]) -> _T:
        if key not in self._memo:

            async def run() -> Any:
                return await load()

            self._memo[key] = asyncio.ensure_future(run())
        result: _T = await asyncio.shield(self._memo[key])
        return result

    async def recall(self, key: str) -> str | None:
        return self.notes.get(key)

    async def remember(self, key: str, value: str) -> None:
        self.notes[key] = value

    @asynccontextmanager
    async def _parked(self) -> AsyncIterator[None]:
        self.parked_now += 1
        self.parked_total += 1
        try:
            yield
        finally:
            self.parked_now -= 1

    def parked(self) -> Any:
        return self._parked()


class DictSink:
    """A ``PartSink`` over dicts."""

    def __init__(self) -> None:
        self.rows: dict[str, list[Mapping[str, Any]]] = {}
        self.files: dict[str, bytearray] = {}
        self.notes: dict[str, JsonValue] = {}

    async def add_rows(self, entry: str, rows: Sequence[Mapping[str, Any]]) -> None:
        orjson.dumps(list(rows))  # as the writer does: a row that is not JSON fails
        self.rows.setdefault(entry, []).extend(rows)

    async def add_file(self, entry: str, chunk: bytes) -> None:
        self.files.setdefault(entry, bytearray()).extend(chunk)

    def note(self, key: str, value: JsonValue) -> None:
        self.notes[key] = value


GDPR_BASE = "EntityDefinitions(LogicalName='msdynmkt_gdprrequest')"
# Option values far from Microsoft's habit of 534120000: the code must read them from metadata.
EXPORT, DELETE, IN_PROGRESS, COMPLETED = 100000007, 100000008, 100000021, 100000022


def _label(text: str | None) -> dict[str, Any]:
    if text is None:
        return {"UserLocalizedLabel": None, "LocalizedLabels": []}
    return {"UserLocalizedLabel": {"Label": text, "LanguageCode": 1033}, "LocalizedLabels": []}


def install_gdpr_metadata(org: ScriptedOrg) -> None:
    """The three metadata answers for msdynmkt_gdprrequest, with the column names guessed."""
    org.on(
        "GET",
        GDPR_BASE,
        lambda s: json_response(
            {
                "EntitySetName": "msdynmkt_gdprrequests",
                "PrimaryIdAttribute": "msdynmkt_gdprrequestid",
                "PrimaryNameAttribute": "msdynmkt_name",
            }
        ),
    )
    columns = [
        ("msdynmkt_gdprrequestid", None, None),
        ("msdynmkt_name", "Name", None),
        ("msdynmkt_dsrrequesttype", "DsrRequestType", None),
        ("msdynmkt_dsrrequesttypename", "DsrRequestType", "msdynmkt_dsrrequesttype"),
        ("msdynmkt_dsrrequestinput", "DsrRequestInput", None),
        ("msdynmkt_dsrrequestprogress", "DsrRequestProgress", None),
        ("msdynmkt_dsrrequestdata", "DsrRequestData", None),
        ("msdynmkt_dsrrequestdata_name", None, "msdynmkt_dsrrequestdata"),
        ("ownerid", "Owner", None),
    ]
    org.on(
        "GET",
        f"{GDPR_BASE}/Attributes",
        lambda s: json_response(
            {
                "value": [
                    {"LogicalName": n, "DisplayName": _label(label), "AttributeOf": of}
                    for n, label, of in columns
                ]
            }
        ),
    )

    def options(pairs: list[tuple[int, str]]) -> dict[str, Any]:
        return {"Options": [{"Value": v, "Label": _label(t)} for v, t in pairs]}

    org.on(
        "GET",
        f"{GDPR_BASE}/Attributes/Microsoft.Dynamics.CRM.PicklistAttributeMetadata",
        lambda s: json_response(
            {
                "value": [
                    {
                        "LogicalName": "msdynmkt_dsrrequesttype",
                        "OptionSet": options([(EXPORT, "Export"), (DELETE, "Delete")]),
                    },
                    {
                        "LogicalName": "msdynmkt_dsrrequestprogress",
                        "OptionSet": options(
                            [(IN_PROGRESS, "InProgress"), (COMPLETED, "Completed")]
                        ),
                    },
                ]
            }
        ),
    )
