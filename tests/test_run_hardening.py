"""The run side under awkward conditions: a stop that comes while the run is still starting, a
damaged state file, and what the report and metrics say after a resume.

Real SQLite files, the simulator over loopback, and the command as a real process where the
exit code and the printed message are what is being checked.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path

from support import RotatingCredential, contact_ids, run_config, unlimited, write_csv

from sar_bulk.config import RunConfig
from sar_bulk.dataverse.auth import TokenProvider
from sar_bulk.dataverse.client import DataverseClient
from sar_bulk.dataverse.fetcher import Fetcher
from sar_bulk.dataverse.http import OrgHttp, Timeouts, create_session
from sar_bulk.dataverse.throttle import Throttle
from sar_bulk.run.engine import Engine
from sar_bulk.simulator import Simulator
from sar_bulk.sources.base import SourceDeps
from sar_bulk.sources.interactions import InteractionsSource


@asynccontextmanager
async def _engine(config: RunConfig) -> AsyncIterator[Engine]:
    """An engine over the action's source, with a real session to the simulator."""
    loop = asyncio.get_running_loop()
    async with (
        TokenProvider(RotatingCredential(), config.org.scope) as tokens,
        create_session(Timeouts()) as session,
    ):
        http = OrgHttp(session, config.org, tokens)
        fetcher = Fetcher(
            DataverseClient(http), Throttle(config.throttle, clock=loop.time), config.retry
        )
        deps = SourceDeps(
            http, fetcher, config.source_settings, datetime.now, loop.time, asyncio.sleep
        )
        yield Engine(config, [InteractionsSource(deps)])


def _hold_write_lock(path: Path, release: threading.Event, held: threading.Event) -> None:
    """Another process's long write: hold the state file's write lock until ``release``."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        held.set()
        release.wait(30)
        conn.execute("ROLLBACK")
    finally:
        conn.close()


async def test_a_stop_while_the_run_starts_up_ends_it_before_any_contact(tmp_path: Path) -> None:
    # SIGTERM (a pod evicted, a node drained) may come while the run still waits for its state
    # file: that stop must hold once the file is free, not be forgotten.
    ids = contact_ids(12)
    async with Simulator(unlimited(seed=7)) as sim:
        csv = write_csv(tmp_path / "c.csv", ["ContactId", *ids])
        config = run_config(sim, csv, tmp_path / "out")
        async with _engine(config) as first:
            await first.run()  # creates the state file (and does nothing: all done after it)
        for dossier in (tmp_path / "out").glob("*.zip"):
            dossier.unlink()  # so a second run would have every contact to fetch again
        sim.reset_counters()
        release, held = threading.Event(), threading.Event()
        holder = threading.Thread(target=_hold_write_lock, args=(config.state, release, held))
        holder.start()
        try:
            assert await asyncio.to_thread(held.wait, 10)
            async with _engine(config) as engine:
                running = asyncio.create_task(engine.run())
                await asyncio.sleep(0.3)  # the run waits for the state file's lock
                assert not running.done()
                engine.request_stop("SIGTERM")
                release.set()
                result = await asyncio.wait_for(running, 20)
        finally:
            release.set()
            await asyncio.to_thread(holder.join)
        fetched = sim.counters()["ok_requests_by_contact"]
    assert result.interrupted_by == "SIGTERM"
    assert result.totals.succeeded == 0
    assert not fetched, "contacts were fetched after the run was told to stop"
    assert not list((tmp_path / "out").glob("*.zip"))
