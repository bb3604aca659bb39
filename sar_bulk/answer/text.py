"""README.txt: the same answer as index.html, in plain text for any text editor.

Usage::

    text: str = render_text(view)        # CRLF line ends, so Notepad shows it properly too

Same sections and sentences as the HTML (both take them from ``wording``). Tables of interactions
are shortened to the newest ``TEXT_ROWS`` of each kind, as "label: value" blocks, because a text
file cannot fold them away; the rest is named by file.
"""

from __future__ import annotations

import functools
import itertools
import re
import textwrap
from collections.abc import Iterable
from typing import Final

from sar_bulk.answer import wording
from sar_bulk.answer.fields import KindTables, label, record_fields
from sar_bulk.answer.timeline import timeline_rows
from sar_bulk.answer.view import AnswerView
from sar_bulk.printable import printable, shown

__all__ = ["render_text"]

TEXT_ROWS: Final = 20
_WIDTH: Final = 78
# Longest text whose wrapped lines are kept, and how many: the texts that come back on every
# contact are our own sentences and a few column values; a person's own values (names,
# addresses, descriptions) are new on every contact and would only fill it (4,096 texts of up
# to 2,000 characters and their lines could hold ~16 MB).
_CACHED_TEXT: Final = 600
_SPACES: Final = re.compile("( +)")
_WORDSEP: Final = textwrap.TextWrapper.wordsep_re
_BLANKS: Final = itertools.repeat(" ")  # str.rstrip's argument, for map()


def _clean(text: str) -> str:
    """One line of text: the org's line and paragraph breaks and control characters become
    spaces, so no value can break the CRLF layout or fake a line of its own. Which characters
    those are is Unicode 14.0's answer on every Python (``sar_bulk.printable``)."""
    return shown(text)


def _wrap(text: str, width: int, indent: str = "") -> list[str]:
    """``textwrap.wrap(text, width, initial_indent=indent, subsequent_indent=indent)`` for
    cleaned text, at a fraction of its cost (tests compare the two on made-up text).

    Most values fit on one line; the rest are mostly the same sentences again and again (the
    rights, the kinds not searched, a campaign's subject on every row), so their lines are
    kept, in a cache bounded in entries and in each entry's size.
    """
    if len(indent) + len(text) <= width:
        # What textwrap gives then: one line, its trailing blanks dropped, none if all blank.
        # After _clean, " " is the only white space textwrap would split on.
        text = text.rstrip(" ")
        return [indent + text] if text else []
    if len(text) <= _CACHED_TEXT:
        return list(_cached_wrap(text, width, indent))
    return _wrap_long(text, width, indent)


@functools.lru_cache(maxsize=512)
def _cached_wrap(text: str, width: int, indent: str) -> tuple[str, ...]:
    return tuple(_wrap_long(text, width, indent))


def _wrap_long(text: str, width: int, indent: str) -> list[str]:
    if not printable(text) or width <= len(indent):
        # White space other than " " (text that was not cleaned), or no room: textwrap itself.
        return textwrap.wrap(text, width, initial_indent=indent, subsequent_indent=indent)
    # textwrap's chunks: runs of spaces and words. Without a hyphen its word-splitting pattern
    # (wordsep_re, which breaks "machine-readable" after the hyphen) finds no more than the
    # spaces do; with one, it is used as it is.
    if "-" in text:
        chunks = [c for c in _WORDSEP.split(text) if c]
    elif text[0] != " " and text[-1] != " " and "  " not in text:
        return _fill_words(text, width - len(indent), indent)
    else:
        chunks = [c for c in _SPACES.split(text) if c]
    return _fill(chunks, width - len(indent), indent)


def _fill_words(text: str, room: int, indent: str) -> list[str]:
    """``_fill`` of words between single spaces (no hyphen, no blank at either end), a line at
    a time: each line ends at the last space that fits, or cuts a word longer than a line."""
    lines: list[str] = []
    start, size = 0, len(text)
    while True:
        end = start + room
        if end >= size:
            lines.append(indent + text[start:])
            return lines
        if text[end] == " ":  # the line is full up to a word's end; the space is dropped
            lines.append(indent + text[start:end])
            start = end + 1
            continue
        space = text.rfind(" ", start, end)
        if space < 0:  # one word longer than the line: cut
            lines.append(indent + text[start:end])
            start = end
            continue
        after = text.find(" ", space + 1)
        if (after if after >= 0 else size) - space - 1 > room:
            # The next word is longer than a line: textwrap starts cutting it on this line,
            # after the space (which stays, if the line is full with it).
            lines.append(indent + text[start:end])
            start = end
            continue
        lines.append(indent + text[start:space])
        start = space + 1


def _fill(chunks: list[str], room: int, indent: str) -> list[str]:
    """``TextWrapper._wrap_chunks`` for our options (break long words, on hyphens too; drop
    white space at line ends; the same indent on every line; no line limit), step by step.

    Chunks hold no white space but " ": a chunk is blank exactly when it starts with one, or
    is empty (what is left of a long word cut at the very end of a line).
    """
    lines: list[str] = []
    chunks.reverse()
    while chunks:
        line: list[str] = []
        used = 0
        # A blank chunk is dropped at the start of every line but the first.
        if lines and chunks[-1][:1] == " ":
            del chunks[-1]
        while chunks:
            size = len(chunks[-1])
            if used + size > room:
                break
            line.append(chunks.pop())
            used += size
        if chunks and len(chunks[-1]) > room:
            # A word longer than a line: as much as fits, cut after its last hyphen that fits
            # if something other than hyphens comes before it (_handle_long_word).
            chunk = chunks[-1]
            end = room - used
            if len(chunk) > end:
                hyphen = chunk.rfind("-", 0, end)
                if hyphen > 0 and chunk[:hyphen].strip("-"):
                    end = hyphen + 1
            line.append(chunk[:end])
            chunks[-1] = chunk[end:]
        if line and line[-1][:1] in (" ", ""):
            del line[-1]
        if line:
            lines.append(indent + "".join(line))
    return lines


def _para(text: str, indent: str = "") -> list[str]:
    return _wrap(_clean(text), _WIDTH, indent) or [""]


def _bullet(text: str) -> list[str]:
    """A list item, "  - text", its further lines under its text rather than under the dash."""
    lines = _wrap(_clean(text), _WIDTH, "    ") or ["    "]
    lines[0] = "  - " + lines[0][4:]
    return lines


def _heading(text: str, char: str = "-") -> list[str]:
    return ["", text, char * len(text), ""]


def _pairs(pairs: Iterable[tuple[str, str]], indent: str = "  ") -> list[str]:
    """ "key  value" lines, values wrapped beside the keys."""
    return _pair_lines([(_clean(k), _clean(v)) for k, v in pairs], indent)


def _pair_lines(pairs: list[tuple[str, str]], indent: str) -> list[str]:
    """``_pairs`` of keys and values already cleaned."""
    width = min(32, max((len(k) for k, _ in pairs), default=0))
    room = _WIDTH - width - len(indent) - 2
    beside = indent + " " * (width + 2)  # where the lines after a value's first one start
    lines: list[str] = []
    for key, value in pairs:
        if len(key) > width:
            # A key longer than the key column (a long purpose, a transfer's destination)
            # gets lines of its own and its value starts under the others' values: beside
            # it, the line would run past 80 columns and the value wrap under the keys.
            lines += _wrap(key, _WIDTH, indent) or [indent]
            lines += _wrap(value, _WIDTH, beside) or [""]
            continue
        if len(value) <= room:  # _wrap's one-line case, inline: most values
            lines.append(f"{indent}{key:<{width}}  {value.rstrip(' ')}")
            continue
        first, *more = _wrap(value, room) or [""]
        lines.append(f"{indent}{key:<{width}}  {first}")
        lines += [beside + line for line in more]
    return lines


def render_text(view: AnswerView, tables: KindTables | None = None) -> str:
    """The whole README.txt as one string with CRLF line ends; ``tables`` shares the cells'
    text with index.html."""
    title = wording.title(view)
    out = [title, "=" * len(title), "", wording.greeting(view), ""]
    for line in wording.intro(view):
        out += [*_para(line), ""]
    _summary(out, view)
    _statement(out, view)
    out += _heading("Your rights")
    out.append("You have the right:")
    for name, text in wording.RIGHTS:
        out += _bullet(f"{name}: {text}")
    if view.statement:
        s = view.statement
        out += ["", *_para(wording.how_to_use_rights(s))]
        if s.rights_note:
            out += ["", *_para(s.rights_note)]
    # The long lists come after what, why, how long and the rights, as in index.html.
    _records(out, view)
    _interactions(out, view, tables or KindTables())
    _exports(out, view)
    _searched(out, view)
    out += _heading("The files of this answer")
    out += _pairs(wording.file_guide())
    out.append("")
    # Every line once more, for the lines built from org values outside _para and _pairs; one
    # look at all of them finds the common case, where none holds anything to clean.
    if printable("".join(out)):
        return "\r\n".join(out)
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
            f"In all, {view.total_interactions:,} marketing "
            + ("interaction. " if view.total_interactions == 1 else "interactions. ")
            + wording.period_found(view)
        )
    if line := wording.no_records_line(view):
        out += ["", *_para(line)]
    months = timeline_rows(view.monthly)
    if months:
        out += _heading("Your interactions per month")
        peak = max(slot.interactions for slot in months) or 1
        out += [
            f"  ...      (no interactions from {k} to {until})"
            if until
            else f"  {k}  {_month_bar(c, peak)}"
            for k, c, until in months
        ]


@functools.lru_cache(maxsize=8192, typed=True)  # typed: 1 and 1.0 are not written alike
def _month_bar(count: int, peak: int) -> str:
    """A month's count and bar: the same counts and peaks come back on every contact."""
    return f"{count:>7,}  {'#' * max(1 if count else 0, round(40 * count / peak))}"


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


def _interactions(out: list[str], view: AnswerView, tables: KindTables) -> None:
    if "interactions" not in view.question.sources or not view.held_types:
        return
    out += _heading("Your marketing interactions, kind by kind", "=")
    out += _para("Newest first; every one of them is in full in the interactions folder.")
    for t in view.held_types:
        out += _heading(f"{label(t.name)}: {t.count:,}")
        out += _para(wording.capital(wording.meaning(t.name)) + ".")
        if note := wording.type_note(t.name):
            out += ["", *_para(note)]
        columns, rows = tables.of(t, TEXT_ROWS)
        _kind_rows(out, [_clean(label(c)) for c in columns], rows)
        if t.count > TEXT_ROWS:
            out += ["", f"  {t.count - min(TEXT_ROWS, len(t.rows)):,} more in {t.file}"]


def _kind_rows(out: list[str], names: list[str], rows: list[list[str]]) -> None:
    """``_pairs`` of each row's non-empty cells (an empty line before each row).

    Rows of one kind mostly leave the same cells empty, so what depends only on which are
    empty is worked out once per pattern: the cells shown, the keys padded to their width and
    the room for values. A row whose shown values all fit and need no cleaning (most) then
    costs a few calls that go over all its cells at once.
    """
    plans: dict[tuple[bool, ...], _Plan] = {}
    for cells in rows:
        out.append("")
        filled = tuple(map(bool, cells))
        plan = plans.get(filled)
        if plan is None:
            plan = plans[filled] = _Plan(names, filled)
        if not plan.shown:
            continue
        texts = [cells[n] for n in plan.shown]
        if not plan.heads and max(map(len, texts)) <= plan.room and printable("".join(texts)):
            out += map(str.__add__, plan.keys, map(str.rstrip, texts, _BLANKS))
            continue
        for n, (key, text) in enumerate(zip(plan.keys, texts, strict=True)):
            if head := plan.heads.get(n):  # a name longer than the key column: lines of its own
                out += head
            if not printable(text):
                text = _clean(text)
            if len(text) <= plan.room:
                out.append(key + text.rstrip(" "))
                continue
            first, *more = _wrap(text, plan.room) or [""]
            out.append(key + first)
            out += [plan.beside + line for line in more]


class _Plan:
    """What the rows of one kind with the same empty cells share (see ``_kind_rows``)."""

    __slots__ = ("beside", "heads", "keys", "room", "shown")

    def __init__(self, names: list[str], filled: tuple[bool, ...]) -> None:
        self.shown = [n for n, full in enumerate(filled) if full]
        width = min(32, max([len(names[n]) for n in self.shown], default=0))
        self.room = _WIDTH - width - 4  # as _pair_lines with the indent "  "
        self.beside = " " * (width + 4)
        # As in _pair_lines: a name longer than the key column gets lines of its own (by its
        # place among the shown cells), its value starts in the value column below it.
        self.heads = {
            at: _wrap(names[n], _WIDTH, "  ")
            for at, n in enumerate(self.shown)
            if len(names[n]) > width
        }
        self.keys = [
            self.beside if at in self.heads else f"  {names[n]:<{width}}  "
            for at, n in enumerate(self.shown)
        ]


def _exports(out: list[str], view: AnswerView) -> None:
    if "realtime" not in view.question.sources:
        return
    out += _heading("Real-time journeys export")
    if not view.exports:
        out.append("We hold no records of this kind about you.")
    for f in view.exports:
        # The checksum on a line of its own: beside the name it ran past 80 columns.
        out += [_clean(f"  {f.name}  ({f.size:,} bytes)"), _clean(f"     sha256 {f.sha256}")]
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
    out += [line for c in s.categories for line in _bullet(c)]
    out += ["", "Who receives your data:"]
    out += [line for r in s.recipients for line in _bullet(r)]
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
        # The period the interactions found cover: only where that source was searched (a
        # cloud org of today has none, and its real-time export may hold many).
        *([("Period found", wording.span_found(view))] if "interactions" in q.sources else []),
        ("Sources searched", "; ".join(wording.source_label(s) for s in q.sources) or "none"),
    ]
    if q.sources_not_searched:
        pairs.append(
            (
                "Sources not searched",
                "; ".join(wording.source_label(s) for s in q.sources_not_searched),
            )
        )
    if q.tables_not_searched:
        pairs.append(("Tables not searched", wording.tables_named(q.tables_not_searched)))
    if view.empty_types:
        pairs.append(("Searched, nothing found", ", ".join(label(t) for t in view.empty_types)))
    if q.types_not_searched and "interactions" in q.sources:  # else the source is named
        pairs.append(("Kinds not searched", ", ".join(label(t) for t in q.types_not_searched)))
    out += _pairs(pairs)
