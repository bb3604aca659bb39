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
"""

from __future__ import annotations

import fcntl
import os
import stat
from pathlib import Path

from sar_bulk.errors import ConfigError

__all__ = ["FOLDER_LOCK", "RunLock"]

FOLDER_LOCK = ".sar-bulk.lock"


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
        fd = _open_lock_file(folder_lock)
        _flock(fd, folder_lock, fcntl.LOCK_SH if shard else fcntl.LOCK_EX)
        if shard is None:
            return cls(folder_lock, fd)
        index, count = shard.split("/")
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
