"""The run's memory: which contacts are pending, done or failed, in one SQLite file.

Why SQLite: a run may hold ten million contacts. The state must survive a killed process (for
``resume``) and also de-duplicate the input, and an in-memory set of ten million ids would not
keep memory flat. One ``WITHOUT ROWID`` table keyed by the canonical contact id does both.

Usage (the engine calls these sync methods from one worker thread at a time)::

    state = RunState.open(out / ".sar-bulk" / "state.sqlite", fingerprint=fp, run_id=run_id)
    for claim, done in state.claim_many(batch):   # Claim.NEW / DUPLICATE / DONE
        ...
    state.mark_done(contact_id, dossier="<id>.zip", interactions=12, zip_bytes=4096)
    state.close()

Each ``run_id`` must be fresh per invocation: "already claimed by this run" is how a second
spelling of an id is recognised as a duplicate. Shards of one run that share the file should share
the run id too, so an id present in two shards is processed once.

Durability: the file is in WAL mode with ``synchronous=NORMAL``. A commit is then written to the
WAL before it returns but not fsynced, so it survives a killed process (SIGKILL) though not a power
cut. That is enough because the engine writes a dossier to disk *before* it marks the contact done
and re-validates dossiers on resume: a lost "done" row only means the contact is fetched again.

Two processes may share the file: ``busy_timeout`` makes one wait for the other's short
transactions instead of failing, and every write transaction starts with ``BEGIN IMMEDIATE`` so
that a read-then-write batch never has to upgrade its lock halfway.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path, PurePosixPath
from types import TracebackType
from typing import Final, Self, cast

from sar_bulk.errors import ConfigError
from sar_bulk.guids import is_canonical_guid

__all__ = ["SCHEMA_VERSION", "Claim", "DoneRecord", "RunState"]

SCHEMA_VERSION: Final = 1
# Written to the header's application_id so a stray SQLite file is never mistaken for ours.
_APPLICATION_ID: Final = 0x53415242  # "SARB"
_BUSY_TIMEOUT_MS: Final = 60_000
# Below SQLite's historical limit of 999 host parameters per statement.
_CHUNK: Final = 900
_FAILED_PAGE: Final = 1_000
_ADVICE: Final = "choose another output folder, or delete the file to start over"

_SCHEMA: Final = """
CREATE TABLE fingerprints (id INTEGER PRIMARY KEY, value TEXT NOT NULL UNIQUE);
CREATE TABLE runs (id INTEGER PRIMARY KEY, run_id TEXT NOT NULL UNIQUE, started_at TEXT NOT NULL);
CREATE TABLE contacts (
    contact_id TEXT PRIMARY KEY,
    status TEXT NOT NULL CHECK (status IN ('pending', 'done', 'failed')),
    fingerprint INTEGER NOT NULL REFERENCES fingerprints (id),
    run INTEGER NOT NULL REFERENCES runs (id),
    dossier TEXT,
    interactions INTEGER,
    zip_bytes INTEGER,
    finished_at TEXT,
    reasons TEXT
) WITHOUT ROWID;
"""

# Only "?" marks are formatted in, never a value.
_SELECT_ROWS: Final = (
    "SELECT contact_id, run, fingerprint, status, dossier, interactions, zip_bytes, finished_at "
    "FROM contacts WHERE contact_id IN ({marks})"
)
# run, fingerprint, status, then the DoneRecord fields (NULL unless the status is done).
_Row = tuple[int, int, str, str, int, int, str]

_CLAIM_NEW: Final = """
INSERT INTO contacts (contact_id, status, fingerprint, run) VALUES (?, 'pending', ?, ?)
ON CONFLICT (contact_id) DO UPDATE SET
    status = 'pending', fingerprint = excluded.fingerprint, run = excluded.run,
    dossier = NULL, interactions = NULL, zip_bytes = NULL, finished_at = NULL, reasons = NULL
"""


class Claim(StrEnum):
    """What ``claim_many`` decided for one id."""

    NEW = "new"
    """Process it: never seen, failed or unfinished before, or done under another fingerprint."""
    DUPLICATE = "duplicate"
    """Already claimed earlier in this run (another spelling of the same id): skip it."""
    DONE = "done"
    """Done in an earlier run with the same fingerprint: check the dossier, ``reopen`` if bad."""


class Status(StrEnum):
    """A contact row's status; ``status_counts`` reports every member."""

    PENDING = "pending"
    DONE = "done"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class DoneRecord:
    """What the state remembers of a finished dossier."""

    contact_id: str
    dossier: str
    """File name relative to the output folder."""
    interactions: int
    zip_bytes: int
    finished_at: str
    """ISO 8601 UTC, e.g. ``2026-05-09T07:35:25Z``."""


class RunState:
    """One run's view of the state file; safe for calls from one thread at a time, any thread."""

    __slots__ = ("_conn", "_fp", "_lock", "_run", "path")

    def __init__(self, path: Path, conn: sqlite3.Connection, fp: int, run: int) -> None:
        """Use ``RunState.open``; this only keeps what it prepared."""
        self.path = path
        self._conn = conn
        self._fp = fp
        self._run = run
        self._lock = threading.Lock()

    @classmethod
    def open(cls, path: Path, *, fingerprint: str, run_id: str, restart: bool = False) -> Self:
        """Open (or create) the state file at ``path`` for the run ``run_id``.

        ``fingerprint`` identifies the run parameters; contacts done under another one are
        claimed as NEW. ``restart`` forgets every earlier contact. Raises ``ConfigError`` for a
        file that is not a sar-bulk state database or comes from a newer sar-bulk.
        """
        if not fingerprint or not run_id:
            raise ValueError("fingerprint and run_id must not be empty")
        _create_private(path)
        conn = sqlite3.connect(
            path, timeout=_BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False
        )
        try:
            _prepare(conn, path)
            with _write(conn):
                if restart:
                    conn.execute("DELETE FROM contacts")
                    conn.execute("DELETE FROM runs")
                    conn.execute("DELETE FROM fingerprints")
                fp = _intern(conn, "fingerprints", "value", fingerprint, ())
                run = _intern(conn, "runs", "run_id", run_id, (_utc_now(),))
        except BaseException:
            conn.close()
            raise
        return cls(path, conn, fp, run)

    def claim_many(self, contact_ids: Sequence[str]) -> list[tuple[Claim, DoneRecord | None]]:
        """Classify each id in order and mark it as seen by this run, in one transaction.

        Ids must be canonical GUIDs (``ValueError`` otherwise): the de-duplication compares
        them as text. A DONE result carries the contact's ``DoneRecord``.
        """
        for contact_id in contact_ids:
            if not is_canonical_guid(contact_id):
                raise ValueError(f"{contact_id!r} is not a canonical contact id")
        with self._lock, _write(self._conn):
            known = self._load(contact_ids)
            results: list[tuple[Claim, DoneRecord | None]] = []
            new: list[tuple[str, int, int]] = []
            reused: list[tuple[int, str]] = []
            seen: set[str] = set()
            for contact_id in contact_ids:
                row = known.get(contact_id)
                if contact_id in seen or (row is not None and row[0] == self._run):
                    results.append((Claim.DUPLICATE, None))
                elif row is not None and row[1] == self._fp and row[2] == Status.DONE:
                    results.append((Claim.DONE, DoneRecord(contact_id, *row[3:])))
                    reused.append((self._run, contact_id))
                else:
                    results.append((Claim.NEW, None))
                    new.append((contact_id, self._fp, self._run))
                seen.add(contact_id)
            self._conn.executemany(_CLAIM_NEW, new)
            self._conn.executemany("UPDATE contacts SET run = ? WHERE contact_id = ?", reused)
        return results

    def reopen(self, contact_id: str) -> None:
        """Set a DONE contact whose dossier is missing or invalid back to pending."""
        self._update(
            contact_id,
            "status = 'pending', dossier = NULL, interactions = NULL, zip_bytes = NULL, "
            "finished_at = NULL, reasons = NULL",
            (),
        )

    def mark_done(
        self, contact_id: str, *, dossier: str, interactions: int, zip_bytes: int
    ) -> None:
        """Record a finished dossier; committed before this returns.

        Call it only once the dossier is complete on disk: resume trusts this row.
        """
        relative = PurePosixPath(dossier)
        if not dossier or relative.is_absolute() or ".." in relative.parts:
            raise ValueError(f"dossier {dossier!r} must be a path relative to the output folder")
        if interactions < 0 or zip_bytes < 0:
            raise ValueError("interactions and zip_bytes must not be negative")
        self._update(
            contact_id,
            "status = 'done', dossier = ?, interactions = ?, zip_bytes = ?, finished_at = ?, "
            "reasons = NULL",
            (dossier, interactions, zip_bytes, _utc_now()),
        )

    def mark_failed(self, contact_id: str, reasons: Mapping[str, str]) -> None:
        """Record a failed contact with a reason per interaction type (``"*"``: the contact)."""
        if not reasons:
            raise ValueError("a failed contact needs at least one reason")
        text = json.dumps(dict(reasons), sort_keys=True, ensure_ascii=False)
        self._update(
            contact_id,
            "status = 'failed', dossier = NULL, interactions = NULL, zip_bytes = NULL, "
            "finished_at = NULL, reasons = ?",
            (text,),
        )

    def status_counts(self) -> dict[str, int]:
        """How many contacts of this run are pending, done and failed (every key present).

        Reads every row of the file once: meant for the end-of-run report, not a progress bar.
        """
        with self._lock:
            rows = self._conn.execute(
                "SELECT status, count(*) FROM contacts WHERE run = ? GROUP BY status", (self._run,)
            ).fetchall()
        counts = dict.fromkeys(Status, 0)
        counts.update(rows)
        return {str(status): n for status, n in counts.items()}

    def failed(self) -> Iterator[tuple[str, dict[str, str]]]:
        """This run's failed contacts with their reasons, in id order, a page at a time.

        The lock is held per page only, so other calls may interleave with the iteration.
        """
        after = ""
        while True:
            with self._lock:
                page = self._conn.execute(
                    "SELECT contact_id, reasons FROM contacts "
                    "WHERE contact_id > ? AND run = ? AND status = 'failed' "
                    "ORDER BY contact_id LIMIT ?",
                    (after, self._run, _FAILED_PAGE),
                ).fetchall()
            for contact_id, reasons in page:
                yield contact_id, json.loads(reasons)
            if len(page) < _FAILED_PAGE:
                return
            after = page[-1][0]

    def close(self) -> None:
        """Close the connection; later calls fail. Closing twice is harmless."""
        with self._lock:
            self._conn.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _load(self, contact_ids: Sequence[str]) -> dict[str, _Row]:
        """The existing rows for ``contact_ids``, keyed by id."""
        known: dict[str, _Row] = {}
        for start in range(0, len(contact_ids), _CHUNK):
            chunk = contact_ids[start : start + _CHUNK]
            query = _SELECT_ROWS.format(marks=",".join("?" * len(chunk)))
            known.update((row[0], cast(_Row, row[1:])) for row in self._conn.execute(query, chunk))
        return known

    def _update(self, contact_id: str, assignments: str, params: tuple[object, ...]) -> None:
        """Update one claimed contact's row, stamping it with this run and fingerprint."""
        with self._lock, _write(self._conn):
            cursor = self._conn.execute(
                f"UPDATE contacts SET {assignments}, fingerprint = ?, run = ? "  # noqa: S608
                "WHERE contact_id = ?",
                (*params, self._fp, self._run, contact_id),
            )
            if cursor.rowcount != 1:
                raise KeyError(f"contact {contact_id} was never claimed in {self.path}")


@contextmanager
def _write(conn: sqlite3.Connection) -> Iterator[None]:
    """A ``BEGIN IMMEDIATE`` transaction: committed on success, rolled back on any exception."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _create_private(path: Path) -> None:
    """Create the parent folder (0700) and the file (0600) unless they exist.

    Only what this function creates gets these modes: a folder the user chose is left alone.
    SQLite gives its -wal and -shm files the mode of the database file.
    """
    parent = path.parent
    if not parent.is_dir():
        parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        parent.chmod(0o700)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    try:
        os.fchmod(fd, 0o600)  # the umask may have taken bits away from 0o600 only
    finally:
        os.close(fd)


def _prepare(conn: sqlite3.Connection, path: Path) -> None:
    """Check the file is ours (or blank), switch it to WAL and create the schema when blank."""
    conn.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
    try:
        if not _is_blank(conn):
            _check_header(conn, path)
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
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
    with _write(conn):
        # Two shards may open a blank file at once: the second finds the first one's schema.
        if not _is_blank(conn):
            _check_header(conn, path)
            return
        for statement in _SCHEMA.split(";"):
            if statement.strip():
                conn.execute(statement)
        conn.execute(f"PRAGMA application_id = {_APPLICATION_ID}")
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


def _is_blank(conn: sqlite3.Connection) -> bool:
    """A file without tables: just created by ``_create_private``, or empty by other means."""
    return conn.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchone() is None


def _check_header(conn: sqlite3.Connection, path: Path) -> None:
    app_id = conn.execute("PRAGMA application_id").fetchone()[0]
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if app_id != _APPLICATION_ID:
        raise ConfigError(f"{path} is not a sar-bulk state database; {_ADVICE}")
    if version > SCHEMA_VERSION:
        raise ConfigError(
            f"{path} was written by a newer sar-bulk (state schema {version}, this one reads "
            f"{SCHEMA_VERSION}); upgrade sar-bulk, or delete the file to start over"
        )
    if version != SCHEMA_VERSION:
        raise ConfigError(f"{path} has unknown state schema {version}; {_ADVICE}")


def _intern(
    conn: sqlite3.Connection, table: str, column: str, value: str, extra: tuple[str, ...]
) -> int:
    """The small integer id of ``value`` in a lookup table, inserting it when new.

    Contact rows store these ids instead of the fingerprint and run id text, which keeps ten
    million rows small.
    """
    marks = ", ".join("?" * (1 + len(extra)))
    conn.execute(f"INSERT OR IGNORE INTO {table} VALUES (NULL, {marks})", (value, *extra))  # noqa: S608
    row = conn.execute(f"SELECT id FROM {table} WHERE {column} = ?", (value,)).fetchone()  # noqa: S608
    return int(row[0])


def _utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
