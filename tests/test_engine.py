"""The whole job in-process against the simulator over loopback: exact dossiers, every time."""

from __future__ import annotations

import zipfile
from datetime import date
from pathlib import Path

import orjson
import pytest
from support import (
    RotatingCredential,
    assert_exact_dossier,
    contact_ids,
    engine_deps,
    read_report,
    run_config,
    run_engine,
    unlimited,
    write_csv,
)

from sar_bulk.run.engine import Engine
from sar_bulk.run.runner import ExitCode
from sar_bulk.run.sharding import Shard
from sar_bulk.simulator import Dataset, Simulator, SimulatorConfig
from sar_bulk.sources.interaction_types import ALL_TYPES, InteractionType


@pytest.mark.slow
async def test_300_contacts_all_types_exact(tmp_path: Path) -> None:
    ids = contact_ids(300)
    heavy = {ids[10]: 2500, ids[200]: 1200}
    config = unlimited(seed=11, heavy_contacts=heavy, page_size=250)
    async with Simulator(config) as sim:
        csv = write_csv(tmp_path / "c.csv", ["ContactId", *ids])
        outcome = await run_engine(run_config(sim, csv, tmp_path / "out", window=16))
        counters = sim.counters()["total"]
    assert outcome.code == ExitCode.OK, outcome.summary
    total = sum(
        assert_exact_dossier(sim.dataset, tmp_path / "out" / f"{cid}.zip", cid) for cid in ids
    )
    totals = read_report(tmp_path / "out")["totals"]
    assert isinstance(totals, dict)
    assert totals["succeeded"] == 300
    assert totals["interactions"] == total
    assert total >= 2500 + 1200
    # One probe call, then every page once: nothing fetched twice in a clean run.
    assert counters["ok"] == totals["requests"] + 1


async def test_duplicates_in_other_spellings_are_processed_once(tmp_path: Path) -> None:
    ids = contact_ids(3)
    lines = ["id", ids[0], "{" + ids[0].upper() + "}", f"  {ids[1]}  ", ids[1].replace("-", "")]
    lines.append(ids[2])
    async with Simulator(unlimited(seed=3)) as sim:
        csv = write_csv(tmp_path / "c.csv", lines)
        outcome = await run_engine(run_config(sim, csv, tmp_path / "out"))
        by_contact = sim.counters()["ok_requests_by_contact"]
    assert outcome.code == ExitCode.OK
    totals = read_report(tmp_path / "out")["totals"]
    assert isinstance(totals, dict)
    assert (totals["contacts"], totals["duplicates"], totals["succeeded"]) == (3, 2, 3)
    for cid in ids:
        assert_exact_dossier(sim.dataset, tmp_path / "out" / f"{cid}.zip", cid)
        # 40 types, one page each unless the contact has more: never 80.
        assert by_contact[cid] < 80


async def test_id_column_found_among_several_with_a_bom(tmp_path: Path) -> None:
    ids = contact_ids(4)
    lines = ["Name,E-mail,Contact,Score"] + [
        f'"Doe, Jane {i}",jane{i}@example.com,{cid.upper()},{i}' for i, cid in enumerate(ids)
    ]
    async with Simulator(unlimited(seed=4)) as sim:
        csv = write_csv(tmp_path / "c.csv", lines, bom=True, newline="\r\n")
        outcome = await run_engine(run_config(sim, csv, tmp_path / "out"))
    assert outcome.code == ExitCode.OK
    assert "Contact" in str(read_report(tmp_path / "out")["id_column"])
    for cid in ids:
        assert_exact_dossier(sim.dataset, tmp_path / "out" / f"{cid}.zip", cid)


async def test_date_range_and_types_are_sent_and_honoured(tmp_path: Path) -> None:
    ids = contact_ids(2)
    config = unlimited(seed=6, heavy_contacts={ids[0]: 3000})
    dataset = Dataset(6, config.heavy_contacts)
    # The two types where the heavy contact has the most interactions, in canonical order.
    busiest = sorted(ALL_TYPES, key=lambda t: dataset.count(ids[0], t))[-2:]
    types = tuple(t for t in ALL_TYPES if t in busiest)
    async with Simulator(config) as sim:
        csv = write_csv(tmp_path / "c.csv", ids)
        run = run_config(
            sim,
            csv,
            tmp_path / "out",
            types=",".join(t.value for t in reversed(types)),
            date_from="2021-03-01",
            date_to="06-30-2022",
        )
        outcome = await run_engine(run)
    assert outcome.code == ExitCode.OK
    start, end = date(2021, 3, 1), date(2022, 6, 30)
    for cid in ids:
        path = tmp_path / "out" / f"{cid}.zip"
        assert_exact_dossier(sim.dataset, path, cid, types, start, end)
    with zipfile.ZipFile(tmp_path / "out" / f"{ids[0]}.zip") as archive:
        manifest = orjson.loads(archive.read("manifest.json"))
    assert manifest["question"]["date_from"] == "03-01-2021"
    assert manifest["question"]["date_to"] == "06-30-2022"
    assert manifest["question"]["interaction_types"] == [t.value for t in types]
    (interactions,) = manifest["sources"]
    assert [p["part"] for p in interactions["parts"]] == [t.value for t in types]
    full = sum(dataset.count(ids[0], t) for t in types)
    assert 0 < manifest["total_interactions"] < full


@pytest.mark.slow
async def test_tighter_limits_than_told_still_exact_with_few_throttles(tmp_path: Path) -> None:
    ids = contact_ids(12)
    # The simulator allows 100 requests per 2 s (50/s); the engine is told 80/s.
    config = SimulatorConfig(
        seed=8, request_limit=100, window_seconds=2.0, retry_after_format="fractional"
    )
    async with Simulator(config) as sim:
        csv = write_csv(tmp_path / "c.csv", ids)
        outcome = await run_engine(run_config(sim, csv, tmp_path / "out", rate=80))
        counters = sim.counters()["total"]
    assert outcome.code == ExitCode.OK
    for cid in ids:
        assert_exact_dossier(sim.dataset, tmp_path / "out" / f"{cid}.zip", cid)
    assert counters["throttled"] >= 1
    assert counters["throttled"] / counters["requests"] < 0.05


async def test_mixed_faults_still_end_exact(tmp_path: Path) -> None:
    ids = contact_ids(15)
    config = unlimited(
        seed=9,
        fault_500=0.02,
        fault_502=0.02,
        fault_503=0.01,
        fault_drop=0.015,
        fault_slow=0.005,
        slow_seconds=1.5,
        fault_malformed=0.01,
        page_size=100,
        heavy_contacts={ids[0]: 1500},
    )
    async with Simulator(config) as sim:
        csv = write_csv(tmp_path / "c.csv", ids)
        outcome = await run_engine(run_config(sim, csv, tmp_path / "out", timeout=0.5))
        faults = sim.counters()["total"]["faults"]
    assert outcome.code == ExitCode.OK, outcome.summary
    assert sum(faults.values()) > 10
    for cid in ids:
        assert_exact_dossier(sim.dataset, tmp_path / "out" / f"{cid}.zip", cid)
    totals = read_report(tmp_path / "out")["totals"]
    assert isinstance(totals, dict)
    assert totals["retries"] >= sum(faults.values()) - faults.get("slow", 0)


async def test_bad_rows_give_exit_1_and_are_named_while_good_rows_finish(tmp_path: Path) -> None:
    ids = contact_ids(3)
    lines = ["ContactId", ids[0], "../../etc/passwd", ids[1], "=HYPERLINK(1)", "", ids[2]]
    async with Simulator(unlimited(seed=2)) as sim:
        csv = write_csv(tmp_path / "c.csv", lines)
        outcome = await run_engine(run_config(sim, csv, tmp_path / "out"))
    assert outcome.code == ExitCode.INCOMPLETE
    document = read_report(tmp_path / "out")
    rejected = document["rejected_rows"]
    assert isinstance(rejected, list)
    assert [r["line"] for r in rejected] == [3, 5]
    assert all(r["reason"] for r in rejected)
    for cid in ids:
        assert_exact_dossier(sim.dataset, tmp_path / "out" / f"{cid}.zip", cid)
    assert sorted(p.name for p in (tmp_path / "out").glob("*.zip")) == sorted(
        f"{cid}.zip" for cid in ids
    )


async def test_refused_token_stops_at_once_with_exit_3(tmp_path: Path) -> None:
    ids = contact_ids(50)
    async with Simulator(unlimited(seed=2)) as sim:
        csv = write_csv(tmp_path / "c.csv", ids)
        credential = RotatingCredential(user="refused-CANARY")
        outcome = await run_engine(run_config(sim, csv, tmp_path / "out"), credential)
        requests = sim.counters()["total"]["requests"]
    assert outcome.code == ExitCode.REFUSED
    assert requests <= 2  # the pre-flight call and its one retry with a fresh token
    assert "CANARY" not in outcome.summary
    assert not list((tmp_path / "out").glob("*.zip")) if (tmp_path / "out").exists() else True


async def test_missing_action_stops_at_once_with_exit_3(tmp_path: Path) -> None:
    async with Simulator(unlimited(seed=2, action_missing=True)) as sim:
        csv = write_csv(tmp_path / "c.csv", contact_ids(20))
        outcome = await run_engine(run_config(sim, csv, tmp_path / "out"))
        requests = sim.counters()["total"]["requests"]
    assert outcome.code == ExitCode.REFUSED
    assert "retired" in outcome.summary
    assert requests == 1
    assert "interactions: missing" in outcome.summary


async def test_a_source_named_that_the_org_lacks_stops_before_any_contact(tmp_path: Path) -> None:
    # An org of the outbound era: the action, no real-time journeys.
    async with Simulator(unlimited(seed=2, org_kind="outbound")) as sim:
        csv = write_csv(tmp_path / "c.csv", contact_ids(2))
        config = run_config(sim, csv, tmp_path / "out", sources="interactions,realtime")
        outcome = await run_engine(config)
        served = sim.counters()["total"]["ok"]
    assert outcome.code == ExitCode.REFUSED
    assert "realtime: missing (this org has no real-time journeys" in outcome.summary
    assert served <= 2  # the probes only: no contact was fetched
    assert not list((tmp_path / "out").glob("*.zip"))


async def test_a_type_that_fails_for_good_fails_the_contact_only(tmp_path: Path) -> None:
    ids = contact_ids(3)
    # Every request fails with a 502: each type runs out of attempts; no dossier appears.
    async with Simulator(unlimited(seed=2, fault_502=1.0)) as sim:
        csv = write_csv(tmp_path / "c.csv", ids[:1])
        config = run_config(sim, csv, tmp_path / "out", retry_attempts=2, types="EmailSent")
        outcome = await run_engine(config)
    assert outcome.code == ExitCode.INCOMPLETE
    failed = read_report(tmp_path / "out")["failed_contacts"]
    assert isinstance(failed, list)
    assert failed[0]["contact_id"] == ids[0]
    assert "HTTP 502" in failed[0]["reasons"]["interactions/EmailSent"]
    assert not (tmp_path / "out" / f"{ids[0]}.zip").exists()


async def test_rerun_skips_done_contacts_and_restart_redoes_them(tmp_path: Path) -> None:
    ids = contact_ids(5)
    async with Simulator(unlimited(seed=5)) as sim:
        csv = write_csv(tmp_path / "c.csv", ids)
        first = await run_engine(run_config(sim, csv, tmp_path / "out"))
        after_first = sim.counters()["total"]["ok"]
        second = await run_engine(run_config(sim, csv, tmp_path / "out"))
        after_second = sim.counters()["total"]["ok"]
        totals = read_report(tmp_path / "out")["totals"]
        third = await run_engine(run_config(sim, csv, tmp_path / "out", restart=True))
        after_third = sim.counters()["total"]["ok"]
    assert first.code == second.code == third.code == ExitCode.OK
    assert after_second - after_first == 1  # only the pre-flight probe
    assert isinstance(totals, dict)
    assert totals["skipped_already_done"] == 5
    assert after_third - after_second > 5 * 40


async def test_a_damaged_dossier_is_fetched_again_on_rerun(tmp_path: Path) -> None:
    ids = contact_ids(2)
    async with Simulator(unlimited(seed=5)) as sim:
        csv = write_csv(tmp_path / "c.csv", ids)
        await run_engine(run_config(sim, csv, tmp_path / "out"))
        damaged = tmp_path / "out" / f"{ids[0]}.zip"
        raw = bytearray(damaged.read_bytes())
        raw[len(raw) // 3] ^= 0xFF
        damaged.write_bytes(bytes(raw))
        outcome = await run_engine(run_config(sim, csv, tmp_path / "out"))
    assert outcome.code == ExitCode.OK
    assert_exact_dossier(sim.dataset, damaged, ids[0])
    totals = read_report(tmp_path / "out")["totals"]
    assert isinstance(totals, dict)
    assert (totals["succeeded"], totals["skipped_already_done"]) == (1, 1)


async def test_changed_parameters_fetch_again_with_replace(tmp_path: Path) -> None:
    ids = contact_ids(2)
    async with Simulator(unlimited(seed=5)) as sim:
        csv = write_csv(tmp_path / "c.csv", ids)
        await run_engine(run_config(sim, csv, tmp_path / "out"))
        changed = run_config(sim, csv, tmp_path / "out", date_from="2022-01-01", replace=True)
        outcome = await run_engine(changed)
    assert outcome.code == ExitCode.OK
    document = read_report(tmp_path / "out")
    totals = document["totals"]
    assert isinstance(totals, dict)
    assert totals["succeeded"] == 2
    assert sorted(document["replaced_dossiers"]) == sorted(ids)
    for cid in ids:
        path = tmp_path / "out" / f"{cid}.zip"
        assert_exact_dossier(sim.dataset, path, cid, date_from=date(2022, 1, 1))


async def test_shards_are_disjoint_and_cover_the_input(tmp_path: Path) -> None:
    ids = contact_ids(30)
    written: list[set[str]] = []
    async with Simulator(unlimited(seed=7)) as sim:
        csv = write_csv(tmp_path / "c.csv", ids)
        for index in range(3):
            out = tmp_path / f"out{index}"
            config = run_config(sim, csv, out, shard=f"{index}/3", types="EmailSent")
            assert (await run_engine(config)).code == ExitCode.OK
            written.append({p.stem for p in out.glob("*.zip")})
            assert (out / f"run-report.shard-{index}-of-3.json").exists()
    assert set().union(*written) == set(ids)
    assert sum(len(w) for w in written) == len(ids)
    for index, names in enumerate(written):
        assert all(Shard(index, 3).owns(cid) for cid in names)


async def test_stop_request_cancels_quickly_and_keeps_finished_work(tmp_path: Path) -> None:
    import asyncio

    from sar_bulk.sources.interactions import InteractionsSource

    ids = contact_ids(40)
    async with Simulator(unlimited(seed=5, latency=0.05)) as sim:
        csv = write_csv(tmp_path / "c.csv", ids)
        config = run_config(sim, csv, tmp_path / "out", rate=200)
        async with engine_deps(config) as deps:
            engine = Engine(config, [InteractionsSource(deps)])
            running = asyncio.create_task(engine.run())
            while engine.totals.succeeded < 2:  # noqa: ASYNC110 (polls the engine's counter)
                await asyncio.sleep(0.02)
            engine.request_stop("SIGTERM")
            result = await asyncio.wait_for(running, 10)
    assert result.interrupted_by == "SIGTERM"
    done = sorted((tmp_path / "out").glob("*.zip"))
    assert 2 <= len(done) < len(ids)
    for path in done:
        assert_exact_dossier(sim.dataset, path, path.stem)
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".sar-bulk-partial")]


async def test_a_second_run_on_the_same_folder_is_refused(tmp_path: Path) -> None:
    from sar_bulk.errors import ConfigError
    from sar_bulk.run.run_lock import RunLock

    async with Simulator(unlimited(seed=5)) as sim:
        csv = write_csv(tmp_path / "c.csv", contact_ids(1))
        config = run_config(sim, csv, tmp_path / "out")
        config.out.mkdir(mode=0o700)
        held = RunLock.for_folder(config.out, shard=None)
        try:
            with pytest.raises(ConfigError, match="another sar-bulk run holds"):
                await run_engine(config)
        finally:
            held.release()
        assert (await run_engine(config)).code == ExitCode.OK


async def test_a_shard_removes_only_its_own_leftovers(tmp_path: Path) -> None:
    ids = contact_ids(12)
    out = tmp_path / "out"
    out.mkdir()
    for cid in ids:
        (out / f".sar-bulk-partial-{cid}-abcd1234.zip").write_bytes(b"half")
    async with Simulator(unlimited(seed=5)) as sim:
        csv = write_csv(tmp_path / "c.csv", ids[:1])
        await run_engine(run_config(sim, csv, out, shard="0/2", types="EmailSent"))
    left = {p.name[len(".sar-bulk-partial-") :][:36] for p in out.glob(".sar-bulk-partial-*")}
    assert left == {cid for cid in ids if not Shard(0, 2).owns(cid)}
    assert 0 < len(left) < len(ids)


async def test_other_types_on_a_folder_of_complete_dossiers_are_refused_without_replace(
    tmp_path: Path,
) -> None:
    ids = contact_ids(3)
    out = tmp_path / "out"
    async with Simulator(unlimited(seed=5)) as sim:
        csv = write_csv(tmp_path / "c.csv", ids)
        assert (await run_engine(run_config(sim, csv, out))).code == ExitCode.OK
        before = {cid: (out / f"{cid}.zip").read_bytes() for cid in ids}
        ok_before = sim.counters()["total"]["ok"]
        narrower = await run_engine(run_config(sim, csv, out, types="EventCheckIn"))
        ok_after = sim.counters()["total"]["ok"]
        refused = read_report(out)
        kept = {cid: (out / f"{cid}.zip").read_bytes() for cid in ids}
        replaced = await run_engine(run_config(sim, csv, out, types="EventCheckIn", replace=True))
        document = read_report(out)
    # Refused: exit 1, every complete dossier left byte for byte, nothing fetched but the probe.
    assert narrower.code == ExitCode.INCOMPLETE
    assert ok_after - ok_before == 1
    assert kept == before
    failed = refused["failed_contacts"]
    assert sorted(f["contact_id"] for f in failed) == sorted(ids)
    assert all("--replace" in f["reasons"]["*"] for f in failed)
    assert all("sources or types" in f["reasons"]["*"] for f in failed)
    assert refused["replaced_dossiers"] == []
    # With --replace: every one is replaced, and the report lists each.
    assert replaced.code == ExitCode.OK
    assert sorted(document["replaced_dossiers"]) == sorted(ids)
    for cid in ids:
        assert_exact_dossier(sim.dataset, out / f"{cid}.zip", cid, (InteractionType.EventCheckIn,))


async def test_the_state_records_each_dossier_hash(tmp_path: Path) -> None:
    import hashlib
    import sqlite3

    ids = contact_ids(3)
    out = tmp_path / "out"
    async with Simulator(unlimited(seed=5)) as sim:
        csv = write_csv(tmp_path / "c.csv", ids)
        config = run_config(sim, csv, out, types="EmailSent,EmailOpened")
        assert (await run_engine(config)).code == ExitCode.OK
    with sqlite3.connect(config.state) as raw:
        recorded = dict(raw.execute("SELECT contact_id, sha256 FROM contacts").fetchall())
    raw.close()  # "with" only commits; Python 3.13 warns of a connection left open
    assert recorded == {
        cid: hashlib.sha256((out / f"{cid}.zip").read_bytes()).hexdigest() for cid in ids
    }


async def test_a_done_dossier_swapped_for_another_valid_one_is_fetched_again(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ids = contact_ids(2)
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    async with Simulator(unlimited(seed=5)) as sim:
        csv = write_csv(tmp_path / "c.csv", ids)
        assert (await run_engine(run_config(sim, csv, out))).code == ExitCode.OK
        # A valid dossier of the same contact, but not the one this state wrote (other dates).
        other = run_config(sim, csv, elsewhere, date_from="2023-01-01")
        assert (await run_engine(other)).code == ExitCode.OK
        swapped = out / f"{ids[0]}.zip"
        swapped.write_bytes((elsewhere / f"{ids[0]}.zip").read_bytes())
        capsys.readouterr()
        outcome = await run_engine(run_config(sim, csv, out))
    assert outcome.code == ExitCode.OK
    logged = capsys.readouterr()
    assert "dossier.changed" in logged.out + logged.err
    assert_exact_dossier(sim.dataset, swapped, ids[0])  # the full range again, not 2023 on
    totals = read_report(out)["totals"]
    assert (totals["succeeded"], totals["skipped_already_done"]) == (1, 1)


async def test_a_parked_part_lets_other_contacts_through_a_window_of_one(tmp_path: Path) -> None:
    import asyncio

    from sar_bulk.sources.base import ContactScope, Part, PartSink
    from sar_bulk.sources.interactions import InteractionsSource

    ids = contact_ids(4)
    others_started = asyncio.Event()

    class Parking(InteractionsSource):
        """The first contact waits, parked, until a later contact has started fetching."""

        async def fetch(self, scope: ContactScope, part: Part, sink: PartSink) -> None:
            if scope.contact_id == ids[0]:
                async with scope.parked():
                    await others_started.wait()
            else:
                others_started.set()
            await super().fetch(scope, part, sink)

    async with Simulator(unlimited(seed=5)) as sim:
        csv = write_csv(tmp_path / "c.csv", ids)
        config = run_config(sim, csv, tmp_path / "out", window=1, types="EmailSent")
        async with engine_deps(config) as deps:
            result = await asyncio.wait_for(Engine(config, [Parking(deps)]).run(), 20)
    assert result.totals.succeeded == 4
    for cid in ids:
        assert_exact_dossier(
            sim.dataset, tmp_path / "out" / f"{cid}.zip", cid, (InteractionType.EmailSent,)
        )


async def test_an_unforeseen_error_in_one_part_fails_that_contact_only(tmp_path: Path) -> None:
    # A ValueError from data no check foresaw (a party id that is no GUID, say) must fail the
    # part it came from, with a reason, and never cancel the other contacts in flight.
    import asyncio

    from sar_bulk.sources.base import ContactScope, Part, PartSink
    from sar_bulk.sources.interactions import InteractionsSource

    ids = contact_ids(4)

    class Breaking(InteractionsSource):
        async def fetch(self, scope: ContactScope, part: Part, sink: PartSink) -> None:
            if scope.contact_id == ids[1]:
                raise ValueError("a value sar-bulk did not expect, quoting data@example.com")
            await super().fetch(scope, part, sink)

    async with Simulator(unlimited(seed=5)) as sim:
        csv = write_csv(tmp_path / "c.csv", ids)
        config = run_config(sim, csv, tmp_path / "out", window=4, types="EmailSent")
        async with engine_deps(config) as deps:
            result = await asyncio.wait_for(Engine(config, [Breaking(deps)]).run(), 20)
    assert result.crashed is None
    assert result.stopped_by is None
    assert result.totals.succeeded == 3
    (failed,) = result.totals.failed_contacts
    assert failed["contact_id"] == ids[1]
    reason = failed["reasons"]["interactions/EmailSent"]
    assert "ValueError" in reason
    assert "example.com" not in reason  # the message may quote data: it is not kept
    assert not (tmp_path / "out" / f"{ids[1]}.zip").exists()
