"""The contacts CSV's optional columns: received date, extension reason, name."""

from __future__ import annotations

import io
import uuid
from datetime import date

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sar_bulk.errors import InputError
from sar_bulk.run.contacts import ContactReader, ContactRow, RejectedRow
from sar_bulk.run.deadlines import Deadline

TODAY = date(2026, 6, 1)
A = str(uuid.UUID(int=1))
B = str(uuid.UUID(int=2))
C = str(uuid.UUID(int=3))


def read(text: str, **options: object) -> list[ContactRow | RejectedRow]:
    reader = ContactReader(io.BytesIO(text.encode()), today=TODAY, **options)  # type: ignore[arg-type]
    return list(reader)


def test_known_headers_are_found_in_any_case() -> None:
    text = (
        "Full_Name,ContactId,Date_Received,EXTENSION\n"
        f"Ada,{A},2026-01-31,\nBob,{B},2026-01-31,many\n"
    )
    reader = ContactReader(io.BytesIO(text.encode()), today=TODAY)
    rows = list(reader)
    assert rows == [
        ContactRow(2, A, Deadline(date(2026, 1, 31), date(2026, 2, 28)), "Ada"),
        ContactRow(3, B, Deadline(date(2026, 1, 31), date(2026, 4, 30), "many"), "Bob"),
    ]
    assert reader.optional_columns == {
        "received": "column 'Date_Received' (3 of 4)",
        "extension": "column 'EXTENSION' (4 of 4)",
        "name": "column 'Full_Name' (1 of 4)",
    }
    assert reader.column_description == "column 'ContactId' (2 of 4)"


def test_date_columns_never_become_the_id_column_when_sniffing() -> None:
    # No id header: the id column is sniffed; the received column holds dates, not GUIDs.
    text = f"received,who\n2026-05-01,{A}\n2026-05-02,{B}\n"
    reader = ContactReader(io.BytesIO(text.encode()), today=TODAY)
    rows = list(reader)
    assert reader.column_description == "column 'who' (2 of 2)"
    assert [r.deadline.received for r in rows if isinstance(r, ContactRow) and r.deadline] == [
        date(2026, 5, 1),
        date(2026, 5, 2),
    ]


def test_named_columns_win_and_an_unknown_name_is_an_input_error() -> None:
    text = f"id,asked on,why\n{A},2026-03-31,complex\n"
    rows = read(text, received_column="Asked On", extension_column="why")
    assert rows == [ContactRow(2, A, Deadline(date(2026, 3, 31), date(2026, 6, 30), "complex"))]
    with pytest.raises(InputError, match="no column named 'arrived'"):
        read(text, received_column="arrived")


def test_the_id_column_cannot_be_the_received_column() -> None:
    with pytest.raises(InputError, match=r"received column .* is its id column"):
        read(f"id\n{A}\n", received_column="id")


def test_a_named_column_needs_a_header() -> None:
    with pytest.raises(InputError, match="no header line"):
        read(f"{A},2026-01-01\n", received_column="received")


def test_bad_and_future_dates_reject_their_row_with_the_line() -> None:
    text = f"id,received\n{A},31/01/2026\n{B},2026-06-02\n{C},\n"
    rows = read(text)
    assert rows == [
        RejectedRow(2, "received date: not an ISO date (YYYY-MM-DD)", "31/01/2026"),
        RejectedRow(3, "received date: in the future", "2026-06-02"),
        ContactRow(4, C),  # an empty cell: not known, not wrong
    ]


def test_a_received_format_reads_exactly_that_format() -> None:
    text = f"id,received\n{A},31/01/2026\n{B},2026-01-31\n"
    rows = read(text, received_format="%d/%m/%Y")
    assert rows[0] == ContactRow(2, A, Deadline(date(2026, 1, 31), date(2026, 2, 28)))
    assert rows[1] == RejectedRow(
        3, "received date: not a date in the format '%d/%m/%Y'", "2026-01-31"
    )


def test_a_short_row_has_no_deadline_and_no_name() -> None:
    assert read(f"id,name,received\n{A}\n") == [ContactRow(2, A)]


def test_without_optional_columns_rows_are_as_before() -> None:
    assert read(f"id,other\n{A},x\n") == [ContactRow(2, A)]


@given(st.dates(max_value=TODAY), st.text(alphabet="abc xyz", max_size=20))
def test_any_past_date_and_reason_round_trip(day: date, reason: str) -> None:
    rows = read(f"id,received,extension_reason\n{A},{day.isoformat()},{reason}\n")
    assert rows == [ContactRow(2, A, Deadline.from_received(day, reason or None))]
