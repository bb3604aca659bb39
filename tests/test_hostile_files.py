"""What is already on disk is untrusted: bad --out/--state, planted links, re-runs, odd CSVs.

A bad output folder or state file ends in exit 2 and one line on stderr before any request
reaches the simulator and before any folder is created; one lock on the output folder keeps a
second run out whatever its --state; every run keeps its own report; files are private; an
Excel "Unicode text" CSV (UTF-16 LE with BOM, tab-separated) is read, and other encodings are
refused by name. The tests run as root too, where modes do not stop writes: an unwritable folder
is therefore exercised as "a path under a file", which no user can create.
"""

from __future__ import annotations

import asyncio
import io
import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest
from cli_support import run_args, run_cli, token_env
from hypothesis import given, settings
from hypothesis import strategies as st
from support import (
    RotatingCredential,
    contact_ids,
    dossier_names,
    read_report,
    run_config,
    run_engine,
    write_csv,
)

from sar_bulk.dates import DateRange
from sar_bulk.errors import ConfigError, InputError
from sar_bulk.run.contacts import ContactReader, ContactRow
from sar_bulk.run.paths import create_private_folder
from sar_bulk.run.report import RunTotals, outcome_text, summary_line
from sar_bulk.run.run_lock import FOLDER_LOCK, RunLock
from sar_bulk.run.runner import ExitCode, execute_run
from sar_bulk.simulator import Simulator, SimulatorConfig
from sar_bulk.sources.interaction_types import InteractionType

TYPES = ("--types", f"{InteractionType.EmailSent}")
SIMULATOR = SimulatorConfig(seed=61, heavy_fraction=0.0)


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def _fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


def _link_to_elsewhere(path: Path) -> Path:
    elsewhere = path.parent / "elsewhere"
    elsewhere.mkdir()
    path.symlink_to(elsewhere)
    return path


def _folder(path: Path) -> Path:
    path.mkdir()
    return path


def _file(path: Path) -> Path:
    path.write_text("not a folder\n")
    return path


# Each makes a bad path inside the test's folder (or names a device) and returns it.
BAD_OUT: dict[str, Callable[[Path], Path]] = {
    "regular file": lambda tmp: _file(tmp / "out"),
    "device": lambda tmp: Path("/dev/null"),
    "fifo": lambda tmp: _fifo(tmp / "out"),
    "symlink to elsewhere": lambda tmp: _link_to_elsewhere(tmp / "out"),
    "under a file": lambda tmp: _file(tmp / "plain") / "a" / "out",
}
BAD_STATE: dict[str, Callable[[Path], Path]] = {
    "folder": lambda tmp: _folder(tmp / "state"),
    "device": lambda tmp: Path("/dev/null"),
    "fifo": lambda tmp: _fifo(tmp / "state.sqlite"),
    "symlink": lambda tmp: _symlink_file(tmp / "state.sqlite"),
    "under a file": lambda tmp: _file(tmp / "plain") / "state.sqlite",
}


def _symlink_file(path: Path) -> Path:
    target = path.parent / "target.sqlite"
    target.write_bytes(b"")
    path.symlink_to(target)
    return path


async def _refused_before_any_request(tmp_path: Path, *flags: str, out: Path) -> str:
    """Run the command with ``flags``; check exit 2, one line, no request, no new folder."""
    csv = write_csv(tmp_path / "contacts.csv", ["ContactId", *contact_ids(2, 61)])
    before = _tree(tmp_path)
    async with Simulator(SIMULATOR) as sim:
        result = await run_cli([*run_args(sim.base_url, csv, out, *TYPES), *flags], env=token_env())
        requests = sim.counters()["total"]["requests"]
    assert result.code == ExitCode.USAGE, result.explain()
    assert requests == 0, "a request was sent before the paths were checked"
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.explain()
    assert lines[0].startswith("sar-bulk: ")
    assert "Traceback" not in result.stderr
    assert _tree(tmp_path) == before, "something was created for a refused run"
    return lines[0]


@pytest.mark.parametrize("kind", sorted(BAD_OUT))
async def test_a_bad_out_is_exit_2_before_any_request_or_folder(tmp_path: Path, kind: str) -> None:
    out = BAD_OUT[kind](tmp_path)
    line = await _refused_before_any_request(tmp_path, out=out)
    assert "--out" in line


@pytest.mark.parametrize("kind", sorted(BAD_STATE))
async def test_a_bad_state_is_exit_2_before_any_request_or_folder(
    tmp_path: Path, kind: str
) -> None:
    state = BAD_STATE[kind](tmp_path)
    line = await _refused_before_any_request(
        tmp_path, "--state", str(state), out=tmp_path / "new" / "out"
    )
    assert "--state" in line


def test_an_out_the_system_will_not_create_is_a_config_error_not_a_traceback() -> None:
    """The checks ahead judge by ``os.access``, which cannot see every refusal: /proc passes
    them for root, as do a full disk or an NFS export that squashes root. mkdir's own error
    was a traceback from the thread that makes the folder."""
    out = Path("/proc/sar-bulk-no-such-folder/out")
    with pytest.raises(ConfigError, match=r"^--out /proc/sar-bulk-no-such-folder/out cannot be"):
        create_private_folder(out)


async def test_two_runs_with_different_state_files_cannot_share_an_out(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    held = RunLock.for_folder(out)  # the first run, still going
    try:
        line = await _refused_before_any_request(
            tmp_path, "--state", str(tmp_path / "other.sqlite"), out=out
        )
    finally:
        held.release()
    assert "another sar-bulk run holds" in line
    assert FOLDER_LOCK in line


async def test_two_runs_with_different_work_folders_cannot_share_an_out(tmp_path: Path) -> None:
    """With --work, the folder --out is locked too: another run staging elsewhere would publish
    the same contacts there and remove this run's copies in flight as leftovers."""
    out = tmp_path / "out"
    out.mkdir()
    csv = write_csv(tmp_path / "contacts.csv", ["ContactId", *contact_ids(2, 63)])
    held = RunLock.for_folder(out)  # the first run, staging in its own work folder
    try:
        async with Simulator(SIMULATOR) as sim:
            args = run_args(sim.base_url, csv, out, *TYPES, "--work", str(tmp_path / "w2"))
            result = await run_cli(args, env=token_env())
            requests = sim.counters()["total"]["requests"]
    finally:
        held.release()
    assert result.code == ExitCode.USAGE, result.explain()
    assert requests == 0
    assert result.stderr.splitlines() == [
        f"sar-bulk: another sar-bulk run holds {out / FOLDER_LOCK}: wait for it to finish, or "
        "give this run its own --out or --shard"
    ]
    # The work folder's own lock was let go: a run there now is not refused for it.
    RunLock.for_folder(tmp_path / "w2").release()


async def test_a_bad_work_folder_is_named_as_work(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("not a folder")
    line = await _refused_before_any_request(
        tmp_path, "--work", str(tmp_path / "a-file"), out=tmp_path / "out"
    )
    assert line.startswith(f"sar-bulk: --work {tmp_path / 'a-file'} is a regular file"), line


def test_shards_share_the_folder_but_not_a_shard_nor_with_an_unsharded_run(tmp_path: Path) -> None:
    first = RunLock.for_folder(tmp_path, shard="0/2")
    second = RunLock.for_folder(tmp_path, shard="1/2")
    try:
        with pytest.raises(ConfigError, match="another sar-bulk run holds"):
            RunLock.for_folder(tmp_path, shard="0/2")
        with pytest.raises(ConfigError, match="another sar-bulk run holds"):
            RunLock.for_folder(tmp_path)
    finally:
        first.release()
        second.release()
    RunLock.for_folder(tmp_path).release()  # free again once the shards are gone
    assert stat.S_IMODE((tmp_path / FOLDER_LOCK).stat().st_mode) == 0o600


def test_a_planted_link_or_fifo_as_the_lock_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / FOLDER_LOCK).symlink_to(tmp_path / "elsewhere")
    with pytest.raises(ConfigError, match="lock file"):
        RunLock.for_folder(tmp_path)
    assert not (tmp_path / "elsewhere").exists()
    other = tmp_path / "other"
    other.mkdir()
    _fifo(other / FOLDER_LOCK)
    with pytest.raises(ConfigError, match="not a regular file"):
        RunLock.for_folder(other)


async def test_each_run_keeps_its_report_and_files_are_private(tmp_path: Path) -> None:
    contacts = contact_ids(3, 62)
    csv = write_csv(tmp_path / "contacts.csv", ["ContactId", *contacts, "not-a-guid"])
    out = tmp_path / "out"
    async with Simulator(SIMULATOR) as sim:
        config = run_config(sim, csv, out, types=InteractionType.EmailSent, date_from="03-04-2024")
        # Something planted at the report's name beforehand must be replaced, not written through.
        out.mkdir()
        victim = tmp_path / "victim.txt"
        victim.write_text("untouched")
        (out / "run-report.json").symlink_to(victim)
        first = await run_engine(config)
        second = await run_engine(config)  # the resume: everything is already done
    assert first.code == second.code == ExitCode.INCOMPLETE  # one row rejected
    assert victim.read_text() == "untouched"
    assert not (out / "run-report.json").is_symlink()
    history = sorted((out / "reports").iterdir())
    assert len(history) == 2
    reports = [read_report(out / "reports", p.name) for p in history]
    assert sorted(r["totals"]["succeeded"] for r in reports) == [0, 3]
    assert read_report(out)["totals"]["skipped_already_done"] == 3
    assert read_report(out)["outcome"] == "complete, 1 row rejected"
    assert read_report(out)["dates"] == "from 4 March 2024 on"
    assert stat.S_IMODE((out / "reports").stat().st_mode) == 0o700
    for file in (out / "run-report.json", *history, out / FOLDER_LOCK):
        assert stat.S_IMODE(file.stat().st_mode) == 0o600, file
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


async def test_the_first_log_line_and_the_report_state_the_dates_in_words(tmp_path: Path) -> None:
    csv = write_csv(tmp_path / "contacts.csv", ["ContactId", *contact_ids(1, 63)])
    out = tmp_path / "a" / "b" / "out"
    async with Simulator(SIMULATOR) as sim:
        args = run_args(sim.base_url, csv, out, *TYPES)
        dates = ("--date-from", "03-04-2024", "--date-to", "2024-06-30")
        result = await run_cli([*args, *dates, "--log-format", "json"], env=token_env())
    assert result.code == ExitCode.OK, result.explain()
    first = result.stderr.splitlines()[0]
    assert '"run.started"' in first
    assert "from 4 March 2024 to 30 June 2024" in first
    assert '"run_id"' in first
    assert read_report(out)["dates"] == "from 4 March 2024 to 30 June 2024"
    # The parents the run created are private too, not only the folder itself.
    for folder in (tmp_path / "a", tmp_path / "a" / "b", out):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder


def test_date_ranges_in_words() -> None:
    assert DateRange.parse("12-01-2023", "2024-02-29").in_words() == (
        "from 1 December 2023 to 29 February 2024"
    )
    assert DateRange.parse(None, "01-31-2024").in_words() == "up to 31 January 2024"
    assert DateRange().in_words() == "all dates"


def test_outcome_and_summary_say_what_happened() -> None:
    totals = RunTotals(rejected=1, succeeded=2)
    assert outcome_text(totals) == "complete, 1 row rejected"
    totals.failed = 2
    assert outcome_text(totals) == "incomplete, 2 contacts failed, 1 row rejected"
    assert outcome_text(RunTotals(succeeded=1)) == "complete"
    line = summary_line(RunTotals(), requests=0, throttled=0, seconds=1.0, interrupted="SIGINT")
    assert line.startswith("interrupted (SIGINT): ")


# -- CSV encodings ------------------------------------------------------------------------------


def _excel_unicode_text(ids: list[str]) -> bytes:
    """What Excel's "Unicode text" writes: UTF-16 LE with BOM, tab-separated, CRLF."""
    text = "Name\tContactId\r\n" + "".join(f"Zoë Müller\t{c}\r\n" for c in ids)
    return b"\xff\xfe" + text.encode("utf-16-le")


async def test_an_excel_unicode_text_file_is_read_end_to_end(tmp_path: Path) -> None:
    contacts = contact_ids(3, 64)
    csv = tmp_path / "contacts.txt"
    csv.write_bytes(_excel_unicode_text(contacts))
    out = tmp_path / "out"
    async with Simulator(SIMULATOR) as sim:
        result = await run_cli(run_args(sim.base_url, csv, out, *TYPES), env=token_env())
    assert result.code == ExitCode.OK, result.explain()
    assert dossier_names(out) == {f"{c}.zip" for c in contacts}
    assert read_report(out)["id_column"] == "column 'ContactId' (2 of 2)"


class _Trickle(io.RawIOBase):
    """``data`` handed out in reads of the given sizes (cycled), to split code units."""

    def __init__(self, data: bytes, sizes: list[int]) -> None:
        self._data = memoryview(data)
        self._sizes = sizes
        self._turn = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        step = self._sizes[self._turn % len(self._sizes)]
        self._turn += 1
        chunk, self._data = bytes(self._data[:step]), self._data[step:]
        return chunk


@settings(max_examples=100, deadline=None)
@given(
    count=st.integers(1, 30),
    big_endian=st.booleans(),
    sizes=st.lists(st.integers(1, 7), min_size=1, max_size=5),
)
def test_utf16_with_a_bom_reads_the_same_ids_whatever_the_read_sizes(
    count: int, big_endian: bool, sizes: list[int]
) -> None:
    ids = contact_ids(count, count)
    text = "Name\tContactId\r\n" + "".join(f"Zoë\t{c}\r\n" for c in ids)
    data = b"\xfe\xff" + text.encode("utf-16-be") if big_endian else _excel_unicode_text(ids)
    rows = list(ContactReader(_Trickle(data, sizes)))  # type: ignore[arg-type]
    # "Name" is a known name header: the name is read too (for the dossier), accents and all.
    name = "Zoë" if big_endian else "Zoë Müller"
    assert rows == [ContactRow(line, c, None, name) for line, c in enumerate(ids, 2)]


@pytest.mark.parametrize(
    ("data", "named"),
    [
        ("ContactId\r\n".encode("utf-16-le"), "UTF-16 without a byte-order mark"),
        ("ContactId\r\n".encode("utf-16-be"), "UTF-16 without a byte-order mark"),
        (b"\xff\xfe\x00\x00" + "ContactId\n".encode("utf-32-le"), "UTF-32 LE"),
        (b"\x00\x00\xfe\xff" + "ContactId\n".encode("utf-32-be"), "UTF-32 BE"),
    ],
)
def test_other_encodings_are_refused_by_name(data: bytes, named: str) -> None:
    reader = ContactReader(io.BytesIO(data), source_name="c.csv")
    with pytest.raises(InputError, match=named) as caught:
        _ = reader.column_description
    assert "UTF-8" in str(caught.value)


def test_a_latin1_file_says_the_encoding_may_be_why() -> None:
    data = b"ContactId;Name\n" + "".join(f"{c};Müller\n" for c in contact_ids(2, 65)).encode(
        "latin-1"
    )
    reader = ContactReader(io.BytesIO(data), source_name="c.csv")
    with pytest.raises(InputError, match="2 of them are not UTF-8"):
        list(reader)


async def test_contacts_from_a_pipe_are_not_read_twice_for_the_progress_count(
    tmp_path: Path,
) -> None:
    contacts = contact_ids(5, 66)
    fifo = _fifo(tmp_path / "contacts.csv")
    body = ("ContactId\n" + "".join(f"{c}\n" for c in contacts)).encode()

    def feed() -> None:
        with fifo.open("wb") as pipe:  # blocks until the run opens the pipe to read it
            pipe.write(body)

    out = tmp_path / "out"
    async with Simulator(SIMULATOR) as sim:
        config = run_config(sim, fifo, out, types=InteractionType.EmailSent)
        writer = asyncio.create_task(asyncio.to_thread(feed))
        outcome = await execute_run(
            config,
            RotatingCredential(),
            credential_name="RotatingCredential",
            progress_out=io.StringIO(),  # progress on: it counts lines of a regular file only
            out=io.StringIO(),
        )
        await writer
    assert outcome.code == ExitCode.OK, outcome.summary
    assert dossier_names(out) == {f"{c}.zip" for c in contacts}
