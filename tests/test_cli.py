"""The ``sar-bulk`` command as a user runs it: subprocesses, exit codes, plain messages."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from sar_bulk.interaction_types import ALL_TYPES

SIMULATOR_URL = re.compile(r"http://127\.0\.0\.1:\d+")


def sar_bulk(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sar_bulk.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        check=False,
    )


@pytest.fixture
def simulator_url() -> Iterator[str]:
    """``sar-bulk simulate`` in its own process on a free port, as a user would start it."""
    with subprocess.Popen(
        [sys.executable, "-m", "sar_bulk.cli", "simulate", "--port", "0", "--seed", "3"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    ) as process:
        try:
            assert process.stdout is not None
            line = process.stdout.readline()
            match = SIMULATOR_URL.search(line)
            assert match, f"the simulator did not say where it listens: {line!r}"
            yield match.group(0)
        finally:
            process.terminate()
            process.wait(timeout=10)


def test_types_prints_the_40_names_one_a_line() -> None:
    result = sar_bulk("types")
    assert result.returncode == 0
    assert result.stdout.splitlines() == [t.value for t in ALL_TYPES]
    assert "EmailContainsBlacklistedLinks" in result.stdout


@pytest.mark.parametrize("command", ["run", "demo", "check", "verify", "simulate", "types"])
def test_every_command_has_help(command: str) -> None:
    result = sar_bulk(command, "--help")
    assert result.returncode == 0
    assert "usage: sar-bulk" in result.stdout


def test_no_command_is_a_usage_error() -> None:
    assert sar_bulk().returncode == 2


def test_unknown_type_is_exit_2_with_the_valid_names(tmp_path: Path) -> None:
    result = sar_bulk(
        "run", "--org", "https://x.crm.dynamics.com", "--contacts", "c.csv", "--types", "Nope"
    )
    assert result.returncode == 2
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
def test_bad_parameters_are_exit_2(flags: list[str], message: str) -> None:
    base = ["run", "--org", "https://x.crm.dynamics.com", "--contacts", "c.csv"]
    result = sar_bulk(*base, *flags)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_contacts_file_is_exit_2(simulator_url: str, tmp_path: Path) -> None:
    result = sar_bulk(
        "run",
        "--org",
        simulator_url,
        "--auth",
        "static-token",
        "--contacts",
        str(tmp_path / "nope.csv"),
        "--out",
        str(tmp_path / "out"),
        env={"SAR_BULK_TOKEN": "sim-cli.1"},
    )
    assert result.returncode == 2
    assert "nope.csv" in result.stderr
    assert "Traceback" not in result.stderr


def test_check_reports_a_working_org(simulator_url: str) -> None:
    result = sar_bulk(
        "check",
        "--org",
        simulator_url,
        "--auth",
        "static-token",
        env={"SAR_BULK_TOKEN": "sim-cli.1"},
    )
    assert result.returncode == 0, result.stderr
    assert "ready" in result.stdout
    assert "x-ms-dop-hint: 8" in result.stdout


def test_check_names_a_refused_token_without_showing_it(simulator_url: str) -> None:
    result = sar_bulk(
        "check",
        "--org",
        simulator_url,
        "--auth",
        "static-token",
        env={"SAR_BULK_TOKEN": "wrong-CANARY-token"},
    )
    assert result.returncode == 3
    assert "token-refused" in result.stdout
    assert "StaticTokenCredential" in result.stdout
    assert "CANARY" not in result.stdout + result.stderr


def test_check_says_plainly_that_the_action_is_gone() -> None:
    with subprocess.Popen(
        [sys.executable, "-m", "sar_bulk.cli", "simulate", "--port", "0", "--action-missing"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    ) as process:
        try:
            assert process.stdout is not None
            match = SIMULATOR_URL.search(process.stdout.readline())
            assert match
            result = sar_bulk(
                "check",
                "--org",
                match.group(0),
                "--auth",
                "static-token",
                env={"SAR_BULK_TOKEN": "sim-cli.1"},
            )
        finally:
            process.terminate()
            process.wait(timeout=10)
    assert result.returncode == 3
    assert "action-missing" in result.stdout
    assert "retired" in result.stdout


def test_run_writes_dossiers_and_a_report(simulator_url: str, tmp_path: Path) -> None:
    csv = tmp_path / "c.csv"
    csv.write_text(
        "id\n5b7e3f7b-1d3a-4f5b-9c1e-2a3b4c5d6e7f\n{0D1E2F30-4152-4637-8899-AABBCCDDEEFF}\n"
    )
    out = tmp_path / "out"
    result = sar_bulk(
        "run",
        "--org",
        simulator_url,
        "--auth",
        "static-token",
        "--contacts",
        str(csv),
        "--out",
        str(out),
        "--types",
        "EmailSent,WebsiteVisited",
        "--log-format",
        "json",
        env={"SAR_BULK_TOKEN": "sim-cli.1"},
    )
    assert result.returncode == 0, result.stderr
    assert "2 dossiers written" in result.stdout
    report = orjson.loads((out / "run-report.json").read_bytes())
    assert report["schema"] == "sar-bulk/run-report/v1"
    assert report["totals"]["succeeded"] == 2
    assert report["outcome"] == "complete"
    for line in result.stderr.splitlines():
        orjson.loads(line)  # every log line is JSON
    assert oct((out / "run-report.json").stat().st_mode & 0o777) == "0o600"
    assert oct(out.stat().st_mode & 0o777) == "0o700"
    verified = sar_bulk("verify", str(out))
    assert verified.returncode == 0, verified.stdout


@pytest.mark.slow
def test_demo_runs_from_scratch_and_verifies(tmp_path: Path) -> None:
    result = sar_bulk("demo", "--out", str(tmp_path / "demo"), "--no-progress", timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "200 dossiers written" in result.stdout
    assert "verified 200 dossiers" in result.stdout
    assert "all valid" in result.stdout
    assert len(list((tmp_path / "demo").glob("*.zip"))) == 200
