"""The state's deadlines table, run counts and the migration from schema 2."""

from __future__ import annotations

import sqlite3
import uuid
from datetime import date
from pathlib import Path

import pytest

from sar_bulk.run import state as state_module
from sar_bulk.run.deadlines import Deadline, Urgency
from sar_bulk.run.state import (
    SCHEMA_VERSION,
    AtRisk,
    Claim,
    DoneRecord,
    RunState,
    Status,
    at_risk,
    deadline_counts,
    run_counts,
)

FP = "f" * 64
TODAY = date(2026, 3, 10)


def ids(n: int) -> list[str]:
    return [str(uuid.UUID(int=i + 1)) for i in range(n)]


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "out" / ".sar-bulk" / "state.sqlite"


def due_on(day: date) -> Deadline:
    """A deadline whose due date is ``day`` (received one month before, no extension)."""
    received = date(day.year - (day.month == 1), (day.month - 2) % 12 + 1, day.day)
    deadline = Deadline.from_received(received)
    assert deadline.due == day
    return deadline


def test_deadlines_of_first_claims_are_stored_and_unanswered_ones_are_at_risk(path: Path) -> None:
    a, b, c, d, e = ids(5)
    with RunState.open(path, fingerprint=FP, run_id="r1") as state:
        claims = state.claim_many(
            [a, b, c, d, e, a],
            [
                due_on(date(2026, 3, 1)),  # overdue, will fail
                due_on(date(2026, 3, 9)),  # overdue, will be done: answered, not at risk
                due_on(date(2026, 3, 17)),  # due in 7 days
                None,  # no received date: never at risk
                Deadline.from_received(date(2026, 2, 1), "complex"),  # due 1 May
                due_on(date(2026, 3, 2)),  # a duplicate's deadline is ignored
            ],
        )
        assert [claim for claim, _ in claims][-1] is Claim.DUPLICATE
        state.mark_failed(a, {"*": "boom"})
        state.mark_done(b, dossier=f"{b}.zip", interactions=0, zip_bytes=1)
        counts, listed = state.at_risk(TODAY, limit=2)
    assert counts == {Urgency.OVERDUE: 1, Urgency.DUE_SOON: 1, Urgency.LATER: 1}
    assert listed == [
        AtRisk(a, date(2026, 2, 1), date(2026, 3, 1), None, Status.FAILED, -9, Urgency.OVERDUE),
        AtRisk(c, date(2026, 2, 17), date(2026, 3, 17), None, Status.PENDING, 7, Urgency.DUE_SOON),
    ]
    assert listed[1].as_json() == {
        "contact_id": c,
        "received": "2026-02-17",
        "due": "2026-03-17",
        "days_left": 7,
        "extended": False,
        "status": "pending",
    }
    with sqlite3.connect(path) as raw:
        everything = at_risk(raw, TODAY, limit=10)
        assert [r.contact_id for r in everything] == [a, c, e]
        assert everything[2].extension_reason == "complex"
        assert everything[2].due == date(2026, 5, 1)
        (run,) = run_counts(raw)
        assert deadline_counts(raw, date(2026, 5, 2))[Urgency.OVERDUE] == 3
    raw.close()
    assert (run.run_id, run.pending, run.done, run.failed) == ("r1", 3, 1, 1)
    assert run.updated_at is not None


def test_counts_follow_every_claim_and_finish_and_runs_are_listed_newest_first(
    path: Path,
) -> None:
    a, b = ids(2)
    with RunState.open(path, fingerprint=FP, run_id="r1") as state:
        state.claim_many([a, b])
        state.mark_done(a, dossier=f"{a}.zip", interactions=0, zip_bytes=1)
    with RunState.open(path, fingerprint=FP, run_id="r2") as state:
        state.claim_many([a])
        with sqlite3.connect(path) as raw:
            runs = run_counts(raw, last=5)
        raw.close()
    assert [(r.run_id, r.pending, r.done, r.failed) for r in runs] == [
        ("r2", 0, 1, 0),
        ("r1", 1, 1, 0),
    ]


def test_a_later_run_claims_the_deadline_for_itself(path: Path) -> None:
    (a,) = ids(1)
    with RunState.open(path, fingerprint=FP, run_id="r1") as state:
        state.claim_many([a], [due_on(date(2026, 3, 1))])
    with RunState.open(path, fingerprint=FP, run_id="r2") as state:
        assert state.at_risk(TODAY, limit=5)[1] == []  # r2 has not claimed it yet
        state.claim_many([a], [due_on(date(2026, 3, 20))])
        assert [r.due for r in state.at_risk(TODAY, limit=5)[1]] == [date(2026, 3, 20)]


def test_deadlines_must_match_the_ids(path: Path) -> None:
    with (
        RunState.open(path, fingerprint=FP, run_id="r1") as state,
        pytest.raises(ValueError, match="one entry per contact id"),
    ):
        state.claim_many(ids(2), [None])


_V2_SCHEMA = (
    "CREATE TABLE fingerprints (id INTEGER PRIMARY KEY, value TEXT NOT NULL UNIQUE)",
    "CREATE TABLE runs "
    "(id INTEGER PRIMARY KEY, run_id TEXT NOT NULL UNIQUE, started_at TEXT NOT NULL)",
    """CREATE TABLE contacts (
        contact_id TEXT PRIMARY KEY,
        status TEXT NOT NULL CHECK (status IN ('pending', 'done', 'failed')),
        fingerprint INTEGER NOT NULL REFERENCES fingerprints (id),
        run INTEGER NOT NULL REFERENCES runs (id),
        dossier TEXT, interactions INTEGER, zip_bytes INTEGER, finished_at TEXT, reasons TEXT,
        sha256 TEXT
    ) WITHOUT ROWID""",
    """CREATE TABLE notes (
        contact_id TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL,
        PRIMARY KEY (contact_id, key)
    ) WITHOUT ROWID""",
)


def test_a_schema_2_file_is_migrated_keeping_its_rows(path: Path) -> None:
    a, b = ids(2)
    path.parent.mkdir(parents=True)
    with sqlite3.connect(path) as raw:
        for statement in _V2_SCHEMA:
            raw.execute(statement)
        raw.execute("PRAGMA application_id = 1396789826")  # "SARB"
        raw.execute("PRAGMA user_version = 2")
        raw.execute("INSERT INTO fingerprints (id, value) VALUES (1, ?)", (FP,))
        raw.execute("INSERT INTO runs (id, run_id, started_at) VALUES (1, 'old', 'x')")
        raw.execute(
            "INSERT INTO contacts VALUES "
            "(?, 'done', 1, 1, ?, 4, 99, '2026-01-01T00:00:00Z', NULL, ?)",
            (a, f"{a}.zip", "cd" * 32),
        )
        raw.execute("INSERT INTO notes VALUES (?, 'k', 'v')", (b,))
    raw.close()
    with RunState.open(path, fingerprint=FP, run_id="new") as state:
        (claim_a, record), (claim_b, _) = state.claim_many([a, b], [None, due_on(TODAY)])
        assert state.recall(b, "k") == "v"
        assert state.at_risk(TODAY, limit=1)[1][0].contact_id == b
    assert (claim_a, claim_b) == (Claim.DONE, Claim.NEW)
    assert record == DoneRecord(a, f"{a}.zip", 4, 99, "2026-01-01T00:00:00Z", "cd" * 32)
    with sqlite3.connect(path) as raw:
        assert raw.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 4
        new, old = run_counts(raw, last=2)  # newest first
    raw.close()
    assert (new.run_id, new.pending, new.done) == ("new", 1, 1)
    assert (old.run_id, old.pending, old.updated_at) == ("old", None, None)


def test_counts_of_claims_between_two_saves_are_written_at_close(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(state_module, "_COUNTS_EVERY", 3600.0)  # however slow the machine
    a, b, c = ids(3)
    with RunState.open(path, fingerprint=FP, run_id="r1") as state:
        state.claim_many([a])  # the first claims are saved at once
        state.claim_many([b, c])  # within the hour: saved later
        with sqlite3.connect(path) as raw:
            assert run_counts(raw)[0].pending == 1
        raw.close()
    with sqlite3.connect(path) as raw:
        assert run_counts(raw)[0].pending == 3
    raw.close()


def test_restart_forgets_deadlines_so_a_reused_run_id_inherits_none(path: Path) -> None:
    (a,) = ids(1)
    with RunState.open(path, fingerprint=FP, run_id="r1") as state:
        state.claim_many([a], [due_on(date(2026, 3, 1))])
    with RunState.open(path, fingerprint=FP, run_id="r2", restart=True) as state:
        assert state.at_risk(TODAY, limit=5) == (dict.fromkeys(Urgency, 0), [])
    with sqlite3.connect(path) as raw:
        assert at_risk(raw, TODAY, limit=5) == []
    raw.close()
