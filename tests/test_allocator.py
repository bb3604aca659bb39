"""``tune_allocator``: glibc's settings applied unless the environment chose them."""

from __future__ import annotations

import platform
import subprocess
import sys

from sar_bulk.allocator import ARENA_MAX, MMAP_THRESHOLD, tune_allocator

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"


def _in_a_fresh_process(env: dict[str, str]) -> str:
    code = "from sar_bulk.allocator import tune_allocator; print(sorted(tune_allocator()))"
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


def test_both_settings_apply_where_the_environment_is_silent() -> None:
    both = {"arena_max": ARENA_MAX, "mmap_threshold": MMAP_THRESHOLD}
    assert tune_allocator({}) == (both if GLIBC else {})
    assert _in_a_fresh_process({}) == ("['arena_max', 'mmap_threshold']" if GLIBC else "[]")


def test_a_setting_the_operator_made_in_the_environment_is_left_alone() -> None:
    assert tune_allocator({"MALLOC_ARENA_MAX": "4"}) == (
        {"mmap_threshold": MMAP_THRESHOLD} if GLIBC else {}
    )
    env = {"MALLOC_ARENA_MAX": "4", "MALLOC_MMAP_THRESHOLD_": "65536"}
    assert _in_a_fresh_process(env) == "[]"


def test_malloc_tunables_of_the_operator_leave_both_alone() -> None:
    assert tune_allocator({"GLIBC_TUNABLES": "glibc.malloc.arena_max=4"}) == {}


def test_the_collector_freezes_start_up_objects_once() -> None:
    code = (
        "import gc; from sar_bulk.allocator import tune_collector; "
        "before = gc.get_threshold(); frozen = tune_collector(); "
        "again = tune_collector(); "
        "print(frozen > 1000, again == frozen, gc.get_threshold() == before)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["True", "True", "True"]


def test_the_console_entry_freezes_start_up_objects() -> None:
    code = "import gc, sar_bulk.cli as c; c.main(['types']); print(gc.get_freeze_count() > 1000)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.splitlines()[-1] == "True"


def test_objects_already_in_the_permanent_generation_do_not_stop_the_freeze() -> None:
    # Python 3.12's collector moves immortal objects there on its own before ``main`` runs: a
    # count above 0 is not a freeze of ours (on 3.11 and 3.13 a freeze of a few stands for it).
    code = (
        "import gc; gc.freeze(); before = gc.get_freeze_count(); "
        "import sar_bulk.cli as c; c.main(['types']); "
        "print(gc.get_freeze_count() - before > 1000)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.splitlines()[-1] == "True"
