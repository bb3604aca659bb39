"""The retry policy in one place: what is worth another try, how long to wait, and how much waiting.

Usage::

    policy = RetryPolicy(base=0.5, cap=60.0, attempts=8, budget=600.0)
    match policy.verdict(error):          # THROTTLED, RETRY or FINAL
        ...
    delay = policy.backoff(attempt=3, rng=random.Random())
    budget = policy.new_budget()          # one per (contact, part): every wait is charged to it
    budget.charge(delay, why="backing off", context=context)   # raises RetryBudgetSpent when over

Exponential backoff with *full jitter* (the delay is drawn uniformly from ``[0, min(cap, base *
2**attempt)]``), which spreads retries of many tasks out instead of synchronising them; see
https://aws.amazon.com/blogs/architecture/exponential-backoff-and-jitter/. Throttled answers do not
use this: they wait for the server's Retry-After behind the identity's shared gate (see
``throttle.py``), and that wait is charged to the same budget.

The budget is checked *before* a wait, never after: a pair that would exceed it fails at once,
naming the wait and the budget, instead of sleeping first (one ``Retry-After: 1000000000`` must
not hang a run). The loop that applies all this is ``fetcher.PairFetcher.call``; its sleep and
clock are seams, so tests run it on a fake clock without sleeping.
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass

from sar_bulk.errors import (
    DataverseError,
    RequestContext,
    RetryableError,
    RetryBudgetSpent,
    Throttled,
)

__all__ = ["RetryPolicy", "Verdict", "WaitBudget"]


class Verdict(enum.Enum):
    """What to do after a failed request."""

    THROTTLED = "throttled"  # 429: wait behind the shared gate, not a failed attempt
    RETRY = "retry"  # a passing fault: back off and try again, up to ``attempts``
    FINAL = "final"  # nothing another try can change: raise it


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how long to retry one request.

    ``attempts`` counts failed tries of transient faults (so 8 means 7 retries); ``budget`` is the
    total seconds one (contact, part) may spend waiting on backoff and the shared gate together.
    """

    base: float = 0.5
    cap: float = 60.0
    attempts: int = 8
    budget: float = 900.0

    def __post_init__(self) -> None:
        if self.base <= 0 or self.cap < self.base:
            raise ValueError("retry base must be > 0 and cap >= base")
        if self.attempts < 1:
            raise ValueError("retry attempts must be at least 1")
        if self.budget <= 0:
            raise ValueError("retry budget must be > 0")

    @staticmethod
    def verdict(error: BaseException) -> Verdict:
        """Classify a failure (the error tree decides: see ``sar_bulk.errors``)."""
        if isinstance(error, Throttled):
            return Verdict.THROTTLED
        if isinstance(error, RetryableError):
            return Verdict.RETRY
        return Verdict.FINAL

    def ceiling(self, attempt: int) -> float:
        """The largest delay after the ``attempt``-th failure (1-based)."""
        # The exponent is clamped: 2.0**attempt only overflows past ~1000 attempts, but clamp.
        return min(self.cap, self.base * 2.0 ** min(attempt - 1, 64))

    def backoff(self, attempt: int, rng: random.Random) -> float:
        """A full-jitter delay after the ``attempt``-th failure (1-based)."""
        return rng.uniform(0.0, self.ceiling(attempt))

    def gives_up(self, attempt: int) -> bool:
        """True when ``attempt`` failures use up the attempts."""
        return attempt >= self.attempts

    def new_budget(self) -> WaitBudget:
        """A fresh wait budget for one (contact, part)."""
        return WaitBudget(self.budget)


class WaitBudget:
    """The seconds one (contact, part) may still spend waiting; ``last`` is what it waits for."""

    __slots__ = ("last", "spent", "total")

    def __init__(self, total: float) -> None:
        self.total = total
        self.spent = 0.0
        self.last: DataverseError | None = None

    @property
    def left(self) -> float:
        return max(0.0, self.total - self.spent)

    def charge(self, seconds: float, *, why: str, context: RequestContext | None) -> None:
        """Count a wait that is about to start; raise ``RetryBudgetSpent`` instead if over."""
        seconds = max(0.0, seconds)
        if self.spent + seconds > self.total:
            last = f"{self.last.detail}; " if self.last is not None else ""
            raise RetryBudgetSpent(
                context,
                f"{last}{why} would take {seconds:.1f} s more, but only {self.left:.1f} s are "
                f"left of the retry budget of {self.total:g} s (already waited {self.spent:.1f} s)",
                last=self.last,
            ) from self.last
        self.spent += seconds
