"""Files of the dossier writer: where a dossier lives, private files, durable renames, leftovers.

Usage::

    path = dossier_path(out_dir, contact_id)      # refuses anything but a canonical GUID
    removed = remove_leftovers(out_dir)            # at the start of a run

Dossiers and spool files are created 0600 and folders 0700 whatever the umask; a new file never
reuses or follows an existing name. Whatever an interrupted write leaves behind starts with
``.sar-bulk-partial-``, and only such names are ever deleted here.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Final

from sar_bulk.dossier.format import PARTIAL_PREFIX, dossier_file_name
from sar_bulk.errors import DossierError
from sar_bulk.guids import is_canonical_guid

__all__ = [
    "DIR_MODE",
    "FILE_MODE",
    "create_private",
    "dossier_path",
    "ensure_folder",
    "fsync_folder",
    "remove_leftovers",
    "remove_quietly",
    "require_canonical",
]

FILE_MODE: Final = 0o600
DIR_MODE: Final = 0o700


def require_canonical(contact_id: str) -> None:
    if not is_canonical_guid(contact_id):
        raise DossierError(
            "a dossier needs the contact id in canonical form (lower-case dashed GUID); "
            "normalise it with canonical_guid first"
        )


def dossier_path(out_dir: Path, contact_id: str) -> Path:
    """Where the dossier of ``contact_id`` lives; refuses anything but a canonical GUID."""
    require_canonical(contact_id)
    return Path(out_dir) / dossier_file_name(contact_id)


def remove_leftovers(out_dir: Path, owns: Callable[[str], bool] | None = None) -> int:
    """Delete what interrupted writes left in ``out_dir``; returns how many items went.

    Only names starting with ``.sar-bulk-partial-`` are touched, and with ``owns`` only those of
    contacts it accepts (shards sharing a folder each clean their own). Call it before any
    writer of this run starts: it would also remove the spool of a writer that is running.
    """
    try:
        entries = list(os.scandir(out_dir))
    except FileNotFoundError:
        return 0
    except OSError as exc:
        raise DossierError(f"cannot list output folder {out_dir}: {exc.strerror}") from exc
    removed = 0
    for entry in entries:
        if not entry.name.startswith(PARTIAL_PREFIX):
            continue
        contact = entry.name[len(PARTIAL_PREFIX) : len(PARTIAL_PREFIX) + 36]
        if owns is not None and not (is_canonical_guid(contact) and owns(contact)):
            continue
        try:
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise DossierError(
                f"cannot remove leftover {entry.path} of an interrupted run: {exc.strerror}; "
                "remove it by hand"
            ) from exc
        removed += 1
    return removed


def ensure_folder(path: Path) -> None:
    """Create ``path`` and missing parents as 0700 (set explicitly: umask may be anything)."""
    missing: list[Path] = []
    current = path
    while not current.exists() and current.parent != current:
        missing.append(current)
        current = current.parent
    for folder in reversed(missing):
        try:
            os.mkdir(folder, DIR_MODE)
        except FileExistsError:
            continue
        os.chmod(folder, DIR_MODE)
    if not path.is_dir():
        raise DossierError(f"output folder {path} exists but is not a folder")


def create_private(path: Path) -> int:
    """A new 0600 file; fails if the name exists (never follows or reuses someone's file)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(path, flags, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)
    except BaseException:
        os.close(fd)
        raise
    return fd


def fsync_folder(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_quietly(path: Path) -> None:
    """Best-effort clean-up: what stays behind has a partial name and goes at the next run."""
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    except OSError:
        pass
