"""A local stand-in for a Dataverse org: the retired action and today's Web API.

Tests, benchmarks and the demo run sar-bulk against it over real loopback HTTP. It serves the
seed's ``msdyncrm_LoadInteractionsPublic`` action (request shape, double-encoded ``Data``,
``NextSkipToken`` paging) and, per ``org_kind``, the Web API v9.2 tables a 2026 cloud org answers
subject requests from (contacts, leads, accounts, activities, real-time consent, and the
``msdynmkt_gdprrequest`` export lifecycle with chunked file download; see webapi.py). Both share
the error shape, 401/403/404, service-protection 429s with ``Retry-After``, seeded faults and
latency. Ground truth::

    async with Simulator(SimulatorConfig(seed=3, org_kind="realtime")) as sim:
        expected = list(sim.dataset.interactions(contact_id, "EmailSent"))   # the action
        truth = sim.rows.truth(contact_id)          # the contact's Dataverse rows
        data = sim.realtime.export_file(truth.identifiers[0])   # gdpr_output.json, exact bytes

It imports nothing from the client side of sar-bulk, so it cannot share a client's mistakes.
"""

from sar_bulk.simulator.app import create_app
from sar_bulk.simulator.config import FAULT_KINDS, RetryAfterFormat, SimulatorConfig
from sar_bulk.simulator.dataset import Dataset
from sar_bulk.simulator.protection import Limit, ServiceProtection, Throttled, Ticket
from sar_bulk.simulator.realtime import GdprRequest, Options, Realtime
from sar_bulk.simulator.rows import ContactTruth, OrgRows
from sar_bulk.simulator.server import Simulator, serve_forever
from sar_bulk.simulator.skiptoken import Position, SkipTokenCodec

__all__ = [
    "FAULT_KINDS",
    "ContactTruth",
    "Dataset",
    "GdprRequest",
    "Limit",
    "Options",
    "OrgRows",
    "Position",
    "Realtime",
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
