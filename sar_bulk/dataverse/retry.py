"""Backoff policy: a pure function from the attempt number to a delay.

Usage::

    policy = RetryPolicy(base=0.5, cap=60.0, attempts=8, budget=600.0)
    delay = policy.backoff(attempt=3, rng=random.Random())

Exponential backoff with *full jitter* (the delay is drawn uniformly from ``[0, min(cap, base *
2**attempt)]``), which spreads retries of many tasks out instead of synchronising them; see
https://aws.amazon.com/blogs/architecture/exponential-backoff-and-jitter/. Throttled answers do not
use this: they wait for the server's Retry-After (see ``throttle.py``), and only count against the
total ``budget`` of waiting that one (contact, type) may spend.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

__all__ = ["RetryPolicy"]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how long to retry one page fetch.

    ``attempts`` counts failed tries of transient faults (so 8 means 7 retries); ``budget`` is the
    total seconds one (contact, type) may spend waiting on backoff and Retry-After together.
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

    def ceiling(self, attempt: int) -> float:
        """The largest delay after the ``attempt``-th failure (1-based)."""
        # min() before the power would be nicer, but 2.0**attempt only overflows past ~1000
        # attempts, far above any sane setting; clamp the exponent anyway.
        return min(self.cap, self.base * 2.0 ** min(attempt - 1, 64))

    def backoff(self, attempt: int, rng: random.Random) -> float:
        """A full-jitter delay after the ``attempt``-th failure (1-based)."""
        return rng.uniform(0.0, self.ceiling(attempt))

    def gives_up(self, attempt: int) -> bool:
        """True when ``attempt`` failures use up the attempts."""
        return attempt >= self.attempts
