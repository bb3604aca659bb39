"""When a subject-access request must be answered: received date in, due date and days left out.

Pure functions, no clock of their own (``today`` is passed in, so tests and ``sar-bulk status``
decide what "today" is)::

    received = parse_received("2026-01-31")                 # date(2026, 1, 31)
    due = due_date(received, extended=False)                # date(2026, 2, 28)
    days_left(due, today=date(2026, 2, 20))                 # 8 (negative: overdue)
    urgency(due, today)                                      # Urgency.DUE_SOON

Article 12(3) GDPR: the controller answers "without undue delay and in any event within one
month of receipt of the request"; the period "may be extended by two further months where
necessary", with the reasons given to the subject. The CSV's extension column carries that reason:
a row with one is due three months after receipt.

How a period of months ends is not in the GDPR itself but in Regulation (EEC, Euratom) No 1182/71
determining the rules applicable to periods, dates and time limits, Article 3(2)(c): a period
expressed in months ends with the expiry of the last hour of the day in the last month having the
same date as the day from which the period runs; if that month has no such day, the period ends at
the last day of that month. So 31 January is due 28 February (29 in a leap year), 30 April is due
30 May, 15 March is due 15 April. (Art. 3(4), moving an end that falls on a weekend or public
holiday to the next working day, is not applied: holidays differ per member state, and answering
a day early is always lawful.)

Received dates: ISO ``YYYY-MM-DD`` or an ISO date-time ``YYYY-MM-DDTHH:MM[:SS][Z|±hh:mm]`` (the
calendar date as written is the day of receipt; no time-zone conversion), or exactly the
``strptime`` format the user names with ``--received-format``. ``DD/MM/YYYY`` is not guessed: 03/04
is March or April depending on who wrote it, and a wrong guess moves a legal deadline.
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum
from typing import Final

__all__ = [
    "DUE_SOON_DAYS",
    "EXTENSION_MONTHS",
    "Deadline",
    "Urgency",
    "add_months",
    "days_left",
    "due_date",
    "latest_date",
    "parse_received",
    "urgency",
]

DUE_SOON_DAYS: Final = 7
"""A request due within this many days (today included) is "due soon"."""
ANSWER_MONTHS: Final = 1
EXTENSION_MONTHS: Final = 2

# The easternmost time zone (Kiribati's Line Islands): no calendar date anywhere runs ahead of it.
_EASTERNMOST: Final = timedelta(hours=14)

_ISO: Final = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})"
    r"(?:T(\d{2}):(\d{2})(?::(\d{2})(?:\.\d{1,6})?)?(?:Z|[+-]\d{2}:\d{2})?)?",
    re.ASCII,  # int() reads Arabic-Indic or full-width digits too: only ASCII ones are dates
)


class Urgency(StrEnum):
    """Where a deadline stands relative to today."""

    OVERDUE = "overdue"
    DUE_SOON = "due_soon"
    LATER = "later"


@dataclass(frozen=True, slots=True)
class Deadline:
    """A contact's request: received, due, and the reason for an extension (None: none)."""

    received: date
    due: date
    extension_reason: str | None = None

    @classmethod
    def from_received(cls, received: date, extension_reason: str | None = None) -> Deadline:
        reason = extension_reason.strip() if extension_reason else None
        return cls(received, due_date(received, extended=bool(reason)), reason or None)


def add_months(start: date, months: int) -> date:
    """``start`` plus ``months`` calendar months, ending on the month's last day when it is short.

    Regulation 1182/71, Art. 3(2)(c): the same date in the last month, or that month's last day
    when it has no such date.
    """
    if months < 0:
        raise ValueError("months must not be negative")
    index = start.year * 12 + (start.month - 1) + months
    year, month = divmod(index, 12)
    month += 1
    last = calendar.monthrange(year, month)[1]
    return date(year, month, min(start.day, last))


def due_date(received: date, *, extended: bool) -> date:
    """One month after receipt (Art. 12(3) GDPR); three with an extension (two further)."""
    return add_months(received, ANSWER_MONTHS + (EXTENSION_MONTHS if extended else 0))


def days_left(due: date, today: date) -> int:
    """Days from ``today`` to ``due``: 0 on the due day, negative once overdue."""
    return (due - today).days


def urgency(due: date, today: date, *, soon: int = DUE_SOON_DAYS) -> Urgency:
    """Overdue (past the due day), due soon (within ``soon`` days) or later."""
    left = days_left(due, today)
    if left < 0:
        return Urgency.OVERDUE
    if left <= soon:
        return Urgency.DUE_SOON
    return Urgency.LATER


def latest_date(now: datetime) -> date:
    """The latest calendar date anywhere on Earth at ``now`` (naive: taken as UTC).

    A received date is a date without a zone, written where the controller is. At 22:00 UTC it
    is already tomorrow from UTC+2 eastwards, so "after today" must mean after this date, or a
    request logged there today is taken for one from the future.
    """
    utc = now.replace(tzinfo=UTC) if now.tzinfo is None else now.astimezone(UTC)
    return (utc + _EASTERNMOST).date()


def parse_received(text: str, fmt: str | None = None, *, today: date | None = None) -> date:
    """The date a request was received, from a CSV cell; ``ValueError`` saying why not.

    The error's message never quotes the cell (it goes into reports and logs): the caller shows
    a safe preview of it.

    ``fmt`` None accepts ISO only (see the module docstring); otherwise exactly that
    ``strptime`` format. With ``today``, a date after it is refused: a request cannot be
    received in the future, and such a date is a typo (or a swapped day and month).
    """
    cell = text.strip()
    if not cell:
        raise ValueError("empty date")
    if fmt is None:
        match = _ISO.fullmatch(cell)
        if match is None:
            raise ValueError("not an ISO date (YYYY-MM-DD)")
        try:
            found = date(int(match[1]), int(match[2]), int(match[3]))
            if match[4] is not None:
                datetime(found.year, found.month, found.day, int(match[4]), int(match[5]))
                if match[6] is not None and int(match[6]) > 59:
                    raise ValueError("second out of range")
        except ValueError as exc:
            raise ValueError(f"not a valid date ({exc})") from None
    else:
        try:
            found = datetime.strptime(cell, fmt).date()
        except ValueError:
            raise ValueError(f"not a date in the format {fmt!r}") from None
    if today is not None and found > today:
        raise ValueError("in the future")
    return found
