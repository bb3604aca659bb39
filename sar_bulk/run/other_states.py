"""What the other state files beside this run's recorded: the shard count changed between nights.

Usage (the engine; sync calls, from a worker thread)::

    others = OtherStates.beside(config.state, fingerprint)   # None: no other file there
    for record in others.done(contact_id):                   # DoneRecords, maybe none
        ...
    others.close()

Shards keep one state file each in one folder (``state.shard-I-of-N.sqlite``). When a night runs
with another count (2 shards, then 3), a contact often belongs to another shard than before: its
dossier is there, but this shard's state has no record of it. A plain dossier is then verified
and adopted; an encrypted one cannot be opened here, so it was fetched again, and a whole night's
requests went on contacts that were already answered. The other files' records close that gap:
a dossier whose SHA-256 (and, for a blob, etag) is the one another shard recorded when it wrote
it, under the same question, is adopted as if this shard had written it.

Read-only, as ``sar-bulk status`` reads: nothing is created or locked, and a file that is not a
sar-bulk state of this schema, or that cannot be read, is passed over (its contacts are then
fetched again, as before). The files are the run's own (its private work or output folder).
"""

from __future__ import annotations

import os
import sqlite3
import stat
import threading
from pathlib import Path
from typing import Final, Self
from urllib.parse import quote

import structlog

from sar_bulk.config import state_shard_count
from sar_bulk.run.state import APPLICATION_ID, SCHEMA_VERSION, DoneRecord

__all__ = ["OtherStates"]

_log = structlog.get_logger(__name__)

_SELECT: Final = (
    "SELECT c.contact_id, c.dossier, c.interactions, c.zip_bytes, c.finished_at, c.sha256, "
    "c.etag FROM contacts AS c JOIN fingerprints AS f ON f.id = c.fingerprint "
    "WHERE c.contact_id = ? AND c.status = 'done' AND f.value = ? AND c.sha256 IS NOT NULL"
)


class OtherStates:
    """Read-only look-ups of done contacts in the state files beside one (see the module)."""

    def __init__(self, paths: list[Path], fingerprint: str) -> None:
        self._paths = paths
        self._fingerprint = fingerprint
        self._conns: list[tuple[Path, sqlite3.Connection]] | None = None  # opened at first use
        self._lock = threading.Lock()

    @classmethod
    def beside(cls, own: Path, fingerprint: str) -> Self | None:
        """The other ``state*.sqlite`` files in ``own``'s folder; None when there are none."""
        try:
            entries = list(os.scandir(own.parent))
        except OSError:
            return None
        same_count = state_shard_count(own.name)
        paths = sorted(
            Path(entry.path)
            for entry in entries
            if entry.name.startswith("state")
            and entry.name.endswith(".sqlite")
            and entry.name != own.name
            # Shards of this run's own count own other contacts: none of theirs is ours (and
            # they may be running now).
            and (same_count is None or state_shard_count(entry.name) != same_count)
            and entry.is_file(follow_symlinks=False)
        )
        return cls(paths, fingerprint) if paths else None

    def done(self, contact_id: str) -> list[DoneRecord]:
        """Every other file's record of ``contact_id`` done under this run's question."""
        found: list[DoneRecord] = []
        with self._lock:
            if self._conns is None:
                self._conns = [(path, conn) for path in self._paths if (conn := _open(path))]
            for path, conn in list(self._conns):
                try:
                    rows = conn.execute(_SELECT, (contact_id, self._fingerprint)).fetchall()
                except sqlite3.Error as exc:
                    _log.warning("state.other_unreadable", state=str(path), error=str(exc))
                    self._conns.remove((path, conn))
                    conn.close()
                    continue
                found += [DoneRecord(*row) for row in rows]
        return found

    def close(self) -> None:
        with self._lock:
            for _, conn in self._conns or ():
                conn.close()
            self._conns = []


def _open(path: Path) -> sqlite3.Connection | None:
    """``path`` opened read-only if it is a sar-bulk state of this schema, else None."""
    try:
        if not stat.S_ISREG(os.lstat(path).st_mode):
            return None
        # In use (a -wal beside it): read through the WAL; else read it as it is, creating and
        # locking nothing (as sar-bulk status does).
        flag = "mode=ro" if path.with_name(path.name + "-wal").exists() else "immutable=1"
        conn = sqlite3.connect(
            f"file:{quote(str(path.resolve()))}?{flag}", uri=True, check_same_thread=False
        )
    except (OSError, sqlite3.Error):
        return None
    try:
        app_id = conn.execute("PRAGMA application_id").fetchone()[0]
        version = conn.execute("PRAGMA user_version").fetchone()[0]
    except sqlite3.Error:
        conn.close()
        return None
    if app_id != APPLICATION_ID or version != SCHEMA_VERSION:
        conn.close()
        return None
    return conn
