"""The timeline picture: interactions per month as an inline SVG bar chart (no script, no fonts).

Usage::

    svg = timeline_svg(view.monthly)      # "" when there is nothing to draw

Every month between the first and the last is drawn, empty ones as gaps, so the picture shows
when the organisation was active and when not; a stretch of ``GAP_MONTHS`` or more without any
is drawn as one "≈" slot (``timeline_rows``), so one stray date (.NET's DateTime.MinValue,
0001-01-01, stands for "no date" in real data) cannot stretch it over two thousand years. The
SVG scales to its container (``viewBox`` and ``width: 100%``), each bar has a ``<title>`` with
its month and count, and the figure carries a text description for screen readers.
``timeline_rows`` gives the same slots to the text version.
"""

from __future__ import annotations

import functools
from html import escape
from typing import Final, NamedTuple

__all__ = ["GAP_MONTHS", "Slot", "month_rows", "timeline_rows", "timeline_svg"]

GAP_MONTHS: Final = 24
"""Empty months in a row from which they are shown as one gap."""

_MONTHS: Final = (
    "Jan",
    "Feb",
    "Mar",
    "Apr",
    "May",
    "Jun",
    "Jul",
    "Aug",
    "Sep",
    "Oct",
    "Nov",
    "Dec",
)
_SUFFIXES: Final = tuple(f"-{month:02d}" for month in range(1, 13))
_LAST_YEAR: Final = 9999
_HEIGHT: Final = 172
_TOP: Final = 16
_BOTTOM: Final = 40
_LEFT: Final = 44
_PLOT: Final = _HEIGHT - _TOP - _BOTTOM
_CACHED_MONTHS: Final = 1200  # a hundred years: longer timelines are worked out, not kept


def month_rows(monthly: tuple[tuple[str, int], ...]) -> list[tuple[str, int]]:
    """Every month from the first to the last (``"2024-03"``), with 0 for months without any."""
    if not monthly:
        return []
    counts = dict(monthly)
    first, last = monthly[0][0], monthly[-1][0]
    year, month = int(first[:4]), int(first[5:7])
    rows: list[tuple[str, int]] = []
    # Month keys compare as text; the years stop at 9999 (datetime's last), where "10000-01"
    # would sort before "9999-12" and the months would never end.
    while year <= _LAST_YEAR:
        if not 1 <= month <= 12:  # not a key the builder makes: one month at a time
            key = f"{year:04d}-{month:02d}"
            if key > last:
                break
            rows.append((key, counts.get(key, 0)))
            year, month = (year + 1, 1) if month == 12 else (year, month + 1)
            continue
        prefix = f"{year:04d}"
        for suffix in _SUFFIXES[month - 1 :]:
            key = prefix + suffix
            if key > last:
                return rows
            rows.append((key, counts.get(key, 0)))
        year, month = year + 1, 1
    return rows


class Slot(NamedTuple):
    """One place of the timeline: a month and its count, or a gap from ``key`` to ``until``."""

    key: str
    interactions: int
    until: str = ""


@functools.lru_cache(maxsize=4096)
def _key(index: int) -> str:
    return f"{index // 12:04d}-{index % 12 + 1:02d}"


@functools.lru_cache(maxsize=2)  # the page and the text draw the same contact's months in turn
def timeline_rows(monthly: tuple[tuple[str, int], ...]) -> tuple[Slot, ...]:
    """``month_rows`` with each run of ``GAP_MONTHS`` or more empty months as one gap slot."""
    slots: list[Slot] = []
    previous = -2
    for key, count in monthly:
        index = int(key[:4]) * 12 + int(key[5:7]) - 1
        if index != previous + 1 and slots:
            after, before = previous + 1, index - 1
            if before - after + 1 >= GAP_MONTHS:
                slots.append(Slot(_key(after), 0, _key(before)))
            else:
                slots += [Slot(_key(n), 0) for n in range(after, before + 1)]
        slots.append(Slot(key, count))
        previous = index
    return tuple(slots)


def _month_name(key: str) -> str:
    return f"{_MONTHS[int(key[5:7]) - 1]} {key[:4]}"


@functools.lru_cache(maxsize=1024)
def _bar_title(key: str) -> str:
    """A bar's title, "Mar 2024": the same few hundred months on every contact's picture."""
    return escape(_month_name(key))


def _step(months: int) -> float:
    """The width of one month's bar and gap."""
    return max(6.0, min(28.0, 760.0 / months))


@functools.lru_cache(maxsize=256)
def _places(months: int) -> tuple[tuple[str, str, str], ...]:
    """Each bar's x as text: its left edge, its slot's start and its middle."""
    step = _step(months)
    places: list[tuple[str, str, str]] = []
    for n in range(months):
        x = _LEFT + n * step
        places.append((f"{x + 1:.1f}", f"{x:.1f}", f"{x + step / 2:.1f}"))
    return tuple(places)


@functools.lru_cache(maxsize=8192)
def _bar(count: int, peak: int) -> tuple[str, str]:
    """A bar's top and height as text."""
    height = _PLOT * count / peak
    return f"{_TOP + _PLOT - height:.1f}", f"{max(height, 1.0):.1f}"


def timeline_svg(monthly: tuple[tuple[str, int], ...]) -> str:
    rows = timeline_rows(monthly)
    if not rows:
        return ""
    peak = max(slot.interactions for slot in rows) or 1
    step = _step(len(rows))
    width = _LEFT + step * len(rows) + 8
    plot = _PLOT
    gaps = any(slot.until for slot in rows)
    description = (
        f"Bar chart of your interactions per month, from {_month_name(rows[0].key)} to "
        f"{_month_name(rows[-1].key)}; the busiest month had {peak:,}."
        + (
            f" Stretches of {GAP_MONTHS} months or more without any are shortened to one gap (≈)."
            if gaps
            else ""
        )
    )
    parts = [
        f'<svg class="timeline" viewBox="0 0 {width:.0f} {_HEIGHT}" role="img" '
        f'preserveAspectRatio="xMinYMin meet" aria-label="{escape(description, quote=True)}" xmlns="http://www.w3.org/2000/svg">',
        f"<title>{escape(description)}</title>",
        f'<line x1="{_LEFT - 4}" y1="{_TOP + plot}" x2="{width:.0f}" y2="{_TOP + plot}" '
        'class="axis"/>',
        f'<text x="{_LEFT - 8}" y="{_TOP + 4}" text-anchor="end">{peak:,}</text>',
        f'<text x="{_LEFT - 8}" y="{_TOP + plot}" text-anchor="end">0</text>',
    ]
    # The first bar names its year unless a January follows too closely to fit both labels.
    first_label = not any(slot.key.endswith("-01") for slot in rows[1 : 1 + int(40 / step)])
    bottom = _TOP + plot
    bar_width = f"{step - 2:.1f}"
    # The bars' places depend only on how many months there are, their heights only on the
    # count and the peak: both repeat from contact to contact, so their numbers are kept.
    places = _places(len(rows)) if len(rows) <= _CACHED_MONTHS else _places.__wrapped__(len(rows))
    after_gap = False
    for n, (key, count, until) in enumerate(rows):
        left, x, middle = places[n]
        if until:
            parts.append(
                f'<text x="{middle}" y="{bottom + 4}" text-anchor="middle"><title>No '
                f"interactions from {_bar_title(key)} to {_bar_title(until)}</title>≈</text>"
            )
            after_gap = True
            continue
        if count:
            top, height = _bar(count, peak)
            parts.append(
                f'<rect x="{left}" y="{top}" width="{bar_width}" height="{height}"><title>'
                f"{_bar_title(key)}: {count:,}</title></rect>"
            )
        if step >= 24:
            # Room for the month under each bar; the year then goes below it.
            parts.append(
                f'<text x="{middle}" y="{_HEIGHT - 18}" text-anchor="middle">'
                f"{_MONTHS[int(key[5:7]) - 1]}</text>"
            )
        if key.endswith("-01") or (n == 0 and first_label) or after_gap:
            parts.append(
                f'<text x="{left}" y="{_HEIGHT - 2}">{escape(key[:4])}</text>'
                f'<line x1="{x}" y1="{bottom}" x2="{x}" y2="{bottom + 5}" '
                'class="axis"/>'
            )
        after_gap = False
    parts.append("</svg>")
    return "".join(parts)
