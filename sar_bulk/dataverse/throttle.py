"""Keep one identity's requests inside Dataverse's service-protection limits.

Usage::

    throttle = Throttle(ThrottleSettings(rate=20.0), clock=loop.time, sleep=asyncio.sleep)
    async with throttle.slot(priority=contact_number):
        page = await client.fetch_page(...)
    throttle.on_success(page.dop_hint)      # or throttle.on_throttled(error)

Dataverse counts every user (and so every credential) on its own, so there is one ``Throttle``
per identity, shared by all tasks that use it. It combines four things:

* a **pacer** of our own (a GCRA, see ``Pacer``): requests leave at ``rate`` per second (1 %
  under it, for network jitter), at most ``burst`` back to back after a pause (1 by default).
  The initial burst counts as spent, and so does the pre-flight call (``count_request``), so a
  run told the org's exact limit does not overshoot it in its first window;
* a **concurrency cap**: from ``x-ms-dop-hint`` once the server sends one (never above 52),
  a conservative default before that; waiters are served by priority (the contact's position in
  the input), so contacts finish roughly in input order;
* a shared **gate**: any 429 closes it for *every* task until now + Retry-After. Dataverse extends
  the penalty of a client that keeps sending while throttled, so nothing is sent while it is
  closed. Jitter is only ever added to Retry-After, never subtracted. Retry-After is untrusted:
  a value that is missing, unparseable, zero, negative or in the past gets ``default_retry_after``,
  one above ``retry_after_cap`` (300 s, Dataverse's window) is clamped and logged. A task charges
  every wait at the gate to its (contact, part)'s ``WaitBudget`` *before* waiting, and fails at
  once when the wait would exceed it;
* **adaptation**: after a 429 the pace (and, for the concurrency limit, the cap) comes down, then
  grows back slowly on success. When the 429 message states the limit ("... limit of 6000 over
  time window of 300 seconds"), the pace is capped just under it at once.

Each closing of the gate (an episode) logs one warning: which limit, the Retry-After, the new pace.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import random
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import structlog

from sar_bulk.dataverse.retry import WaitBudget
from sar_bulk.errors import RequestContext, Throttled

__all__ = ["MAX_CONCURRENCY", "Pacer", "PrioritySemaphore", "Throttle", "ThrottleSettings"]

MAX_CONCURRENCY = 52  # Dataverse's documented default concurrency limit per user
_NUMBER = r"(\d[\d,]*(?:\.\d+)?)"
_STATED_LIMIT = re.compile(
    rf"limit of {_NUMBER} over (?:a )?time window of {_NUMBER} seconds", re.IGNORECASE
)
_log = structlog.get_logger("sar_bulk.dataverse.throttle")


@dataclass(frozen=True, slots=True)
class ThrottleSettings:
    """Pace and concurrency for one identity.

    ``rate`` is requests per second (6,000 per 300 s by default); ``concurrency`` a fixed cap
    (``None``: follow ``x-ms-dop-hint``, starting at ``initial_concurrency``); ``burst`` how many
    requests may leave back to back; ``adapt`` turns the slow-down/speed-up logic on.
    """

    rate: float = 6000 / 300
    # 1: no request ever leaves early to make up for a late one. A burst of 2 let the pacer
    # "catch up" after any lateness, which puts one request too many into the org's sliding
    # window whenever the pace is at its limit (a 429 at every window's edge).
    burst: int = 1
    concurrency: int | None = None
    initial_concurrency: int = 5
    adapt: bool = True
    min_rate: float = 0.2
    decrease: float = 0.8
    growth_per_minute: float = 0.1
    stated_limit_margin: float = 0.97
    # Requests leave 1 % under ``rate``: the org counts *arrivals* in a sliding window, and
    # network jitter would otherwise put one request too many into it at every window's edge.
    pace_margin: float = 0.99
    default_retry_after: float = 5.0
    retry_after_cap: float = 300.0  # Dataverse's window: no honest Retry-After is longer
    max_jitter: float = 1.0

    def __post_init__(self) -> None:
        if self.rate <= 0:
            raise ValueError("rate must be > 0 requests per second")
        if self.burst < 1:
            raise ValueError("burst must be at least 1")
        if self.concurrency is not None and not 1 <= self.concurrency <= MAX_CONCURRENCY:
            raise ValueError(f"concurrency must be between 1 and {MAX_CONCURRENCY}")
        if not 0.5 <= self.pace_margin <= 1.0:
            raise ValueError("pace_margin must be between 0.5 and 1")
        if not (self.default_retry_after > 0 and self.retry_after_cap > 0):
            raise ValueError("default_retry_after and retry_after_cap must be > 0 seconds")


class PrioritySemaphore:
    """A semaphore whose size can change, serving waiters lowest priority number first."""

    __slots__ = ("_counter", "_in_use", "_limit", "_waiters")

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._in_use = 0
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._counter = itertools.count()

    @property
    def limit(self) -> int:
        return self._limit

    @property
    def in_use(self) -> int:
        return self._in_use

    def set_limit(self, limit: int) -> None:
        """Change the size; a smaller size takes effect as holders release."""
        self._limit = max(1, limit)
        self._wake()

    async def acquire(self, priority: int = 0) -> None:
        if self._in_use < self._limit and not self._waiters:
            self._in_use += 1
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (priority, next(self._counter), future))
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                # We were handed the slot just as we were cancelled: pass it on.
                self.release()
            raise

    def release(self) -> None:
        self._in_use -= 1
        self._wake()

    def _wake(self) -> None:
        while self._waiters and self._in_use < self._limit:
            _, _, future = heapq.heappop(self._waiters)
            if not future.done():
                self._in_use += 1
                future.set_result(None)


class Pacer:
    """Lets acquirers through ``rate`` per second, up to ``burst`` back to back after a pause.

    A generic cell rate algorithm: ``_next`` is when the next request is due at the steady pace;
    one may leave up to ``burst - 1`` intervals before that. A request that leaves late by less
    than an interval keeps the schedule: in any window of T s at most ``rate * T + burst + 1``
    requests leave, and the 1 % ``pace_margin`` keeps that under the org's limit (with a margin
    of 1.0 and a rate at the org's exact limit, one request over is possible: keep the margin).
    It starts as if a burst had just left, so the first window holds about ``rate`` times its
    length (the reason a run told the org's exact limit used to meet a 429 in its first
    seconds).
    """

    __slots__ = ("_burst", "_clock", "_interval", "_next", "_sleep")

    def __init__(
        self,
        rate: float,
        burst: int,
        *,
        clock: Callable[[], float],
        sleep: Callable[[float], Awaitable[None]],
    ) -> None:
        self._interval = 1.0 / rate
        self._burst = burst
        self._clock = clock
        self._sleep = sleep
        self._next = clock() + (burst - 1) * self._interval

    def set_rate(self, rate: float) -> None:
        """Change the pace; requests already due keep their place."""
        self._interval = 1.0 / rate

    def count(self) -> None:
        """A request of this identity left without the pacer (the pre-flight call): count it."""
        self._next = max(self._next, self._clock()) + self._interval

    def take(self) -> float:
        """Let one request through now and return 0, or return how long until one may go."""
        now = self._clock()
        wait = self._next - (self._burst - 1) * self._interval - now
        if wait > 0.0:
            return wait
        due = self._next
        # Woken a little late (the loop's timer, a busy loop): the schedule stands and the
        # next request is due one interval after this one's due time, so lateness does not
        # add up (it cost 6 % of the pace at 50/s). Later than a whole interval (idle, or the
        # loop stalled): restart from now, so no burst makes up for it.
        self._next = (due if now - due < self._interval else now) + self._interval
        return 0.0

    async def acquire(self) -> None:
        # Every waiter wakes when its turn may have come and checks again: one goes, the
        # others compute their new wait (few waiters: at most the concurrency cap).
        while (wait := self.take()) > 0.0:
            await self._sleep(wait)


class Throttle:
    """Pacer, concurrency cap, shared 429 gate and adaptation for one identity."""

    def __init__(
        self,
        settings: ThrottleSettings,
        *,
        clock: Callable[[], float],
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        self._clock = clock
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._ceiling = settings.rate
        self._rate = settings.rate
        self._pacer = Pacer(
            settings.rate * settings.pace_margin, settings.burst, clock=clock, sleep=sleep
        )
        start = settings.concurrency or settings.initial_concurrency
        self._slots = PrioritySemaphore(start)
        self._concurrency_ceiling = start
        self._concurrency_cut = False
        self._successes_since_cut = 0
        self._gate_until = 0.0
        self._last_cut = -1e18
        self.dop_hint: int | None = None
        self.throttled = 0
        self.limits_hit: dict[str, int] = {}

    @property
    def rate(self) -> float:
        """The current pace in requests per second."""
        return self._rate

    @property
    def concurrency(self) -> int:
        return self._slots.limit

    @property
    def gate_closed_for(self) -> float:
        """Seconds until the gate opens (0 when open)."""
        return max(0.0, self._gate_until - self._clock())

    def count_request(self) -> None:
        """A request of this identity was sent outside ``slot`` (the pre-flight call): the
        pacer counts it, so the first window holds no more than the rate allows."""
        self._pacer.count()

    @property
    def sleep(self) -> Callable[[float], Awaitable[None]]:
        """The sleep the throttle waits with (a seam: a fake one in tests)."""
        return self._sleep

    @property
    def clock(self) -> Callable[[], float]:
        return self._clock

    @asynccontextmanager
    async def slot(
        self,
        priority: int = 0,
        *,
        budget: WaitBudget | None = None,
        context: RequestContext | None = None,
    ) -> AsyncIterator[None]:
        """Hold one concurrency slot, entered through the gate and the pacer (``enter``)."""
        await self.enter(priority, budget=budget, context=context)
        try:
            yield
        finally:
            self.leave()

    async def enter(
        self,
        priority: int = 0,
        *,
        budget: WaitBudget | None = None,
        context: RequestContext | None = None,
    ) -> None:
        """Take one concurrency slot, through the gate and the pacer; ``leave`` gives it back.

        Each wait at the closed gate is charged to ``budget`` before it starts: over the budget,
        ``RetryBudgetSpent`` is raised at once (``context`` names the request in it). When a
        slot is free, the gate open and the pacer due, nothing waits or sleeps: this runs for every
        request, so its common case costs a few comparisons.
        """
        await self._slots.acquire(priority)
        try:
            while True:
                if self._gate_until > self._clock():
                    await self._wait_for_gate(budget, context)
                if self._pacer.take() > 0.0:
                    await self._pacer.acquire()
                # The gate may have closed while we waited for the pacer: go round again.
                if self._gate_until <= self._clock():
                    return
        except BaseException:
            self._slots.release()
            raise

    def leave(self) -> None:
        """Give back the slot ``enter`` took."""
        self._slots.release()

    async def _wait_for_gate(
        self, budget: WaitBudget | None, context: RequestContext | None
    ) -> None:
        while (wait := self.gate_closed_for) > 0.0:
            if budget is not None:
                budget.charge(wait, why="the service-protection pause", context=context)
            await self._sleep(wait)

    def on_success(self, dop_hint: int | None) -> None:
        """A request was answered: follow the dop hint, and let pace and cap grow back slowly."""
        if dop_hint is not None and dop_hint > 0 and dop_hint != self.dop_hint:
            self.dop_hint = dop_hint
            if self.settings.concurrency is None:
                self._concurrency_ceiling = min(dop_hint, MAX_CONCURRENCY)
                if not self._concurrency_cut or self._slots.limit > self._concurrency_ceiling:
                    self._slots.set_limit(self._concurrency_ceiling)
        if not self.settings.adapt:
            return
        if self._rate < self._ceiling:
            # Additive increase: growth_per_minute of the ceiling per minute of steady success.
            step = self._ceiling * self.settings.growth_per_minute / (60.0 * self._rate)
            self._set_rate(min(self._ceiling, self._rate + step))
        if self._slots.limit < self._concurrency_ceiling:
            self._successes_since_cut += 1
            if self._successes_since_cut >= 20 * self._slots.limit:
                self._successes_since_cut = 0
                self._slots.set_limit(self._slots.limit + 1)

    def on_throttled(self, error: Throttled) -> float:
        """A 429 arrived: close the gate for everyone and slow down. Returns the wait."""
        self.throttled += 1
        self.limits_hit[error.limit] = self.limits_hit.get(error.limit, 0) + 1
        now = self._clock()
        retry_after = self.bounded_retry_after(error.retry_after)
        jitter = self._rng.uniform(0.0, min(self.settings.max_jitter, 0.1 * retry_after))
        was_open = self._gate_until <= now
        self._gate_until = max(self._gate_until, now + retry_after + jitter)
        if self.settings.adapt:
            self._adapt_down(error, now, retry_after)
        if was_open:
            # One line per episode: the other tasks in flight get their 429 in the same moment.
            _log.warning(
                "throttle.paused",
                limit=error.limit,
                code=error.code,
                retry_after=error.retry_after,
                pause_seconds=round(self._gate_until - now, 2),
                rate=round(self._rate, 3),
                concurrency=self._slots.limit,
            )
        return self._gate_until - now

    def bounded_retry_after(self, retry_after: float | None) -> float:
        """The wait to use for a server's Retry-After (in seconds, as parsed; ``None`` if absent
        or unparseable): no honest value is <= 0 or above the cap."""
        settings = self.settings
        if retry_after is None or not retry_after > 0.0:  # not: NaN goes to the default too
            return min(settings.default_retry_after, settings.retry_after_cap)
        if retry_after > settings.retry_after_cap:
            _log.warning(
                "throttle.retry_after_clamped",
                retry_after=retry_after,
                cap=settings.retry_after_cap,
            )
            return settings.retry_after_cap
        return retry_after

    def _adapt_down(self, error: Throttled, now: float, retry_after: float) -> None:
        # Every task in flight when a limit was crossed gets its own 429: cut once per episode.
        same_episode = now - self._last_cut < max(1.0, retry_after)
        if not same_episode:
            self._last_cut = now
        if error.limit == "concurrency":
            if not same_episode:
                self._concurrency_cut = True
                self._successes_since_cut = 0
                self._slots.set_limit(max(1, self._slots.in_use * 3 // 4))
            return
        stated = _stated_rate(error.detail) if error.limit == "requests" else None
        if stated is not None and stated * self.settings.stated_limit_margin < self._ceiling:
            # The server said what the limit is: pace just under it from now on.
            self._ceiling = stated * self.settings.stated_limit_margin
            self._set_rate(min(self._rate, self._ceiling))
        elif not same_episode:
            self._set_rate(self._rate * self.settings.decrease)

    def _set_rate(self, rate: float) -> None:
        rate = max(self.settings.min_rate, rate)
        if rate != self._rate:
            self._rate = rate
            self._pacer.set_rate(rate * self.settings.pace_margin)


def _stated_rate(message: str) -> float | None:
    """The requests-per-second a 429 message states, e.g. 'limit of 6000 over ... 300 seconds'."""
    match = _STATED_LIMIT.search(message)
    if match is None:
        return None
    try:
        count, window = (float(g.replace(",", "")) for g in match.groups())
    except ValueError:
        return None
    if not (count > 0 and window > 0) or count == float("inf") or window == float("inf"):
        return None
    return count / window
