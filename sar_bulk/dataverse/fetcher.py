"""One page through the throttle and the retry policy: the only place that decides to try again.

Usage::

    fetcher = Fetcher(client, throttle, RetryPolicy())
    pair = fetcher.for_pair(priority=contact_number)
    async for page in client.pages(query, fetch=pair.fetch):
        ...
    answer = await pair.call(lambda: http.send(context, "GET", url))   # any other request

* A throttled answer (429) is not a failed attempt: the throttle closes its gate for every task,
  and this page is sent again once it opens. The time spent waiting counts against the budget.
* A transient fault (5xx, timeout, dropped connection, malformed body) is retried with
  exponential backoff and full jitter, up to ``policy.attempts`` failures.
* Anything else (400, 403, 401 after a fresh token, 404) is final and raised at once.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from sar_bulk.dataverse.client import DataverseClient, Page, Query
from sar_bulk.dataverse.retry import RetryPolicy
from sar_bulk.dataverse.throttle import Throttle
from sar_bulk.errors import RetryableError, Throttled

__all__ = ["FetchStats", "Fetcher", "PairFetcher"]

_T = TypeVar("_T")


@dataclass(slots=True)
class FetchStats:
    """Counts for the report: every request sent, and how they ended."""

    requests: int = 0
    ok: int = 0
    throttled: int = 0
    retries: int = 0
    faults: int = 0


class Fetcher:
    """Shared by every task of one identity: the client, its throttle and the policy."""

    def __init__(
        self,
        client: DataverseClient,
        throttle: Throttle,
        policy: RetryPolicy,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self.client = client
        self.throttle = throttle
        self.policy = policy
        self.stats = FetchStats()
        self._sleep = sleep
        self._rng = rng or random.Random()

    def for_pair(self, priority: int) -> PairFetcher:
        """A fetcher for the pages of one (contact, type), with its own wait budget."""
        return PairFetcher(self, priority)


class PairFetcher:
    """Fetches the pages of one (contact, type); its waits share one budget."""

    __slots__ = ("_owner", "_priority", "waited")

    def __init__(self, owner: Fetcher, priority: int) -> None:
        self._owner = owner
        self._priority = priority
        self.waited = 0.0

    async def fetch(self, query: Query, skip_token: str | None, number: int) -> Page:
        """One page of the action (a ``PageFetcher`` for ``DataverseClient.pages``)."""
        client = self._owner.client
        return await self.call(
            lambda: client.fetch_page(query, skip_token, number), hint=lambda page: page.dop_hint
        )

    async def call(
        self,
        attempt: Callable[[], Awaitable[_T]],
        *,
        hint: Callable[[_T], int | None] | None = None,
    ) -> _T:
        """Run ``attempt`` (one request) inside the throttle, retrying what may pass.

        ``attempt`` raises the error tree: a ``Throttled`` closes the identity's gate and is
        sent again once it opens, a ``RetryableError`` backs off, anything else is final.
        ``hint`` reads the server's ``x-ms-dop-hint`` from a successful result.
        """
        owner = self._owner
        stats, policy = owner.stats, owner.policy
        failures = 0
        while True:
            try:
                async with owner.throttle.slot(self._priority):
                    stats.requests += 1
                    result = await attempt()
            except Throttled as error:
                stats.throttled += 1
                self._spend(owner.throttle.on_throttled(error), error)
                continue
            except RetryableError as error:
                stats.faults += 1
                failures += 1
                if policy.gives_up(failures):
                    raise
                delay = policy.backoff(failures, owner._rng)
                self._spend(delay, error)
                stats.retries += 1
                await owner._sleep(delay)
                continue
            stats.ok += 1
            owner.throttle.on_success(hint(result) if hint is not None else None)
            return result

    def _spend(self, seconds: float, error: RetryableError) -> None:
        """Count a wait (gate or backoff) against the budget; over it, the error is final."""
        self.waited += max(0.0, seconds)
        if self.waited > self._owner.policy.budget:
            raise error
