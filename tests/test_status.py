"""``sar-bulk status``: counts and deadlines at risk, read-only, during and after real runs."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from cli_support import run_args, run_cli, start_cli, token_env
from support import contact_ids, unlimited, write_csv

from sar_bulk.errors import ConfigError
from sar_bulk.run.runner import ExitCode
from sar_bulk.run.state import RunState
from sar_bulk.run.status import read_status
from sar_bulk.simulator import Simulator

GUARD = 60.0


def _days_ago(n: int) -> str:
    return (datetime.now(UTC).date() - timedelta(days=n)).isoformat()


def _files(folder: Path) -> dict[str, int]:
    """Every file in ``folder`` with its size and modification time folded into one number."""
    return {p.name: p.stat().st_mtime_ns ^ p.stat().st_size for p in folder.iterdir()}


async def test_status_after_a_failed_run_lists_overdue_first_and_exits_1(tmp_path: Path) -> None:
    a, b, c, d = contact_ids(4)
    lines = [
        "id,received,extension_reason",
        f"{a},{_days_ago(10)},",  # due in about 20 days: later
        f"{b},{_days_ago(40)},",  # overdue
        f"{c},{_days_ago(40)},complex",  # extended: due in about 50 days
        f"{d},,",  # no date
        f"{contact_ids(5)[4]},{_days_ago(27)},",  # due within 7 days
    ]
    out = tmp_path / "out"
    async with Simulator(unlimited(seed=3, fault_502=1.0)) as sim:
        csv = write_csv(tmp_path / "c.csv", lines)
        args = run_args(sim.base_url, csv, out, "--retry-attempts", "1", "--types", "EmailSent")
        ran = await run_cli(args, env=token_env())
    assert ran.code == ExitCode.INCOMPLETE, ran.explain()
    assert "1 overdue, 1 due within 7 days; " in ran.stdout + ran.stderr
    before = _files(out / ".sar-bulk")

    shown = await run_cli(["status", str(out)])
    assert shown.code == ExitCode.INCOMPLETE, shown.explain()  # something is overdue
    text = shown.stdout.splitlines()
    assert text[0] == "contacts: 0 done, 5 failed, 0 pending"
    assert (
        text[2] == "deadlines: 1 overdue, 1 due within 7 days, 2 later (requests not answered yet)"
    )
    assert [line.split()[0] for line in text[3:]] == ["OVERDUE", "due", "later", "later"]
    assert b in text[3]
    assert "days late" in text[3]
    assert text[3].endswith("failed")
    assert "extended" in text[6]
    assert c in text[6]

    as_json = await run_cli(["status", str(out), "--json", "--limit", "2"])
    document = orjson.loads(as_json.stdout)
    assert document["contacts"] == {"done": 0, "failed": 5, "pending": 0}
    risky = document["deadlines"]["at_risk"]
    assert [(r["contact_id"], r["urgency"]) for r in risky] == [
        (b, "overdue"),
        (contact_ids(5)[4], "due_soon"),
    ]
    # Read-only: not a file created, changed or removed (no -wal, no -shm, no lock).
    assert _files(out / ".sar-bulk") == before


async def test_status_while_a_run_holds_the_lock(tmp_path: Path) -> None:
    ids = contact_ids(20)
    lines = ["id,received", *(f"{cid},{_days_ago(5)}" for cid in ids)]
    out = tmp_path / "out"
    async with Simulator(unlimited(seed=4, latency=0.25)) as sim:  # about 5 s in all
        csv = write_csv(tmp_path / "c.csv", lines)
        args = run_args(sim.base_url, csv, out, "--window", "1", "--types", "EmailSent")
        process = await start_cli(args, env=token_env(), log=tmp_path / "run.log")
        seen_running = None
        try:
            async with asyncio.timeout(GUARD):
                while process.returncode is None:
                    if (out / ".sar-bulk" / "state.sqlite").exists():
                        shown = await run_cli(["status", str(out), "--json"])
                        if shown.code == ExitCode.OK:
                            document = orjson.loads(shown.stdout)
                            if (
                                document["contacts"]["done"] >= 1
                                and document["contacts"]["pending"]
                            ):
                                seen_running = document
                                break
                        else:
                            assert "does not exist" in shown.stderr or "no state" in shown.stderr
                    await asyncio.sleep(0.05)
                code = await process.wait()
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
    assert code == ExitCode.OK, (tmp_path / "run.log").read_text()
    assert seen_running is not None, "status never saw the run half-way"
    counts = seen_running["contacts"]
    assert counts["done"] + counts["failed"] + counts["pending"] == 20
    assert seen_running["deadlines"]["later_count"] == counts["pending"]
    after = await run_cli(["status", str(out)])
    assert after.code == ExitCode.OK
    assert after.stdout.splitlines()[0] == "contacts: 20 done, 0 failed, 0 pending"
    assert "deadlines: 0 overdue, 0 due within 7 days, 0 later" in after.stdout


async def test_status_without_a_state_or_with_another_file_is_a_usage_error(
    tmp_path: Path,
) -> None:
    missing = await run_cli(["status", str(tmp_path)])
    assert missing.code == ExitCode.USAGE
    assert "no state folder" in missing.stderr
    other = tmp_path / "other.sqlite"
    sqlite3.connect(other).close()
    refused = await run_cli(["status", "--state", str(other)])
    assert refused.code == ExitCode.USAGE
    assert "not a sar-bulk state database" in refused.stderr
    assert not (tmp_path / "other.sqlite-wal").exists()


async def test_status_of_a_container_url_points_at_the_work_folder() -> None:
    """The nightly's OUT is a container URL (its state is in --work): status said the URL, cut
    to "https:/...", "has no state folder" without saying where the state is."""
    url = "https://acct.blob.core.windows.net/dossiers/nightly"
    result = await run_cli(["status", url])
    assert result.code == ExitCode.USAGE, result.explain()
    assert f"{url} is a blob container" in result.stderr
    assert "--work folder" in result.stderr
    assert "sar-bulk-work/acct/dossiers/nightly" in result.stderr
    assert "https:/acct" not in result.stderr


async def test_status_with_a_folder_as_state_says_to_give_it_as_out(tmp_path: Path) -> None:
    """--state OUT (the folder, not its state file) was "not a regular file (a link or a
    pipe?)", which sends the operator looking for links."""
    result = await run_cli(["status", "--state", str(tmp_path)])
    assert result.code == ExitCode.USAGE, result.explain()
    assert f"the state file {tmp_path} is a folder" in result.stderr
    assert f"sar-bulk status {tmp_path}" in result.stderr
    assert "link" not in result.stderr


async def test_status_adds_up_only_the_state_of_the_latest_shard_count(tmp_path: Path) -> None:
    """A folder run unsharded one night and in two shards the next holds three state files:
    the shards adopted the first night's dossiers, so adding all up would count each contact
    twice. Only the latest layout is added up and the other file is named as left out."""
    contacts = contact_ids(6, 61)
    csv = write_csv(tmp_path / "contacts.csv", ["ContactId", *contacts])
    out = tmp_path / "out"
    async with Simulator(unlimited(seed=4)) as sim:
        first = await run_cli(
            run_args(sim.base_url, csv, out, "--types", "EmailSent"), env=token_env()
        )
        assert first.code == ExitCode.OK, first.explain()
        for index in range(2):
            args = run_args(sim.base_url, csv, out, "--types", "EmailSent", "--shard", f"{index}/2")
            shard = await run_cli(args, env=token_env())
            assert shard.code == ExitCode.OK, shard.explain()
    names = sorted(p.name for p in (out / ".sar-bulk").glob("state*.sqlite"))
    assert names == ["state.shard-0-of-2.sqlite", "state.shard-1-of-2.sqlite", "state.sqlite"]

    shown = await run_cli(["status", str(out)])
    assert shown.code == ExitCode.OK, shown.explain()
    text = shown.stdout.splitlines()
    assert text[0] == f"contacts: {len(contacts)} done, 0 failed, 0 pending"
    assert [line for line in text if line.startswith("left out: state.sqlite (")], text
    as_json = await run_cli(["status", str(out), "--json"])
    document = orjson.loads(as_json.stdout)
    assert document["contacts"]["done"] == len(contacts)
    assert [Path(p).name for p in document["state_files_left_out"]] == ["state.sqlite"]


def test_a_state_without_deadlines_says_so(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite"
    a, b = contact_ids(2)
    with RunState.open(path, fingerprint="f" * 64, run_id="r1") as state:
        state.claim_many([a, b])
        state.mark_failed(a, {"*": "x"})
    found = read_status([path], today=datetime.now(UTC).date(), limit=5)
    assert (found.done, found.failed, found.pending, found.deadlines_known) == (0, 1, 1, False)
    assert found.at_risk == ()


def test_an_older_state_is_read_as_far_as_it_goes_and_never_migrated(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite"
    a, b, c = contact_ids(3)
    with sqlite3.connect(path) as raw:
        raw.execute("CREATE TABLE contacts (contact_id TEXT PRIMARY KEY, status TEXT NOT NULL)")
        raw.executemany(
            "INSERT INTO contacts VALUES (?, ?)", [(a, "done"), (b, "done"), (c, "failed")]
        )
        raw.execute("PRAGMA application_id = 1396789826")  # "SARB"
        raw.execute("PRAGMA user_version = 2")
    raw.close()
    before = path.read_bytes()
    found = read_status([path], today=datetime.now(UTC).date(), limit=5)
    assert (found.done, found.failed, found.pending, found.deadlines_known) == (2, 1, None, False)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.sqlite"]


def test_a_newer_state_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite"
    with sqlite3.connect(path) as raw:
        raw.execute("PRAGMA application_id = 1396789826")
        raw.execute("PRAGMA user_version = 99")
    raw.close()
    with pytest.raises(ConfigError, match="newer sar-bulk"):
        read_status([path], today=datetime.now(UTC).date(), limit=5)
