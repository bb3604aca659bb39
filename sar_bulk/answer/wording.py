"""The sentences the answer says, shared by index.html and README.txt so the two never disagree.

Everything here is plain text; the HTML renderer escapes it like any other value. Nothing here
speaks for the controller: what only the controller can say comes from its ``Statement``, and
when that is missing the answer says so (``MISSING_STATEMENT``) instead of inventing it.
"""

from __future__ import annotations

import functools
from datetime import datetime
from typing import Final

from sar_bulk.answer.fields import long_date, long_day
from sar_bulk.answer.statement import Statement
from sar_bulk.answer.view import SOURCES, AnswerView
from sar_bulk.sources.interaction_types import InteractionType

__all__ = [
    "MISSING_STATEMENT",
    "RIGHTS",
    "capital",
    "count",
    "day_span",
    "file_guide",
    "greeting",
    "how_to_use_rights",
    "intro",
    "meaning",
    "no_records_line",
    "period_asked",
    "period_found",
    "source_label",
    "span_found",
    "table_label",
    "tables_named",
    "title",
    "type_note",
    "within",
]

MISSING_STATEMENT: Final = (
    "The organisation has not yet provided its statement about this processing: who it is, why "
    "it uses your data and on which legal basis, who receives it, how long it is kept, where it "
    "came from, whether it is used for automated decisions or profiling, and whether it leaves "
    "the European Economic Area. You are entitled to all of this under Article 15 GDPR; ask the "
    "organisation that sent you this answer for it."
)

RIGHTS: Final[tuple[tuple[str, str], ...]] = (
    ("Access (Article 15)", "to get a copy of your personal data and the facts in this answer."),
    ("Rectification (Article 16)", "to have data about you that is wrong corrected."),
    (
        "Erasure (Article 17)",
        "to have your data deleted, for example when it is no longer needed or you withdraw "
        "your consent.",
    ),
    (
        "Restriction (Article 18)",
        "to have the use of your data limited while its accuracy or lawfulness is checked.",
    ),
    (
        "Data portability (Article 20)",
        "to receive data you gave us in a machine-readable form (the JSON files with this "
        "answer) and to have it sent to someone else.",
    ),
    (
        "Objection (Article 21)",
        "to object to processing based on legitimate interests, and at any time to direct "
        "marketing and the profiling used for it.",
    ),
    (
        "Withdrawing consent (Article 7)",
        "at any time, for processing based on your consent, without affecting what was done "
        "before.",
    ),
    (
        "Complaint (Article 77)",
        "to complain to a data protection supervisory authority, in particular where you live "
        "or work.",
    ),
)


def capital(text: str) -> str:
    """``text`` with its first letter made a capital, the rest as it is ("a CRM activity"
    stays "A CRM activity", which ``str.capitalize`` makes "A crm activity")."""
    return text[:1].upper() + text[1:]


def count(number: int) -> str:
    """A count in the summary: "none" rather than a bare 0."""
    return f"{number:,}" if number else "none"


@functools.lru_cache(maxsize=256)  # an enum look-up a few times per type of every contact
def meaning(itype: str) -> str:
    """What an interaction type means for a person; the name itself for unknown types."""
    try:
        return InteractionType(itype).meaning
    except ValueError:
        return itype


_NOTES: Final[dict[str, str]] = {
    "LeadScoreBoost": (
        "Lead scoring rates your interest from what you did: that is profiling (Article 4(4) "
        "GDPR). What it is used for is said under \u201cAutomated decisions and profiling\u201d; "
        "you may object to it at any time."
    ),
}


def type_note(itype: str) -> str:
    """An extra sentence for types a person needs explained, e.g. scoring; "" for the rest."""
    return _NOTES.get(itype, "")


def title(view: AnswerView) -> str:
    holder = view.statement.name if view.statement else "the organisation"
    return f"Your personal data held by {holder}"


def greeting(view: AnswerView) -> str:
    return f"Dear {view.name}," if view.name else "Dear Sir or Madam,"


def intro(view: AnswerView) -> list[str]:
    received = f" of {long_day(view.received)}" if view.received else ""
    lines = [
        f"This is our answer to your request{received} for a copy of the personal data we hold "
        "about you (Article 15 GDPR). It shows what we found, where it came from, what we do "
        "with it and what your rights are. The files next to this page hold every record in "
        "full, in a machine-readable form.",
        f"Prepared on {long_date(view.prepared_at)}"
        # The day it was prepared is the day it was answered, unless told otherwise.
        + (
            f"; answered on {long_day(view.answered)}."
            if view.answered and view.answered != view.prepared_at.date()
            else "."
        ),
    ]
    return lines


def period_asked(view: AnswerView) -> str:
    start, end = view.question.date_from, view.question.date_to
    if start and end:
        return f"from {long_day(start)} to {long_day(end)}"
    if start:
        return f"from {long_day(start)} on"
    if end:
        return f"up to {long_day(end)}"
    return "all records, however old"


def span_found(view: AnswerView) -> str:
    """The period the interactions found actually cover."""
    if view.first and view.last:
        return f"from {long_date(view.first)} to {long_date(view.last)}"
    return "no dated interactions found"


def day_span(first: datetime | None, last: datetime | None) -> str:
    """``4 March 2023 to 12 November 2023``, one day if both are the same, "" if unknown."""
    if not first or not last:
        return ""
    if first.date() == last.date():
        return long_day(first.date())
    return f"{long_day(first.date())} to {long_day(last.date())}"


def period_found(view: AnswerView) -> str:
    if view.first and view.last:
        return f"The interactions we found run {span_found(view)}."
    return "We found no dated interactions."


_TABLES: Final[dict[str, str]] = {
    # The entry names the records source writes (records/<name>.json) ...
    "lead": "Sales leads about you",
    "account": "Companies you are the primary contact of",
    "parent_account": "Your company's account",
    "activitypointer": "Activities about you (e-mails, calls, meetings)",
    "activityparty": "Activities you took part in (as sender, recipient, attendee)",
    "msdynmkt_gdprrequest": "Earlier data requests about you",
    # ... and the entity set names of the same tables.
    "leads": "Sales leads about you",
    "accounts": "Companies you are the primary contact of",
    "activitypointers": "Activities about you (e-mails, calls, meetings)",
    "msevtmgt_eventregistrations": "Event registrations",
    "msdynmkt_marketingformsubmissions": "Form submissions",
    "msdynmkt_gdprrequests": "Earlier data requests about you",
}


def table_label(table: str) -> str:
    """A person's name for a Dataverse table (its entity set name)."""
    return _TABLES.get(table, f"Rows of the table {table}")


def tables_named(tables: tuple[str, ...]) -> str:
    """Tables as a person reads them, each with its own name: "Sales leads about you (lead)"."""
    return "; ".join(f"{table_label(t)} ({t})" for t in tables)


def how_to_use_rights(statement: Statement) -> str:
    """Whom to contact, each in a sentence of its own: the controller's contact is its own text
    ("privacy@x, or by post to the address above"), and "contact X or our DPO, Y" ran the two
    together into one ambiguous list."""
    dpo = f" Our data protection officer: {statement.dpo.rstrip('.')}." if statement.dpo else ""
    return (
        f"To use any of them, contact us: {statement.contact.rstrip('.')}.{dpo} "
        f"Our supervisory authority is {statement.supervisory_authority}."
    )


def within(view: AnswerView) -> str:
    """ " from 1 January 2030 on" when a period was asked for, else "": "we hold none" is only
    true of that period (interactions before it are neither fetched nor counted)."""
    q = view.question
    return f" {period_asked(view)}" if q.date_from or q.date_to else ""


def no_records_line(view: AnswerView) -> str:
    empty = view.empty_types
    if not empty:
        return ""
    if not view.held_types:
        return (
            f"We hold no records of this kind about you{within(view)}: none of the "
            f"{len(empty)} kinds of marketing interaction we searched for."
        )
    return (
        f"We hold no records of the other {len(empty)} kinds of marketing interaction we "
        f"searched for{within(view)} (listed under \u201cWhat we searched\u201d)."
    )


def source_label(source: str) -> str:
    return SOURCES.get(source, source)


def file_guide() -> list[tuple[str, str]]:
    return [
        ("index.html", "this page; open it in any web browser, it needs no internet connection"),
        ("README.txt", "the same as this page in plain text"),
        (
            "manifest.json",
            "a list of every file with its sha256 checksum, so anyone can check "
            "that nothing was changed",
        ),
        ("interactions/<Type>.json", "all your marketing interactions of one kind, one per line"),
        ("records/<table>.json", "your rows of one table of the customer database, one per line"),
        ("realtime/", "the real-time journeys export, exactly as the product produced it"),
    ]
