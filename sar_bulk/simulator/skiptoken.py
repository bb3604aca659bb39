"""NextSkipToken values: opaque, Dataverse-looking, bound to one query and impossible to forge.

A token looks like the paging cookies Dataverse hands out (markup, quotes and entity-encoded
markup inside an attribute), so a client that does not send it back byte for byte fails::

    <cookie pagenumber="3" pagingcookie="&lt;cookie page=&quot;2&quot;&gt;&lt;interaction
    last=&quot;AAAAAAAAA-g&quot; /&gt;&lt;/cookie&gt;" istracking="False" sig="1f0c..." />

(one line in reality). It carries the next page number and the offset into the filtered result,
and a truncated HMAC over those and the query (contact, type, dates, Top). ``open`` re-issues the
token from what it parsed and compares the whole string, so any change at all, or use with another
query, is refused.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from dataclasses import dataclass

from sar_bulk.simulator.hashing import stable_digest

__all__ = ["Position", "SkipTokenCodec"]

_SHAPE = re.compile(
    r'<cookie pagenumber="(\d{1,10})" pagingcookie="&lt;cookie page=&quot;\d{1,10}&quot;&gt;'
    r'&lt;interaction last=&quot;([A-Za-z0-9_-]{11})&quot; /&gt;&lt;/cookie&gt;" '
    r'istracking="False" sig="[0-9a-f]{16}" />',
    re.ASCII,
)


@dataclass(frozen=True, slots=True)
class Position:
    """Where the next page starts: its 1-based number and the offset of its first item."""

    page: int
    offset: int


class SkipTokenCodec:
    """Issues and checks skip tokens with a key derived from the simulator's seed."""

    __slots__ = ("_key",)

    def __init__(self, key: bytes) -> None:
        self._key = key

    @classmethod
    def for_seed(cls, seed: int) -> SkipTokenCodec:
        return cls(stable_digest("sar-bulk simulator skip-token key", seed))

    def issue(self, query: str, position: Position) -> str:
        """The token for ``position`` in the result of ``query`` (any string naming the query)."""
        if not 0 <= position.offset < 2**64 or not 1 <= position.page < 10**10:
            raise ValueError("position out of range")
        offset = base64.urlsafe_b64encode(position.offset.to_bytes(8, "big")).rstrip(b"=")
        message = f"{position.page}|{position.offset}|{query}".encode()
        sig = hmac.new(self._key, message, hashlib.sha256).hexdigest()[:16]
        return (
            f'<cookie pagenumber="{position.page}" pagingcookie="&lt;cookie '
            f"page=&quot;{position.page - 1}&quot;&gt;&lt;interaction "
            f'last=&quot;{offset.decode("ascii")}&quot; /&gt;&lt;/cookie&gt;" '
            f'istracking="False" sig="{sig}" />'
        )

    def open(self, token: str, query: str) -> Position | None:
        """The position ``token`` names, or ``None`` if it was not issued for ``query``."""
        match = _SHAPE.fullmatch(token)
        if match is None:
            return None
        try:
            raw = base64.urlsafe_b64decode(match[2] + "=")
        except ValueError:
            return None
        position = Position(int(match[1]), int.from_bytes(raw, "big"))
        try:
            expected = self.issue(query, position)
        except ValueError:
            return None
        return position if hmac.compare_digest(expected.encode(), token.encode()) else None
