"""The simulated org's interactions: deterministic, lazily built, and the tests' ground truth.

How much a contact has is a pure function of ``(seed, contact, type)``:

* most (contact, type) pairs are empty (85 %), the rest hold 1-20 interactions, skewed small;
* a stable ~1 % of contacts (``heavy_fraction``) are "heavy": 2,000-12,000 extra interactions
  spread over 3-8 types, so they page;
* ``heavy_contacts`` names contacts with an exact total (e.g. 1,000,000), spread the same way and
  nothing else.

Interaction ``i`` of a pair is built from ``hash(seed, contact, type, i)`` alone, in O(1), and its
timestamp lies in the ``i``-th of ``n`` equal slices of the pair's time span, so timestamps never
decrease with ``i``. A date filter is therefore an index range found by binary search, and a
million-interaction contact pages without the list ever existing in memory.
"""

from __future__ import annotations

import bisect
import calendar
import functools
import hashlib
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from sar_bulk.simulator.guids import canonical_guid, is_canonical_guid
from sar_bulk.simulator.hashing import Draw, stable_digest, stable_unit
from sar_bulk.simulator.interaction_types import ALL_TYPES, InteractionType
from sar_bulk.simulator.records import Person, build_record

__all__ = ["Dataset"]

_FIRST_SECOND = calendar.timegm((2019, 1, 1, 0, 0, 0))
_END_SECOND = calendar.timegm((2026, 1, 1, 0, 0, 0))  # exclusive: data spans 2019-2025
_DAY = 86_400
_EMPTY_SHARE = 0.85
_MAX_LIGHT = 20
_HEAVY_EXTRA = (2_000, 12_000)
_HEAVY_TYPES = (3, 8)
_FULL_SPAN_FROM = 200  # pairs this big spread over the whole period
_CHUNK = 1_000


@dataclass(frozen=True, slots=True)
class _Pair:
    """One (contact, type): its size and the time span its interactions fill."""

    key: bytes
    total: int
    start: int
    span: int

    def item_key(self, index: int) -> bytes:
        return hashlib.blake2b(self.key + index.to_bytes(8, "big"), digest_size=32).digest()

    def second(self, index: int, item_key: bytes | None = None) -> int:
        """Epoch second of item ``index``: inside slice ``index`` of ``total``, so monotone."""
        key = self.item_key(index) if item_key is None else item_key
        fraction = int.from_bytes(key[:4], "big")
        return self.start + ((index << 32) + fraction) * self.span // (self.total << 32)


def _spread(total: int, draw: Draw) -> list[int]:
    """Split ``total`` over a few randomly chosen types (weights drawn too); exact sum."""
    counts = [0] * len(ALL_TYPES)
    if total == 0:
        return counts
    order = list(range(len(ALL_TYPES)))
    for i in range(len(order) - 1, 0, -1):  # Fisher-Yates with the stable stream
        j = draw.below(i + 1)
        order[i], order[j] = order[j], order[i]
    chosen = order[: draw.between(*_HEAVY_TYPES)]
    weights = [draw.between(1, 100) for _ in chosen]
    shares = [total * weight // sum(weights) for weight in weights]
    shares[0] += total - sum(shares)
    for index, share in zip(chosen, shares, strict=True):
        counts[index] = share
    return counts


def _day_start(day: date) -> int:
    return calendar.timegm((day.year, day.month, day.day, 0, 0, 0))


class Dataset:
    """Ground truth of the simulated org; what the server sends, in the order it sends it.

    Contact ids are canonical lower-case GUIDs; dates are whole UTC days, both ends inclusive.
    """

    def __init__(
        self,
        seed: int = 0,
        heavy_contacts: Mapping[str, int] | None = None,
        *,
        heavy_fraction: float = 0.01,
    ) -> None:
        self.seed = seed
        self.heavy_fraction = heavy_fraction
        self._heavy = {canonical_guid(c): int(n) for c, n in (heavy_contacts or {}).items()}
        # Per-instance caches: a request needs the contact's totals and person every time.
        self._totals_cached = functools.lru_cache(maxsize=16_384)(self._compute_totals)
        self._person_cached = functools.lru_cache(maxsize=4_096)(self._compute_person)

    # ----- sizes ---------------------------------------------------------------------------

    def is_heavy(self, contact_id: str) -> bool:
        """True for contacts named in ``heavy_contacts`` or chosen by hash as heavy."""
        contact = self._contact(contact_id)
        return contact in self._heavy or self._hashed_heavy(contact)

    def totals(self, contact_id: str) -> dict[InteractionType, int]:
        """Unfiltered count per type, in canonical type order."""
        counts = self._totals_cached(self._contact(contact_id))
        return dict(zip(ALL_TYPES, counts, strict=True))

    def count(
        self,
        contact_id: str,
        itype: InteractionType | str,
        date_from: date | None = None,
        date_to: date | None = None,
    ) -> int:
        """How many interactions the server returns over all pages for this query."""
        pair = self._pair(self._contact(contact_id), InteractionType(itype))
        low, high = self._bounds(pair, date_from, date_to)
        return high - low

    # ----- content -------------------------------------------------------------------------

    def page(
        self,
        contact_id: str,
        itype: InteractionType | str,
        date_from: date | None,
        date_to: date | None,
        *,
        offset: int,
        limit: int,
    ) -> list[dict[str, Any]]:
        """Items ``offset`` .. ``offset + limit`` of the (filtered) result, built on demand."""
        if offset < 0 or limit < 0:
            raise ValueError("offset and limit must not be negative")
        contact = self._contact(contact_id)
        kind = InteractionType(itype)
        pair = self._pair(contact, kind)
        low, high = self._bounds(pair, date_from, date_to)
        first = low + offset
        last = min(high, first + limit)
        person = self._person_cached(contact)
        return [self._record(pair, contact, kind, person, i) for i in range(first, last)]

    def interactions(
        self,
        contact_id: str,
        itype: InteractionType | str,
        date_from: date | None = None,
        date_to: date | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Every interaction the query returns, in server order, built lazily in chunks."""
        total = self.count(contact_id, itype, date_from, date_to)
        for offset in range(0, total, _CHUNK):
            yield from self.page(contact_id, itype, date_from, date_to, offset=offset, limit=_CHUNK)

    # ----- internals -----------------------------------------------------------------------

    @staticmethod
    def _contact(contact_id: str) -> str:
        if not is_canonical_guid(contact_id):
            raise ValueError("contact_id must be a canonical lower-case GUID")
        return contact_id

    def _hashed_heavy(self, contact: str) -> bool:
        return stable_unit(self.seed, "heavy?", contact) < self.heavy_fraction

    def _compute_totals(self, contact: str) -> tuple[int, ...]:
        draw = Draw(stable_digest(self.seed, "heavy", contact))
        explicit = self._heavy.get(contact)
        if explicit is not None:
            return tuple(_spread(explicit, draw))
        counts = []
        for itype in ALL_TYPES:
            u = stable_unit(self.seed, "count", contact, itype.value)
            if u < _EMPTY_SHARE:
                counts.append(0)
            else:
                v = (u - _EMPTY_SHARE) / (1.0 - _EMPTY_SHARE)
                counts.append(1 + int((_MAX_LIGHT - 1) * v * v))
        if self._hashed_heavy(contact):
            extra = _spread(draw.between(*_HEAVY_EXTRA), draw)
            counts = [a + b for a, b in zip(counts, extra, strict=True)]
        return tuple(counts)

    def _compute_person(self, contact: str) -> Person:
        return Person.from_draw(Draw(stable_digest(self.seed, "person", contact)))

    def _pair(self, contact: str, itype: InteractionType) -> _Pair:
        total = self._totals_cached(contact)[ALL_TYPES.index(itype)]
        key = stable_digest(self.seed, "pair", contact, itype.value)
        draw = Draw(key)
        if total >= _FULL_SPAN_FROM:
            start = _FIRST_SECOND + draw.below(30 * _DAY)
            span = _END_SECOND - start - draw.below(30 * _DAY)
        else:
            start = _FIRST_SECOND + draw.below(_END_SECOND - _FIRST_SECOND - _DAY)
            span = draw.between(_DAY, _END_SECOND - start)
        return _Pair(key, total, start, span)

    @staticmethod
    def _bounds(pair: _Pair, date_from: date | None, date_to: date | None) -> tuple[int, int]:
        """Index range ``[low, high)`` of the items inside the whole-day range."""
        indices = range(pair.total)
        low = 0
        high = pair.total
        if date_from is not None:
            low = bisect.bisect_left(indices, _day_start(date_from), key=pair.second)
        if date_to is not None:
            end = _day_start(date_to + timedelta(days=1))
            high = bisect.bisect_left(indices, end, key=pair.second)
        return low, max(low, high)

    @staticmethod
    def _record(
        pair: _Pair, contact: str, itype: InteractionType, person: Person, index: int
    ) -> dict[str, Any]:
        key = pair.item_key(index)
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(pair.second(index, key)))
        return build_record(
            Draw(key),
            interaction_id=key[4:20].hex().upper(),
            itype=itype,
            timestamp=stamp,
            contact_id=contact,
            person=person,
        )
