"""Every knob of the simulator in one frozen value, with Dataverse's documented defaults.

Usage::

    config = SimulatorConfig(seed=7, request_limit=20, window_seconds=1.0, fault_502=0.05)

The service-protection defaults are the ones Microsoft documents for Dataverse (6,000 requests and
1,200 s of execution time per identity in a sliding 5-minute window, 52 concurrent requests); the
execution-time limit is off unless set, because most tests want to reason about request counts only.
Fault rates are probabilities per admitted request and together may not exceed 1.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

from sar_bulk.simulator.guids import canonical_guid
from sar_bulk.simulator.tables import ORG_KINDS, TABLES, OrgKind

__all__ = ["FAULT_KINDS", "OrgKind", "RetryAfterFormat", "SimulatorConfig"]

RetryAfterFormat = Literal["seconds", "fractional", "http-date"]

# The fault kinds in the order their rates are laid out on [0, 1) when one is drawn.
# (New kinds go last: a seed then meets the same faults as before for the kinds it already had.)
FAULT_KINDS: tuple[str, ...] = ("500", "502", "503", "drop", "slow", "malformed", "lost")


def _frozen_heavy(mapping: Mapping[str, int]) -> Mapping[str, int]:
    heavy = {canonical_guid(contact): int(total) for contact, total in mapping.items()}
    if any(total < 0 for total in heavy.values()):
        raise ValueError("heavy_contacts totals must be non-negative")
    return MappingProxyType(heavy)


@dataclass(frozen=True, slots=True)
class SimulatorConfig:
    """How the simulated org behaves: its data, its limits, its faults and its speed."""

    # Data: everything the org holds is a pure function of the seed.
    seed: int = 0
    heavy_contacts: Mapping[str, int] = field(default_factory=dict)
    heavy_fraction: float = 0.01
    page_size: int = 500

    # Authentication and authorisation.
    token_prefix: str = "sim"  # noqa: S105 - a prefix that marks fake tokens, not a secret
    token_lifetime: float | None = None
    forbidden_identities: frozenset[str] = frozenset()
    # Identities whose security role is removed mid-run: after this many of their requests,
    # every later call of the action is a 403 ({"sim-a": 20}).
    revoked_after: Mapping[str, int] = field(default_factory=dict)
    action_missing: bool = False

    # Service protection, per identity.
    request_limit: int = 6000
    # A request limit of their own for some identities ({"sim-b": 30}); the others: request_limit.
    identity_limits: Mapping[str, int] = field(default_factory=dict)
    window_seconds: float = 300.0
    concurrency_limit: int = 52
    execution_time_limit: float | None = None
    concurrency_retry_after: float = 1.0
    retry_after_format: RetryAfterFormat = "seconds"

    # Response headers and speed.
    dop_hint: int | None = 8
    latency: float = 0.0
    latency_jitter: float = 0.0

    # Faults: probability per admitted request.
    fault_500: float = 0.0
    fault_502: float = 0.0
    fault_503: float = 0.0
    fault_drop: float = 0.0
    fault_slow: float = 0.0
    fault_malformed: float = 0.0
    # The request is carried out (a row created), then the connection closes before the answer.
    fault_lost: float = 0.0
    slow_seconds: float = 5.0

    # The Web API (see webapi.py): what kind of org, which rows exist, the real-time exports.
    # Default "both" keeps the seed's action and serves every table; the demo uses "realtime".
    org_kind: OrgKind = "both"
    missing_contact_share: float = 0.0
    missing_contacts: frozenset[str] = frozenset()
    # Contacts whose contacts({id}) answer is another contact's row (a misrouted cache, a proxy
    # mixing answers up): a client must fail them, never file one person's data as another's.
    misfiled_contacts: frozenset[str] = frozenset()
    # Tables without read privilege: "msdynmkt_contactpointconsent4" (for every identity) or
    # "sim-a:msdynmkt_contactpointconsent4" (for the identity sim-a only).
    forbidden_tables: frozenset[str] = frozenset()
    max_page_size: int = 5000
    realtime_delay: float = 30.0
    realtime_never_share: float = 0.0
    realtime_never_inputs: frozenset[str] = frozenset()
    file_chunk_size: int = 1_048_576  # the most bytes one ranged download answer carries
    whole_file_limit: int = 16_777_216  # larger files refuse a download without Range

    # Hostile answers bound to contacts (see hostile.py): by contact, or a share of contacts.
    hostile_contacts: Mapping[str, str] = field(default_factory=dict)
    hostile_share: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # A read-only copy with canonical keys, so lookups match what the server canonicalises.
        object.__setattr__(self, "heavy_contacts", _frozen_heavy(self.heavy_contacts))
        object.__setattr__(self, "forbidden_identities", frozenset(self.forbidden_identities))
        object.__setattr__(
            self, "missing_contacts", frozenset(canonical_guid(c) for c in self.missing_contacts)
        )
        object.__setattr__(
            self,
            "misfiled_contacts",
            frozenset(canonical_guid(c) for c in self.misfiled_contacts),
        )
        object.__setattr__(self, "forbidden_tables", frozenset(self.forbidden_tables))
        known = {table.logical for table in TABLES.values()}
        strange = sorted(e for e in self.forbidden_tables if e.rpartition(":")[2] not in known)
        if strange:
            raise ValueError(
                f"forbidden_tables names unknown table(s) {strange}; "
                f"known: {', '.join(sorted(known))}"
            )
        object.__setattr__(self, "realtime_never_inputs", frozenset(self.realtime_never_inputs))
        if self.org_kind not in ORG_KINDS:
            raise ValueError(f"org_kind must be one of {', '.join(ORG_KINDS)}")
        if (
            not 0.0 <= self.missing_contact_share <= 1.0
            or not 0.0 <= self.realtime_never_share <= 1.0
        ):
            raise ValueError("missing_contact_share and realtime_never_share must be within [0, 1]")
        if self.max_page_size < 1 or self.file_chunk_size < 1 or self.whole_file_limit < 0:
            raise ValueError("max_page_size and file_chunk_size must be at least 1")
        if self.realtime_delay < 0:
            raise ValueError("realtime_delay must not be negative")
        object.__setattr__(
            self,
            "hostile_contacts",
            MappingProxyType({canonical_guid(c): k for c, k in self.hostile_contacts.items()}),
        )
        object.__setattr__(self, "hostile_share", MappingProxyType(dict(self.hostile_share)))
        # Imported here: hostile.py needs replies.py, which needs this module.
        from sar_bulk.simulator.hostile import KINDS

        unknown = {*self.hostile_contacts.values(), *self.hostile_share} - KINDS.keys()
        if unknown:
            raise ValueError(
                f"unknown hostile kind(s) {sorted(unknown)}; known: {', '.join(sorted(KINDS))}"
            )
        if any(not 0.0 <= share <= 1.0 for share in self.hostile_share.values()):
            raise ValueError("every hostile share must be within [0, 1]")
        if self.page_size < 1:
            raise ValueError("page_size must be at least 1")
        if not 0.0 <= self.heavy_fraction <= 1.0:
            raise ValueError("heavy_fraction must be within [0, 1]")
        if not self.token_prefix:
            raise ValueError("token_prefix must not be empty")
        if self.token_lifetime is not None and self.token_lifetime <= 0:
            raise ValueError("token_lifetime must be positive when set")
        object.__setattr__(self, "identity_limits", MappingProxyType(dict(self.identity_limits)))
        if any(limit < 1 for limit in self.identity_limits.values()):
            raise ValueError("every identity_limits value must be at least 1")
        if self.request_limit < 1 or self.concurrency_limit < 1:
            raise ValueError("request_limit and concurrency_limit must be at least 1")
        if self.window_seconds <= 0 or self.concurrency_retry_after <= 0:
            raise ValueError("window_seconds and concurrency_retry_after must be positive")
        if self.execution_time_limit is not None and self.execution_time_limit <= 0:
            raise ValueError("execution_time_limit must be positive when set")
        if self.retry_after_format not in ("seconds", "fractional", "http-date"):
            raise ValueError("retry_after_format must be 'seconds', 'fractional' or 'http-date'")
        if min(self.latency, self.latency_jitter, self.slow_seconds) < 0:
            raise ValueError("latency, latency_jitter and slow_seconds must not be negative")
        if self.dop_hint is not None and self.dop_hint < 1:
            raise ValueError("dop_hint must be at least 1 when set")
        rates = self.fault_rates()
        if any(not 0.0 <= rate <= 1.0 for rate in rates.values()):
            raise ValueError("every fault rate must be within [0, 1]")
        if math.fsum(rates.values()) > 1.0 + 1e-9:
            raise ValueError("fault rates must add up to at most 1")

    def fault_rates(self) -> dict[str, float]:
        """The fault rates by kind, in ``FAULT_KINDS`` order."""
        return {kind: float(getattr(self, f"fault_{kind}")) for kind in FAULT_KINDS}
