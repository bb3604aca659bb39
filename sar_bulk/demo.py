"""``sar-bulk demo``: the whole job, end to end, against the built-in simulator.

It starts the simulator in this process on a free loopback port, runs the engine over the sample
contact list that ships with the package (200 contacts, three of them heavy), writes dossiers to
the output folder, verifies every one of them and prints the summary. No credentials and no
network beyond loopback. The simulator's limits are scaled in time (a 10-second window) and the
engine is told a slightly higher rate than the simulator allows, so pacing and a throttle or two
are visible within well under a minute.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path
from typing import TextIO

from sar_bulk.answer.sample import sample_statement
from sar_bulk.config import RUN_OPTIONS, RunConfig, resolve
from sar_bulk.dataverse.auth import StaticTokenCredential
from sar_bulk.dossier.verify import iter_dossiers, verify_dossier
from sar_bulk.run.runner import ExitCode, execute_run
from sar_bulk.simulator import Simulator, SimulatorConfig

__all__ = ["DEMO_SIMULATOR", "demo_contacts", "run_demo"]

DEMO_SIMULATOR = SimulatorConfig(
    seed=2026,
    heavy_contacts={
        "f38b2ffc-80a4-4f5a-91c9-bc701e7ea419": 4000,
        "99dd251d-e512-4482-b929-2d22e255accb": 2500,
        "8c3d5f16-9293-4e8f-888b-28756bad6be2": 1500,
    },
    heavy_fraction=0.0,
    request_limit=3000,
    window_seconds=10.0,
    retry_after_format="fractional",
    dop_hint=16,
    latency=0.002,
    latency_jitter=0.004,
)
# What the engine is told: a little more than the simulator allows, as happens against an org
# whose limits are lower than the documented defaults.
DEMO_RATE = 330.0


def demo_contacts() -> Path:
    """The sample contact list shipped with the package (also linked from configs/)."""
    return Path(str(resources.files("sar_bulk") / "data" / "demo-contacts.csv"))


async def run_demo(out_dir: Path, *, progress_out: TextIO | None, out: TextIO) -> int:
    """Run the demo into ``out_dir``; returns the exit code."""
    print(
        f"sar-bulk demo: simulator with {DEMO_SIMULATOR.request_limit} requests per "
        f"{DEMO_SIMULATOR.window_seconds:g} s; engine told {DEMO_RATE:g} requests/s",
        file=out,
    )
    async with Simulator(DEMO_SIMULATOR) as simulator:
        flags = {
            "org": simulator.base_url,
            "contacts": str(demo_contacts()),
            "out": str(out_dir),
            "rate": str(DEMO_RATE),
            "restart": True,
            "auth": "static-token",
        }
        settings = resolve(RUN_OPTIONS, flags=flags, environ={}, config_file=None)
        # A made-up company's statement, named as a sample, so the demo's answers are complete.
        settings["statement"] = sample_statement()
        config = RunConfig.from_settings(settings, {})
        outcome = await execute_run(
            config,
            StaticTokenCredential("sim-demo.0"),
            credential_name="StaticTokenCredential (demo)",
            progress_out=progress_out,
            out=out,
        )
        counters = simulator.counters()["total"]
    print(
        f"simulator saw {counters['requests']} requests: {counters['ok']} answered, "
        f"{counters['throttled']} throttled (429), max {counters['max_in_flight']} in flight",
        file=out,
    )
    if outcome.code not in (ExitCode.OK, ExitCode.INCOMPLETE):
        return outcome.code
    results = [verify_dossier(path) for path in iter_dossiers([out_dir])]
    bad = [r for r in results if not r.ok]
    print(
        f"verified {len(results)} dossiers in {out_dir}{os.sep}: "
        + ("all valid" if not bad else f"{len(bad)} INVALID"),
        file=out,
    )
    for result in bad:
        print(f"  {result.path.name}: {'; '.join(result.problems)}", file=out)
    return ExitCode.INCOMPLETE if bad else outcome.code
