"""JSON decoding that keeps every value exactly as the server wrote it.

Usage::

    rows = jsonexact.loads(page_text)        # numbers orjson would change come back as Fragments
    orjson.dumps(rows)                       # writes those numbers byte for byte

A subject-access answer must hold what the org holds, not a rounded copy: ``orjson.loads``
turns ``0.1000000000000000055511151231257827`` into ``0.1``, ``1.5e-400`` into ``0.0``,
integers past 64 bits into floats, ``1E5`` into ``100000.0``, and refuses ``1e400``. So every
number that orjson would not write back as the very same text is decoded as an
``orjson.Fragment`` holding that text, which ``orjson.dumps`` writes verbatim. (A number
orjson writes back unchanged stays a plain ``float`` or ``int``.)

Fast paths. A text up to ``_ROUND_TRIP_MAX`` characters that orjson decodes and writes back as
the very same bytes (compact JSON, as a serializer writes it) keeps every number by definition:
one decode and one encode in C, a third of the time of the scan below. Otherwise: orjson writes
back an integer token between -2**63 and 2**64 exactly, and every other token (a fraction, an
exponent, ``-0``, 19 digits or more) is caught by ``_RISKY``. A JSON number always follows
``:``, ``[``, ``,`` or the start of the text, then optional JSON whitespace, so a text where
``_RISKY`` finds nothing holds only numbers orjson keeps, and orjson's value is kept. A string
that merely looks like such a number only sends the text down the exact path (correct,
slower). ``tests/test_decoder_fuzz.py`` checks the property with hypothesis.

Refused with ``JsonRefused`` (a ``ValueError`` whose message never quotes the text): invalid
JSON, NaN/Infinity literals, a lone surrogate (it cannot be written as UTF-8), text nested too
deeply to decode, text too big to hold.
"""

from __future__ import annotations

import json
import re
from typing import Any, Final

import orjson

__all__ = ["JsonRefused", "loads"]

# A number token orjson would write back differently (see the module docstring): "-0", a
# fraction or exponent, or 19 digits and more. Written to start with a character class (the
# start of the text is checked apart), which lets the regex engine skip ahead: a fifth of the
# time of the plain "(?:^|[:\[,])..." alternation.
_RISKY: Final = re.compile(r"[:\[,][ \t\n\r]*-?[0-9](?:(?<=-0)|[0-9]*[.eE]|[0-9]{18})")
_RISKY_AT_START: Final = re.compile(r"[ \t\n\r]*-?[0-9](?:(?<=-0)|[0-9]*[.eE]|[0-9]{18})")
# An escaped surrogate: only then can a lone one hide in the text (raw ones are not UTF-8).
_SURROGATE_ESCAPE: Final = re.compile(r"\\u[dD][89a-fA-F]")
# Integers orjson keeps as integers (and so writes back as the same digits).
_INT_MIN: Final = -(2**63)
_INT_MAX: Final = 2**64 - 1
_LONGEST_KEPT_INT: Final = 20  # digits of 2**64 - 1
_TOO_DEEP: Final = "the JSON nests too deeply to decode"
# Longest text checked by writing it back: the copy is held for a moment beside the page.
_ROUND_TRIP_MAX: Final = 1 << 20


class JsonRefused(ValueError):
    """The text is not JSON that can be kept exactly; the message says why, not what."""


def loads(data: bytes | str) -> Any:
    """Decode ``data``; numbers orjson would change come back as ``orjson.Fragment``."""
    if isinstance(data, bytes | bytearray | memoryview):
        raw = bytes(data)
        try:
            # Strict UTF-8: json.loads on bytes would let encoded surrogates through.
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise JsonRefused("the text is not UTF-8") from None
    else:
        text = data
        raw = None
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        reason = _orjson_reason(exc)
        # Nested deeper than orjson reads (1,024 levels) is refused here, not left to json,
        # whose limit is the interpreter's: about 1,000 levels on Python 3.11, 1,500 on 3.12,
        # 10,000 on 3.13, so such a page was refused on one Python and kept on the next.
        if reason == _TOO_DEEP or (
            _RISKY.search(text) is None and _RISKY_AT_START.match(text) is None
        ):
            raise JsonRefused(reason) from None
        return _loads_exact(text)  # 1e400 and the like: orjson refuses what json keeps
    except MemoryError:
        raise JsonRefused("the JSON is too big to hold in memory") from None
    if len(text) <= _ROUND_TRIP_MAX and _writes_back(value, raw or text.encode("utf-8")):
        return value
    if _RISKY.search(text) is None and _RISKY_AT_START.match(text) is None:
        return value
    return _loads_exact(text)


def _writes_back(value: Any, raw: bytes) -> bool:
    """orjson writes ``value`` back as exactly ``raw`` (so every number in it is kept)."""
    try:
        return orjson.dumps(value) == raw
    except orjson.JSONEncodeError:  # nested deeper than orjson writes: let the scan decide
        return False


def _loads_exact(text: str) -> Any:
    try:
        value = json.loads(
            text, parse_float=_fragment, parse_int=_integer, parse_constant=_refuse_constant
        )
    except JsonRefused:
        raise
    except RecursionError:
        raise JsonRefused(_TOO_DEEP) from None
    except MemoryError:
        raise JsonRefused("the JSON is too big to hold in memory") from None
    except ValueError:
        raise JsonRefused("the text is not valid JSON") from None
    if _SURROGATE_ESCAPE.search(text) is not None:
        # The standard library accepts "\ud800"; orjson (and UTF-8) do not. Writing the value
        # once is the cheapest complete check, and runs only when such an escape is present.
        try:
            orjson.dumps(value)
        except orjson.JSONEncodeError as exc:
            reason = str(exc)
            if "surrogate" in reason:
                raise JsonRefused("a string holds a lone surrogate (not valid Unicode)") from None
            raise JsonRefused("the JSON cannot be written back exactly") from None
    return value


def _fragment(number: str) -> float | orjson.Fragment:
    # A fraction or exponent: a float where orjson writes it back as the same text (as it does
    # for what orjson or JavaScript wrote), so callers can still compare and compute with it;
    # else the text itself (more digits than a double, 1e400, 1.5e-400, 1E5, 1.50).
    value = float(number)
    if orjson.dumps(value) == number.encode():
        return value
    return orjson.Fragment(number)


def _integer(digits: str) -> int | orjson.Fragment:
    # Length first: int() of a huge number is slow, and past 4,300 digits refused.
    if len(digits) <= _LONGEST_KEPT_INT and digits != "-0":
        value = int(digits)
        if _INT_MIN <= value <= _INT_MAX:
            return value
    return orjson.Fragment(digits)


def _refuse_constant(name: str) -> Any:
    raise JsonRefused(f"{name} is not a JSON value")


def _orjson_reason(exc: orjson.JSONDecodeError) -> str:
    message = str(exc).split(":", 1)[0]  # orjson's reason, without the position or the text
    if "surrogate" in message:
        return "a string holds a lone surrogate (not valid Unicode)"
    if "depth" in message or "recursion" in message:
        return _TOO_DEEP
    return "the text is not valid JSON"
