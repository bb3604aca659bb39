"""Web API helpers over real loopback HTTP: JSON, paging, errors, ranged downloads."""

from __future__ import annotations

import hashlib
import re
from collections.abc import AsyncIterator

import orjson
import pytest
from aiohttp import web
from webapi_support import (
    Handler,
    ScriptedOrg,
    Seen,
    error_response,
    json_response,
    scripted_org,
    source_deps,
)

from sar_bulk.dataverse.webapi import (
    Download,
    QueryRefused,
    ResourceMissing,
    TooLarge,
    WebApi,
    without_sent_values,
)
from sar_bulk.errors import (
    Forbidden,
    MalformedResponse,
    PagingError,
    RequestContext,
    RetryBudgetSpent,
    RunStopper,
)

CONTEXT = RequestContext("00000000-0000-4000-8000-000000000001", "records")


@pytest.fixture
async def org() -> AsyncIterator[ScriptedOrg]:
    async with scripted_org() as org:
        yield org


async def api_for(org: ScriptedOrg) -> AsyncIterator[WebApi]:
    async with source_deps(org) as deps:
        yield WebApi(deps.http, deps.fetcher.for_pair(1), CONTEXT, now=deps.now)


@pytest.fixture
async def api(org: ScriptedOrg) -> AsyncIterator[WebApi]:
    async for value in api_for(org):
        yield value


async def test_get_json_keeps_every_digit(org: ScriptedOrg, api: WebApi) -> None:
    org.on(
        "GET", "contacts(1)", lambda s: web.Response(body=b'{"a": 1.10, "b": 12345678901234567890}')
    )
    document = await api.get_json(api.url("contacts(1)"))
    assert orjson.dumps(document) == b'{"a":1.10,"b":12345678901234567890}'


async def test_pages_follow_next_link_with_page_size(org: ScriptedOrg, api: WebApi) -> None:
    def leads(seen: Seen) -> web.Response:
        page = int(seen.params.get("page", "1"))
        link = f"{org.base_url}/api/data/v9.2/leads?page={page + 1}" if page < 3 else None
        body: dict[str, object] = {"value": [{"n": page}]}
        if link:
            body["@odata.nextLink"] = link
        return json_response(body)

    org.on("GET", "leads", leads)
    pages = [
        rows async for rows in api.pages(api.url("leads?$filter=x"), page_size=2, prefer=("p",))
    ]
    assert pages == [[{"n": 1}], [{"n": 2}], [{"n": 3}]]
    assert [s.headers["Prefer"] for s in org.log] == ["odata.maxpagesize=2, p"] * 3


@pytest.mark.parametrize(
    ("link", "message"),
    [
        ("{base}/api/data/v9.2/leads?page=1", "repeated"),
        ("https://elsewhere.example/api/data/v9.2/leads?page=2", "off the org"),
        # On the org, but another query's rows (another person's, another table's).
        ("{base}/api/data/v9.2/contacts?page=2", "another resource"),
        ("{base}/api/data/v9.2/leads(1)/x?page=2", "another resource"),
    ],
)
async def test_pages_refuse_looping_or_foreign_links(
    org: ScriptedOrg, api: WebApi, link: str, message: str
) -> None:
    def leads(seen: Seen) -> web.Response:
        return json_response({"value": [], "@odata.nextLink": link.format(base=org.base_url)})

    org.on("GET", "leads", leads)
    with pytest.raises(PagingError, match=message):
        async for _ in api.pages(api.url("leads"), page_size=5):
            pass
    assert all(not s.path.startswith("elsewhere") for s in org.log)
    assert {s.path for s in org.log} == {"leads"}  # never asked another resource


async def test_pages_stop_at_max_pages(org: ScriptedOrg, api: WebApi) -> None:
    def leads(seen: Seen) -> web.Response:
        page = int(seen.params.get("page", "1"))
        return json_response(
            {"value": [], "@odata.nextLink": f"{org.base_url}/api/data/v9.2/leads?page={page + 1}"}
        )

    org.on("GET", "leads", leads)
    with pytest.raises(PagingError, match="more than 4 pages"):
        async for _ in api.pages(api.url("leads"), page_size=5, max_pages=4):
            pass
    assert len(org.log) == 4


async def test_missing_table_is_not_found_and_does_not_stop_the_run(api: WebApi) -> None:
    with pytest.raises(ResourceMissing) as caught:
        await api.get_json(api.url("nosuchset"))
    assert caught.value.missing_table
    assert not caught.value.missing_row
    assert not isinstance(caught.value, RunStopper)
    assert "0x80060888" in str(caught.value)


async def test_forbidden_and_malformed(org: ScriptedOrg, api: WebApi) -> None:
    org.on("GET", "leads", lambda s: error_response(403, "0x80040220", "missing prvReadLead"))
    with pytest.raises(Forbidden, match="prvReadLead"):
        await api.get_json(api.url("leads"))
    org.on("GET", "html", lambda s: web.Response(body=b"<html>proxy</html>"))
    with pytest.raises(MalformedResponse):
        await api.get_json(api.url("html"))
    assert len(org.seen("GET", "html")) == 3  # retried up to the policy's attempts
    org.on("GET", "list", lambda s: json_response([1, 2]))
    with pytest.raises(MalformedResponse, match="not a JSON object"):
        await api.get_json(api.url("list"))


@pytest.mark.parametrize("kind", ["get", "pages", "download", "call"])
async def test_a_pause_longer_than_the_budget_names_the_contact_and_part(
    org: ScriptedOrg, api: WebApi, kind: str
) -> None:
    # As the action's pages do: the RetryBudgetSpent raised at the closed gate says whose
    # request it was, not "request failed".
    throttled = error_response(429, "0x80072322", "Number of requests exceeded the limit")
    org.fallback = lambda s: web.Response(
        status=429, body=throttled.body, headers={"Retry-After": "100"}
    )

    async def run() -> None:
        if kind == "get":
            await api.get_json(api.url("leads"))
        elif kind == "pages":
            async for _ in api.pages(api.url("leads"), page_size=5):
                pass
        elif kind == "download":
            await download(api, chunk=100)
        else:
            await api.call(lambda: api.send("GET", api.url("leads")))

    with pytest.raises(RetryBudgetSpent) as caught:
        await run()
    assert str(caught.value).startswith(f"records for contact {CONTEXT.contact_id} failed")


async def test_a_malformed_answer_s_advice_is_not_the_action_s(
    org: ScriptedOrg, api: WebApi
) -> None:
    org.on("GET", "html", lambda s: web.Response(body=b"<html>proxy</html>"))
    with pytest.raises(MalformedResponse) as caught:
        await api.get_json(api.url("html"))
    message = str(caught.value)
    assert "the type fails" not in message  # the action's interaction types
    assert "this contact's part fails" in message


async def test_transient_answer_is_retried(org: ScriptedOrg, api: WebApi) -> None:
    answers = [web.Response(status=503), json_response({"ok": True})]
    org.on("GET", "flaky", lambda s: answers.pop(0))
    assert await api.get_json(api.url("flaky")) == {"ok": True}


def serve_file(data: bytes, *, server_chunk: int, size_header: str | None = None) -> Handler:
    def handler(seen: Seen) -> web.Response:
        match = re.fullmatch(r"bytes=(\d+)-(\d+)", seen.headers.get("Range", ""))
        assert match, seen.headers
        start, end = int(match.group(1)), int(match.group(2))
        end = min(end, start + server_chunk - 1, len(data) - 1)
        return web.Response(
            status=206,
            body=data[start : end + 1],
            headers={
                "x-ms-file-size": size_header or str(len(data)),
                "x-ms-file-name": "gdpr_output.json",
                "Content-Range": f"bytes {start}-{end}/{len(data)}",
            },
        )

    return handler


async def download(api: WebApi, *, chunk: int, cap: int = 10_000) -> tuple[bytes, Download]:
    got = bytearray()

    async def write(part: bytes) -> None:
        got.extend(part)

    result = await api.download(api.url("f(1)/col/$value"), write=write, max_bytes=cap, chunk=chunk)
    return bytes(got), result


@pytest.mark.parametrize(
    ("size", "chunk", "server_chunk"),
    [(1000, 300, 300), (1000, 300, 128), (7, 300, 300), (900, 300, 300)],
)
async def test_download_continues_from_what_arrived(
    org: ScriptedOrg, api: WebApi, size: int, chunk: int, server_chunk: int
) -> None:
    data = bytes(range(256)) * (size // 256) + bytes(size % 256)
    org.on("GET", "f(1)/col/$value", serve_file(data, server_chunk=server_chunk))
    got, result = await download(api, chunk=chunk)
    assert got == data
    assert result.size == size
    assert result.sha256 == hashlib.sha256(data).hexdigest()
    assert result.file_name == "gdpr_output.json"
    assert len(org.log) == -(-size // min(chunk, server_chunk))


async def test_an_empty_file_is_an_empty_download(org: ScriptedOrg, api: WebApi) -> None:
    org.on(
        "GET",
        "f(1)/col/$value",
        lambda s: web.Response(status=416, headers={"Content-Range": "bytes */0"}),
    )
    got, result = await download(api, chunk=100)
    assert got == b""
    assert result.size == 0
    assert result.sha256 == hashlib.sha256(b"").hexdigest()


async def test_download_refuses_a_file_above_the_cap(org: ScriptedOrg, api: WebApi) -> None:
    org.on("GET", "f(1)/col/$value", serve_file(b"x" * 500, server_chunk=100))
    with pytest.raises(TooLarge, match="500 bytes, above the cap of 499"):
        await download(api, chunk=100, cap=499)
    assert len(org.log) == 1


async def test_download_refuses_a_file_shorter_than_its_size(org: ScriptedOrg, api: WebApi) -> None:
    org.on("GET", "f(1)/col/$value", serve_file(b"x" * 50, server_chunk=100, size_header="80"))
    with pytest.raises(MalformedResponse, match=r"empty chunk|Content-Range does not match"):
        await download(api, chunk=100)


async def test_download_takes_a_whole_file_when_range_is_ignored(
    org: ScriptedOrg, api: WebApi
) -> None:
    org.on(
        "GET",
        "f(1)/col/$value",
        lambda s: web.Response(body=b"{}", headers={"x-ms-file-size": "2"}),
    )
    got, _ = await download(api, chunk=100)
    assert got == b"{}"
    org.on(
        "GET",
        "f(1)/col/$value",
        lambda s: web.Response(body=b"{}", headers={"x-ms-file-size": "+2"}),
    )
    with pytest.raises(MalformedResponse, match="byte count"):
        await download(api, chunk=100)


async def test_a_whole_answer_without_a_file_size_is_not_taken_for_the_file(
    org: ScriptedOrg, api: WebApi
) -> None:
    # A proxy's sign-in page (or any 200 that is not Dataverse's file download) must not be
    # stored as gdpr_output.json: Dataverse names the size of every file it sends.
    page = b"<html><body>Sign in to continue</body></html>"
    org.on("GET", "f(1)/col/$value", lambda s: web.Response(body=page, content_type="text/html"))
    with pytest.raises(MalformedResponse, match="without x-ms-file-size"):
        await download(api, chunk=100)


async def test_a_content_range_other_than_asked_is_refused(org: ScriptedOrg, api: WebApi) -> None:
    # The same two bytes, labelled honestly, for every range asked: not the file.
    def handler(seen: Seen) -> web.Response:
        headers = {"x-ms-file-size": "6", "Content-Range": "bytes 0-1/6"}
        return web.Response(status=206, body=b"AB", headers=headers)

    org.on("GET", "f(1)/col/$value", handler)
    with pytest.raises(MalformedResponse, match="Content-Range does not match"):
        await download(api, chunk=2)


async def test_chunks_too_small_to_end_are_refused(org: ScriptedOrg, api: WebApi) -> None:
    data = bytes(1000)
    org.on("GET", "f(1)/col/$value", serve_file(data, server_chunk=1))
    with pytest.raises(MalformedResponse, match="chunks: they are too small"):
        await download(api, chunk=100)
    assert len(org.log) <= 3 + 2 * 10  # the one over the bound is refused


# -- a person's values sent in a request never come back in an error message -------------------

EMAIL = "Jane.O'Neil@example.org"
PHONE = "+44 20 7946 0958"


async def test_a_400_that_echoes_the_filter_names_no_value_sent(
    org: ScriptedOrg, api: WebApi
) -> None:
    literal = EMAIL.replace("'", "''")

    def refuse(seen: Seen) -> web.Response:
        # What Dataverse does with a query it cannot parse: it quotes the query back.
        return error_response(
            400,
            "0x80060888",
            f"Syntax error at position 52 in 'emailaddress1 eq '{literal}' or "
            f"telephone1 eq '{PHONE.upper()}''. Also seen: {EMAIL.lower()}, other@x.example",
        )

    org.on("GET", "contacts", refuse)
    url = api.url(f"contacts?$filter=emailaddress1 eq '{literal}' or telephone1 eq '{PHONE}'")
    with pytest.raises(QueryRefused) as caught:
        await api.get_json(url)
    message = str(caught.value)
    assert "Syntax error at position 52" in message  # the server's reason stays
    for value in (EMAIL, EMAIL.lower(), PHONE, PHONE.upper(), "other@x.example", "Neil@"):
        assert value.lower() not in message.lower()
    assert message.count("[value]") == 3
    assert "[e-mail]" in message


async def test_a_refused_create_names_no_value_of_its_body(org: ScriptedOrg, api: WebApi) -> None:
    org.on(
        "POST",
        "msdynmkt_gdprrequests",
        lambda s: error_response(400, "0x80040203", f"Invalid contact point '{PHONE}'."),
    )
    with pytest.raises(QueryRefused) as caught:
        await api.post_json(api.url("msdynmkt_gdprrequests"), {"msdynmkt_input": PHONE})
    assert PHONE not in str(caught.value)
    assert "Invalid contact point '[value]'" in str(caught.value)


@pytest.mark.parametrize(
    ("detail", "url", "expected"),
    [
        ("no value here", "https://o/api/data/v9.2/leads?$filter=a eq 'xyz'", "no value here"),
        ("short 'ab' stays", "https://o/api/data/v9.2/leads?$filter=a eq 'ab'", "short 'ab' stays"),
        ("bad 'x''y'", "https://o/api/data/v9.2/leads?$filter=a eq 'x''y'", "bad '[value]'"),
        ("mail a@b.example.", "https://o/api/data/v9.2/leads", "mail [e-mail]."),
    ],
)
def test_without_sent_values(detail: str, url: str, expected: str) -> None:
    assert without_sent_values(detail, url) == expected
