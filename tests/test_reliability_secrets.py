"""Secrets stay secret, and runs that cannot work stop at once (exit 3) with few requests.

Recognisable fake secrets (canaries) go in through the environment; after the run, neither may
appear in what the command printed, in the report, or in the state database (its WAL included).
"""

from __future__ import annotations

import socket
from pathlib import Path

import orjson
import pytest
from cli_support import CliResult, cli_env, run_args, run_cli, token_env
from support import contact_ids, dossier_names, write_csv

from sar_bulk.run.runner import ExitCode
from sar_bulk.simulator import Simulator, SimulatorConfig
from sar_bulk.sources.interaction_types import InteractionType

TOKEN_CANARY = "sim-secret.TOKEN-CANARY-123456"
SECRET_CANARY = "CLIENT-SECRET-CANARY-987654"
REFUSED_CANARY = "bad-CANARY.1"  # the simulator accepts only tokens starting with "sim"
TYPES_FLAG = ("--types", f"{InteractionType.EmailSent},{InteractionType.WebsiteVisited}")
SIMULATOR = SimulatorConfig(seed=41, heavy_fraction=0.0)
# A refused or impossible run may spend the pre-flight call and its one retry with a fresh token.
FEW_REQUESTS = 3


def _closed_port() -> int:
    """A loopback port nothing listens on (bound once, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def _files_holding(root: Path, canaries: tuple[str, ...]) -> list[str]:
    """Every file under ``root`` (state, WAL, report, ...) whose bytes hold a canary."""
    if not root.exists():
        return []
    found = []
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p.suffix != ".zip"):
        data = path.read_bytes()
        found += [f"{path.relative_to(root)}: {c}" for c in canaries if c.encode() in data]
    return found


def _assert_not_echoed(result: CliResult, out: Path, *canaries: str) -> None:
    for canary in canaries:
        assert canary not in result.stdout, f"{canary} printed on stdout"
        assert canary not in result.stderr, f"{canary} printed on stderr"
    assert _files_holding(out, canaries) == []


@pytest.mark.slow
async def test_debug_json_logs_report_and_state_hold_no_secret(tmp_path: Path) -> None:
    contacts = contact_ids(4, 41)
    csv = write_csv(tmp_path / "contacts.csv", ["ContactId", *contacts])
    out = tmp_path / "out"
    env = token_env(TOKEN_CANARY, AZURE_CLIENT_SECRET=SECRET_CANARY)
    async with Simulator(SIMULATOR) as sim:
        args = run_args(sim.base_url, csv, out, *TYPES_FLAG)
        result = await run_cli([*args, "--log-level", "debug", "--log-format", "json"], env=env)
    assert result.code == ExitCode.OK, result.explain()
    events = [orjson.loads(line) for line in result.stderr.splitlines() if line.strip()]
    assert events, "nothing was logged, so the check below would prove little"
    assert all(isinstance(e, dict) and "event" in e for e in events)  # JSON lines, as asked
    assert dossier_names(out) == {f"{c}.zip" for c in contacts}
    state = out / ".sar-bulk"
    assert (state / "state.sqlite").is_file()
    _assert_not_echoed(result, out, TOKEN_CANARY, SECRET_CANARY, "TOKEN-CANARY")


@pytest.mark.slow  # azure-identity retries the unreachable endpoint for about 5 s
async def test_client_secret_against_an_unreachable_endpoint_exits_3_without_the_secret(
    tmp_path: Path,
) -> None:
    csv = write_csv(tmp_path / "contacts.csv", ["ContactId", *contact_ids(2, 42)])
    out = tmp_path / "out"
    nowhere = f"127.0.0.1:{_closed_port()}"
    env = cli_env(
        AZURE_TENANT_ID="00000000-0000-4000-8000-000000000001",
        AZURE_CLIENT_ID="00000000-0000-4000-8000-000000000002",
        AZURE_CLIENT_SECRET=SECRET_CANARY,
        AZURE_AUTHORITY_HOST=f"https://{nowhere}",
    )
    args = run_args(f"http://{nowhere}", csv, out)
    args[args.index("static-token")] = "client-secret"
    result = await run_cli([*args, "--log-level", "debug", "--log-format", "json"], env=env)
    assert result.code == ExitCode.REFUSED, result.explain()
    assert "ClientSecretCredential" in result.stderr  # says which credential failed
    _assert_not_echoed(result, out, SECRET_CANARY)


async def test_a_refused_token_stops_at_once_with_exit_3_and_is_never_shown(
    tmp_path: Path,
) -> None:
    csv = write_csv(tmp_path / "contacts.csv", ["ContactId", *contact_ids(20, 43)])
    out = tmp_path / "out"
    async with Simulator(SIMULATOR) as sim:
        args = run_args(sim.base_url, csv, out)
        result = await run_cli(
            [*args, "--log-level", "debug", "--log-format", "json"], env=token_env(REFUSED_CANARY)
        )
        counters = sim.counters()["total"]
    assert result.code == ExitCode.REFUSED, result.explain()
    assert "401" in result.stderr
    assert counters["requests"] <= FEW_REQUESTS, counters
    assert counters["ok"] == 0
    assert not out.exists() or not dossier_names(out)
    _assert_not_echoed(result, out, REFUSED_CANARY, "CANARY")


async def test_a_retired_action_stops_at_once_with_exit_3_and_says_why(tmp_path: Path) -> None:
    csv = write_csv(tmp_path / "contacts.csv", ["ContactId", *contact_ids(20, 44)])
    out = tmp_path / "out"
    retired = SimulatorConfig(seed=44, action_missing=True)
    async with Simulator(retired) as sim:
        result = await run_cli(run_args(sim.base_url, csv, out), env=token_env())
        counters = sim.counters()["total"]
    assert result.code == ExitCode.REFUSED, result.explain()
    assert "msdyncrm_LoadInteractionsPublic" in result.stderr
    assert "retired" in result.stderr
    assert "404" in result.stderr
    assert counters["requests"] <= FEW_REQUESTS, counters
    assert not out.exists() or not dossier_names(out)
