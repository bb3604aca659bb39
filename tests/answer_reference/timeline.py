"""Reference copy of the answer code before its speed work (see __init__).

The timeline picture: interactions per month as an inline SVG bar chart (no script, no fonts).

Usage::

    svg = timeline_svg(view.monthly)      # "" when there is nothing to draw

Every month between the first and the last is drawn, empty ones as gaps, so the picture shows
when the organisation was active and when not. The SVG scales to its container (``viewBox`` and
``width: 100%``), each bar has a ``<title>`` with its month and count, and the figure carries a
text description for screen readers. ``month_rows`` gives the same numbers for the text version.
"""

from __future__ import annotations

from html import escape
from typing import Final

__all__ = ["month_rows", "timeline_svg"]

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
_HEIGHT: Final = 172
_TOP: Final = 16
_BOTTOM: Final = 40
_LEFT: Final = 44


def month_rows(monthly: tuple[tuple[str, int], ...]) -> list[tuple[str, int]]:
    """Every month from the first to the last (``"2024-03"``), with 0 for months without any."""
    if not monthly:
        return []
    counts = dict(monthly)
    first, last = monthly[0][0], monthly[-1][0]
    year, month = int(first[:4]), int(first[5:7])
    rows: list[tuple[str, int]] = []
    while f"{year:04d}-{month:02d}" <= last:
        key = f"{year:04d}-{month:02d}"
        rows.append((key, counts.get(key, 0)))
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return rows


def _month_name(key: str) -> str:
    return f"{_MONTHS[int(key[5:7]) - 1]} {key[:4]}"


def timeline_svg(monthly: tuple[tuple[str, int], ...]) -> str:
    rows = month_rows(monthly)
    if not rows:
        return ""
    peak = max(count for _, count in rows) or 1
    step = max(6.0, min(28.0, 760.0 / len(rows)))
    width = _LEFT + step * len(rows) + 8
    plot = _HEIGHT - _TOP - _BOTTOM
    description = (
        f"Bar chart of your interactions per month, from {_month_name(rows[0][0])} to "
        f"{_month_name(rows[-1][0])}; the busiest month had {peak:,}."
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
    for n, (key, count) in enumerate(rows):
        x = _LEFT + n * step
        height = plot * count / peak
        if count:
            parts.append(
                f'<rect x="{x + 1:.1f}" y="{_TOP + plot - height:.1f}" width="{step - 2:.1f}" '
                f'height="{max(height, 1.0):.1f}"><title>{escape(_month_name(key))}: '
                f"{count:,}</title></rect>"
            )
        # The first bar names its year unless a January follows too closely to fit both labels.
        first_label = n == 0 and not any(k.endswith("-01") for k, _ in rows[1 : 1 + int(40 / step)])
        if step >= 24:
            # Room for the month under each bar; the year then goes below it.
            parts.append(
                f'<text x="{x + step / 2:.1f}" y="{_HEIGHT - 18}" text-anchor="middle">'
                f"{_MONTHS[int(key[5:7]) - 1]}</text>"
            )
        if key.endswith("-01") or first_label:
            parts.append(
                f'<text x="{x + 1:.1f}" y="{_HEIGHT - 2}">{escape(key[:4])}</text>'
                f'<line x1="{x:.1f}" y1="{_TOP + plot}" x2="{x:.1f}" y2="{_TOP + plot + 5}" '
                'class="axis"/>'
            )
    parts.append("</svg>")
    return "".join(parts)
