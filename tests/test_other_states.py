"""``OtherStates``: done records of the state files beside a run's, read without touching them."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from support import contact_ids

from sar_bulk.run.other_states import OtherStates
from sar_bulk.run.state import RunState

FP = "f" * 64


def _done(path: Path, contact: str, *, fingerprint: str = FP, sha256: str = "a" * 64) -> None:
    with RunState.open(path, fingerprint=fingerprint, run_id=f"run-{path.name}") as state:
        state.claim_many([contact])
        state.mark_done(
            contact, dossier=f"{contact}.zip.age", interactions=3, zip_bytes=10, sha256=sha256
        )


def test_records_of_the_same_question_in_the_other_files_are_found(tmp_path: Path) -> None:
    first, second, third, fourth, fifth = contact_ids(5, 71)
    folder = tmp_path / ".sar-bulk"
    own = folder / "state.shard-0-of-3.sqlite"
    _done(folder / "state.shard-0-of-2.sqlite", first)
    _done(folder / "state.shard-1-of-2.sqlite", second, fingerprint="0" * 64)  # another question
    _done(own, third)  # this run's own file is not among the others
    _done(folder / "state.shard-1-of-3.sqlite", fourth)  # nor its sibling shards' (running now)
    _done(folder / "state.sqlite", fifth)  # an unsharded night's is
    # A SQLite file that is not a sar-bulk state, under a name that looks like one.
    with sqlite3.connect(folder / "state.foreign.sqlite") as foreign:
        foreign.execute("CREATE TABLE contacts (contact_id TEXT)")
    foreign.close()
    before = sorted(p.name for p in folder.iterdir())

    others = OtherStates.beside(own, FP)
    assert others is not None
    try:
        [record] = others.done(first)
        assert (record.contact_id, record.dossier, record.sha256) == (
            first,
            f"{first}.zip.age",
            "a" * 64,
        )
        assert others.done(second) == []
        assert others.done(third) == []
        assert others.done(fourth) == []
        assert [record.contact_id for record in others.done(fifth)] == [fifth]
    finally:
        others.close()
    # Read-only: no -wal, -shm or journal appeared, nothing was created.
    assert sorted(p.name for p in folder.iterdir()) == before


def test_no_other_file_means_nothing_to_open(tmp_path: Path) -> None:
    own = tmp_path / ".sar-bulk" / "state.sqlite"
    _done(own, contact_ids(1, 72)[0])
    assert OtherStates.beside(own, FP) is None
    assert OtherStates.beside(tmp_path / "missing" / "state.sqlite", FP) is None
