"""``AnswerBuilder``: what it keeps of a contact's streamed rows, whatever their order."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, date, datetime

from answer_samples import CONTACT, PREPARED, small_view
from hypothesis import given
from hypothesis import strategies as st

from sar_bulk.answer import AnswerBuilder, Question, render_html, render_text
from sar_bulk.answer.view import SUMMARY_LIMIT, parse_when
from sar_bulk.sources.interaction_types import ALL_TYPES

ORG = "https://contoso.crm4.dynamics.com"


def _row(n: int, stamp: str | None) -> dict[str, object]:
    return {"InteractionId": str(n), "Timestamp": stamp, "ContactId": CONTACT}


@given(
    seconds=st.lists(st.integers(0, 10**9), max_size=60),
    cap=st.integers(0, 10),
)
def test_keeps_the_newest_rows_newest_first_in_any_order(seconds: list[int], cap: int) -> None:
    builder = AnswerBuilder(CONTACT, Question(ORG), row_cap=cap)
    stamps = [datetime.fromtimestamp(s, UTC).strftime("%Y-%m-%dT%H:%M:%SZ") for s in seconds]
    for n, stamp in enumerate(stamps):
        builder.add_interaction("EmailSent", _row(n, stamp))
    view = builder.build(prepared_at=PREPARED, statement=None)
    sent = next(t for t in view.interactions if t.name == "EmailSent")
    assert sent.count == len(stamps)
    kept = [row["Timestamp"] for row in sent.rows]
    assert kept == sorted(stamps, reverse=True)[:cap]
    assert sent.more == len(stamps) - len(kept)
    assert sum(count for _, count in view.monthly) == len(stamps)
    if stamps:
        assert sent.first == parse_when(min(stamps))
        assert sent.last == parse_when(max(stamps))


def test_rows_without_a_usable_timestamp_are_counted_and_kept_last() -> None:
    builder = AnswerBuilder(CONTACT, Question(ORG), row_cap=5)
    builder.add_interaction("EmailSent", _row(1, None))
    builder.add_interaction("EmailSent", _row(2, "not a date"))
    builder.add_interaction("EmailSent", _row(3, "2024-01-01T00:00:00Z"))
    sent = builder.build(prepared_at=PREPARED, statement=None).interactions
    row = next(t for t in sent if t.name == "EmailSent")
    assert row.count == 3
    assert row.rows[0]["InteractionId"] == "3"
    assert row.first == row.last == datetime(2024, 1, 1, tzinfo=UTC)


def test_every_asked_type_is_listed_and_the_unasked_are_not_searched() -> None:
    question = Question(ORG, types=("EmailSent", "EmailOpened"), sources=("interactions",))
    builder = AnswerBuilder(CONTACT, question)
    builder.add_interaction("EmailOpened", _row(1, "2024-01-01T00:00:00Z"))
    view = builder.build(prepared_at=PREPARED, statement=None)
    assert [t.name for t in view.interactions] == ["EmailSent", "EmailOpened"]
    assert view.empty_types == ("EmailSent",)
    assert [t.name for t in view.held_types] == ["EmailOpened"]
    assert len(question.types_not_searched) == 38
    assert question.sources_not_searched == ("records", "realtime")
    everything = tuple(t.value for t in ALL_TYPES)
    # In canonical order, the same for a list of types, and all 40 when interactions were not
    # asked for (the answer is worked out once per question and kept).
    assert question.types_not_searched == tuple(
        t for t in everything if t not in ("EmailSent", "EmailOpened")
    )
    types: list[str] = ["EmailOpened", "EmailSent"]
    listed = Question(ORG, types=types, sources=("interactions",))  # type: ignore[arg-type]
    assert listed.types_not_searched == question.types_not_searched
    assert (
        Question(ORG, types=everything[:3], sources=("records",)).types_not_searched == everything
    )


def test_records_contact_consent_and_capped_tables() -> None:
    builder = AnswerBuilder(CONTACT, Question(ORG), record_cap=2)
    builder.add_record("contact", {"firstname": "Ada", "lastname": "Lovelace"})
    for n in range(3):
        builder.add_record("msdynmkt_contactpointconsent4s", {"n": n})
        builder.add_record("leads", {"n": n})
    view = builder.build(prepared_at=PREPARED, statement=None, received=date(2024, 5, 1))
    assert view.name == "Ada Lovelace"
    assert view.contact == {"firstname": "Ada", "lastname": "Lovelace"}
    assert view.consent_count == 3
    assert len(view.consents) == 2
    assert view.consent_file == "records/msdynmkt_contactpointconsent4s.json"
    assert [(t.table, t.count, len(t.rows), t.more) for t in view.records] == [("leads", 3, 2, 1)]
    assert view.received == date(2024, 5, 1)
    page, text = render_html(view), render_text(view)
    assert "1 more in <code>records/msdynmkt_contactpointconsent4s.json</code>" in page
    assert "1 more in <code>records/leads.json</code>" in page
    assert "1 more in records/msdynmkt_contactpointconsent4s.json" in text
    assert "1 more in records/leads.json" in text


def test_a_second_consent_table_is_shown_not_dropped() -> None:
    # A custom table of the older consent entity (``[[records.tables]]``) is the person's data
    # too: the answer lists it as a table of its own, its rows counted in the summary.
    builder = AnswerBuilder(CONTACT, Question(ORG))
    builder.add_record("msdynmkt_contactpointconsent4", {"msdynmkt_value": "Opted in"})
    for n in range(2):
        builder.add_record("msdynmkt_contactpointconsent3", {"legacy": f"old consent {n}"})
    view = builder.build(prepared_at=PREPARED, statement=None)
    assert view.consent_count == 1
    assert [(t.table, t.count) for t in view.records] == [("msdynmkt_contactpointconsent3", 2)]
    page, text = render_html(view), render_text(view)
    for output in (page, text):
        assert "old consent 0" in output
        assert "old consent 1" in output


def test_a_given_name_wins_over_the_contact_row() -> None:
    builder = AnswerBuilder(CONTACT, Question(ORG))
    builder.add_record("contact", {"fullname": "A. Lovelace"})
    assert builder.build(prepared_at=PREPARED, statement=None, name="Ada").name == "Ada"
    assert (
        AnswerBuilder(CONTACT, Question(ORG)).build(prepared_at=PREPARED, statement=None).name
        is None
    )


def test_exports_are_summarised_only_when_small_json() -> None:
    builder = AnswerBuilder(CONTACT, Question(ORG))
    small = json.dumps({"Name": "Ada", "Emails": [1, 2], "Address": {"City": "x"}, "X": None})
    big = b"[" + b"1," * SUMMARY_LIMIT + b"1]"
    for name, content in (("a.json", small.encode()), ("b.json", big), ("c.json", b"{oops")):
        builder.add_export(name, len(content), hashlib.sha256(content).hexdigest(), content)
    builder.add_export("d.json", 10, "0" * 64)
    exports = builder.build(prepared_at=PREPARED, statement=None).exports
    assert exports[0].summary == (
        ("Name", "Ada"),
        ("Emails", "2 entries"),
        ("Address", "1 field"),
        ("X", ""),
    )
    assert [e.summary for e in exports[1:]] == [None, None, None]


def test_the_small_sample_has_what_the_renderers_need() -> None:
    view = small_view()
    assert view.name == "Ada Lovelace"
    assert view.total_interactions == 13
    assert view.first == datetime(2023, 3, 4, 13, 10, tzinfo=UTC)
    assert view.last == datetime(2024, 3, 4, 13, 10, tzinfo=UTC)
    assert len(view.empty_types) == 38


def test_a_time_that_leaves_the_calendar_in_utc_is_no_date_and_breaks_nothing() -> None:
    # Year 1 at +01:00 is year 0 in UTC, and 9999-12-31 at -01:00 is year 10000: neither is a
    # datetime. Such a row counts, shows its text as the org sent it, and gives no date.
    early, late = "0001-01-01T00:30:00+01:00", "9999-12-31T23:30:00-01:00"
    assert parse_when(early) is None
    assert parse_when(late) is None
    builder = AnswerBuilder(CONTACT, Question(ORG))
    builder.add_interaction("EmailSent", _row(1, early))
    builder.add_interaction("EmailSent", _row(2, late))
    view = builder.build(prepared_at=PREPARED, statement=None)
    (sent,) = view.held_types
    assert (sent.count, sent.first, sent.last, view.monthly) == (2, None, None, ())
    page, text = render_html(view), render_text(view)
    assert early in page
    assert late in page
    assert early in text
    assert late in text


def test_the_months_of_december_9999_end_the_timeline() -> None:
    from sar_bulk.answer.timeline import month_rows, timeline_svg

    # "10000-01" sorts before "9999-12": the months must stop at the calendar's last one.
    rows = month_rows((("9998-11", 1), ("9999-12", 2)))
    assert rows[0] == ("9998-11", 1)
    assert rows[-1] == ("9999-12", 2)
    assert len(rows) == 14
    assert timeline_svg((("9999-12", 3),)).count("<rect") == 1
    builder = AnswerBuilder(CONTACT, Question(ORG))
    builder.add_interaction("EmailSent", _row(1, "9999-12-31T23:59:59Z"))
    builder.add_interaction("EmailSent", _row(2, "9999-10-01T00:00:00+02:00"))
    view = builder.build(prepared_at=PREPARED, statement=None)
    assert view.monthly == (("9999-09", 1), ("9999-12", 1))
    assert "  9999-12        1  #" in render_text(view)


def test_a_long_stretch_without_interactions_is_one_gap_not_thousands_of_months() -> None:
    # 0001-01-01T00:00:00Z is .NET's DateTime.MinValue, which real data holds for "no date":
    # one such row made the timeline run 2,023 years, README.txt list 24,279 empty months and
    # the picture 145,000 units wide with its two bars too thin to see.
    builder = AnswerBuilder(CONTACT, Question(ORG))
    builder.add_interaction("EmailSent", _row(1, "0001-01-01T00:00:00Z"))
    for n, month in enumerate(("2024-01", "2024-02", "2024-05")):
        builder.add_interaction("EmailSent", _row(n + 2, f"{month}-04T13:10:00Z"))
    view = builder.build(prepared_at=PREPARED, statement=None)
    page, text = render_html(view), render_text(view)
    assert len(text) < 20_000
    lines = text.split("\r\n")
    months = lines[lines.index("Your interactions per month") + 3 :]
    months = months[: months.index("")]
    assert [line.split()[0] for line in months] == [
        "0001-01",
        "...",
        "2024-01",
        "2024-02",
        "2024-03",
        "2024-04",
        "2024-05",
    ]
    assert "no interactions from 0001-02 to 2023-12" in months[1]
    svg = page[page.index("<svg") : page.index("</svg>")]
    width = float(svg.split('viewBox="0 0 ')[1].split()[0])
    assert width < 1000
    assert svg.count("<rect") == 4
    assert "No interactions from Feb 0001 to Dec 2023" in svg
    assert ">2024</text>" in svg  # the year after the gap is named
