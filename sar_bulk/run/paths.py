"""Checking ``--out`` and ``--state`` before a run spends a request or creates a folder.

Usage (blocking I/O: call it from a thread, or before the event loop runs)::

    check_run_paths(config.out, config.state)    # ConfigError, one line, if either is unusable
    create_private_folder(config.out)            # then create the folder and its parents, 0700

Why up front: a bad path found by the engine comes after the pre-flight request, after folders
were created, and as an ``OSError`` from deep inside. What is already on disk is untrusted input
like the server's answers: a regular file, a device (``/dev/null``), a FIFO or a symbolic link
where the output folder or the state file should be is refused, as is a path under a file or in
a folder this user cannot write. Nothing is created here, so a refused run leaves no trace.

Write access is judged with ``os.access``; for root it is always granted (root ignores modes),
so for root only the checks of what the path *is* apply.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from sar_bulk.errors import ConfigError

__all__ = ["check_run_paths", "create_private_folder"]


def check_run_paths(out: Path, state: Path, published: Path | None = None) -> None:
    """Raise ``ConfigError`` naming the flag and the problem if ``out`` or ``state`` is unusable.

    ``published``: the folder ``--out`` when ``out`` is the ``--work`` folder staging for it.
    """
    if published is None:
        _check_folder(out, "--out")
    else:
        _check_folder(out, "--work")
        _check_folder(published, "--out")
    _check_state(state)


def create_private_folder(path: Path, flag: str = "--out") -> None:
    """Create ``path`` and its missing parents with mode 0700 (mkdir's mode obeys the umask).

    ``ConfigError`` naming ``flag`` when the system refuses: ``check_run_paths`` judges by
    ``os.access``, which passes for root on an NFS export that squashes root, a full disk, /proc.
    """
    missing: list[Path] = []
    current = path
    while not current.exists():
        missing.append(current)
        if current.parent == current:
            break
        current = current.parent
    for folder in reversed(missing):
        try:
            folder.mkdir(mode=0o700)
        except FileExistsError:
            continue  # another run (a shard) made it meanwhile
        except OSError as exc:
            raise ConfigError(
                f"{flag} {path} cannot be created: {folder}: {exc.strerror or exc}"
            ) from None
        folder.chmod(0o700)


def _describe(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISREG(mode):
        return "a regular file"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def _lstat(path: Path) -> os.stat_result | None:
    """``path``'s own status, or None when it does not exist (or a parent is no folder)."""
    try:
        return os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        raise ConfigError(f"{path} cannot be examined: {exc.strerror}") from None


def _check_folder(path: Path, flag: str) -> None:
    status = _lstat(path)
    if status is None:
        _check_creatable(path, flag)
        return
    if stat.S_ISLNK(status.st_mode):
        raise ConfigError(
            f"{flag} {path} is a symbolic link: give the folder it points to, so that nothing "
            "is written where you did not look"
        )
    if not stat.S_ISDIR(status.st_mode):
        raise ConfigError(f"{flag} {path} is {_describe(status.st_mode)}, not a folder")
    if not os.access(path, os.W_OK | os.X_OK):
        raise ConfigError(f"{flag} {path} is a folder you cannot write to: check its permissions")


def _check_state(path: Path) -> None:
    status = _lstat(path)
    if status is None:
        _check_creatable(path, "--state")
        return
    if not stat.S_ISREG(status.st_mode):
        raise ConfigError(
            f"--state {path} is {_describe(status.st_mode)}, not a state file: give a path to a "
            "file of its own"
        )
    if not os.access(path, os.R_OK | os.W_OK):
        raise ConfigError(f"--state {path} cannot be read and written: check its permissions")
    # SQLite creates its -wal and -shm files next to the database.
    _check_folder(path.parent, "--state's folder")


def _check_creatable(path: Path, flag: str) -> None:
    """``path`` does not exist: its nearest existing ancestor must be a writable folder."""
    ancestor = path.parent
    while (status := _lstat(ancestor)) is None and ancestor.parent != ancestor:
        ancestor = ancestor.parent
    if status is None:
        raise ConfigError(f"{flag} {path} cannot be created: none of its parents exists")
    if stat.S_ISLNK(status.st_mode):
        try:
            status = os.stat(ancestor)  # a link to a folder as a parent is fine (/tmp on macOS)
        except OSError:
            raise ConfigError(
                f"{flag} {path} cannot be created: {ancestor} is a broken link"
            ) from None
    if not stat.S_ISDIR(status.st_mode):
        raise ConfigError(
            f"{flag} {path} cannot be created: {ancestor} is {_describe(status.st_mode)}, "
            "not a folder"
        )
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise ConfigError(
            f"{flag} {path} cannot be created: you cannot write to the folder {ancestor}"
        )
