"""What the simulator has answered, in total and per identity, for tests and benchmarks.

Served as JSON at ``GET /_sim/counters`` and by ``Simulator.counters()``; ``POST /_sim/reset``
zeroes everything except the requests still in flight.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from sar_bulk.simulator.config import FAULT_KINDS

__all__ = ["ENDPOINT_KINDS", "Counters", "Visit"]

_LIMITS = ("requests", "execution-time", "concurrency")
_OUTCOMES = ("ok", "unauthorized", "forbidden", "bad_request", "not_found")
# Endpoint kinds, so a benchmark can compute e.g. the share of polling among all requests.
ENDPOINT_KINDS = ("action", "query", "metadata", "create", "poll", "download")


@dataclass(slots=True)
class _Stats:
    requests: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    throttled: Counter[str] = field(default_factory=Counter)
    faults: Counter[str] = field(default_factory=Counter)
    kinds: Counter[str] = field(default_factory=Counter)
    in_flight: int = 0
    max_in_flight: int = 0

    def enter(self) -> None:
        self.requests += 1
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def snapshot(self) -> dict[str, Any]:
        view: dict[str, Any] = {"requests": self.requests}
        view.update({name: self.outcomes[name] for name in _OUTCOMES})
        view["throttled"] = sum(self.throttled.values())
        view["throttled_by_limit"] = {name: self.throttled[name] for name in _LIMITS}
        view["faults"] = {kind: self.faults[kind] for kind in FAULT_KINDS}
        view["by_kind"] = {kind: self.kinds[kind] for kind in ENDPOINT_KINDS}
        view["in_flight"] = self.in_flight
        view["max_in_flight"] = self.max_in_flight
        return view


class Counters:
    """Tallies per scope (the total and each identity) plus ok answers per contact and type."""

    def __init__(self) -> None:
        self._total = _Stats()
        self._identities: dict[str, _Stats] = {}
        self._ok_by_contact: Counter[str] = Counter()
        self._ok_by_contact_type: dict[str, Counter[str]] = {}

    def visit(self) -> Visit:
        """Start counting one request (call ``close`` on the result when it is answered)."""
        self._total.enter()
        return Visit(self)

    def requests_of(self, identity: str) -> int:
        """How many requests ``identity`` has sent so far (cheap: for every request)."""
        stats = self._identities.get(identity)
        return stats.requests if stats is not None else 0

    def snapshot(self) -> dict[str, Any]:
        return {
            "total": self._total.snapshot(),
            "identities": {
                name: stats.snapshot() for name, stats in sorted(self._identities.items())
            },
            "ok_requests_by_contact": dict(sorted(self._ok_by_contact.items())),
            "ok_requests_by_contact_type": {
                contact: dict(sorted(types.items()))
                for contact, types in sorted(self._ok_by_contact_type.items())
            },
        }

    def reset(self) -> None:
        def fresh(old: _Stats) -> _Stats:
            return _Stats(in_flight=old.in_flight, max_in_flight=old.in_flight)

        self._total = fresh(self._total)
        self._identities = {
            name: fresh(stats) for name, stats in self._identities.items() if stats.in_flight
        }
        self._ok_by_contact.clear()
        self._ok_by_contact_type.clear()

    def _scopes(self, identity: str | None) -> list[_Stats]:
        scopes = [self._total]
        if identity is not None:
            scopes.append(self._identities.setdefault(identity, _Stats()))
        return scopes


class Visit:
    """One request being counted. Scopes are looked up on every call so ``reset`` is safe."""

    __slots__ = ("_counters", "_identity", "_kind")

    def __init__(self, counters: Counters) -> None:
        self._counters = counters
        self._identity: str | None = None
        self._kind: str | None = None

    def identify(self, identity: str) -> None:
        """The request belongs to ``identity`` from now on (counted there as well)."""
        self._identity = identity
        scope = self._counters._scopes(identity)[-1]
        scope.enter()
        if self._kind is not None:
            scope.kinds[self._kind] += 1

    def kind(self, name: str) -> None:
        """The request's endpoint kind (``ENDPOINT_KINDS``); call once, before ``identify``."""
        self._kind = name
        for stats in self._counters._scopes(self._identity):
            stats.kinds[name] += 1

    def outcome(self, name: str) -> None:
        """One of ``ok``, ``unauthorized``, ``forbidden``, ``bad_request``, ``not_found``."""
        for stats in self._counters._scopes(self._identity):
            stats.outcomes[name] += 1

    def throttled(self, limit: str) -> None:
        for stats in self._counters._scopes(self._identity):
            stats.throttled[limit] += 1

    def fault(self, kind: str) -> None:
        for stats in self._counters._scopes(self._identity):
            stats.faults[kind] += 1

    def served(self, contact_id: str, interaction_type: str) -> None:
        """An ok page went out for this (contact, type)."""
        self.outcome("ok")
        counters = self._counters
        counters._ok_by_contact[contact_id] += 1
        counters._ok_by_contact_type.setdefault(contact_id, Counter())[interaction_type] += 1

    def close(self) -> None:
        for stats in self._counters._scopes(self._identity):
            stats.in_flight -= 1
