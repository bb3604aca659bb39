"""The run side under awkward conditions: a stop while the run starts up, a damaged or locked
state file, an unreadable or unusable contacts file, received dates east of UTC, shards of two
counts in one folder, and the metrics textfile of a run that ends in an error.

Real SQLite files and locks, the simulator over loopback, and the command as a real process
where the exit code and the printed message are what is being checked.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
from cli_support import run_args, run_cli, token_env
from prometheus_client.parser import text_string_to_metric_families
from support import contact_ids, engine_deps, run_config, unlimited, write_csv

from sar_bulk.config import RunConfig
from sar_bulk.errors import ConfigError
from sar_bulk.output.target import LocalTarget, Published
from sar_bulk.run import state as state_module
from sar_bulk.run.engine import Engine
from sar_bulk.run.run_lock import RunLock
from sar_bulk.run.runner import ExitCode, _upload_report
from sar_bulk.run.state import RunState
from sar_bulk.simulator import Simulator
from sar_bulk.sources.interactions import InteractionsSource


@asynccontextmanager
async def _engine(
    config: RunConfig, now: Callable[[], datetime] = lambda: datetime.now(UTC)
) -> AsyncIterator[Engine]:
    """An engine over the action's source, with a real session to the simulator."""
    async with engine_deps(config) as deps:
        yield Engine(config, [InteractionsSource(deps)], now=now)


def _hold_write_lock(path: Path, release: threading.Event, held: threading.Event) -> None:
    """Another process's long write: hold the state file's write lock until ``release``."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        held.set()
        release.wait(30)
        conn.execute("ROLLBACK")
    finally:
        conn.close()


async def test_a_stop_while_the_run_starts_up_ends_it_before_any_contact(tmp_path: Path) -> None:
    # SIGTERM (a pod evicted, a node drained) may come while the run still waits for its state
    # file: that stop must hold once the file is free, not be forgotten.
    ids = contact_ids(12)
    async with Simulator(unlimited(seed=7)) as sim:
        csv = write_csv(tmp_path / "c.csv", ["ContactId", *ids])
        config = run_config(sim, csv, tmp_path / "out")
        async with _engine(config) as first:
            await first.run()  # creates the state file (and does nothing: all done after it)
        for dossier in (tmp_path / "out").glob("*.zip"):
            dossier.unlink()  # so a second run would have every contact to fetch again
        sim.reset_counters()
        release, held = threading.Event(), threading.Event()
        holder = threading.Thread(target=_hold_write_lock, args=(config.state, release, held))
        holder.start()
        try:
            assert await asyncio.to_thread(held.wait, 10)
            async with _engine(config) as engine:
                running = asyncio.create_task(engine.run())
                await asyncio.sleep(0.3)  # the run waits for the state file's lock
                assert not running.done()
                engine.request_stop("SIGTERM")
                release.set()
                result = await asyncio.wait_for(running, 20)
        finally:
            release.set()
            await asyncio.to_thread(holder.join)
        fetched = sim.counters()["ok_requests_by_contact"]
    assert result.interrupted_by == "SIGTERM"
    assert result.totals.succeeded == 0
    assert not fetched, "contacts were fetched after the run was told to stop"
    assert not list((tmp_path / "out").glob("*.zip"))


# --- a damaged state file: one clear error saying what to do, never a traceback ----------------


def _done_state(path: Path, contacts: list[str]) -> None:
    """A state file in which an earlier run finished ``contacts``, checkpointed into the file."""
    with RunState.open(path, fingerprint="fp", run_id="earlier") as earlier:
        earlier.claim_many(contacts)
        for contact_id in contacts:
            earlier.mark_done(contact_id, dossier=f"{contact_id}.zip", interactions=1, zip_bytes=9)
    with sqlite3.connect(path) as raw:
        raw.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    raw.close()


def _garble_page(path: Path, page: int) -> None:
    """Overwrite one page of the file with junk, as a bad sector or a torn copy would."""
    with sqlite3.connect(path) as raw:
        size = raw.execute("PRAGMA page_size").fetchone()[0]
    raw.close()
    with path.open("r+b") as handle:
        handle.seek((page - 1) * size)
        handle.write(b"\xab" * size)


def test_a_damaged_page_found_while_claiming_is_a_config_error_naming_the_file(
    tmp_path: Path,
) -> None:
    path = tmp_path / "out" / ".sar-bulk" / "state.sqlite"
    contacts = sorted(contact_ids(5000, 3))
    _done_state(path, contacts)
    with sqlite3.connect(path) as raw:
        # The contacts table's last leaf holds the highest ids; opening the file never reads it.
        (last_leaf,) = raw.execute(
            "SELECT max(pageno) FROM dbstat WHERE name = 'contacts' AND pagetype = 'leaf'"
        ).fetchone()
    raw.close()
    _garble_page(path, last_leaf)
    with (
        RunState.open(path, fingerprint="fp", run_id="now") as state,
        pytest.raises(ConfigError) as caught,
    ):
        state.claim_many(contacts[-1:])
    message = str(caught.value)
    assert str(path) in message
    assert "damaged" in message
    assert "delete" in message


async def test_a_damaged_state_file_ends_the_command_with_exit_2_and_advice(
    tmp_path: Path,
) -> None:
    contacts = contact_ids(6, 4)
    csv = write_csv(tmp_path / "c.csv", ["ContactId", *contacts])
    out = tmp_path / "out"
    state = out / ".sar-bulk" / "state.sqlite"
    async with Simulator(unlimited(seed=4)) as sim:
        args = run_args(sim.base_url, csv, out)
        first = await run_cli(args, env=token_env())
        assert first.code == ExitCode.OK, first.explain()
        with sqlite3.connect(state) as raw:
            raw.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            pages = raw.execute("PRAGMA page_count").fetchone()[0]
        raw.close()
        for page in range(2, pages + 1):  # the header page stays: the file still looks like ours
            _garble_page(state, page)
        second = await run_cli(args, env=token_env())
    assert second.code == ExitCode.USAGE, second.explain()
    assert "Traceback" not in second.stderr, second.explain()
    assert f"the state file {state} is damaged" in second.stderr, second.explain()
    assert "delete" in second.stderr


# --- metrics: a run that ends in an error still says how it ended -------------------------------


def _textfile_samples(path: Path) -> dict[str, float]:
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(path.read_text("utf-8"))
        for sample in family.samples
        if sample.labels.get("shard") == "all" and "state" not in sample.labels
    }


async def test_a_run_ending_in_a_usage_error_writes_its_exit_code_to_the_textfile(
    tmp_path: Path,
) -> None:
    # The nightly export came out empty (a header and nothing else): exit 2, and the textfile
    # must say so, or an alert on sar_bulk_run_exit_code goes quiet exactly on that night.
    textfile = tmp_path / "sar-bulk.prom"
    good_csv = write_csv(tmp_path / "good.csv", ["ContactId", *contact_ids(2, 8)])
    empty_csv = write_csv(tmp_path / "empty.csv", ["ContactId"])
    out = tmp_path / "out"
    async with Simulator(unlimited(seed=8)) as sim:
        metrics = ("--metrics-textfile", str(textfile))
        good = await run_cli(run_args(sim.base_url, good_csv, out, *metrics), env=token_env())
        assert good.code == ExitCode.OK, good.explain()
        last_good = _textfile_samples(textfile)["sar_bulk_last_success_timestamp_seconds"]
        empty = await run_cli(run_args(sim.base_url, empty_csv, out, *metrics), env=token_env())
    assert empty.code == ExitCode.USAGE, empty.explain()
    assert "only a header line" in empty.stderr
    after = _textfile_samples(textfile)
    assert after.get("sar_bulk_run_exit_code") == ExitCode.USAGE
    assert after["sar_bulk_last_success_timestamp_seconds"] == last_good


# --- received dates: "today" is the controller's, wherever it is -------------------------------


async def test_a_request_received_today_east_of_utc_is_not_taken_for_a_future_one(
    tmp_path: Path,
) -> None:
    # 22:00 UTC on 1 December is already 2 December from UTC+2 eastwards (Helsinki, Sydney):
    # a request logged there today must be answered, not rejected as "in the future".
    a, b = contact_ids(2, 9)
    lines = ["id,received", f"{a},2026-12-02", f"{b},2026-12-03"]
    async with Simulator(unlimited(seed=9)) as sim:
        csv = write_csv(tmp_path / "c.csv", lines)
        config = run_config(sim, csv, tmp_path / "out", types="EmailSent")
        late_evening = datetime(2026, 12, 1, 22, 0, tzinfo=UTC)
        async with _engine(config, now=lambda: late_evening) as engine:
            result = await engine.run()
    # 3 December is not today anywhere yet (UTC+14 reaches it at 10:00 UTC): still rejected.
    assert [(r["line"], r["reason"]) for r in result.totals.rejected_rows] == [
        (3, "received date: in the future")
    ]
    assert result.totals.succeeded == 1
    assert (tmp_path / "out" / f"{a}.zip").exists()


def test_a_state_file_another_process_keeps_locked_is_a_config_error_saying_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A sqlite3 shell left in a transaction, or a second run given the same --state: after the
    # busy timeout the run must say who is in the way, not end in a traceback.
    path = tmp_path / "out" / ".sar-bulk" / "state.sqlite"
    _done_state(path, contact_ids(3, 5))
    monkeypatch.setattr(state_module, "_BUSY_TIMEOUT_MS", 200)
    release, held = threading.Event(), threading.Event()
    holder = threading.Thread(target=_hold_write_lock, args=(path, release, held))
    holder.start()
    try:
        assert held.wait(10)
        with pytest.raises(ConfigError) as caught:
            RunState.open(path, fingerprint="fp", run_id="blocked")
    finally:
        release.set()
        holder.join()
    message = str(caught.value)
    assert str(path) in message
    assert "another process" in message
    assert "--state" in message
    with RunState.open(path, fingerprint="fp", run_id="after") as state:  # free again: fine
        assert state.claim_many(contact_ids(1, 6))


# --- a contacts file whose every row is rejected: the user is told which and why ----------------


async def test_a_file_whose_every_row_is_rejected_names_them_in_the_log_and_the_message(
    tmp_path: Path,
) -> None:
    secret_looking = "jane.doe@example.com"  # a value that is no id, and personal data
    csv = write_csv(tmp_path / "c.csv", ["ContactId", "not-a-guid", secret_looking, "", "{bad}"])
    async with Simulator(unlimited(seed=10)) as sim:
        args = run_args(sim.base_url, csv, tmp_path / "out", "--log-format", "json")
        result = await run_cli(args, env=token_env())
    assert result.code == ExitCode.USAGE, result.explain()
    events = [orjson.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    rejected = [(e["line"], e["reason"]) for e in events if e["event"] == "contacts.rejected"]
    assert rejected == [(2, "not a GUID"), (3, "not a GUID"), (5, "not a GUID")]
    assert "all 3 rows were rejected, the first at line 2: not a GUID" in result.stderr
    assert secret_looking not in result.stderr


async def test_a_contacts_file_that_fails_to_read_is_exit_2_naming_it(tmp_path: Path) -> None:
    # A read that fails with an I/O error (a share gone stale, a bad sector): /proc/self/mem
    # opens fine and then fails its first read with EIO, as such a file does.
    async with Simulator(unlimited(seed=11)) as sim:
        args = run_args(sim.base_url, Path("/proc/self/mem"), tmp_path / "out")
        result = await run_cli(args, env=token_env())
    assert result.code == ExitCode.USAGE, result.explain()
    assert "Traceback" not in result.stderr, result.explain()
    assert "/proc/self/mem cannot be read (Input/output error)" in result.stderr


# --- shards of two different counts in one folder ------------------------------------------------


def test_shards_of_another_count_are_refused_while_shards_run(tmp_path: Path) -> None:
    # Shard 0 of 2 owns every contact shard 0 of 4 owns (and more): run side by side, both
    # fetch them, and one's start removes the other's half-written dossiers as leftovers.
    first = RunLock.for_folder(tmp_path, shard="0/4")
    try:
        with pytest.raises(ConfigError) as caught:
            RunLock.for_folder(tmp_path, shard="0/2")
        RunLock.for_folder(tmp_path, shard="3/4").release()  # the same job's shards: fine
    finally:
        first.release()
    message = str(caught.value)
    assert "shards of 4" in message
    assert "0/2" in message
    # Once they are gone, another count may use the folder (and then holds it in turn).
    second = RunLock.for_folder(tmp_path, shard="0/2")
    try:
        with pytest.raises(ConfigError, match="shards of 2"):
            RunLock.for_folder(tmp_path, shard="1/3")
    finally:
        second.release()
    RunLock.for_folder(tmp_path).release()


class _TimingOutStore(LocalTarget):
    """A store whose client gives up on the report by itself (its own read timeout)."""

    __slots__ = ()

    async def put_report(self, name: str, body: bytes) -> Published:
        raise TimeoutError("the store's read timed out")


async def test_a_report_upload_timing_out_on_its_own_leaves_the_report_in_the_work_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # No stop, so no limit of ours: the TimeoutError is the store's, an OSError like the others,
    # and must end as "the report stays only at", not as a crash of the run's last step.
    report = tmp_path / "work" / "report.json"
    report.parent.mkdir()
    report.write_bytes(b"{}")
    assert await _upload_report(_TimingOutStore(tmp_path / "out"), report) is False
    err = capsys.readouterr().err
    assert f"the report stays only at {report}: the store's read timed out" in err
