"""Whole runs with ``--sources auto`` against every kind of simulated org, dossiers compared
with the simulator's ground truth: the contact's Dataverse rows (``records``), its real-time
exports byte for byte (``realtime``) and, where the org still has it, the action's interactions.

Also the failures a run must name (a contact the org does not have, a table the identity may not
read, an export that never completes) and a run killed while it waits for exports, resumed: it
waits for the requests it made instead of making new ones.
"""

from __future__ import annotations

import asyncio
import hashlib
import signal
import zipfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest
from cli_support import assert_zip_consumers_accept, run_args, run_cli, start_cli, token_env
from support import (
    assert_exact_dossier,
    dossier_names,
    read_report,
    run_config,
    run_engine,
    unlimited,
    write_csv,
)

from sar_bulk.dossier.verify import verify_dossier
from sar_bulk.simulator import Simulator
from sar_bulk.simulator.rows import ContactTruth

# Exports complete fast and are polled often, so a whole run takes a second or two.
FAST_EXPORTS: dict[str, Any] = {"realtime_delay": 0.4, "file_chunk_size": 65_536}
POLL = "0.2"
REQUEST_ID = "msdynmkt_gdprrequestid"
# The sources each org kind answers for, in the dossier's order.
ANSWERING = {
    "outbound": ["interactions", "records"],
    "realtime": ["records", "realtime"],
    "both": ["interactions", "records", "realtime"],
    "dataverse": ["records"],
}


def contact(n: int) -> str:
    return f"{n:08x}-0000-4000-8000-{n:012x}"


def pick_contacts(
    sim: Simulator, count: int, *, with_identifiers: int = 0, start: int = 1
) -> list[str]:
    """``count`` contacts the org has: one without e-mail or phone (when ``count`` leaves room),
    the others with at least one (exports are made by them)."""
    has: list[str] = []
    lacks: list[str] = []
    for n in range(start, start + 1000):
        truth = sim.rows.truth(contact(n))
        if truth is not None:
            (has if truth.identifiers else lacks).append(contact(n))
        if len(has) >= count and lacks:
            break
    chosen = lacks[: 1 if count > with_identifiers else 0]
    chosen += has[: count - len(chosen)]
    assert len(chosen) == count
    return chosen


def csv_of(path: Path, contacts: Iterable[str]) -> Path:
    return write_csv(path / "contacts.csv", ["contactid", *contacts])


# ----- comparing a dossier with the org ---------------------------------------------------------


def _rows_entry(archive: zipfile.ZipFile, name: str) -> list[dict[str, Any]]:
    """A JSON-lines entry's rows ([] when the entry is absent: an empty table has none)."""
    if name not in archive.namelist():
        return []
    return [orjson.loads(line) for line in archive.read(name).splitlines() if line.strip()]


def _plain(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Rows without OData annotations or inline parties (the ground truth holds raw values)."""
    return [
        {k: v for k, v in row.items() if "@" not in k and k != "activitypointer_activity_parties"}
        for row in rows
    ]


def _same_rows(
    got: Sequence[Mapping[str, Any]], want: Sequence[Mapping[str, Any]], key: str
) -> None:
    """Exactly the org's rows: the same count (no row twice) and the same values by id."""
    plain_got = _plain(got)
    by_id = {row[key]: row for row in plain_got}
    assert len(by_id) == len(plain_got), f"a {key} row is there twice"
    assert by_id == {row[key]: dict(row) for row in _plain(want)}, f"rows by {key} differ"


def _parts(manifest: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    return {p["key"]: p for s in manifest["sources"] for p in s["parts"]}


def assert_records(
    sim: Simulator, archive: zipfile.ZipFile, truth: ContactTruth, notes: Mapping[str, Any]
) -> None:
    """``records/*.json`` holds exactly the contact's rows in the org, table by table."""
    cid = truth.contact["contactid"]
    assert _plain(_rows_entry(archive, "records/contact.json")) == [truth.contact]
    own_parties = [p for p in truth.activity_parties if p["_partyid_value"] == cid]
    parent = [truth.parent_account] if truth.parent_account else []
    consents = [row for rows in truth.consents.values() for row in rows]
    expected = {
        "lead": (truth.leads, "leadid"),
        "account": (truth.primary_accounts, "accountid"),
        "parent_account": (parent, "accountid"),
        "activitypointer": (truth.activities, "activityid"),
        "activityparty": (own_parties, "activitypartyid"),
        "msdynmkt_contactpointconsent4": (consents, "msdynmkt_contactpointconsent4id"),
    }
    tables = notes["tables"]
    for table, (rows, key) in expected.items():
        got = _rows_entry(archive, f"records/{table}.json")
        _same_rows(got, rows, key)
        if isinstance(tables[table], int):
            assert tables[table] == len(rows), f"{table}: the note counts {tables[table]}"
    activities = _rows_entry(archive, "records/activitypointer.json")
    inline = [p for a in activities for p in a["activitypointer_activity_parties"]]
    _same_rows(inline, truth.activity_parties, "activitypartyid")
    # Earlier subject requests, exactly: never the export requests this run made (rows of the
    # same table, which the records part may see or not, depending on which part asks first).
    ours = {r.request_id for r in sim.realtime.created()}
    got = _rows_entry(archive, "records/msdynmkt_gdprrequest.json")
    assert not {r[REQUEST_ID] for r in got} & ours
    earlier = [
        r for rows in truth.gdpr_requests.values() for r in rows if r[REQUEST_ID] not in ours
    ]
    _same_rows(got, earlier, REQUEST_ID)
    if sim.config.org_kind in ("outbound", "dataverse"):
        assert tables["msdynmkt_gdprrequest"] == "not present"
        # Consent is looked up by e-mail and phone: without either it is not asked for at all.
        assert tables["msdynmkt_contactpointconsent4"] == (
            "not present" if truth.identifiers else 0
        )


def auto_args(
    sim: Simulator, tmp_path: Path, wanted: Iterable[str], out: Path, *extra: str
) -> list[str]:
    """``sar-bulk run --sources auto`` for ``wanted``, exports polled often."""
    return run_args(
        sim.base_url,
        csv_of(tmp_path, wanted),
        out,
        "--sources",
        "auto",
        "--realtime-poll",
        POLL,
        *extra,
    )


def assert_realtime(
    sim: Simulator, archive: zipfile.ZipFile, truth: ContactTruth, notes: Mapping[str, Any]
) -> int:
    """``realtime/*`` holds the org's export file for each e-mail and phone, byte for byte, each
    noted with its request (one this run made) and SHA-256. Returns the files compared."""
    exports = notes["exports"]
    assert sorted(e["input"] for e in exports) == sorted(truth.identifiers)
    made = {r.request_id: r.input for r in sim.realtime.created()}
    entries = {n for n in archive.namelist() if n.startswith("realtime/")}
    assert entries == {e["entry"] for e in exports}
    for export in exports:
        data = sim.realtime.export_file(export["input"])
        assert archive.read(export["entry"]) == data, f"{export['entry']} differs"
        assert export["sha256"] == hashlib.sha256(data).hexdigest()
        assert export["size"] == len(data)
        assert made[export["request_id"]] == export["input"]
    return len(exports)


def assert_exact_sources(sim: Simulator, out: Path, contacts: Iterable[str]) -> dict[str, int]:
    """Each contact has one dossier, ``verify`` accepts it, its question lists the sources the
    org answers for and every part holds exactly what the org holds. Counts what was compared."""
    wanted = sorted(set(contacts))
    assert dossier_names(out) == {f"{c}.zip" for c in wanted}
    sources = ANSWERING[sim.config.org_kind]
    compared = {"contacts": 0, "rows": 0, "files": 0, "interactions": 0}
    for cid in wanted:
        path = out / f"{cid}.zip"
        result = verify_dossier(path)
        assert result.ok, f"{path.name}: {result.problems}"
        truth = sim.truth(cid)
        assert truth is not None
        with zipfile.ZipFile(path) as archive:
            manifest = orjson.loads(archive.read("manifest.json"))
            assert manifest["question"]["sources"] == sources
            parts = _parts(manifest)
            assert {p.split("/")[0] for p in parts} == set(sources)
            assert all(p["status"] == "complete" for p in parts.values())
            assert_records(sim, archive, truth, parts["records"]["notes"])
            compared["rows"] += manifest["total_rows"]
            if "realtime" in sources:
                compared["files"] += assert_realtime(
                    sim, archive, truth, parts["realtime"]["notes"]
                )
            else:
                assert not any(n.startswith("realtime/") for n in archive.namelist())
        if "interactions" in sources:
            compared["interactions"] += assert_exact_dossier(sim.dataset, path, cid)
        compared["contacts"] += 1
    return compared


# ----- whole runs, one per org kind -------------------------------------------------------------


@pytest.mark.parametrize("org_kind", ["realtime", "both", "outbound", "dataverse"])
async def test_auto_answers_every_contact_exactly_from_what_the_org_has(
    org_kind: str, tmp_path: Path
) -> None:
    config = unlimited(seed=5, org_kind=org_kind, **FAST_EXPORTS)
    async with Simulator(config) as sim:
        wanted = pick_contacts(sim, 6, with_identifiers=4)
        out = tmp_path / "out"
        run = run_config(
            sim, csv_of(tmp_path, wanted), out, sources="auto", realtime_poll=POLL, window=3
        )
        outcome = await run_engine(run)
        assert outcome.code == 0, outcome.summary
        compared = assert_exact_sources(sim, out, wanted)
        kinds = sim.counters()["total"]["by_kind"]
    assert compared["contacts"] == 6
    assert compared["rows"] > 6
    if org_kind in ("realtime", "both"):
        exports = sum(len(sim.rows.identifiers(c)) for c in wanted)
        assert compared["files"] == exports >= 4
        assert kinds["create"] == exports  # one export request per e-mail or phone, no more
        assert kinds["download"] > exports  # files above 64 KiB came in several ranges
    else:
        assert kinds["create"] == 0
        assert compared["files"] == 0
    if org_kind in ("outbound", "both"):
        assert compared["interactions"] > 0
    else:
        assert kinds["action"] == 1  # the pre-flight's probe only: the action is not there
    await assert_zip_consumers_accept(out)


async def test_the_command_answers_a_todays_cloud_org(tmp_path: Path) -> None:
    """``sar-bulk run --sources auto`` as a user runs it, then ``sar-bulk verify``."""
    config = unlimited(seed=6, org_kind="realtime", **FAST_EXPORTS)
    async with Simulator(config) as sim:
        wanted = pick_contacts(sim, 5, with_identifiers=3)
        out = tmp_path / "out"
        args = auto_args(sim, tmp_path, wanted, out)
        result = await run_cli(args, env=token_env())
        assert result.code == 0, result.explain()
        compared = assert_exact_sources(sim, out, wanted)
    assert compared["files"] >= 3
    report = read_report(out)
    assert report["totals"]["succeeded"] == 5
    await assert_zip_consumers_accept(out)


# ----- failures ---------------------------------------------------------------------------------


def _failures(out: Path) -> dict[str, dict[str, str]]:
    report = read_report(out)
    return {f["contact_id"]: f["reasons"] for f in report["failed_contacts"]}


async def _one_bad_contact(tmp_path: Path, kind: str) -> tuple[str, dict[str, str], Path]:
    """Three good contacts and one the simulator's ``kind`` set names (``missing_contacts``,
    ``misfiled_contacts``): the run fails that one alone and writes the others exactly."""
    async with Simulator(unlimited(seed=5, org_kind="realtime", **FAST_EXPORTS)) as sim:
        present = pick_contacts(sim, 3, with_identifiers=2)
        bad = pick_contacts(sim, 1, start=200)[0]
    config = unlimited(seed=5, org_kind="realtime", **{kind: frozenset({bad})}, **FAST_EXPORTS)
    async with Simulator(config) as sim:
        out = tmp_path / "out"
        run = run_config(
            sim, csv_of(tmp_path, [*present, bad]), out, sources="auto", realtime_poll=POLL
        )
        outcome = await run_engine(run)
        assert outcome.code == 1, outcome.summary
        assert_exact_sources(sim, out, present)
    reasons = _failures(out)[bad]
    assert set(reasons) == {"records", "realtime"}
    for reason in reasons.values():
        assert bad in reason
    return bad, reasons, out


async def test_a_contact_the_org_does_not_have_fails_alone(tmp_path: Path) -> None:
    _, reasons, _ = await _one_bad_contact(tmp_path, "missing_contacts")
    for reason in reasons.values():
        assert "does not exist" in reason
        assert "0x80040217" in reason


async def test_another_contacts_row_fails_that_contact_alone_and_is_filed_nowhere(
    tmp_path: Path,
) -> None:
    misfiled, reasons, out = await _one_bad_contact(tmp_path, "misfiled_contacts")
    assert all(misfiled not in name for name in dossier_names(out))
    for reason in reasons.values():
        assert "contactid" in reason
        assert "another contact" in reason


async def test_a_forbidden_table_fails_the_contact_unless_excluded(tmp_path: Path) -> None:
    config = unlimited(
        seed=5, org_kind="realtime", forbidden_tables=frozenset({"lead"}), **FAST_EXPORTS
    )
    async with Simulator(config) as sim:
        wanted = pick_contacts(sim, 3, with_identifiers=2)
        contacts = csv_of(tmp_path, wanted)
        refused = tmp_path / "refused"
        run = run_config(sim, contacts, refused, sources="auto", realtime_poll=POLL)
        outcome = await run_engine(run)
        assert outcome.code == 1, outcome.summary
        assert dossier_names(refused) == set()
        failures = _failures(refused)
        assert set(failures) == set(wanted)
        for cid, reasons in failures.items():
            assert set(reasons) == {"records"}  # the exports were fine
            assert cid in reasons["records"]
            assert "prvReadlead" in reasons["records"]
            assert "excluded_tables" in reasons["records"]

        out = tmp_path / "out"
        run = run_config(
            sim, contacts, out, sources="auto", realtime_poll=POLL, exclude_tables="lead"
        )
        outcome = await run_engine(run)
        assert outcome.code == 0, outcome.summary
        for cid in wanted:
            with zipfile.ZipFile(out / f"{cid}.zip") as archive:
                manifest = orjson.loads(archive.read("manifest.json"))
                assert "records/lead.json" not in archive.namelist()
            assert manifest["question"]["excluded_tables"] == ["lead"]
            assert _parts(manifest)["records"]["notes"]["tables"]["lead"] == "excluded"
            assert verify_dossier(out / f"{cid}.zip").ok


async def test_an_export_that_never_completes_fails_naming_its_request(tmp_path: Path) -> None:
    async with Simulator(unlimited(seed=5, org_kind="realtime")) as sim:
        done, stuck = pick_contacts(sim, 2, with_identifiers=2)[:2]
        assert sim.rows.identifiers(stuck)
        never = sim.rows.identifiers(stuck)[0]
    config = unlimited(
        seed=5, org_kind="realtime", realtime_never_inputs=frozenset({never}), **FAST_EXPORTS
    )
    async with Simulator(config) as sim:
        out = tmp_path / "out"
        run = run_config(
            sim,
            csv_of(tmp_path, [done, stuck]),
            out,
            sources="auto",
            realtime_poll=POLL,
            realtime_wait="1.5",
        )
        outcome = await run_engine(run)
        assert outcome.code == 1, outcome.summary
        assert_exact_sources(sim, out, [done])
        request = next(r.request_id for r in sim.realtime.created() if r.input == never)
    reasons = _failures(out)[stuck]
    assert set(reasons) == {"realtime"}
    assert f"export request {request} not completed within 1.5 s" in reasons["realtime"]


# ----- a run killed while it waits, resumed -----------------------------------------------------


async def _until(check: Callable[[], bool], seconds: float) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "timed out waiting"
        await asyncio.sleep(0.05)


async def test_a_run_killed_while_waiting_waits_for_the_same_requests(tmp_path: Path) -> None:
    # Exports take 6 s: the first run is killed while every one of them is still in progress.
    config = unlimited(seed=5, org_kind="realtime", realtime_delay=6.0, file_chunk_size=65_536)
    async with Simulator(config) as sim:
        wanted = pick_contacts(sim, 4, with_identifiers=3)
        exports = sum(len(sim.rows.identifiers(c)) for c in wanted)
        out = tmp_path / "out"
        args = auto_args(sim, tmp_path, wanted, out)
        process = await start_cli(args, env=token_env(), log=tmp_path / "first.log")
        try:
            await _until(lambda: len(sim.realtime.created()) == exports, 60)
            # Parked for a few polls; none completed yet (6 s), nothing downloaded.
            await asyncio.sleep(1.0)
            assert not any(sim.realtime.completed(r) for r in sim.realtime.created())
            assert sim.counters()["total"]["by_kind"]["download"] == 0
        finally:
            if process.returncode is None:
                process.send_signal(signal.SIGKILL)
            await process.wait()
        assert process.returncode == -signal.SIGKILL
        # Only a contact without e-mail or phone (nothing to wait for) may be answered yet.
        waiting = {f"{c}.zip" for c in wanted if sim.rows.identifiers(c)}
        assert not dossier_names(out) & waiting
        made = [r.request_id for r in sim.realtime.created()]

        result = await run_cli(args, env=token_env())
        assert result.code == 0, result.explain()
        assert [r.request_id for r in sim.realtime.created()] == made  # none made again
        compared = assert_exact_sources(sim, out, wanted)
    assert compared["files"] == exports
    await assert_zip_consumers_accept(out)


async def test_the_web_api_s_dop_hint_sets_the_concurrency_without_the_action(
    tmp_path: Path,
) -> None:
    # Today's cloud org has no action to learn x-ms-dop-hint from: the Web API's answers carry
    # it too, and the throttle follows it (5 in flight until a hint arrives).
    config = unlimited(seed=6, org_kind="realtime", dop_hint=12, latency=0.05, **FAST_EXPORTS)
    async with Simulator(config) as sim:
        wanted = pick_contacts(sim, 24, with_identifiers=0)
        run = run_config(
            sim, csv_of(tmp_path, wanted), tmp_path / "out", sources="records", window=24
        )
        outcome = await run_engine(run)
        most = sim.counters()["total"]["max_in_flight"]
    assert outcome.code == 0, outcome.summary
    assert 5 < most <= 12


async def test_a_lost_answer_to_an_export_request_makes_no_second_request(tmp_path: Path) -> None:
    """The org carries a request out, then the connection closes before its answer (a proxy's
    timeout, a reset): a create whose answer was lost is found again by its name, so no e-mail
    or phone gets two export requests, and every dossier is still exact."""
    config = unlimited(seed=6, org_kind="realtime", fault_lost=0.5, **FAST_EXPORTS)
    async with Simulator(config) as sim:
        wanted = pick_contacts(sim, 8, with_identifiers=8)
        out = tmp_path / "out"
        args = auto_args(
            sim, tmp_path, wanted, out, "--retry-attempts", "30", "--log-format", "json"
        )
        result = await run_cli(args, env=token_env())
        assert result.code == 0, result.explain()
        assert sim.counters()["total"]["faults"]["lost"] > 0
        made = sorted(r.input.casefold() for r in sim.realtime.created())
        assert len(made) == len(set(made)), "an e-mail or phone got two export requests"
        assert "export.found_by_name" in result.stderr, "no create lost its answer this time"
        assert_exact_sources(sim, out, wanted)
