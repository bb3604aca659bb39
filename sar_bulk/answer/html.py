"""index.html: the answer a person opens, one self-contained page (inline CSS and SVG, no script).

Usage::

    page: str = render_html(view)        # write it as UTF-8 next to README.txt

The page works offline in any browser: no network, no script, no web fonts; a Content Security
Policy forbids all of them, so even a mistake could not load or run anything. Every value from the
org is untrusted and goes through ``_e`` (``html.escape(..., quote=True)``); attributes are only
ever built from our own constants or escaped text. Headings run h1 > h2 > h3, every table has a
caption and ``<th scope>``, wide tables scroll inside their own box so the page reflows at 200 %
zoom (printed, they wrap instead: a scrolling box would cut them off on paper), and types with
many rows are folded in ``<details>`` (closed ones cost the browser little).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping, Sequence
from html import escape
from typing import Any, Final

from sar_bulk.answer import wording
from sar_bulk.answer.fields import (
    KindTables,
    label,
    long_date,
    record_fields,
)
from sar_bulk.answer.statement import Statement
from sar_bulk.answer.timeline import timeline_svg
from sar_bulk.answer.view import AnswerView, TypeRows

__all__ = ["render_html"]

OPEN_ROWS: Final = 20
"""Types with more rows than this are folded in a closed ``<details>``."""

_CSS: Final = """
:root{color-scheme:light;--ink:#1b1f24;--muted:#4a5560;--line:#c9d1d9;--head:#eef2f6;
--accent:#0b4f8a}
*{box-sizing:border-box}
body{margin:0;font:16px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;
color:var(--ink);background:#fff;overflow-wrap:break-word}
main{max-width:62rem;margin:0 auto;padding:1.5rem 1rem 3rem}
h1{font-size:1.75rem;line-height:1.25;margin:.5rem 0 1rem;color:var(--accent)}
h2{font-size:1.35rem;margin:2.25rem 0 .75rem;padding-top:.75rem;border-top:2px solid var(--line)}
h3{font-size:1.1rem;margin:1.5rem 0 .5rem}
p,li{max-width:48rem}
.muted{color:var(--muted)}
.note{background:#fff4d6;border-left:4px solid #9a6700;padding:.75rem 1rem}
.wide{overflow-x:auto;max-width:100%;margin:.5rem 0 1rem}
table{border-collapse:collapse;font-size:.9rem;min-width:50%}
caption{text-align:left;font-weight:600;padding:.25rem 0;color:var(--muted)}
th,td{border:1px solid var(--line);padding:.3rem .5rem;text-align:left;vertical-align:top}
thead th,th[scope=row]{background:var(--head)}
th.group{background:#dde6ef;font-size:.95rem}
td{overflow-wrap:break-word;min-width:6rem}
td.num,th.num{text-align:right;white-space:nowrap;min-width:0}
td.when{white-space:nowrap}
details{margin:.5rem 0 1rem}
summary{cursor:pointer;color:var(--accent);font-weight:600}
dl{display:grid;grid-template-columns:minmax(8rem,max-content) 1fr;gap:.25rem 1rem}
dt{font-weight:600}dd{margin:0;overflow-wrap:anywhere}
figure{margin:1rem 0}
.timeline{width:100%;height:auto;max-height:16rem}
.timeline rect{fill:var(--accent)}
.timeline text{font:11px system-ui,sans-serif;fill:var(--muted)}
.timeline .axis{stroke:var(--muted);stroke-width:1}
code{overflow-wrap:anywhere}
@media (max-width:40rem){dl{grid-template-columns:1fr}dd{margin-bottom:.5rem}}
@media print{.wide{overflow:visible}table{font-size:.75rem}
td,th{min-width:0;overflow-wrap:anywhere}td.when,td.num,th.num{white-space:normal}}
"""

_CACHED_TEXT: Final = 120  # longest text whose escaped form is kept (1,024 of them)

# Stand-ins between cells and rows while a table's body is escaped at once (_body_at_once).
_CELL: Final = "\x00"
_ROW: Final = "\x01"

_CSP: Final = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"

# Bidi embeddings, overrides and isolates (U+202A-202E, U+2066-2069) in an org value reorder
# what the browser shows: "\u202e+20 2 1234 5678" reads "8765 4321 2 02+". They are shown as a
# space, as README.txt shows them; the person's own right-to-left text needs none of them.
_BIDI: Final = re.compile("[\u202a-\u202e\u2066-\u2069]")


def _escape(text: str) -> str:
    """``escape(text, quote=True)`` with bidi controls made spaces."""
    return escape(_BIDI.sub(" ", text), quote=True)


def _e(value: object) -> str:
    text = str(value)
    # Labels, headings and sentences come back on every contact: each escaped once, kept in a
    # cache bounded in entries and, since values come from the org, in each entry's size.
    return _escaped(text) if len(text) <= _CACHED_TEXT else _escape(text)


@functools.lru_cache(maxsize=1024)
def _escaped(text: str) -> str:
    return _escape(text)


def render_html(view: AnswerView, tables: KindTables | None = None) -> str:
    """The whole page as one string; ``tables`` shares the cells' text with README.txt."""
    out: list[str] = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(wording.title(view))}</title>",
        f"<style>{_CSS}</style></head><body><main>",
        f"<h1>{_e(wording.title(view))}</h1>",
        f"<p>{_e(wording.greeting(view))}</p>",
    ]
    out += [f"<p>{_e(line)}</p>" for line in wording.intro(view)]
    _contents(out, view)
    # What, why, how long and what to do about it first; the long tables of records after.
    _summary(out, view)
    _timeline(out, view)
    _statement(out, view.statement)
    _rights(out, view.statement)
    _records(out, view)
    _interactions(out, view, tables or KindTables())
    _exports(out, view)
    _searched(out, view)
    _files(out)
    out.append("</main></body></html>\n")
    return "\n".join(out)


def _contents(out: list[str], view: AnswerView) -> None:
    """In-page links to the sections this answer has (no script, no network)."""
    sources = view.question.sources
    links = [
        ("summary", "What we hold about you"),
        ("controller", "Who we are, why we use your data and for how long"),
        ("rights", "Your rights and how to use them"),
        *([("records", "Your records in our customer database")] if "records" in sources else []),
        *(
            [("interactions", "Your marketing interactions")]
            if "interactions" in sources and view.held_types
            else []
        ),
        *([("realtime", "Real-time journeys export")] if "realtime" in sources else []),
        ("searched", "What we searched"),
        ("files", "The files of this answer"),
    ]
    out.append('<nav aria-label="On this page"><p><strong>On this page</strong></p><ul>')
    out += [f'<li><a href="#{anchor}">{_e(text)}</a></li>' for anchor, text in links]
    out.append("</ul></nav>")


def _table(
    out: list[str],
    caption: str,
    head: Sequence[str],
    rows: Iterable[Sequence[str]],
    *,
    numeric: frozenset[int] = frozenset(),
    when: frozenset[int] = frozenset(),
    row_headers: bool = False,
) -> None:
    """A captioned table; the first cell of each row is its header when ``row_headers``."""
    out.append(f'<div class="wide" role="region" aria-label="{_e(caption)}" tabindex="0">')
    out.append(f"<table><caption>{_e(caption)}</caption><thead><tr>")
    num = ' class="num"'
    out += [
        f'<th scope="col"{num if n in numeric else ""}>{_e(h)}</th>' for n, h in enumerate(head)
    ]
    out.append("</tr></thead><tbody>")
    body = [row if isinstance(row, list) else list(row) for row in rows]
    # Each column's opening and closing tags are worked out once, not once per cell: a type's
    # table can have 500 rows of a dozen cells.
    width = max(map(len, body), default=0)
    tags: list[tuple[str, str]] = []
    for n in range(width):
        css = ' class="num"' if n in numeric else ' class="when"' if n in when else ""
        header = n == 0 and row_headers
        tags.append((f'<th scope="row"{css}>', "</th>") if header else (f"<td{css}>", "</td>"))
    if not _body_at_once(out, tags, body):
        for row in body:
            # tags can be longer than a short row: zip stops at the row's last cell.
            pairs = zip(tags, row, strict=False)
            cells = "".join([f"{start}{_escape(str(cell))}{end}" for (start, end), cell in pairs])
            out.append(f"<tr>{cells}</tr>")
    out.append("</tbody></table></div>")


def _body_at_once(out: list[str], tags: list[tuple[str, str]], rows: list[list[str]]) -> bool:
    """The table's rows as ``_table`` writes them one by one, in one ``escape`` for all cells.

    Escaping maps each character on its own, so escaping the cells joined by a character it
    leaves alone, then putting the tags where those characters are, gives the same text. Done
    when every row has every column and all cells but the first open and close alike (the
    tables of interactions); ``False`` leaves the table to the cell-by-cell loop.
    """
    width = len(tags)
    if not rows or not width or any(len(row) != width for row in rows):
        return False
    first_start, first_end = tags[0]
    if any(tag != tags[-1] for tag in tags[1:]) or any(end != first_end for _, end in tags):
        return False
    text = _ROW.join([_CELL.join(map(str, row)) for row in rows])
    if text.count(_CELL) != len(rows) * (width - 1) or text.count(_ROW) != len(rows) - 1:
        return False  # a cell holds one of the two characters itself
    start = tags[-1][0]
    text = _escape(text).replace(_CELL, first_end + start)
    text = text.replace(_ROW, f"{first_end}</tr>\n<tr>{first_start}")
    out.append(f"<tr>{first_start}{text}{first_end}</tr>")
    return True


def _when(value: Any) -> str:
    return long_date(value) if value else ""


def _summary(out: list[str], view: AnswerView) -> None:
    """One table, a group of rows per source (its header spans the row), so it stays narrow."""
    out.append('<h2 id="summary">What we hold about you</h2>')
    searched = view.question.sources
    groups: list[tuple[str, list[tuple[str, str, str]]]] = []
    if "records" in searched:
        rows = [
            ("Your contact record", "1" if view.contact else "none", ""),
            ("Your consent and contact preferences", wording.count(view.consent_count), ""),
        ]
        rows += [(wording.table_label(t.table), wording.count(t.count), "") for t in view.records]
        groups.append((wording.source_label("records"), rows))
    if "interactions" in searched:
        rows = [
            (
                wording.capital(wording.meaning(t.name)),
                f"{t.count:,}",
                wording.day_span(t.first, t.last),
            )
            for t in view.held_types
        ]
        groups.append((wording.source_label("interactions"), rows))
    if "realtime" in searched:
        groups.append(
            (
                wording.source_label("realtime"),
                [("Export files", wording.count(len(view.exports)), "")],
            )
        )
    caption = "Records held, by source and kind"
    # A "When" column only when something has a date (interactions); else it stays empty.
    dated = any(when for _, rows in groups for _, _, when in rows)
    span = 3 if dated else 2
    out.append(f'<div class="wide" role="region" aria-label="{_e(caption)}" tabindex="0">')
    out.append(
        f"<table><caption>{_e(caption)}</caption><thead><tr>"
        '<th scope="col">What</th><th scope="col" class="num">How many</th>'
        + ('<th scope="col">When</th>' if dated else "")
        + "</tr></thead>"
    )
    for source, rows in groups:
        out.append(
            f'<tbody><tr><th scope="colgroup" colspan="{span}" class="group">{_e(source)}</th></tr>'
        )
        if not rows:  # only interactions can have none: within the period asked for, if any
            out.append(
                f'<tr><td colspan="{span}">We hold no records of this kind about you'
                f"{_e(wording.within(view))}.</td></tr>"
            )
        out += [
            f'<tr><th scope="row">{_e(what)}</th><td class="num">{_e(count)}</td>'
            + (f"<td>{_e(when)}</td>" if dated else "")
            + "</tr>"
            for what, count, when in rows
        ]
        out.append("</tbody>")
    out.append("</table></div>")
    if "interactions" in searched and view.total_interactions:
        out.append(
            f"<p>In all, {view.total_interactions:,} marketing "
            f"interaction{'' if view.total_interactions == 1 else 's'}. "
            f"{_e(wording.period_found(view))}</p>"
        )
    if line := wording.no_records_line(view):
        out.append(f"<p>{_e(line)}</p>")


def _timeline(out: list[str], view: AnswerView) -> None:
    svg = timeline_svg(view.monthly)
    if not svg:
        return
    out.append('<h2 id="timeline">Your interactions over time</h2>')
    out.append("<p>Each bar is one month; its height is the number of interactions.</p>")
    out.append(
        f'<figure>{svg}<figcaption class="muted">Interactions per month '
        "(all kinds together)</figcaption></figure>"
    )


def _field_list(out: list[str], caption: str, row: Mapping[str, Any]) -> None:
    _table(out, caption, ("Field", "Value"), record_fields(row), row_headers=True)


def _row_table(out: list[str], caption: str, rows: Sequence[Mapping[str, Any]]) -> None:
    """Several Dataverse rows: one table, one row each, columns from the labelled fields."""
    labelled = [dict(record_fields(row)) for row in rows]
    head = list(dict.fromkeys(k for fields in labelled for k in fields))
    _table(out, caption, head, ([f.get(h, "") for h in head] for f in labelled))


def _records(out: list[str], view: AnswerView) -> None:
    if "records" not in view.question.sources:
        return
    out.append('<h2 id="records">Your records in our customer database</h2>')
    out.append("<h3>Your contact record</h3>")
    if view.contact:
        _field_list(out, "Your contact record, field by field", view.contact)
    else:
        out.append("<p>We hold no contact record of this kind about you.</p>")
    out.append("<h3>Your consent and contact preferences</h3>")
    if view.consents:
        _row_table(
            out, "What you agreed to or refused, per e-mail address or phone number", view.consents
        )
        _more(out, view.consent_count - len(view.consents), view.consent_file)
    else:
        out.append("<p>We hold no records of this kind about you.</p>")
    for table in view.records:
        out.append(f"<h3>{_e(wording.table_label(table.table))}</h3>")
        _row_table(out, f"{wording.table_label(table.table)}, one row each", table.rows)
        _more(out, table.more, table.file)


def _more(out: list[str], more: int, file: str) -> None:
    if more > 0:
        out.append(f'<p class="muted">{more:,} more in <code>{_e(file)}</code>.</p>')


def _interactions(out: list[str], view: AnswerView, tables: KindTables) -> None:
    if "interactions" not in view.question.sources:
        return
    out.append('<h2 id="interactions">Your marketing interactions, kind by kind</h2>')
    if not view.held_types:
        out.append(f"<p>We hold no records of this kind about you{_e(wording.within(view))}.</p>")
        return
    out.append(
        "<p>Newest first. Technical identifiers are in the last columns; they let the "
        "organisation find each record if you ask for it to be corrected or deleted.</p>"
    )
    for t in view.held_types:
        _type_section(out, t, tables)


def _type_section(out: list[str], t: TypeRows, tables: KindTables) -> None:
    out.append(f'<h3 id="type-{_e(t.name)}">{_e(label(t.name))}</h3>')
    span = f", from {_when(t.first)} to {_when(t.last)}" if t.first and t.last else ""
    out.append(
        f"<p>{_e(wording.capital(wording.meaning(t.name)))}: {t.count:,} "
        f"time{'s' if t.count != 1 else ''}{_e(span)}.</p>"
    )
    if note := wording.type_note(t.name):
        out.append(f'<p class="note">{_e(note)}</p>')
    columns, cells = tables.of(t)
    caption = f"{label(t.name)}: newest first" + (
        f", the newest {len(t.rows):,} of {t.count:,}" if t.more else ""
    )
    folded = len(t.rows) > OPEN_ROWS
    if folded:
        shown = f"the newest {len(t.rows):,} of {t.count:,}" if t.more else f"all {t.count:,}"
        out.append(f"<details><summary>Show {shown}</summary>")
    _table(
        out,
        caption,
        [label(c) for c in columns],
        cells,
        when=frozenset({0}) if columns[:1] == ["Timestamp"] else frozenset(),
    )
    if folded:
        out.append("</details>")
    _more(out, t.more, t.file)


def _exports(out: list[str], view: AnswerView) -> None:
    if "realtime" not in view.question.sources:
        return
    out.append('<h2 id="realtime">Real-time journeys export</h2>')
    if not view.exports:
        out.append("<p>We hold no records of this kind about you.</p>")
        return
    out.append("<p>The product's own export of your data, kept exactly as it produced it.</p>")
    _table(
        out,
        "Export files",
        ("File", "Size (bytes)", "SHA-256 checksum"),
        ((f.name, f"{f.size:,}", f.sha256) for f in view.exports),
        numeric=frozenset({1}),
    )
    for f in view.exports:
        if f.summary:
            _table(out, f"What {f.name} holds", ("Field", "Value"), f.summary, row_headers=True)


def _statement(out: list[str], statement: Statement | None) -> None:
    out.append('<h2 id="controller">Who we are and what we do with your data</h2>')
    if statement is None:
        out.append(f'<p class="note">{_e(wording.MISSING_STATEMENT)}</p>')
        return
    s = statement
    items = [
        ("Controller", f"{s.name}, {s.address}"),
        ("Contact", s.contact),
        *([("Data protection officer", s.dpo)] if s.dpo else []),
        ("Supervisory authority", s.supervisory_authority),
    ]
    out.append("<dl>" + "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in items) + "</dl>")
    out.append("<h3>Why we use your data, and on which legal basis</h3>")
    _table(
        out,
        "Purposes and legal bases",
        ("Purpose", "Legal basis"),
        ((p.purpose, p.legal_basis) for p in s.purposes),
        row_headers=True,
    )
    sections = [
        ("Kinds of personal data we hold", s.categories),
        ("Who receives your data", s.recipients),
    ]
    for heading, values in sections:
        out.append(f"<h3>{_e(heading)}</h3><ul>")
        out += [f"<li>{_e(v)}</li>" for v in values]
        out.append("</ul>")
    out.append(f"<h3>How long we keep it</h3><p>{_e(s.retention)}</p>")
    out.append(
        f"<h3>Where data we did not get from you came from</h3><p>{_e(s.source_of_data)}</p>"
    )
    out.append(f"<h3>Automated decisions and profiling</h3><p>{_e(s.automated_decisions)}</p>")
    out.append("<h3>Transfers outside the European Economic Area</h3>")
    if s.transfers:
        _table(
            out,
            "Transfers and their safeguards",
            ("Where to", "Safeguard"),
            ((t.destination, t.safeguard) for t in s.transfers),
            row_headers=True,
        )
    else:
        out.append(
            "<p>We do not transfer your personal data outside the European Economic Area.</p>"
        )


def _rights(out: list[str], statement: Statement | None) -> None:
    out.append('<h2 id="rights">Your rights</h2><p>You have the right:</p><ul>')
    out += [f"<li><strong>{_e(name)}</strong>: {_e(text)}</li>" for name, text in wording.RIGHTS]
    out.append("</ul>")
    if statement:
        out.append(f"<p>{_e(wording.how_to_use_rights(statement))}</p>")
        if statement.rights_note:
            out.append(f"<p>{_e(statement.rights_note)}</p>")


def _searched(out: list[str], view: AnswerView) -> None:
    q = view.question
    out.append('<h2 id="searched">What we searched</h2>')
    items = [
        ("System searched", q.system),
        ("Your contact id", view.contact_id),
        ("Period asked for", wording.period_asked(view)),
        # The period the interactions found cover: only where that source was searched (a
        # cloud org of today has none, and its real-time export may hold many).
        *([("Period found", wording.span_found(view))] if "interactions" in q.sources else []),
        ("Sources searched", "; ".join(wording.source_label(s) for s in q.sources) or "none"),
    ]
    if q.sources_not_searched:
        items.append(
            (
                "Sources not searched",
                "; ".join(wording.source_label(s) for s in q.sources_not_searched),
            )
        )
    if "interactions" in q.sources:
        items.append(("Kinds of interaction searched", f"{len(q.types)} of 40"))
    if q.tables_not_searched:
        items.append(("Tables not searched", wording.tables_named(q.tables_not_searched)))
    if view.empty_types:
        items.append(("Searched, nothing found", ", ".join(label(t) for t in view.empty_types)))
    if q.types_not_searched and "interactions" in q.sources:  # else the source is named
        items.append(("Kinds not searched", ", ".join(label(t) for t in q.types_not_searched)))
    out.append("<dl>" + "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in items) + "</dl>")


def _files(out: list[str]) -> None:
    out += _file_guide()


@functools.lru_cache(maxsize=1)
def _file_guide() -> tuple[str, ...]:
    """The same on every page: written once."""
    out = ['<h2 id="files">The files of this answer</h2>']
    _table(
        out,
        "Files and what they hold",
        ("File", "What it holds"),
        wording.file_guide(),
        row_headers=True,
    )
    return tuple(out)
