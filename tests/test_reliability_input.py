"""What goes in, through the command: hostile contact lists, and one list split over shards.

Bad rows must be named in the report (line and reason, with a short safe preview) while the good
rows finish; a list without a single usable id must end at once with exit 2 and a plain message;
and no value from the file may make sar-bulk write anywhere but its output folder.
"""

from __future__ import annotations

import asyncio
import itertools
import os
from pathlib import Path

import pytest
from cli_support import CliResult, run_args, run_cli, token_env
from support import (
    assert_exact_dossiers,
    contact_ids,
    dossier_names,
    read_report,
    write_csv,
)

from sar_bulk.run.runner import ExitCode
from sar_bulk.simulator import Simulator, SimulatorConfig
from sar_bulk.sources.interaction_types import InteractionType

# A few types are enough here: these tests are about rows, not about fetching.
TYPES = (InteractionType.EmailSent, InteractionType.EmailOpened, InteractionType.WebsiteVisited)
TYPES_FLAG = ("--types", ",".join(t.value for t in TYPES))
SIMULATOR = SimulatorConfig(seed=31, heavy_fraction=0.0)

Snapshot = dict[str, tuple[int, int, int]]


def _snapshot(root: Path, skip: Path) -> Snapshot:
    """Every file and folder under ``root`` but ``skip``: size, mode and modification time."""
    seen: Snapshot = {}
    for folder, subfolders, files in os.walk(root):
        here = Path(folder)
        subfolders[:] = [name for name in subfolders if here / name != skip]
        for name in [*subfolders, *files]:
            info = (here / name).lstat()
            seen[str((here / name).relative_to(root))] = (
                info.st_size,
                info.st_mode,
                info.st_mtime_ns,
            )
    return seen


async def _run_in(
    tmp_path: Path, sim: Simulator, contacts: Path, *extra: str
) -> tuple[CliResult, Path]:
    """Run from a folder a few levels down, so ``../..`` in the input stays inside tmp_path."""
    work = tmp_path / "a" / "b" / "work"
    work.mkdir(parents=True, exist_ok=True)
    out = work / "out"
    result = await run_cli(
        run_args(sim.base_url, contacts, out, *TYPES_FLAG, *extra), env=token_env(), cwd=work
    )
    return result, out


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "empty"),
        (b"ContactId\r\n", "only a header"),
        (b"\xef\xbb\xbfContactId\n\n\n", "only a header"),
        (b"ContactId\nnot-a-guid\n../../etc/passwd\n=1+1\n", "all 3 rows were rejected"),
    ],
    ids=["empty", "header-only", "bom-header-blank-lines", "no-valid-row"],
)
async def test_a_list_without_a_usable_id_is_a_usage_error(
    tmp_path: Path, content: bytes, message: str
) -> None:
    contacts = tmp_path / "contacts.csv"
    contacts.write_bytes(content)
    async with Simulator(SIMULATOR) as sim:
        result, out = await _run_in(tmp_path, sim, contacts)
    assert result.code == ExitCode.USAGE, (
        "a contacts file without a usable id must end with exit 2 and one plain message, "
        f"not a traceback: {result.explain()}"
    )
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert not out.exists() or not dossier_names(out)


@pytest.mark.slow
async def test_hostile_rows_are_reported_and_the_good_ones_finish(tmp_path: Path) -> None:
    good = contact_ids(3, 32)
    lines: list[bytes] = [
        b"ContactId",  # 1
        b"{" + good[0].upper().encode() + b"}",  # 2: braces and upper case are fine
        good[1].encode(),  # 3
        b"../../x",  # 4
        b"/etc/passwd",  # 5
        b"'; DROP TABLE contacts; --",  # 6
        b"1 OR 1=1",  # 7
        b'=HYPERLINK("http://127.0.0.1/x","click")',  # 8
        b"+cmd|' /C calc'!A0",  # 9
        b"@SUM(A1:A2)",  # 10
        b"-2+3",  # 11
        b"\xff\xfe bad \x80 bytes",  # 12
        b"a" * 100_000,  # 13
        good[2].replace("-", "").upper().encode(),  # 14: no dashes
        b"{" + good[1].upper().encode() + b"}",  # 15: line 3 again, spelt otherwise
        b"..\\..\\windows\\system32",  # 16
        b"",  # 17: blank lines are skipped silently
        b"%00%2e%2e%2f",  # 18
    ]
    contacts = tmp_path / "input" / "contacts.csv"
    contacts.parent.mkdir()
    contacts.write_bytes(b"\n".join(lines) + b"\n")
    before = _snapshot(tmp_path, skip=tmp_path / "a" / "b" / "work" / "out")
    async with Simulator(SIMULATOR) as sim:
        result, out = await _run_in(tmp_path, sim, contacts)
        assert result.code == ExitCode.INCOMPLETE, result.explain()
        assert_exact_dossiers(sim.dataset, out, good, TYPES)
    after = _snapshot(tmp_path, skip=out)
    # "a", "a/b" and "a/b/work" were made by the test; nothing else may appear or change.
    made_by_test = {"a", "a/b", "a/b/work"}
    assert {k: v for k, v in after.items() if k not in made_by_test} == before
    assert {p.name for p in out.iterdir()} == {
        ".sar-bulk",
        ".sar-bulk.lock",
        "reports",
        "run-report.json",
    } | {f"{c}.zip" for c in good}

    report = read_report(out)
    rejected = report["rejected_rows"]
    assert [row["line"] for row in rejected] == [4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 16, 18]
    reasons = {row["line"]: row["reason"] for row in rejected}
    assert reasons[12] == "not UTF-8"
    assert "longer than" in reasons[13]
    assert all(reasons[line] for line in reasons)
    previews = {row["line"]: row["value"] for row in rejected}
    assert "\\xff" in previews[12]
    assert all(len(value) <= 40 for value in previews.values())
    totals = report["totals"]
    assert (totals["rejected"], totals["duplicates"], totals["succeeded"]) == (12, 1, 3)
    assert report["outcome"] == "complete, 12 rows rejected"
    # The report names lines, never carries the 100 KB value.
    assert (out / "run-report.json").stat().st_size < 20_000
    assert b"a" * 100 not in (out / "run-report.json").read_bytes()


@pytest.mark.slow
async def test_three_shards_split_one_list_disjointly_and_completely(tmp_path: Path) -> None:
    contacts = contact_ids(30, 33)
    csv = write_csv(tmp_path / "contacts.csv", ["ContactId", *contacts])
    outs = [tmp_path / f"shard-{index}" for index in range(3)]
    async with Simulator(SIMULATOR) as sim:
        results = await asyncio.gather(
            *(
                run_cli(
                    run_args(sim.base_url, csv, out, *TYPES_FLAG, "--shard", f"{index}/3"),
                    env=token_env(),
                )
                for index, out in enumerate(outs)
            )
        )
        for result in results:
            assert result.code == ExitCode.OK, result.explain()
        sets = [{name.removesuffix(".zip") for name in dossier_names(out)} for out in outs]
        for out, owned in zip(outs, sets, strict=True):
            assert_exact_dossiers(sim.dataset, out, owned, TYPES)
    assert all(sets), "a shard got no contact at all: the split is not useful"
    for first, second in itertools.combinations(sets, 2):
        assert not first & second, "a contact is in two shards"
    assert sets[0] | sets[1] | sets[2] == set(contacts)
    for index, (out, owned) in enumerate(zip(outs, sets, strict=True)):
        report = read_report(out, f"run-report.shard-{index}-of-3.json")
        assert report["totals"]["contacts"] == len(owned)
        assert report["totals"]["other_shards"] == len(contacts) - len(owned)
