"""The throttle's parts: priority semaphore, shared gate, pacing and adaptation.

Most run on a fake clock whose sleep advances it, so nothing really waits.
"""

from __future__ import annotations

import asyncio
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st
from structlog.testing import capture_logs

from sar_bulk.dataverse.retry import RetryPolicy
from sar_bulk.dataverse.throttle import (
    MAX_CONCURRENCY,
    Pacer,
    PrioritySemaphore,
    Throttle,
    ThrottleSettings,
)
from sar_bulk.errors import RequestContext, RetryBudgetSpent, Throttled

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


@given(st.floats(min_value=0.001, max_value=300.0), st.integers(0, 2**32))
def test_jitter_never_shortens_retry_after(retry_after: float, seed: int) -> None:
    async def check() -> None:
        throttle = Throttle(ThrottleSettings(), clock=FakeClock(), rng=random.Random(seed))
        wait = throttle.on_throttled(throttled("0x80072322", retry_after))
        assert retry_after - 1e-9 <= wait <= retry_after + 1.0  # float rounding of now + wait

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
    [
        {"rate": 0},
        {"burst": 0},
        {"concurrency": 0},
        {"concurrency": MAX_CONCURRENCY + 1},
        {"retry_after_cap": 0},
        {"retry_after_cap": float("nan")},
        {"default_retry_after": -1},
    ],
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


class SleepingClock(FakeClock):
    """A fake clock whose sleep advances it: waits take no real time."""

    def __init__(self) -> None:
        super().__init__()
        self.slept: list[float] = []

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


def make_sleeping(settings: ThrottleSettings | None = None) -> tuple[Throttle, SleepingClock]:
    clock = SleepingClock()
    throttle = Throttle(
        settings or ThrottleSettings(), clock=clock, sleep=clock.sleep, rng=random.Random(1)
    )
    return throttle, clock


@pytest.mark.parametrize("retry_after", [None, 0.0, -30.0, float("nan")])
async def test_retry_after_absent_zero_negative_or_nan_gets_the_default(
    retry_after: float | None,
) -> None:
    throttle, _ = make(ThrottleSettings(default_retry_after=4.0, max_jitter=0.0))
    assert throttle.on_throttled(throttled("0x80072322", retry_after)) == pytest.approx(4.0)


async def test_a_huge_retry_after_is_clamped_to_the_cap_and_logged() -> None:
    throttle, _ = make(ThrottleSettings(retry_after_cap=300.0, max_jitter=0.0))
    with capture_logs() as logs:
        wait = throttle.on_throttled(throttled("0x80072322", 1_000_000_000.0))
    assert wait == pytest.approx(300.0)
    clamped = [e for e in logs if e["event"] == "throttle.retry_after_clamped"]
    assert clamped == [
        {
            "event": "throttle.retry_after_clamped",
            "log_level": "warning",
            "retry_after": 1_000_000_000.0,
            "cap": 300.0,
        }
    ]


async def test_one_warning_per_throttle_episode_naming_limit_wait_and_pace() -> None:
    throttle, clock = make(ThrottleSettings(rate=20.0, max_jitter=0.0))
    with capture_logs() as logs:
        for _ in range(10):  # ten tasks in flight get their 429 together: one episode
            throttle.on_throttled(throttled("0x80072322", 3.0))
        clock.now += 10.0  # the gate opened; a new 429 is a new episode
        throttle.on_throttled(throttled("0x80072322", 2.0))
    paused = [e for e in logs if e["event"] == "throttle.paused"]
    assert len(paused) == 2
    assert paused[0]["limit"] == "requests"
    assert paused[0]["retry_after"] == 3.0
    assert paused[0]["pause_seconds"] == pytest.approx(3.0)
    assert paused[0]["rate"] == pytest.approx(16.0)
    assert all(e["log_level"] == "warning" for e in paused)


@pytest.mark.parametrize(
    ("message", "rate"),
    [
        (
            "Number of requests exceeded the limit of 6000 over time window of 300.5 seconds.",
            6000 / 300.5,
        ),
        ("Number of requests exceeded the limit of 1,200 over time window of 60 seconds.", 20.0),
        ("... limit of 1,200.5 over a time window of 0.5 seconds", 2401.0),
    ],
)
async def test_stated_limit_reads_decimals_and_thousands(message: str, rate: float) -> None:
    throttle, _ = make(ThrottleSettings(rate=5000.0))
    throttle.on_throttled(throttled("0x80072322", 1.0, message))
    assert throttle.rate == pytest.approx(rate * 0.97)


@pytest.mark.parametrize(
    "message",
    [
        "limit of 0 over time window of 300 seconds",
        "limit of 6000 over time window of 0.0 seconds",
        "limit of 6000 over time window of " + "9" * 400 + " seconds",
        "limit of . over time window of 300 seconds",
    ],
)
async def test_a_stated_limit_that_makes_no_sense_is_ignored(message: str) -> None:
    throttle, _ = make(ThrottleSettings(rate=40.0, decrease=0.5))
    throttle.on_throttled(throttled("0x80072322", 1.0, message))
    assert throttle.rate == pytest.approx(20.0)  # the ordinary cut, nothing from the message


@given(st.text(max_size=200))
def test_any_429_message_leaves_a_usable_pace(message: str) -> None:
    async def check() -> None:
        throttle, _ = make(ThrottleSettings(rate=40.0))
        throttle.on_throttled(throttled("0x80072322", 1.0, message))
        assert 0.2 <= throttle.rate <= 40.0

    asyncio.run(check())


async def test_the_pacer_counts_its_first_burst_as_spent() -> None:
    clock = SleepingClock()
    pacer = Pacer(20.0, 2, clock=clock, sleep=clock.sleep)
    start = clock.now
    entered = []
    for _ in range(41):
        await pacer.acquire()
        entered.append(clock.now - start)
    # Evenly spaced from the first request on: 20 in the first second, never 21.
    assert sum(1 for t in entered if t < 1.0 - 1e-9) == 20
    assert entered[1] == pytest.approx(0.05)
    assert entered[40] == pytest.approx(2.0)


class LateClock(SleepingClock):
    """Every sleep ends ``late`` seconds after it was due, as a busy event loop's timers do."""

    def __init__(self, late: float) -> None:
        super().__init__()
        self.late = late

    async def sleep(self, seconds: float) -> None:
        await super().sleep(seconds + self.late)


@pytest.mark.parametrize("late", [0.0, 0.001, 0.01, 0.019])
async def test_late_wake_ups_do_not_slow_the_pace_nor_overshoot_it(late: float) -> None:
    rate = 50.0
    clock = LateClock(late)
    pacer = Pacer(rate, 1, clock=clock, sleep=clock.sleep)
    start = clock.now
    left: list[float] = []
    for _ in range(1000):
        await pacer.acquire()
        left.append(clock.now - start)
    # 1,000 requests at 50/s take 20 s (the first leaves at once), however late each wake-up.
    assert left[-1] == pytest.approx(999 / rate, abs=0.02)
    # And no window of 1 s ever holds more than the pace allows plus two.
    for i, t in enumerate(left):
        inside = sum(1 for u in left[i:] if u < t + 1.0)
        assert inside <= rate + 2


async def test_a_wake_up_later_than_an_interval_restarts_the_schedule() -> None:
    clock = SleepingClock()
    pacer = Pacer(10.0, 1, clock=clock, sleep=clock.sleep)
    await pacer.acquire()
    clock.now += 0.35  # the loop stalled for three and a half intervals
    await pacer.acquire()
    at = clock.now
    await pacer.acquire()
    assert clock.now - at == pytest.approx(0.1)  # no catching up: a full interval after


async def test_after_a_pause_the_pacer_lets_a_burst_go() -> None:
    clock = SleepingClock()
    pacer = Pacer(10.0, 3, clock=clock, sleep=clock.sleep)
    await pacer.acquire()
    clock.now += 60.0
    before = len(clock.slept)
    for _ in range(3):
        await pacer.acquire()
    assert len(clock.slept) == before  # three back to back after an idle minute
    await pacer.acquire()
    assert clock.slept[-1] == pytest.approx(0.1)


async def test_the_pacer_follows_a_new_rate() -> None:
    clock = SleepingClock()
    pacer = Pacer(100.0, 1, clock=clock, sleep=clock.sleep)
    await pacer.acquire()
    pacer.set_rate(2.0)
    await pacer.acquire()  # due at the old pace
    start = clock.now
    await pacer.acquire()
    assert clock.now - start == pytest.approx(0.5)


async def test_a_gate_wait_over_the_budget_fails_at_once_without_sleeping() -> None:
    throttle, clock = make_sleeping(ThrottleSettings(retry_after_cap=300.0, max_jitter=0.0))
    budget = RetryPolicy(budget=60.0).new_budget()
    error = throttled("0x80072322", 1_000_000_000.0)
    throttle.on_throttled(error)
    budget.last = error
    with pytest.raises(RetryBudgetSpent) as caught:
        async with throttle.slot(budget=budget, context=CONTEXT):
            pytest.fail("entered a closed gate")
    assert clock.slept == []
    message = str(caught.value)
    assert "300.0 s" in message  # the wait
    assert "retry budget of 60 s" in message  # the budget
    assert CONTEXT.contact_id in message
    assert caught.value.last is error
    assert caught.value.status == 429


async def test_gate_waits_are_charged_to_the_budget() -> None:
    throttle, clock = make_sleeping(ThrottleSettings(max_jitter=0.0))
    budget = RetryPolicy(budget=10.0).new_budget()
    throttle.on_throttled(throttled("0x80072322", 4.0))
    async with throttle.slot(budget=budget):
        pass
    assert budget.spent == pytest.approx(4.0)
    assert clock.slept[0] == pytest.approx(4.0)
    throttle.on_throttled(throttled("0x80072322", 7.0))
    with pytest.raises(RetryBudgetSpent, match=r"already waited 4\.0 s"):
        async with throttle.slot(budget=budget):
            pass


@given(
    st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True)),
    st.floats(min_value=0.001, max_value=10_000.0),
)
def test_any_retry_after_becomes_a_wait_within_the_cap(
    retry_after: float | None, cap: float
) -> None:
    async def check() -> None:
        throttle, _ = make(ThrottleSettings(retry_after_cap=cap))
        wait = throttle.bounded_retry_after(retry_after)
        assert 0.0 < wait <= cap

    asyncio.run(check())
