"""Deadlines through the engine: nearest due first, stored, reported, in the dossier."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from support import (
    contact_ids,
    engine_deps,
    read_report,
    run_config,
    run_engine,
    unlimited,
    write_csv,
)

from sar_bulk.config import RunConfig
from sar_bulk.dossier.format import Subject
from sar_bulk.dossier.writer import DossierRequest, DossierWriter
from sar_bulk.run import engine as engine_module
from sar_bulk.run.engine import Engine, RunResult
from sar_bulk.run.report import deadline_section, summary_line
from sar_bulk.run.runner import ExitCode
from sar_bulk.run.state import run_counts
from sar_bulk.simulator import Simulator
from sar_bulk.sources.base import ContactScope, Part, PartSink
from sar_bulk.sources.interactions import InteractionsSource

NOW = datetime(2026, 5, 6, 9, 30, tzinfo=UTC)


@asynccontextmanager
async def recording_engine(config: RunConfig, order: list[str]) -> AsyncIterator[Engine]:
    """An engine over the simulator whose source notes the order contacts start fetching in."""

    class Recording(InteractionsSource):
        async def fetch(self, scope: ContactScope, part: Part, sink: PartSink) -> None:
            order.append(scope.contact_id)
            await super().fetch(scope, part, sink)

    async with engine_deps(config) as deps:
        yield Engine(config, [Recording(deps)], now=lambda: NOW)


async def run_with_order(
    tmp_path: Path, lines: list[str], **flags: Any
) -> tuple[RunResult, list[str], dict[str, Subject]]:
    order: list[str] = []
    subjects: dict[str, Subject] = {}

    class Noting(DossierWriter):
        def __init__(self, out: Path, request: DossierRequest, **kwargs: Any) -> None:
            subjects[request.contact_id] = request.subject
            super().__init__(out, request, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(engine_module, "DossierWriter", Noting)
        async with Simulator(unlimited(seed=7)) as sim:
            csv = write_csv(tmp_path / "c.csv", lines)
            config = run_config(sim, csv, tmp_path / "out", types="EmailSent", **flags)
            async with recording_engine(config, order) as engine:
                result = await asyncio.wait_for(engine.run(), 30)
    return result, order, subjects


async def test_later_rows_due_sooner_are_admitted_first(tmp_path: Path) -> None:
    a, b, c, d, e = contact_ids(5)
    lines = [
        "name,id,received,extension_reason",
        f"Ann,{a},2026-04-10,",  # due 10 May: in 4 days
        f"Bob,{b},,",  # no received date: last
        f"Cy,{c},2026-04-02,",  # due 2 May: overdue by 4 days
        f"Di,{d},2026-04-30,complex request",  # extended: due 30 July
        f"Ed,{e},2026-03-01,",  # due 1 April: the most overdue
    ]
    result, order, subjects = await run_with_order(tmp_path, lines, window=1)
    assert result.totals.succeeded == 5
    assert order == [e, c, a, d, b]
    assert subjects[d] == Subject("Di", date(2026, 4, 30), date(2026, 7, 30), "complex request")
    assert subjects[b] == Subject("Bob")
    # Answered now: nothing is at risk any more, but the counts say so.
    found = result.totals.deadlines
    assert found is not None
    assert (found.overdue, found.due_soon, found.later, found.listed) == (0, 0, 0, ())
    assert deadline_section(result.totals) == {
        "due_soon_days": 7,
        "overdue_count": 0,
        "due_soon_count": 0,
        "later_count": 0,
        "overdue": [],
        "due_soon": [],
    }
    assert "0 overdue, 0 due within 7 days; " in summary_line(
        result.totals, requests=1, throttled=0, seconds=1.0
    )


async def test_failed_and_rejected_contacts_in_the_report_of_a_real_run(tmp_path: Path) -> None:
    a, b, c, d = contact_ids(4)
    today = datetime.now(UTC).date()
    lines = [
        "id,received",
        f"{a},{(today - timedelta(days=40)).isoformat()}",  # overdue; every request fails
        f"{b},{(today + timedelta(days=2)).isoformat()}",  # in the future everywhere: rejected
        f"{c},31/03/2026",  # not ISO: rejected
        f"{d},{(today - timedelta(days=27)).isoformat()}",  # due within 7 days; fails too
    ]
    async with Simulator(unlimited(seed=2, fault_502=1.0)) as sim:
        csv = write_csv(tmp_path / "c.csv", lines)
        config = run_config(sim, csv, tmp_path / "out", retry_attempts=2, types="EmailSent")
        outcome = await run_engine(config)
    assert outcome.code == ExitCode.INCOMPLETE
    report = read_report(tmp_path / "out")
    assert [(r["line"], r["reason"]) for r in report["rejected_rows"]] == [
        (3, "received date: in the future"),
        (4, "received date: not an ISO date (YYYY-MM-DD)"),
    ]
    section = report["deadlines"]
    assert (section["overdue_count"], section["due_soon_count"]) == (1, 1)
    assert [(r["contact_id"], r["status"]) for r in section["overdue"]] == [(a, "failed")]
    assert [(r["contact_id"], r["status"]) for r in section["due_soon"]] == [(d, "failed")]
    assert section["overdue"][0]["days_left"] < 0 <= section["due_soon"][0]["days_left"] <= 7
    assert "1 overdue, 1 due within 7 days; " in outcome.summary
    assert list(report).index("deadlines") < list(report).index("failed_contacts")
    with sqlite3.connect(tmp_path / "out" / ".sar-bulk" / "state.sqlite") as raw:
        (run,) = run_counts(raw)
    raw.close()
    assert (run.pending, run.done, run.failed) == (0, 0, 2)


async def test_without_a_received_column_the_csv_order_stays(tmp_path: Path) -> None:
    ids = contact_ids(6)
    result, order, subjects = await run_with_order(tmp_path, ["id", *ids], window=1)
    assert order == ids
    assert result.totals.deadlines is None
    assert deadline_section(result.totals) is None
    assert set(subjects.values()) == {Subject()}


def test_the_look_ahead_is_bounded_and_at_least_one_batch() -> None:
    lookahead = engine_module._lookahead
    assert (lookahead(1), lookahead(32), lookahead(10_000)) == (500, 2048, 100_000)
