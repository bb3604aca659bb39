"""The client over loopback HTTP: against the simulator, or a scripted server for wire details."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import ExitStack, asynccontextmanager, contextmanager, suppress
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import orjson
import pytest
from aiohttp import web
from support import RotatingCredential, client_rig

from sar_bulk.dataverse.auth import TokenProvider
from sar_bulk.dataverse.client import DataverseClient, Query, parse_retry_after
from sar_bulk.dataverse.fetcher import ConnectWatch, Fetcher
from sar_bulk.dataverse.http import OrgHttp, Timeouts, create_session
from sar_bulk.dataverse.org import OrgUrl
from sar_bulk.dataverse.retry import RetryPolicy
from sar_bulk.dataverse.throttle import Throttle, ThrottleSettings
from sar_bulk.errors import (
    ActionMissing,
    AuthRejected,
    BadRequest,
    ConnectFailed,
    Forbidden,
    MalformedResponse,
    NoConnection,
    PagingError,
    Throttled,
    Transient,
)
from sar_bulk.simulator import SimulatorConfig
from sar_bulk.sources.interaction_types import ALL_TYPES, InteractionType

CONTACT = "5b7e3f7b-1d3a-4f5b-9c1e-2a3b4c5d6e7f"
HEAVY = "0d1e2f30-4152-4637-8899-aabbccddeeff"

Handler = Callable[[web.Request], Any]


@asynccontextmanager
async def scripted(handler: Handler) -> AsyncIterator[tuple[DataverseClient, list[dict[str, Any]]]]:
    """A real HTTP server on loopback answering with ``handler``; records every request."""
    seen: list[dict[str, Any]] = []

    async def record(request: web.Request) -> web.StreamResponse:
        seen.append(
            {"headers": dict(request.headers), "body": await request.read(), "path": request.path}
        )
        response: web.StreamResponse = await handler(request)
        return response

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", record)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    org = OrgUrl.parse(f"http://127.0.0.1:{port}")
    timeouts = Timeouts(request=1.0, connect=1.0)
    try:
        async with (
            TokenProvider(RotatingCredential(), org.scope) as tokens,
            create_session(timeouts) as session,
        ):
            yield (
                DataverseClient(OrgHttp(session, org, tokens, timeouts=timeouts), max_pages=50),
                seen,
            )
    finally:
        await runner.cleanup()


ACTION_CONTEXT = (
    "https://org.example/api/data/v9.0/$metadata#Microsoft.Dynamics.CRM."
    "msdyncrm_LoadInteractionsPublicResponse"
)


def row(n: int) -> dict[str, Any]:
    """An interaction of CONTACT and EmailSent (the client refuses any other)."""
    return {"ContactId": CONTACT, "InteractionType": "EmailSent", "N": n}


def answer(data: list[dict[str, Any]] | None, token: object = None, **extra: Any) -> bytes:
    body: dict[str, Any] = {"@odata.context": ACTION_CONTEXT}
    if data is not None:
        body["Data"] = orjson.dumps(data).decode()
    body["NextSkipToken"] = token
    return orjson.dumps(body | extra)


async def test_sends_the_documented_headers_and_body() -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=answer([]), content_type="application/json")

    async with scripted(handler) as (client, seen):
        query = Query(CONTACT, InteractionType.EmailSent, "01-31-2024", "12-31-2024", top=50)
        await client.fetch_page(query, '<cookie page="2" />', 2)
        await client.fetch_page(Query(CONTACT, InteractionType.FormVisited), None, 1)
    first, second = seen
    assert first["path"] == "/api/data/v9.0/msdyncrm_LoadInteractionsPublic"
    headers = first["headers"]
    assert headers["Accept"] == "application/json"
    assert headers["Content-Type"] == "application/json; charset=utf-8"
    assert headers["OData-MaxVersion"] == "4.0"
    assert headers["OData-Version"] == "4.0"
    assert headers["Authorization"] == "Bearer sim-test.1"
    assert orjson.loads(first["body"]) == {
        "ContactId": CONTACT,
        "InteractionType": "EmailSent",
        "DateFrom": "01-31-2024",
        "DateTo": "12-31-2024",
        "Top": 50,
        "SkipToken": '<cookie page="2" />',
    }
    # Optional parameters are left out, not sent as null.
    assert orjson.loads(second["body"]) == {"ContactId": CONTACT, "InteractionType": "FormVisited"}
    assert "Cookie" not in second["headers"]


async def test_no_cookie_is_kept_between_requests() -> None:
    async def handler(request: web.Request) -> web.Response:
        response = web.Response(body=answer([]), content_type="application/json")
        response.set_cookie("ARRAffinity", "server-7", path="/")
        return response

    async with scripted(handler) as (client, seen):
        for _ in range(3):
            await client.fetch_page(Query(CONTACT, InteractionType.EmailSent), None, 1)
    assert all("Cookie" not in request["headers"] for request in seen)


@pytest.mark.parametrize("ending", ["null", "empty", "absent"])
async def test_each_end_of_paging_spelling_ends_the_pages(ending: str) -> None:
    async def handler(request: web.Request) -> web.Response:
        body = orjson.loads(await request.read())
        page = 1 if "SkipToken" not in body else int(body["SkipToken"].split('"')[1])
        document: dict[str, Any] = {"Data": orjson.dumps([row(page)]).decode()}
        if page < 3:
            document["NextSkipToken"] = f'<cookie page="{page + 1}" />'
        elif ending == "null":
            document["NextSkipToken"] = None
        elif ending == "empty":
            document["NextSkipToken"] = ""
        return web.Response(body=orjson.dumps(document), content_type="application/json")

    async with scripted(handler) as (client, _seen):
        pages = [p async for p in client.pages(Query(CONTACT, InteractionType.EmailSent))]
    assert [p.interactions for p in pages] == [[row(1)], [row(2)], [row(3)]]
    assert [p.number for p in pages] == [1, 2, 3]


async def test_a_repeated_skip_token_is_an_error_not_a_loop() -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=answer([row(1)], "same"), content_type="application/json")

    async with scripted(handler) as (client, seen):
        with pytest.raises(PagingError, match="repeated"):
            async for _ in client.pages(Query(CONTACT, InteractionType.EmailSent)):
                pass
    assert len(seen) == 2


async def test_more_pages_than_the_cap_is_an_error() -> None:
    async def handler(request: web.Request) -> web.Response:
        body = orjson.loads(await request.read())
        n = int(body.get("SkipToken", "0")) + 1
        return web.Response(body=answer([], str(n)), content_type="application/json")

    async with scripted(handler) as (client, seen):
        with pytest.raises(PagingError, match="more than 50 pages"):
            async for _ in client.pages(Query(CONTACT, InteractionType.EmailSent)):
                pass
    assert len(seen) == 50


async def test_missing_or_null_data_in_the_actions_answer_is_an_empty_page() -> None:
    bodies = [
        orjson.dumps({"@odata.context": ACTION_CONTEXT, "NextSkipToken": None}),
        orjson.dumps({"@odata.context": ACTION_CONTEXT, "Data": None, "NextSkipToken": None}),
    ]

    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=bodies.pop(0), content_type="application/json")

    async with scripted(handler) as (client, _seen):
        for _ in range(2):
            page = await client.fetch_page(Query(CONTACT, InteractionType.EmailSent), None, 1)
            assert page.interactions == []
            assert page.next_skip_token is None


@pytest.mark.parametrize(
    ("body", "content_type", "why"),
    [
        (b"<html><body>Bad gateway</body></html>", "text/html", "HTML page"),
        (b'{"Data": "[{\\"a\\": 1}", "NextSkipToken": null}', "application/json", "valid JSON"),
        (b'{"Data": "{\\"a\\": 1}"}', "application/json", "array of objects"),
        (b'{"Data": [{"a": 1}]}', "application/json", "string"),
        (b'{"Data": "[]", "NextSkipToken": 7}', "application/json", "NextSkipToken"),
        (b'{"Data": "[]", "NextSk', "application/json", "not JSON"),
    ],
)
async def test_malformed_200_bodies(body: bytes, content_type: str, why: str) -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type=content_type)

    async with scripted(handler) as (client, _seen):
        with pytest.raises(MalformedResponse, match=why) as caught:
            await client.fetch_page(Query(CONTACT, InteractionType.EmailSent), None, 1)
    assert CONTACT in str(caught.value)
    assert "EmailSent" in str(caught.value)


async def test_pages_equal_ground_truth_including_non_ascii() -> None:
    config = SimulatorConfig(seed=5, page_size=7, heavy_contacts={HEAVY: 3000})
    async with client_rig(config) as rig:
        found_non_ascii = False
        for itype in ALL_TYPES:
            expected = list(rig.simulator.dataset.interactions(HEAVY, itype))
            got: list[dict[str, Any]] = []
            async for page in rig.client.pages(Query(HEAVY, itype)):
                got.extend(page.interactions)
            assert got == expected, itype
            found_non_ascii |= any(not orjson.dumps(x).isascii() for x in got)
        assert found_non_ascii, "the heavy contact should carry non-ASCII text"
        assert rig.simulator.counters()["total"]["ok"] > 3000 // 7


async def test_date_range_is_sent_and_honoured() -> None:
    from datetime import date

    config = SimulatorConfig(seed=5, heavy_contacts={HEAVY: 2000})
    async with client_rig(config) as rig:
        itype = max(ALL_TYPES, key=lambda t: rig.simulator.dataset.count(HEAVY, t))
        query = Query(HEAVY, itype, date_from="01-01-2021", date_to="12-31-2022")
        got = [x async for page in rig.client.pages(query) for x in page.interactions]
        expected = list(
            rig.simulator.dataset.interactions(HEAVY, itype, date(2021, 1, 1), date(2022, 12, 31))
        )
        assert got == expected
        assert 0 < len(got) < rig.simulator.dataset.count(HEAVY, itype)
        assert all("2021-01-01" <= x["Timestamp"][:10] <= "2022-12-31" for x in got)


async def test_429_carries_retry_after_seconds_and_the_limit() -> None:
    config = SimulatorConfig(seed=1, request_limit=3, window_seconds=30.0)
    async with client_rig(config) as rig:
        for _ in range(3):
            await rig.client.fetch_page(Query(CONTACT, InteractionType.EmailSent), None, 1)
        with pytest.raises(Throttled) as caught:
            await rig.client.fetch_page(Query(CONTACT, InteractionType.EmailSent), None, 1)
    error = caught.value
    assert error.status == 429
    assert error.code == "0x80072322"
    assert error.limit == "requests"
    assert error.retry_after is not None
    assert 1 <= error.retry_after <= 31


async def test_429_retry_after_as_http_date() -> None:
    config = SimulatorConfig(
        seed=1, request_limit=1, window_seconds=20.0, retry_after_format="http-date"
    )
    async with client_rig(config) as rig:
        await rig.client.fetch_page(Query(CONTACT, InteractionType.EmailSent), None, 1)
        with pytest.raises(Throttled) as caught:
            await rig.client.fetch_page(Query(CONTACT, InteractionType.EmailSent), None, 1)
    assert caught.value.retry_after is not None
    assert 0 < caught.value.retry_after <= 21


@pytest.mark.parametrize("skew", [600.0, -600.0])
async def test_429_retry_after_as_http_date_is_read_against_the_servers_date(skew: float) -> None:
    # Our clock 10 minutes ahead of the org's (or behind): an HTTP-date Retry-After read
    # against our own clock would be "in the past" (the default 5 s: hammering the org through
    # its penalty, which it extends) or 10 minutes too long. The answer's Date says what the
    # server's "now" is.
    config = SimulatorConfig(
        seed=1, request_limit=1, window_seconds=20.0, retry_after_format="http-date"
    )
    async with client_rig(config) as rig:
        skewed = DataverseClient(
            rig.client.http, now=lambda: datetime.now(UTC) + timedelta(seconds=skew)
        )
        await skewed.fetch_page(Query(CONTACT, InteractionType.EmailSent), None, 1)
        with pytest.raises(Throttled) as caught:
            await skewed.fetch_page(Query(CONTACT, InteractionType.EmailSent), None, 1)
    assert caught.value.retry_after is not None
    assert 0 < caught.value.retry_after <= 22


async def test_honouring_retry_after_then_succeeds() -> None:
    config = SimulatorConfig(
        seed=1, request_limit=4, window_seconds=0.6, retry_after_format="fractional"
    )
    async with client_rig(config) as rig:
        query = Query(CONTACT, InteractionType.EmailSent)
        for _ in range(4):
            await rig.client.fetch_page(query, None, 1)
        with pytest.raises(Throttled) as caught:
            await rig.client.fetch_page(query, None, 1)
        assert caught.value.retry_after is not None
        await asyncio.sleep(caught.value.retry_after + 0.05)
        page = await rig.client.fetch_page(query, None, 1)
        assert page.number == 1


async def test_concurrency_limit_answers_429_at_once() -> None:
    config = SimulatorConfig(seed=1, concurrency_limit=2, latency=0.3)
    async with client_rig(config) as rig:
        query = Query(CONTACT, InteractionType.EmailSent)
        results = await asyncio.gather(
            *(rig.client.fetch_page(query, None, 1) for _ in range(5)), return_exceptions=True
        )
    throttled = [r for r in results if isinstance(r, Throttled)]
    assert len(throttled) == 3
    assert {t.limit for t in throttled} == {"concurrency"}


async def test_gateway_503_with_html_is_transient() -> None:
    async with client_rig(SimulatorConfig(seed=1, fault_503=1.0)) as rig:
        with pytest.raises(Transient) as caught:
            await rig.client.fetch_page(Query(CONTACT, InteractionType.EmailSent), None, 1)
    assert caught.value.status == 503
    assert "HTML page" in str(caught.value)


async def test_sql_transient_500_is_transient() -> None:
    async with client_rig(SimulatorConfig(seed=1, fault_500=1.0)) as rig:
        with pytest.raises(Transient) as caught:
            await rig.client.fetch_page(Query(CONTACT, InteractionType.EmailSent), None, 1)
    assert caught.value.status == 500


async def test_dropped_connection_is_transient() -> None:
    async with client_rig(SimulatorConfig(seed=1, fault_drop=1.0)) as rig:
        with pytest.raises(Transient, match=r"closed the connection|cut short"):
            await rig.client.fetch_page(Query(CONTACT, InteractionType.EmailSent), None, 1)


async def test_slow_answer_times_out_as_transient() -> None:
    config = SimulatorConfig(seed=1, fault_slow=1.0, slow_seconds=3.0)
    timeouts = Timeouts(request=0.3, connect=1.0)
    async with client_rig(config, timeouts=timeouts) as rig:
        with pytest.raises(Transient, match=r"no answer within 0\.3 s"):
            await rig.client.fetch_page(Query(CONTACT, InteractionType.EmailSent), None, 1)


async def test_refused_connection_is_transient() -> None:
    org = OrgUrl.parse("http://127.0.0.1:9")  # discard port: nothing listens there
    async with (
        TokenProvider(RotatingCredential(), org.scope) as tokens,
        create_session(Timeouts(request=1.0, connect=1.0)) as session,
    ):
        client = DataverseClient(OrgHttp(session, org, tokens))
        with pytest.raises(Transient, match="cannot connect"):
            await client.fetch_page(Query(CONTACT, InteractionType.EmailSent), None, 1)


@contextmanager
def blackholed_port() -> Iterator[int]:
    """A loopback port that never completes a connect: it listens, but its accept queue is
    full and nobody accepts, so the kernel drops every further SYN (a firewall that drops
    packets looks the same to the client)."""
    with socket.socket() as listener, ExitStack() as fillers:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port: int = listener.getsockname()[1]
        for _ in range(3):
            filler = fillers.enter_context(socket.socket())
            filler.setblocking(False)
            with suppress(BlockingIOError):
                filler.connect(("127.0.0.1", port))
        yield port


async def test_a_connect_that_times_out_is_a_connect_failure_naming_the_host() -> None:
    # A dropped SYN is the commonest "org unreachable" (a firewall): it must count as a
    # connect failure (pre-flight retries, ConnectWatch stops the run), not as a slow answer.
    with blackholed_port() as port:
        org = OrgUrl.parse(f"http://127.0.0.1:{port}")
        timeouts = Timeouts(request=5.0, connect=0.3)
        async with (
            TokenProvider(RotatingCredential(), org.scope) as tokens,
            create_session(timeouts) as session,
        ):
            client = DataverseClient(OrgHttp(session, org, tokens, timeouts=timeouts))
            with pytest.raises(
                ConnectFailed, match=r"cannot connect to 127\.0\.0\.1:\d+ \(no "
            ) as caught:
                await client.fetch_page(Query(CONTACT, InteractionType.EmailSent), None, 1)
            assert caught.value.host == f"127.0.0.1:{port}"
            assert "0.3 s" in caught.value.detail
            assert "no answer within 5 s" not in caught.value.detail
            # Across tasks, such failures stop the run instead of failing contacts one by one.
            loop = asyncio.get_running_loop()
            fetcher = Fetcher(
                client,
                Throttle(ThrottleSettings(rate=1000.0), clock=loop.time),
                RetryPolicy(base=0.01, cap=0.01, attempts=3),
                watch=ConnectWatch(clock=loop.time, failures=2, seconds=0.0),
            )
            with pytest.raises(NoConnection, match=f"no connection to 127.0.0.1:{port}"):
                await fetcher.for_pair(1).fetch(Query(CONTACT, InteractionType.EmailSent), None, 1)


async def test_401_gets_one_fresh_token_then_succeeds() -> None:
    config = SimulatorConfig(seed=1, token_lifetime=0.2)
    async with client_rig(config) as rig:
        query = Query(CONTACT, InteractionType.EmailSent)
        await rig.client.fetch_page(query, None, 1)
        await asyncio.sleep(0.3)
        await rig.client.fetch_page(query, None, 1)  # old token expired: refreshed once
    assert rig.credential.calls == 2


async def test_401_twice_is_auth_rejected_and_hides_the_token() -> None:
    credential = RotatingCredential(user="not-a-sim-user")
    async with client_rig(credential=credential) as rig:
        with pytest.raises(AuthRejected) as caught:
            await rig.client.fetch_page(Query(CONTACT, InteractionType.EmailSent), None, 1)
    assert credential.calls == 2
    assert caught.value.status == 401
    text = str(caught.value) + repr(caught.value)
    assert "not-a-sim-user" not in text
    assert caught.value.__cause__ is None
    assert caught.value.__context__ is None


async def test_403_is_forbidden() -> None:
    config = SimulatorConfig(seed=1, forbidden_identities=frozenset({"sim-test"}))
    async with client_rig(config) as rig:
        with pytest.raises(Forbidden) as caught:
            await rig.client.fetch_page(Query(CONTACT, InteractionType.EmailSent), None, 1)
    assert caught.value.status == 403
    assert caught.value.code


async def test_404_is_action_missing_with_the_retirement_advice() -> None:
    async with client_rig(SimulatorConfig(seed=1, action_missing=True)) as rig:
        with pytest.raises(ActionMissing) as caught:
            await rig.client.fetch_page(Query(CONTACT, InteractionType.EmailSent), None, 1)
    message = str(caught.value)
    assert "HTTP 404" in message
    assert "retired" in message
    assert "msdyncrm_LoadInteractionsPublic" in message


async def test_400_is_bad_request_with_dataverse_code() -> None:
    async with client_rig() as rig:
        # A date the server cannot parse: the client passes strings through as given.
        query = Query(CONTACT, InteractionType.EmailSent, date_from="2024-13-45")
        with pytest.raises(BadRequest) as caught:
            await rig.client.fetch_page(query, None, 1)
    assert caught.value.status == 400
    assert CONTACT in str(caught.value)
    assert "EmailSent" in str(caught.value)


async def test_one_token_fetch_for_100_concurrent_first_callers() -> None:
    async with client_rig() as rig:
        query = Query(CONTACT, InteractionType.EmailSent)
        await asyncio.gather(*(rig.client.fetch_page(query, None, 1) for _ in range(100)))
    assert rig.credential.calls == 1


def test_retry_after_forms() -> None:
    now = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after("17", now) == 17.0
    assert parse_retry_after(" 2.5 ", now) == 2.5
    assert parse_retry_after("-3", now) == 0.0
    assert parse_retry_after(format_datetime(now + timedelta(seconds=30), usegmt=True), now) == 30
    assert parse_retry_after(format_datetime(now - timedelta(seconds=30), usegmt=True), now) == 0
    assert parse_retry_after("soon", now) is None
    assert parse_retry_after("nan", now) is None
    assert parse_retry_after(None, now) is None


def test_integers_beyond_64_bits_are_kept_exact() -> None:
    from sar_bulk.dataverse.client import decode_page

    data = (
        f'[{{"ContactId":"{CONTACT}","InteractionType":"EmailSent",'
        '"Big":123456789012345678901234567890,"Neg":-9223372036854775809}]'
    )
    raw = orjson.dumps({"Data": data, "NextSkipToken": None})
    interactions, _ = decode_page(Query(CONTACT, InteractionType.EmailSent), raw)
    assert orjson.dumps(interactions).decode() == data
