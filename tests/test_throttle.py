"""The throttle's parts: priority semaphore, shared gate, pacing and adaptation.

The pacer (aiolimiter) belongs to an event loop, so even the clock-driven tests run in one.
"""

from __future__ import annotations

import asyncio
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sar_bulk.dataverse.throttle import (
    MAX_CONCURRENCY,
    PrioritySemaphore,
    Throttle,
    ThrottleSettings,
)
from sar_bulk.errors import RequestContext, Throttled

CONTEXT = RequestContext("5b7e3f7b-1d3a-4f5b-9c1e-2a3b4c5d6e7f", "EmailSent")
STATED = "Number of requests exceeded the limit of 600 over time window of 30 seconds."


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def throttled(limit_code: str, retry_after: float | None, detail: str = "busy") -> Throttled:
    return Throttled(CONTEXT, detail, retry_after=retry_after, code=limit_code)


def make(settings: ThrottleSettings | None = None) -> tuple[Throttle, FakeClock]:
    clock = FakeClock()
    return Throttle(settings or ThrottleSettings(), clock=clock, rng=random.Random(1)), clock


async def test_semaphore_serves_lowest_priority_first() -> None:
    semaphore = PrioritySemaphore(1)
    await semaphore.acquire(0)
    order: list[int] = []

    async def waiter(priority: int) -> None:
        await semaphore.acquire(priority)
        order.append(priority)
        semaphore.release()

    tasks = [asyncio.create_task(waiter(p)) for p in (5, 3, 9, 1)]
    await asyncio.sleep(0)
    semaphore.release()
    await asyncio.gather(*tasks)
    assert order == [1, 3, 5, 9]


async def test_semaphore_cancelled_waiter_does_not_leak_a_slot() -> None:
    semaphore = PrioritySemaphore(1)
    await semaphore.acquire()
    waiting = asyncio.create_task(semaphore.acquire())
    await asyncio.sleep(0)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    semaphore.release()
    assert semaphore.in_use == 0
    await asyncio.wait_for(semaphore.acquire(), 1)
    assert semaphore.in_use == 1


async def test_semaphore_shrinks_as_holders_release() -> None:
    semaphore = PrioritySemaphore(3)
    for _ in range(3):
        await semaphore.acquire()
    semaphore.set_limit(1)
    late = asyncio.create_task(semaphore.acquire())
    semaphore.release()
    semaphore.release()
    await asyncio.sleep(0)
    assert not late.done()
    semaphore.release()
    await asyncio.wait_for(late, 1)
    assert semaphore.in_use == 1


async def test_429_closes_the_gate_for_at_least_retry_after() -> None:
    throttle, clock = make()
    wait = throttle.on_throttled(throttled("0x80072322", 7.0))
    assert 7.0 <= wait <= 7.0 + 0.7
    assert throttle.gate_closed_for == wait
    clock.now += wait
    assert throttle.gate_closed_for == 0.0


@given(st.floats(min_value=0.0, max_value=600.0), st.integers(0, 2**32))
def test_jitter_never_shortens_retry_after(retry_after: float, seed: int) -> None:
    async def check() -> None:
        throttle = Throttle(ThrottleSettings(), clock=FakeClock(), rng=random.Random(seed))
        wait = throttle.on_throttled(throttled("0x80072322", retry_after))
        assert retry_after - 1e-9 <= wait <= retry_after + 1.0  # float rounding of now + wait

    # The pacer belongs to an event loop, as it does in a run.
    asyncio.run(check())


async def test_missing_retry_after_uses_the_default_wait() -> None:
    throttle, _ = make(ThrottleSettings(default_retry_after=5.0))
    assert throttle.on_throttled(throttled("0x80072322", None)) >= 5.0


async def test_a_later_429_never_shortens_the_gate() -> None:
    throttle, _ = make()
    first = throttle.on_throttled(throttled("0x80072322", 30.0))
    second = throttle.on_throttled(throttled("0x80072322", 1.0))
    assert second == first


async def test_stated_limit_caps_the_pace_just_under_it() -> None:
    throttle, _ = make(ThrottleSettings(rate=40.0))
    throttle.on_throttled(throttled("0x80072322", 3.0, STATED))
    assert throttle.rate == pytest.approx(20.0 * 0.97)
    # Success never pushes the pace above the stated limit again.
    for _ in range(10_000):
        throttle.on_success(None)
    assert throttle.rate == pytest.approx(20.0 * 0.97)


async def test_unstated_limit_cuts_once_per_episode_then_recovers_slowly() -> None:
    throttle, clock = make(ThrottleSettings(rate=20.0, decrease=0.8, growth_per_minute=0.1))
    for _ in range(10):  # ten tasks in flight all get their 429 in the same moment
        throttle.on_throttled(throttled("0x80072321", 2.0))
    assert throttle.rate == pytest.approx(16.0)
    clock.now += 60
    throttle.on_throttled(throttled("0x80072321", 2.0))
    assert throttle.rate == pytest.approx(12.8)
    # About one minute of successes at that pace gives back 10% of the ceiling.
    for _ in range(int(12.8 * 60)):
        throttle.on_success(None)
    assert 14.0 < throttle.rate < 15.5
    for _ in range(100_000):
        throttle.on_success(None)
    assert throttle.rate == pytest.approx(20.0)


async def test_pace_never_falls_below_the_floor() -> None:
    throttle, clock = make(ThrottleSettings(rate=1.0, min_rate=0.2))
    for _ in range(50):
        clock.now += 100
        throttle.on_throttled(throttled("", 1.0))
    assert throttle.rate == pytest.approx(0.2)


async def test_dop_hint_sets_the_concurrency_never_above_52() -> None:
    throttle, _ = make()
    assert throttle.concurrency == 5
    throttle.on_success(12)
    assert throttle.concurrency == 12
    throttle.on_success(500)
    assert throttle.concurrency == MAX_CONCURRENCY


async def test_a_fixed_concurrency_ignores_the_hint() -> None:
    throttle, _ = make(ThrottleSettings(concurrency=3))
    throttle.on_success(40)
    assert throttle.concurrency == 3
    assert throttle.dop_hint == 40


async def test_concurrency_429_lowers_the_cap_then_it_grows_back() -> None:
    throttle, _clock = make()
    throttle.on_success(16)
    throttle.on_throttled(throttled("0x80072326", 1.0))
    assert throttle.concurrency < 16
    lowered = throttle.concurrency
    for _ in range(20 * 16 * 16):
        throttle.on_success(16)
    assert lowered < throttle.concurrency <= 16
    assert throttle.limits_hit == {"concurrency": 1}


@pytest.mark.parametrize(
    "settings",
    [{"rate": 0}, {"burst": 0}, {"concurrency": 0}, {"concurrency": MAX_CONCURRENCY + 1}],
)
def test_settings_are_checked(settings: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="must be"):
        ThrottleSettings(**settings)  # type: ignore[arg-type]


async def test_no_request_enters_while_the_gate_is_closed() -> None:
    loop = asyncio.get_running_loop()
    throttle = Throttle(ThrottleSettings(rate=1000.0, concurrency=4), clock=loop.time)
    throttle.on_throttled(throttled("0x80072322", 0.2))
    opens_at = loop.time() + throttle.gate_closed_for
    entered: list[float] = []

    async def request() -> None:
        async with throttle.slot():
            entered.append(loop.time())

    await asyncio.gather(*(request() for _ in range(8)))
    assert len(entered) == 8
    assert min(entered) >= opens_at


async def test_pacer_spaces_requests_at_the_rate() -> None:
    loop = asyncio.get_running_loop()
    throttle = Throttle(ThrottleSettings(rate=50.0, burst=1, concurrency=10), clock=loop.time)
    entered: list[float] = []

    async def request() -> None:
        async with throttle.slot():
            entered.append(loop.time())

    await asyncio.gather(*(request() for _ in range(11)))
    # 10 intervals at 50/s cannot take less than 0.2 s (an upper bound would be a timing test).
    assert entered[-1] - entered[0] >= 0.2 * 0.95
