"""``sar-bulk demo``: the whole job, end to end, against the built-in simulator.

It starts the simulator in this process on a free loopback port, runs the engine over the sample
contact list that ships with the package (200 contacts, three of them heavy), writes dossiers to
the output folder, verifies every one of them and prints the summary and what each source found.
No credentials and no network beyond loopback.

By default the simulated org is a cloud org as it is today (``--org-kind realtime``): the action
is retired, so the answer comes from the contact's Dataverse rows and real-time journeys' export
requests (which the simulator completes after a few seconds). ``--org-kind outbound`` is an org
of the outbound-marketing era, ``both`` has everything, ``dataverse`` is a Sales/Service org.
The simulator's limits are scaled in time (a 10-second window) and the engine is told a slightly
higher rate than the simulator allows, so pacing and a throttle or two are visible within about
a minute.
"""

from __future__ import annotations

import asyncio
import csv
import dataclasses
import os
import stat
import zipfile
from collections import Counter
from collections.abc import Iterable
from importlib import resources
from pathlib import Path
from typing import TextIO

import orjson

from sar_bulk.answer import Statement
from sar_bulk.answer.sample import sample_statement
from sar_bulk.config import RUN_OPTIONS, RunConfig, resolve
from sar_bulk.dataverse.auth import StaticTokenCredential
from sar_bulk.dossier.verify import iter_dossiers, verify_dossier
from sar_bulk.guids import canonical_guid
from sar_bulk.run.runner import ExitCode, execute_run
from sar_bulk.run.stop_signals import StopSignals
from sar_bulk.simulator import Simulator, SimulatorConfig
from sar_bulk.simulator.tables import OrgKind

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
    org_kind="realtime",
    realtime_delay=3.0,
)

# What the engine is told: a little more than the simulator allows, as happens against an org
# whose limits are lower than the documented defaults.
DEMO_RATE = 330.0
SAMPLE: Statement = sample_statement()


def demo_contacts() -> Path:
    """The sample contact list shipped with the package (also linked from configs/)."""
    return Path(str(resources.files("sar_bulk") / "data" / "demo-contacts.csv"))


async def run_demo(
    out_dir: Path,
    *,
    progress_out: TextIO | None,
    out: TextIO,
    org_kind: OrgKind = "realtime",
    statement: Statement | None = SAMPLE,
) -> int:
    """Run the demo into ``out_dir`` against an org of ``org_kind``; returns the exit code.

    ``statement`` is the controller's statement the answers carry: by default a made-up
    company's, named as a sample; ``sar-bulk demo --config FILE`` passes the file's own
    (None when the file has no ``[controller]``: the answers then say it is missing).
    """
    simulated = dataclasses.replace(DEMO_SIMULATOR, org_kind=org_kind)
    print(
        f"sar-bulk demo: a simulated {_KIND_WORDS[org_kind]}, {simulated.request_limit} requests "
        f"per {simulated.window_seconds:g} s; engine told {DEMO_RATE:g} requests/s",
        file=out,
    )
    await asyncio.to_thread(_remove_earlier_dossiers, out_dir)
    async with Simulator(simulated) as simulator:
        flags = {
            "org": simulator.base_url,
            "contacts": str(demo_contacts()),
            "out": str(out_dir),
            "rate": str(DEMO_RATE),
            "restart": True,
            "auth": "static-token",
            "realtime_poll": "1",
        }
        settings = resolve(RUN_OPTIONS, flags=flags, environ={}, config_file=None)
        settings["statement"] = statement
        config = RunConfig.from_settings(settings, {})
        with StopSignals(asyncio.get_running_loop()) as signals:
            outcome = await execute_run(
                config,
                StaticTokenCredential("sim-demo.0"),
                credential_name="StaticTokenCredential (demo)",
                progress_out=progress_out,
                out=out,
                signals=signals,
            )
        counters = simulator.counters()["total"]
    print(
        f"simulator saw {counters['requests']} requests: {counters['ok']} answered, "
        f"{counters['throttled']} throttled (429), max {counters['max_in_flight']} in flight",
        file=out,
    )
    if outcome.report is not None:
        for line in _sources_said(outcome.report):
            print(line, file=out)
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
    for line in _found_by_source(r.path for r in results if r.ok):
        print(line, file=out)
    return ExitCode.INCOMPLETE if bad else outcome.code


def _remove_earlier_dossiers(out_dir: Path) -> None:
    """Remove the dossiers an earlier demo left in ``out_dir`` (its own contacts' only).

    Each demo's simulator listens on a new port, so its org URL - part of the question a dossier
    answers - is new: a run never silently replaces a dossier that answers another question, so
    every contact of a second demo in the same folder failed. The demo's contacts are synthetic
    ids of its own list, and only regular files at their dossier names are removed, in a
    folder that is one itself (a link there is refused by the run: nothing is removed first).
    """
    try:
        if not stat.S_ISDIR(os.lstat(out_dir).st_mode):
            return
    except OSError:
        return  # no folder yet: nothing to remove
    with demo_contacts().open(encoding="utf-8", newline="") as handle:
        rows = csv.reader(handle)
        next(rows, None)  # the header
        for row in rows:
            try:
                contact = canonical_guid(row[0])
            except (ValueError, IndexError):
                continue
            for name in (f"{contact}.zip", f"{contact}.zip.age"):
                path = out_dir / name
                try:
                    if stat.S_ISREG(os.lstat(path).st_mode):
                        path.unlink()
                except OSError:
                    continue  # none there, or out_dir is no folder: the run's checks say so


_KIND_WORDS = {
    "realtime": "cloud org as it is today (action retired, real-time journeys)",
    "outbound": "org of the outbound-marketing era (the action, no real-time journeys)",
    "both": "org with the action and real-time journeys",
    "dataverse": "Dataverse org without marketing (Sales, Service)",
}


def _sources_said(report: Path) -> list[str]:
    """What each source's pre-flight probe said, first sentence only."""
    probes = orjson.loads(report.read_bytes()).get("sources", [])
    lines = ["sources:"]
    for probe in probes:
        detail = str(probe.get("detail") or "").split(". ")[0]
        lines.append(
            f"  {probe['source']}: {probe['availability']}" + (f" ({detail})" * bool(detail))
        )
    return lines if probes else []


def _found_by_source(dossiers: Iterable[Path]) -> list[str]:
    """What each source found, summed over the dossiers' manifests (rows, files, contacts)."""
    rows: Counter[str] = Counter()
    files: Counter[str] = Counter()
    contacts: Counter[str] = Counter()
    for path in dossiers:
        with zipfile.ZipFile(path) as archive:
            manifest = orjson.loads(archive.read("manifest.json"))
        for source in manifest["sources"]:
            name = source["source"]
            found = False
            for part in source["parts"]:
                for entry in part["entries"]:
                    found = True
                    if entry["kind"] == "rows":
                        rows[name] += entry["rows"] or 0
                    else:
                        files[name] += 1
            contacts[name] += found
    if not contacts:
        return []
    lines = ["what each source found:"]
    for name in contacts:
        held = " and ".join(
            f"{count:,} {noun}"
            for count, noun in ((rows[name], "rows"), (files[name], "files"))
            if count
        )
        lines.append(f"  {name}: {held}, for {contacts[name]} contacts")
    return lines
