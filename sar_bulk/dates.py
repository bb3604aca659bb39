"""The optional date range of a request: parsed from what users type, sent as the action wants.

The action takes ``DateFrom``/``DateTo`` as **MM-DD-YYYY**. Users may type that or ISO
``YYYY-MM-DD``; anything else, an impossible date, or a start after the end is a ``ConfigError``.

``DateRange.in_words()`` ("from 4 March 2024 to 30 June 2024") goes into the run's first log line
and its report: 03-04-2024 is 4 March to the action but 3 April to most of Europe, and a misread
range is only visible when the dates are spelled out.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date

from sar_bulk.errors import ConfigError

__all__ = ["MONTHS", "DateRange", "in_words", "parse_date", "to_wire"]

# English month names, not the locale's: the words must read the same on every machine.
MONTHS = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)

_US = re.compile(r"^(\d{2})-(\d{2})-(\d{4})$")
_ISO = re.compile(r"^(\d{4})-(\d{2})-(\d{2})$")


def parse_date(text: str, *, option: str = "date") -> date:
    """Parse MM-DD-YYYY or YYYY-MM-DD; ``option`` names the flag in the error message."""
    value = text.strip()
    if match := _US.match(value):
        month, day, year = (int(g) for g in match.groups())
    elif match := _ISO.match(value):
        year, month, day = (int(g) for g in match.groups())
    else:
        raise ConfigError(f"{option} {text!r} is not a date: use MM-DD-YYYY or YYYY-MM-DD")
    try:
        return date(year, month, day)
    except ValueError as exc:
        raise ConfigError(f"{option} {text!r} is not a real date ({exc})") from None


def to_wire(day: date) -> str:
    """The MM-DD-YYYY form the action expects."""
    return f"{day.month:02d}-{day.day:02d}-{day.year:04d}"


def in_words(day: date) -> str:
    """``4 March 2024``: day, month name, year, so neither order can be misread."""
    return f"{day.day} {MONTHS[day.month - 1]} {day.year}"


@dataclass(frozen=True, slots=True)
class DateRange:
    """An optional start and end day (whole UTC days); either may be open."""

    start: date | None = None
    end: date | None = None

    def __post_init__(self) -> None:
        if self.start and self.end and self.start > self.end:
            raise ConfigError(
                f"--date-from {self.start.isoformat()} is after --date-to "
                f"{self.end.isoformat()}: swap them or widen the range"
            )

    @classmethod
    def parse(cls, date_from: str | None, date_to: str | None) -> DateRange:
        return cls(
            parse_date(date_from, option="--date-from") if date_from else None,
            parse_date(date_to, option="--date-to") if date_to else None,
        )

    @property
    def wire_from(self) -> str | None:
        return to_wire(self.start) if self.start else None

    @property
    def wire_to(self) -> str | None:
        return to_wire(self.end) if self.end else None

    def in_words(self) -> str:
        """The range spelled out: ``from 4 March 2024 to 30 June 2024``, or ``all dates``."""
        if self.start and self.end:
            return f"from {in_words(self.start)} to {in_words(self.end)}"
        if self.start:
            return f"from {in_words(self.start)} on"
        if self.end:
            return f"up to {in_words(self.end)}"
        return "all dates"
