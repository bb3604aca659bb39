"""The ``sar-bulk`` command as a user runs it: subprocesses, exit codes, plain messages."""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import socket
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest
from cli_support import CLI, cli_env, run_cli, simulate_command, token_env

from sar_bulk.cli import _parser
from sar_bulk.sources.interaction_types import ALL_TYPES

TOKEN = "sim-cli.1"
NIGHTLY = Path(__file__).resolve().parent.parent / "configs" / "nightly.toml"


@pytest.fixture
async def simulator_url() -> AsyncIterator[str]:
    """``sar-bulk simulate`` in its own process on a free port, as a user would start it."""
    async with simulate_command("--seed", "3") as url:
        yield url


def _static_token(command: str, org: str, *extra: str) -> list[str]:
    """``sar-bulk COMMAND`` against ``org`` with the token from ``SAR_BULK_TOKEN``."""
    return [command, "--org", org, "--auth", "static-token", *extra]


async def test_types_prints_the_40_names_one_a_line() -> None:
    result = await run_cli(["types"])
    assert result.code == 0
    assert result.stdout.splitlines() == [t.value for t in ALL_TYPES]
    assert "EmailContainsBlacklistedLinks" in result.stdout


@pytest.mark.parametrize("command", ["run", "demo", "check", "verify", "simulate", "types"])
async def test_every_command_has_help(command: str) -> None:
    result = await run_cli([command, "--help"])
    assert result.code == 0
    assert "usage: sar-bulk" in result.stdout


async def test_no_command_is_a_usage_error() -> None:
    assert (await run_cli([])).code == 2


async def test_unknown_type_is_exit_2_with_the_valid_names(tmp_path: Path) -> None:
    result = await run_cli(
        ["run", "--org", "https://x.crm.dynamics.com", "--contacts", "c.csv", "--types", "Nope"]
    )
    assert result.code == 2
    assert "Nope" in result.stderr
    assert "EmailContainsBlacklistedLinks" in result.stderr


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--date-from", "2024-02-30"], "not a real date"),
        (["--date-from", "2024-05-02", "--date-to", "2024-05-01"], "after"),
        (["--org", "http://contoso.crm.dynamics.com"], "http"),
        (["--rate", "-1"], "--rate"),
    ],
)
async def test_bad_parameters_are_exit_2(flags: list[str], message: str) -> None:
    base = ["run", "--org", "https://x.crm.dynamics.com", "--contacts", "c.csv"]
    result = await run_cli([*base, *flags])
    assert result.code == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


async def test_missing_contacts_file_is_exit_2(simulator_url: str, tmp_path: Path) -> None:
    args = _static_token(
        "run",
        simulator_url,
        "--contacts",
        str(tmp_path / "nope.csv"),
        "--out",
        str(tmp_path / "out"),
    )
    result = await run_cli(args, env=token_env(TOKEN))
    assert result.code == 2
    assert "nope.csv" in result.stderr
    assert "Traceback" not in result.stderr


async def test_check_reports_a_working_org(simulator_url: str) -> None:
    result = await run_cli(_static_token("check", simulator_url), env=token_env(TOKEN))
    assert result.code == 0, result.stderr
    assert "ready" in result.stdout
    assert "x-ms-dop-hint: 8" in result.stdout


async def test_check_reads_the_config_file_a_run_reads(simulator_url: str) -> None:
    """``check --config`` with the shipped nightly config: a file a run uses, so it holds
    contacts, out, rate, window, retries and logging too. check read it with only its own
    three options and refused every such file ("unknown setting 'contacts'")."""
    args = _static_token("check", simulator_url, "--config", str(NIGHTLY))
    result = await run_cli(args, env=token_env(TOKEN))
    assert result.code == 0, result.stdout + result.stderr
    assert f"{simulator_url}: ready: " in result.stdout


async def test_check_names_a_refused_token_without_showing_it(simulator_url: str) -> None:
    result = await run_cli(
        _static_token("check", simulator_url), env=token_env("wrong-CANARY-token")
    )
    assert result.code == 3
    assert "token-refused" in result.stdout
    assert "StaticTokenCredential" in result.stdout
    assert "CANARY" not in result.stdout + result.stderr


async def test_check_says_plainly_that_the_action_is_gone() -> None:
    # Today's cloud org: the action is gone, the Dataverse rows and real-time journeys remain.
    async with simulate_command("--org-kind", "realtime") as url:
        result = await run_cli(_static_token("check", url), env=token_env(TOKEN))
    assert result.code == 0
    assert ": ready: " in result.stdout
    assert "interactions: missing" in result.stdout
    assert "retired" in result.stdout
    assert "records: available" in result.stdout
    assert "realtime: available" in result.stdout


async def test_run_writes_dossiers_and_a_report(simulator_url: str, tmp_path: Path) -> None:
    csv = tmp_path / "c.csv"
    csv.write_text(
        "id\n5b7e3f7b-1d3a-4f5b-9c1e-2a3b4c5d6e7f\n{0D1E2F30-4152-4637-8899-AABBCCDDEEFF}\n"
    )
    out = tmp_path / "out"
    args = _static_token(
        "run",
        simulator_url,
        "--contacts",
        str(csv),
        "--out",
        str(out),
        "--types",
        "EmailSent,WebsiteVisited",
        "--log-format",
        "json",
    )
    result = await run_cli(args, env=token_env(TOKEN))
    assert result.code == 0, result.stderr
    assert "2 dossiers written" in result.stdout
    report = orjson.loads((out / "run-report.json").read_bytes())
    assert report["schema"] == "sar-bulk/run-report/v1"
    assert report["totals"]["succeeded"] == 2
    assert report["outcome"] == "complete"
    for line in result.stderr.splitlines():
        orjson.loads(line)  # every log line is JSON
    assert oct((out / "run-report.json").stat().st_mode & 0o777) == "0o600"
    assert oct(out.stat().st_mode & 0o777) == "0o700"
    verified = await run_cli(["verify", str(out)])
    assert verified.code == 0, verified.stdout


@pytest.mark.slow
async def test_demo_runs_from_scratch_and_verifies(tmp_path: Path) -> None:
    result = await run_cli(
        ["demo", "--out", str(tmp_path / "demo"), "--no-progress"], time_limit=300
    )
    assert result.code == 0, result.stdout + result.stderr
    assert "200 dossiers written" in result.stdout
    assert "verified 200 dossiers" in result.stdout
    assert "all valid" in result.stdout
    dossiers = sorted((tmp_path / "demo").glob("*.zip"))
    assert len(dossiers) == 200
    # The demo carries a sample controller statement, named as one: no warning, a full answer.
    assert "controller.statement_missing" not in result.stdout + result.stderr
    with zipfile.ZipFile(dossiers[0]) as archive:
        page = archive.read("index.html").decode()
    assert "Contoso Demo Ltd (sample statement)" in page
    # Today's cloud org by default: the action is retired, the other two sources answer.
    assert "cloud org as it is today" in result.stdout
    assert "interactions: missing" in result.stdout + result.stderr
    assert re.search(r"records: [\d,]+ rows, for 200 contacts", result.stdout)
    assert re.search(r"realtime: [\d,]+ files, for \d+ contacts", result.stdout)


async def test_demo_of_an_outbound_org_finds_interactions(tmp_path: Path) -> None:
    result = await run_cli(
        ["demo", "--out", str(tmp_path / "demo"), "--no-progress", "--org-kind", "outbound"],
        time_limit=300,
    )
    assert result.code == 0, result.stdout + result.stderr
    assert "verified 200 dossiers" in result.stdout
    assert re.search(r"interactions: [\d,]+ rows, for \d+ contacts", result.stdout)
    assert "realtime:" not in result.stdout.split("what each source found:")[1]


async def test_the_demo_runs_again_in_its_own_folder(tmp_path: Path) -> None:
    """The README's second step (``sar-bulk demo --org-kind ...`` after ``sar-bulk demo``).

    Each demo's simulator listens on a new port, so its org URL - part of the question a
    dossier answers - differs from the last demo's: without replacing its own earlier
    dossiers, every contact of the second demo failed and the demo ended with exit 1.
    """
    args = ["demo", "--out", str(tmp_path / "demo"), "--no-progress", "--org-kind", "dataverse"]
    first = await run_cli(args, time_limit=300)
    assert first.code == 0, first.stdout + first.stderr
    again = await run_cli(args, time_limit=300)
    assert again.code == 0, again.stdout + again.stderr
    assert "200 dossiers written, 0 contacts failed" in again.stdout
    assert "verified 200 dossiers" in again.stdout
    # Its own earlier dossiers are removed first: not 200 warnings of dossiers kept or replaced.
    assert "dossier." not in again.stderr


async def test_a_demo_refused_its_out_removes_nothing_first(tmp_path: Path) -> None:
    """The demo removes its earlier dossiers before it runs, but not through a link the run
    then refuses as --out: a refused run leaves everything as it was."""
    real = tmp_path / "real"
    real.mkdir()
    kept = real / "f38b2ffc-80a4-4f5a-91c9-bc701e7ea419.zip"  # a contact of the demo's list
    kept.write_bytes(b"an earlier dossier")
    link = tmp_path / "link"
    link.symlink_to(real)
    result = await run_cli(["demo", "--out", str(link), "--no-progress"], time_limit=120)
    assert result.code == 2, result.stdout + result.stderr
    assert "symbolic link" in result.stderr
    assert kept.read_bytes() == b"an earlier dossier"


# -- what a new user meets first ------------------------------------------------------------


def _subparser(name: str) -> argparse.ArgumentParser:
    parser = _parser()
    (sub,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    found: argparse.ArgumentParser = sub.choices[name]
    return found


@pytest.mark.parametrize("command", ["run", "simulate"])
def test_every_flag_is_described_with_its_default(command: str) -> None:
    for action in _subparser(command)._actions:
        if action.dest in ("help", "config") or not action.option_strings:
            continue
        assert action.help, f"{command} {action.option_strings[0]} has no description"
        if not isinstance(action, argparse._StoreTrueAction):  # a switch is off unless given
            # "default:" or "(default ", not "default": --auth's kinds include one named default.
            said = re.search(r"default:|\(default ", action.help)
            assert said, f"{command} {action.option_strings[0]}: no default"


async def test_simulate_says_how_to_form_a_token_it_accepts() -> None:
    process = await asyncio.create_subprocess_exec(
        *CLI,
        "simulate",
        "--port",
        "0",
        "--token-prefix",
        "lab",
        env=cli_env(),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        assert process.stdout is not None
        listening = await asyncio.wait_for(process.stdout.readline(), 30)
        rule = await asyncio.wait_for(process.stdout.readline(), 30)
    finally:
        process.terminate()
        await process.wait()
    assert b"listening on http://127.0.0.1:" in listening
    assert b"starting with 'lab'" in rule
    assert b"SAR_BULK_TOKEN=lab-me.1" in rule


def _taken_port() -> socket.socket:
    probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    probe.bind(("127.0.0.1", 0))
    probe.listen()
    return probe


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--host", "192.0.2.1"], "only listens on loopback"),
        (["--host", "no-such-host.invalid"], "only listens on loopback"),
        (["--port", "70000"], "not a port number"),
        (["--port", "eighty"], "not a port number"),
        (["--port", "TAKEN"], "cannot listen on 127.0.0.1:"),
    ],
)
async def test_a_bad_simulator_address_is_one_line_and_exit_2(
    flags: list[str], message: str
) -> None:
    with _taken_port() as taken:
        port = str(taken.getsockname()[1])
        result = await run_cli(["simulate", *(port if f == "TAKEN" else f for f in flags)])
    assert result.code == 2, result.explain()
    assert len(result.stderr.splitlines()) == 1, result.explain()
    assert message in result.stderr


async def test_an_unknown_auth_kind_lists_the_valid_ones() -> None:
    result = await run_cli(["run", "--org", "https://x.crm.dynamics.com", "--auth", "bogus"])
    assert result.code == 2
    assert len(result.stderr.splitlines()) == 1
    for kind in ("client-secret", "managed-identity", "static-token"):
        assert kind in result.stderr


async def test_types_into_a_closed_pipe_ends_quietly() -> None:
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before a byte is written: `| head -0`, say
    try:
        process = await asyncio.create_subprocess_exec(
            *CLI,
            "types",
            env=cli_env(),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=write_end,
            stderr=asyncio.subprocess.PIPE,
        )
    finally:
        os.close(write_end)
    _, stderr = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 0
    assert stderr == b""
