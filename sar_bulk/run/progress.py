"""The progress line on a terminal: contacts done of those to do, requests per second, pauses, ETA.

It only reads the engine's counters, redrawn in place on standard error a few times a second;
it is off when standard error is not a terminal (containers, cron) or with ``--no-progress``.

The total counts only contacts this run has to do: rows of other shards, duplicates, rejected
rows and contacts already done by an earlier run are left out, so the line reaches 100 % when
the run ends. While the identity's gate is closed after a 429 the line says so ("paused 12 s:
service protection"), so a run that waits is not taken for one that hangs. With several
identities (``[[identities]]``) the counts are their sums, "paused" means every live identity is
paused, and a note says how many identities are still live ("identities 2/3").
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, TextIO

from sar_bulk.run.report import RunTotals

__all__ = ["Progress", "StatsView", "format_progress"]


class StatsView(Protocol):
    """The request counts the line reads: one identity's ``FetchStats``, or a pool's sums."""

    @property
    def requests(self) -> int: ...

    @property
    def throttled(self) -> int: ...


@dataclass(frozen=True, slots=True)
class _Snapshot:
    at: float
    requests: int


def format_progress(
    totals: RunTotals,
    stats: StatsView,
    *,
    expected: int | None,
    rate: float,
    elapsed: float,
    paused: float = 0.0,
    final: bool = False,
    note: str = "",
) -> str:
    """One progress line (no newline).

    ``expected`` is the number of data rows the input is believed to hold (``None``: unknown),
    ``paused`` the seconds until the throttle's gate opens, ``final`` true for the last draw.
    """
    done = totals.succeeded + totals.failed
    to_do = _to_do(totals, expected, final=final)
    count = f"contacts {done}"
    eta = ""
    if to_do is not None:
        share = 100.0 * done / to_do if to_do else 100.0
        count = f"contacts {done}/{to_do} ({share:.0f} %)"
        if done and elapsed > 0 and done < to_do:
            eta = f" | ETA {_duration((to_do - done) * elapsed / done)}"
    notes = [f"{totals.failed} failed", f"{totals.rejected} rejected"]
    if totals.skipped_done:
        notes.append(f"{totals.skipped_done} done before")
    pause = f" | paused {math.ceil(paused)} s: service protection" if paused > 0 else ""
    extra = f" | {note}" if note else ""
    return (
        f"{count} ({', '.join(notes)})"
        f" | {rate:5.1f} req/s | {stats.throttled} throttled{pause}{extra}"
        f" | {_duration(elapsed)}{eta}"
    )


def _to_do(totals: RunTotals, expected: int | None, *, final: bool) -> int | None:
    """Contacts this run has to fetch: the rows less those it will not (or need not) fetch."""
    done = totals.succeeded + totals.failed
    claimed = totals.contacts - totals.skipped_done  # read, unique, not done before: to fetch
    if final and done >= claimed:
        return done  # every contact read is finished: the input's true size is known now
    if expected is None:
        return None
    not_to_do = totals.other_shards + totals.duplicates + totals.rejected + totals.skipped_done
    # ``expected`` counts lines (blank ones too), so it can be an over-estimate until the end.
    return max(done, claimed, max(expected, totals.rows_read) - not_to_do)


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
        stats: StatsView,
        *,
        out: TextIO,
        clock: Callable[[], float],
        expected: int | None = None,
        interval: float = 0.5,
        paused: Callable[[], float] = lambda: 0.0,
        note: Callable[[], str] = lambda: "",
    ) -> None:
        self._totals = totals
        self._stats = stats
        self._out = out
        self._clock = clock
        self.expected = expected
        self._interval = interval
        self._paused = paused
        self._note = note
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
            self.draw(final=True)
            self._out.write("\n")
            self._out.flush()

    def draw(self, *, final: bool = False) -> None:
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
            paused=0.0 if final else self._paused(),
            final=final,
            note=self._note(),
        )
        self._out.write("\r" + line.ljust(self._width))
        self._out.flush()
        self._width = len(line)
