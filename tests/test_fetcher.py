"""The fetcher's retry loop on a fake clock: backoff, budget, throttled waits, cancellation,
and the connect-failure watch that stops a run when the org is gone. Nothing really sleeps.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import cast

import pytest
from structlog.testing import capture_logs

from sar_bulk.dataverse.client import DataverseClient
from sar_bulk.dataverse.fetcher import ConnectWatch, Fetcher
from sar_bulk.dataverse.retry import RetryPolicy, Verdict
from sar_bulk.dataverse.throttle import Throttle, ThrottleSettings
from sar_bulk.errors import (
    BadRequest,
    ConnectFailed,
    DataverseError,
    NoConnection,
    RequestContext,
    RetryBudgetSpent,
    RunStopper,
    Throttled,
    Transient,
)

CONTEXT = RequestContext("5b7e3f7b-1d3a-4f5b-9c1e-2a3b4c5d6e7f", "interactions/EmailSent")


class Clock:
    """A fake clock; its sleep advances it and records the wait."""

    def __init__(self) -> None:
        self.now = 5000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


def make(
    policy: RetryPolicy | None = None,
    settings: ThrottleSettings | None = None,
    *,
    watch: Callable[[Clock], ConnectWatch] | None = None,
) -> tuple[Fetcher, Clock]:
    clock = Clock()
    throttle = Throttle(
        settings or ThrottleSettings(rate=1000.0, max_jitter=0.0),
        clock=clock,
        sleep=clock.sleep,
        rng=random.Random(3),
    )
    fetcher = Fetcher(
        cast("DataverseClient", None),  # call() never touches the client
        throttle,
        policy or RetryPolicy(),
        rng=random.Random(7),
        watch=watch(clock) if watch is not None else None,
    )
    return fetcher, clock


class Script:
    """An attempt that raises the given errors in turn, then answers ``"ok"``."""

    def __init__(self, *errors: BaseException) -> None:
        self.errors = list(errors)
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


def transient(n: int = 1) -> Transient:
    return Transient(CONTEXT, f"HTTP 503 number {n}", status=503)


def throttled(retry_after: float | None) -> Throttled:
    return Throttled(CONTEXT, "busy", retry_after=retry_after, code="0x80072322")


def refused() -> ConnectFailed:
    return ConnectFailed(CONTEXT, "cannot connect to 127.0.0.1:9 (refused)", host="127.0.0.1:9")


def test_the_policy_classifies_the_error_tree() -> None:
    assert RetryPolicy.verdict(throttled(1.0)) is Verdict.THROTTLED
    assert RetryPolicy.verdict(transient()) is Verdict.RETRY
    assert RetryPolicy.verdict(refused()) is Verdict.RETRY
    assert RetryPolicy.verdict(BadRequest(CONTEXT, "no", status=400)) is Verdict.FINAL
    assert RetryPolicy.verdict(ValueError("x")) is Verdict.FINAL


async def test_backoff_delays_stay_within_full_jitter_bounds() -> None:
    policy = RetryPolicy(base=0.5, cap=4.0, attempts=8)
    fetcher, clock = make(policy)
    script = Script(*(transient(n) for n in range(7)))
    assert await fetcher.for_pair(1).call(script) == "ok"
    assert script.calls == 8
    backoffs = clock.slept
    assert len(backoffs) == 7
    for failures, delay in enumerate(backoffs, start=1):
        assert 0.0 <= delay <= policy.ceiling(failures)
    assert [policy.ceiling(n) for n in range(1, 8)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0, 4.0]
    assert fetcher.stats.retries == 7
    assert fetcher.stats.faults == 7
    assert fetcher.stats.requests == 8
    assert fetcher.stats.ok == 1


async def test_running_out_of_attempts_raises_the_last_error() -> None:
    fetcher, clock = make(RetryPolicy(attempts=3))
    last = transient(3)
    script = Script(transient(1), transient(2), last, transient(4))
    with pytest.raises(Transient) as caught:
        await fetcher.for_pair(1).call(script)
    assert caught.value is last
    assert script.calls == 3
    assert len(clock.slept) == 2  # no wait after the last failure


async def test_a_backoff_over_the_budget_fails_at_once_naming_the_wait_and_budget() -> None:
    fetcher, clock = make(RetryPolicy(base=10.0, cap=10.0, attempts=100, budget=25.0))
    script = Script(*(transient(n) for n in range(50)))
    pair = fetcher.for_pair(1)
    with pytest.raises(RetryBudgetSpent) as caught:
        await pair.call(script, context=CONTEXT)
    assert sum(clock.slept) <= 25.0
    assert pair.waited == pytest.approx(sum(clock.slept))
    error = caught.value
    assert isinstance(error.last, Transient)
    assert error.__cause__ is error.last
    assert error.status == 503
    assert "retry budget of 25 s" in str(error)
    assert "the backoff would take" in str(error)


async def test_throttled_waits_are_not_attempts_but_are_charged_to_the_budget() -> None:
    fetcher, clock = make(RetryPolicy(attempts=1, budget=100.0))
    script = Script(throttled(7.0), throttled(3.0), throttled(None))
    pair = fetcher.for_pair(1)
    with capture_logs() as logs:
        assert await pair.call(script) == "ok"
    # attempts=1 would allow no retry of a fault: a 429 is not a failed attempt.
    assert fetcher.stats.throttled == 3
    assert fetcher.stats.faults == 0
    assert pair.waited == pytest.approx(7.0 + 3.0 + 5.0)  # None gets the default 5 s
    assert sum(clock.slept) == pytest.approx(15.0, abs=0.1)  # plus the pacer's few ms
    retries = [e for e in logs if e["event"] == "request.retry"]
    assert [e["reason"] for e in retries] == ["throttled"] * 3
    assert all(e["log_level"] == "info" for e in retries)
    assert CONTEXT.contact_id not in str(retries)


async def test_a_huge_retry_after_fails_the_pair_at_once_without_sleeping() -> None:
    fetcher, clock = make(RetryPolicy(budget=60.0))
    script = Script(*(throttled(1_000_000_000.0) for _ in range(10)))
    with pytest.raises(RetryBudgetSpent) as caught:
        await fetcher.for_pair(1).call(script, context=CONTEXT)
    assert script.calls == 1
    assert clock.slept == []
    assert "300.0 s" in str(caught.value)
    assert "retry budget of 60 s" in str(caught.value)
    # Another pair waiting behind the same gate is bounded by its own budget too.
    other = Script()
    with pytest.raises(RetryBudgetSpent):
        await fetcher.for_pair(2).call(other, context=CONTEXT)
    assert other.calls == 0


async def test_a_final_error_is_raised_at_once() -> None:
    fetcher, clock = make()
    bad = BadRequest(CONTEXT, "bad contact id", status=400)
    script = Script(bad)
    with pytest.raises(BadRequest) as caught:
        await fetcher.for_pair(1).call(script)
    assert caught.value is bad
    assert script.calls == 1
    assert clock.slept == []


async def test_cancelled_error_propagates_from_the_attempt_and_from_a_wait() -> None:
    fetcher, _ = make(settings=ThrottleSettings(rate=1000.0, concurrency=1, max_jitter=0.0))
    with pytest.raises(asyncio.CancelledError):
        await fetcher.for_pair(1).call(Script(asyncio.CancelledError()))

    # Cancelled while backing off (a real sleep this time, so there is something to cancel).
    loop = asyncio.get_running_loop()
    throttle = Throttle(ThrottleSettings(rate=1000.0, concurrency=1), clock=loop.time)
    real = Fetcher(cast("DataverseClient", None), throttle, RetryPolicy(base=30.0, cap=30.0))
    real.rng = random.Random(1)
    failing = Script(*(transient() for _ in range(5)))
    task = asyncio.ensure_future(real.for_pair(1).call(failing))
    while real.stats.faults == 0:  # noqa: ASYNC110 (waits for the first failure)
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # The slot came back: with a cap of one, another request still gets through.
    assert await asyncio.wait_for(real.for_pair(2).call(Script()), 2) == "ok"


async def test_connect_failures_in_a_row_stop_the_run_naming_the_host() -> None:
    fetcher, clock = make(
        RetryPolicy(base=0.5, cap=1.0, attempts=100),
        watch=lambda c: ConnectWatch(clock=c, failures=8, seconds=3.0),
    )
    script = Script(*(refused() for _ in range(100)))
    with pytest.raises(NoConnection) as caught:
        await fetcher.for_pair(1).call(script)
    assert isinstance(caught.value, RunStopper)
    assert script.calls >= 8
    assert script.calls < 20
    assert "127.0.0.1:9" in str(caught.value)
    assert "refused" in str(caught.value)
    assert sum(clock.slept) >= 3.0


async def test_an_answer_in_between_restarts_the_connect_count() -> None:
    fetcher, _clock = make(
        RetryPolicy(base=1.0, cap=1.0, attempts=100),
        watch=lambda c: ConnectWatch(clock=c, failures=4, seconds=0.0),
    )
    errors: list[DataverseError] = []
    for _ in range(10):
        errors += [refused(), refused(), refused(), transient()]  # a 503 is an answer
    script = Script(*errors)
    assert await fetcher.for_pair(1).call(script) == "ok"
    assert fetcher.watch.count == 0


async def test_many_tasks_failing_to_connect_together_do_not_stop_a_run_at_once() -> None:
    # Ten tasks meet one blip in the same instant: ten failures, but no time has passed.
    fetcher, _clock = make(watch=lambda c: ConnectWatch(clock=c, failures=8, seconds=3.0))
    for _ in range(10):
        fetcher.watch.connect_failed(refused())
    assert fetcher.watch.count == 10


async def test_a_task_giving_up_on_connect_failures_stops_the_run_instead_of_failing() -> None:
    # Fast retries use the attempts up before ``seconds`` pass: the contact must not be failed
    # (and the next one after it) while nobody has had an answer.
    fetcher, _clock = make(
        RetryPolicy(base=0.01, cap=0.01, attempts=8),
        watch=lambda c: ConnectWatch(clock=c, failures=8, seconds=1000.0),
    )
    with pytest.raises(NoConnection, match="on 8 requests in a row"):
        await fetcher.for_pair(1).call(Script(*(refused() for _ in range(20))))


async def test_with_fewer_attempts_than_the_threshold_the_contact_fails_as_before() -> None:
    fetcher, _clock = make(
        RetryPolicy(base=0.01, cap=0.01, attempts=3),
        watch=lambda c: ConnectWatch(clock=c, failures=8, seconds=1000.0),
    )
    with pytest.raises(ConnectFailed):
        await fetcher.for_pair(1).call(Script(*(refused() for _ in range(20))))


async def test_a_pair_queued_as_another_priority_waits_its_turn_and_shares_the_budget() -> None:
    fetcher, _ = make(
        RetryPolicy(budget=100.0), ThrottleSettings(rate=1000.0, concurrency=1, max_jitter=0.0)
    )
    pair = fetcher.for_pair(1)
    later = pair.queued_as(1 << 48)
    gate = asyncio.Event()
    order: list[str] = []

    async def holding() -> str:
        await gate.wait()
        return "held"

    def named(name: str) -> Callable[[], Awaitable[str]]:
        async def attempt() -> str:
            order.append(name)
            return name

        return attempt

    first = asyncio.create_task(fetcher.for_pair(0).call(holding))
    await asyncio.sleep(0.01)
    queued = asyncio.create_task(later.call(named("download")))  # queued first...
    await asyncio.sleep(0.01)
    create = asyncio.create_task(fetcher.for_pair(2).call(named("create")))
    await asyncio.sleep(0.01)
    gate.set()
    await asyncio.gather(first, queued, create)
    assert order == ["create", "download"]  # ...served after a lower number
    assert await later.call(Script(throttled(4.0))) == "ok"
    assert pair.waited == pytest.approx(4.0)  # the wait was charged to the pair's budget
