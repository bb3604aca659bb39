"""Which characters README.txt shows as they are: the same answer on every Python.

Usage::

    printable(text)   # str.isprintable() as Python 3.11 answers it, on any Python
    shown(text)       # text with every other character made a space

Why: ``str.isprintable`` and ``unicodedata`` answer from the interpreter's own Unicode database,
14.0 on Python 3.11, 15.0 on 3.12, 15.1 on 3.13 (and newer on each later Python). A character
a later version assigns (U+0CF3 KANNADA SIGN COMBINING ANUSVARA ABOVE RIGHT, CJK Extensions H
and I, new emoji: 5,116 of them from 14.0 to 15.1) is unassigned, so not printable, on 3.11 and
printable on 3.12: README.txt showed a space for it on one Python and the character on the next,
and the bytes of a dossier depended on the Python that made it. This module answers from a fixed
table instead, Unicode 14.0's printable set (``_unicode14``, written by
``scripts/unicode14_table.py`` under Python 3.11), so the answer is the one 3.11 has always
given. Printable means: not of category C (controls, format, surrogates, private use,
unassigned) or Z (separators), the ASCII space excepted.

The check is one regular expression of explicit code-point ranges, which ``re`` matches without
the Unicode database; ASCII text, the common case, is left to ``str.isprintable`` (whose answer
for ASCII no Unicode version changes).
"""

from __future__ import annotations

import re
from typing import Final

from sar_bulk._unicode14 import PRINTABLE_RANGES

__all__ = ["printable", "shown"]


def _hidden_pattern() -> re.Pattern[str]:
    ranges = []
    for item in PRINTABLE_RANGES.split():
        first, last = item.split("-")
        ranges.append(f"\\U{int(first, 16):08x}-\\U{int(last, 16):08x}")
    return re.compile("[^" + "".join(ranges) + "]")


_HIDDEN: Final = _hidden_pattern()


def printable(text: str) -> bool:
    """``text.isprintable()`` as Unicode 14.0 (Python 3.11) answers it."""
    if text.isascii():
        return text.isprintable()
    return _HIDDEN.search(text) is None


def shown(text: str) -> str:
    """``text`` with each character that is not ``printable`` replaced by a space."""
    if printable(text):
        return text
    return _HIDDEN.sub(" ", text)
