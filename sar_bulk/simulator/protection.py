"""Dataverse service-protection limits, per identity, with an injectable clock.

Three limits, as Dataverse documents them (defaults 6,000 requests and 1,200 s of combined
execution time in a sliding 300 s window, 52 concurrent requests):

* **requests**: a request that arrives while ``request_limit`` requests already lie in the window
  is refused (0x80072322). ``Retry-After`` is the time until enough of them leave the window.
* **execution time** (off unless ``execution_time_limit`` is set): once the handler time of the
  requests in the window adds up to more than the limit, requests are refused (0x80072321) until
  enough of it leaves the window.
* **concurrency**: a request beyond ``concurrency_limit`` in flight is refused at once
  (0x80072326) with a short, fixed ``Retry-After``.

Penalty extension (documented by Microsoft as "keeps sending while throttled gets the penalty
extended"): *every* request that reaches the check is counted into the request window, refused or
not. A client that keeps sending during its penalty keeps the window full and so pushes its own
``Retry-After`` further out; one that pauses for ``Retry-After`` is let through. Refused requests
add no execution time (they do no work), so the execution-time penalty is not extended by them.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

__all__ = ["Limit", "Remaining", "ServiceProtection", "Throttled", "Ticket"]

# Dataverse reports the time budget even when this simulator does not enforce it.
_DEFAULT_EXECUTION_SECONDS = 1200.0


class Limit(StrEnum):
    """Which limit refused a request (the names sar_bulk.errors uses too)."""

    REQUESTS = "requests"
    EXECUTION_TIME = "execution-time"
    CONCURRENCY = "concurrency"

    @property
    def code(self) -> str:
        return _CODES[self]


_CODES = {
    Limit.REQUESTS: "0x80072322",
    Limit.EXECUTION_TIME: "0x80072321",
    Limit.CONCURRENCY: "0x80072326",
}


@dataclass(frozen=True, slots=True)
class Ticket:
    """An admitted request; hand it back to ``release`` when the answer is done."""

    identity: str
    started: float


@dataclass(frozen=True, slots=True)
class Throttled:
    """A refused request: which limit, Dataverse's message, and the wait in seconds."""

    limit: Limit
    message: str
    retry_after: float


@dataclass(frozen=True, slots=True)
class Remaining:
    """What Dataverse reports in its ``x-ms-ratelimit-*-remaining-xrm-requests`` headers."""

    requests: int
    execution_ms: float


@dataclass(slots=True)
class _Usage:
    arrivals: deque[float] = field(default_factory=deque)
    executions: deque[tuple[float, float]] = field(default_factory=deque)  # (ended, seconds)
    execution_total: float = 0.0
    in_flight: int = 0


def _seconds_text(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


class ServiceProtection:
    """Admits or refuses requests per identity; not thread-safe (one event loop)."""

    def __init__(
        self,
        *,
        request_limit: int = 6000,
        window_seconds: float = 300.0,
        concurrency_limit: int = 52,
        execution_time_limit: float | None = None,
        concurrency_retry_after: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        identity_limits: Mapping[str, int] | None = None,
    ) -> None:
        self.request_limit = request_limit
        # Per-identity request limits (tests of identity pools): the others get request_limit.
        self.identity_limits = dict(identity_limits or {})
        self.window_seconds = window_seconds
        self.concurrency_limit = concurrency_limit
        self.execution_time_limit = execution_time_limit
        self.concurrency_retry_after = concurrency_retry_after
        self._clock = clock
        self._usage: dict[str, _Usage] = {}

    def admit(self, identity: str) -> Ticket | Throttled:
        """Count one arriving request and either admit it or say which limit refuses it."""
        now = self._clock()
        usage = self._usage.setdefault(identity, _Usage())
        self._expire(usage, now)
        request_limit = self.identity_limits.get(identity, self.request_limit)
        over_requests = len(usage.arrivals) >= request_limit
        usage.arrivals.append(now)
        if over_requests:
            return self._refuse_requests(usage, now, request_limit)
        limit = self.execution_time_limit
        if limit is not None and usage.execution_total > limit:
            return self._refuse_execution(usage, now, limit)
        if usage.in_flight >= self.concurrency_limit:
            return Throttled(
                Limit.CONCURRENCY,
                f"Number of concurrent requests exceeded the limit of {self.concurrency_limit}.",
                self.concurrency_retry_after,
            )
        usage.in_flight += 1
        return Ticket(identity, now)

    def release(self, ticket: Ticket) -> None:
        """The admitted request is answered: free its slot and book its execution time."""
        now = self._clock()
        usage = self._usage[ticket.identity]
        usage.in_flight -= 1
        spent = max(0.0, now - ticket.started)
        usage.executions.append((now, spent))
        usage.execution_total += spent

    def remaining(self, identity: str) -> Remaining:
        """Requests and execution milliseconds left in the identity's window right now."""
        usage = self._usage.setdefault(identity, _Usage())
        self._expire(usage, self._clock())
        budget = self.execution_time_limit or _DEFAULT_EXECUTION_SECONDS
        return Remaining(
            max(0, self.identity_limits.get(identity, self.request_limit) - len(usage.arrivals)),
            max(0.0, budget - usage.execution_total) * 1000.0,
        )

    def _expire(self, usage: _Usage, now: float) -> None:
        horizon = now - self.window_seconds
        while usage.arrivals and usage.arrivals[0] <= horizon:
            usage.arrivals.popleft()
        while usage.executions and usage.executions[0][0] <= horizon:
            usage.execution_total -= usage.executions.popleft()[1]
        if not usage.executions:
            usage.execution_total = 0.0  # no float drift once the window is empty

    def _refuse_requests(self, usage: _Usage, now: float, request_limit: int) -> Throttled:
        # The next request is admitted once fewer than request_limit arrivals remain.
        leaving = usage.arrivals[len(usage.arrivals) - request_limit]
        wait = leaving + self.window_seconds - now
        return Throttled(
            Limit.REQUESTS,
            f"Number of requests exceeded the limit of {request_limit} over time window "
            f"of {_seconds_text(self.window_seconds)} seconds.",
            wait,
        )

    def _refuse_execution(self, usage: _Usage, now: float, limit: float) -> Throttled:
        excess = usage.execution_total - limit
        freed = 0.0
        wait = self.window_seconds
        for ended, spent in usage.executions:
            freed += spent
            if freed >= excess:
                wait = ended + self.window_seconds - now
                break
        return Throttled(
            Limit.EXECUTION_TIME,
            f"Combined execution time of incoming requests exceeded limit of "
            f"{round(limit * 1000):,} milliseconds over time window of "
            f"{_seconds_text(self.window_seconds)} seconds. Decrease number of concurrent "
            f"requests or reduce the duration of requests and try again later.",
            wait,
        )
