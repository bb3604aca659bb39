"""Real-time journeys' subject requests (``msdynmkt_gdprrequest``): rows, lifecycle, export files.

Usage::

    realtime = Realtime(seed=3, delay=30.0, clock=time.monotonic, wall_clock=time.time)
    request = realtime.create("SAR 42", realtime.options.export, "ana@contoso.com", owner)
    realtime.row(request)              # progress InProgress, later Completed with a file
    realtime.export_file("ana@contoso.com")   # ground truth: the exact bytes of gdpr_output.json

Lifecycle (documented: the system sets progress InProgress, then Completed; the file appears when
completed; processing time undocumented): a request completes ``delay`` seconds after it was
created, on the simulator's clock, unless its input is one that never completes
(``never_inputs`` or a stable ``never_share`` of inputs). Option values are derived from the seed
(``7734xxxxx``, not Microsoft's habitual 534120000 series) so a client must read them from metadata.

The export file's inner schema is unpublished; this one is plausible JSON (interactions with
journey ids and timestamps, saved e-mail copies). Its content is a pure function of
``(seed, input)`` (input compared without case and outer blanks), so every export of the same
identifier yields the same bytes, some of them megabytes long.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from sar_bulk.simulator.hashing import Draw, stable_digest, stable_unit
from sar_bulk.simulator.rows import Row

__all__ = ["FILE_NAME", "GdprRequest", "Options", "Realtime", "options_for_seed"]

FILE_NAME = "gdpr_output.json"
FILE_CACHE_BYTES = 256 * 1024 * 1024
_EVENTS = (
    "EmailSent",
    "EmailDelivered",
    "EmailOpened",
    "EmailClicked",
    "EmailHardBounced",
    "FormSubmitted",
    "FormVisited",
    "TextMessageSent",
    "TextMessageDelivered",
    "JourneyStarted",
    "CustomChannelSent",
    "ConsentChanged",
)
_SUBJECTS = ('Your "Summer" offer', "Bestätigung Ihrer Anmeldung", "¡Bienvenido! 🎉", "新製品")
_REMEMBERED = 100_000


@dataclass(frozen=True, slots=True)
class Options:
    """The option values of the two choice columns (seed-dependent)."""

    export: int
    delete: int
    in_progress: int
    completed: int

    def type_label(self, value: int) -> str:
        return {self.export: "Export", self.delete: "Delete"}[value]

    def progress_label(self, value: int) -> str:
        return {self.in_progress: "InProgress", self.completed: "Completed"}[value]


def options_for_seed(seed: int) -> Options:
    base = 773_400_000 + int(stable_unit(seed, "gdpr-options") * 90) * 100
    # Delete before Export and Completed before InProgress: a client counting positions fails.
    return Options(export=base + 1, delete=base, in_progress=base + 51, completed=base + 50)


@dataclass(slots=True)
class GdprRequest:
    """One row of the table; ``due`` is the clock time it completes (None: never)."""

    request_id: str
    name: str
    request_type: int
    input: str
    owner: str
    created_on: str
    due: float | None
    previous: bool = False


def _key(identifier: str) -> str:
    return identifier.strip().lower()


def _stamp(second: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(second))


class Realtime:
    """The table's rows (previous ones from the seed, new ones from POSTs) and export files."""

    def __init__(
        self,
        seed: int,
        *,
        delay: float,
        never_share: float = 0.0,
        never_inputs: frozenset[str] = frozenset(),
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.seed = seed
        self.options = options_for_seed(seed)
        self.delay = delay
        self.never_share = never_share
        self.never_inputs = frozenset(_key(i) for i in never_inputs)
        self._clock = clock
        self._wall_clock = wall_clock
        self._created: dict[str, GdprRequest] = {}
        self._previous: OrderedDict[str, GdprRequest] = OrderedDict()
        # Built files, newest use last, up to FILE_CACHE_BYTES in all. Downloads of many
        # contacts interleave (a client fetches a window of them at once), and a cache of a few
        # files rebuilt a file of thousands of interactions for each chunk: the simulator's CPU,
        # not the client, then set the pace of a benchmark. Built in worker threads: a lock.
        self._file_cache: OrderedDict[str, bytes] = OrderedDict()
        self._file_cache_bytes = 0
        self._file_lock = threading.Lock()

    # ----- rows ----------------------------------------------------------------------------

    def never_completes(self, identifier: str) -> bool:
        key = _key(identifier)
        return key in self.never_inputs or stable_unit(self.seed, "never?", key) < self.never_share

    def create(self, name: str, request_type: int, identifier: str, owner: str) -> GdprRequest:
        request_id = Draw(stable_digest(self.seed, "gdpr", len(self._created), identifier)).guid()
        while request_id in self._created:
            request_id = Draw(stable_digest(request_id)).guid()
        due = None if self.never_completes(identifier) else self._clock() + self.delay
        request = GdprRequest(
            request_id, name, request_type, identifier, owner, _stamp(self._wall_clock()), due
        )
        self._created[request_id] = request
        return request

    def created(self) -> list[GdprRequest]:
        """Every request made through the API, in order (they stay: evidence)."""
        return list(self._created.values())

    def previous(self, identifier: str) -> list[GdprRequest]:
        """Requests made before the simulator started (from the seed), for this input."""
        key = _key(identifier)
        draw = Draw(stable_digest(self.seed, "previous-gdpr", key))
        if not key or not draw.chance(0.2):
            return []
        found = []
        for n in range(draw.between(1, 2)):
            request_id = Draw(stable_digest(self.seed, "previous-gdpr-id", key, n)).guid()
            kind = self.options.export if draw.chance(0.8) else self.options.delete
            second = 1_735_689_600 + draw.below(300 * 86_400)  # during 2025
            request = GdprRequest(
                request_id,
                f"DSR {draw.below(10_000)}",
                kind,
                identifier,
                Draw(stable_digest(self.seed, "systemuser", 0)).guid(),
                _stamp(second),
                float("-inf"),
                previous=True,
            )
            self._previous[request_id] = request
            self._previous.move_to_end(request_id)
            found.append(request)
        while len(self._previous) > _REMEMBERED:
            self._previous.popitem(last=False)
        return found

    def by_id(self, request_id: str) -> GdprRequest | None:
        return self._created.get(request_id) or self._previous.get(request_id)

    def by_name(self, name: str) -> list[GdprRequest]:
        """Requests made through the API with this name (compared without case, as Dataverse
        compares strings). The seeded earlier requests are found by input or id only."""
        key = name.casefold()
        return [r for r in self._created.values() if r.name.casefold() == key]

    def by_input(self, identifier: str) -> list[GdprRequest]:
        key = _key(identifier)
        made = [r for r in self._created.values() if _key(r.input) == key]
        return self.previous(identifier) + made

    def completed(self, request: GdprRequest) -> bool:
        return request.due is not None and self._clock() >= request.due

    def file_id(self, request: GdprRequest) -> str | None:
        """The file column's value: a file id once an Export has completed."""
        if request.request_type != self.options.export or not self.completed(request):
            return None
        return Draw(stable_digest(self.seed, "file-id", request.request_id)).guid()

    def row(self, request: GdprRequest) -> Row:
        options = self.options
        done = self.completed(request)
        progress = options.completed if done else options.in_progress
        file_id = self.file_id(request)
        values: dict[str, Any] = {
            "msdynmkt_gdprrequestid": request.request_id,
            "msdynmkt_name": request.name,
            "msdynmkt_dsrrequesttype": request.request_type,
            "msdynmkt_dsrrequestinput": request.input,
            "msdynmkt_dsrrequestprogress": progress,
            "msdynmkt_dsrrequestdata": file_id,
            "msdynmkt_dsrrequestdata_name": FILE_NAME if file_id else None,
            "_ownerid_value": request.owner,
            "createdon": request.created_on,
            "modifiedon": request.created_on,
            "statecode": 0,
            "statuscode": 1,
        }
        formatted = {
            "msdynmkt_dsrrequesttype": options.type_label(request.request_type),
            "msdynmkt_dsrrequestprogress": options.progress_label(progress),
            "statecode": "Active",
            "statuscode": "Active",
        }
        return Row(values, formatted, {"_ownerid_value": ("systemuser", "ownerid")})

    # ----- export files --------------------------------------------------------------------

    def export_file(self, identifier: str) -> bytes:
        """The exact bytes of ``gdpr_output.json`` for this input (cached, see ``__init__``)."""
        key = _key(identifier)
        with self._file_lock:
            data = self._file_cache.get(key)
            if data is not None:
                self._file_cache.move_to_end(key)
                return data
        data = self._build_file(key)
        with self._file_lock:
            if key not in self._file_cache:
                self._file_cache[key] = data
                self._file_cache_bytes += len(data)
            while self._file_cache_bytes > FILE_CACHE_BYTES and len(self._file_cache) > 1:
                _, dropped = self._file_cache.popitem(last=False)
                self._file_cache_bytes -= len(dropped)
        return data

    def export_sha256(self, identifier: str) -> str:
        return hashlib.sha256(self.export_file(identifier)).hexdigest()

    def _build_file(self, key: str) -> bytes:
        draw = Draw(stable_digest(self.seed, "export", key))
        u = draw.unit()
        if u < 0.15:
            count = 0
        elif u < 0.85:
            count = draw.between(1, 200)
        elif u < 0.95:
            count = draw.between(1_000, 4_000)
        else:
            count = draw.between(6_000, 12_000)
        start = 1_577_836_800 + draw.below(3 * 365 * 86_400)
        journeys = [draw.guid() for _ in range(draw.between(1, 6))]
        interactions = []
        second = start
        for n in range(count):
            item = Draw(stable_digest(self.seed, "export-item", key, n))
            second += item.between(1, 86_400)
            event = item.choice(_EVENTS)
            record: dict[str, Any] = {
                "interactionId": item.hex(16),
                "interactionType": event,
                "timestamp": _stamp(second),
                "journeyId": item.choice(journeys),
                "activityId": item.guid(),
                "identifier": key,
                "sourceSystem": item.choice((0, 0, 1)),
            }
            if event.startswith("Email"):
                record["messageId"] = item.guid()
                record["subject"] = item.choice(_SUBJECTS)
            if event in ("EmailClicked", "FormSubmitted", "FormVisited"):
                record["url"] = "https://www.contoso.com/" + item.choice(
                    ("", "événements?id=7", "o'reilly")
                )
                record["userAgent"] = item.choice(
                    ("Mozilla/5.0 (Windows NT 10.0)", "Mozilla/5.0 (iPhone)")
                )
            if event == "FormSubmitted":
                record["fields"] = {
                    "comment": item.choice(('He said "hi"', "Très bien 👍", "")),
                    "consent": item.chance(0.7),
                }
            interactions.append(record)
        copies = [
            {
                "messageId": draw.guid(),
                "subject": draw.choice(_SUBJECTS),
                "html": "<html><body><p>Hallo "
                + key
                + "</p>"
                + "<p>Lorem ipsum</p>" * draw.between(5, 60)
                + "</body></html>",
            }
            for _ in range(draw.below(4) if count else 0)
        ]
        body = {"endUserIdentifier": key, "interactions": interactions, "savedEmailCopies": copies}
        return orjson.dumps(body, option=orjson.OPT_INDENT_2)
