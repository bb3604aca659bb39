"""What a run did: the totals the engine counts, ``run-report.json`` and the summary line.

Usage::

    path = write_reports(out, report_name(shard), run_id, document)   # blocking: use a thread
    print(summary_line(totals, requests=n, throttled=t, seconds=s, interrupted="SIGINT"))

Each run keeps its own report in ``OUT/reports/`` (``run-report-<run_id>.json``), and the latest
is also at the known name ``OUT/run-report.json``, so a resume does not erase the record of the
run before it. Both are written atomically (temporary file, fsync, rename) with mode 0600, like
the dossiers: a report lists contact ids, which are personal data. The temporary file has an
unpredictable name and is opened with ``O_EXCL | O_NOFOLLOW``, so nothing planted in the folder
can redirect the write. A report holds no interaction content and no secret: parameters come from
``RunConfig.public_parameters``, which holds none, and every string of the document goes through
the process's redactor before it is written (a failure reason may quote the server).

Deadlines: when the contacts CSV has a received-date column, the engine fills
``RunTotals.deadlines`` at the end of the run from the state, and the report's ``deadlines``
section (``deadline_section``) lists this run's unanswered requests that are overdue, then those
due within 7 days, nearest first; the summary line says how many ("3 overdue, 5 due within 7
days"). A done contact is answered, so never listed; a failed or unfinished one is.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from sar_bulk._version import __version__
from sar_bulk.errors import ConfigError
from sar_bulk.logs import scrub_value
from sar_bulk.run.contacts import RejectedRow
from sar_bulk.run.deadlines import DUE_SOON_DAYS, Urgency
from sar_bulk.run.state import AtRisk

__all__ = [
    "HISTORY_FOLDER",
    "REPORT_SCHEMA",
    "DeadlineSummary",
    "RunTotals",
    "deadline_section",
    "deadline_words",
    "history_name",
    "outcome_text",
    "report_name",
    "summary_line",
    "write_report",
    "write_reports",
]

HISTORY_FOLDER = "reports"

REPORT_SCHEMA = "sar-bulk/run-report/v1"
# A file of millions of bad rows must not make the report (or memory) grow without bound.
MAX_LISTED = 10_000


@dataclass(frozen=True, slots=True)
class DeadlineSummary:
    """This run's unanswered requests by urgency, and the most urgent ones (overdue first)."""

    overdue: int
    due_soon: int
    later: int
    listed: tuple[AtRisk, ...]
    """At most ``MAX_LISTED`` overdue and due-soon requests, nearest due date first."""

    @classmethod
    def build(cls, counts: dict[Urgency, int], found: list[AtRisk]) -> DeadlineSummary:
        listed = tuple(r for r in found if r.urgency is not Urgency.LATER)
        return cls(counts[Urgency.OVERDUE], counts[Urgency.DUE_SOON], counts[Urgency.LATER], listed)


@dataclass(slots=True)
class RunTotals:
    """Counters of one run; the engine updates them, progress and the report read them."""

    rows_read: int = 0
    contacts: int = 0
    other_shards: int = 0
    duplicates: int = 0
    rejected: int = 0
    succeeded: int = 0
    failed: int = 0
    skipped_done: int = 0
    interactions: int = 0
    rows: int = 0  # rows of every source, interactions included
    bytes_written: int = 0
    rejected_rows: list[dict[str, Any]] = field(default_factory=list)
    failed_contacts: list[dict[str, Any]] = field(default_factory=list)
    deadlines: DeadlineSummary | None = None
    """None when the CSV has no received-date column (or the run ended before it was read)."""

    def reject(self, row: RejectedRow) -> None:
        self.rejected += 1
        if len(self.rejected_rows) < MAX_LISTED:
            self.rejected_rows.append(
                {"line": row.line, "reason": row.reason, "value": row.preview}
            )

    def fail(self, contact_id: str, reasons: dict[str, str]) -> None:
        self.failed += 1
        if len(self.failed_contacts) < MAX_LISTED:
            self.failed_contacts.append({"contact_id": contact_id, "reasons": reasons})

    @property
    def finished(self) -> int:
        return self.succeeded + self.failed + self.skipped_done


def report_name(shard: str | None) -> str:
    """``run-report.json``, or one per shard so shards sharing a folder do not overwrite."""
    if shard is None:
        return "run-report.json"
    index, count = shard.split("/")
    return f"run-report.shard-{index}-of-{count}.json"


def history_name(name: str, run_id: str) -> str:
    """This run's own report name: ``run-report-<run_id>.json`` (shards keep their part)."""
    return f"{name.removesuffix('.json')}-{run_id}.json"


def write_reports(out: Path, name: str, run_id: str, document: dict[str, Any]) -> Path:
    """Write the run's own report under ``OUT/reports/`` and the latest at ``OUT/name``.

    Returns the latest report's path. Blocking: call it from a thread.
    """
    body = _render(document)
    history = out / HISTORY_FOLDER
    _private_folder(history)
    own = history / history_name(name, run_id)
    # Run ids tell seconds and processes apart; two runs of one process in one second (tests,
    # a library user) must not overwrite each other's record either.
    serial = 1
    while own.exists() or own.is_symlink():
        serial += 1
        own = history / history_name(name, f"{run_id}-{serial}")
    _write_atomically(own, body)
    latest = out / name
    _write_atomically(latest, body)
    return latest


def write_report(path: Path, document: dict[str, Any]) -> None:
    """Write one report atomically with mode 0600 (blocking: call it from a thread)."""
    _write_atomically(path, _render(document))


def _render(document: dict[str, Any]) -> bytes:
    header = {"schema": REPORT_SCHEMA, "tool": {"name": "sar-bulk", "version": __version__}}
    return orjson.dumps(scrub_value(header | document), option=orjson.OPT_INDENT_2) + b"\n"


def _private_folder(path: Path) -> None:
    """Create ``path`` (0700) unless it exists; refuse anything there that is not a folder."""
    with contextlib.suppress(FileExistsError):
        path.mkdir(mode=0o700)
    status = os.lstat(path)
    if not stat.S_ISDIR(status.st_mode):
        raise ConfigError(f"{path} is not a folder (a link or a file?): remove it")


def _write_atomically(path: Path, body: bytes) -> None:
    # An unpredictable name, created exclusively and never through a link: nothing planted in
    # the folder beforehand can take the write elsewhere or be overwritten by it.
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(temporary, flags, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(body)
            handle.flush()
            os.fsync(handle.fileno())
        # rename() replaces a link at ``path`` itself; it never writes through it.
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def deadline_section(totals: RunTotals) -> dict[str, Any] | None:
    """The report's ``deadlines`` section, or None when no deadline is known."""
    found = totals.deadlines
    if found is None:
        return None
    return {
        "due_soon_days": DUE_SOON_DAYS,
        "overdue_count": found.overdue,
        "due_soon_count": found.due_soon,
        "later_count": found.later,
        "overdue": [r.as_json() for r in found.listed if r.urgency is Urgency.OVERDUE],
        "due_soon": [r.as_json() for r in found.listed if r.urgency is Urgency.DUE_SOON],
    }


def deadline_words(found: DeadlineSummary) -> str:
    """``3 overdue, 5 due within 7 days``."""
    return f"{found.overdue} overdue, {found.due_soon} due within {DUE_SOON_DAYS} days"


def summary_line(
    totals: RunTotals,
    *,
    requests: int,
    throttled: int,
    seconds: float,
    interrupted: str | None = None,
) -> str:
    """One line for the end of a run; it starts with "interrupted (SIGINT): " after a signal."""
    share = f"{100.0 * throttled / requests:.1f}%" if requests else "0%"
    prefix = f"interrupted ({interrupted}): " if interrupted else ""
    deadlines = f"{deadline_words(totals.deadlines)}; " if totals.deadlines else ""
    return (
        f"{prefix}{totals.succeeded} dossiers written, {totals.failed} contacts failed, "
        f"{totals.skipped_done} already done, {totals.rejected} rows rejected, "
        f"{totals.duplicates} duplicates; {deadlines}{totals.rows} rows "
        f"({totals.interactions} interactions); "
        f"{requests} requests ({throttled} throttled, {share}) in {seconds:.1f} s"
    )


def outcome_text(totals: RunTotals) -> str:
    """``complete``, ``complete, 1 row rejected`` or ``incomplete, 2 contacts failed``.

    Rejected rows are the CSV's fault, not the run's: every usable contact was answered.
    """
    rejected = _count(totals.rejected, "row", "rejected")
    if totals.failed:
        failed = _count(totals.failed, "contact", "failed")
        return f"incomplete, {failed}" + (f", {rejected}" if totals.rejected else "")
    return "complete" + (f", {rejected}" if totals.rejected else "")


def _count(n: int, noun: str, verb: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'} {verb}"
