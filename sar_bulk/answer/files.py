"""The answer's two files as the dossier writer stores them: names and UTF-8 bytes.

Usage::

    for name, data in answer_files(view).items():    # {"index.html": ..., "README.txt": ...}
        writer.add_member(name, data)                 # and hash both in the manifest

Rendering is pure CPU work (about 20 ms for 4,000 interactions, 2 ms for a typical contact); for
big contacts the writer may run it with ``asyncio.to_thread`` so the event loop stays free. Both
files show the same text for a cell, so ``KindTables`` works it out once for the two.
"""

from __future__ import annotations

from typing import Final

from sar_bulk.answer.fields import KindTables
from sar_bulk.answer.html import render_html
from sar_bulk.answer.text import render_text
from sar_bulk.answer.view import AnswerView

__all__ = ["HTML_NAME", "TEXT_NAME", "answer_files"]

HTML_NAME: Final = "index.html"
TEXT_NAME: Final = "README.txt"


def answer_files(view: AnswerView) -> dict[str, bytes]:
    """``index.html`` and ``README.txt`` of one answer, encoded as UTF-8."""
    tables = KindTables()  # each cell's text worked out once, for both files
    return {
        HTML_NAME: render_html(view, tables).encode("utf-8"),
        TEXT_NAME: render_text(view, tables).encode("utf-8"),
    }
