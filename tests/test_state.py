"""The run state: claims, resume across runs, the file's guards and its crash safety."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sqlite3
import stat
import subprocess
import sys
import tempfile
import threading
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sar_bulk.errors import ConfigError
from sar_bulk.run import state as state_module
from sar_bulk.run.state import SCHEMA_VERSION, Claim, DoneRecord, RunState

FP = "fingerprint-a"


def ids(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [str(uuid.UUID(int=rng.getrandbits(128))) for _ in range(n)]


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "out" / ".sar-bulk" / "state.sqlite"


@pytest.fixture
def state(path: Path) -> Iterator[RunState]:
    with RunState.open(path, fingerprint=FP, run_id="run-1") as opened:
        yield opened


def claims(state: RunState, contact_ids: list[str]) -> list[Claim]:
    return [claim for claim, _ in state.claim_many(contact_ids)]


def finish(path: Path, contact_ids: list[str], *, fingerprint: str = FP) -> None:
    """An earlier run that completed every contact."""
    with RunState.open(path, fingerprint=fingerprint, run_id=f"earlier-{uuid.uuid4()}") as run:
        run.claim_many(contact_ids)
        for contact_id in contact_ids:
            run.mark_done(contact_id, dossier=f"{contact_id}.zip", interactions=3, zip_bytes=999)


# --- claims within one run ---------------------------------------------------------------------


def test_first_claim_is_new_and_every_later_one_duplicate(state: RunState) -> None:
    a, b, c = ids(3)
    assert claims(state, [a, b, a]) == [Claim.NEW, Claim.NEW, Claim.DUPLICATE]
    assert claims(state, [c, b, c]) == [Claim.NEW, Claim.DUPLICATE, Claim.DUPLICATE]
    assert claims(state, []) == []
    assert state.status_counts() == {"pending": 3, "done": 0, "failed": 0}


def test_a_batch_larger_than_one_statement_keeps_order_and_duplicates(state: RunState) -> None:
    many = ids(2_500)
    batch = [*many, many[0], many[1_999]]
    result = claims(state, batch)
    assert result[:2_500] == [Claim.NEW] * 2_500
    assert result[2_500:] == [Claim.DUPLICATE, Claim.DUPLICATE]


def test_claims_without_returning_for_sqlite_before_3_35(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(state_module, "_HAS_RETURNING", False)
    a, b, c = ids(3)
    finish(path, [c])
    with RunState.open(path, fingerprint=FP, run_id="now") as state:
        assert claims(state, [a, b, a, c]) == [Claim.NEW, Claim.NEW, Claim.DUPLICATE, Claim.DONE]
        assert claims(state, [c, b]) == [Claim.DUPLICATE, Claim.DUPLICATE]
        assert state.status_counts() == {"pending": 2, "done": 1, "failed": 0}


@pytest.mark.parametrize(
    "bad",
    [
        "0F8FAD5B-D9CB-469F-A165-70867728950E",  # upper case
        "{0f8fad5b-d9cb-469f-a165-70867728950e}",  # braces
        "0f8fad5bd9cb469fa16570867728950e",  # no dashes
        "0f8fad5b-d9cb-469f-a165-70867728950e\n0f8fad5b-d9cb-469f-a165-70867728950f",
        "",
    ],
)
def test_only_canonical_ids_are_claimed(state: RunState, bad: str) -> None:
    good = ids(1)[0]
    with pytest.raises(ValueError, match="canonical"):
        state.claim_many([good, bad])
    assert claims(state, [good]) == [Claim.NEW]  # the refused batch claimed nothing


@given(
    data=st.data(),
    pool=st.lists(st.uuids().map(str), min_size=1, max_size=12, unique=True),
)
@settings(max_examples=40, deadline=None)
def test_first_occurrence_new_or_done_later_ones_duplicate(
    data: st.DataObject, pool: list[str]
) -> None:
    sequence = data.draw(st.lists(st.sampled_from(pool), max_size=40), label="sequence")
    done_before = data.draw(st.sets(st.sampled_from(pool)), label="done_before")
    cuts = sorted(data.draw(st.lists(st.integers(0, len(sequence)), max_size=4), label="cuts"))
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "state.sqlite"
        finish(path, sorted(done_before))
        with RunState.open(path, fingerprint=FP, run_id="now") as state:
            got: list[Claim] = []
            for start, end in zip([0, *cuts], [*cuts, len(sequence)], strict=True):
                got += claims(state, sequence[start:end])
    seen: set[str] = set()
    for contact_id, claim in zip(sequence, got, strict=True):
        if contact_id in seen:
            assert claim is Claim.DUPLICATE
        else:
            assert claim is (Claim.DONE if contact_id in done_before else Claim.NEW)
        seen.add(contact_id)


# --- resume across runs ------------------------------------------------------------------------


def test_done_in_an_earlier_run_comes_back_done_with_its_record(path: Path) -> None:
    a, b = ids(2)
    with RunState.open(path, fingerprint=FP, run_id="run-1") as first:
        assert claims(first, [a, b]) == [Claim.NEW, Claim.NEW]
        first.mark_done(a, dossier=f"dossiers/{a}.zip", interactions=41, zip_bytes=12_345)
    with RunState.open(path, fingerprint=FP, run_id="run-2") as second:
        (claim_a, record), (claim_b, none) = second.claim_many([a, b])
        assert claims(second, [a]) == [Claim.DUPLICATE]
        counts = second.status_counts()
    assert (claim_a, claim_b, none) == (Claim.DONE, Claim.NEW, None)
    assert isinstance(record, DoneRecord)
    assert (record.contact_id, record.dossier) == (a, f"dossiers/{a}.zip")
    assert (record.interactions, record.zip_bytes) == (41, 12_345)
    assert datetime.strptime(record.finished_at, "%Y-%m-%dT%H:%M:%SZ")
    assert counts == {"pending": 1, "done": 1, "failed": 0}


def test_another_fingerprint_makes_a_done_contact_new(path: Path) -> None:
    a, b = ids(2)
    finish(path, [a])
    finish(path, [b], fingerprint="fingerprint-b")
    with RunState.open(path, fingerprint="fingerprint-b", run_id="run-2") as state:
        assert claims(state, [a, b]) == [Claim.NEW, Claim.DONE]
    with RunState.open(path, fingerprint=FP, run_id="run-3") as state:
        assert claims(state, [a, b]) == [Claim.DONE, Claim.NEW]  # nothing was redone under b


def test_failed_and_unfinished_contacts_are_new_next_run(path: Path) -> None:
    failed, unfinished = ids(2)
    with RunState.open(path, fingerprint=FP, run_id="run-1") as state:
        state.claim_many([failed, unfinished])
        state.mark_failed(failed, {"*": "403 forbidden"})
    with RunState.open(path, fingerprint=FP, run_id="run-2") as state:
        assert claims(state, [failed, unfinished]) == [Claim.NEW, Claim.NEW]
        assert list(state.failed()) == []  # earlier runs' failures are not this run's


def test_restart_forgets_earlier_runs(path: Path) -> None:
    (a,) = ids(1)
    finish(path, [a])
    with RunState.open(path, fingerprint=FP, run_id="run-2", restart=True) as state:
        assert claims(state, [a]) == [Claim.NEW]


def test_reopen_sets_a_done_contact_back_to_pending(path: Path) -> None:
    a, b = ids(2)
    finish(path, [a, b])
    with RunState.open(path, fingerprint=FP, run_id="run-2") as state:
        assert claims(state, [a, b]) == [Claim.DONE, Claim.DONE]
        state.reopen(a)
        assert state.status_counts() == {"pending": 1, "done": 1, "failed": 0}
    with RunState.open(path, fingerprint=FP, run_id="run-3") as state:
        assert claims(state, [a, b]) == [Claim.NEW, Claim.DONE]


def test_failed_reasons_round_trip_and_count(state: RunState) -> None:
    many = ids(1_005)
    state.claim_many(many)
    reasons = {"EmailSent": "HTTP 503 after 6 attempts", "*": "stopped: naïve ☃ reason"}
    for contact_id in many[:1_003]:
        state.mark_failed(contact_id, reasons)
    state.mark_done(many[1_003], dossier="x.zip", interactions=0, zip_bytes=22)
    failed = list(state.failed())
    assert [contact_id for contact_id, _ in failed] == sorted(many[:1_003])
    assert all(got == reasons for _, got in failed)
    assert state.status_counts() == {"pending": 1, "done": 1, "failed": 1_003}


def test_a_failed_contact_done_later_in_the_run_leaves_the_failed_list(state: RunState) -> None:
    (a,) = ids(1)
    state.claim_many([a])
    state.mark_failed(a, {"EmailOpened": "timeout"})
    state.mark_done(a, dossier="a.zip", interactions=1, zip_bytes=10)
    assert list(state.failed()) == []
    assert state.status_counts() == {"pending": 0, "done": 1, "failed": 0}


def test_marking_a_contact_this_run_never_claimed_is_an_error(state: RunState) -> None:
    (a,) = ids(1)
    with pytest.raises(KeyError):
        state.mark_done(a, dossier="a.zip", interactions=1, zip_bytes=1)
    with pytest.raises(KeyError):
        state.mark_failed(a, {"*": "x"})
    with pytest.raises(KeyError):
        state.reopen(a)


def test_a_record_the_state_file_refuses_leaves_the_contact_as_it_was(
    state: RunState, path: Path
) -> None:
    a, b = ids(2)
    state.claim_many([a, b])
    state.mark_failed(b, {"*": "timeout"})
    other = sqlite3.connect(path)
    try:
        # The file refuses every record (as a full disk would): nothing of it may count.
        other.execute(
            "CREATE TRIGGER refuse BEFORE INSERT ON contacts BEGIN SELECT RAISE(ABORT, 'no'); END"
        )
        other.commit()
        with pytest.raises(sqlite3.IntegrityError):
            state.mark_done(a, dossier="a.zip", interactions=1, zip_bytes=10)
        with pytest.raises(sqlite3.IntegrityError):
            state.mark_done(b, dossier="b.zip", interactions=1, zip_bytes=10)
        with pytest.raises(sqlite3.IntegrityError):
            state.reopen(b)
        assert state.status_counts() == {"pending": 1, "done": 0, "failed": 1}
        assert [contact for contact, _ in state.failed()] == [b]
        other.execute("DROP TRIGGER refuse")
        other.commit()
    finally:
        other.close()
    state.mark_done(b, dossier="b.zip", interactions=1, zip_bytes=10)
    assert state.status_counts() == {"pending": 1, "done": 1, "failed": 0}


@pytest.mark.parametrize("dossier", ["", "/etc/passwd", "../outside.zip", "a/../../b.zip"])
def test_a_dossier_outside_the_output_folder_is_refused(state: RunState, dossier: str) -> None:
    (a,) = ids(1)
    state.claim_many([a])
    with pytest.raises(ValueError, match="relative"):
        state.mark_done(a, dossier=dossier, interactions=1, zip_bytes=1)


# --- the file ----------------------------------------------------------------------------------


def test_a_file_that_is_not_sqlite_is_a_config_error(path: Path) -> None:
    path.parent.mkdir(parents=True)
    path.write_bytes(random.Random(1).randbytes(8192))
    with pytest.raises(ConfigError, match="not a sar-bulk state database"):
        RunState.open(path, fingerprint=FP, run_id="r")


def test_a_state_file_that_cannot_be_created_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "out").write_text("a file where the folder should be")
    with pytest.raises(ConfigError, match="cannot create or open"):
        RunState.open(tmp_path / "out" / "state.sqlite", fingerprint=FP, run_id="r")


def test_another_sqlite_database_is_a_config_error(path: Path) -> None:
    path.parent.mkdir(parents=True)
    with sqlite3.connect(path) as other:
        other.execute("CREATE TABLE invoices (n INTEGER)")
    other.close()
    with pytest.raises(ConfigError, match="not a sar-bulk state database"):
        RunState.open(path, fingerprint=FP, run_id="r", restart=True)
    with sqlite3.connect(path) as other:  # restart did not touch it
        assert other.execute("SELECT name FROM sqlite_master").fetchall() == [("invoices",)]
    other.close()


def test_a_newer_schema_is_a_config_error(path: Path) -> None:
    RunState.open(path, fingerprint=FP, run_id="r").close()
    with sqlite3.connect(path) as raw:
        raw.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    raw.close()
    with pytest.raises(ConfigError, match="newer sar-bulk"):
        RunState.open(path, fingerprint=FP, run_id="r2")


@pytest.mark.parametrize("umask", [0o000, 0o277])
def test_the_file_is_private_and_in_wal_mode(path: Path, umask: int) -> None:
    path.parent.parent.mkdir()
    old = os.umask(umask)  # what the modes must not depend on
    try:
        with RunState.open(path, fingerprint=FP, run_id="r") as state:
            state.claim_many(ids(1))
            state.mark_done(ids(1)[0], dossier="a.zip", interactions=1, zip_bytes=1)
            modes = {
                p.name: stat.S_IMODE(p.stat().st_mode)
                for p in (path.parent, path, path.with_name(path.name + "-wal"))
            }
    finally:
        os.umask(old)
    assert modes == {".sar-bulk": 0o700, "state.sqlite": 0o600, "state.sqlite-wal": 0o600}
    with sqlite3.connect(path) as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    raw.close()


def test_an_existing_folder_keeps_its_mode(tmp_path: Path) -> None:
    tmp_path.chmod(0o755)
    RunState.open(tmp_path / "state.sqlite", fingerprint=FP, run_id="r").close()
    assert stat.S_IMODE(tmp_path.stat().st_mode) == 0o755
    assert stat.S_IMODE((tmp_path / "state.sqlite").stat().st_mode) == 0o600


def test_close_twice_is_harmless(path: Path) -> None:
    state = RunState.open(path, fingerprint=FP, run_id="r")
    assert state.path == path
    state.close()
    state.close()


# --- threads and processes ---------------------------------------------------------------------


async def test_calls_from_worker_threads(state: RunState) -> None:
    a, b = ids(2)
    result = await asyncio.to_thread(state.claim_many, [a, b, a])
    assert [claim for claim, _ in result] == [Claim.NEW, Claim.NEW, Claim.DUPLICATE]
    await asyncio.to_thread(state.mark_done, a, dossier="a.zip", interactions=2, zip_bytes=5)
    await asyncio.to_thread(state.mark_failed, b, {"*": "no"})
    assert await asyncio.to_thread(state.status_counts) == {"pending": 0, "done": 1, "failed": 1}


def test_two_shards_share_one_new_file(path: Path) -> None:
    everyone = ids(400)
    shards = [everyone[:200], everyone[200:]]
    start = threading.Barrier(2)
    errors: list[BaseException] = []

    def shard(number: int) -> None:
        try:
            start.wait()
            with RunState.open(path, fingerprint=FP, run_id=f"shard-{number}") as state:
                for offset in range(0, 200, 50):
                    batch = shards[number][offset : offset + 50]
                    assert claims(state, batch) == [Claim.NEW] * 50
                    for contact_id in batch:
                        state.mark_done(
                            contact_id, dossier=f"{contact_id}.zip", interactions=1, zip_bytes=1
                        )
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    workers = [threading.Thread(target=shard, args=(n,)) for n in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert errors == []
    with RunState.open(path, fingerprint=FP, run_id="check") as state:
        assert claims(state, everyone) == [Claim.DONE] * 400


# The child claims batches and marks each contact done (every seventh failed), printing an id
# only once mark_done/mark_failed has returned.
CHILD = """
import sys, uuid, random
from pathlib import Path
from sar_bulk.run.state import Claim, RunState

path, run_id = Path(sys.argv[1]), sys.argv[2]
rng = random.Random(7)
everyone = [str(uuid.UUID(int=rng.getrandbits(128))) for _ in range(5000)]
with RunState.open(path, fingerprint="fingerprint-a", run_id=run_id) as state:
    for offset in range(0, len(everyone), 50):
        for contact_id, (claim, _) in zip(
            everyone[offset : offset + 50], state.claim_many(everyone[offset : offset + 50])
        ):
            if claim is not Claim.NEW:
                continue
            if int(contact_id[:2], 16) % 7 == 0:
                state.mark_failed(contact_id, {"*": "test"})
                print("failed", contact_id, flush=True)
            else:
                state.mark_done(contact_id, dossier="x.zip", interactions=1, zip_bytes=1)
                print("done", contact_id, flush=True)
"""


def test_sigkill_at_any_moment_keeps_what_was_committed(path: Path) -> None:
    rng = random.Random()
    confirmed: dict[str, str] = {}
    for round_number, lines_before_kill in enumerate([0, rng.randint(1, 40), rng.randint(41, 400)]):
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(path), f"round-{round_number}"],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert child.stdout is not None
        for _ in range(lines_before_kill):
            line = child.stdout.readline()
            assert line, "the child ended before it was killed"
            status, contact_id = line.split()
            confirmed[contact_id] = status
        child.send_signal(signal.SIGKILL)
        child.communicate()
        assert child.returncode == -signal.SIGKILL
    assert len(confirmed) > 40
    with sqlite3.connect(path) as raw:
        assert raw.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    raw.close()
    with RunState.open(path, fingerprint=FP, run_id="after") as state:
        result = dict(zip(confirmed, claims(state, list(confirmed)), strict=True))
    for contact_id, status in confirmed.items():
        assert result[contact_id] is (Claim.DONE if status == "done" else Claim.NEW)


# --- schema 2: dossier hashes and notes ---------------------------------------------------------

_V1_SCHEMA = (
    "CREATE TABLE fingerprints (id INTEGER PRIMARY KEY, value TEXT NOT NULL UNIQUE)",
    "CREATE TABLE runs "
    "(id INTEGER PRIMARY KEY, run_id TEXT NOT NULL UNIQUE, started_at TEXT NOT NULL)",
    """CREATE TABLE contacts (
        contact_id TEXT PRIMARY KEY,
        status TEXT NOT NULL CHECK (status IN ('pending', 'done', 'failed')),
        fingerprint INTEGER NOT NULL REFERENCES fingerprints (id),
        run INTEGER NOT NULL REFERENCES runs (id),
        dossier TEXT, interactions INTEGER, zip_bytes INTEGER, finished_at TEXT, reasons TEXT
    ) WITHOUT ROWID""",
)


def test_a_schema_1_file_is_migrated_and_keeps_its_done_contacts(path: Path) -> None:
    a, b = ids(2)
    path.parent.mkdir(parents=True)
    with sqlite3.connect(path) as raw:
        for statement in _V1_SCHEMA:
            raw.execute(statement)
        raw.execute("PRAGMA application_id = 1396789826")  # "SARB"
        raw.execute("PRAGMA user_version = 1")
        raw.execute("INSERT INTO fingerprints (id, value) VALUES (1, ?)", (FP,))
        raw.execute("INSERT INTO runs (id, run_id, started_at) VALUES (1, 'old', 'x')")
        raw.execute(
            "INSERT INTO contacts VALUES (?, 'done', 1, 1, ?, 4, 99, '2026-01-01T00:00:00Z', NULL)",
            (a, f"{a}.zip"),
        )
    raw.close()
    with RunState.open(path, fingerprint=FP, run_id="new") as state:
        (claim_a, record), (claim_b, _) = state.claim_many([a, b])
        state.mark_done(b, dossier=f"{b}.zip", interactions=1, zip_bytes=2, sha256="ab" * 32)
        state.remember(b, "k", "v")
    assert (claim_a, claim_b) == (Claim.DONE, Claim.NEW)
    assert record == DoneRecord(a, f"{a}.zip", 4, 99, "2026-01-01T00:00:00Z", None, None)
    with sqlite3.connect(path) as raw:
        assert raw.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 4
    raw.close()
    with RunState.open(path, fingerprint=FP, run_id="newer") as state:
        _, (_, record_b) = state.claim_many([a, b])
    assert record_b is not None
    assert record_b.sha256 == "ab" * 32


def test_a_dossier_hash_must_be_sha256_hex(state: RunState) -> None:
    a = ids(1)[0]
    state.claim_many([a])
    with pytest.raises(ValueError, match="sha256"):
        state.mark_done(a, dossier="a.zip", interactions=1, zip_bytes=1, sha256="AB" * 32)


def test_notes_are_kept_per_contact_and_forgotten_by_restart(path: Path) -> None:
    a, b = ids(2)
    with RunState.open(path, fingerprint=FP, run_id="r1") as first:
        first.remember(a, "realtime/request", "1")
        first.remember(b, "realtime/request", "2")
        first.remember(a, "realtime/request", "3")
    with RunState.open(path, fingerprint="another", run_id="r2") as second:
        assert (second.recall(a, "realtime/request"), second.recall(b, "realtime/request")) == (
            "3",
            "2",
        )
    with RunState.open(path, fingerprint=FP, run_id="r3", restart=True) as third:
        assert third.recall(a, "realtime/request") is None


def test_a_schema_2_file_is_brought_to_the_etag_column_and_keeps_its_hashes(path: Path) -> None:
    a, b = ids(2)
    path.parent.mkdir(parents=True)
    with sqlite3.connect(path) as raw:
        for statement in _V1_SCHEMA:
            raw.execute(statement)
        raw.execute("ALTER TABLE contacts ADD COLUMN sha256 TEXT")
        raw.execute(
            "CREATE TABLE notes (contact_id TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL,"
            " PRIMARY KEY (contact_id, key)) WITHOUT ROWID"
        )
        raw.execute("PRAGMA application_id = 1396789826")  # "SARB"
        raw.execute("PRAGMA user_version = 2")
        raw.execute("INSERT INTO fingerprints (id, value) VALUES (1, ?)", (FP,))
        raw.execute("INSERT INTO runs (id, run_id, started_at) VALUES (1, 'old', 'x')")
        raw.execute(
            "INSERT INTO contacts VALUES (?, 'done', 1, 1, ?, 4, 99, 'T', NULL, ?)",
            (a, f"{a}.zip", "cd" * 32),
        )
    raw.close()
    with RunState.open(path, fingerprint=FP, run_id="new") as state:
        (_, record_a), _ = state.claim_many([a, b])
        state.mark_done(
            b, dossier=f"{b}.zip", interactions=1, zip_bytes=2, sha256="ab" * 32, etag='"0x8D1"'
        )
    assert record_a == DoneRecord(a, f"{a}.zip", 4, 99, "T", "cd" * 32, None)
    with RunState.open(path, fingerprint=FP, run_id="newer") as state:
        _, (_, record_b) = state.claim_many([a, b])
    assert record_b is not None
    assert (record_b.sha256, record_b.etag) == ("ab" * 32, '"0x8D1"')
