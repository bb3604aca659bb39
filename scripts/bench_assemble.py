"""CPU of ``Spool.assemble`` per contact on scenario 4's inputs, by phase (not a test).

Usage::

    .venv/bin/python scripts/bench_assemble.py                  # 300 contacts, 3 rounds
    .venv/bin/python scripts/bench_assemble.py --contacts 500 --rounds 5 --verify

The inputs are what scenario 4 spools, as ``bench_answer.py`` makes them (the simulator's dataset,
seed 11, all 40 interaction types), fed through ``Spool.entry`` and ``Spool.hold`` as the writer
does, so a big contact spills to disk as it would. Each round assembles every contact into a
fresh folder and reports thread CPU (``time.thread_time``) per contact: the whole of
``assemble`` (answer files, manifest, zip, fsyncs, rename), the best of the rounds, and apart
from it what rendering the answer files and deflating every member (the manifest's excepted)
cost alone, so the rest is what assembly adds: the manifest, zipfile, hashes, system calls.
One thread, no event loop beside it: in a run the same work costs more (the threads share the
GIL and two cores), so compare checkouts with this, and a run with ``scripts/thread_cpu.py``.
``--verify`` checks every dossier of the last round.
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
import tempfile
import time
import uuid
import zlib
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from sar_bulk.dossier.answer_feed import answer_files_for
from sar_bulk.dossier.format import interactions_entry
from sar_bulk.dossier.spool import EntrySpool, HeldMemory, Spool, encode_rows
from sar_bulk.dossier.verify import verify_dossier
from sar_bulk.dossier.writer import DossierRequest
from sar_bulk.simulator.dataset import Dataset
from sar_bulk.sources.interaction_types import ALL_TYPES, InteractionType

_PREPARED = datetime(2026, 12, 1, 3, 23, 24, tzinfo=UTC)


def _spools(out: Path, contacts: int, seed: int) -> list[Spool]:
    """Each contact's spool as the writer leaves it when every part is done."""
    dataset = Dataset(seed)
    chooser = random.Random(seed)
    memory = HeldMemory()
    spools: list[Spool] = []
    for _ in range(contacts):
        contact = str(uuid.UUID(int=chooser.getrandbits(128), version=4))
        request = DossierRequest.for_interactions(contact, ALL_TYPES, "http://127.0.0.1:44851")
        spool = Spool(out, request, memory=memory)
        for part in request.parts:
            owner = spool.parts[part]
            owner.opened = True
            entry = spool.entry(owner, interactions_entry(InteractionType(part.name)), "rows")
            owner.pages += 1  # one page per type, as the simulator sends them
            entry.pages += 1
            rows = list(dataset.interactions(contact, part.name))
            if not rows:
                continue
            lines = encode_rows(rows, contact, part.key)
            chunks = entry.chunks_for(lines)
            if not spool.hold(entry, chunks, len(lines)):
                spool.write(entry, chunks, len(lines))
        spools.append(spool)
    return spools


def _data(entry: EntrySpool) -> bytes:
    """An entry's bytes as its member holds them."""
    data = entry.file.read_bytes() if entry.file is not None else b"".join(entry.held)
    return entry.open + data + entry.close


def _cpu(work: Callable[[], object]) -> float:
    start = time.thread_time()
    work()
    return time.thread_time() - start


def _round(contacts: int, seed: int, verify: bool) -> tuple[float, float, float]:
    """CPU seconds of assembly, of rendering alone and of deflating alone, for all contacts."""
    folder = Path(tempfile.mkdtemp(prefix="bench-assemble-"))
    try:
        out = folder / "out"
        out.mkdir(mode=0o700)
        spools = _spools(out, contacts, seed)
        views = [spool.view("2026-12-01T03:23:24Z")[1] for spool in spools]
        answers: list[dict[str, bytes]] = []

        def render() -> None:
            answers.clear()
            for spool, members in zip(spools, views, strict=True):
                answers.append(
                    answer_files_for(spool.request, members, statement=None, prepared_at=_PREPARED)
                )

        # The members' bytes, read beforehand: deflating alone is timed without the reading.
        entries = [[_data(s) for s in members] for members in views]

        def deflate() -> None:  # as zipfile does: a compressor per member, level 6
            for answer, datas in zip(answers, entries, strict=True):
                for data in [*answer.values(), *datas]:
                    compressor = zlib.compressobj(6, zlib.DEFLATED, -15)
                    compressor.compress(data)
                    compressor.flush()

        rendering = _cpu(render)
        deflating = _cpu(deflate)
        assembly = _cpu(lambda: [spool.assemble(_PREPARED) for spool in spools])
        if verify:
            bad = [p.name for p in sorted(out.glob("*.zip")) if not verify_dossier(p).ok]
            if bad:
                raise SystemExit(f"{len(bad)} dossiers fail verify, the first {bad[0]}")
            print(f"verify: all {contacts} dossiers pass")
        return assembly, rendering, deflating
    finally:
        shutil.rmtree(folder)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contacts", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--verify", action="store_true", help="verify the last round's dossiers")
    args = parser.parse_args()
    best: tuple[float, float, float] | None = None
    for number in range(args.rounds):
        figures = _round(args.contacts, args.seed, args.verify and number == args.rounds - 1)
        assembly, rendering, deflating = (f / args.contacts * 1000 for f in figures)
        print(
            f"round {number + 1}: assemble {assembly:.3f} ms CPU per contact "
            f"(answer files alone {rendering:.3f}, deflate alone {deflating:.3f})"
        )
        best = figures if best is None or figures[0] < best[0] else best
    assert best is not None
    assembly, rendering, deflating = (f / args.contacts * 1000 for f in best)
    print(
        f"best of {args.rounds}: assemble {assembly:.3f} ms CPU per contact; the answer files "
        f"{rendering:.3f} and deflate {deflating:.3f} of it leave "
        f"{assembly - rendering - deflating:.3f} for the rest"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
