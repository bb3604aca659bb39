"""One run per output folder (and shard) at a time.

Two runs writing the same folder would remove each other's half-written dossiers as leftovers
and race on the state file. An advisory lock (``flock``) on a file next to the state makes the
second run stop with a clear message instead; the kernel drops the lock when the process ends,
however it ends, so a killed run never leaves a stale lock behind.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from sar_bulk.errors import ConfigError

__all__ = ["RunLock"]


class RunLock:
    """Held for the duration of a run: ``lock = RunLock.acquire(path)`` ... ``lock.release()``."""

    __slots__ = ("_fd", "path")

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd = fd

    @classmethod
    def acquire(cls, path: Path) -> RunLock:
        """Take the lock or raise ``ConfigError`` naming the folder in use (blocking I/O)."""
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ConfigError(
                f"another sar-bulk run holds {path}: wait for it to finish, or give this run "
                "its own --out or --shard"
            ) from None
        return cls(path, fd)

    def release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = -1
