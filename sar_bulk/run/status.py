"""``sar-bulk status OUT``: how far the runs got and which requests are at risk, from the state.

Usage::

    report = read_status(state_files(out), today=date.today(), limit=20)
    print(render_text(report))           # or orjson.dumps(report.as_json())

Read-only by design: it may be run (by a person, or a monitoring job) while a run holds the output
folder's lock, and it must neither wait for that lock nor disturb the run. So nothing is created,
locked or migrated here:

* the lock file is not touched; each state file is opened with SQLite's ``mode=ro`` (a file a
  run has open has a ``-wal`` beside it: reading through it shows the last committed counts, and
  a WAL reader never blocks the writer) or, when no ``-wal`` is there (no run has it open),
  ``immutable=1``, which reads the file without creating ``-wal``/``-shm`` files or taking locks
  (a run starting in that very instant may make the read fail: the error says so, ask again);
* a file of an older schema is read as far as it goes (counts from the contacts table, no
  deadlines) instead of being migrated; a newer or foreign file is refused.

With shards, ``OUT/.sar-bulk`` holds one state file per shard: all are read and added up.
Counts are per file's latest run (``runs`` row, committed with each batch and each contact), so
"pending" means claimed by that run and not finished; a run killed mid-way leaves its pending
count as it was, which is exactly what is still to do.
"""

from __future__ import annotations

import os
import sqlite3
import stat
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote

import orjson

from sar_bulk.config import state_shard_count
from sar_bulk.errors import ConfigError
from sar_bulk.run.deadlines import DUE_SOON_DAYS, Urgency
from sar_bulk.run.state import (
    APPLICATION_ID,
    SCHEMA_VERSION,
    AtRisk,
    RunCounts,
    at_risk,
    deadline_counts,
    run_counts,
)

__all__ = ["StateStatus", "read_status", "render_text", "state_files"]

_FIRST_WITH_DEADLINES: Final = 3
_MAX_REPORT_BYTES: Final = 16 << 20


@dataclass(frozen=True, slots=True)
class StateStatus:
    """What ``sar-bulk status`` shows: counts, the latest run of each file, requests at risk."""

    files: tuple[Path, ...]
    runs: tuple[RunCounts, ...]
    done: int
    failed: int
    pending: int | None
    """None when a file's latest run was made by a sar-bulk that kept no counts."""
    deadlines_known: bool
    counts: dict[Urgency, int]
    at_risk: tuple[AtRisk, ...]
    left_out: tuple[Path, ...] = ()
    """State files of an earlier shard count in the same folder, not added up."""

    @property
    def overdue(self) -> int:
        return self.counts[Urgency.OVERDUE]

    def as_json(self) -> dict[str, Any]:
        return {
            "state_files": [str(path) for path in self.files],
            "state_files_left_out": [str(path) for path in self.left_out],
            "runs": [
                {
                    "run_id": run.run_id,
                    "started_at": run.started_at,
                    "updated_at": run.updated_at,
                    "pending": run.pending,
                    "done": run.done,
                    "failed": run.failed,
                }
                for run in self.runs
            ],
            "contacts": {"done": self.done, "failed": self.failed, "pending": self.pending},
            "deadlines": {
                "known": self.deadlines_known,
                "due_soon_days": DUE_SOON_DAYS,
                "overdue_count": self.counts[Urgency.OVERDUE],
                "due_soon_count": self.counts[Urgency.DUE_SOON],
                "later_count": self.counts[Urgency.LATER],
                "at_risk": [
                    item.as_json() | {"urgency": str(item.urgency)} for item in self.at_risk
                ],
            },
        }


def state_files(out: Path) -> tuple[list[Path], list[Path]]:
    """The state files of an output folder to add up, and those left out.

    One ``state.sqlite``, or one file per shard (``state.shard-I-of-N.sqlite``). A folder whose
    runs changed their shard count holds files of both: adding them up would count a contact
    twice (the later runs adopt the dossiers the earlier ones wrote), so only the files of the
    layout written last are read, and the rest are named as left out.
    """
    folder = out / ".sar-bulk"
    if not folder.is_dir():
        work = _work_named_by_report(out)
        if work is not None:
            raise ConfigError(
                f"{out} has no state folder: its last run kept the state in its --work folder "
                f"{work!r} (sar-bulk status {work})"
            )
        raise ConfigError(
            f"{out} has no state folder ({folder}): no run has used it, or give --state PATH"
        )
    found = sorted(
        p for p in folder.iterdir() if p.name.startswith("state") and p.name.endswith(".sqlite")
    )
    if not found:
        raise ConfigError(f"{folder} holds no state file: no run has got far enough yet")
    layouts: dict[str, list[Path]] = {}
    for path in found:
        layouts.setdefault(_layout(path.name), []).append(path)
    latest = max(layouts.values(), key=lambda paths: max(map(_last_written, paths)))
    return latest, [path for path in found if path not in latest]


def _layout(name: str) -> str:
    """Which run layout wrote the state file ``name``: its shard count, or the name itself."""
    count = state_shard_count(name)
    return f"{count} shards" if count is not None else name


def _last_written(path: Path) -> int:
    """When the state file (or its write-ahead log, where writes land first) last changed."""
    times = []
    for candidate in (path, path.with_name(path.name + "-wal")):
        try:
            times.append(os.stat(candidate).st_mtime_ns)
        except OSError:
            continue
    return max(times, default=0)


def _work_named_by_report(out: Path) -> str | None:
    """The --work folder the output folder's run report names, if any (for a hint only: the
    report is read as untrusted, and only a short plain path is quoted)."""
    report = out / "run-report.json"
    try:
        if not stat.S_ISREG(os.lstat(report).st_mode):
            return None  # a pipe would block the read, a link lead elsewhere
        with report.open("rb") as handle:
            document = orjson.loads(handle.read(_MAX_REPORT_BYTES))
    except (OSError, orjson.JSONDecodeError):
        return None
    parameters = document.get("parameters") if isinstance(document, dict) else None
    work = parameters.get("work") if isinstance(parameters, dict) else None
    if not isinstance(work, str) or not 0 < len(work) <= 500 or not work.isprintable():
        return None
    return work


def read_status(
    files: list[Path], *, today: date, limit: int, left_out: list[Path] | None = None
) -> StateStatus:
    """Read every state file (read-only) and add them up; ``limit`` requests listed at most.

    ``left_out``: files ``state_files`` did not choose, named in the text and the JSON.
    """
    if limit < 0:
        raise ValueError("limit must not be negative")
    runs: list[RunCounts] = []
    done = failed = 0
    pending: int | None = 0
    known = False
    counts = dict.fromkeys(Urgency, 0)
    listed: list[AtRisk] = []
    for path in files:
        conn = _open_read_only(path)
        try:
            version = _check(conn, path)
            latest = run_counts(conn) if version >= _FIRST_WITH_DEADLINES else []
            recorded = dict(
                conn.execute("SELECT status, count(*) FROM contacts GROUP BY status").fetchall()
            )
            run = latest[0] if latest else None
            if run is not None and run.pending is not None:
                runs.append(run)
                done += run.done or 0
                failed += run.failed or 0
                if pending is not None:
                    pending += run.pending
            else:  # no counts kept: what the file has finished, and nothing known of pending
                done += recorded.get("done", 0)
                failed += recorded.get("failed", 0)
                pending = None
            if version >= _FIRST_WITH_DEADLINES:
                found = deadline_counts(conn, today)
                known = (
                    known
                    or conn.execute("SELECT EXISTS (SELECT 1 FROM deadlines)").fetchone()[0] == 1
                )
                for urgency, n in found.items():
                    counts[urgency] += n
                listed.extend(at_risk(conn, today, limit=limit))
        except sqlite3.DatabaseError as exc:
            raise ConfigError(f"cannot read the state file {path} ({exc})") from None
        finally:
            conn.close()
    listed.sort(key=lambda item: (item.due, item.contact_id))
    return StateStatus(
        tuple(files),
        tuple(runs),
        done,
        failed,
        pending,
        known,
        counts,
        tuple(listed[:limit]),
        tuple(left_out or ()),
    )


def render_text(status: StateStatus) -> str:
    """The human-readable status: one line of counts, each run, then the requests at risk."""
    pending = "unknown" if status.pending is None else str(status.pending)
    lines = [f"contacts: {status.done} done, {status.failed} failed, {pending} pending"]
    lines.extend(
        f"run {run.run_id}: started {run.started_at}, last update {run.updated_at}: "
        f"{run.done} done, {run.failed} failed, {run.pending} pending"
        for run in status.runs
    )
    if status.left_out:
        names = ", ".join(path.name for path in status.left_out)
        lines.append(
            f"left out: {names} (written by runs with another shard count; only the latest "
            "runs' files are added up; sar-bulk status --state PATH reads one)"
        )
    if not status.deadlines_known:
        lines.append("deadlines: none known (no received-date column in the contacts CSV)")
        return "\n".join(lines)
    counts = status.counts
    lines.append(
        f"deadlines: {counts[Urgency.OVERDUE]} overdue, {counts[Urgency.DUE_SOON]} due within "
        f"{DUE_SOON_DAYS} days, {counts[Urgency.LATER]} later (requests not answered yet)"
    )
    labels = {Urgency.OVERDUE: "OVERDUE", Urgency.DUE_SOON: "due soon", Urgency.LATER: "later"}
    for item in status.at_risk:
        days = item.days_left
        when = f"{-days} days late" if days < 0 else f"in {days} days"
        extended = ", extended" if item.extension_reason else ""
        lines.append(
            f"  {labels[item.urgency]:<8}  due {item.due.isoformat()} ({when}{extended})  "
            f"{item.contact_id}  {item.status}"
        )
    return "\n".join(lines)


def _open_read_only(path: Path) -> sqlite3.Connection:
    """Open ``path`` without creating or locking anything (see the module docstring)."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        raise ConfigError(f"the state file {path} does not exist") from None
    if stat.S_ISDIR(mode):
        raise ConfigError(
            f"the state file {path} is a folder: give an output folder without --state "
            f"(sar-bulk status {path}), or its .sar-bulk/state.sqlite as --state"
        )
    if not stat.S_ISREG(mode):
        raise ConfigError(f"the state file {path} is not a regular file (a link or a pipe?)")
    in_use = path.with_name(path.name + "-wal").exists()
    flag = "mode=ro" if in_use else "immutable=1"
    uri = f"file:{quote(str(path.resolve()))}?{flag}"
    try:
        return sqlite3.connect(uri, uri=True, check_same_thread=False)
    except sqlite3.OperationalError as exc:
        raise ConfigError(f"cannot open the state file {path} read-only ({exc})") from None


def _check(conn: sqlite3.Connection, path: Path) -> int:
    """The file's schema version; ``ConfigError`` for a file that is not ours or is newer."""
    app_id = conn.execute("PRAGMA application_id").fetchone()[0]
    version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    if app_id != APPLICATION_ID:
        raise ConfigError(f"{path} is not a sar-bulk state database")
    if version > SCHEMA_VERSION:
        raise ConfigError(
            f"{path} was written by a newer sar-bulk (state schema {version}); upgrade sar-bulk"
        )
    return version
