"""Reference copy of the answer code before its speed work (see __init__).

The answer's two files as the dossier writer stores them: names and UTF-8 bytes.

Usage::

    for name, data in answer_files(view).items():    # {"index.html": ..., "README.txt": ...}
        writer.add_member(name, data)                 # and hash both in the manifest

Rendering is pure CPU work (about 50 ms for 4,000 interactions); for big contacts the writer may
run it with ``asyncio.to_thread`` so the event loop stays free.
"""

from __future__ import annotations

from typing import Final

from answer_reference.html import render_html
from answer_reference.text import render_text
from answer_reference.view import AnswerView

__all__ = ["HTML_NAME", "TEXT_NAME", "answer_files"]

HTML_NAME: Final = "index.html"
TEXT_NAME: Final = "README.txt"


def answer_files(view: AnswerView) -> dict[str, bytes]:
    """``index.html`` and ``README.txt`` of one answer, encoded as UTF-8."""
    return {
        HTML_NAME: render_html(view).encode("utf-8"),
        TEXT_NAME: render_text(view).encode("utf-8"),
    }
