"""``sar_bulk.printable``: Unicode 14.0's printable characters, the same answer on every Python.

README.txt makes every character that is not printable a space. Python 3.12 and 3.13 carry
newer Unicode databases than 3.11 (15.0, 15.1), where thousands more characters are assigned
and so printable: asked of the interpreter, the same contact's README.txt had other bytes on
each Python. These tests run on every interpreter: the table must be exactly what Python 3.11
says (checked where the interpreter is 3.11's Unicode, by its pinned digest everywhere), and a
README holding characters of later Unicode versions must read the same everywhere.
"""

from __future__ import annotations

import hashlib
import sys
import unicodedata
from typing import Final

from answer_samples import CONTACT, PREPARED
from hypothesis import given
from hypothesis import strategies as st

from sar_bulk._unicode14 import UNICODE_VERSION
from sar_bulk.answer import AnswerBuilder, Question, render_html, render_text
from sar_bulk.printable import printable, shown

# Every code point, and the SHA-256 of the (big-endian, 3-byte) code points the table hides,
# as Python 3.11 computes it: a table edited or read wrongly changes it, on any interpreter.
_EVERY: Final = "".join(map(chr, range(sys.maxunicode + 1)))
_HIDDEN_COUNT: Final = 969_596
_HIDDEN_SHA256: Final = "8af8f5f6fa8ca2ae3f5fc27505f29699bca0ffc05158ed0b2d757e9d43c13ae0"
# Assigned after Unicode 14.0: 15.0's Kannada sign, emoji, CJK Extension H, an Egyptian
# hieroglyph format control; 15.1's CJK Extension I.
_LATER: Final = "\u0cf3\U0001fae8\U00031350\U00013439\U0002ebf0"
# Of Unicode 14.0 or older: Kannada, an emoji, CJK Extension G, Latin.
_OLDER: Final = "\u0cf2\U0001fae7\U00030000\u00e9"


def _hidden() -> list[int]:
    return [n for n, (c, s) in enumerate(zip(_EVERY, shown(_EVERY), strict=True)) if c != s]


def test_the_table_is_python_3_11s_isprintable() -> None:
    hidden = _hidden()
    packed = b"".join(n.to_bytes(3, "big") for n in hidden)
    assert (len(hidden), hashlib.sha256(packed).hexdigest()) == (_HIDDEN_COUNT, _HIDDEN_SHA256)
    native = [n for n, c in enumerate(_EVERY) if not c.isprintable()]
    if unicodedata.unidata_version == UNICODE_VERSION:  # Python 3.11: the table is its answer
        assert hidden == native
    else:  # a later Unicode only assigns more characters, so hides fewer
        assert set(native) < set(hidden)
        assert all(unicodedata.category(_EVERY[n]) != "Cn" for n in set(hidden) - set(native))


@given(st.text())
def test_printable_is_shown_unchanged(text: str) -> None:
    assert printable(text) == (shown(text) == text)
    assert printable(shown(text))


def test_characters_of_later_unicode_versions_are_spaces_in_the_readme_on_every_python() -> None:
    builder = AnswerBuilder(CONTACT, Question("https://contoso.crm4.dynamics.com"))
    subject = f"later:{_LATER}| older:{_OLDER}|"
    builder.add_interaction("EmailSent", {"Timestamp": "2024-01-01T00:00:00Z", "Subject": subject})
    view = builder.build(prepared_at=PREPARED, statement=None)
    readme = render_text(view).split("\r\n")
    assert f"  Subject    later:{' ' * len(_LATER)}| older:{_OLDER}|" in readme
    # index.html shows every character as it is (a browser draws what it knows): no database.
    assert subject in render_html(view)
