"""The export requests this run made for a contact, as the ``realtime`` part notes them.

Usage::

    key = note_key("email", "ann@example.org")      # the part's note per e-mail or phone
    await scope.remember(key, PENDING + name)       # before the POST, then CREATED + id
    mine = await own_requests(scope, [("email", "ann@example.org")])   # {name or id, ...}

Why the ``records`` part asks: its earlier subject requests are the ``msdynmkt_gdprrequest``
rows with the contact's e-mail or phone as input, and the export requests this run makes are
rows of that table too. Whether ``records`` saw them depended on which part asked first, so the
same contact could get two different dossiers. ``records`` now leaves out the rows this run
made (they are in the dossier as the real-time export, with their ids), and only when the
realtime part runs for the contact. The note is written before the POST, so a row that exists
has its note: read after the row was seen, it names the row (``pending:<name>``) or its id
(``id:<guid>``). Requests an earlier run made stay in: they are earlier subject requests.
Left as it is: a contact sharing an e-mail or phone with another contact of the same run may see
that contact's new export request among its earlier ones, depending on timing.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Final, Protocol

__all__ = ["CREATED", "GONE", "NAME_PREFIX", "PENDING", "note_key", "own_requests"]

NAME_PREFIX: Final = "sar-bulk export"
# A note's value: the name of a request about to be created (written before the POST, so a
# crash between the POST and its answer is found again by name), then the created row's id.
PENDING: Final = "pending:"
CREATED: Final = "id:"
# A request whose row was deleted while a run waited: the next run makes a new one (a value
# that is neither of the above), and it no longer counts as this run's.
GONE: Final = "gone:"


class Notes(Protocol):
    async def recall(self, key: str) -> str | None: ...


def note_key(kind: str, value: str) -> str:
    """The note of the export request for one e-mail address or phone number."""
    return "realtime/" + hashlib.sha256(f"{kind}:{value}".encode()).hexdigest()[:16]


async def own_requests(scope: Notes, found: Iterable[tuple[str, str]]) -> set[str]:
    """Names and ids (lower case) of the export requests noted for ``found`` (kind, value)."""
    mine: set[str] = set()
    for kind, value in found:
        note = await scope.recall(note_key(kind, value))
        if note is None:
            continue
        if note.startswith(PENDING):
            mine.add(note.removeprefix(PENDING))
        elif note.startswith(CREATED):
            mine.add(note.removeprefix(CREATED).lower())
    return mine
