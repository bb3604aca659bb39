"""The run's memory: which contacts are done or failed, for resume, and which ids it has seen.

Why SQLite: a run may hold ten million contacts. What survives a killed process must be on disk,
and the de-duplication of the input cannot be an in-memory set of ten million ids either, or memory
would grow with the input. So there are two SQLite databases:

* the **state file** (``<out>/.sar-bulk/state.sqlite``, chosen by the engine): one row per contact
  that was finished (done or failed) or reopened, with the fingerprint of the run parameters it was
  produced under. Only this file outlives the run.
* a **seen set** per ``RunState``: every id claimed by this run, in SQLite's private temporary
  database (in ``SQLITE_TMPDIR``, ``TMPDIR`` or ``/var/tmp``; unlinked as soon as it is opened,
  so even a killed process leaves nothing behind). It is never committed: nothing in it has to
  survive, and an uncommitted page is only written when the page cache overflows. Committing
  each batch of claims into the state file instead wrote a WAL page per id and managed about
  20k ids/s at a million ids; the seen set claims ten million new ids at about 110k ids/s (CPU
  time, on a 2-core machine).

Usage (the engine calls these sync methods from a worker thread, one call at a time)::

    state = RunState.open(out / ".sar-bulk" / "state.sqlite", fingerprint=fp, run_id=run_id)
    for claim, done in state.claim_many(batch):   # Claim.NEW / DUPLICATE / DONE
        ...
    state.mark_done(contact_id, dossier="<id>.zip", interactions=12, zip_bytes=4096)
    state.close()

Deadlines (schema 3): when the contacts CSV has a received-date column, ``claim_many`` stores each
new contact's received date, due date and extension reason in the ``deadlines`` table (one
transaction per batch), and every run keeps its pending/done/failed counts in its ``runs`` row,
updated with each batch of claims and each finished contact. So ``sar-bulk status`` can say, from
the file alone and while the run goes on, how far a run is and which requests are at risk
(``at_risk``, ``deadline_counts``; they take a plain connection, so a read-only one works).

Durability: the state file is in WAL mode with ``synchronous=NORMAL``. A commit is then written to
the WAL before it returns but not fsynced, so it survives a killed process (SIGKILL) though not a
power cut. That is enough because the engine writes a dossier to disk *before* it marks the contact
done and re-validates dossiers on resume: a lost "done" row only means the contact is fetched again.

Sharing: several processes (shards) may use one state file. ``busy_timeout`` makes one wait for
another's short write instead of failing. Each ``RunState`` has its own seen set, so shards must
split the input between them; an id given to two shards is processed by both.

Memory stays flat: each database's page cache is capped (``_STATE_CACHE_KIB``, ``_SEEN_CACHE_KIB``)
whatever the number of contacts. The seen set takes about 25 bytes of temporary disk per contact.
"""

from __future__ import annotations

import functools
import json
import os
import re
import sqlite3
import stat
import threading
import time
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum
from pathlib import Path, PurePosixPath
from types import TracebackType
from typing import Final, Self, TypeVar
from uuid import UUID

from sar_bulk.errors import ConfigError
from sar_bulk.guids import is_canonical_guid
from sar_bulk.logs import scrub_value
from sar_bulk.run.deadlines import DUE_SOON_DAYS, Deadline, Urgency, days_left, urgency

__all__ = [
    "APPLICATION_ID",
    "SCHEMA_VERSION",
    "AtRisk",
    "Claim",
    "DoneRecord",
    "RunCounts",
    "RunState",
    "Status",
    "at_risk",
    "deadline_counts",
    "run_counts",
]

_T = TypeVar("_T")

SCHEMA_VERSION: Final = 4
# Written to the header's application_id so a stray SQLite file is never mistaken for ours.
APPLICATION_ID: Final = 0x53415242  # "SARB"
_BUSY_TIMEOUT_MS: Final = 60_000
# Page caches, in KiB. The seen set's cache decides claim speed once the set outgrows it.
_STATE_CACHE_KIB: Final = 16 * 1024
_SEEN_CACHE_KIB: Final = 128 * 1024
# Most ids per statement (the engine sends 500); fewer when SQLite allows few host parameters.
_CHUNK: Final = 1_000
_FAILED_PAGE: Final = 1_000
# Seconds between two commits of a run's counts when only claims changed them.
_COUNTS_EVERY: Final = 1.0
_GUID: Final = "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
_CANONICAL_LINES: Final = re.compile(f"{_GUID}(?:\n{_GUID})*")
_SHA256: Final = re.compile("[0-9a-f]{64}")
_ADVICE: Final = "choose another output folder, or delete the file to start over"

# Notes a contact's parts keep across runs (an export request's id, say): ContactScope.remember.
_NOTES_TABLE: Final = """CREATE TABLE notes (
        contact_id TEXT NOT NULL,
        key TEXT NOT NULL,
        value TEXT NOT NULL,
        PRIMARY KEY (contact_id, key)
    ) WITHOUT ROWID"""
# Schema 1 -> 2: the dossier's SHA-256 (evidence that the file on disk is the one written) and
# the notes table. Old rows have no hash: their dossiers are still verified before adoption.
_MIGRATE_1_TO_2: Final = ("ALTER TABLE contacts ADD COLUMN sha256 TEXT", _NOTES_TABLE)
# A contact's request: received and due dates (ISO), the extension's reason, the run that last
# claimed it. Ordered by due date for ``sar-bulk status``.
_DEADLINES_TABLE: Final = (
    """CREATE TABLE deadlines (
        contact_id TEXT PRIMARY KEY,
        received TEXT NOT NULL,
        due TEXT NOT NULL,
        extension TEXT,
        run INTEGER NOT NULL REFERENCES runs (id)
    ) WITHOUT ROWID""",
    "CREATE INDEX deadlines_by_due ON deadlines (due)",
)
# Schema 2 -> 3: deadlines, and each run's counts (NULL for runs of an older sar-bulk).
_MIGRATE_2_TO_3: Final = (
    "ALTER TABLE runs ADD COLUMN pending INTEGER",
    "ALTER TABLE runs ADD COLUMN done INTEGER",
    "ALTER TABLE runs ADD COLUMN failed INTEGER",
    "ALTER TABLE runs ADD COLUMN updated_at TEXT",
    *_DEADLINES_TABLE,
)
# Schema 3 -> 4: the etag of a dossier published to a blob container (None for a folder).
_MIGRATE_3_TO_4: Final = ("ALTER TABLE contacts ADD COLUMN etag TEXT",)
_MIGRATIONS: Final = {1: _MIGRATE_1_TO_2, 2: _MIGRATE_2_TO_3, 3: _MIGRATE_3_TO_4}
_SCHEMA: Final = (
    "CREATE TABLE fingerprints (id INTEGER PRIMARY KEY, value TEXT NOT NULL UNIQUE)",
    "CREATE TABLE runs (id INTEGER PRIMARY KEY, run_id TEXT NOT NULL UNIQUE, "
    "started_at TEXT NOT NULL, pending INTEGER, done INTEGER, failed INTEGER, updated_at TEXT)",
    """CREATE TABLE contacts (
        contact_id TEXT PRIMARY KEY,
        status TEXT NOT NULL CHECK (status IN ('pending', 'done', 'failed')),
        fingerprint INTEGER NOT NULL REFERENCES fingerprints (id),
        run INTEGER NOT NULL REFERENCES runs (id),
        dossier TEXT,
        interactions INTEGER,
        zip_bytes INTEGER,
        finished_at TEXT,
        reasons TEXT,
        sha256 TEXT,
        etag TEXT
    ) WITHOUT ROWID""",
    _NOTES_TABLE,
    *_DEADLINES_TABLE,
)
_INSERT_DEADLINE: Final = (
    "INSERT OR REPLACE INTO deadlines (contact_id, received, due, extension, run) "
    "VALUES (?, ?, ?, ?, ?)"
)
_UPDATE_COUNTS: Final = (
    "UPDATE runs SET pending = ?, done = ?, failed = ?, updated_at = ? WHERE id = ?"
)
# Contacts with a deadline that are not answered (no row: claimed, not finished yet).
_OPEN_DEADLINES: Final = """
SELECT d.contact_id, d.received, d.due, d.extension, coalesce(c.status, 'pending')
FROM deadlines AS d LEFT JOIN contacts AS c ON c.contact_id = d.contact_id
WHERE (c.status IS NULL OR c.status != 'done') {where}
"""
_RECORD: Final = """
INSERT OR REPLACE INTO contacts
    (contact_id, status, fingerprint, run, dossier, interactions, zip_bytes, finished_at, reasons,
     sha256, etag)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
"""
# Only "?" marks are formatted into these, never a value (see _marks).
_SELECT_DONE: Final = (
    "SELECT contact_id, dossier, interactions, zip_bytes, finished_at, sha256, etag "
    "FROM contacts "
    "WHERE status = 'done' AND fingerprint = ? AND contact_id IN ({marks})"
)
_ANY_DONE: Final = (
    "SELECT EXISTS (SELECT 1 FROM contacts WHERE status = 'done' AND fingerprint = ?)"
)
_SELECT_REASONS: Final = "SELECT contact_id, reasons FROM contacts WHERE contact_id IN ({marks})"
# RETURNING (SQLite 3.35+) answers "which ids are new" in the same statement that adds them.
_HAS_RETURNING: Final = sqlite3.sqlite_version_info >= (3, 35, 0)
_SELECT_SEEN: Final = "SELECT contact_id FROM seen WHERE contact_id IN ({marks})"
_INSERT_SEEN_OLD: Final = "INSERT OR IGNORE INTO seen (contact_id, status) VALUES {pairs}"
_INSERT_SEEN: Final = (
    "INSERT INTO seen (contact_id, status) VALUES {pairs} "
    "ON CONFLICT (contact_id) DO NOTHING RETURNING contact_id"
)


class Claim(StrEnum):
    """What ``claim_many`` decided for one id."""

    NEW = "new"
    """Process it: never seen, failed or unfinished before, or done under another fingerprint."""
    DUPLICATE = "duplicate"
    """Already claimed earlier in this run (another spelling of the same id): skip it."""
    DONE = "done"
    """Done in an earlier run with the same fingerprint: check the dossier, ``reopen`` if bad."""


class Status(StrEnum):
    """Where a contact of this run stands; ``status_counts`` reports every member."""

    PENDING = "pending"
    DONE = "done"
    FAILED = "failed"


# The seen set stores a status as a small integer: one byte or none per row instead of seven.
_CODE: Final = {Status.PENDING: 0, Status.DONE: 1, Status.FAILED: 2}
_STATUS: Final = {code: status for status, code in _CODE.items()}


@dataclass(frozen=True, slots=True)
class DoneRecord:
    """What the state file remembers of a finished dossier."""

    contact_id: str
    dossier: str
    """File name relative to the output folder."""
    interactions: int
    zip_bytes: int
    finished_at: str
    """ISO 8601 UTC, e.g. ``2026-05-09T07:35:25Z``."""
    sha256: str | None = None
    """Lower-case hex SHA-256 of the dossier as written (None for rows of schema 1)."""
    etag: str | None = None
    """The blob's etag when the dossier was published to a container (None for a folder)."""


@dataclass(frozen=True, slots=True)
class AtRisk:
    """A request not answered yet (pending or failed) and how close its due date is."""

    contact_id: str
    received: date
    due: date
    extension_reason: str | None
    status: Status
    days_left: int
    urgency: Urgency

    def as_json(self) -> dict[str, object]:
        """For reports and ``status --json``; the extension's reason is told by a flag only."""
        return {
            "contact_id": self.contact_id,
            "received": self.received.isoformat(),
            "due": self.due.isoformat(),
            "days_left": self.days_left,
            "extended": self.extension_reason is not None,
            "status": str(self.status),
        }


@dataclass(frozen=True, slots=True)
class RunCounts:
    """One run's claims by status, as last committed (None: a run of an older sar-bulk)."""

    run_id: str
    started_at: str
    updated_at: str | None
    pending: int | None
    done: int | None
    failed: int | None


class RunState:
    """One run's view of the state file: safe for calls from any thread, one at a time.

    A ``run_id`` names one invocation; rows this run finishes are stamped with it.
    """

    __slots__ = (
        "_conn",
        "_fp",
        "_lock",
        "_resuming",
        "_run",
        "_saved_at",
        "_seen",
        "_unsaved",
        "path",
    )

    def __init__(self, path: Path, conn: sqlite3.Connection, fp: int, run: int) -> None:
        """Use ``RunState.open``; this keeps what it prepared and opens the seen set."""
        self.path = path
        self._conn = conn
        self._fp = fp
        self._run = run
        # Without a done row under this fingerprint no claim can be DONE, and claims skip the
        # look-up. Finding out reads the whole file only when it has rows but none match. A row
        # written later by this run is for an id already seen, so the answer cannot change
        # (another shard's rows are for ids this one does not get).
        self._resuming = conn.execute(_ANY_DONE, (fp,)).fetchone()[0] == 1
        self._seen = _SeenSet()
        self._lock = threading.Lock()
        self._saved_at = float("-inf")  # the first claims are saved at once
        self._unsaved = False

    @classmethod
    def open(cls, path: Path, *, fingerprint: str, run_id: str, restart: bool = False) -> Self:
        """Open (or create) the state file at ``path`` for the run ``run_id``.

        ``fingerprint`` identifies the run parameters: contacts done under another one are
        claimed as NEW. ``restart`` forgets every earlier contact; use it only while no other
        process has the file open. Raises ``ConfigError`` for a file that cannot be created or
        opened, is not a sar-bulk state database, or comes from a newer sar-bulk; the methods
        raise it too for damage found later, a full disk or an I/O error (``_file_errors``).
        """
        if not fingerprint or not run_id:
            raise ValueError("fingerprint and run_id must not be empty")
        try:
            _create_private(path)
            conn = sqlite3.connect(
                path, timeout=_BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False
            )
        except (OSError, sqlite3.OperationalError) as exc:
            raise ConfigError(f"cannot create or open the state file {path} ({exc})") from None
        try:
            with _file_errors(path):
                _prepare(conn, path)
            with _file_errors(path), _write(conn):
                if restart:
                    # deadlines first: its run ids would be reused by the next runs
                    for table in ("deadlines", "notes", "contacts", "runs", "fingerprints"):
                        conn.execute(f"DELETE FROM {table}")  # noqa: S608 - fixed names
                fp, run = _lookup_ids(conn, fingerprint, run_id)
            with _file_errors(path):
                return cls(path, conn, fp, run)
        except BaseException:
            conn.close()
            raise

    def claim_many(
        self, contact_ids: Sequence[str], deadlines: Sequence[Deadline | None] = ()
    ) -> list[tuple[Claim, DoneRecord | None]]:
        """Classify each id in order and add it to this run's seen set.

        Ids must be canonical GUIDs (``ValueError`` otherwise): de-duplication compares them
        as text. The first claim of an id is NEW or DONE (with its ``DoneRecord``), every later
        one DUPLICATE, within a batch and across batches. ``deadlines``, when given, holds one
        entry per id; those of first claims are stored (a duplicate's is ignored), and the run's
        counts are committed with them.
        """
        _check_ids(contact_ids)
        if deadlines and len(deadlines) != len(contact_ids):
            raise ValueError("deadlines must hold one entry per contact id")
        results: list[tuple[Claim, DoneRecord | None]] = []
        with self._lock, _file_errors(self.path):
            step = self._seen.chunk
            for start in range(0, len(contact_ids), step):
                chunk = contact_ids[start : start + step]
                done = self._done_records(chunk)
                first = self._seen.add(chunk, done.keys())
                for contact_id in chunk:
                    if contact_id not in first:
                        results.append((Claim.DUPLICATE, None))
                    elif record := done.get(contact_id):
                        results.append((Claim.DONE, record))
                    else:
                        results.append((Claim.NEW, None))
                    first.discard(contact_id)  # a later spelling in this chunk is a duplicate
            rows = [
                (i, d.received.isoformat(), d.due.isoformat(), d.extension_reason, self._run)
                for i, d, (claim, _) in zip(contact_ids, deadlines, results, strict=False)
                if d is not None and claim is not Claim.DUPLICATE
            ]
            # Counts alone are saved at most once a second: a commit per batch would halve the
            # claim rate of a big CSV without a received column (WAL writes).
            if rows or time.monotonic() - self._saved_at >= _COUNTS_EVERY:
                with _write(self._conn):
                    if rows:
                        self._conn.executemany(_INSERT_DEADLINE, rows)
                    self._save_counts()
            else:
                self._unsaved = True
        return results

    def reopen(self, contact_id: str) -> None:
        """Set a DONE contact whose dossier is missing or invalid back to pending."""
        self._record(contact_id, Status.PENDING)

    def mark_done(
        self,
        contact_id: str,
        *,
        dossier: str,
        interactions: int,
        zip_bytes: int,
        sha256: str | None = None,
        etag: str | None = None,
    ) -> None:
        """Record a finished dossier, its SHA-256 and (blob output) its etag; committed before
        this returns.

        Call it only once the dossier is complete on disk: resume trusts this row, and adopts
        the file only while its hash is still ``sha256``. The contact's notes are dropped:
        they served the parts that wrote this dossier.
        """
        relative = PurePosixPath(dossier)
        if not dossier or relative.is_absolute() or ".." in relative.parts:
            raise ValueError(f"dossier {dossier!r} must be a path relative to the output folder")
        if interactions < 0 or zip_bytes < 0:
            raise ValueError("interactions and zip_bytes must not be negative")
        if sha256 is not None and not _SHA256.fullmatch(sha256):
            raise ValueError("sha256 must be 64 lower-case hex digits")
        self._record(
            contact_id,
            Status.DONE,
            dossier,
            interactions,
            zip_bytes,
            _utc_now(),
            sha256=sha256,
            etag=etag,
        )

    def recall(self, contact_id: str, key: str) -> str | None:
        """The note ``key`` kept for ``contact_id`` by this run or an earlier one, or None."""
        with self._lock, _file_errors(self.path):
            row = self._conn.execute(
                "SELECT value FROM notes WHERE contact_id = ? AND key = ?", (contact_id, key)
            ).fetchone()
        return None if row is None else str(row[0])

    def remember(self, contact_id: str, key: str, value: str) -> None:
        """Keep a note for ``contact_id`` (committed before this returns)."""
        if not key:
            raise ValueError("a note needs a key")
        with self._lock, _file_errors(self.path):
            self._conn.execute(
                "INSERT OR REPLACE INTO notes (contact_id, key, value) VALUES (?, ?, ?)",
                (contact_id, key, value),
            )

    def mark_failed(self, contact_id: str, reasons: Mapping[str, str]) -> None:
        """Record a failed contact with a reason per interaction type (``"*"``: the contact)."""
        if not reasons:
            raise ValueError("a failed contact needs at least one reason")
        # A reason may quote the server, which may have echoed the token: redact before storing.
        text = json.dumps(scrub_value(dict(reasons)), sort_keys=True, ensure_ascii=False)
        self._record(contact_id, Status.FAILED, reasons=text)

    def status_counts(self) -> dict[str, int]:
        """How many contacts of this run are pending, done and failed (every key present).

        A DONE claim counts as done, a DUPLICATE not at all.
        """
        with self._lock:
            return {str(status): n for status, n in self._seen.counts.items()}

    def at_risk(self, today: date, *, limit: int) -> tuple[dict[Urgency, int], list[AtRisk]]:
        """This run's unanswered requests: counts by urgency, and the ``limit`` nearest due."""
        with self._lock, _file_errors(self.path):
            counts = deadline_counts(self._conn, today, run=self._run)
            return counts, at_risk(self._conn, today, limit=limit, run=self._run)

    def failed(self) -> Iterator[tuple[str, dict[str, str]]]:
        """This run's failed contacts with their reasons, in id order, a page at a time.

        The lock is held per page only, so other calls may come between two pages.
        """
        after = ""
        while True:
            with self._lock:
                ids = self._seen.failed_after(after, _FAILED_PAGE)
                query = _marks(_SELECT_REASONS, len(ids))
                reasons = dict(self._conn.execute(query, ids).fetchall())
            for contact_id in ids:
                yield contact_id, json.loads(reasons[contact_id])
            if len(ids) < _FAILED_PAGE:
                return
            after = ids[-1]

    def close(self) -> None:
        """Close both databases; the seen set disappears. Closing twice is harmless."""
        with self._lock:
            try:
                if self._unsaved:
                    self._unsaved = False
                    with _file_errors(self.path), _write(self._conn):
                        self._save_counts()
            finally:
                self._conn.close()
            self._seen.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _done_records(self, contact_ids: Sequence[str]) -> dict[str, DoneRecord]:
        """The DoneRecords of those ids that are done under this run's fingerprint."""
        if not self._resuming:
            return {}
        rows = self._conn.execute(_marks(_SELECT_DONE, len(contact_ids)), (self._fp, *contact_ids))
        return {row[0]: DoneRecord(*row) for row in rows}

    def _record(
        self,
        contact_id: str,
        status: Status,
        dossier: str | None = None,
        interactions: int | None = None,
        zip_bytes: int | None = None,
        finished_at: str | None = None,
        reasons: str | None = None,
        sha256: str | None = None,
        etag: str | None = None,
    ) -> None:
        """Write a claimed contact's row to the state file (committed), then to the seen set."""
        row = (contact_id, status, self._fp, self._run, dossier, interactions, zip_bytes)
        with self._lock:
            # The seen set first: it refuses an id this run never claimed (KeyError) before
            # anything is written, and one look-up there serves that check and the counts.
            old = self._seen.set_status(contact_id, status)
            try:
                with _file_errors(self.path), _write(self._conn):
                    self._conn.execute(_RECORD, (*row, finished_at, reasons, sha256, etag))
                    if status is Status.DONE:
                        self._conn.execute("DELETE FROM notes WHERE contact_id = ?", (contact_id,))
                    self._save_counts()
            except BaseException:
                self._seen.set_status(contact_id, old)  # the row was rolled back too
                raise

    def _save_counts(self) -> None:
        """Write the seen set's counts into this run's row (inside the caller's transaction)."""
        counts = self._seen.counts
        self._unsaved = False
        self._saved_at = time.monotonic()
        self._conn.execute(
            _UPDATE_COUNTS,
            (
                counts[Status.PENDING],
                counts[Status.DONE],
                counts[Status.FAILED],
                _utc_now(),
                self._run,
            ),
        )


class _SeenSet:
    """The ids this run has claimed and their status, in a private temporary SQLite database.

    Keys are the 16 bytes of the GUID, not its 36 characters, so twice as many fit in the cache.
    The one transaction stays open for the set's whole life and has no journal: the set never
    needs to survive or roll back, and uncommitted pages are written only when the cache is full.
    ``counts`` follows every change, so the report does not have to read ten million rows.
    """

    __slots__ = ("_conn", "chunk", "counts")

    def __init__(self) -> None:
        # "" is SQLite's private on-disk temporary database, deleted when closed or killed.
        self._conn = sqlite3.connect("", isolation_level=None, check_same_thread=False)
        # An id takes two host parameters here and one (plus the fingerprint) in _SELECT_DONE.
        limit = self._conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
        self.chunk = min(_CHUNK, limit // 2 - 1)
        self.counts = dict.fromkeys(Status, 0)
        self._conn.execute(f"PRAGMA cache_size = -{_SEEN_CACHE_KIB}")
        self._conn.execute("PRAGMA journal_mode = OFF")
        self._conn.execute(
            "CREATE TABLE seen (contact_id BLOB PRIMARY KEY, status INTEGER NOT NULL) WITHOUT ROWID"
        )
        self._conn.execute("BEGIN")

    def add(self, contact_ids: Sequence[str], done: Collection[str]) -> set[str]:
        """Add ids, as done when in ``done`` else pending; return those that were new to the set."""
        keys = {_key(contact_id): contact_id for contact_id in contact_ids}
        pending, finished = _CODE[Status.PENDING], _CODE[Status.DONE]
        params = [v for k, i in keys.items() for v in (k, finished if i in done else pending)]
        if _HAS_RETURNING:
            query = _marks(_INSERT_SEEN, len(keys))
            first = {keys[row[0]] for row in self._conn.execute(query, params)}
        else:
            query = _marks(_SELECT_SEEN, len(keys))
            known = {row[0] for row in self._conn.execute(query, list(keys))}
            first = {i for k, i in keys.items() if k not in known}
            self._conn.execute(_marks(_INSERT_SEEN_OLD, len(keys)), params)
        for contact_id in first:
            self.counts[Status.DONE if contact_id in done else Status.PENDING] += 1
        return first

    def set_status(self, contact_id: str, status: Status) -> Status:
        """Change a claimed id's status, returning the old one (``KeyError``: never claimed)."""
        key = _key(contact_id)
        row = self._conn.execute("SELECT status FROM seen WHERE contact_id = ?", (key,)).fetchone()
        if row is None:
            raise KeyError(f"contact {contact_id} was not claimed by this run")
        self._conn.execute("UPDATE seen SET status = ? WHERE contact_id = ?", (_CODE[status], key))
        old = _STATUS[row[0]]
        self.counts[old] -= 1
        self.counts[status] += 1
        return old

    def failed_after(self, after: str, limit: int) -> list[str]:
        """Up to ``limit`` failed ids after ``after`` ("": from the start), in order."""
        rows = self._conn.execute(
            "SELECT contact_id FROM seen WHERE contact_id > ? AND status = ? "
            "ORDER BY contact_id LIMIT ?",
            (_key(after) if after else b"", _CODE[Status.FAILED], limit),
        )
        return [str(UUID(bytes=row[0])) for row in rows]

    def close(self) -> None:
        self._conn.close()


@contextmanager
def _write(conn: sqlite3.Connection) -> Iterator[None]:
    """A ``BEGIN IMMEDIATE`` transaction: committed on success, rolled back on any exception.

    IMMEDIATE takes the write lock up front, so a transaction that reads first never has to
    upgrade its lock while another process writes (which would fail instead of waiting).
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        # SQLite may have rolled back already (a full disk, an I/O error): a second ROLLBACK
        # would fail and hide the error that says what went wrong.
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


@contextmanager
def _file_errors(path: Path) -> Iterator[None]:
    """A damaged state file, a full disk, an I/O error or a lock held too long by another process
    as a ``ConfigError`` saying what to do.

    Damage can sit in any page, so it may show only when a claim or a write first reads it,
    long after the file was opened. Any other SQLite error (a bug) stays as it is.
    """
    try:
        yield
    except sqlite3.DatabaseError as exc:
        name = exc.sqlite_errorname or ""
        if name.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB")):
            raise ConfigError(
                f"the state file {path} is damaged ({exc}): delete it, with its -wal and -shm "
                "files, to start over (dossiers already written are checked again, not lost), "
                "or choose another output folder"
            ) from None
        if name == "SQLITE_FULL":
            raise ConfigError(
                f"the disk is full: the state file {path} (or SQLite's temporary files, in "
                "SQLITE_TMPDIR, TMPDIR or /var/tmp) cannot grow; free some space and run again "
                "(what is finished is kept)"
            ) from None
        if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
            raise ConfigError(
                f"another process has held the state file {path} for over "
                f"{_BUSY_TIMEOUT_MS / 1000:g} s (another run given the same --state, or a "
                "sqlite3 shell with a transaction open?): end it, or give this run its own "
                "--state or --out"
            ) from None
        if name.startswith("SQLITE_IOERR"):
            raise ConfigError(
                f"the state file {path} cannot be read or written ({exc}): check the disk, "
                "then run again (what is finished is kept)"
            ) from None
        raise


def _create_private(path: Path) -> None:
    """Create the parent folder (0700) and the file (0600) unless they exist.

    Only what this function creates gets these modes: a folder the user chose is left alone.
    SQLite gives the -wal and -shm files the mode of the database file. What is already there is
    untrusted: the file is created with ``O_EXCL | O_NOFOLLOW``, and an existing one must be a
    regular file, not a link, a device or a FIFO (SQLite would follow or block on those).
    """
    parent = path.parent
    if not parent.is_dir():
        parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        parent.chmod(0o700)  # mkdir's mode is filtered by the umask
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, 0o600)
    except FileExistsError:
        mode = os.lstat(path).st_mode
        if not stat.S_ISREG(mode):
            raise ConfigError(
                f"the state file {path} is not a regular file (a link, a device or a pipe?); "
                f"{_ADVICE}"
            ) from None
        return
    try:
        os.fchmod(fd, 0o600)
    finally:
        os.close(fd)


def _prepare(conn: sqlite3.Connection, path: Path) -> None:
    """Check the file is ours (or blank), switch it to WAL and create the schema when blank."""
    conn.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
    try:
        mode = _when_not_busy(lambda: _header_and_wal(conn, path))
    except sqlite3.DatabaseError as exc:
        if exc.sqlite_errorname not in {"SQLITE_NOTADB", "SQLITE_CORRUPT"}:
            raise
        raise ConfigError(f"{path} is not a sar-bulk state database ({exc}); {_ADVICE}") from None
    if mode != "wal":
        raise ConfigError(
            f"{path} cannot use SQLite's WAL mode (journal mode {mode!r}); "
            "put the output folder on a local disk"
        )
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute(f"PRAGMA cache_size = -{_STATE_CACHE_KIB}")
    with _write(conn):
        # Two shards may open a blank file at once: the second finds the first one's schema.
        if not _is_blank(conn):
            _check_header(conn, path)
            return
        for statement in _SCHEMA:
            conn.execute(statement)
        conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


def _header_and_wal(conn: sqlite3.Connection, path: Path) -> str:
    if not _is_blank(conn):
        _check_header(conn, path, migrate=True)
    mode: str = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    return mode


def _when_not_busy(step: Callable[[], _T]) -> _T:
    """Run ``step``, again while another process holds the file (up to the busy timeout).

    Switching a blank file to WAL needs it to itself, and SQLite can answer "database is
    locked" at once there instead of waiting: two shards opening one new file meet that.
    """
    deadline = time.monotonic() + _BUSY_TIMEOUT_MS / 1000
    pause = 0.005
    while True:
        try:
            return step()
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorname != "SQLITE_BUSY" or time.monotonic() > deadline:
                raise
        time.sleep(pause)
        pause = min(pause * 2, 0.2)


def _is_blank(conn: sqlite3.Connection) -> bool:
    """A file without tables: just created by ``_create_private``, or emptied by other means."""
    return conn.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchone() is None


def _check_header(conn: sqlite3.Connection, path: Path, *, migrate: bool = False) -> None:
    """Refuse a file that is not ours or is newer; bring an older schema up when ``migrate``."""
    app_id = conn.execute("PRAGMA application_id").fetchone()[0]
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if app_id != APPLICATION_ID:
        raise ConfigError(f"{path} is not a sar-bulk state database; {_ADVICE}")
    if version > SCHEMA_VERSION:
        raise ConfigError(
            f"{path} was written by a newer sar-bulk (state schema {version}, this one reads "
            f"{SCHEMA_VERSION}); upgrade sar-bulk, or delete the file to start over"
        )
    if version in _MIGRATIONS and migrate:
        _migrate(conn)
        return
    if version != SCHEMA_VERSION:
        raise ConfigError(f"{path} has unknown state schema {version}; {_ADVICE}")


def _migrate(conn: sqlite3.Connection) -> None:
    """Bring an older file up to ``SCHEMA_VERSION``, step by step, in one transaction.

    A shard may race us: the version is read again inside the write lock.
    """
    with _write(conn):
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        while version in _MIGRATIONS:
            for statement in _MIGRATIONS[version]:
                conn.execute(statement)
            version += 1
        conn.execute(f"PRAGMA user_version = {version}")


def at_risk(
    conn: sqlite3.Connection, today: date, *, limit: int, run: int | None = None
) -> list[AtRisk]:
    """The ``limit`` unanswered requests due soonest (overdue first), of one run or all."""
    where, params = ("AND d.run = ?", [run]) if run is not None else ("", [])
    query = _OPEN_DEADLINES.format(where=where) + " ORDER BY d.due, d.contact_id LIMIT ?"
    found = []
    for contact_id, received, due, extension, status in conn.execute(query, (*params, limit)):
        due_day = date.fromisoformat(due)
        found.append(
            AtRisk(
                contact_id,
                date.fromisoformat(received),
                due_day,
                extension,
                Status(status),
                days_left(due_day, today),
                urgency(due_day, today),
            )
        )
    return found


def deadline_counts(
    conn: sqlite3.Connection, today: date, *, run: int | None = None
) -> dict[Urgency, int]:
    """How many unanswered requests are overdue, due within 7 days, or due later."""
    where, params = ("AND d.run = ?", [run]) if run is not None else ("", [])
    soon = (today + timedelta(days=DUE_SOON_DAYS)).isoformat()
    # Only the fixed ``where`` above is formatted in, never a value.
    query = (
        "SELECT sum(due < ?), sum(due >= ? AND due <= ?), sum(due > ?) FROM ("  # noqa: S608
        + _OPEN_DEADLINES.format(where=where)
        + ")"
    )
    first = today.isoformat()
    row = conn.execute(query, (first, first, soon, soon, *params)).fetchone()
    return {
        Urgency.OVERDUE: row[0] or 0,
        Urgency.DUE_SOON: row[1] or 0,
        Urgency.LATER: row[2] or 0,
    }


def run_counts(conn: sqlite3.Connection, *, last: int = 1) -> list[RunCounts]:
    """The ``last`` runs recorded in the file, newest first, with their counts."""
    rows = conn.execute(
        "SELECT run_id, started_at, updated_at, pending, done, failed FROM runs "
        "ORDER BY id DESC LIMIT ?",
        (last,),
    )
    return [RunCounts(*row) for row in rows]


def _lookup_ids(conn: sqlite3.Connection, fingerprint: str, run_id: str) -> tuple[int, int]:
    """The small integer ids of the fingerprint and the run, inserted when new.

    Contact rows hold these instead of the text, which keeps ten million rows small.
    """
    conn.execute("INSERT OR IGNORE INTO fingerprints (value) VALUES (?)", (fingerprint,))
    conn.execute(
        "INSERT OR IGNORE INTO runs (run_id, started_at) VALUES (?, ?)", (run_id, _utc_now())
    )
    fp = conn.execute("SELECT id FROM fingerprints WHERE value = ?", (fingerprint,)).fetchone()
    run = conn.execute("SELECT id FROM runs WHERE run_id = ?", (run_id,)).fetchone()
    return int(fp[0]), int(run[0])


def _check_ids(contact_ids: Sequence[str]) -> None:
    """Raise ``ValueError`` unless every id is a canonical GUID (one regex for the whole batch).

    The length check rules out an id holding a newline, which the joined text would hide.
    """
    text = "\n".join(contact_ids)
    if not text or (len(text) == 37 * len(contact_ids) - 1 and _CANONICAL_LINES.fullmatch(text)):
        return
    bad = next(i for i in contact_ids if not is_canonical_guid(i))
    raise ValueError(f"{bad!r} is not a canonical contact id")


@functools.cache
def _marks(template: str, n: int) -> str:
    """``template`` with ``n`` host parameters (``{marks}``) or pairs of them (``{pairs}``)."""
    return template.format(marks=",".join("?" * n), pairs=",".join(["(?,?)"] * n))


def _key(contact_id: str) -> bytes:
    """The seen set's key: the 16 bytes of a canonical GUID."""
    return bytes.fromhex(contact_id.replace("-", ""))


def _utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
