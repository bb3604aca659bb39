"""The realtime source over real loopback HTTP, and its shared progress poller on a fake clock."""

from __future__ import annotations

import asyncio
import hashlib
import re
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import orjson
import pytest
from aiohttp import web
from webapi_support import (
    COMPLETED,
    EXPORT,
    IN_PROGRESS,
    DictScope,
    DictSink,
    FakeClock,
    ScriptedOrg,
    Seen,
    error_response,
    install_gdpr_metadata,
    json_response,
    missing_segment,
    scripted_org,
    source_deps,
)

from sar_bulk.dataverse.webapi import QueryRefused, ResourceMissing, TooLarge
from sar_bulk.errors import ForeignData
from sar_bulk.sources.base import Availability, Part, Source, SourceSettings
from sar_bulk.sources.own_exports import note_key
from sar_bulk.sources.realtime import (
    ExportFailed,
    ExportForbidden,
    ExportGone,
    RealtimeSource,
    created_id,
)
from sar_bulk.sources.realtime_poller import ProgressPoller, RequestGone, WaitExpired
from sar_bulk.sources.records import RecordsSource

SET = "msdynmkt_gdprrequests"
PART = Part("realtime", "realtime")
GUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def cid(n: int) -> str:
    return str(uuid.UUID(int=n, version=4))


@dataclass
class FakeGdpr:
    """msdynmkt_gdprrequest rows: Completed after ``polls_to_complete`` progress reads."""

    org: ScriptedOrg
    polls_to_complete: int = 2
    server_chunk: int = 4096
    with_file: bool = True
    rows: dict[str, dict[str, Any]] = field(default_factory=dict)
    polls: dict[str, int] = field(default_factory=dict)
    progress_queries: list[int] = field(default_factory=list)  # ids asked for, per query
    fail_next_post_after_create: bool = False
    ignore_name_filter: bool = False  # a look-up by name answers with every row
    answer_id: str | None = None  # the id the next POST's answer names instead of the new row's
    progress_answers: list[web.Response] = field(default_factory=list)  # sent before the rows

    def content(self, request_id: str) -> bytes:
        row = self.rows[request_id]
        return orjson.dumps({"input": row["msdynmkt_dsrrequestinput"], "pad": "x" * 9000})

    def post(self, seen: Seen) -> web.Response:
        body = orjson.loads(seen.body)
        assert body["msdynmkt_dsrrequesttype"] == EXPORT
        request_id = str(uuid.uuid4())
        self.rows[request_id] = {
            **body,
            "msdynmkt_gdprrequestid": request_id,
            "msdynmkt_dsrrequestprogress": IN_PROGRESS,
            "msdynmkt_dsrrequestdata": None,
        }
        if self.fail_next_post_after_create:
            self.fail_next_post_after_create = False
            return web.Response(status=503)
        answered, self.answer_id = self.answer_id or request_id, None
        entity = f"{self.org.base_url}/api/data/v9.2/{SET}({answered})"
        return web.Response(status=204, headers={"OData-EntityId": entity})

    def get(self, seen: Seen) -> web.Response:
        text = seen.params.get("$filter", "")
        name = re.fullmatch(r"msdynmkt_name eq '(.*)'", text)
        if name:
            wanted = name.group(1).replace("''", "'")
            found = [
                r
                for r in self.rows.values()
                if r["msdynmkt_name"] == wanted or self.ignore_name_filter
            ]
            select = seen.params["$select"].split(",")
            return json_response({"value": [{k: r[k] for k in select} for r in found]})
        if text.startswith("(msdynmkt_dsrrequestinput eq "):
            return json_response({"value": []})  # records asking for earlier requests
        ids = GUID.findall(text)
        assert ids, text
        if self.progress_answers:
            return self.progress_answers.pop(0)
        self.progress_queries.append(len(ids))
        out = []
        for request_id in ids:
            row = self.rows.get(request_id)
            if row is None:
                continue
            self.polls[request_id] = self.polls.get(request_id, 0) + 1
            if self.polls[request_id] >= self.polls_to_complete:
                row["msdynmkt_dsrrequestprogress"] = COMPLETED
                row["msdynmkt_dsrrequestdata"] = str(uuid.UUID(int=1)) if self.with_file else None
            out.append({k: row[k] for k in seen.params["$select"].split(",")})
        return json_response({"value": out})

    def download(self, seen: Seen) -> web.Response:
        match = re.fullmatch(
            rf"{SET}\(({GUID.pattern})\)/msdynmkt_dsrrequestdata/\$value", seen.path
        )
        if match is None:
            return missing_segment(seen.path)
        data = self.content(match.group(1))
        start, end = map(int, re.fullmatch(r"bytes=(\d+)-(\d+)", seen.headers["Range"]).groups())  # type: ignore[union-attr]
        end = min(end, start + self.server_chunk - 1, len(data) - 1)
        return web.Response(
            status=206,
            body=data[start : end + 1],
            headers={"x-ms-file-size": str(len(data)), "x-ms-file-name": "gdpr_output.json"},
        )


def contact(org: ScriptedOrg, contact_id: str, **columns: str) -> None:
    org.on(
        "GET",
        f"contacts({contact_id})",
        lambda s: json_response({"contactid": contact_id, **columns}),
    )


@pytest.fixture
async def gdpr() -> AsyncIterator[FakeGdpr]:
    async with scripted_org() as org:
        install_gdpr_metadata(org)
        fake = FakeGdpr(org)
        org.on("POST", SET, fake.post)
        org.on("GET", SET, fake.get)
        org.fallback = fake.download
        yield fake


def fast(**kwargs: Any) -> SourceSettings:
    return SourceSettings(**{"realtime_poll": 1.0, "realtime_wait": 60.0, **kwargs})


async def test_exports_each_email_and_phone_verbatim(gdpr: FakeGdpr) -> None:
    org = gdpr.org
    contact(org, cid(1), emailaddress1="o'brien@x.org", mobilephone="+44 7700 900000")
    sink, scope = DictSink(), DictScope(cid(1))
    async with source_deps(org, fast()) as deps:
        await RealtimeSource(deps).fetch(scope, PART, sink)
    posts = [orjson.loads(s.body) for s in org.seen("POST", SET)]
    assert [p["msdynmkt_dsrrequestinput"] for p in posts] == ["o'brien@x.org", "+44 7700 900000"]
    assert all(p["msdynmkt_name"].startswith(f"sar-bulk export {cid(1)[:8]} ") for p in posts)
    exports = sink.notes["exports"]
    assert isinstance(exports, list)
    for n, (export, request_id) in enumerate(zip(exports, gdpr.rows, strict=True), 1):
        data = gdpr.content(request_id)
        assert bytes(sink.files[f"realtime/{n}-gdpr_output.json"]) == data
        assert export == {
            "entry": f"realtime/{n}-gdpr_output.json",
            "request_id": request_id,
            "input_kind": "email" if n == 1 else "phone",
            "input": posts[n - 1]["msdynmkt_dsrrequestinput"],
            "size": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
            "file_name": "gdpr_output.json",
        }
    assert scope.parked_total == 1
    assert sorted(v for v in scope.notes.values()) == sorted(f"id:{r}" for r in gdpr.rows)
    assert gdpr.progress_queries == [2, 2]  # both requests in one query per poll


async def test_thousands_in_flight_cost_one_query_per_fifty_per_poll(gdpr: FakeGdpr) -> None:
    org = gdpr.org
    count = 120
    for n in range(count):
        contact(org, cid(n + 10), emailaddress1=f"p{n}@x.org")
    loop = asyncio.get_running_loop()
    async with source_deps(org, fast(realtime_poll=0.3)) as deps:
        deps = replace(deps, clock=loop.time, sleep=asyncio.sleep)  # real time
        source = RealtimeSource(deps)
        sinks = [DictSink() for _ in range(count)]
        await asyncio.gather(
            *(source.fetch(DictScope(cid(n + 10), n), PART, sinks[n]) for n in range(count))
        )
        assert source.poller.waiting == 0
    assert len(gdpr.rows) == count
    assert max(gdpr.progress_queries) <= 50
    assert sum(gdpr.progress_queries) < 2 * count + 50  # each id asked about ~twice, in batches
    assert len(gdpr.progress_queries) <= 12  # not one query per request per poll (240)
    assert all(len(s.files) == 1 for s in sinks)


async def test_a_resumed_contact_waits_for_the_request_it_made(gdpr: FakeGdpr) -> None:
    org = gdpr.org
    contact(org, cid(2), emailaddress1="a@x.org")
    async with source_deps(org, fast()) as deps:
        source = RealtimeSource(deps)
        first = DictScope(cid(2))
        await source.fetch(first, PART, DictSink())
        assert len(gdpr.rows) == 1
        again = DictScope(cid(2), notes=dict(first.notes))
        await source.fetch(again, PART, DictSink())
        assert len(gdpr.rows) == 1  # no second request

        # A crash after the POST but before its id was kept: the pending name finds it.
        key = next(iter(first.notes))
        (row,) = gdpr.rows.values()
        crashed = DictScope(cid(2), notes={key: "pending:" + row["msdynmkt_name"]})
        await source.fetch(crashed, PART, DictSink())
        assert len(gdpr.rows) == 1
        assert crashed.notes[key] == f"id:{row['msdynmkt_gdprrequestid']}"

        # A crash before the POST went out: created now, under the name kept before.
        lost = DictScope(cid(2), notes={key: "pending:sar-bulk export lost 1 0000"})
        await source.fetch(lost, PART, DictSink())
        assert len(gdpr.rows) == 2
        assert [r["msdynmkt_name"] for r in gdpr.rows.values()][1] == "sar-bulk export lost 1 0000"


async def test_a_look_up_by_name_takes_only_the_row_of_that_name(gdpr: FakeGdpr) -> None:
    # A resumed contact looks its request up by the name it noted; an org that ignores the
    # filter answers with someone else's request, which must not be taken (and downloaded).
    org = gdpr.org
    contact(org, cid(5), emailaddress1="someone@x.org")
    contact(org, cid(6), emailaddress1="a@x.org")
    gdpr.ignore_name_filter = True
    async with source_deps(org, fast()) as deps:
        source = RealtimeSource(deps)
        await source.fetch(DictScope(cid(5)), PART, DictSink())
        (theirs,) = gdpr.rows
        key = note_key("email", "a@x.org")
        scope, sink = DictScope(cid(6), notes={key: "pending:sar-bulk export 6 1 00"}), DictSink()
        await source.fetch(scope, PART, sink)
    assert len(gdpr.rows) == 2  # not found by its name: made now
    assert scope.notes[key] != f"id:{theirs}"
    assert b"someone@x.org" not in bytes(sink.files["realtime/1-gdpr_output.json"])


async def test_a_request_made_for_another_identifier_is_not_downloaded(gdpr: FakeGdpr) -> None:
    # The POST's answer names another (completed) request: its file is another person's.
    org = gdpr.org
    contact(org, cid(7), emailaddress1="someone@x.org")
    contact(org, cid(8), emailaddress1="a@x.org")
    async with source_deps(org, fast()) as deps:
        source = RealtimeSource(deps)
        await source.fetch(DictScope(cid(7)), PART, DictSink())
        (theirs,) = gdpr.rows
        gdpr.answer_id = theirs
        downloads = len([s for s in org.log if s.path.endswith("$value")])
        sink = DictSink()
        with pytest.raises(ForeignData, match=f"export request {theirs}.*another") as caught:
            await source.fetch(DictScope(cid(8)), PART, sink)
    assert "someone@x.org" not in str(caught.value)
    assert "a@x.org" not in str(caught.value)
    assert sink.files == {}
    assert len([s for s in org.log if s.path.endswith("$value")]) == downloads


async def test_records_and_realtime_share_one_contact_row(gdpr: FakeGdpr) -> None:
    contact(gdpr.org, cid(9), emailaddress1="a@x.org")
    scope, records_sink = DictScope(cid(9)), DictSink()
    async with source_deps(gdpr.org, fast()) as deps:
        await asyncio.gather(
            RecordsSource(deps).fetch(scope, Part("records", "records"), records_sink),
            RealtimeSource(deps).fetch(scope, PART, DictSink()),
        )
    assert len(gdpr.org.seen("GET", f"contacts({cid(9)})")) == 1
    assert records_sink.rows["records/contact.json"][0]["emailaddress1"] == "a@x.org"


async def test_a_broken_note_fails_the_part_without_a_request(gdpr: FakeGdpr) -> None:
    contact(gdpr.org, cid(2), emailaddress1="a@x.org")
    async with source_deps(gdpr.org, fast()) as deps:
        source = RealtimeSource(deps)
        first = DictScope(cid(2))
        await source.fetch(first, PART, DictSink())
        broken = DictScope(cid(2), notes=dict.fromkeys(first.notes, "id:../../x"))
        gdpr.org.log.clear()
        with pytest.raises(ExportFailed, match="broken request id"):
            await source.fetch(broken, PART, DictSink())
    assert not [s for s in gdpr.org.log if s.path.startswith(SET)]


async def test_a_post_whose_answer_was_lost_is_not_sent_twice(gdpr: FakeGdpr) -> None:
    contact(gdpr.org, cid(3), telephone1="123")
    gdpr.fail_next_post_after_create = True
    async with source_deps(gdpr.org, fast()) as deps:
        throttle = deps.fetcher.throttle
        counted: list[None] = []
        count = throttle.count_request

        def counting() -> None:
            counted.append(None)
            count()

        throttle.count_request = counting  # type: ignore[method-assign]
        await RealtimeSource(deps).fetch(DictScope(cid(3)), PART, DictSink())
    assert len(gdpr.rows) == 1
    assert len(gdpr.org.seen("POST", SET)) == 1
    # The retry's look-up by name rode in the same paced try as its POST: it is charged to the
    # pace too, or a run at the org's exact limit meets a 429 for each lost answer.
    assert len(counted) == 1


async def test_a_request_not_completed_in_time_fails_with_its_id(gdpr: FakeGdpr) -> None:
    contact(gdpr.org, cid(4), emailaddress1="a@x.org")
    gdpr.polls_to_complete = 10**6
    clock = FakeClock()
    async with source_deps(gdpr.org, fast(realtime_wait=5.0), clock) as deps:
        source = RealtimeSource(deps)
        with pytest.raises(ExportFailed, match="not completed within 5 s") as caught:
            await source.fetch(DictScope(cid(4)), PART, DictSink())
        assert source.poller.waiting == 0
    (request_id,) = gdpr.rows
    assert request_id in str(caught.value)
    assert clock.sleeps == [1.0] * 5


async def test_requests_deleted_while_waiting_fail_now_and_are_made_again_next_run(
    gdpr: FakeGdpr,
) -> None:
    """Someone (or the org) deletes the export requests while the run waits: the part fails
    naming every one, and the next run makes new requests instead of failing on the deleted
    ones for ever (a rehearsal met 21 contacts stuck that way after the org lost its
    requests, and contacts with an e-mail and a phone needed a run per deleted request)."""
    contact(gdpr.org, cid(9), emailaddress1="a@x.org", mobilephone="+1 555 0100")
    gdpr.polls_to_complete = 10**6
    first = DictScope(cid(9))
    async with source_deps(gdpr.org, fast()) as deps:
        source = RealtimeSource(deps)
        waiting = asyncio.create_task(source.fetch(first, PART, DictSink()))
        for _ in range(1000):  # until the first progress query: the run is waiting
            if gdpr.progress_queries:
                break
            await asyncio.sleep(0.01)
        deleted = sorted(gdpr.rows)
        assert len(deleted) == 2
        gdpr.rows.clear()
        with pytest.raises(ExportGone, match="were deleted while waiting") as caught:
            await waiting
        assert all(request_id in str(caught.value) for request_id in deleted)
        assert "the next run makes a new export request" in str(caught.value)

        gdpr.polls_to_complete = 1
        again = DictScope(cid(9), notes=dict(first.notes))
        sink = DictSink()
        await source.fetch(again, PART, sink)
    made = sorted(gdpr.rows)
    assert len(made) == 2
    assert not set(made) & set(deleted)
    assert all(request_id in str(sink.notes["exports"]) for request_id in made)


async def test_a_poll_that_fails_for_a_while_only_delays_the_wait(gdpr: FakeGdpr) -> None:
    # The export goes on while the org is briefly unwell: a failed progress query (after the
    # fetcher's retries) is asked again at the next poll, not the end of every waiting contact.
    contact(gdpr.org, cid(4), emailaddress1="a@x.org")
    gdpr.progress_answers = [web.Response(status=503) for _ in range(7)]
    sink = DictSink()
    async with source_deps(gdpr.org, fast()) as deps:
        await RealtimeSource(deps).fetch(DictScope(cid(4)), PART, sink)
    assert len(sink.files) == 1
    assert not gdpr.progress_answers


async def test_a_poll_refused_for_good_fails_naming_the_contact(gdpr: FakeGdpr) -> None:
    contact(gdpr.org, cid(4), emailaddress1="a@x.org")
    refused = error_response(403, "0x80040220", "Principal user is missing prvReadmsdynmkt_gdpr")
    gdpr.progress_answers = [refused]
    async with source_deps(gdpr.org, fast()) as deps:
        with pytest.raises(ExportForbidden) as caught:
            await RealtimeSource(deps).fetch(DictScope(cid(4)), PART, DictSink())
    message = str(caught.value)
    assert f"realtime for contact {cid(4)}" in message
    assert "progress" in message
    assert "prvReadmsdynmkt_gdpr" in message
    assert "msdynmkt_gdprrequest" in caught.value.advice  # not the retired action's advice


async def test_completed_without_a_file_fails(gdpr: FakeGdpr) -> None:
    contact(gdpr.org, cid(5), emailaddress1="a@x.org")
    gdpr.with_file = False
    async with source_deps(gdpr.org, fast()) as deps:
        with pytest.raises(ExportFailed, match="completed without a file"):
            await RealtimeSource(deps).fetch(DictScope(cid(5)), PART, DictSink())


async def test_a_file_above_the_cap_is_refused(gdpr: FakeGdpr) -> None:
    contact(gdpr.org, cid(6), emailaddress1="a@x.org")
    async with source_deps(gdpr.org, fast()) as deps:
        with pytest.raises(TooLarge, match="above the cap of 1000"):
            await RealtimeSource(deps, max_file_bytes=1000).fetch(
                DictScope(cid(6)), PART, DictSink()
            )


async def test_nothing_to_export_by(gdpr: FakeGdpr) -> None:
    contact(gdpr.org, cid(7), fullname="No Address")
    sink = DictSink()
    async with source_deps(gdpr.org, fast()) as deps:
        await RealtimeSource(deps).fetch(DictScope(cid(7)), PART, sink)
    assert sink.notes["exports"] == []
    assert "no e-mail address or phone number" in str(sink.notes["nothing"])
    assert len(gdpr.org.log) == 1  # the contact row only


async def test_forbidden_create_fails_the_part(gdpr: FakeGdpr) -> None:
    contact(gdpr.org, cid(8), emailaddress1="a@x.org")
    gdpr.org.on(
        "POST",
        SET,
        lambda s: error_response(403, "0x80040220", "missing prvCreatemsdynmkt_gdprrequest"),
    )
    async with source_deps(gdpr.org, fast()) as deps:
        with pytest.raises(
            ExportForbidden, match=r"prvCreatemsdynmkt_gdprrequest.*Create and Read"
        ):
            await RealtimeSource(deps).fetch(DictScope(cid(8)), PART, DictSink())


async def test_a_refused_download_fails_with_the_export_advice(gdpr: FakeGdpr) -> None:
    contact(gdpr.org, cid(8), emailaddress1="a@x.org")
    refused = "Principal user is missing prvReadFileAttachment privilege"
    gdpr.org.fallback = lambda s: error_response(403, "0x80040220", refused)
    async with source_deps(gdpr.org, fast()) as deps:
        with pytest.raises(ExportForbidden, match=r"prvReadFileAttachment.*file attachments"):
            await RealtimeSource(deps).fetch(DictScope(cid(8)), PART, DictSink())


async def test_a_refused_create_says_what_was_refused(gdpr: FakeGdpr) -> None:
    contact(gdpr.org, cid(8), emailaddress1="a@x.org")
    refused = "msdynmkt_dsrrequestinput must be a string of at most 100 characters."
    gdpr.org.on("POST", SET, lambda s: error_response(400, "0x80040203", refused))
    async with source_deps(gdpr.org, fast()) as deps:
        with pytest.raises(QueryRefused) as caught:
            await RealtimeSource(deps).fetch(DictScope(cid(8)), PART, DictSink())
    message = str(caught.value)
    assert "creating an export request (msdynmkt_gdprrequest)" in message
    assert "at most 100 characters" in message
    assert "interaction type" not in message


async def test_probe(gdpr: FakeGdpr) -> None:
    async with source_deps(gdpr.org, fast()) as deps:
        source: Source = RealtimeSource(deps)  # mypy checks it meets the seam
        assert source.parts() == (PART,)
        probe = await source.probe()
        assert probe.availability is Availability.AVAILABLE
        assert "cannot be checked" in probe.detail
        del gdpr.org.routes[("GET", "EntityDefinitions(LogicalName='msdynmkt_gdprrequest')")]
        probe = await RealtimeSource(deps).probe()
        assert probe.availability is Availability.MISSING
        assert "no real-time journeys" in probe.detail
        gdpr.org.on(
            "GET",
            "EntityDefinitions(LogicalName='msdynmkt_gdprrequest')",
            lambda s: web.Response(status=404, text="Not Found"),
        )
        with pytest.raises(ResourceMissing):
            await RealtimeSource(deps).probe()


def test_created_id_from_header_or_body() -> None:
    rid = str(uuid.UUID(int=5))
    assert (
        created_id({"OData-EntityId": f"https://o/api/data/v9.2/x({rid.upper()})"}, b"", "xid")
        == rid
    )
    assert created_id({}, orjson.dumps({"xid": rid}), "xid") == rid
    assert created_id({"OData-EntityId": "https://o/x(1)"}, b"", "xid") is None
    assert created_id({}, b"<html>", "xid") is None


# The poller alone, on a fake clock.


class Reads:
    def __init__(self, done_after: int = 1, missing: Sequence[str] = (), fail: Sequence[str] = ()):
        self.calls: list[list[str]] = []
        self.done_after = done_after
        self.missing = set(missing)
        self.fail = set(fail)

    async def __call__(self, ids: Sequence[str]) -> Mapping[str, Mapping[str, Any]]:
        self.calls.append(list(ids))
        if self.fail & set(ids):
            raise RuntimeError("read failed")
        rounds = sum(1 for call in self.calls if ids[0] in call)
        return {
            i: {"id": i, "done": rounds >= self.done_after} for i in ids if i not in self.missing
        }


def poller(reads: Reads, clock: FakeClock, batch: int = 50) -> ProgressPoller:
    return ProgressPoller(
        read=reads,
        is_done=lambda row: bool(row["done"]),
        poll=30.0,
        clock=clock,
        sleep=clock.sleep,
        batch=batch,
    )


async def test_poller_reads_all_waiting_ids_in_batches() -> None:
    clock, reads = FakeClock(), Reads(done_after=2)
    shared = poller(reads, clock)
    ids = [f"r{n}" for n in range(120)]
    rows = await asyncio.gather(*(shared.wait(i, 3600) for i in ids))
    assert [row["id"] for row in rows] == ids
    assert [len(c) for c in reads.calls] == [50, 50, 20, 50, 50, 20]
    assert clock.sleeps == [30.0, 30.0]
    assert shared.waiting == 0


async def test_poller_deadline_gone_and_failed_batch() -> None:
    clock, reads = FakeClock(), Reads(done_after=10**6, missing=["gone"], fail=["bad"])
    shared = poller(reads, clock, batch=1)
    results = await asyncio.gather(
        shared.wait("slow", 100),
        shared.wait("gone", 100),
        shared.wait("bad", 100),
        return_exceptions=True,
    )
    assert isinstance(results[0], WaitExpired)
    assert isinstance(results[1], RequestGone)
    assert isinstance(results[2], RuntimeError)
    assert clock.now == 120.0  # four polls: the first past the deadline ends the wait


async def test_poller_stops_when_its_last_waiter_is_cancelled() -> None:
    clock, reads = FakeClock(), Reads(done_after=10**6)
    shared = poller(reads, clock)
    waiter = asyncio.create_task(shared.wait("r", 10**9))
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert shared.waiting == 0
    for _ in range(5):
        await asyncio.sleep(0)
    assert all(t.get_name() != "sar-bulk realtime poller" for t in asyncio.all_tasks())


async def test_poller_keeps_waiting_through_passing_failures_until_the_deadline() -> None:
    clock, reads = FakeClock(), Reads(done_after=3, fail=["bad"])
    shared = ProgressPoller(
        read=reads,
        is_done=lambda row: bool(row["done"]),
        poll=30.0,
        clock=clock,
        sleep=clock.sleep,
        batch=1,
        passing=lambda error: isinstance(error, RuntimeError),
    )
    results = await asyncio.gather(
        shared.wait("ok", 1000), shared.wait("bad", 100), return_exceptions=True
    )
    assert results[0] == {"id": "ok", "done": True}
    assert isinstance(results[1], WaitExpired)  # failing reads never end a wait early
    assert isinstance(shared.last_failure, RuntimeError)
