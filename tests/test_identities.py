"""The identity pool (issue 11): ``[[identities]]`` parsed and checked, contacts shared between
identities, a throttled identity not slowing the others, refused identities dropped, and the
report per identity. Whole runs go over the simulator on loopback."""

from __future__ import annotations

import asyncio
import io
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from azure.core.credentials_async import AsyncTokenCredential
from cli_support import cli_env, run_args, run_cli
from prometheus_client.parser import text_string_to_metric_families
from support import RotatingCredential, contact_ids, dossier_names, read_report, write_csv

from sar_bulk.config import RUN_OPTIONS, IdentitySpec, RunConfig, resolve
from sar_bulk.dataverse.auth import AuthKind, TokenProvider, build_credential
from sar_bulk.dataverse.client import DataverseClient
from sar_bulk.dataverse.fetcher import Fetcher
from sar_bulk.dataverse.http import OrgHttp, Timeouts, create_session
from sar_bulk.dataverse.org import OrgUrl
from sar_bulk.dataverse.retry import RetryPolicy
from sar_bulk.dataverse.throttle import Throttle, ThrottleSettings
from sar_bulk.errors import ConfigError, Throttled
from sar_bulk.logs import REDACTOR, scrub
from sar_bulk.run.identities import Identity, IdentityPool, identity_environ
from sar_bulk.run.runner import ExitCode, RunOutcome, execute_run
from sar_bulk.simulator import Simulator, SimulatorConfig

TWO = """
[[identities]]
name = "a"
auth = "static-token"
env = { SAR_BULK_TOKEN = "TOKEN_A" }

[[identities]]
name = "b"
auth = "static-token"
env = { SAR_BULK_TOKEN = "TOKEN_B" }
"""


def pool_config(
    tmp_path: Path, simulator: Simulator, toml: str, contacts: int, **flags: str
) -> RunConfig:
    """A run over ``contacts`` contacts with the identities of ``toml`` (the action's source)."""
    csv = write_csv(tmp_path / "c.csv", contact_ids(contacts, seed=21))
    path = tmp_path / "pool.toml"
    path.write_text(toml, encoding="utf-8")
    given = {
        "org": simulator.base_url,
        "sources": "interactions",
        "contacts": str(csv),
        "out": str(tmp_path / "out"),
        "rate": "5000",
        "retry_base": "0.02",
        "retry_cap": "0.2",
        "timeout": "5",
        "types": "EmailSent,EmailOpened,EmailClicked,FormSubmitted",
    } | flags
    settings = resolve(RUN_OPTIONS, flags=given, environ={}, config_file=path)
    return RunConfig.from_settings(settings, {})


async def run_pool(
    config: RunConfig,
    environ: Mapping[str, str],
    *,
    make_credential: Any = build_credential,
    progress: io.StringIO | None = None,
) -> RunOutcome:
    return await execute_run(
        config,
        None,
        credential_name="identities",
        progress_out=progress,
        out=io.StringIO(),
        environ=environ,
        make_credential=make_credential,
    )


def by_name(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {row["name"]: row for row in report["identities"]}


# --- the config ------------------------------------------------------------------------------


def parse(tmp_path: Path, toml: str) -> tuple[IdentitySpec, ...]:
    path = tmp_path / "c.toml"
    path.write_text(toml, encoding="utf-8")
    settings = resolve(RUN_OPTIONS, flags={}, environ={}, config_file=path)
    return tuple(settings["identities"])


def test_identities_are_read_with_their_own_rate_and_concurrency(tmp_path: Path) -> None:
    specs = parse(
        tmp_path,
        TWO.replace('name = "b"', 'name = "b"\nrate = 10\nconcurrency = 8'),
    )
    assert [s.name for s in specs] == ["a", "b"]
    assert specs[0].auth is AuthKind.STATIC_TOKEN
    assert dict(specs[1].env) == {"SAR_BULK_TOKEN": "TOKEN_B"}
    assert (specs[0].rate, specs[0].concurrency) == (None, None)
    assert (specs[1].rate, specs[1].concurrency) == (10.0, 8)


@pytest.mark.parametrize(
    ("toml", "said"),
    [
        (TWO.replace('"b"', '"a"'), "the name(s) a appear more than once"),
        (TWO.replace('auth = "static-token"', 'auth = "password"', 1), "auth must be one of"),
        (TWO.replace('name = "a"', 'name = "a"\nsecret = "x"'), "unknown key(s) secret"),
        (TWO.replace('"TOKEN_A"', '"sim-a.1 token"'), "must name an environment variable"),
        (TWO.replace('SAR_BULK_TOKEN = "TOKEN_A"', 'AZURE_X = "X"'), "unknown variable(s)"),
        (TWO.replace('name = "a"', 'name = "a"\nrate = -1'), "rate -1 must be a number > 0"),
        (TWO.replace('name = "a"', 'name = "a"\nconcurrency = 99'), "must be at most 52"),
        (TWO.replace('name = "a"', 'name = "a b"'), "name must be letters"),
        ('identities = "a"', "must be an array of tables"),
        (TWO.replace('"static-token"', '"azure-cli"'), "more than one identity uses auth"),
    ],
)
def test_a_wrong_identities_table_is_refused_naming_it(
    tmp_path: Path, toml: str, said: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        parse(tmp_path, toml)
    assert said in str(caught.value)
    assert "[[identities]]" in str(caught.value)


def test_an_identitys_variable_that_is_not_set_is_named_never_its_value() -> None:
    spec = IdentitySpec("b", AuthKind.CLIENT_SECRET, {"AZURE_CLIENT_SECRET": "B_SECRET"})
    with pytest.raises(ConfigError) as caught:
        identity_environ(spec, {"AZURE_CLIENT_SECRET": "process-wide-secret-value"})
    message = str(caught.value)
    assert "identity 'b'" in message
    assert "B_SECRET" in message
    assert "process-wide-secret-value" not in message


def test_an_identity_sees_its_own_variables_and_no_other_secret() -> None:
    spec = IdentitySpec("a", AuthKind.CLIENT_SECRET, {"AZURE_CLIENT_SECRET": "A_SECRET"})
    environ = {
        "A_SECRET": "secret-of-identity-a-0123",
        "AZURE_CLIENT_SECRET": "the-process-secret",
        "AZURE_CLIENT_ID": "process-client",
        "AZURE_TENANT_ID": "shared-tenant",
        "PATH": "/bin",
    }
    mine = identity_environ(spec, environ)
    assert mine["AZURE_CLIENT_SECRET"] == "secret-of-identity-a-0123"
    assert "AZURE_CLIENT_ID" not in mine  # not mapped: not borrowed from the process
    assert mine["AZURE_TENANT_ID"] == "shared-tenant"
    assert mine["PATH"] == "/bin"
    assert "secret-of-identity-a-0123" not in scrub("x secret-of-identity-a-0123 y")
    assert REDACTOR  # registered with the process's redactor (the scrub above proves it)


async def test_a_missing_variable_is_exit_2_material_before_any_request(tmp_path: Path) -> None:
    async with Simulator(SimulatorConfig(seed=3)) as sim:
        config = pool_config(tmp_path, sim, TWO, 2)
        with pytest.raises(ConfigError, match=r"identity 'b'.*TOKEN_B"):
            await run_pool(config, {"TOKEN_A": "sim-a.1"})
        assert sim.counters()["total"]["requests"] == 0


# --- whole runs ------------------------------------------------------------------------------


async def test_two_identities_share_the_contacts(tmp_path: Path) -> None:
    async with Simulator(SimulatorConfig(seed=3, latency=0.005)) as sim:
        config = pool_config(tmp_path, sim, TWO, 24, window="8")
        screen = io.StringIO()
        outcome = await run_pool(
            config, {"TOKEN_A": "sim-a.1", "TOKEN_B": "sim-b.1"}, progress=screen
        )
        counted = sim.counters()["identities"]
    assert outcome.code == ExitCode.OK
    assert len(dossier_names(tmp_path / "out")) == 24
    rows = by_name(read_report(tmp_path / "out"))
    assert set(rows) == {"a", "b"}
    assert rows["a"]["contacts"] + rows["b"]["contacts"] == 24
    assert min(rows["a"]["contacts"], rows["b"]["contacts"]) >= 6  # both took a fair share
    for name in ("a", "b"):
        # The org saw each identity's requests (and its pre-flight probe, sent outside them).
        assert counted[f"sim-{name}"]["requests"] - 1 == rows[name]["requests"] > 0
        assert rows[name]["dropped"] is None
    assert "identities 2/2" in screen.getvalue()


async def test_a_throttled_identity_does_not_slow_the_other(tmp_path: Path) -> None:
    # sim-a may send 12 requests per 2 s; sim-b the documented 6,000 per 5 minutes.
    simulated = SimulatorConfig(seed=3, identity_limits={"sim-a": 12}, window_seconds=2.0)
    async with Simulator(simulated) as sim:
        config = pool_config(tmp_path, sim, TWO, 30, window="6")
        outcome = await run_pool(config, {"TOKEN_A": "sim-a.1", "TOKEN_B": "sim-b.1"})
        counted = sim.counters()["identities"]
    assert outcome.code == ExitCode.OK
    rows = by_name(read_report(tmp_path / "out"))
    assert counted["sim-a"]["throttled"] > 0
    assert counted["sim-b"]["throttled"] == 0  # a's gate never closed b's
    assert rows["b"]["throttled"] == 0
    assert rows["b"]["contacts"] > 2 * rows["a"]["contacts"]  # the free one took the work
    assert len(dossier_names(tmp_path / "out")) == 30


async def test_each_identity_gets_its_own_concurrency_from_the_shared_connection_pool(
    tmp_path: Path,
) -> None:
    # Two identities of 45 requests in flight each: 90 at once, Dataverse counts each
    # identity's on its own. The run's one session must not hold them to fewer connections
    # (then one identity's requests wait for the other's, under their own time limit).
    toml = TWO.replace(
        'env = { SAR_BULK_TOKEN = "TOKEN_A" }',
        'env = { SAR_BULK_TOKEN = "TOKEN_A" }\nconcurrency = 45',
    )
    toml = toml.replace(
        'env = { SAR_BULK_TOKEN = "TOKEN_B" }',
        'env = { SAR_BULK_TOKEN = "TOKEN_B" }\nconcurrency = 45',
    )
    async with Simulator(SimulatorConfig(seed=3, latency=0.3)) as sim:
        config = pool_config(tmp_path, sim, toml, 8, types="all")
        outcome = await run_pool(config, {"TOKEN_A": "sim-a.1", "TOKEN_B": "sim-b.1"})
        counted = sim.counters()
    assert outcome.code == ExitCode.OK
    assert counted["total"]["max_in_flight"] > 64, counted["total"]
    assert counted["total"]["throttled"] == 0


async def test_a_contact_is_not_routed_to_an_identity_whose_gate_is_closed() -> None:
    # a met a 429 (Retry-After 60 s) and its parts have ended (over their budgets), so it has
    # no queued work; b is busy but sending. A new contact must go to b: on a it would wait a
    # minute before its first request while b could serve it at once.
    now = [1000.0]
    org = OrgUrl.parse("http://127.0.0.1:9")
    async with create_session(Timeouts()) as session:

        def identity(name: str) -> Identity:
            tokens = TokenProvider(RotatingCredential(), org.scope)
            http = OrgHttp(session, org, tokens)
            throttle = Throttle(ThrottleSettings(rate=20.0), clock=lambda: now[0])
            fetcher = Fetcher(DataverseClient(http), throttle, RetryPolicy())
            return Identity(name, tokens, http, throttle, fetcher, {})

        a, b = identity("a"), identity("b")
        a.throttle.on_throttled(Throttled(None, "over the limit", retry_after=60.0))
        pool = IdentityPool((a, b))
        b.queued = 4  # parts of other contacts in flight on b: 0.2 s of work at 20/s
        assert pool.enter(1) is b, (a.load(), b.load())
        assert (a.queued, b.queued) == (0, 5)
        now[0] += 61.0  # a's gate is open again: a is the idle one
        assert pool.enter(2) is a


@pytest.mark.parametrize(
    ("simulated", "token_a"),
    [
        (SimulatorConfig(seed=3), "nosim-a.1"),  # 401: not a token of this org
        (SimulatorConfig(seed=3, forbidden_identities=frozenset({"sim-a"})), "sim-a.1"),  # 403
    ],
)
async def test_a_refused_identity_is_dropped_and_the_run_ends_on_the_other(
    tmp_path: Path, simulated: SimulatorConfig, token_a: str
) -> None:
    async with Simulator(simulated) as sim:
        config = pool_config(tmp_path, sim, TWO, 6)
        outcome = await run_pool(config, {"TOKEN_A": token_a, "TOKEN_B": "sim-b.1"})
    assert outcome.code == ExitCode.OK
    assert len(dossier_names(tmp_path / "out")) == 6
    rows = by_name(read_report(tmp_path / "out"))
    assert rows["a"]["dropped"]
    assert rows["a"]["contacts"] == 0
    assert rows["b"]["contacts"] == 6
    assert rows["b"]["dropped"] is None
    assert token_a not in str(read_report(tmp_path / "out"))


async def test_every_identity_refused_is_exit_3_naming_each(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with Simulator(SimulatorConfig(seed=3)) as sim:
        config = pool_config(tmp_path, sim, TWO, 3)
        outcome = await run_pool(config, {"TOKEN_A": "bad-a.1", "TOKEN_B": "bad-b.1"})
    assert outcome.code == ExitCode.REFUSED
    assert "no identity can run" in outcome.summary
    assert "a: " in outcome.summary
    assert "b: " in outcome.summary
    assert "bad-a.1" not in capsys.readouterr().err
    assert dossier_names(tmp_path / "out") == set()


def expiring_a(renewing: RotatingCredential) -> Any:
    """a: its static token (it expires in the simulator); b: ``renewing``, which renews (one
    instance for both runs, so none of its tokens is handed out twice)."""

    def make(kind: AuthKind, environ: Mapping[str, str]) -> AsyncTokenCredential:
        if environ.get("SAR_BULK_TOKEN") == "renewing-b":
            return renewing
        return build_credential(kind, environ)

    return make


async def test_an_identity_refused_mid_run_is_dropped_and_a_rerun_finishes(
    tmp_path: Path,
) -> None:
    # Every token lives 1 s in the simulator: a's static token dies, b fetches a fresh one.
    simulated = SimulatorConfig(seed=3, token_lifetime=1.0, latency=0.01)
    environ = {"TOKEN_A": "sim-a.1", "TOKEN_B": "renewing-b"}
    make = expiring_a(RotatingCredential("sim-b"))
    async with Simulator(simulated) as sim:
        config = pool_config(tmp_path, sim, TWO, 40, rate="60", window="4")
        first = await run_pool(config, environ, make_credential=make)
        report = read_report(tmp_path / "out")
        rows = by_name(report)
        assert first.code in (ExitCode.OK, ExitCode.INCOMPLETE)
        assert "AuthRejected" in (rows["a"]["dropped"] or "")
        assert rows["b"]["dropped"] is None
        assert rows["a"]["contacts"] > 0  # it did work before its token died
        for failed in report["failed_contacts"]:
            assert all("identity 'a' was refused" in why for why in failed["reasons"].values())
        second = await run_pool(config, environ, make_credential=make)
    assert second.code == ExitCode.OK
    assert len(dossier_names(tmp_path / "out")) == 40


async def test_an_identity_whose_role_is_removed_mid_run_is_dropped(tmp_path: Path) -> None:
    # a's security role is removed after 20 requests: every later call of the action is a 403.
    # a finishes its parts at once (each fails), so by queued work it looks the idlest
    # identity: kept in the pool, it would take nearly every contact after that and fail it.
    simulated = SimulatorConfig(seed=3, revoked_after={"sim-a": 20}, latency=0.01)
    environ = {"TOKEN_A": "sim-a.1", "TOKEN_B": "sim-b.1"}
    async with Simulator(simulated) as sim:
        config = pool_config(tmp_path, sim, TWO, 40, rate="60", window="4")
        first = await run_pool(config, environ)
        report = read_report(tmp_path / "out")
        rows = by_name(report)
        assert first.code == ExitCode.INCOMPLETE
        assert "Forbidden, HTTP 403" in (rows["a"]["dropped"] or "")
        assert rows["b"]["dropped"] is None
        # Only contacts in flight on a when its role went: at most the window.
        assert 0 < len(report["failed_contacts"]) <= 4, report["failed_contacts"]
        second = await run_pool(config, environ)
    assert second.code == ExitCode.OK
    assert len(dossier_names(tmp_path / "out")) == 40


async def test_a_403_about_some_contacts_records_drops_no_identity(tmp_path: Path) -> None:
    # Three contacts' records are out of the role's reach (a 403 about each record, the other
    # contacts answer): their parts fail, but an identity is dropped only when its 403s come
    # FORBIDDEN_TO_DROP in a row with nothing of it succeeding in between.
    contacts = contact_ids(20, seed=21)
    unreadable = {contacts[3]: "record-forbidden", contacts[9]: "record-forbidden"}
    unreadable[contacts[15]] = "record-forbidden"
    simulated = SimulatorConfig(seed=3, hostile_contacts=unreadable, latency=0.01)
    environ = {"TOKEN_A": "sim-a.1", "TOKEN_B": "sim-b.1"}
    async with Simulator(simulated) as sim:
        config = pool_config(tmp_path, sim, TWO, 20, rate="60", window="4")
        outcome = await run_pool(config, environ)
    report = read_report(tmp_path / "out")
    assert outcome.code == ExitCode.INCOMPLETE
    assert sorted(c["contact_id"] for c in report["failed_contacts"]) == sorted(unreadable)
    assert all(row["dropped"] is None for row in report["identities"]), report["identities"]
    assert len(dossier_names(tmp_path / "out")) == 17


async def test_an_export_made_by_one_identity_is_finished_by_another(tmp_path: Path) -> None:
    # Run 1 (identity a alone) creates the export requests, then gives up waiting; run 2
    # (identity b alone) finds their ids in the state and polls and downloads them.
    only_a = TWO.split("[[identities]]")[1]
    only_b = TWO.split("[[identities]]")[2]
    simulated = SimulatorConfig(seed=3, org_kind="realtime", realtime_delay=1.5)
    async with Simulator(simulated) as sim:
        common = {"sources": "realtime", "types": "all", "realtime_poll": "0.2"}
        first_config = pool_config(
            tmp_path, sim, "[[identities]]" + only_a, 2, realtime_wait="0.4", **common
        )
        first = await run_pool(first_config, {"TOKEN_A": "sim-a.1"})
        assert first.code == ExitCode.INCOMPLETE
        created = sim.counters()["identities"]["sim-a"]["by_kind"]["create"]
        assert created > 0
        await asyncio.sleep(1.5)
        second_config = pool_config(tmp_path, sim, "[[identities]]" + only_b, 2, **common)
        second = await run_pool(second_config, {"TOKEN_B": "sim-b.1"})
        counted = sim.counters()["identities"]
    assert second.code == ExitCode.OK
    assert len(dossier_names(tmp_path / "out")) == 2
    assert counted["sim-b"]["by_kind"]["create"] == 0  # nothing asked twice
    assert counted["sim-b"]["by_kind"]["download"] > 0


def test_the_example_config_reads() -> None:
    example = Path(__file__).resolve().parent.parent / "configs" / "identities.toml"
    settings = resolve(RUN_OPTIONS, flags={}, environ={}, config_file=example)
    specs = tuple(settings["identities"])
    assert [s.name for s in specs] == ["app-a", "app-b", "aks"]
    assert specs[1].auth is AuthKind.CERTIFICATE
    assert specs[1].rate == 15.0
    assert specs[2].auth is AuthKind.WORKLOAD_IDENTITY


async def test_the_command_runs_a_pool_with_metrics_per_identity(tmp_path: Path) -> None:
    config = tmp_path / "pool.toml"
    config.write_text(TWO, encoding="utf-8")
    csv = write_csv(tmp_path / "c.csv", ["ContactId", *contact_ids(6, seed=5)])
    prom = tmp_path / "sar-bulk.prom"
    async with Simulator(SimulatorConfig(seed=5, heavy_fraction=0.0)) as sim:
        # --auth static-token without SAR_BULK_TOKEN: with [[identities]] it is not used.
        args = run_args(sim.base_url, csv, tmp_path / "out", "--config", str(config))
        env = cli_env(TOKEN_A="sim-a.1", TOKEN_B="sim-b.1")
        done = await run_cli([*args, "--metrics-textfile", str(prom)], env=env)
        missing = await run_cli([*args, "--out", str(tmp_path / "o2")], env=cli_env(TOKEN_A="x"))
    assert done.code == ExitCode.OK, done.explain()
    sent = {
        sample.labels["identity"]: sample.value
        for family in text_string_to_metric_families(prom.read_text("utf-8"))
        for sample in family.samples
        if sample.name == "sar_bulk_requests_sent_total"
    }
    assert set(sent) == {"a", "b"}
    assert min(sent.values()) > 0
    assert missing.code == ExitCode.USAGE, missing.explain()
    assert "identity 'b'" in missing.stderr
    assert "TOKEN_B" in missing.stderr


def _identity_blocks(stdout: str) -> list[str]:
    """What ``check`` printed under each ``identity NAME (KIND):`` line."""
    return re.split(r"^identity ", stdout, flags=re.MULTILINE)[1:]


async def test_check_probes_every_identity_and_fails_for_a_refused_one(tmp_path: Path) -> None:
    config = tmp_path / "pool.toml"
    config.write_text(TWO, encoding="utf-8")
    async with Simulator(SimulatorConfig(seed=5, org_kind="realtime")) as sim:
        args = ["check", "--org", sim.base_url, "--config", str(config)]
        both = await run_cli(args, env=cli_env(TOKEN_A="sim-a.1", TOKEN_B="sim-b.1"))
        one = await run_cli(args, env=cli_env(TOKEN_A="sim-a.1", TOKEN_B="bad-CANARY.1"))
        unset = await run_cli(args, env=cli_env(TOKEN_A="sim-a.1"))
    assert both.code == ExitCode.OK, both.explain()
    blocks = _identity_blocks(both.stdout)
    assert [b.splitlines()[0] for b in blocks] == ["a (static-token):", "b (static-token):"]
    assert all(": ready: " in b and "realtime: available" in b for b in blocks)
    assert one.code == ExitCode.REFUSED, one.explain()
    a, b = _identity_blocks(one.stdout)
    assert ": ready: " in a
    assert "token-refused" in b
    assert "CANARY" not in one.stdout + one.stderr
    # A variable not set: said under that identity, the other one still probed.
    assert unset.code == ExitCode.USAGE, unset.explain()
    a, b = _identity_blocks(unset.stdout)
    assert ": ready: " in a
    assert "not checked" in b
    assert "TOKEN_B" in b
