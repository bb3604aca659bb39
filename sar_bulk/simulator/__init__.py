"""A local stand-in for Dataverse's ``msdyncrm_LoadInteractionsPublic`` action.

Tests, benchmarks and the demo run sar-bulk against it over real loopback HTTP. It answers the way
the documented API does (request shape, double-encoded ``Data``, ``NextSkipToken`` paging, error
shape, 401/403/404, service-protection 429s with ``Retry-After``) and adds seeded faults, latency
and a deterministic synthetic org whose contents ``Dataset`` exposes as ground truth::

    async with Simulator(SimulatorConfig(seed=3, request_limit=20, window_seconds=1)) as sim:
        ...  # POST f"{sim.base_url}/api/data/v9.0/msdyncrm_LoadInteractionsPublic"
        expected = list(sim.dataset.interactions(contact_id, "EmailSent"))

It imports nothing from the client side of sar-bulk, so it cannot share a client's mistakes.
"""

from sar_bulk.simulator.app import create_app
from sar_bulk.simulator.config import FAULT_KINDS, RetryAfterFormat, SimulatorConfig
from sar_bulk.simulator.dataset import Dataset
from sar_bulk.simulator.protection import Limit, ServiceProtection, Throttled, Ticket
from sar_bulk.simulator.server import Simulator, serve_forever
from sar_bulk.simulator.skiptoken import Position, SkipTokenCodec

__all__ = [
    "FAULT_KINDS",
    "Dataset",
    "Limit",
    "Position",
    "RetryAfterFormat",
    "ServiceProtection",
    "Simulator",
    "SimulatorConfig",
    "SkipTokenCodec",
    "Throttled",
    "Ticket",
    "create_app",
    "serve_forever",
]
