"""Issue 8 over real loopback HTTP: Retry-After is untrusted, waiting is bounded, an unreachable
org stops the run, and throttling shows on the progress line.

Each misbehaviour is a hostile kind of the simulator (``sar_bulk/simulator/hostile.py``) bound to
one contact, so the test knows exactly which requests misbehave.
"""

from __future__ import annotations

import asyncio
import io
import re
import socket
import time
from pathlib import Path

import pytest
from cli_support import run_args, run_cli, token_env
from structlog.testing import capture_logs
from support import (
    RotatingCredential,
    client_rig,
    contact_ids,
    read_report,
    run_config,
    run_engine,
    unlimited,
    write_csv,
)

from sar_bulk.dataverse.client import DataverseClient, Query
from sar_bulk.dataverse.fetcher import Fetcher, FetchStats
from sar_bulk.dataverse.retry import RetryPolicy
from sar_bulk.dataverse.throttle import Throttle, ThrottleSettings
from sar_bulk.errors import RetryBudgetSpent
from sar_bulk.run.progress import format_progress
from sar_bulk.run.report import RunTotals
from sar_bulk.run.runner import ExitCode, execute_run
from sar_bulk.simulator import Simulator, SimulatorConfig
from sar_bulk.sources.interaction_types import InteractionType
from sar_bulk.sources.interactions import PROBE_CONTACT

VICTIM, BYSTANDER = contact_ids(2, seed=8)


def fetcher_for(
    client: DataverseClient, settings: ThrottleSettings, policy: RetryPolicy
) -> Fetcher:
    """The run's fetcher on the loop's clock, with these settings."""
    loop = asyncio.get_running_loop()
    return Fetcher(client, Throttle(settings, clock=loop.time), policy)


@pytest.mark.parametrize(
    "kind", ["retry-after-negative", "retry-after-garbage", "retry-after-past-date"]
)
async def test_a_retry_after_that_cannot_be_true_gets_the_default_wait(kind: str) -> None:
    config = SimulatorConfig(seed=1, hostile_contacts={VICTIM: kind})
    async with client_rig(config) as rig:
        fetcher = fetcher_for(
            rig.client,
            ThrottleSettings(rate=1000.0, default_retry_after=0.3, max_jitter=0.0),
            RetryPolicy(budget=1.0),
        )
        pair = fetcher.for_pair(1)
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(RetryBudgetSpent) as caught:
            await pair.fetch(Query(VICTIM, InteractionType.EmailSent), None, 1)
        took = loop.time() - started
        # The gate opens again for everyone else: a bystander is served.
        page = await fetcher.for_pair(2).fetch(Query(BYSTANDER, InteractionType.EmailSent), None, 1)
    # Waits of 0.3 s (not 0: a client that trusted them would hammer the org) until the next
    # one would pass the budget of 1 s: 429s at about 0, 0.3, 0.6 and 0.9 s.
    assert fetcher.stats.throttled == 4, fetcher.stats
    assert 0.85 <= took < 5.0
    assert pair.waited == pytest.approx(0.9, abs=0.05)
    assert "retry budget of 1 s" in str(caught.value)
    assert caught.value.status == 429
    assert page.interactions is not None


async def test_a_huge_retry_after_is_clamped_and_the_pair_gives_up_within_its_budget() -> None:
    config = SimulatorConfig(seed=1, hostile_contacts={VICTIM: "retry-after-huge"})
    async with client_rig(config) as rig:
        fetcher = fetcher_for(
            rig.client,
            ThrottleSettings(rate=1000.0, retry_after_cap=0.5, max_jitter=0.0),
            RetryPolicy(budget=1.2),
        )
        loop = asyncio.get_running_loop()
        started = loop.time()
        with capture_logs() as logs, pytest.raises(RetryBudgetSpent) as caught:
            await fetcher.for_pair(1).fetch(Query(VICTIM, InteractionType.EmailSent), None, 1)
        took = loop.time() - started
    assert fetcher.stats.throttled == 3  # waits 0.5 + 0.5, then 0.5 more would pass 1.2
    assert 0.95 <= took < 5.0
    clamped = [e for e in logs if e["event"] == "throttle.retry_after_clamped"]
    assert len(clamped) == 3
    assert clamped[0]["retry_after"] == 1_000_000_000.0
    assert clamped[0]["cap"] == 0.5
    assert "retry budget of 1.2 s" in str(caught.value)


async def test_a_huge_retry_after_cannot_hang_a_run(tmp_path: Path) -> None:
    # Default cap (300 s) and a 5 s budget: the pause is over the budget, so every pair that
    # would wait for it fails at once, with a reason, instead of the run sleeping for 31 years.
    ids = [*contact_ids(3, seed=9), VICTIM]
    async with Simulator(unlimited(seed=2, hostile_contacts={VICTIM: "retry-after-huge"})) as sim:
        csv = write_csv(tmp_path / "c.csv", ids)
        config = run_config(sim, csv, tmp_path / "out", types="EmailSent", retry_budget=5)
        started = time.monotonic()
        outcome = await asyncio.wait_for(run_engine(config), 60)
        took = time.monotonic() - started
    assert took < 30.0
    assert outcome.code == ExitCode.INCOMPLETE
    report = read_report(tmp_path / "out")
    failed = {entry["contact_id"]: entry["reasons"] for entry in report["failed_contacts"]}
    reason = failed[VICTIM]["interactions/EmailSent"]
    assert re.search(r"would take 30[01]\.\d s more", reason), reason
    assert "retry budget of 5 s" in reason
    assert not (tmp_path / "out" / f"{VICTIM}.zip").exists()


async def test_a_429_met_by_the_pre_flight_call_pauses_the_run_too(tmp_path: Path) -> None:
    # The pre-flight call meets an honest 429 (Retry-After: 60). Dataverse extends the penalty
    # of a client that keeps sending while throttled, so the run must not send anything before
    # the minute is over: with a 5 s budget, every pair fails at once, naming the pause, and
    # the org sees no request but the probe.
    ids = contact_ids(3, seed=11)
    hostile = unlimited(seed=2, hostile_contacts={PROBE_CONTACT: "throttled"})
    async with Simulator(hostile) as sim:
        csv = write_csv(tmp_path / "c.csv", ids)
        config = run_config(sim, csv, tmp_path / "out", types="EmailSent", retry_budget=5)
        outcome = await asyncio.wait_for(run_engine(config), 60)
        counted = sim.counters()["total"]
    assert counted["requests"] == 1, counted  # the probe, nothing sent during its pause
    assert outcome.code == ExitCode.INCOMPLETE
    report = read_report(tmp_path / "out")
    failed = {entry["contact_id"]: entry["reasons"] for entry in report["failed_contacts"]}
    assert set(failed) == set(ids)
    for reasons in failed.values():
        assert re.search(r"would take (59|6\d)\.\d s more", reasons["interactions/EmailSent"])


async def test_a_run_told_the_exact_limit_meets_no_429(tmp_path: Path) -> None:
    # Dataverse's limit scaled to 200 requests per 10 s (20/s); the run is told --rate 20.
    # The pacer's bound is rate x T + 2 in any T s (it keeps its schedule through wake-ups late
    # by less than an interval), so its 1 % margin covers a window of 200 and more: Dataverse's
    # is 6,000. A window of 20 (1 s) met a 429 on a loaded machine.
    config = SimulatorConfig(seed=3, request_limit=200, window_seconds=10.0)
    async with Simulator(config) as sim:
        csv = write_csv(tmp_path / "c.csv", contact_ids(6, seed=10))
        run = run_config(sim, csv, tmp_path / "out", rate=20)
        outcome = await run_engine(run)
        counters = sim.counters()["total"]
    assert outcome.code == ExitCode.OK
    assert counters["requests"] >= 220  # eleven seconds' worth: more than one window
    assert counters["throttled"] == 0


async def test_the_progress_line_shows_the_pause_and_ends_at_100_percent(tmp_path: Path) -> None:
    # 30 requests per 2 s: the run is paused by real 429s with a Retry-After of a second or two.
    config = SimulatorConfig(seed=4, request_limit=30, window_seconds=2.0)
    async with Simulator(config) as sim:
        csv = write_csv(tmp_path / "c.csv", contact_ids(2, seed=11))
        run = run_config(sim, csv, tmp_path / "out", rate=1000)
        screen = io.StringIO()
        outcome = await execute_run(
            run,
            RotatingCredential(),
            credential_name="RotatingCredential",
            progress_out=screen,
            out=io.StringIO(),
        )
    assert outcome.code == ExitCode.OK
    lines = [line.strip() for line in screen.getvalue().replace("\n", "\r").split("\r") if line]
    assert any("s: service protection" in line and "paused" in line for line in lines), lines
    assert lines[-1].startswith("contacts 2/2 (100 %)"), lines[-1]
    assert "paused" not in lines[-1]


def closed_port() -> int:
    """A loopback port nothing listens on: bound, then closed."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


async def test_a_closed_port_stops_the_run_quickly_with_exit_3(tmp_path: Path) -> None:
    port = closed_port()
    csv = write_csv(tmp_path / "c.csv", contact_ids(20, seed=12))
    started = time.monotonic()
    result = await run_cli(
        run_args(f"http://127.0.0.1:{port}", csv, tmp_path / "out"), env=token_env()
    )
    took = time.monotonic() - started
    assert result.code == 3, result.explain()
    assert took < 30.0
    assert f"127.0.0.1:{port}" in result.stderr, result.explain()
    assert "unreachable" in result.stderr, result.explain()
    assert "Transient" not in result.stderr + result.stdout


async def test_check_says_unreachable_for_a_closed_port() -> None:
    port = closed_port()
    result = await run_cli(
        ["check", "--auth", "static-token", "--org", f"http://127.0.0.1:{port}"],
        env=token_env(),
    )
    assert result.code == 3, result.explain()
    assert f"127.0.0.1:{port}: unreachable:" in result.stdout, result.explain()


async def test_an_org_that_goes_away_mid_run_stops_it(tmp_path: Path) -> None:
    ids = contact_ids(30, seed=13)
    sim = Simulator(unlimited(seed=5, latency=0.02))
    await sim.start()
    host = sim.base_url.removeprefix("http://")
    try:
        csv = write_csv(tmp_path / "c.csv", ids)
        # Fast retries, as the reliability tests use: a type gives up within about a second.
        config = run_config(sim, csv, tmp_path / "out", rate=200)
        running = asyncio.ensure_future(run_engine(config))
        while sim.counters()["total"]["ok"] < 100:  # noqa: ASYNC110 (polls the simulator)
            await asyncio.sleep(0.01)
        answered = sim.counters()["total"]["requests"]
    finally:
        await sim.close()  # the port now refuses connections
    gone = time.monotonic()
    outcome = await asyncio.wait_for(running, 60)
    took = time.monotonic() - gone
    assert outcome.code == ExitCode.REFUSED
    assert took < 30.0
    report = read_report(tmp_path / "out")
    assert report["outcome"] == "stopped"
    assert f"no connection to {host}" in report["stopped_by"]
    attempted_after = report["totals"]["requests"] - answered
    # At --rate 200 with fast retries; at the default 20/s it is a few dozen.
    assert attempted_after < 300, attempted_after
    # Contacts were not burned one by one: at most those whose last type was failing anyway.
    assert report["totals"]["failed"] <= 5, report["failed_contacts"]


def totals(**counts: int) -> RunTotals:
    value = RunTotals()
    for name, count in counts.items():
        setattr(value, name, count)
    return value


def test_the_progress_total_leaves_out_what_this_run_does_not_fetch() -> None:
    # 100 lines: 10 rejected, 5 duplicates, 20 of other shards, 15 done by an earlier run.
    running = totals(
        rows_read=60,
        rejected=10,
        duplicates=5,
        other_shards=20,
        contacts=25,
        skipped_done=15,
        succeeded=8,
        failed=2,
    )
    line = format_progress(running, FetchStats(), expected=100, rate=3.0, elapsed=10.0)
    assert line.startswith("contacts 10/50 (20 %) (2 failed, 10 rejected, 15 done before)")
    assert "ETA 0m40s" in line
    assert "paused" not in line
    paused = format_progress(running, FetchStats(), expected=100, rate=0, elapsed=1, paused=11.2)
    assert "| paused 12 s: service protection |" in paused


def test_the_last_progress_line_is_100_percent_even_when_lines_overcounted() -> None:
    # The line count said 12 (blank lines), 10 contacts were really there and are finished.
    done = totals(rows_read=10, contacts=10, succeeded=9, failed=1)
    line = format_progress(done, FetchStats(), expected=12, rate=1.0, elapsed=5.0, final=True)
    assert line.startswith("contacts 10/10 (100 %)")
    unknown = format_progress(done, FetchStats(), expected=None, rate=1.0, elapsed=5.0)
    assert unknown.startswith("contacts 10 (1 failed")
