"""CPU of one contact's answer files (index.html + README.txt) from its spooled rows (not a test).

Usage::

    .venv/bin/python scripts/bench_answer.py                    # 500 contacts, 3 rounds
    .venv/bin/python scripts/bench_answer.py --contacts 200 --rounds 5 --statement
    .venv/bin/python scripts/bench_answer.py --dossiers out/    # re-render the answers of a run's
                                                                # dossiers: same bytes?

The inputs are what scenario 4 of ``bench.py`` spools: the simulator's dataset (seed 11) for
every one of the 40 interaction types, encoded as ``encode_rows`` writes them and held in memory
as ``EntrySpool`` entries, so ``answer_files_for`` does what ``Spool.assemble`` makes it do. The
figure is thread CPU time (``time.thread_time``) per contact, the best of the rounds: the machine
is shared, and wall time would count other people's work. To compare with another checkout, run
the script from each (the inputs are the same). ``--dossiers`` takes the unencrypted zips of a run
without a statement or subject columns (scenario 4's, ``KEEP=dir bash run_s4.sh`` style), feeds
each one's interaction entries back as its spool held them (big ones from a file) and compares
the answer with the index.html and README.txt inside: files written by whatever code made them.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
import uuid
import zipfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from sar_bulk.answer.sample import sample_statement
from sar_bulk.answer.statement import Statement
from sar_bulk.dossier.answer_feed import answer_files_for
from sar_bulk.dossier.format import ENTRY_CLOSE, ENTRY_OPEN
from sar_bulk.dossier.spool import MEMORY_SPOOL_BYTES, EntrySpool, encode_rows
from sar_bulk.dossier.writer import DossierRequest
from sar_bulk.simulator.dataset import Dataset
from sar_bulk.sources.interaction_types import ALL_TYPES, InteractionType

_PREPARED = datetime(2026, 12, 1, 3, 23, 24, tzinfo=UTC)
Inputs = list[tuple[DossierRequest, list[EntrySpool]]]
Render = Callable[..., dict[str, bytes]]


def _inputs(contacts: int, seed: int) -> Inputs:
    dataset = Dataset(seed)
    chooser = random.Random(seed)
    inputs: Inputs = []
    for _ in range(contacts):
        contact = str(uuid.UUID(int=chooser.getrandbits(128), version=4))
        request = DossierRequest.for_interactions(contact, ALL_TYPES, "http://127.0.0.1:44851")
        entries: list[EntrySpool] = []
        for number, part in enumerate(request.parts):
            rows = list(dataset.interactions(contact, part.name))
            if not rows:
                continue
            spool = EntrySpool(number, part, f"interactions/{part.name}.json", "rows")
            lines = encode_rows(rows, contact, part.key)
            chunks = spool.chunks_for(lines)
            spool.held.extend(chunks)
            spool.account(chunks, len(lines))
            entries.append(spool)
        inputs.append((request, entries))
    return inputs


def _check_dossiers(folder: Path) -> int:
    """Re-render every dossier's answer from its entries; 1 at the first that differs."""
    zips = sorted(folder.glob("*.zip"))
    with tempfile.TemporaryDirectory() as scratch:
        for number, path in enumerate(zips):
            with zipfile.ZipFile(path) as archive:
                manifest = json.loads(archive.read("manifest.json"))
                question = manifest["question"]
                request = DossierRequest.for_interactions(
                    manifest["contact_id"],
                    [InteractionType(t) for t in question["interaction_types"]],
                    question["org_url"],
                    question["date_from"],
                    question["date_to"],
                )
                entries: list[EntrySpool] = []
                for order, part in enumerate(request.parts):
                    name = f"interactions/{part.name}.json"
                    if name not in archive.namelist():
                        continue
                    data = archive.read(name).removeprefix(ENTRY_OPEN).removesuffix(ENTRY_CLOSE)
                    spool = EntrySpool(order, part, name, "rows")
                    if len(data) > MEMORY_SPOOL_BYTES:
                        spool.file = Path(scratch) / f"{number}-{order}.part"
                        spool.file.write_bytes(data)
                    else:
                        spool.held.append(data)
                    spool.account((data,), data.count(b"\n") + 1)
                    entries.append(spool)
                when = datetime.strptime(manifest["generated_at"], "%Y-%m-%dT%H:%M:%SZ")
                files = answer_files_for(
                    request, entries, statement=None, prepared_at=when.replace(tzinfo=UTC)
                )
                for member, data in files.items():
                    if archive.read(member) != data:
                        print(f"DIFFERENT {member} for {path.name}")
                        return 1
    print(f"same bytes as the {len(zips)} dossiers' index.html and README.txt")
    return 0


def _time(render: Render, inputs: Inputs, statement: Statement | None) -> float:
    start = time.thread_time()
    for request, entries in inputs:
        render(request, entries, statement=statement, prepared_at=_PREPARED)
    return (time.thread_time() - start) / len(inputs) * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contacts", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--statement", action="store_true", help="the demo's sample statement")
    parser.add_argument("--dossiers", type=Path, help="check a run's dossiers instead")
    args = parser.parse_args()
    if args.dossiers:
        return _check_dossiers(args.dossiers)
    inputs = _inputs(args.contacts, args.seed)
    rows = sum(s.rows for _, entries in inputs for s in entries)
    statement = sample_statement() if args.statement else None
    print(f"{len(inputs)} contacts, {rows:,} interactions ({rows / len(inputs):.1f} per contact)")
    best = float("inf")
    for _ in range(args.rounds):
        best = min(best, _time(answer_files_for, inputs, statement))
    print(f"answer_files_for: {best:.3f} ms CPU per contact (best of {args.rounds} rounds)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
