"""One request through the throttle and the retry policy: the only loop that tries again.

Usage::

    fetcher = Fetcher(client, throttle, RetryPolicy())
    pair = fetcher.for_pair(priority=contact_number)
    async for page in client.pages(query, fetch=pair.fetch):
        ...
    answer = await pair.call(lambda: http.send(context, "GET", url), context=context)  # any other

What to do with a failure is the policy's verdict (``RetryPolicy.verdict``):

* A throttled answer (429) is not a failed attempt: the throttle closes its gate for every task,
  and this request is sent again once it opens.
* A transient fault (5xx, timeout, dropped connection, malformed body) is retried with
  exponential backoff and full jitter, up to ``policy.attempts`` failures.
* Anything else (400, 403, 401 after a fresh token, 404) is final and raised at once.

Every wait (backoff, and the gate's pause) is charged to the pair's ``WaitBudget`` before it
starts; a wait that would exceed it fails the pair at once (``RetryBudgetSpent``).

The fetcher is shared by every task of an identity, so it also sees when the org has gone:
``ConnectWatch`` counts connect failures (refused, no DNS answer) across all tasks; past
``failures`` in a row over at least ``seconds``, with no answer in between, it raises
``NoConnection`` (a ``RunStopper``) naming the host and the cause, and the run stops instead
of retrying every contact into failure.

Sleeping and the clock come from the throttle (``Throttle(clock=..., sleep=...)``): a test
gives both a fake clock and nothing really sleeps.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import structlog

from sar_bulk.dataverse.client import DataverseClient, Page, Query
from sar_bulk.dataverse.retry import RetryPolicy, Verdict, WaitBudget
from sar_bulk.dataverse.throttle import Throttle
from sar_bulk.errors import (
    ConnectFailed,
    DataverseError,
    NoConnection,
    RequestContext,
    RetryBudgetSpent,
    Throttled,
)

__all__ = ["ConnectWatch", "FetchStats", "Fetcher", "PairFetcher"]

_T = TypeVar("_T")
_log = structlog.get_logger("sar_bulk.dataverse.fetcher")


@dataclass(slots=True)
class FetchStats:
    """Counts for the report: every request sent, and how they ended."""

    requests: int = 0
    ok: int = 0
    throttled: int = 0
    retries: int = 0
    faults: int = 0


class ConnectWatch:
    """Connect failures in a row across every task of one identity; too many stop the run.

    Both limits must be passed: ``failures`` alone could be a burst of tasks meeting one blip
    together, ``seconds`` alone one slow failure. An answer of any kind (even a 429 or a 500)
    proves the org reachable and starts the count again.
    """

    __slots__ = ("_clock", "_first", "count", "failures", "seconds")

    def __init__(self, *, clock: Callable[[], float], failures: int = 8, seconds: float = 5.0):
        self._clock = clock
        self.failures = failures
        self.seconds = seconds
        self.count = 0
        self._first = 0.0

    def answered(self) -> None:
        self.count = 0

    def connect_failed(self, error: ConnectFailed) -> None:
        """Count one; raise ``NoConnection`` when the org looks gone."""
        now = self._clock()
        if self.count == 0:
            self._first = now
        self.count += 1
        if self.count >= self.failures and now - self._first >= self.seconds:
            raise self._gone(error, now)

    def gave_up(self, error: ConnectFailed) -> None:
        """A task used up its attempts on connect failures: stop the run instead of failing its
        contact when nobody had an answer meanwhile either (fast retry settings give up sooner
        than ``seconds``, and every contact would fail in turn)."""
        if self.count >= self.failures:
            raise self._gone(error, self._clock())

    def _gone(self, error: ConnectFailed, now: float) -> NoConnection:
        gone = NoConnection(
            error.context,
            f"no connection to {error.host} on {self.count} requests in a row over "
            f"{now - self._first:.1f} s, with no answer in between (last: {error.detail})",
        )
        gone.__cause__ = error
        return gone


class Fetcher:
    """Shared by every task of one identity: the client, its throttle and the policy."""

    def __init__(
        self,
        client: DataverseClient,
        throttle: Throttle,
        policy: RetryPolicy,
        *,
        rng: random.Random | None = None,
        watch: ConnectWatch | None = None,
        org_hint: Callable[[], int | None] | None = None,
    ) -> None:
        self.client = client
        # The org's latest x-ms-dop-hint from any answer (OrgHttp.dop_hint), for requests whose
        # result does not carry it: Web API reads, downloads.
        self.org_hint = org_hint
        self.throttle = throttle
        self.policy = policy
        self.stats = FetchStats()
        self.watch = watch or ConnectWatch(clock=throttle.clock)
        self.rng = rng or random.Random()

    @property
    def paused_for(self) -> float:
        """Seconds until the identity's gate opens (0 when requests may go)."""
        return self.throttle.gate_closed_for

    def backoff(self, failures: int) -> float:
        """The delay before the next try after ``failures`` passing faults."""
        return self.policy.backoff(failures, self.rng)

    def for_pair(self, priority: int) -> PairFetcher:
        """A fetcher for the requests of one (contact, part), with its own wait budget."""
        return PairFetcher(self, priority)


class PairFetcher:
    """Fetches for one (contact, part); its waits share one budget."""

    __slots__ = ("_owner", "_priority", "budget")

    def __init__(self, owner: Fetcher, priority: int, budget: WaitBudget | None = None) -> None:
        self._owner = owner
        self._priority = priority
        self.budget: WaitBudget = budget if budget is not None else owner.policy.new_budget()

    @property
    def waited(self) -> float:
        """Seconds charged to the budget so far."""
        return self.budget.spent

    def queued_as(self, priority: int) -> PairFetcher:
        """The same (contact, part) and wait budget, queued for the identity as ``priority``."""
        return PairFetcher(self._owner, priority, self.budget)

    async def fetch(self, query: Query, skip_token: str | None, number: int) -> Page:
        """One page of the action (a ``PageFetcher`` for ``DataverseClient.pages``)."""
        client = self._owner.client
        context = query.context(number)
        return await self.call(
            lambda: client.fetch_page(query, skip_token, number, context=context),
            hint=_page_hint,
            context=context,
        )

    async def call(
        self,
        attempt: Callable[[], Awaitable[_T]],
        *,
        hint: Callable[[_T], int | None] | None = None,
        context: RequestContext | None = None,
    ) -> _T:
        """Run ``attempt`` (one request) inside the throttle, retrying what may pass.

        ``attempt`` raises the error tree: a ``Throttled`` closes the identity's gate and is
        sent again once it opens, a ``RetryableError`` backs off, anything else is final.
        ``hint`` reads the server's ``x-ms-dop-hint`` from a successful result; ``context``
        names the request in a budget failure that happens before any answer.
        """
        owner = self._owner
        stats, policy, budget, throttle = owner.stats, owner.policy, self.budget, owner.throttle
        failures = 0
        while True:
            try:
                await throttle.enter(self._priority, budget=budget, context=context)
                try:
                    stats.requests += 1
                    result = await attempt()
                finally:
                    throttle.leave()
            except RetryBudgetSpent:
                raise  # the wait at the gate would exceed the budget: final
            except DataverseError as error:
                self._watch(error)
                verdict = policy.verdict(error)
                if verdict is Verdict.FINAL:
                    raise
                budget.last = error
                if verdict is Verdict.THROTTLED and isinstance(error, Throttled):
                    stats.throttled += 1
                    pause = throttle.on_throttled(error)
                    # The pause itself is waited (and charged to the budget) at the gate.
                    _retry_line(error, reason="throttled", wait=pause, failures=failures)
                    continue
                stats.faults += 1
                failures += 1
                if policy.gives_up(failures):
                    if isinstance(error, ConnectFailed):
                        owner.watch.gave_up(error)  # may raise NoConnection: the run stops
                    raise
                delay = owner.backoff(failures)
                budget.charge(delay, why="the backoff", context=error.context or context)
                stats.retries += 1
                _retry_line(error, reason=type(error).__name__, wait=delay, failures=failures)
                await throttle.sleep(delay)
                continue
            owner.watch.answered()
            stats.ok += 1
            seen = hint(result) if hint is not None else None
            if seen is None and owner.org_hint is not None:
                seen = owner.org_hint()
            throttle.on_success(seen)
            return result

    def _watch(self, error: DataverseError) -> None:
        watch = self._owner.watch
        if isinstance(error, ConnectFailed):
            watch.connect_failed(error)  # may raise NoConnection: the run stops
        elif error.status is not None:
            watch.answered()  # the org answered, even if with an error


def _page_hint(page: Page) -> int | None:
    return page.dop_hint


def _retry_line(error: DataverseError, *, reason: str, wait: float, failures: int) -> None:
    """One info line per retry (part, status and code, never contact data or the message)."""
    _log.info(
        "request.retry",
        reason=reason,
        part=error.context.part if error.context is not None else None,
        status=error.status,
        code=error.code or None,
        attempt=failures,
        wait_seconds=round(wait, 2),
    )
