"""Contact ids: every spelling users paste, one canonical form for requests and paths.

The canonical form is the lower-case, dashed 36-character GUID without braces. Nothing else ever
reaches a request body or a file name, so a value like ``../../x`` cannot become a path.
"""

from __future__ import annotations

import re

__all__ = ["canonical_guid", "is_canonical_guid"]

# Accepts: dashed with optional braces or parentheses, or 32 bare hex digits; any case.
_GUID = re.compile(
    r"""^\s*
    (?P<open>[{(]?)
    (?P<a>[0-9a-fA-F]{8})-?(?P<b>[0-9a-fA-F]{4})-?(?P<c>[0-9a-fA-F]{4})-?
    (?P<d>[0-9a-fA-F]{4})-?(?P<e>[0-9a-fA-F]{12})
    (?P<close>[})]?)
    \s*$""",
    re.VERBOSE,
)
_CANONICAL = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_PAIRS = {"": "", "{": "}", "(": ")"}


def canonical_guid(text: str) -> str:
    """Return the canonical form of ``text`` or raise ``ValueError`` saying why it is no GUID."""
    match = _GUID.match(text)
    if match is None or _PAIRS[match["open"]] != match["close"]:
        raise ValueError("not a GUID (expected 32 hex digits, optionally dashed and in braces)")
    body = match.group("a", "b", "c", "d", "e")
    dashed = text.count("-")
    if dashed not in (0, 4):
        raise ValueError("not a GUID (dashes must be all four or none)")
    return "-".join(body).lower()


def is_canonical_guid(text: str) -> bool:
    """True when ``text`` is already the canonical form (what paths and requests may hold)."""
    return _CANONICAL.fullmatch(text) is not None
