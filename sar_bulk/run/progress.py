"""The progress line on a terminal: contacts done/failed/total, requests per second, ETA.

It only reads the engine's counters, redrawn in place on standard error a few times a second;
it is off when standard error is not a terminal (containers, cron) or with ``--no-progress``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import TextIO

from sar_bulk.dataverse.fetcher import FetchStats
from sar_bulk.run.report import RunTotals

__all__ = ["Progress", "format_progress"]


@dataclass(frozen=True, slots=True)
class _Snapshot:
    at: float
    requests: int


def format_progress(
    totals: RunTotals,
    stats: FetchStats,
    *,
    expected: int | None,
    rate: float,
    elapsed: float,
) -> str:
    """One progress line (no newline)."""
    done = totals.finished
    total = f"/{expected}" if expected else ""
    eta = ""
    if expected and done and elapsed > 0:
        remaining = max(0.0, (expected - done) * elapsed / done)
        eta = f" | ETA {_duration(remaining)}"
    return (
        f"contacts {done}{total} ({totals.failed} failed, {totals.rejected} rejected)"
        f" | {rate:5.1f} req/s | {stats.throttled} throttled | {_duration(elapsed)}{eta}"
    )


def _duration(seconds: float) -> str:
    whole = int(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


class Progress:
    """Redraws the line every ``interval`` seconds until stopped."""

    def __init__(
        self,
        totals: RunTotals,
        stats: FetchStats,
        *,
        out: TextIO,
        clock: Callable[[], float],
        expected: int | None = None,
        interval: float = 0.5,
    ) -> None:
        self._totals = totals
        self._stats = stats
        self._out = out
        self._clock = clock
        self.expected = expected
        self._interval = interval
        self._started = clock()
        self._last = _Snapshot(self._started, 0)
        self._rate = 0.0
        self._width = 0

    async def run(self) -> None:
        try:
            while True:
                await asyncio.sleep(self._interval)
                self.draw()
        finally:
            self.draw()
            self._out.write("\n")
            self._out.flush()

    def draw(self) -> None:
        now = self._clock()
        requests = self._stats.requests
        if now - self._last.at >= 1.0:
            # Smooth the rate over about a second so the number is readable.
            self._rate = (requests - self._last.requests) / (now - self._last.at)
            self._last = _Snapshot(now, requests)
        line = format_progress(
            self._totals,
            self._stats,
            expected=self.expected,
            rate=self._rate,
            elapsed=now - self._started,
        )
        self._out.write("\r" + line.ljust(self._width))
        self._out.flush()
        self._width = len(line)
