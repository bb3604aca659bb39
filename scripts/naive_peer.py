"""The client people usually write first, as a yardstick for sar-bulk's throttle (benchmark only).

Usage::

    BENCH_TOKEN=sim-naive.1 .venv/bin/python scripts/naive_peer.py \\
        --org http://127.0.0.1:8765 --contacts contacts.csv [--out DIR]

What it does, on purpose, and nothing more: ``asyncio.gather`` over every (contact, type) with an
``asyncio.Semaphore`` (52 by default, Dataverse's concurrency limit) around each request, and a
per-request retry that honours ``Retry-After``: a throttled request sleeps (holding its semaphore
slot, as the usual ``async with sem:`` code does) and is sent again, with no limit on the number of
tries by default (``--max-tries``); every other request carries on. There is no shared gate, no
pacing and no adaptation. It follows ``NextSkipToken`` and, with ``--out``, writes one plain JSON
file per contact at the end. It prints one JSON line of totals.
The token comes from the environment variable ``BENCH_TOKEN`` and is never printed.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from _peer import action_session

from sar_bulk.sources.interaction_types import ALL_TYPES

_DEFAULT_RETRY_AFTER = 5.0


@dataclass(slots=True)
class Totals:
    """What this client saw; the benchmark takes its official figures from the simulator."""

    requests: int = 0
    ok: int = 0
    throttled: int = 0
    interactions: int = 0
    most_tries: int = 0  # the most sends one page needed


def read_contacts(path: Path) -> list[str]:
    """The first column of a CSV with a header row."""
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    return [row[0].strip().lower() for row in rows[1:] if row and row[0].strip()]


def _retry_after(value: str | None) -> float:
    try:
        return max(0.0, float(value)) if value is not None else _DEFAULT_RETRY_AFTER
    except ValueError:
        return _DEFAULT_RETRY_AFTER


async def _post(
    session: aiohttp.ClientSession,
    url: str,
    body: dict[str, Any],
    sem: asyncio.Semaphore,
    totals: Totals,
    max_tries: int,
) -> dict[str, Any]:
    payload = orjson.dumps(body)
    tries = 0
    async with sem:
        while max_tries == 0 or tries < max_tries:
            tries += 1
            totals.requests += 1
            totals.most_tries = max(totals.most_tries, tries)
            async with session.post(url, data=payload) as response:
                raw = await response.read()
                if response.status == 200:
                    totals.ok += 1
                    document: dict[str, Any] = orjson.loads(raw)
                    return document
                if response.status in (429, 503):
                    totals.throttled += response.status == 429
                    await asyncio.sleep(_retry_after(response.headers.get("Retry-After")))
                    continue
                raise RuntimeError(f"HTTP {response.status} from the action")
    raise RuntimeError(f"still throttled after {max_tries} tries")


async def _fetch_type(
    session: aiohttp.ClientSession,
    url: str,
    contact: str,
    itype: str,
    sem: asyncio.Semaphore,
    totals: Totals,
    args: argparse.Namespace,
) -> tuple[str, str, list[dict[str, Any]]]:
    items: list[dict[str, Any]] = []
    token: str | None = None
    while True:
        body: dict[str, Any] = {"ContactId": contact, "InteractionType": itype}
        if args.page_size is not None:
            body["Top"] = args.page_size
        if token:
            body["SkipToken"] = token
        document = await _post(session, url, body, sem, totals, args.max_tries)
        items.extend(orjson.loads(document.get("Data") or "[]"))
        token = document.get("NextSkipToken")
        if not token:
            return contact, itype, items


def _write(out: Path, results: list[tuple[str, str, list[dict[str, Any]]]]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    by_contact: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for contact, itype, items in results:
        by_contact.setdefault(contact, {})[itype] = items
    for contact, types in by_contact.items():
        (out / f"{contact}.json").write_bytes(orjson.dumps(types))


async def run(args: argparse.Namespace, contacts: list[str], token: str) -> Totals:
    totals = Totals()
    sem = asyncio.Semaphore(args.concurrency)
    session, url = action_session(args.org, token, args.concurrency)
    async with session:
        results = await asyncio.gather(
            *(
                _fetch_type(session, url, contact, itype.value, sem, totals, args)
                for contact in contacts
                for itype in ALL_TYPES
            )
        )
    totals.interactions = sum(len(items) for _, _, items in results)
    if args.out is not None:
        await asyncio.to_thread(_write, args.out, results)
    return totals


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--org", required=True, help="http://127.0.0.1:PORT of the simulator")
    parser.add_argument("--contacts", type=Path, required=True, help="CSV, ids in column one")
    parser.add_argument("--concurrency", type=int, default=52, help="semaphore size")
    parser.add_argument("--page-size", type=int, default=None, help="Top sent with each call")
    parser.add_argument("--out", type=Path, default=None, help="write one JSON per contact")
    parser.add_argument(
        "--max-tries", type=int, default=0, help="sends per page before giving up (0: no limit)"
    )
    args = parser.parse_args()
    token = os.environ.get("BENCH_TOKEN")
    if not token:
        print("naive_peer: set BENCH_TOKEN", file=sys.stderr)
        return 2
    contacts = read_contacts(args.contacts)
    started = time.monotonic()
    totals = asyncio.run(run(args, contacts, token))
    summary = {
        "contacts": len(contacts),
        "requests": totals.requests,
        "ok": totals.ok,
        "throttled": totals.throttled,
        "most_tries_for_one_page": totals.most_tries,
        "interactions": totals.interactions,
        "seconds": round(time.monotonic() - started, 3),
    }
    print(orjson.dumps(summary).decode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
