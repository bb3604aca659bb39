"""An exact set of 64-bit digests that costs about 8 bytes a member once it is big.

Usage::

    seen = DigestSet()
    if not seen.add(digest):          # False: it was there already
        repeats += 1

Why: ``DataverseClient.pages`` remembers every InteractionId of a (contact, type) to count the
ones a server sends twice. In a Python ``set`` each 8-byte digest costs ~60 bytes (a bytes or
int object and its slot), so a contact with 1,000,000 interactions held ~60 MB of digests while
it was fetched (``scripts/bench.py --only 5``, the heavy contact). Here new members go to a
small ``set`` and, every ``batch`` of them, are merged into one sorted ``array('Q')``; a lookup
is a set test plus a binary search (``bisect`` runs in C on the array). A contact with fewer
than ``batch`` interactions per type never leaves the small set, so the common case costs what
it did. A merge streams both sorted sequences into a new array (``heapq.merge``), so it needs
the old and the new array at once, never a list of every member.
"""

from __future__ import annotations

import heapq
from array import array
from bisect import bisect_left
from typing import Final

__all__ = ["DigestSet"]

_BATCH: Final = 65_536


class DigestSet:
    """Exact membership of unsigned 64-bit integers."""

    __slots__ = ("_batch", "_recent", "_sorted")

    def __init__(self, batch: int = _BATCH) -> None:
        if batch < 1:
            raise ValueError("batch must be at least 1")
        self._batch = batch
        self._recent: set[int] = set()
        self._sorted = array("Q")

    def __len__(self) -> int:
        return len(self._recent) + len(self._sorted)

    def __contains__(self, value: int) -> bool:
        if value in self._recent:
            return True
        merged = self._sorted
        index = bisect_left(merged, value)
        return index < len(merged) and merged[index] == value

    def add(self, value: int) -> bool:
        """Add ``value``; True when it was not a member before."""
        if value in self:
            return False
        self._recent.add(value)
        if len(self._recent) >= self._batch:
            self._merge()
        return True

    def _merge(self) -> None:
        self._sorted = array("Q", heapq.merge(self._sorted, sorted(self._recent)))
        self._recent.clear()
