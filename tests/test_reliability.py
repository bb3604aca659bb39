"""Reliability under chaos: mixed faults and an expiring token still end in exact dossiers.

The harness the ``test_reliability_*`` modules share lives in ``support`` (in-process runs,
contact lists, exactness checks) and ``cli_support`` (the command as a real process).
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest
from cli_support import assert_zip_consumers_accept, run_args, run_cli, token_env
from support import (
    RotatingCredential,
    assert_exact_dossiers,
    contact_ids,
    read_report,
    run_config,
    run_engine,
    write_csv,
)

from sar_bulk.run.runner import ExitCode
from sar_bulk.simulator import Simulator, SimulatorConfig
from sar_bulk.sources.interaction_types import ALL_TYPES


def chaos_simulator(
    seed: int, *, fault_share: float, token_lifetime: float | None = None
) -> SimulatorConfig:
    """``fault_share`` of requests meet a fault, spread evenly over the seven kinds (5xx with and
    without HTML, dropped connections, answers 2 s late, malformed 200s, answers lost after the
    request was carried out). Pages are small so that ordinary contacts page too, and one
    heavier contact pages through 150 interactions."""
    each = fault_share / 7
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
        fault_lost=each,
        slow_seconds=2.0,  # past the runs' --timeout 1
    )


@pytest.mark.slow
async def test_ten_percent_faults_and_expiring_tokens_end_exact(tmp_path: Path) -> None:
    config = chaos_simulator(11, fault_share=0.10, token_lifetime=0.5)
    contacts = contact_ids(14, 11) + list(config.heavy_contacts)
    csv = write_csv(tmp_path / "contacts.csv", ["ContactId", *contacts])
    out = tmp_path / "out"
    credential = RotatingCredential("sim-chaos")
    async with Simulator(config) as sim:
        # The same fast retries and pace as the command runs get (cli_support.FAST).
        run = run_config(
            sim, csv, out, retry_base=0.05, retry_cap=0.5, rate=1000, timeout=1, window=8
        )
        outcome = await run_engine(run, credential)
        counters = sim.counters()["total"]
        assert outcome.code == ExitCode.OK, outcome.summary
        compared = assert_exact_dossiers(sim.dataset, out, contacts)
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
    csv = write_csv(tmp_path / "contacts.csv", ["ContactId", *contacts])
    out = tmp_path / "out"
    async with Simulator(config) as sim:
        # With a date range too: the pages that come back after a retry must be the same slice.
        dates = ("--date-from", "2021-03-01", "--date-to", "12-31-2023")
        args = run_args(sim.base_url, csv, out, "--timeout", "1", *dates)
        result = await run_cli(args, env=token_env())
        faults = sim.counters()["total"]["faults"]
        assert result.code == ExitCode.OK, result.explain()
        compared = assert_exact_dossiers(
            sim.dataset, out, contacts, date_from=date(2021, 3, 1), date_to=date(2023, 12, 31)
        )
        everything = sum(sim.dataset.count(c, t) for c in contacts for t in ALL_TYPES)
    assert 0 < compared < everything  # the range did leave some interactions out
    assert sum(faults.values()) > 0
    assert read_report(out)["outcome"] == "complete"
    await assert_zip_consumers_accept(out)
