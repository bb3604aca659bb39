"""What a run did: the totals the engine counts, ``run-report.json`` and the summary line.

The report is written atomically (temporary name, fsync, rename) with mode 0600, like the
dossiers: it lists contact ids, which are personal data. It holds no interaction content and no
secret: parameters come from ``RunConfig.public_parameters``, which holds none.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from sar_bulk._version import __version__
from sar_bulk.run.contacts import RejectedRow

__all__ = ["REPORT_SCHEMA", "RunTotals", "report_name", "summary_line", "write_report"]

REPORT_SCHEMA = "sar-bulk/run-report/v1"
# A file of millions of bad rows must not make the report (or memory) grow without bound.
MAX_LISTED = 10_000


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
    bytes_written: int = 0
    rejected_rows: list[dict[str, Any]] = field(default_factory=list)
    failed_contacts: list[dict[str, Any]] = field(default_factory=list)

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


def write_report(path: Path, document: dict[str, Any]) -> None:
    """Write the report atomically with mode 0600 (blocking: call it from a thread)."""
    body = orjson.dumps(
        {"schema": REPORT_SCHEMA, "tool": {"name": "sar-bulk", "version": __version__}} | document,
        option=orjson.OPT_INDENT_2,
    )
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(body + b"\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def summary_line(totals: RunTotals, *, requests: int, throttled: int, seconds: float) -> str:
    """One line for the end of a run."""
    share = f"{100.0 * throttled / requests:.1f}%" if requests else "0%"
    return (
        f"{totals.succeeded} dossiers written, {totals.failed} contacts failed, "
        f"{totals.skipped_done} already done, {totals.rejected} rows rejected, "
        f"{totals.duplicates} duplicates; {totals.interactions} interactions; "
        f"{requests} requests ({throttled} throttled, {share}) in {seconds:.1f} s"
    )
