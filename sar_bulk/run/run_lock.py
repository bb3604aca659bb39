"""One run per output folder (and shard) at a time.

Usage::

    lock = RunLock.for_folder(config.out, shard="1/4")   # before the first request
    ...
    lock.release()

Two runs writing the same folder would remove each other's half-written dossiers as leftovers
and race on the state file. An advisory lock (``flock``) makes the second run stop with a clear
message instead; the kernel drops the lock when the process ends, however it ends, so a killed
run never leaves a stale lock behind.

The lock that counts sits in the output folder itself (``OUT/.sar-bulk.lock``), whatever
``--state`` says: two runs with different state files on one folder would still fight over the
dossiers. An unsharded run holds it exclusively; a shard holds it shared plus its own shard lock
(``OUT/.sar-bulk.shard-I-of-N.lock``) exclusively, so shards of one job run side by side while a
second copy of a shard, or an unsharded run, is refused. Lock files are opened with
``O_NOFOLLOW`` and must be regular files: a link or a FIFO planted there is refused.

Shards of one job all have the same count N. Shard 0 of 2 owns every contact shard 0 of 4 owns,
so shards of two counts side by side would fetch contacts twice and remove each other's
half-written dossiers as leftovers. The first shard into an empty folder writes its N into
``OUT/.sar-bulk.shards.lock``; a shard of another N is refused while any shard holds the folder.
That file is also the gate: it is held (``LOCK_EX``, for microseconds) while a shard looks at the
folder lock and the count, so two shards of different counts starting at once cannot both pass.
"""

from __future__ import annotations

import fcntl
import os
import stat
from pathlib import Path

from sar_bulk.errors import ConfigError

__all__ = ["FOLDER_LOCK", "RunLock"]

FOLDER_LOCK = ".sar-bulk.lock"
SHARD_COUNT = ".sar-bulk.shards.lock"


class RunLock:
    """Held for the duration of a run: ``lock = RunLock.acquire(path)`` ... ``lock.release()``."""

    __slots__ = ("_fds", "path")

    def __init__(self, path: Path, *fds: int) -> None:
        self.path = path
        self._fds = list(fds)

    @classmethod
    def acquire(cls, path: Path) -> RunLock:
        """Take the lock or raise ``ConfigError`` naming the folder in use (blocking I/O)."""
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = _open_lock_file(path)
        _flock(fd, path, fcntl.LOCK_EX)
        return cls(path, fd)

    @classmethod
    def for_folder(cls, out: Path, *, shard: str | None = None) -> RunLock:
        """Lock the output folder ``out`` (which must exist) for this run or shard ``I/N``."""
        folder_lock = out / FOLDER_LOCK
        if shard is None:
            fd = _open_lock_file(folder_lock)
            _flock(fd, folder_lock, fcntl.LOCK_EX)
            return cls(folder_lock, fd)
        index, count = shard.split("/")
        fd = _join_shards(out, folder_lock, int(count), shard)
        shard_lock = out / f".sar-bulk.shard-{index}-of-{count}.lock"
        try:
            shard_fd = _open_lock_file(shard_lock)
            _flock(shard_fd, shard_lock, fcntl.LOCK_EX)
        except BaseException:
            os.close(fd)
            raise
        return cls(shard_lock, fd, shard_fd)

    def release(self) -> None:
        while self._fds:
            os.close(self._fds.pop())  # closing the descriptor drops the flock


def _join_shards(out: Path, folder_lock: Path, count: int, shard: str) -> int:
    """Hold the folder lock shared as one of ``count`` shards; refuse while shards of another
    count hold it. Returns the folder lock's descriptor."""
    gate = _open_lock_file(out / SHARD_COUNT)
    try:
        fcntl.flock(gate, fcntl.LOCK_EX)  # the others hold it for microseconds only
        fd = _open_lock_file(folder_lock)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            # Shards are running (or an unsharded run: then the shared lock is refused).
            _flock(fd, folder_lock, fcntl.LOCK_SH)
            running = _read_count(gate)
            if running is not None and running != count:
                os.close(fd)
                raise ConfigError(
                    f"shards of {running} are running in {out}, and this run is shard {shard}: "
                    f"shards of one job must all have the same count; wait for them to finish, "
                    "or give this run its own --out"
                ) from None
            return fd
        # Nobody in the folder: this shard's job sets the count.
        try:
            os.ftruncate(gate, 0)
            os.pwrite(gate, f"{count}\n".encode("ascii"), 0)
        except BaseException:
            os.close(fd)
            raise
        # flock drops the exclusive lock before it takes the shared one: an unsharded run
        # starting in that instant gets the folder, and this shard is refused as usual.
        _flock(fd, folder_lock, fcntl.LOCK_SH)
        return fd
    finally:
        os.close(gate)


def _read_count(fd: int) -> int | None:
    """The shard count a running job wrote, or None (none written, or not ours)."""
    text = os.pread(fd, 16, 0).decode("ascii", "replace").strip()
    return int(text) if text.isdigit() and text.isascii() else None


def _open_lock_file(path: Path) -> int:
    """Open (or create, 0600) the lock file; refuse a link, a FIFO or anything not a file."""
    flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
    try:
        fd = os.open(path, flags, 0o600)
    except OSError as exc:
        raise ConfigError(
            f"cannot open the lock file {path} ({exc.strerror}); if it is a link or not a "
            "regular file, remove it"
        ) from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise ConfigError(f"the lock file {path} is not a regular file: remove it")
    return fd


def _flock(fd: int, path: Path, mode: int) -> None:
    try:
        fcntl.flock(fd, mode | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise ConfigError(
            f"another sar-bulk run holds {path}: wait for it to finish, or give this run "
            "its own --out or --shard"
        ) from None
