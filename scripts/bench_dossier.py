"""Benchmark the dossier writer on one very large contact: throughput and peak memory.

Usage::

    .venv/bin/python scripts/bench_dossier.py                 # 1,000,000 interactions
    .venv/bin/python scripts/bench_dossier.py --count 200000 --no-tracemalloc --verify

Interactions are realistic ~400-byte dicts (e-mail and web fields, random ids so that they do
not compress unrealistically well), made page by page so the benchmark itself holds one page.
Making them is timed apart and not counted as the writer's time. tracemalloc slows Python
allocation down, so compare throughput with ``--no-tracemalloc``.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import resource
import sys
import tempfile
import time
import tracemalloc
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sar_bulk.dossier.format import interactions_entry
from sar_bulk.dossier.verify import verify_dossier
from sar_bulk.dossier.writer import DossierRequest, DossierWriter
from sar_bulk.sources.base import Part, PartSink
from sar_bulk.sources.interaction_types import ALL_TYPES, InteractionType

CONTACT = "0f8fad5b-d9cb-469f-a165-70867728950e"
_AGENTS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/124.0 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4) AppleWebKit/605.1.15 Version/17.4 Safari",
)
_CITIES = (("Germany", "Berlin"), ("France", "Lyon"), ("Spain", "Sevilla"), ("Ireland", "Cork"))


def _interaction(kind: InteractionType, seq: int, rng: random.Random) -> dict[str, Any]:
    country, city = _CITIES[seq % len(_CITIES)]
    day = f"2024-{seq % 12 + 1:02d}-{seq % 28 + 1:02d}"
    return {
        "InteractionId": f"{rng.getrandbits(128):032X}",
        "InteractionType": kind.value,
        "Timestamp": f"{day}T{seq % 24:02d}:{seq % 60:02d}:07Z",
        "ContactId": CONTACT,
        "EmailAddressUsed": "jane.doe@example.com",
        "MessageId": f"{rng.getrandbits(128):032x}",
        "UserAgent": _AGENTS[seq % len(_AGENTS)],
        "Country": country,
        "City": city,
    }


def _pages(
    count: int, page_size: int, kinds: tuple[InteractionType, ...]
) -> Iterator[tuple[InteractionType, list[dict[str, Any]]]]:
    rng = random.Random(20240506)  # fixed seed: the same data on every run
    for number, start in enumerate(range(0, count, page_size)):
        kind = kinds[number % len(kinds)]
        stop = min(count, start + page_size)
        yield kind, [_interaction(kind, n, rng) for n in range(start, stop)]


@dataclass
class _Timings:
    make: float = 0.0
    add: float = 0.0
    assemble: float = 0.0
    cpu: float = 0.0  # process CPU seconds of add_rows + complete (all threads)
    zip_bytes: int = 0


async def _run(
    out: Path, count: int, page_size: int, kinds: tuple[InteractionType, ...]
) -> _Timings:
    timings = _Timings()
    request = DossierRequest.for_interactions(CONTACT, kinds, "https://contoso.crm4.dynamics.com")
    async with DossierWriter(out, request, now=lambda: datetime.now(UTC)) as writer:
        # Through the PartSink each part writes to, as the engine that fans out over parts does.
        sinks: dict[InteractionType, PartSink] = {
            kind: writer.sink(Part("interactions", kind.value)) for kind in kinds
        }
        pages = _pages(count, page_size, kinds)
        while True:
            started = time.perf_counter()
            item = next(pages, None)
            timings.make += time.perf_counter() - started
            if item is None:
                break
            started, cpu = time.perf_counter(), time.process_time()
            kind, page = item
            await sinks[kind].add_rows(interactions_entry(kind), page)
            timings.add += time.perf_counter() - started
            timings.cpu += time.process_time() - cpu
        started, cpu = time.perf_counter(), time.process_time()
        summary = await writer.complete()
        timings.assemble = time.perf_counter() - started
        timings.cpu += time.process_time() - cpu
    timings.zip_bytes = summary.zip_bytes
    return timings


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--count", type=int, default=1_000_000, help="interactions (1,000,000)")
    parser.add_argument("--page-size", type=int, default=500, help="interactions per page (500)")
    parser.add_argument("--types", type=int, default=4, help="types the pages rotate over (4)")
    parser.add_argument("--out", type=Path, help="keep the dossier here (default: a temp folder)")
    parser.add_argument(
        "--tracemalloc",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="measure the tracemalloc peak (slows the writer down)",
    )
    parser.add_argument("--verify", action="store_true", help="also time verify_dossier")
    args = parser.parse_args(argv)
    kinds = ALL_TYPES[: max(1, min(args.types, len(ALL_TYPES)))]

    with tempfile.TemporaryDirectory(prefix="bench-dossier-") as scratch:
        out = args.out or Path(scratch)
        rss_before = _peak_rss_mb()
        if args.tracemalloc:
            tracemalloc.start()
        timings = asyncio.run(_run(out, args.count, args.page_size, kinds))
        traced_peak = tracemalloc.get_traced_memory()[1] if args.tracemalloc else None
        rss_after = _peak_rss_mb()
        path = out / f"{CONTACT}.zip"
        writer_seconds = timings.add + timings.assemble
        verify_line = ""
        if args.verify:
            tracemalloc.reset_peak()
            started = time.perf_counter()
            result = verify_dossier(path)
            seconds = time.perf_counter() - started
            verify_peak = tracemalloc.get_traced_memory()[1] if args.tracemalloc else None
            verify_line = (
                f"verify:       {'ok' if result.ok else 'INVALID'} in {seconds:.2f} s "
                f"({args.count / seconds:,.0f} interactions/s)"
                + (f", tracemalloc peak {verify_peak / 2**20:.1f} MiB" if verify_peak else "")
            )
        if args.tracemalloc:
            tracemalloc.stop()
        with zipfile.ZipFile(path) as archive:
            entry_bytes = sum(i.file_size for i in archive.infolist() if "/" in i.filename)

    mib = entry_bytes / 2**20
    print(f"interactions: {args.count:,} in pages of {args.page_size} over {len(kinds)} type(s)")
    print(f"entries:      {mib:,.1f} MiB of JSON ({entry_bytes / args.count:.0f} bytes each)")
    print(f"zip:          {timings.zip_bytes / 2**20:,.1f} MiB")
    print(
        f"writer:       {writer_seconds:.2f} s = add_rows {timings.add:.2f} s + "
        f"complete {timings.assemble:.2f} s (making the pages took {timings.make:.2f} s, "
        "not counted)"
    )
    print(
        f"throughput:   {args.count / writer_seconds:,.0f} interactions/s, "
        f"{mib / writer_seconds:,.1f} MiB/s"
        + (" (with tracemalloc on)" if args.tracemalloc else "")
    )
    print(
        f"CPU time:     {timings.cpu:.2f} s ({args.count / timings.cpu:,.0f} interactions/s, "
        f"{mib / timings.cpu:,.1f} MiB/s per core; wall time suffers on a busy machine)"
    )
    print(
        f"peak RSS:     {rss_after:,.1f} MiB (was {rss_before:,.1f} MiB before the run: "
        f"+{rss_after - rss_before:,.1f} MiB)"
    )
    if traced_peak is not None:
        print(f"tracemalloc:  peak {traced_peak / 2**20:,.1f} MiB of Python allocations")
    if verify_line:
        print(verify_line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
