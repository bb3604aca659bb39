"""Due dates (Art. 12(3) GDPR, periods per Regulation 1182/71 Art. 3(2)(c)) and received dates."""

from __future__ import annotations

import calendar
from datetime import date, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sar_bulk.run.deadlines import (
    Deadline,
    Urgency,
    add_months,
    days_left,
    due_date,
    parse_received,
    urgency,
)


@pytest.mark.parametrize(
    ("received", "due"),
    [
        (date(2026, 1, 31), date(2026, 2, 28)),  # February is short: its last day
        (date(2028, 1, 31), date(2028, 2, 29)),  # leap year
        (date(2028, 1, 29), date(2028, 2, 29)),
        (date(2026, 1, 29), date(2026, 2, 28)),
        (date(2026, 3, 31), date(2026, 4, 30)),  # 31 -> a 30-day month
        (date(2026, 4, 30), date(2026, 5, 30)),  # 30 -> a 31-day month: the same date
        (date(2026, 3, 15), date(2026, 4, 15)),
        (date(2026, 12, 31), date(2027, 1, 31)),  # across the year
        (date(2026, 12, 15), date(2027, 1, 15)),
    ],
)
def test_one_month_is_the_same_date_or_the_last_day_of_a_short_month(
    received: date, due: date
) -> None:
    assert due_date(received, extended=False) == due


@pytest.mark.parametrize(
    ("received", "due"),
    [
        (date(2026, 11, 30), date(2027, 2, 28)),
        (date(2027, 11, 30), date(2028, 2, 29)),
        (date(2026, 1, 31), date(2026, 4, 30)),
        (date(2026, 5, 31), date(2026, 8, 31)),
        (date(2026, 10, 1), date(2027, 1, 1)),
    ],
)
def test_an_extension_makes_it_three_months(received: date, due: date) -> None:
    assert due_date(received, extended=True) == due
    assert Deadline.from_received(received, " complex request ") == Deadline(
        received, due, "complex request"
    )


def test_a_blank_extension_reason_is_no_extension() -> None:
    deadline = Deadline.from_received(date(2026, 1, 31), "  ")
    assert deadline == Deadline(date(2026, 1, 31), date(2026, 2, 28), None)


@given(st.dates(min_value=date(1900, 1, 1), max_value=date(9000, 1, 1)), st.integers(0, 24))
def test_add_months_lands_on_the_same_day_or_the_last_of_the_month(
    start: date, months: int
) -> None:
    end = add_months(start, months)
    assert (end.year * 12 + end.month) - (start.year * 12 + start.month) == months
    last = calendar.monthrange(end.year, end.month)[1]
    assert end.day == min(start.day, last)
    assert end >= start


def test_days_left_and_urgency() -> None:
    due = date(2026, 3, 10)
    assert days_left(due, date(2026, 3, 10)) == 0
    assert days_left(due, date(2026, 3, 12)) == -2
    assert urgency(due, date(2026, 3, 11)) is Urgency.OVERDUE
    assert urgency(due, date(2026, 3, 10)) is Urgency.DUE_SOON
    assert urgency(due, date(2026, 3, 3)) is Urgency.DUE_SOON
    assert urgency(due, date(2026, 3, 2)) is Urgency.LATER


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-01-31", date(2026, 1, 31)),
        (" 2026-01-31 ", date(2026, 1, 31)),
        ("2026-01-31T23:59", date(2026, 1, 31)),
        ("2026-01-31T23:59:59Z", date(2026, 1, 31)),
        ("2026-01-31T08:00:00+02:00", date(2026, 1, 31)),
        ("2026-01-31T08:00:00.123-05:00", date(2026, 1, 31)),
    ],
)
def test_iso_dates_and_date_times(text: str, expected: date) -> None:
    assert parse_received(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "\uff12\uff10\uff12\uff16-01-31",
        "31/01/2026",
        "01/31/2026",
        "2026-02-30",
        "2026-13-01",
        "2026-1-5",
        "26-01-31",
        "2026-01-31T25:00",
        "2026-01-31T10:61",
        "2026-01-31 10:00",
        "yesterday",
        "2026-01-31x",
    ],
)
def test_anything_else_is_refused_by_default(text: str) -> None:
    with pytest.raises(ValueError, match="date"):
        parse_received(text)


def test_a_named_format_is_used_exactly() -> None:
    assert parse_received("31/01/2026", "%d/%m/%Y") == date(2026, 1, 31)
    with pytest.raises(ValueError, match="format '%d/%m/%Y'"):
        parse_received("2026-01-31", "%d/%m/%Y")


def test_a_future_date_is_refused() -> None:
    today = date(2026, 5, 1)
    assert parse_received("2026-05-01", today=today) == today
    with pytest.raises(ValueError, match="in the future"):
        parse_received("2026-05-02", today=today)


@given(st.dates(min_value=date(1000, 1, 1), max_value=date(9999, 12, 31)))
def test_every_iso_date_round_trips(day: date) -> None:
    assert parse_received(day.isoformat()) == day
    assert parse_received(f"{day.isoformat()}T12:30:00Z") == day


@given(st.text(max_size=40))
def test_any_text_parses_or_raises_value_error(text: str) -> None:
    try:
        found = parse_received(text, today=date(2026, 1, 1))
    except ValueError:
        return
    assert found <= date(2026, 1, 1)
    assert found.isoformat() == text.strip()[:10]


@given(st.dates(max_value=date(2026, 1, 1)), st.integers(1, 3000))
def test_days_left_counts_calendar_days(day: date, n: int) -> None:
    assert days_left(day + timedelta(days=n), day) == n
