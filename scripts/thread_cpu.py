"""Run ``sar-bulk`` and write how its CPU split between the event loop and the other threads.

Usage (what ``scripts/bench.py`` scenario 4 does)::

    BENCH_THREAD_CPU=/tmp/cpu.json python scripts/thread_cpu.py run --org ... --out ...

``sar-bulk`` runs its event loop in the main thread; every other thread is one of the loop's
default executor (dossier assembly, state writes, file work). At exit this writes one JSON
object to the file named by ``BENCH_THREAD_CPU``: the main thread's CPU seconds
(``time.thread_time``: the request path, the engine and start-up) and the whole process's
(user + system), so the bench can show the request path beside the bare loop apart from the
dossiers. Nothing else changes: the arguments go to ``sar_bulk.cli.main`` as given.
"""

from __future__ import annotations

import atexit
import os
import resource
import sys
import time
from pathlib import Path

import orjson

from sar_bulk.cli import main


def _write_split(path: Path) -> None:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    split = {
        "main_thread": round(time.thread_time(), 3),
        "process": round(usage.ru_utime + usage.ru_stime, 3),
    }
    path.write_bytes(orjson.dumps(split))


if __name__ == "__main__":
    target = os.environ.get("BENCH_THREAD_CPU")
    if not target:
        print("thread_cpu: set BENCH_THREAD_CPU to the file to write", file=sys.stderr)
        sys.exit(2)
    # atexit runs in the main thread after main() returns: the executor's threads are joined.
    atexit.register(_write_split, Path(target))
    sys.exit(main(sys.argv[1:]))
