"""records and realtime against the simulator's Web API, compared with its ground truth."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import pytest
from webapi_support import DictScope, DictSink, source_deps

from sar_bulk.errors import RunStopper
from sar_bulk.simulator import Simulator, SimulatorConfig
from sar_bulk.sources.base import Availability, Part, SourceSettings
from sar_bulk.sources.realtime import ExportFailed, RealtimeSource
from sar_bulk.sources.records import ContactMissing, RecordsSource, TableForbidden

RECORDS = Part("records", "records")
REALTIME = Part("realtime", "realtime")


def contact(n: int) -> str:
    return f"{n:08x}-0000-4000-8000-{n:012x}"


def plain(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Rows without OData annotations or inline parties (the ground truth holds raw values)."""
    return [
        {k: v for k, v in row.items() if "@" not in k and k != "activitypointer_activity_parties"}
        for row in rows
    ]


def by_id(rows: Sequence[Mapping[str, Any]], key: str) -> dict[str, dict[str, Any]]:
    return {row[key]: dict(row) for row in plain(rows)}


async def test_records_match_the_orgs_ground_truth() -> None:
    settings = SourceSettings(odata_page_size=3)
    async with (
        Simulator(SimulatorConfig(seed=4, org_kind="both")) as sim,
        source_deps(sim.base_url, settings) as deps,
    ):
        source = RecordsSource(deps)
        assert (await source.probe()).availability is Availability.AVAILABLE
        checked = 0
        for n in range(1, 25):
            truth = sim.rows.truth(contact(n))
            if truth is None:
                continue
            sink = DictSink()
            await source.fetch(DictScope(contact(n), n), RECORDS, sink)
            got = sink.rows
            assert plain(got["records/contact.json"]) == [truth.contact]
            assert "FormattedValue" in "".join(got["records/contact.json"][0])
            for entry, rows, key in (
                ("lead", truth.leads, "leadid"),
                ("account", truth.primary_accounts, "accountid"),
                ("activitypointer", truth.activities, "activityid"),
            ):
                assert by_id(got.get(f"records/{entry}.json", []), key) == by_id(rows, key)
            activities = got.get("records/activitypointer.json", [])
            inline = [p for a in activities for p in a["activitypointer_activity_parties"]]
            key = "activitypartyid"
            assert by_id(inline, key) == by_id(truth.activity_parties, key)
            own = [p for p in truth.activity_parties if p["_partyid_value"] == contact(n)]
            assert by_id(got.get("records/activityparty.json", []), key) == by_id(own, key)
            parent = [truth.parent_account] if truth.parent_account else []
            assert plain(got.get("records/parent_account.json", [])) == parent
            consents = [r for rows in truth.consents.values() for r in rows]
            key = "msdynmkt_contactpointconsent4id"
            assert by_id(got.get("records/msdynmkt_contactpointconsent4.json", []), key) == by_id(
                consents, key
            )
            checked += 1
    assert checked >= 10


async def test_an_org_without_real_time_journeys_notes_the_tables_not_present() -> None:
    async with (
        Simulator(SimulatorConfig(seed=4, org_kind="outbound")) as sim,
        source_deps(sim.base_url) as deps,
    ):
        sink = DictSink()
        n = next(
            n
            for n in range(1, 100)
            if sim.rows.truth(contact(n)) and sim.rows.identifiers(contact(n))
        )
        await RecordsSource(deps).fetch(DictScope(contact(n)), RECORDS, sink)
        probe = await RealtimeSource(deps).probe()
    tables = sink.notes["tables"]
    assert isinstance(tables, dict)
    assert tables["msdynmkt_contactpointconsent4"] == "not present"
    assert tables["msdynmkt_gdprrequest"] == "not present"
    assert probe.availability is Availability.MISSING


async def test_a_forbidden_table_fails_unless_excluded() -> None:
    config = SimulatorConfig(seed=4, forbidden_tables=frozenset({"lead"}))
    async with Simulator(config) as sim:
        n = next(n for n in range(1, 100) if sim.rows.truth(contact(n)))
        async with source_deps(sim.base_url) as deps:
            with pytest.raises(TableForbidden, match="prvReadlead"):
                await RecordsSource(deps).fetch(DictScope(contact(n)), RECORDS, DictSink())
        excluded = SourceSettings(excluded_tables=frozenset({"lead"}))
        async with source_deps(sim.base_url, excluded) as deps:
            sink = DictSink()
            await RecordsSource(deps).fetch(DictScope(contact(n)), RECORDS, sink)
    assert sink.notes["tables"]["lead"] == "excluded"  # type: ignore[index,call-overload]


async def test_a_missing_contact_fails_its_part_only() -> None:
    async with (
        Simulator(SimulatorConfig(seed=4, missing_contact_share=1.0)) as sim,
        source_deps(sim.base_url) as deps,
    ):
        with pytest.raises(ContactMissing) as caught:
            await RecordsSource(deps).fetch(DictScope(contact(1)), RECORDS, DictSink())
    assert not isinstance(caught.value, RunStopper)
    assert caught.value.code == "0x80040217"


async def test_realtime_exports_are_the_orgs_files_and_polls_are_shared() -> None:
    config = SimulatorConfig(
        seed=4, org_kind="realtime", realtime_delay=0.4, file_chunk_size=65_536
    )
    async with Simulator(config) as sim:
        wanted = [
            contact(n)
            for n in range(1, 40)
            if sim.rows.truth(contact(n)) and sim.rows.identifiers(contact(n))
        ][:12]
        loop = asyncio.get_running_loop()
        settings = SourceSettings(realtime_poll=0.2, realtime_wait=30.0)
        async with source_deps(sim.base_url, settings) as deps:
            deps = replace(deps, clock=loop.time, sleep=asyncio.sleep)  # real time
            source = RealtimeSource(deps)
            assert (await source.probe()).availability is Availability.AVAILABLE
            sinks = {cid: DictSink() for cid in wanted}
            await asyncio.gather(
                *(
                    source.fetch(DictScope(cid, i), REALTIME, sinks[cid])
                    for i, cid in enumerate(wanted)
                )
            )
        counters = sim.counters()
        total = 0
        for cid, sink in sinks.items():
            identifiers = sim.rows.identifiers(cid)
            exports = sink.notes["exports"]
            assert isinstance(exports, list)
            assert sorted(str(e["input"]) for e in exports) == sorted(identifiers)
            for export in exports:
                assert isinstance(export, dict)
                data = sim.realtime.export_file(str(export["input"]))
                assert bytes(sink.files[str(export["entry"])]) == data
                assert export["sha256"] == hashlib.sha256(data).hexdigest()
                total += 1
    kinds = counters["total"]["by_kind"]
    assert total >= 12
    assert kinds["create"] == total
    assert kinds["metadata"] == 4  # probe + 3 discovery requests, once for the run
    # Every request of the run is waited for together: a few polls, not one per request.
    assert kinds["poll"] <= 6


async def test_realtime_wait_limit_names_the_request() -> None:
    config = SimulatorConfig(seed=4, org_kind="realtime", realtime_delay=3600.0)
    async with Simulator(config) as sim:
        n = next(
            n
            for n in range(1, 100)
            if sim.rows.truth(contact(n)) and sim.rows.identifiers(contact(n))
        )
        async with source_deps(
            sim.base_url, SourceSettings(realtime_poll=1.0, realtime_wait=3.0)
        ) as deps:
            with pytest.raises(ExportFailed, match="not completed within 3 s"):
                await RealtimeSource(deps).fetch(DictScope(contact(n)), REALTIME, DictSink())
