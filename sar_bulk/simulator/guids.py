"""The simulator's own GUID rule: what a Dataverse org accepts as a row id.

Deliberately separate from the client's ``sar_bulk.guids``: the simulator stands in for the org,
so a mistake in how the client spells ids must not be hidden by the same mistake here. The org's
rule: 32 hex digits in the 8-4-4-4-12 dashed form, any case, no braces in requests; rows are keyed
by the lower-case form.
"""

from __future__ import annotations

import re

__all__ = ["canonical_guid", "is_canonical_guid", "is_dashed_guid"]

_DASHED = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_CANONICAL = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def is_dashed_guid(text: str) -> bool:
    """True for the dashed 36-character form in any case (what a URL or ``$filter`` may hold)."""
    return _DASHED.fullmatch(text) is not None


def is_canonical_guid(text: str) -> bool:
    """True for the lower-case dashed form the simulator keys its rows by."""
    return _CANONICAL.fullmatch(text) is not None


def canonical_guid(text: str) -> str:
    """The lower-case dashed form of a dashed GUID, for settings (braces allowed there).

    ``ValueError`` for anything else. Requests are held to ``is_dashed_guid`` instead.
    """
    bare = text.strip()
    if bare.startswith("{") and bare.endswith("}"):
        bare = bare[1:-1]
    if not is_dashed_guid(bare):
        raise ValueError(f"not a dashed GUID: {text!r}")
    return bare.lower()
