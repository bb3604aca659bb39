"""The least a client can do for the same work: the CPU floor sar-bulk is measured against.

Usage::

    BENCH_TOKEN=sim-bare.1 .venv/bin/python scripts/bare_loop.py \\
        --org http://127.0.0.1:8765 --contacts contacts.csv --concurrency 16

``--concurrency`` workers share one iterator over every (contact, type), post the same requests
sar-bulk posts (same headers and body, following ``NextSkipToken``), decode each answer the same
way (the body, then the JSON array in its ``Data`` string) and keep nothing: no throttle, no retry,
no state, no files. Any answer other than 200 stops it, since the benchmark runs it against a
simulator without limits or faults. It prints one JSON line of totals; the token comes from the
environment variable ``BENCH_TOKEN`` and is never printed.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import itertools
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from _peer import action_session

from sar_bulk.sources.interaction_types import ALL_TYPES, parse_types


def read_contacts(path: Path) -> list[str]:
    """The first column of a CSV with a header row."""
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    return [row[0].strip().lower() for row in rows[1:] if row and row[0].strip()]


async def _worker(
    session: aiohttp.ClientSession,
    url: str,
    pairs: Iterator[tuple[str, str]],
    top: int | None,
    counts: list[int],
) -> None:
    for contact, itype in pairs:
        token: str | None = None
        while True:
            body: dict[str, Any] = {"ContactId": contact, "InteractionType": itype}
            if top is not None:
                body["Top"] = top
            if token:
                body["SkipToken"] = token
            async with session.post(url, data=orjson.dumps(body)) as response:
                raw = await response.read()
                if response.status != 200:
                    raise RuntimeError(f"HTTP {response.status} from the action")
            document = orjson.loads(raw)
            counts[0] += 1
            counts[1] += len(orjson.loads(document.get("Data") or "[]"))
            token = document.get("NextSkipToken")
            if not token:
                break


async def run(args: argparse.Namespace, contacts: list[str], token: str) -> list[int]:
    """Requests and interactions, in that order."""
    types = parse_types(args.types) if args.types else ALL_TYPES
    pairs = ((c, t.value) for c, t in itertools.product(contacts, types))
    counts = [0, 0]
    session, url = action_session(args.org, token, args.concurrency)
    async with (
        session,
        asyncio.TaskGroup() as group,
    ):
        for _ in range(args.concurrency):
            group.create_task(_worker(session, url, pairs, args.page_size, counts))
    return counts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--org", required=True, help="http://127.0.0.1:PORT of the simulator")
    parser.add_argument("--contacts", type=Path, required=True, help="CSV, ids in column one")
    parser.add_argument("--concurrency", type=int, default=16, help="workers (requests in flight)")
    parser.add_argument("--types", default=None, help="comma list of types (default: all 40)")
    parser.add_argument("--page-size", type=int, default=None, help="Top sent with each call")
    args = parser.parse_args()
    token = os.environ.get("BENCH_TOKEN")
    if not token:
        print("bare_loop: set BENCH_TOKEN", file=sys.stderr)
        return 2
    contacts = read_contacts(args.contacts)
    started = time.monotonic()
    requests, interactions = asyncio.run(run(args, contacts, token))
    summary = {
        "contacts": len(contacts),
        "requests": requests,
        "interactions": interactions,
        "seconds": round(time.monotonic() - started, 3),
    }
    print(orjson.dumps(summary).decode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
