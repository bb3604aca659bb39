"""The simulator over real loopback HTTP, seen by a plain aiohttp client, plus its limit logic."""

from __future__ import annotations

import asyncio
import email.utils
from collections.abc import AsyncIterator
from datetime import date
from typing import Any

import aiohttp
import orjson
import pytest
from multidict import CIMultiDictProxy

from sar_bulk.simulator import (
    Limit,
    Position,
    ServiceProtection,
    Simulator,
    SimulatorConfig,
    Throttled,
    Ticket,
    serve_forever,
)
from sar_bulk.simulator.interaction_types import ALL_TYPES, InteractionType
from sar_bulk.simulator.replies import format_retry_after

ACTION = "/api/data/v9.0/msdyncrm_LoadInteractionsPublic"
HEAVY = "0d0d0d0d-0000-4000-8000-000000000003"
MILLION = "0f0f0f0f-0000-4000-8000-000000000001"
TOKEN = "sim-tester.1"
ABSENT = "<absent>"


class FakeClock:
    """A monotonic clock that only moves when told to."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Answer:
    def __init__(self, status: int, headers: CIMultiDictProxy[str], raw: bytes) -> None:
        self.status = status
        self.headers = headers
        self.raw = raw

    def json(self) -> Any:
        return orjson.loads(self.raw)

    @property
    def code(self) -> str:
        return str(self.json()["error"]["code"])

    def records(self) -> list[dict[str, Any]]:
        data = self.json().get("Data")
        assert data is None or isinstance(data, str)  # double-encoded: a string, not an array
        return [] if data is None else list(orjson.loads(data))

    def next_token(self) -> str | None:
        token = self.json().get("NextSkipToken")
        return token or None


def contact(n: int) -> str:
    return f"{n:08x}-1234-4abc-8def-{n:012x}"


def good_headers(token: str = TOKEN) -> dict[str, str]:
    return {
        "Authorization": f"Bearer {token}",
        "Accept": "application/json",
        "Content-Type": "application/json; charset=utf-8",
        "OData-MaxVersion": "4.0",
        "OData-Version": "4.0",
    }


def body_for(contact_id: object, itype: InteractionType | str, **extra: Any) -> dict[str, Any]:
    return {"ContactId": contact_id, "InteractionType": str(itype), **extra}


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


async def post(
    session: aiohttp.ClientSession,
    sim: Simulator,
    body: object,
    *,
    token: str = TOKEN,
    headers: dict[str, str] | None = None,
) -> Answer:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    sent = good_headers(token) if headers is None else headers
    async with session.post(sim.base_url + ACTION, data=raw, headers=sent) as response:
        return Answer(response.status, response.headers, await response.read())


async def fetch_all(
    session: aiohttp.ClientSession, sim: Simulator, body: dict[str, Any]
) -> tuple[list[dict[str, Any]], list[Answer]]:
    records: list[dict[str, Any]] = []
    pages: list[Answer] = []
    request = dict(body)
    while True:
        answer = await post(session, sim, request)
        assert answer.status == 200, answer.raw
        pages.append(answer)
        records.extend(answer.records())
        token = answer.next_token()
        if token is None:
            return records, pages
        request["SkipToken"] = token


def ending(answer: Answer) -> str:
    return repr(answer.json().get("NextSkipToken", ABSENT))


# ----- protocol checks ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "value"),
    [
        ("Content-Type", None),
        ("Content-Type", "text/plain"),
        ("Accept", None),
        ("Accept", "text/html"),
        ("OData-MaxVersion", None),
        ("OData-Version", "3.0"),
    ],
)
async def test_protocol_headers_are_required(
    session: aiohttp.ClientSession, header: str, value: str | None
) -> None:
    headers = good_headers()
    del headers[header]
    if value is not None:
        headers[header] = value
    async with Simulator() as sim:
        answer = await post(session, sim, body_for(contact(1), "EmailSent"), headers=headers)
    assert answer.status == 400
    assert answer.code == "0x80048d19"
    assert answer.headers["Content-Type"] == "application/json; odata.metadata=minimal"
    assert answer.headers["OData-Version"] == "4.0"
    assert answer.json()["error"]["message"]


@pytest.mark.parametrize(
    ("body", "code", "words"),
    [
        (b"{not json", "0x80048d19", "invalid JSON"),
        (b"[]", "0x80048d19", "not an object"),
        ({"contactid": contact(1), "InteractionType": "EmailSent"}, "0x0", "'contactid'"),
        (body_for(contact(1), "EmailSent", Extra=1), "0x0", "does not exist on type"),
        (body_for("{" + contact(1) + "}", "EmailSent"), "0x80040203", "not a GUID"),
        (body_for(contact(1).replace("-", ""), "EmailSent"), "0x80040203", "not a GUID"),
        ({"InteractionType": "EmailSent"}, "0x80040203", "ContactId"),
        (body_for(12, "EmailSent"), "0x80048d19", "Edm.String"),
        (body_for(contact(1), "emailsent"), "0x80040203", "InteractionType"),
        ({"ContactId": contact(1)}, "0x80040203", "InteractionType"),
        (body_for(contact(1), "EmailSent", DateFrom="2024-01-31"), "0x80040203", "DateFrom"),
        (body_for(contact(1), "EmailSent", DateTo="02-30-2024"), "0x80040203", "DateTo"),
        (
            body_for(contact(1), "EmailSent", DateFrom="02-01-2024", DateTo="01-01-2024"),
            "0x80040203",
            "after",
        ),
        (body_for(contact(1), "EmailSent", Top=-1), "0x80040203", "negative"),
        (body_for(contact(1), "EmailSent", Top="5"), "0x80048d19", "Edm.Int32"),
        (body_for(contact(1), "EmailSent", Top=True), "0x80048d19", "Edm.Int32"),
        (body_for(contact(1), "EmailSent", Top=2**31), "0x80048d19", "Edm.Int32"),
        (body_for(contact(1), "EmailSent", SkipToken=5), "0x80048d19", "Edm.String"),
        (body_for(contact(1), "EmailSent", SkipToken="page2"), "0x80040203", "SkipToken"),
    ],
)
async def test_bad_bodies_get_400_in_dataverse_shape(
    session: aiohttp.ClientSession, body: object, code: str, words: str
) -> None:
    async with Simulator() as sim:
        answer = await post(session, sim, body)
        counters = sim.counters()
    assert answer.status == 400
    assert answer.code == code
    assert words in answer.json()["error"]["message"]
    assert counters["total"]["bad_request"] == 1
    assert counters["identities"]["sim-tester"]["bad_request"] == 1


async def test_upper_case_guid_and_null_optionals_are_accepted(
    session: aiohttp.ClientSession,
) -> None:
    async with Simulator() as sim:
        body = body_for(contact(1).upper(), "EmailSent", DateFrom=None, Top=None, SkipToken=None)
        answer = await post(session, sim, body)
    assert answer.status == 200
    assert all(r["ContactId"] == contact(1) for r in answer.records())


@pytest.mark.parametrize(
    "authorization",
    [None, "Basic c2ltOng=", "Bearer", "Bearer other-token", "bearer  "],
)
async def test_missing_or_foreign_token_gets_401_with_challenge_and_no_body(
    session: aiohttp.ClientSession, authorization: str | None
) -> None:
    headers = good_headers()
    del headers["Authorization"]
    if authorization is not None:
        headers["Authorization"] = authorization
    async with Simulator() as sim:
        answer = await post(session, sim, body_for(contact(1), "EmailSent"), headers=headers)
        challenge = answer.headers["WWW-Authenticate"]
        assert challenge.startswith("Bearer ")
        assert "authorization_uri=https://login.microsoftonline.com/" in challenge
        assert challenge.endswith(f"resource_id={sim.base_url}")
        assert ("error=invalid_token" in challenge) == (authorization == "Bearer other-token")
        assert sim.counters()["total"]["unauthorized"] == 1
    assert answer.status == 401
    assert answer.raw == b""


async def test_tokens_expire_after_their_lifetime(session: aiohttp.ClientSession) -> None:
    clock = FakeClock()
    async with Simulator(SimulatorConfig(token_lifetime=60), clock=clock) as sim:
        body = body_for(contact(1), "EmailSent")
        assert (await post(session, sim, body, token="sim-a.1")).status == 200
        clock.advance(59)
        assert (await post(session, sim, body, token="sim-a.1")).status == 200
        assert (await post(session, sim, body, token="sim-a.2")).status == 200
        clock.advance(2)
        expired = await post(session, sim, body, token="sim-a.1")
        assert expired.status == 401
        assert "error=invalid_token" in expired.headers["WWW-Authenticate"]
        assert (await post(session, sim, body, token="sim-a.2")).status == 200
        assert (await post(session, sim, body, token="sim-a.3")).status == 200
        assert sim.counters()["identities"]["sim-a"]["unauthorized"] == 1


async def test_forbidden_identity_gets_403(session: aiohttp.ClientSession) -> None:
    config = SimulatorConfig(forbidden_identities=frozenset({"sim-nobody"}))
    async with Simulator(config) as sim:
        refused = await post(session, sim, body_for(contact(1), "EmailSent"), token="sim-nobody.7")
        allowed = await post(session, sim, body_for(contact(1), "EmailSent"))
    assert refused.status == 403
    assert refused.code == "0x80040220"
    assert "privilege" in refused.json()["error"]["message"]
    assert allowed.status == 200


async def test_missing_action_and_other_resources_get_404(
    session: aiohttp.ClientSession,
) -> None:
    async with Simulator(SimulatorConfig(action_missing=True)) as sim:
        missing = await post(session, sim, body_for(contact(1), "EmailSent"))
        auth = {"Authorization": f"Bearer {TOKEN}"}
        widgets = sim.base_url + "/api/data/v9.0/widgets(1)"
        async with session.get(widgets, headers=auth) as response:
            elsewhere = (response.status, orjson.loads(await response.read()))
        async with session.get(sim.base_url + ACTION) as response:
            wrong_method = response.status
        assert sim.counters()["total"]["not_found"] == 2
    assert missing.status == 404
    assert missing.json() == {
        "error": {
            "code": "0x80060888",
            "message": "Resource not found for the segment 'msdyncrm_LoadInteractionsPublic'.",
        }
    }
    assert elsewhere == (
        404,
        {
            "error": {
                "code": "0x80060888",
                "message": "Resource not found for the segment 'widgets'.",
            }
        },
    )
    assert wrong_method == 405


# ----- pages ----------------------------------------------------------------------------------


async def test_pages_concatenate_to_the_ground_truth(session: aiohttp.ClientSession) -> None:
    config = SimulatorConfig(seed=2, heavy_contacts={HEAVY: 2500}, page_size=200)
    async with Simulator(config) as sim:
        totals = sim.dataset.totals(HEAVY)
        itype = max(totals, key=lambda t: totals[t])
        records, pages = await fetch_all(session, sim, body_for(HEAVY, itype))
        expected = list(sim.dataset.interactions(HEAVY, itype))
        base = sim.base_url
    assert records == expected
    assert len(pages) >= totals[itype] // 200
    assert all(len(page.records()) <= 200 for page in pages)
    tokens = [page.next_token() for page in pages[:-1]]
    assert len(set(tokens)) == len(tokens)
    first = pages[0]
    assert first.json()["@odata.context"] == (
        f"{base}/api/data/v9.0/$metadata#Microsoft.Dynamics.CRM."
        "msdyncrm_LoadInteractionsPublicResponse"
    )
    assert first.headers["x-ms-dop-hint"] == "8"
    assert first.headers["Content-Type"] == "application/json; odata.metadata=minimal"
    assert "ARRAffinity=" in first.headers["Set-Cookie"]
    assert "HttpOnly" in first.headers["Set-Cookie"]
    assert int(first.headers["x-ms-ratelimit-burst-remaining-xrm-requests"]) < 6000
    assert "x-ms-ratelimit-time-remaining-xrm-requests" in first.headers


async def test_every_end_of_paging_spelling_and_empty_data_form_occurs(
    session: aiohttp.ClientSession,
) -> None:
    endings: set[str] = set()
    empties: set[str] = set()
    async with Simulator(SimulatorConfig(seed=6, heavy_fraction=0.0)) as sim:
        for n in range(30):
            for itype in ALL_TYPES[:6]:
                answer = await post(session, sim, body_for(contact(n), itype))
                endings.add(ending(answer))
                if not answer.records():
                    empties.add(repr(answer.json().get("Data", ABSENT)))
    assert endings == {"None", "''", repr(ABSENT)}
    assert empties == {"'[]'", "None", repr(ABSENT)}


async def test_a_result_ending_on_a_full_page_may_need_one_more_empty_page(
    session: aiohttp.ClientSession,
) -> None:
    seen_extra = seen_exact = False
    async with Simulator(SimulatorConfig(seed=8, heavy_fraction=0.0)) as sim:
        for n in range(40):
            for itype, total in sim.dataset.totals(contact(n)).items():
                if total < 2:
                    continue
                body = body_for(contact(n), itype, Top=total)
                records, pages = await fetch_all(session, sim, body)
                assert records == list(sim.dataset.interactions(contact(n), itype))
                if len(pages) == 2:
                    assert pages[1].records() == []
                    seen_extra = True
                else:
                    assert len(pages) == 1
                    seen_exact = True
            if seen_extra and seen_exact:
                break
    assert seen_extra
    assert seen_exact


async def test_top_sets_the_page_size_and_zero_means_the_server_size(
    session: aiohttp.ClientSession,
) -> None:
    config = SimulatorConfig(seed=2, heavy_contacts={HEAVY: 2500}, page_size=50)
    async with Simulator(config) as sim:
        totals = sim.dataset.totals(HEAVY)
        itype = max(totals, key=lambda t: totals[t])
        small = await post(session, sim, body_for(HEAVY, itype, Top=7))
        capped = await post(session, sim, body_for(HEAVY, itype, Top=5000))
        zero = await post(session, sim, body_for(HEAVY, itype, Top=0))
        records, _ = await fetch_all(session, sim, body_for(HEAVY, itype, Top=300))
        expected = list(sim.dataset.interactions(HEAVY, itype))
    assert len(small.records()) == 7
    assert small.next_token() is not None
    assert len(capped.records()) == 50
    assert len(zero.records()) == 50
    assert records == expected


async def test_date_filter_over_http(session: aiohttp.ClientSession) -> None:
    config = SimulatorConfig(seed=2, heavy_contacts={HEAVY: 2500}, page_size=100)
    async with Simulator(config) as sim:
        totals = sim.dataset.totals(HEAVY)
        itype = max(totals, key=lambda t: totals[t])
        body = body_for(HEAVY, itype, DateFrom="03-15-2021", DateTo="07-04-2022")
        records, _ = await fetch_all(session, sim, body)
        expected = list(sim.dataset.interactions(HEAVY, itype, date(2021, 3, 15), date(2022, 7, 4)))
    assert records == expected
    assert 0 < len(records) < totals[itype]
    assert all("2021-03-15" <= r["Timestamp"][:10] <= "2022-07-04" for r in records)


async def test_data_is_double_encoded_utf8_that_round_trips(
    session: aiohttp.ClientSession,
) -> None:
    config = SimulatorConfig(seed=2, heavy_contacts={HEAVY: 2500})
    async with Simulator(config) as sim:
        totals = sim.dataset.totals(HEAVY)
        itype = max(totals, key=lambda t: totals[t])
        answer = await post(session, sim, body_for(HEAVY, itype))
        expected = sim.dataset.page(HEAVY, itype, None, None, offset=0, limit=500)
    assert isinstance(answer.json()["Data"], str)
    assert answer.records() == expected
    text = answer.raw.decode("utf-8")
    assert any(ord(ch) > 127 for ch in text)  # sent as UTF-8, not \u-escaped
    assert '\\"' in text  # the inner JSON's quotes are escaped inside the Data string


async def test_altered_or_foreign_skip_tokens_are_refused(session: aiohttp.ClientSession) -> None:
    config = SimulatorConfig(seed=2, heavy_contacts={HEAVY: 2500}, page_size=100)
    async with Simulator(config) as sim:
        totals = sim.dataset.totals(HEAVY)
        itype = max(totals, key=lambda t: totals[t])
        first = await post(session, sim, body_for(HEAVY, itype))
        token = first.next_token()
        assert token is not None
        assert "<cookie" in token
        assert '"' in token
        altered = token.replace('pagenumber="2"', 'pagenumber="3"')
        other_type = next(t for t in ALL_TYPES if t is not itype)
        attempts = [
            body_for(HEAVY, itype, SkipToken=altered),
            body_for(HEAVY, itype, SkipToken=token[:-3]),
            body_for(HEAVY, other_type, SkipToken=token),
            body_for(contact(1), itype, SkipToken=token),
            body_for(HEAVY, itype, SkipToken=token, Top=10),
            body_for(HEAVY, itype, SkipToken=token, DateFrom="01-01-2020"),
        ]
        answers = [await post(session, sim, body) for body in attempts]
        honest = await post(session, sim, body_for(HEAVY, itype, SkipToken=token))
    assert [a.status for a in answers] == [400] * len(attempts)
    assert {a.code for a in answers} == {"0x80040203"}
    assert honest.status == 200


async def test_a_page_deep_inside_a_million_interactions_is_quick(
    session: aiohttp.ClientSession,
) -> None:
    config = SimulatorConfig(seed=9, heavy_contacts={MILLION: 1_000_000})
    async with Simulator(config) as sim:
        totals = sim.dataset.totals(MILLION)
        itype = max(totals, key=lambda t: totals[t])
        count = totals[itype]
        first = await post(session, sim, body_for(MILLION, itype))
        query = orjson.dumps([MILLION, itype.value, None, None, None]).decode()
        pages = -(-count // 500)
        deep = sim.skip_tokens.issue(query, Position(pages, (pages - 1) * 500))
        last = await post(session, sim, body_for(MILLION, itype, SkipToken=deep))
        expected = sim.dataset.page(MILLION, itype, None, None, offset=(pages - 1) * 500, limit=500)
    assert sum(totals.values()) == 1_000_000
    assert len(first.records()) == 500
    assert first.next_token() is not None
    assert last.status == 200
    assert last.records() == expected
    assert 0 < len(expected) <= 500


async def test_same_seed_serves_the_same_bytes(session: aiohttp.ClientSession) -> None:
    config = SimulatorConfig(seed=4, heavy_contacts={HEAVY: 1500}, page_size=300)
    bodies: list[list[bytes]] = []
    for _ in range(2):
        async with Simulator(config) as sim:
            totals = sim.dataset.totals(HEAVY)
            itype = max(totals, key=lambda t: totals[t])
            _, pages = await fetch_all(session, sim, body_for(HEAVY, itype))
            light = [await post(session, sim, body_for(contact(n), "EmailSent")) for n in range(5)]
            base = sim.base_url.encode()
            bodies.append([a.raw.replace(base, b"BASE") for a in pages + light])
    assert bodies[0] == bodies[1]


# ----- service protection over HTTP ------------------------------------------------------------


async def test_burst_beyond_the_limit_gets_429_and_waiting_retry_after_helps(
    session: aiohttp.ClientSession,
) -> None:
    clock = FakeClock()
    config = SimulatorConfig(request_limit=5, window_seconds=2.0)
    async with Simulator(config, clock=clock) as sim:
        body = body_for(contact(1), "EmailSent")
        statuses = []
        for _ in range(5):
            statuses.append((await post(session, sim, body, token="sim-a.1")).status)
            clock.advance(0.1)
        refused = await post(session, sim, body, token="sim-a.2")
        other_user = await post(session, sim, body, token="sim-b.1")
        clock.advance(float(refused.headers["Retry-After"]))
        again = await post(session, sim, body, token="sim-a.1")
        counters = sim.counters()
    assert statuses == [200] * 5
    assert refused.status == 429
    assert refused.json() == {
        "error": {
            "code": "0x80072322",
            "message": "Number of requests exceeded the limit of 5 over time window of 2 seconds.",
        }
    }
    assert refused.headers["Retry-After"] == "2"  # 1.5 s rounded up
    assert other_user.status == 200  # limits are per identity
    assert again.status == 200
    assert counters["identities"]["sim-a"]["throttled_by_limit"]["requests"] == 1
    assert counters["total"]["throttled"] == 1


async def test_honouring_fractional_retry_after_in_real_time(
    session: aiohttp.ClientSession,
) -> None:
    config = SimulatorConfig(request_limit=20, window_seconds=1.0, retry_after_format="fractional")
    async with Simulator(config) as sim:
        body = body_for(contact(1), "EmailSent")
        answers = await asyncio.gather(*(post(session, sim, body) for _ in range(21)))
        refused = [a for a in answers if a.status == 429]
        assert len(refused) == 1
        wait = float(refused[0].headers["Retry-After"])
        assert 0 < wait <= 1.0
        await asyncio.sleep(wait)
        assert (await post(session, sim, body)).status == 200


async def test_concurrent_requests_beyond_the_limit_are_refused_at_once(
    session: aiohttp.ClientSession,
) -> None:
    config = SimulatorConfig(concurrency_limit=2, latency=1.0)
    async with Simulator(config) as sim:
        body = body_for(contact(1), "EmailSent")
        answers = await asyncio.gather(*(post(session, sim, body) for _ in range(4)))
        counters = sim.counters()
    refused = [a for a in answers if a.status == 429]
    assert len(refused) >= 1
    assert {a.code for a in refused} == {"0x80072326"}
    assert refused[0].json()["error"]["message"] == (
        "Number of concurrent requests exceeded the limit of 2."
    )
    assert refused[0].headers["Retry-After"] == "1"
    assert counters["total"]["max_in_flight"] >= 3
    assert counters["identities"]["sim-tester"]["throttled_by_limit"]["concurrency"] >= 1


async def test_execution_time_limit(session: aiohttp.ClientSession) -> None:
    config = SimulatorConfig(execution_time_limit=0.05, latency=0.03, window_seconds=60)
    async with Simulator(config) as sim:
        body = body_for(contact(1), "EmailSent")
        answers = [await post(session, sim, body) for _ in range(3)]
    assert [a.status for a in answers] == [200, 200, 429]
    assert answers[2].code == "0x80072321"
    message = answers[2].json()["error"]["message"]
    assert message.startswith("Combined execution time of incoming requests exceeded limit of 50")
    assert 1 <= int(answers[2].headers["Retry-After"]) <= 60


async def test_http_date_retry_after(session: aiohttp.ClientSession) -> None:
    clock = FakeClock()
    wall = 1_700_000_000.2
    config = SimulatorConfig(request_limit=1, window_seconds=10, retry_after_format="http-date")
    async with Simulator(config, clock=clock, wall_clock=lambda: wall) as sim:
        body = body_for(contact(1), "EmailSent")
        await post(session, sim, body)
        clock.advance(0.5)
        refused = await post(session, sim, body)
    assert refused.status == 429
    when = email.utils.parsedate_to_datetime(refused.headers["Retry-After"])
    # The refused request counts too, so the window frees up 10 s after it: 0.2 + 10, rounded up.
    assert when.timestamp() == 1_700_000_011
    assert refused.headers["Retry-After"].endswith(" GMT")


# ----- faults ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("kind", "status"), [("500", 500), ("502", 502), ("503", 503)])
async def test_server_error_faults(session: aiohttp.ClientSession, kind: str, status: int) -> None:
    config = SimulatorConfig(**{f"fault_{kind}": 1.0})  # type: ignore[arg-type]
    async with Simulator(config) as sim:
        answer = await post(session, sim, body_for(contact(1), "EmailSent"))
        counters = sim.counters()
    assert answer.status == status
    if kind == "500":
        assert answer.code == "0x80044150"
        assert "-2147204784" in answer.json()["error"]["message"]
    else:
        assert answer.headers["Content-Type"].startswith("text/html")
        assert answer.raw.lower().lstrip().startswith((b"<html", b"<!doctype"))
    assert counters["total"]["faults"][kind] == 1
    assert counters["total"]["ok"] == 0


async def test_dropped_connection_fault(session: aiohttp.ClientSession) -> None:
    async with Simulator(SimulatorConfig(fault_drop=1.0)) as sim:
        with pytest.raises((aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError)):
            await post(session, sim, body_for(contact(1), "EmailSent"))
        assert sim.counters()["total"]["faults"]["drop"] == 1


async def test_slow_fault_trips_a_client_timeout(session: aiohttp.ClientSession) -> None:
    async with Simulator(SimulatorConfig(fault_slow=1.0, slow_seconds=2.0)) as sim:
        timeout = aiohttp.ClientTimeout(sock_read=0.2)
        with pytest.raises(TimeoutError):
            async with session.post(
                sim.base_url + ACTION,
                data=orjson.dumps(body_for(contact(1), "EmailSent")),
                headers=good_headers(),
                timeout=timeout,
            ) as response:
                await response.read()
        assert sim.counters()["total"]["faults"]["slow"] == 1


async def test_malformed_fault_kinds(session: aiohttp.ClientSession) -> None:
    kinds: set[str] = set()
    async with Simulator(SimulatorConfig(fault_malformed=1.0, heavy_fraction=0.0)) as sim:
        for n in range(12):
            answer = await post(session, sim, body_for(contact(n), "EmailSent"))
            assert answer.status == 200
            if answer.headers["Content-Type"].startswith("text/html"):
                kinds.add("html")
                continue
            try:
                page = answer.json()
            except orjson.JSONDecodeError:
                kinds.add("truncated")
                continue
            assert not isinstance(orjson.loads(page["Data"]), list)
            kinds.add("data-not-array")
        assert sim.counters()["total"]["faults"]["malformed"] == 12
    assert kinds == {"html", "truncated", "data-not-array"}


async def test_faults_are_reproducible_for_a_seed(session: aiohttp.ClientSession) -> None:
    config = SimulatorConfig(seed=3, fault_500=0.3, fault_503=0.3)
    runs = []
    for _ in range(2):
        async with Simulator(config) as sim:
            body = body_for(contact(1), "EmailSent")
            runs.append([(await post(session, sim, body)).status for _ in range(20)])
    assert runs[0] == runs[1]
    assert {200, 500, 503} == set(runs[0])


# ----- counters and serving ----------------------------------------------------------------------


async def test_counters_over_http_and_reset(session: aiohttp.ClientSession) -> None:
    async with Simulator() as sim:
        await post(session, sim, body_for(contact(1), "EmailSent"), token="sim-a.1")
        await post(session, sim, body_for(contact(1), "EmailOpened"), token="sim-a.2")
        await post(session, sim, body_for(contact(2), "EmailSent"), token="sim-b.1")
        await post(session, sim, body_for(contact(2), "Nope"), token="sim-b.1")
        async with session.get(sim.base_url + "/_sim/counters") as response:
            served = orjson.loads(await response.read())
        assert served == sim.counters()
        async with session.post(sim.base_url + "/_sim/reset") as response:
            assert response.status == 204
        after = sim.counters()
    assert served["total"]["requests"] == 4
    assert served["total"]["ok"] == 3
    assert served["identities"]["sim-a"]["ok"] == 2
    assert served["identities"]["sim-b"]["bad_request"] == 1
    assert served["ok_requests_by_contact"] == {contact(1): 2, contact(2): 1}
    assert served["ok_requests_by_contact_type"][contact(1)] == {"EmailOpened": 1, "EmailSent": 1}
    assert served["total"]["in_flight"] == 0
    assert after["total"]["requests"] == 0
    assert after["ok_requests_by_contact"] == {}


async def test_only_loopback_addresses_are_served() -> None:
    for host in ("0.0.0.0", "10.1.2.3", "example.com"):  # noqa: S104 - refusing it is the test
        with pytest.raises(ValueError, match="loopback"):
            Simulator(host=host)


async def test_serve_forever_reports_its_url_and_stops_when_cancelled(
    session: aiohttp.ClientSession,
) -> None:
    ready: asyncio.Queue[str] = asyncio.Queue()
    task = asyncio.create_task(serve_forever(SimulatorConfig(), ready=ready.put_nowait))
    base = await asyncio.wait_for(ready.get(), timeout=10)
    async with session.post(
        base + ACTION, data=orjson.dumps(body_for(contact(1), "EmailSent")), headers=good_headers()
    ) as response:
        assert response.status == 200
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    with pytest.raises(aiohttp.ClientConnectionError):
        await session.post(base + ACTION, data=b"{}", headers=good_headers())


# ----- service protection without a server ------------------------------------------------------


def test_request_window_slides_and_refusals_extend_the_penalty() -> None:
    clock = FakeClock(0.0)
    guard = ServiceProtection(request_limit=3, window_seconds=10.0, clock=clock)
    for _ in range(3):  # arrivals at t=0, 1, 2
        ticket = guard.admit("u")
        assert isinstance(ticket, Ticket)
        guard.release(ticket)
        clock.advance(1.0)
    first = guard.admit("u")  # t=3
    assert isinstance(first, Throttled)
    assert first.limit is Limit.REQUESTS
    assert first.retry_after == pytest.approx(8.0)  # at t=11 only the arrivals at 2 and 3 remain
    clock.advance(1.0)
    again = guard.admit("u")  # t=4: sent during the penalty, and counted
    assert isinstance(again, Throttled)
    assert again.retry_after == pytest.approx(8.0)
    clock.advance(7.0)
    assert isinstance(guard.admit("u"), Throttled)  # t=11 no longer suffices: 2, 3, 4 remain
    clock.advance(11.0)
    assert isinstance(guard.admit("u"), Ticket)
    assert isinstance(guard.admit("someone-else"), Ticket)


def test_a_client_that_waits_retry_after_is_admitted() -> None:
    clock = FakeClock(0.0)
    guard = ServiceProtection(request_limit=3, window_seconds=10.0, clock=clock)
    for _ in range(3):
        assert isinstance(guard.admit("u"), Ticket)
        clock.advance(0.5)
    refused = guard.admit("u")
    assert isinstance(refused, Throttled)
    clock.advance(refused.retry_after)
    assert isinstance(guard.admit("u"), Ticket)


def test_concurrency_slots_are_freed_on_release() -> None:
    clock = FakeClock(0.0)
    guard = ServiceProtection(concurrency_limit=2, concurrency_retry_after=0.5, clock=clock)
    one, two = guard.admit("u"), guard.admit("u")
    assert isinstance(one, Ticket)
    assert isinstance(two, Ticket)
    third = guard.admit("u")
    assert isinstance(third, Throttled)
    assert third.limit is Limit.CONCURRENCY
    assert third.retry_after == 0.5
    guard.release(one)
    assert isinstance(guard.admit("u"), Ticket)


def test_execution_time_is_booked_and_expires() -> None:
    clock = FakeClock(0.0)
    guard = ServiceProtection(execution_time_limit=2.0, window_seconds=10.0, clock=clock)
    for _ in range(3):  # three requests of 1 s each, ending at t=1, 2, 3
        ticket = guard.admit("u")
        assert isinstance(ticket, Ticket)
        clock.advance(1.0)
        guard.release(ticket)
    assert guard.remaining("u").execution_ms == 0.0
    refused = guard.admit("u")
    assert isinstance(refused, Throttled)
    assert refused.limit is Limit.EXECUTION_TIME
    assert refused.retry_after == pytest.approx(8.0)  # the first second leaves at t=11
    assert "2,000 milliseconds over time window of 10 seconds" in refused.message
    clock.advance(8.0)
    assert isinstance(guard.admit("u"), Ticket)
    assert guard.remaining("u").requests == 6000 - 3  # arrivals at 2, 3 (refused) and 11


@pytest.mark.parametrize(
    ("seconds", "style", "expected"),
    [
        (0.2, "seconds", "1"),
        (1.0, "seconds", "1"),
        (1.01, "seconds", "2"),
        (0.0, "seconds", "1"),
        (0.2, "fractional", "0.200"),
        (1.2344, "fractional", "1.235"),
        (0.0, "fractional", "0.001"),
        (0.5, "http-date", "Tue, 14 Nov 2023 22:13:22 GMT"),
    ],
)
def test_retry_after_formats_never_shorten_the_wait(
    seconds: float, style: Any, expected: str
) -> None:
    assert format_retry_after(seconds, style, 1_700_000_000.7) == expected
