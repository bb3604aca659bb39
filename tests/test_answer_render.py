"""index.html and README.txt as text: what a person must read, escaping, structure, caps."""

from __future__ import annotations

import itertools
import re
from datetime import date, datetime, timedelta, timezone
from html.parser import HTMLParser
from typing import Any

import pytest
from answer_samples import (
    CONTACT,
    CONTROLLER,
    HEAVY_TYPES,
    HOSTILE,
    PREPARED,
    empty_view,
    heavy_view,
    small_view,
    statement,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from sar_bulk.answer import (
    AnswerBuilder,
    Question,
    answer_files,
    load_statement,
    render_html,
    render_text,
)
from sar_bulk.answer.fields import long_date, show
from sar_bulk.answer.html import OPEN_ROWS
from sar_bulk.answer.text import TEXT_ROWS
from sar_bulk.answer.wording import MISSING_STATEMENT


class _Shape(HTMLParser):
    """Tags, attributes and text of a page, as a browser's parser would see them."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def _shape(page: str) -> _Shape:
    shape = _Shape()
    shape.feed(page)
    shape.close()
    return shape


def test_small_answer_says_what_a_person_must_read() -> None:
    page = render_html(small_view())
    text = " ".join(" ".join(_shape(page).text).split())
    for expected in (
        "Dear Ada Lovelace,",
        "Your personal data held by Contoso Ltd",
        "Contoso Ltd, 1 Harbour Street, Dublin 2, Ireland",
        "Data Protection Commission",
        "Sending our newsletter",
        "Consent, Article 6(1)(a)",
        "Marketing interactions are deleted 24 months after they happen.",
        "Event partners who share registrations with us.",
        "Lead scoring ranks contacts by e-mail clicks",
        "Standard contractual clauses",
        "Rectification (Article 16)",
        "Erasure (Article 17)",
        "Restriction (Article 18)",
        "Objection (Article 21)",
        "Complaint (Article 77)",
        "You opened an e-mail: 12 times, from 4 March 2023, 13:10 UTC to 12 November 2023",
        "In all, 13 marketing interactions.",
        "We hold no records of the other 38 kinds of marketing interaction",
        "from 1 January 2023 to 30 June 2024",
        "Opted In",
        "that is profiling",
        "https://contoso.crm4.dynamics.com",
    ):
        assert expected in text, expected


def test_every_hostile_value_is_text_never_markup() -> None:
    page = render_html(small_view())
    shape = _shape(page)
    tags = {tag for tag, _ in shape.tags}
    assert "script" not in tags
    assert "img" not in tags
    assert not any(name.startswith("on") for _, attrs in shape.tags for name in attrs)
    # The hostile string arrives whole, as text, in every place it was put.
    assert sum(HOSTILE in chunk for chunk in shape.text) >= 4
    assert "<script" not in page


def test_structure_for_assistive_technology() -> None:
    page = render_html(small_view())
    shape = _shape(page)
    assert page.startswith('<!DOCTYPE html>\n<html lang="en">')
    levels = [int(tag[1]) for tag, _ in shape.tags if re.fullmatch(r"h[1-6]", tag)]
    assert levels[0] == 1
    assert levels.count(1) == 1
    assert all(b <= a + 1 for a, b in itertools.pairwise(levels))
    ths = [attrs for tag, attrs in shape.tags if tag == "th"]
    assert ths
    assert all(attrs.get("scope") in {"col", "row", "colgroup"} for attrs in ths)
    assert sum(tag == "table" for tag, _ in shape.tags) == sum(
        tag == "caption" for tag, _ in shape.tags
    )
    # No fixed widths: the page reflows at any zoom (max-/min-widths are fine).
    css = page.split("</style>")[0]
    assert not re.search(r"(?<![-\w])width:\s*[\d.]+(px|rem|em)", css)


def test_empty_answer_is_one_line_not_forty_tables() -> None:
    page = render_html(empty_view())
    shape = _shape(page)
    text = " ".join(" ".join(shape.text).split())
    assert "We hold no records of this kind about you: none of the 40 kinds" in text
    assert "Period found no dated interactions found" in text
    assert "In all, 0" not in text
    assert "EmailSent" not in page  # no per-type table, heading or anchor
    assert sum(tag == "table" for tag, _ in shape.tags) <= 6
    assert "<svg" not in page


def test_missing_statement_is_said_plainly() -> None:
    for render in (render_html, render_text):
        output = " ".join(render(small_view(with_statement=False)).split())
        assert " ".join(MISSING_STATEMENT.split()[:12]) in output
        assert "Contoso Ltd" not in output
        assert "Complaint (Article 77)" in output


def test_heavy_answer_caps_rows_and_folds_long_types() -> None:
    view = heavy_view()
    page = render_html(view)
    assert page.count("<details>") == len(HEAVY_TYPES)
    for itype in HEAVY_TYPES:
        assert f"300 more in <code>interactions/{itype}.json</code>" in page
    rows = page.count("<tr>")
    assert 5 * 500 < rows < 5 * 500 + 100
    assert len(page) < 2_000_000
    assert OPEN_ROWS < 500


def test_newest_first_with_readable_dates_and_ids_last() -> None:
    page = render_html(small_view())
    opened = page[page.index('id="type-EmailOpened"') :]
    opened = opened[: opened.index("</table>")]
    head = re.findall(r'<th scope="col">([^<]*)</th>', opened)
    assert head[0] == "Timestamp"
    assert head[-1] == "Interaction id"
    dates = re.findall(r'<td class="when">([^<]*)</td>', opened)
    assert dates[:2] == ["12 November 2023, 13:10 UTC", "20 October 2023, 13:10 UTC"]


def test_answer_files_are_the_two_renderings_in_utf8() -> None:
    view = small_view()
    files = answer_files(view)
    assert files == {
        "index.html": render_html(view).encode("utf-8"),
        "README.txt": render_text(view).encode("utf-8"),
    }


def test_readme_is_the_same_answer_in_plain_text() -> None:
    text = render_text(small_view())
    assert "\r\n" in text
    assert "\n" not in text.replace("\r\n", "")
    assert "\r" not in text.replace("\r\n", "")
    assert "\u2028" not in text
    flat = " ".join(text.split())
    for expected in (
        "Dear Ada Lovelace,",
        "Contoso Ltd, 1 Harbour Street",
        "Erasure (Article 17)",
        "Email opened 12 (4 March 2023 to 12 November 2023)",
        "multi line answer with a paragraph break",
        "We hold no records of the other 38 kinds",
        "Opted In",
        "that is profiling",
        "2023-03 2 ####",
        HOSTILE,
    ):
        assert expected in flat, expected


@pytest.mark.parametrize("make", [empty_view, small_view, heavy_view])
def test_readme_stays_short(make: object) -> None:
    view = make()  # type: ignore[operator]
    text = render_text(view)
    assert len(text) < 200_000
    for t in view.held_types:
        if t.count > TEXT_ROWS:
            assert f"{t.count - TEXT_ROWS:,} more in {t.file}" in text


@settings(max_examples=60, deadline=None)
@given(value=st.text(max_size=40), key=st.text(min_size=1, max_size=12))
def test_any_text_in_any_place_stays_text(value: str, key: str) -> None:
    builder = AnswerBuilder(CONTACT, Question(value or "org"))
    builder.add_record("contact", {"fullname": value, key: value})
    builder.add_interaction("EmailSent", {"Timestamp": "2024-01-01T00:00:00Z", key: value})
    builder.add_record(key, {key: value})
    page = render_html(builder.build(prepared_at=PREPARED, statement=statement(), name=value))
    shape = _shape(page)
    ours = {
        "html",
        "head",
        "meta",
        "title",
        "style",
        "body",
        "main",
        "h1",
        "h2",
        "h3",
        "p",
        "div",
        "table",
        "caption",
        "thead",
        "tbody",
        "tr",
        "th",
        "td",
        "ul",
        "li",
        "dl",
        "dt",
        "dd",
        "strong",
        "code",
        "details",
        "summary",
        "figure",
        "figcaption",
        "svg",
        "line",
        "text",
        "rect",
        "nav",
        "a",
    }
    assert {tag for tag, _ in shape.tags} <= ours
    # The only links are the contents' in-page anchors: nothing leaves the page.
    links = [attrs for tag, attrs in shape.tags if tag == "a"]
    assert links
    assert all(set(a) == {"href"} and str(a["href"]).startswith("#") for a in links)
    text = "".join(shape.text)
    if value.strip() and "\r" not in value:
        assert value.strip() in text
    readme = render_text(builder.build(prepared_at=PREPARED, statement=None))
    assert "\n" not in readme.replace("\r\n", "")


@settings(max_examples=300)
@given(st.text())
def test_the_text_cleaner_s_fast_path_changes_nothing(text: str) -> None:
    # The whole text is looked at once: check it against one character at a time. Which
    # characters are printable is Unicode 14.0's answer on every Python (test_printable.py).
    from sar_bulk.answer.text import _clean
    from sar_bulk.printable import printable

    by_character = "".join(c if printable(c) else " " for c in text)
    assert _clean(text) == by_character


@given(
    st.text(alphabet=st.sampled_from(" \t\n-ab\u2028\u00a0\u3000é"), max_size=90),
    st.integers(min_value=20, max_value=78),
    st.sampled_from(["", "  ", "     "]),
)
def test_the_text_wrapper_s_fast_path_wraps_as_textwrap_does(
    raw: str, width: int, indent: str
) -> None:
    # _wrap skips textwrap when cleaned text fits on one line: it must give what textwrap gives.
    import textwrap

    from sar_bulk.answer.text import _clean, _wrap

    text = _clean(raw)
    expected = textwrap.wrap(text, width, initial_indent=indent, subsequent_indent=indent)
    assert _wrap(text, width, indent) == expected


def test_labels_are_worked_out_once_and_still_spelled_as_before() -> None:
    from sar_bulk.answer.fields import _cached_label, label

    assert label("CreateCrmActivityContactProcessed") == "Create CRM activity contact processed"
    assert label("EmailAddressUsed") == "Email address used"
    assert label("CustomerJourneyId") == "Customer journey id"
    assert label("fullname") == "Full name"
    before = _cached_label.cache_info()
    assert label("EmailAddressUsed") == "Email address used"
    assert _cached_label.cache_info().hits == before.hits + 1
    # A huge name from the org is labelled as before but never kept.
    huge = "Huge" + "Name" * 10_000
    assert label(huge) == "Huge" + " name" * 10_000
    assert _cached_label.cache_info().currsize == before.currsize


def test_interaction_columns_keep_first_seen_order_with_ids_last_over_rows_that_differ() -> None:
    from sar_bulk.answer.fields import interaction_columns

    rows: list[dict[str, object]] = [
        {"InteractionId": "1", "ContactId": "c", "Subject": "a", "Timestamp": "t"},
        {"InteractionId": "2", "Subject": "b", "Timestamp": "t"},  # adds nothing
        {"InteractionType": "EmailSent", "MessageId": "m", "Url": "u", "Subject": "c"},
        {"Extra": 1, "Subject": "d"},
    ]
    assert interaction_columns(rows) == [
        "Timestamp",
        "Subject",
        "Url",
        "Extra",
        "InteractionId",
        "MessageId",
    ]
    assert interaction_columns([]) == []
    assert interaction_columns([{"ContactId": "c", "InteractionType": "x"}]) == []


def test_a_time_given_in_another_zone_is_shown_in_utc() -> None:
    # 11:05 in Paris in summer is 09:05 UTC: the answer says "UTC", so it must be UTC.
    paris = timezone(timedelta(hours=2))
    builder = AnswerBuilder(CONTACT, Question("org"))
    view = builder.build(prepared_at=datetime(2024, 6, 30, 11, 5, tzinfo=paris), statement=None)
    for render in (render_html, render_text):
        output = render(view)
        assert "Prepared on 30 June 2024, 09:05 UTC" in output
        assert "11:05" not in output
    just_after_midnight = datetime(2024, 7, 1, 0, 30, tzinfo=paris)
    assert long_date(just_after_midnight) == "30 June 2024, 22:30 UTC"


def test_a_meaning_keeps_its_capitals_at_the_start_of_a_sentence() -> None:
    builder = AnswerBuilder(CONTACT, Question("org"))
    row = {"Timestamp": "2024-01-01T00:00:00Z", "InteractionId": "1"}
    builder.add_interaction("CreateCrmActivityContactProcessed", row)
    view = builder.build(prepared_at=PREPARED, statement=None)
    for output in (render_html(view), render_text(view)):
        assert "A journey created a CRM activity about you" in output
        assert "crm activity" not in output


def test_record_dates_are_shown_in_utc_not_in_the_org_user_s_format() -> None:
    # Dataverse formats a date and time in the calling user's time zone and locale
    # ("3/4/2024 5:10 AM": which day, which zone?); the answer shows every time in UTC and
    # every day spelled out, as it does for interactions. Choices keep their formatted label.
    formatted = "@OData.Community.Display.V1.FormattedValue"
    builder = AnswerBuilder(CONTACT, Question("org"))
    builder.add_record(
        "contact",
        {
            "fullname": "Ada Lovelace",
            "createdon": "2024-03-04T13:10:00Z",
            f"createdon{formatted}": "3/4/2024 5:10 AM",
            "birthdate": "1980-05-17",
            f"birthdate{formatted}": "5/17/1980",
            "gendercode": 2,
            f"gendercode{formatted}": "Female",
        },
    )
    view = builder.build(prepared_at=PREPARED, statement=None)
    for output in (render_html(view), render_text(view)):
        assert "4 March 2024, 13:10 UTC" in output
        assert "17 May 1980" in output
        assert "Female" in output
        assert "3/4/2024" not in output
        assert "5/17/1980" not in output


def test_numbers_are_shown_as_held_not_rounded_to_six_digits() -> None:
    builder = AnswerBuilder(CONTACT, Question("org"))
    row = {
        "Timestamp": "2024-01-01T00:00:00Z",
        "Latitude": 47.6062095,
        "Revenue": 1234567.89,
        "Score": 5.0,
    }
    builder.add_interaction("WebsiteVisited", row)
    builder.add_record("contact", {"fullname": "Ada", "annualincome": 98765432.1})
    view = builder.build(prepared_at=PREPARED, statement=None)
    for output in (render_html(view), render_text(view)):
        for shown in ("47.6062095", "1234567.89", "98765432.1"):
            assert shown in output
        assert "e+0" not in output


def test_bidi_controls_in_org_values_cannot_reorder_what_the_page_shows() -> None:
    # U+202E (right-to-left override) before a phone number made Chromium show "+20 2 1234 5678"
    # as "8765 4321 2 02+"; README.txt already showed a space for it. Isolates and embeddings
    # (U+2066-2069, U+202A-202D) reorder text the same way.
    override, isolate, pop = "\u202e", "\u2067", "\u2069"
    builder = AnswerBuilder(CONTACT, Question("https://contoso.crm4.dynamics.com"))
    builder.add_record(
        "contact",
        {"contactid": CONTACT, "telephone1": f"{override}+20 2 1234 5678", "jobtitle": "\u202bCEO"},
    )
    for n in range(2):  # two rows: the table body is escaped at once
        builder.add_interaction(
            "EmailOpened",
            {
                "Timestamp": f"2024-01-0{n + 1}T00:00:00Z",
                "Subject": f"Offer {isolate}\u0639\u0631\u0636{pop} {override}20% off",
            },
        )
    builder.add_interaction("EmailSent", {"Subject": f"{override}only row"})  # cell by cell
    view = builder.build(prepared_at=PREPARED, statement=statement(), name=f"{override}Ada")
    page = render_html(view)
    for char in (override, isolate, pop, "\u202b"):
        assert char not in page
    text = " ".join("".join(_shape(page).text).split())
    assert "+20 2 1234 5678" in text
    assert "Offer \u0639\u0631\u0636 20% off" in text
    assert "Dear Ada," in text
    readme = render_text(view)
    assert "+20 2 1234 5678" in readme
    assert override not in readme


def test_readme_lines_fit_80_columns_when_a_purpose_or_destination_is_long() -> None:
    # A key longer than the key column (32) used to push its value past it: a purpose of 120
    # characters made a line of 160, its legal basis wrapped under the key column of the
    # others, and `less` at 80 columns showed it broken in the middle of words.
    long_purpose = (
        "Measuring which e-mails are read and which links are clicked, to improve our "
        "e-mails and rank your interest (lead scoring)"
    )
    table = {
        **CONTROLLER,
        "purposes": [
            {"purpose": "Sending our newsletter", "legal_basis": "Consent, Article 6(1)(a)"},
            {"purpose": long_purpose, "legal_basis": "Our legitimate interest, Article 6(1)(f)"},
        ],
        "transfers": [
            {
                "destination": "United States (Microsoft Corporation, support access)",
                "safeguard": "EU-US Data Privacy Framework; standard contractual clauses",
            }
        ],
    }
    builder = AnswerBuilder(CONTACT, Question("https://contoso.crm4.dynamics.com"))
    builder.add_interaction(
        "TriggerCrmWorkflowActivityContactProcessed", {"Timestamp": "2024-01-01T00:00:00Z"}
    )
    view = builder.build(prepared_at=PREPARED, statement=load_statement(table))
    lines = render_text(view).split("\r\n")
    too_long = [line for line in lines if len(line) > 78]
    assert too_long == []
    at = lines.index(
        "  Measuring which e-mails are read and which links are clicked, to improve our"
    )
    assert lines[at + 1] == "  e-mails and rank your interest (lead scoring)"
    assert lines[at + 2].split() == ["Our", "legitimate", "interest,", "Article", "6(1)(f)"]
    assert lines[at + 2].index("Our") == lines[at - 1].index("Consent")  # the value column
    at = lines.index("  United States (Microsoft Corporation, support access)")
    safeguard = " ".join(line.strip() for line in lines[at + 1 : at + 3])
    assert safeguard == "EU-US Data Privacy Framework; standard contractual clauses"
    at = lines.index("  Trigger CRM workflow activity contact processed")
    assert lines[at + 1].split()[:2] == ["1", "(1"]


def test_readme_lines_fit_80_columns_for_long_column_names_and_checksums() -> None:
    # An export file's line held its 64-digit checksum beside the name (120 columns), and an
    # interaction column named longer than the key column pushed its value past 80 columns.
    lines = render_text(small_view()).split("\r\n")
    assert [line for line in lines if len(line) > 78] == []
    at = lines.index("  realtime/1-gdpr_output.json  (58 bytes)")
    assert lines[at + 1] == "     sha256 " + "ab" * 32
    at = lines.index("  Is mobile                         Yes")
    assert (
        lines[at + 1] == '  <script>window.pwned=1</script><img src=x onerror="window.pwned=2">"\''
    )
    assert lines[at + 2] == " " * 36 + "a column named with markup"


def test_an_org_without_the_interactions_source_is_not_said_to_have_found_none() -> None:
    # Today's cloud orgs (the demo's default) have no outbound-marketing action: the answer
    # said "Period found: no dated interactions found" next to a real-time export holding 80
    # interactions, and listed all 40 kinds as "Kinds not searched" in the action's jargon
    # ("Trigger CRM workflow activity contact processed"), though the source itself is named
    # as not searched.
    question = Question("https://contoso.crm4.dynamics.com", sources=("records", "realtime"))
    builder = AnswerBuilder(CONTACT, question)
    builder.add_record("contact", {"contactid": CONTACT, "fullname": "Ada Lovelace"})
    builder.add_export("realtime/1-gdpr_output.json", 58, "ab" * 32, b'{"interactions": [1, 2]}')
    view = builder.build(prepared_at=PREPARED, statement=statement())
    page = " ".join(" ".join(_shape(render_html(view)).text).split())
    readme = " ".join(render_text(view).split())
    for text in (page, readme):
        searched = text[text.index("What we searched") :]
        assert "Sources not searched Marketing interactions (outbound marketing)" in searched
        assert "no dated interactions" not in text
        assert "Period found" not in searched
        assert "Kinds not searched" not in searched
        assert "Trigger CRM workflow" not in text
    # Where the source was searched, both are still said.
    page = " ".join(" ".join(_shape(render_html(empty_view())).text).split())
    assert "Period found no dated interactions found" in page


# Rows as the records source stores them (from a simulated org's dossier), one per table it reads.
_F = "@OData.Community.Display.V1.FormattedValue"
_OWN_TABLE_ROWS: dict[str, dict[str, Any]] = {
    "lead": {
        "leadid": "13d63835-d214-4a48-9a0a-206b531ae0ce",
        "companyname": "Bücher & Co",
        "_parentcontactid_value": CONTACT,
        f"_parentcontactid_value{_F}": "Ada Lovelace",
    },
    "account": {
        "accountid": "0d9c3b2a-0000-4000-8000-000000000001",
        "name": "Contoso Pharmaceuticals",
        "_primarycontactid_value": CONTACT,
        f"_primarycontactid_value{_F}": "Ada Lovelace",
        "telephone3": "+41 44 265 87 97",
    },
    "activitypointer": {
        "activityid": "5daee50c-abdf-464f-bb09-01f743c21f05",
        "activitytypecode": "phonecall",
        f"activitytypecode{_F}": "Phone Call",
        "_regardingobjectid_value": CONTACT,
        f"_regardingobjectid_value{_F}": "Ada Lovelace",
        "scheduledstart": "2023-01-20T10:00:00Z",
        "actualend": "2023-01-22T18:01:41Z",
        "activitypointer_activity_parties": [{"partyidname": "Ada Lovelace"}],
    },
    "activityparty": {
        "activitypartyid": "ce885dbb-7e03-4cc3-ae39-a60b9e62ef3e",
        "_activityid_value": "5daee50c-abdf-464f-bb09-01f743c21f05",
        "_partyid_value": CONTACT,
        f"_partyid_value{_F}": "Ada Lovelace",
        "partyidname": "Ada Lovelace",
        "participationtypemask": 2,
        f"participationtypemask{_F}": "To Recipient",
        "addressused": "ada@example.org",
    },
    "msdynmkt_gdprrequest": {
        "msdynmkt_gdprrequestid": "d61a2c0f-d9c0-4117-af83-03ebbd959a29",
        "msdynmkt_name": "DSR 9754",
        "msdynmkt_dsrrequesttype": 773406601,
        f"msdynmkt_dsrrequesttype{_F}": "Export",
        "msdynmkt_dsrrequestinput": "ada@example.org",
        "msdynmkt_dsrrequestprogress": 773406650,
        f"msdynmkt_dsrrequestprogress{_F}": "Completed",
        "msdynmkt_dsrrequestdata": "d668650b-66de-45f6-9401-f21cca78a359",
        "msdynmkt_dsrrequestdata_name": "gdpr_output.json",
        "_ownerid_value": "4f586683-f33e-4e64-9d87-6407e039e4de",
    },
}


def test_columns_of_the_tables_sar_bulk_reads_itself_have_a_person_s_name() -> None:
    # A person read "Companyname", "Parentcontactid value", "Participationtypemask",
    # "Regardingobjectid value" and "Msdynmkt dsrrequestprogress": Dataverse's logical names
    # with the underscores taken out. The records source asks for these tables and columns
    # itself, so each has a label; a column an org adds may still show its own name.
    builder = AnswerBuilder(CONTACT, Question("https://contoso.crm4.dynamics.com"))
    builder.add_record("contact", {"contactid": CONTACT, "telephone3": "+41 44 265 87 97"})
    for table, row in _OWN_TABLE_ROWS.items():
        builder.add_record(table, row)
    view = builder.build(prepared_at=PREPARED, statement=statement())
    page = " ".join(" ".join(_shape(render_html(view)).text).split())
    readme = " ".join(render_text(view).split())
    for text in (page, readme):
        for jargon in (
            "Telephone3",
            "Companyname",
            "Primarycontactid",
            "Parentcontactid",
            "Activitytypecode",
            "Regardingobjectid",
            "Actualend",
            "Scheduledstart",
            "Activitypointer activity parties",
            "Activityid value",
            "Activitypartyid",
            "Partyid",
            "Participationtypemask",
            "Addressused",
            "Msdynmkt",
            "Ownerid",
        ):
            assert jargon not in text, jargon
        for said in (
            "Company name Bücher & Co",
            "Your part in it To Recipient",
            "Progress Completed",
        ):
            assert said in readme


def test_a_table_of_records_is_captioned_in_words_not_by_its_logical_name() -> None:
    # The caption of the leads table read "Your rows in the table lead" (of an account table
    # "... in the table parent_account"): a table's logical name, which means nothing to a
    # person (and "lead" is easily misread); the heading above it already says what it is.
    builder = AnswerBuilder(CONTACT, Question("https://contoso.crm4.dynamics.com"))
    builder.add_record("lead", _OWN_TABLE_ROWS["lead"])
    builder.add_record("parent_account", _OWN_TABLE_ROWS["account"])
    shape = _shape(render_html(builder.build(prepared_at=PREPARED, statement=statement())))
    text = " ".join(" ".join(shape.text).split())
    assert "in the table" not in text
    assert "Sales leads about you, one row each" in text
    assert "Your company's account, one row each" in text


def test_no_interactions_in_a_period_asked_for_is_not_said_to_be_none_at_all() -> None:
    # A run with --date-from 2030-01-01 told the person "We hold no records of this kind about
    # you: none of the 40 kinds of marketing interaction we searched for", though the org held
    # thousands of them before that day: only "Period asked for" far below said otherwise.
    question = Question(
        "https://contoso.crm4.dynamics.com", sources=("interactions",), date_from=date(2030, 1, 1)
    )
    view = AnswerBuilder(CONTACT, question).build(prepared_at=PREPARED, statement=statement())
    page = " ".join(" ".join(_shape(render_html(view)).text).split())
    readme = " ".join(render_text(view).split())
    for text in (page, readme):
        assert (
            "We hold no records of this kind about you from 1 January 2030 on: none of the 40 "
            "kinds of marketing interaction we searched for." in text
        )
        assert "We hold no records of this kind about you." not in text
    held = AnswerBuilder(
        CONTACT,
        Question(
            "https://contoso.crm4.dynamics.com",
            sources=("interactions",),
            date_from=date(2023, 1, 1),
            date_to=date(2023, 12, 31),
        ),
    )
    held.add_interaction("EmailSent", {"Timestamp": "2023-05-01T00:00:00Z"})
    readme = " ".join(render_text(held.build(prepared_at=PREPARED, statement=None)).split())
    assert (
        "We hold no records of the other 39 kinds of marketing interaction we searched for "
        "from 1 January 2023 to 31 December 2023" in readme
    )
    # Without a period, as before.
    assert "We hold no records of this kind about you: none of the 40" in " ".join(
        render_text(empty_view()).split()
    )


def test_readme_list_items_continue_under_their_text_not_under_the_dash() -> None:
    # A category, a recipient or a right longer than a line went on under its dash, so the
    # list read as one run of text: "  - Identity and contact details: ..., postal" then
    # "  address" at the dash's column, indistinguishable from the start of the next item.
    lines = render_text(small_view()).split("\r\n")
    at = lines.index(
        "  - Erasure (Article 17): to have your data deleted, for example when it is no"
    )
    assert lines[at + 1] == "    longer needed or you withdraw your consent."
    items = [n for n, line in enumerate(lines) if line.startswith("  - ")]
    for n in items:
        more = itertools.takewhile(
            lambda line: line and not line.startswith("  - "), lines[n + 1 :]
        )
        assert all(line.startswith("    ") for line in more), lines[n : n + 3]
    summary = render_text(small_view()).replace("\r\n", "\n")
    assert "In all, 13 marketing interactions." in summary
    one = AnswerBuilder(CONTACT, Question("https://contoso.crm4.dynamics.com"))
    one.add_interaction("EmailSent", {"Timestamp": "2024-01-01T00:00:00Z"})
    readme = " ".join(render_text(one.build(prepared_at=PREPARED, statement=None)).split())
    assert "In all, 1 marketing interaction." in readme


def test_whom_to_contact_is_said_in_sentences_of_their_own() -> None:
    """The controller's contact is its own text ("privacy@x, or by post to the address
    above"): joined to the DPO as "contact X or our data protection officer, Y" it read as one
    ambiguous list. Each is a sentence now, in both files, a trailing full stop not doubled."""
    controller = CONTROLLER | {
        "contact": "privacy@contoso.example, or by post to the address above.",
        "dpo": "Jane Roe, dpo@contoso.example",
    }
    given_statement = load_statement(controller)
    builder = AnswerBuilder(CONTACT, Question(system="https://contoso.crm4.dynamics.com"))
    view = builder.build(prepared_at=PREPARED, statement=given_statement)
    said = (
        "To use any of them, contact us: privacy@contoso.example, or by post to the address "
        "above. Our data protection officer: Jane Roe, dpo@contoso.example. Our supervisory "
        "authority is Data Protection Commission, 21 Fitzwilliam Square, Dublin 2."
    )
    assert f"<p>{said}</p>" in render_html(view)
    assert said in " ".join(render_text(view).split())


def test_expanded_rows_inside_a_value_are_shown_as_rows_are() -> None:
    """An activity's parties come expanded inside the activity: each party a JSON object with
    annotations. Shown key by key, the page read "Partyid value@odata.community.display.v1.
    formatted value: Zoë"; they now read as the top-level rows do (formatted values, labels,
    no annotations, technical ids last)."""
    parties = [
        {
            "@odata.etag": 'W/"2909952180"',
            "activitypartyid": "137c5925-add7-411e-b797-2aaa64185bc9",
            "_partyid_value": "02ebb8d8-d734-4c4a-a86a-04d10e66c6be",
            "_partyid_value@OData.Community.Display.V1.FormattedValue": "Zoë Jónsson",
            "participationtypemask": 1,
            "participationtypemask@OData.Community.Display.V1.FormattedValue": "Sender",
        }
    ]
    shown = show(parties)
    assert shown == (
        "Participant: Zoë Jónsson; Your part in it: Sender; "
        "Participation id: 137c5925-add7-411e-b797-2aaa64185bc9"
    ), shown
    assert "@" not in shown
