"""Tune glibc's allocator for a long run, before the first thread starts.

Usage (first thing in ``cli.main``)::

    tune_allocator()          # {"arena_max": 2, "mmap_threshold": 131072} on glibc, else {}

Why: sar-bulk frees and allocates page-sized buffers all run long, in the event loop and in the
worker threads that assemble dossiers. glibc gives each thread an arena of its own (up to eight
per core) and, after the first large buffers are freed, raises its mmap threshold so later ones
come from those arenas too; what is freed there is kept, not given back. Measured with
``scripts/bench.py --only 5``: peak RSS grew from 105 MB at 1,000 contacts to 147 MB at 10,000
(Python's objects and malloc's in-use bytes stayed flat). Two arenas and a fixed threshold (so
buffers of 128 KiB and more are mapped and unmapped) stop that growth: 85.0 MB at 1,000, 89.5 MB
at 10,000. ``MALLOC_ARENA_MAX`` and ``MALLOC_MMAP_THRESHOLD_`` in the environment say the same
and win: a setting found there is left as the operator chose it, and so is every one when
``GLIBC_TUNABLES`` tunes malloc. Elsewhere than glibc (musl, macOS) this does nothing.
"""

from __future__ import annotations

import ctypes
import os
import platform
from collections.abc import Mapping
from typing import Final

__all__ = ["ARENA_MAX", "MMAP_THRESHOLD", "tune_allocator"]

ARENA_MAX: Final = 2
MMAP_THRESHOLD: Final = 128 * 1024
# mallopt(3) parameter numbers, from glibc's malloc.h.
_M_MMAP_THRESHOLD: Final = -3
_M_ARENA_MAX: Final = -8
_SETTINGS: Final = (
    ("MALLOC_ARENA_MAX", "arena_max", _M_ARENA_MAX, ARENA_MAX),
    ("MALLOC_MMAP_THRESHOLD_", "mmap_threshold", _M_MMAP_THRESHOLD, MMAP_THRESHOLD),
)


def tune_allocator(environ: Mapping[str, str] | None = None) -> dict[str, int]:
    """Apply the settings the environment does not make itself; returns those applied."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return {}
    env = os.environ if environ is None else environ
    if "glibc.malloc." in env.get("GLIBC_TUNABLES", ""):
        return {}  # the operator tuned malloc through glibc's tunables: theirs wins
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return {}
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return {
        name: value
        for variable, name, parameter, value in _SETTINGS
        if variable not in env and mallopt(parameter, value) == 1  # 1: success
    }
