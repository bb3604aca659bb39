"""Secrets never leave: a server that echoes the bearer token cannot make it reach any exit.

The simulator's ``echo-token`` kind answers every request about a contact with a 400 whose
Dataverse error message holds the bearer token it received, bare (no "Bearer" before it), so
only a redactor that knows the token's value can catch it. After the run, the token must not be
in stdout, stderr, the logs, the reports (latest and history) or the state file's bytes (WAL
included), and the contact must have failed with a reason.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import structlog
from cli_support import run_args, run_cli, token_env
from support import RotatingCredential, contact_ids, read_report, run_config, run_engine, write_csv

from sar_bulk.logs import REDACTED, SecretRedactor, configure_logging, secrets_from_environ
from sar_bulk.run.runner import ExitCode
from sar_bulk.simulator import Simulator, SimulatorConfig
from sar_bulk.sources.interaction_types import InteractionType

TYPES = f"{InteractionType.EmailSent},{InteractionType.WebsiteVisited}"
# Not JWT-shaped and (in the in-process test) not in any environment variable: only the token
# registered as the credential issued it can be redacted.
USER = "sim-echoed"
ENV_TOKEN = "sim-envtoken.ECHO-CANARY-424242"


def _echo_simulator(hostile: str, seed: int) -> SimulatorConfig:
    return SimulatorConfig(seed=seed, heavy_fraction=0.0, hostile_contacts={hostile: "echo-token"})


def _files_holding(root: Path, secret: str) -> list[str]:
    """Every file under ``root`` (state, WAL, reports, dossiers) whose bytes hold ``secret``."""
    return sorted(
        str(path.relative_to(root))
        for path in root.rglob("*")
        if path.is_file() and secret.encode() in path.read_bytes()
    )


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    """structlog and the standard library's logging, as JSON lines at debug, into a buffer."""
    stream = io.StringIO()
    configure_logging(fmt="json", level="debug", stream=stream)
    try:
        yield stream
    finally:
        logging.getLogger().handlers.clear()
        structlog.reset_defaults()
        structlog.contextvars.clear_contextvars()


async def test_a_token_echoed_by_the_server_reaches_no_output_and_fails_the_contact(
    tmp_path: Path, json_log: io.StringIO, capsys: pytest.CaptureFixture[str]
) -> None:
    good, hostile = contact_ids(2, 91)
    csv = write_csv(tmp_path / "contacts.csv", ["ContactId", good, hostile])
    out = tmp_path / "out"
    credential = RotatingCredential(USER)
    async with Simulator(_echo_simulator(hostile, 91)) as sim:
        config = run_config(sim, csv, out, types=TYPES)
        outcome = await run_engine(config, credential)
        assert sim.counters()["total"]["requests"] > 0
    issued = [f"{USER}.{n}" for n in range(1, credential.calls + 1)]
    assert issued, "no token was issued, so the check below would prove nothing"

    assert outcome.code == ExitCode.INCOMPLETE
    report = read_report(out)
    assert [c["contact_id"] for c in report["failed_contacts"]] == [hostile]
    reasons = report["failed_contacts"][0]["reasons"]
    assert reasons
    assert all(reasons.values())
    # The server's message is kept (it says what went wrong), with the token blanked out.
    assert any(REDACTED in reason for reason in reasons.values()), reasons
    printed = capsys.readouterr()
    logged = json_log.getvalue()
    assert "contact.failed" in logged  # the failure was logged, so the log was checked
    for token in issued:
        assert token not in outcome.summary
        assert token not in printed.out
        assert token not in printed.err
        assert token not in logged
        assert _files_holding(out, token) == []
    state_files = sorted(p.name for p in (out / ".sar-bulk").iterdir())
    assert "state.sqlite" in state_files


@pytest.mark.slow
async def test_the_command_keeps_an_echoed_env_token_out_of_every_exit(tmp_path: Path) -> None:
    good, hostile = contact_ids(2, 92)
    csv = write_csv(tmp_path / "contacts.csv", ["ContactId", good, hostile])
    out = tmp_path / "out"
    async with Simulator(_echo_simulator(hostile, 92)) as sim:
        args = run_args(sim.base_url, csv, out, "--types", TYPES)
        result = await run_cli(
            [*args, "--log-level", "debug", "--log-format", "json"], env=token_env(ENV_TOKEN)
        )
    assert result.code == ExitCode.INCOMPLETE, result.explain()
    events = [orjson.loads(line) for line in result.stderr.splitlines() if line.strip()]
    assert any(e.get("event") == "contact.failed" for e in events)
    for secret in (ENV_TOKEN, "ECHO-CANARY"):
        assert secret not in result.stdout
        assert secret not in result.stderr
        assert _files_holding(out, secret) == []
    report = read_report(out)
    assert [c["contact_id"] for c in report["failed_contacts"]] == [hostile]


def test_the_redactor_blanks_jwt_shapes_and_values_added_later() -> None:
    redactor = SecretRedactor()
    jwt = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl"
    assert redactor.scrub(f"got {jwt} back") == f"got {REDACTED} back"
    assert redactor.scrub("token sim-late.12345 seen") == "token sim-late.12345 seen"
    redactor.add("sim-late.12345")
    assert redactor.scrub("token sim-late.12345 seen") == f"token {REDACTED} seen"
    document = {"reasons": {"EmailSent": "echo sim-late.12345"}, "list": ["sim-late.12345", 3]}
    assert redactor.scrub_value(document) == {
        "reasons": {"EmailSent": f"echo {REDACTED}"},
        "list": [REDACTED, 3],
    }


def test_every_secret_variable_is_registered_and_paths_are_not() -> None:
    environ = {
        "SAR_BULK_TOKEN": " tok-value-1 ",
        "AZURE_CLIENT_SECRET": "client-secret-2",
        "AZURE_CLIENT_CERTIFICATE_PASSWORD": "cert-password-3",
        "SAR_BULK_PROXY_PASSWORD": "proxy-password-4",
        "AZURE_FEDERATED_TOKEN_FILE": "/var/run/token",
        "SAR_BULK_ORG": "https://contoso.crm4.dynamics.com",
        "HOME_TOKEN": "not-ours-5",
    }
    assert sorted(secrets_from_environ(environ)) == [
        "cert-password-3",
        "client-secret-2",
        "proxy-password-4",
        "tok-value-1",
    ]


def test_standard_library_records_carry_the_run_id(json_log: io.StringIO) -> None:
    structlog.contextvars.bind_contextvars(run_id="20240304T000000Z-1")
    logging.getLogger("aiohttp.client").warning("connection reset by %s", "peer")
    (line,) = json_log.getvalue().splitlines()
    event = orjson.loads(line)
    assert event["run_id"] == "20240304T000000Z-1"
    assert event["event"] == "connection reset by peer"
