"""Reference copy of the answer code before its speed work (see __init__).

README.txt: the same answer as index.html, in plain text for any text editor.

Usage::

    text: str = render_text(view)        # CRLF line ends, so Notepad shows it properly too

Same sections and sentences as the HTML (both take them from ``wording``). Tables of interactions
are shortened to the newest ``TEXT_ROWS`` of each kind, as "label: value" blocks, because a text
file cannot fold them away; the rest is named by file.
"""

from __future__ import annotations

import textwrap
import unicodedata
from collections.abc import Iterable
from typing import Final

from answer_reference import wording
from answer_reference.fields import interaction_columns, label, record_fields, show
from answer_reference.timeline import month_rows
from answer_reference.view import AnswerView

__all__ = ["render_text"]

TEXT_ROWS: Final = 20
_WIDTH: Final = 78


def _clean(text: str) -> str:
    """One line of text: the org's line and paragraph breaks and control characters become
    spaces, so no value can break the CRLF layout or fake a line of its own."""
    if text.isprintable():  # exactly: no character of category C or Z but the ASCII space
        return text  # the common case, without a look-up per character
    return "".join(" " if unicodedata.category(c)[0] in "CZ" and c != " " else c for c in text)


def _wrap(text: str, width: int, indent: str = "") -> list[str]:
    """``textwrap.wrap(text, width, initial_indent=indent, subsequent_indent=indent)`` for
    cleaned text, without its cost when the text fits on one line (most values do)."""
    if len(indent) + len(text) <= width:
        # What textwrap gives then: one line, its trailing blanks dropped, none if all blank.
        # After _clean, " " is the only white space textwrap would split on.
        text = text.rstrip(" ")
        return [indent + text] if text else []
    return textwrap.wrap(text, width, initial_indent=indent, subsequent_indent=indent)


def _para(text: str, indent: str = "") -> list[str]:
    return _wrap(_clean(text), _WIDTH, indent) or [""]


def _heading(text: str, char: str = "-") -> list[str]:
    return ["", text, char * len(text), ""]


def _pairs(
    pairs: Iterable[tuple[str, str]],
    indent: str = "  ",
    wrapped_before: dict[tuple[str, int], list[str]] | None = None,
) -> list[str]:
    """ "key  value" lines, values wrapped beside the keys. ``wrapped_before`` (one table's)
    keeps long values already wrapped: rows of one type often repeat them."""
    pairs = [(_clean(k), _clean(v)) for k, v in pairs]
    width = min(32, max((len(k) for k, _ in pairs), default=0))
    room = _WIDTH - width - len(indent) - 2
    lines: list[str] = []
    for key, value in pairs:
        if wrapped_before is None or len(value) <= room:
            wrapped = _wrap(value, room) or [""]
        elif (value, room) in wrapped_before:
            wrapped = wrapped_before[(value, room)]
        else:
            wrapped = wrapped_before[(value, room)] = _wrap(value, room) or [""]
        lines.append(f"{indent}{key:<{width}}  {wrapped[0]}")
        lines += [f"{indent}{'':<{width}}  {more}" for more in wrapped[1:]]
    return lines


def render_text(view: AnswerView) -> str:
    """The whole README.txt as one string with CRLF line ends."""
    title = wording.title(view)
    out = [title, "=" * len(title), "", wording.greeting(view), ""]
    for line in wording.intro(view):
        out += [*_para(line), ""]
    _summary(out, view)
    _statement(out, view)
    out += _heading("Your rights")
    out.append("You have the right:")
    for name, text in wording.RIGHTS:
        out += _para(f"- {name}: {text}", "  ")
    if view.statement:
        s = view.statement
        dpo = f" or our data protection officer, {s.dpo}" if s.dpo else ""
        out += [
            "",
            *_para(
                f"To use any of them, contact {s.contact}{dpo}. Our supervisory "
                f"authority is {s.supervisory_authority}."
            ),
        ]
        if s.rights_note:
            out += ["", *_para(s.rights_note)]
    # The long lists come after what, why, how long and the rights, as in index.html.
    _records(out, view)
    _interactions(out, view)
    _exports(out, view)
    _searched(out, view)
    out += _heading("The files of this answer")
    out += _pairs(wording.file_guide())
    out.append("")
    # Every line once more, for the lines built from org values outside _para and _pairs.
    return "\r\n".join(_clean(line) for line in out)


def _summary(out: list[str], view: AnswerView) -> None:
    out += _heading("What we hold about you")
    q = view.question
    pairs: list[tuple[str, str]] = []
    if "records" in q.sources:
        pairs.append(("Your contact record", "1" if view.contact else "none"))
        pairs.append(("Consent and preferences", wording.count(view.consent_count)))
        pairs += [(wording.table_label(t.table), wording.count(t.count)) for t in view.records]
    for t in view.held_types:
        span = wording.day_span(t.first, t.last)
        pairs.append((label(t.name), f"{t.count:,}" + (f"  ({span})" if span else "")))
    if "realtime" in q.sources:
        pairs.append(("Real-time export files", wording.count(len(view.exports))))
    out += _pairs(pairs)
    if "interactions" in q.sources and view.total_interactions:
        out += [""]
        out += _para(
            f"In all, {view.total_interactions:,} marketing interactions. "
            + wording.period_found(view)
        )
    if line := wording.no_records_line(view):
        out += ["", *_para(line)]
    months = month_rows(view.monthly)
    if months:
        out += _heading("Your interactions per month")
        peak = max(c for _, c in months) or 1
        out += [
            f"  {k}  {c:>7,}  {'#' * max(1 if c else 0, round(40 * c / peak))}" for k, c in months
        ]


def _records(out: list[str], view: AnswerView) -> None:
    if "records" not in view.question.sources:
        return
    out += _heading("Your contact record")
    out += (
        _pairs(record_fields(view.contact))
        if view.contact
        else _para("We hold no contact record of this kind about you.")
    )
    out += _heading("Your consent and contact preferences")
    if not view.consents:
        out.append("We hold no records of this kind about you.")
    for n, row in enumerate(view.consents, 1):
        out += [f"  {n}.", *_pairs(record_fields(row), "     ")]
    if view.consent_count > len(view.consents):
        out.append(f"  {view.consent_count - len(view.consents):,} more in {view.consent_file}")
    for table in view.records:
        out += _heading(f"{wording.table_label(table.table)} ({table.count:,})")
        for n, row in enumerate(table.rows, 1):
            out += [f"  {n}.", *_pairs(record_fields(row), "     ")]
        if table.more:
            out.append(f"  {table.more:,} more in {table.file}")


def _interactions(out: list[str], view: AnswerView) -> None:
    if "interactions" not in view.question.sources or not view.held_types:
        return
    out += _heading("Your marketing interactions, kind by kind", "=")
    out += _para("Newest first; every one of them is in full in the interactions folder.")
    for t in view.held_types:
        out += _heading(f"{label(t.name)}: {t.count:,}")
        out += _para(wording.meaning(t.name).capitalize() + ".")
        if note := wording.type_note(t.name):
            out += ["", *_para(note)]
        columns = interaction_columns(t.rows)
        labels = [(c, label(c)) for c in columns]
        wrapped: dict[tuple[str, int], list[str]] = {}  # this table's only
        for row in t.rows[:TEXT_ROWS]:
            shown = ((name, show(row.get(c))) for c, name in labels)
            out += ["", *_pairs([(name, text) for name, text in shown if text], "  ", wrapped)]
        if t.count > TEXT_ROWS:
            out += ["", f"  {t.count - min(TEXT_ROWS, len(t.rows)):,} more in {t.file}"]


def _exports(out: list[str], view: AnswerView) -> None:
    if "realtime" not in view.question.sources:
        return
    out += _heading("Real-time journeys export")
    if not view.exports:
        out.append("We hold no records of this kind about you.")
    for f in view.exports:
        out += [_clean(f"  {f.name}  ({f.size:,} bytes, sha256 {f.sha256})")]
        if f.summary:
            out += _pairs(f.summary, "     ")


def _statement(out: list[str], view: AnswerView) -> None:
    out += _heading("Who we are and what we do with your data")
    s = view.statement
    if s is None:
        out += _para(wording.MISSING_STATEMENT)
        return
    out += _pairs(
        [
            ("Controller", f"{s.name}, {s.address}"),
            ("Contact", s.contact),
            *([("Data protection officer", s.dpo)] if s.dpo else []),
            ("Supervisory authority", s.supervisory_authority),
        ]
    )
    out += ["", "Why we use your data, and on which legal basis:"]
    out += _pairs((p.purpose, p.legal_basis) for p in s.purposes)
    out += ["", "Kinds of personal data we hold:"]
    out += [line for c in s.categories for line in _para(f"- {c}", "  ")]
    out += ["", "Who receives your data:"]
    out += [line for r in s.recipients for line in _para(f"- {r}", "  ")]
    out += ["", "How long we keep it:", *_para(s.retention, "  ")]
    out += ["", "Where data we did not get from you came from:", *_para(s.source_of_data, "  ")]
    out += ["", "Automated decisions and profiling:", *_para(s.automated_decisions, "  ")]
    out += ["", "Transfers outside the European Economic Area:"]
    if s.transfers:
        out += _pairs((t.destination, t.safeguard) for t in s.transfers)
    else:
        out += _para(
            "We do not transfer your personal data outside the European Economic Area.", "  "
        )


def _searched(out: list[str], view: AnswerView) -> None:
    q = view.question
    out += _heading("What we searched")
    pairs = [
        ("System searched", q.system),
        ("Your contact id", view.contact_id),
        ("Period asked for", wording.period_asked(view)),
        ("Period found", wording.span_found(view)),
        ("Sources searched", "; ".join(wording.source_label(s) for s in q.sources) or "none"),
    ]
    if q.sources_not_searched:
        pairs.append(
            (
                "Sources not searched",
                "; ".join(wording.source_label(s) for s in q.sources_not_searched),
            )
        )
    if view.empty_types:
        pairs.append(("Searched, nothing found", ", ".join(label(t) for t in view.empty_types)))
    if q.types_not_searched:
        pairs.append(("Kinds not searched", ", ".join(label(t) for t in q.types_not_searched)))
    out += _pairs(pairs)
