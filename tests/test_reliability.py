"""Reliability under chaos: mixed faults and an expiring token still end in exact dossiers.

This module also holds the harness the other ``test_reliability_*`` modules share: running the
``sar-bulk`` command as a real process, writing contact lists, and comparing dossiers with the
simulator's ground truth. The simulator always runs in the test's own event loop, so it outlives
any command the test starts (or kills) and its counters show what every run fetched.
"""

from __future__ import annotations

import asyncio
import io
import os
import random
import shutil
import sys
import uuid
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import orjson
import pytest
from support import RotatingCredential

from sar_bulk.config import RUN_OPTIONS, RunConfig, resolve
from sar_bulk.dossier_format import PARTIAL_PREFIX
from sar_bulk.interaction_types import ALL_TYPES, InteractionType
from sar_bulk.runner import ExitCode, execute_run
from sar_bulk.simulator import Dataset, Simulator, SimulatorConfig
from sar_bulk.verify import verify_dossier

CLI: tuple[str, ...] = (sys.executable, "-m", "sar_bulk.cli")
# Fast retries (the faults are many, the test machine is small), and a pace far above the
# default 20 requests/s: the simulator's request limit is not what these tests are about.
FAST: tuple[str, ...] = ("--retry-base", "0.05", "--retry-cap", "0.5", "--rate", "1000")
SIM_TOKEN = "sim-reliability.1"
COMMAND_TIMEOUT = 120.0


# ----- the harness ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CliResult:
    """How one ``sar-bulk`` process ended and what it printed."""

    code: int
    stdout: str
    stderr: str

    def explain(self) -> str:
        """For assertion messages: the tail of what the command printed."""
        tail = 3000
        return (
            f"exit {self.code}\n--- stdout\n{self.stdout[-tail:]}\n"
            f"--- stderr\n{self.stderr[-tail:]}"
        )


def cli_env(**extra: str) -> dict[str, str]:
    """The test process's environment without any sar-bulk or Azure setting, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SAR_BULK_", "AZURE_"))}
    env.update(extra)
    return env


def token_env(token: str = SIM_TOKEN, **extra: str) -> dict[str, str]:
    """An environment for ``--auth static-token`` with ``token``."""
    return cli_env(SAR_BULK_TOKEN=token, **extra)


def run_args(org: str, contacts: Path, out: Path, *extra: str) -> list[str]:
    """``sar-bulk run`` arguments for a static-token run with fast retries."""
    return [
        "run",
        "--auth",
        "static-token",
        "--org",
        org,
        "--contacts",
        str(contacts),
        "--out",
        str(out),
        "--no-progress",
        *FAST,
        *extra,
    ]


async def start_cli(
    args: Sequence[str],
    *,
    env: Mapping[str, str],
    cwd: Path | None = None,
    log: Path | None = None,
) -> asyncio.subprocess.Process:
    """Start ``sar-bulk ARGS``; its output goes to ``log`` (or nowhere), never to a full pipe."""
    target = log.open("ab") if log is not None else None
    try:
        return await asyncio.create_subprocess_exec(
            *CLI,
            *args,
            env=dict(env),
            cwd=cwd,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=target or asyncio.subprocess.DEVNULL,
            stderr=target or asyncio.subprocess.DEVNULL,
        )
    finally:
        if target is not None:
            target.close()


async def run_cli(
    args: Sequence[str],
    *,
    env: Mapping[str, str],
    cwd: Path | None = None,
    time_limit: float = COMMAND_TIMEOUT,
) -> CliResult:
    """Run ``sar-bulk ARGS`` to its end (the simulator keeps serving meanwhile)."""
    process = await asyncio.create_subprocess_exec(
        *CLI,
        *args,
        env=dict(env),
        cwd=cwd,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), time_limit)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise AssertionError(
            f"sar-bulk {' '.join(args)} did not end within {time_limit} s"
        ) from None
    assert process.returncode is not None
    return CliResult(
        process.returncode,
        stdout.decode("utf-8", "replace"),
        stderr.decode("utf-8", "replace"),
    )


async def run_tool(*argv: str) -> tuple[int, str]:
    """Run another program (``unzip``) to its end; its exit code and combined output."""
    process = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), COMMAND_TIMEOUT)
    assert process.returncode is not None
    return process.returncode, output.decode("utf-8", "replace")


def contact_ids(count: int, seed: int) -> list[str]:
    """``count`` distinct canonical contact ids, the same for the same seed."""
    rng = random.Random(seed)
    return [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(count)]


def write_contacts(path: Path, ids: Iterable[str]) -> Path:
    """A contacts CSV with a ``ContactId`` header, one id a line."""
    path.write_text("ContactId\n" + "".join(f"{contact}\n" for contact in ids), encoding="utf-8")
    return path


def dossier_names(out: Path) -> set[str]:
    """Names of the finished dossiers in ``out`` (leftovers of unfinished writes excluded)."""
    return {
        p.name for p in out.glob("*.zip") if not p.name.startswith(PARTIAL_PREFIX) and p.is_file()
    }


def leftovers(out: Path) -> set[str]:
    """Names of what unfinished writes left in ``out``."""
    return {p.name for p in out.iterdir() if p.name.startswith(PARTIAL_PREFIX)}


def read_report(out: Path, name: str = "run-report.json") -> dict[str, Any]:
    report: dict[str, Any] = orjson.loads((out / name).read_bytes())
    return report


def read_entries(path: Path) -> dict[str, list[Any]]:
    """Each requested type's interactions as the dossier holds them ([] for an empty type)."""
    entries: dict[str, list[Any]] = {}
    with zipfile.ZipFile(path) as archive:
        manifest = orjson.loads(archive.read("manifest.json"))
        for entry in manifest["interactions"]:
            member = entry["path"]
            entries[entry["interaction_type"]] = (
                orjson.loads(archive.read(member)) if member is not None else []
            )
    return entries


def assert_dossiers_exact(
    out: Path,
    dataset: Dataset,
    contacts: Iterable[str],
    types: Sequence[InteractionType] = ALL_TYPES,
    *,
    date_from: date | None = None,
    date_to: date | None = None,
) -> int:
    """Every contact has exactly one dossier and it holds exactly what the org holds.

    Returns the number of interactions compared, so a caller can tell the check was not empty.
    """
    wanted = sorted(set(contacts))
    assert dossier_names(out) == {f"{c}.zip" for c in wanted}, "dossier set differs"
    compared = 0
    for contact in wanted:
        path = out / f"{contact}.zip"
        result = verify_dossier(path)
        assert result.ok, f"{path.name}: {result.problems}"
        entries = read_entries(path)
        assert sorted(entries) == sorted(t.value for t in types), f"{contact}: types differ"
        for itype in types:
            expected = list(dataset.interactions(contact, itype, date_from, date_to))
            got = entries[itype.value]
            assert got == expected, (
                f"{contact} {itype.value}: dossier holds {len(got)} interactions, "
                f"the org {len(expected)} (or they differ in content or order)"
            )
            compared += len(expected)
    return compared


async def assert_zip_consumers_accept(out: Path) -> None:
    """``sar-bulk verify`` (the command), zipfile's CRC test and Info-ZIP all accept each file."""
    verified = await run_cli(["verify", str(out)], env=cli_env())
    assert verified.code == 0, verified.explain()
    paths = sorted(out / name for name in dossier_names(out))
    assert paths, "no dossier to check"
    for path in paths:
        with zipfile.ZipFile(path) as archive:
            assert archive.testzip() is None, path.name
    if shutil.which("unzip") is None:
        return  # Info-ZIP is not installed here: only this reader's check is left out
    for path in paths:
        code, output = await run_tool("unzip", "-tq", str(path))
        assert code == 0, f"unzip -t {path.name}: {output}"


def in_process_config(org: str, contacts: Path, out: Path, **flags: str) -> RunConfig:
    """A RunConfig built the way the command builds it, from flag texts."""
    given: dict[str, Any] = {
        "org": org,
        "auth": "static-token",
        "contacts": str(contacts),
        "out": str(out),
        "retry_base": "0.05",
        "retry_cap": "0.5",
        "rate": "1000",
    }
    given.update(flags)
    settings = resolve(RUN_OPTIONS, flags=given, environ={}, config_file=None)
    return RunConfig.from_settings(settings, {})


# ----- chaos ---------------------------------------------------------------------------------


def chaos_simulator(
    seed: int, *, fault_share: float, token_lifetime: float | None = None
) -> SimulatorConfig:
    """``fault_share`` of requests meet a fault, spread evenly over the six kinds (5xx with and
    without HTML, dropped connections, answers 2 s late, malformed 200s). Pages are small so that
    ordinary contacts page too, and one heavier contact pages through 150 interactions."""
    each = fault_share / 6
    return SimulatorConfig(
        seed=seed,
        heavy_fraction=0.0,
        heavy_contacts={contact_ids(1, seed + 1000)[0]: 150},
        page_size=8,
        token_lifetime=token_lifetime,
        fault_500=each,
        fault_502=each,
        fault_503=each,
        fault_drop=each,
        fault_slow=each,
        fault_malformed=each,
        slow_seconds=2.0,  # past the runs' --timeout 1
    )


@pytest.mark.slow
async def test_ten_percent_faults_and_expiring_tokens_end_exact(tmp_path: Path) -> None:
    config = chaos_simulator(11, fault_share=0.10, token_lifetime=0.5)
    contacts = contact_ids(14, 11) + list(config.heavy_contacts)
    csv = write_contacts(tmp_path / "contacts.csv", contacts)
    out = tmp_path / "out"
    credential = RotatingCredential("sim-chaos")
    async with Simulator(config) as sim:
        run = in_process_config(sim.base_url, csv, out, timeout="1", window="8")
        outcome = await execute_run(
            run,
            credential,
            credential_name="RotatingCredential",
            progress_out=None,
            out=io.StringIO(),
            install_signal_handlers=False,
        )
        counters = sim.counters()["total"]
        assert outcome.code == ExitCode.OK, outcome.summary
        compared = assert_dossiers_exact(out, sim.dataset, contacts)
    assert compared > 150  # the heavy contact alone pages through 150
    # The premises: every kind of fault happened, and tokens expired and were replaced.
    assert all(counters["faults"][kind] > 0 for kind in counters["faults"]), counters["faults"]
    assert counters["unauthorized"] > 0
    assert credential.calls > 1
    report = read_report(out)
    assert report["outcome"] == "complete"
    assert report["totals"]["faults"] > 0
    assert report["totals"]["succeeded"] == len(contacts)
    await assert_zip_consumers_accept(out)


@pytest.mark.slow
async def test_eight_percent_faults_through_the_command_end_exact(tmp_path: Path) -> None:
    config = chaos_simulator(12, fault_share=0.08)
    contacts = contact_ids(10, 12) + list(config.heavy_contacts)
    csv = write_contacts(tmp_path / "contacts.csv", contacts)
    out = tmp_path / "out"
    async with Simulator(config) as sim:
        # With a date range too: the pages that come back after a retry must be the same slice.
        dates = ("--date-from", "2021-03-01", "--date-to", "12-31-2023")
        args = run_args(sim.base_url, csv, out, "--timeout", "1", *dates)
        result = await run_cli(args, env=token_env())
        faults = sim.counters()["total"]["faults"]
        assert result.code == ExitCode.OK, result.explain()
        compared = assert_dossiers_exact(
            out, sim.dataset, contacts, date_from=date(2021, 3, 1), date_to=date(2023, 12, 31)
        )
        everything = sum(sim.dataset.count(c, t) for c in contacts for t in ALL_TYPES)
    assert 0 < compared < everything  # the range did leave some interactions out
    assert sum(faults.values()) > 0
    assert read_report(out)["outcome"] == "complete"
    await assert_zip_consumers_accept(out)
