"""Running the simulator on loopback: an async context manager for tests, a loop for the CLI.

Usage::

    async with Simulator(SimulatorConfig(seed=1)) as sim:
        url = f"{sim.base_url}/api/data/v9.0/msdyncrm_LoadInteractionsPublic"
        ...
        assert sim.counters()["total"]["ok"] == 1

Only loopback addresses are accepted: the simulator hands out anyone's synthetic "personal data"
to any token with the right prefix, so it must never listen on a network.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

from aiohttp import web

from sar_bulk.simulator.app import STATE, SimulatorState, create_app
from sar_bulk.simulator.config import SimulatorConfig
from sar_bulk.simulator.dataset import Dataset
from sar_bulk.simulator.realtime import Realtime
from sar_bulk.simulator.rows import ContactTruth, OrgRows
from sar_bulk.simulator.skiptoken import SkipTokenCodec
from sar_bulk.simulator.tables import TABLES

__all__ = ["Simulator", "serve_forever"]

# In-flight handlers (a "slow" fault, say) get this long to finish when the server stops.
_SHUTDOWN_SECONDS = 0.25


def _require_loopback(host: str) -> None:
    if host == "localhost":
        return
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ValueError(f"the simulator only listens on loopback addresses, not {host!r}")


class Simulator:
    """The simulated Dataverse org, served over HTTP on a loopback port while in use."""

    def __init__(
        self,
        config: SimulatorConfig | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        _require_loopback(host)
        self.config = config if config is not None else SimulatorConfig()
        self.host = host
        self.port = port
        self.app = create_app(self.config, clock=clock, wall_clock=wall_clock)
        self._runner: web.AppRunner | None = None
        self._base_url: str | None = None

    @property
    def _state(self) -> SimulatorState:
        return self.app[STATE]

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT`` without a trailing slash (only while running)."""
        if self._base_url is None:
            raise RuntimeError("the simulator is not running")
        return self._base_url

    @property
    def dataset(self) -> Dataset:
        """Ground truth: what the org holds and the server sends."""
        return self._state.dataset

    @property
    def rows(self) -> OrgRows:
        """Ground truth of the Dataverse tables: ``rows.truth(contact)`` is all the org holds."""
        return self._state.rows

    @property
    def realtime(self) -> Realtime:
        """Ground truth of real-time exports: ``realtime.export_file(input)`` is the exact file."""
        return self._state.realtime

    def truth(self, contact_id: str) -> ContactTruth | None:
        """Exactly what this org's Web API holds about a contact, as its ``org_kind`` serves it.

        The contact's Dataverse rows, and where real-time journeys is installed its consent rows
        and the subject requests (previous ones and those made through the API) for each of its
        e-mails and phones; ``None`` when the contact does not exist. Export files are not in it:
        ``realtime.export_file(identifier)`` gives their exact bytes.
        """
        truth = self.rows.truth(contact_id)
        if truth is None:
            return None
        if not TABLES["msdynmkt_gdprrequests"].present(self.config.org_kind):
            return dataclasses.replace(truth, consents={})
        realtime = self.realtime
        requests = {
            i: [realtime.row(r).values for r in realtime.by_input(i)] for i in truth.identifiers
        }
        return dataclasses.replace(truth, gdpr_requests=requests)

    @property
    def skip_tokens(self) -> SkipTokenCodec:
        """The codec the server issues tokens with (tests mint far-away pages with it)."""
        return self._state.skip_tokens

    def counters(self) -> dict[str, Any]:
        """The same snapshot as ``GET /_sim/counters``."""
        return self._state.counters.snapshot()

    def reset_counters(self) -> None:
        self._state.counters.reset()

    async def start(self) -> None:
        if self._runner is not None:
            raise RuntimeError("the simulator is already running")
        runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=_SHUTDOWN_SECONDS)
        await runner.setup()
        try:
            await web.TCPSite(runner, self.host, self.port).start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        host, port = runner.addresses[0][:2]
        shown = f"[{host}]" if ":" in host else host
        self._base_url = f"http://{shown}:{port}"

    async def close(self) -> None:
        runner, self._runner, self._base_url = self._runner, None, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> Simulator:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


async def serve_forever(
    config: SimulatorConfig,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    ready: Callable[[str], None] | None = None,
) -> None:
    """Serve until cancelled; ``ready`` gets the base URL once the port is open."""
    async with Simulator(config, host=host, port=port) as simulator:
        if ready is not None:
            ready(simulator.base_url)
        await asyncio.Event().wait()
