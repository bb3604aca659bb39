"""What the handlers share: configuration, data, limits, counters, faults and seen tokens."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web

from sar_bulk.simulator.config import SimulatorConfig
from sar_bulk.simulator.counters import Counters
from sar_bulk.simulator.dataset import Dataset
from sar_bulk.simulator.faults import FaultPicker
from sar_bulk.simulator.protection import ServiceProtection
from sar_bulk.simulator.realtime import Realtime
from sar_bulk.simulator.rows import OrgRows
from sar_bulk.simulator.skiptoken import SkipTokenCodec

__all__ = ["STATE", "SimulatorState"]


@dataclass(slots=True)
class SimulatorState:
    """Everything the handlers share: data, limits, counters, faults and seen tokens."""

    config: SimulatorConfig
    dataset: Dataset
    protection: ServiceProtection
    counters: Counters
    faults: FaultPicker
    skip_tokens: SkipTokenCodec
    clock: Callable[[], float]
    wall_clock: Callable[[], float]
    affinity: str
    rows: OrgRows
    realtime: Realtime
    first_seen: dict[str, float] = field(default_factory=dict)

    def token_expired(self, token: str) -> bool:
        lifetime = self.config.token_lifetime
        if lifetime is None:
            return False
        now = self.clock()
        return now - self.first_seen.setdefault(token, now) > lifetime


STATE = web.AppKey("sar_bulk_simulator_state", SimulatorState)
