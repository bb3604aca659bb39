"""Where finished dossiers and the run report go: the ``OutputTarget`` protocol and the folder.

Usage::

    target = LocalTarget(Path("sar-bulk-out"))          # or BlobTarget (blob.py)
    published = await target.publish(staged_zip, "<contact-id>.zip")
    again = await target.lookup("<contact-id>.zip")     # None when absent; no download
    async with target.open_for_verify("<contact-id>.zip") as path:
        verify_dossier(path)
    await target.put_report("run-report.json", body)
    async for name in target.list_dossiers(): ...
    await target.close()

Why a protocol: the engine assembles a dossier locally either way (the zip writer needs a seekable
file), and only the last step differs - a rename into a folder, or an upload to a container. The
engine talks to this interface and records what ``publish`` returns (name, SHA-256, etag, size)
in its state, so a resume can check a published dossier against that record without fetching it
again. Both targets promise the same thing: a final name only ever holds a complete dossier.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import secrets
import shutil
import stat
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Protocol, runtime_checkable

from sar_bulk.errors import OutputError

__all__ = ["LocalTarget", "OutputTarget", "Published", "check_name", "file_digests"]

_CHUNK: Final = 1 << 20
_FILE_MODE: Final = 0o600
_DIR_MODE: Final = 0o700


@dataclass(frozen=True, slots=True)
class Published:
    """A dossier (or report) as stored: what the state records and a resume compares.

    ``sha256`` is the hex digest of the content as recorded by sar-bulk (blob metadata or the
    file's own bytes); empty when the stored object carries none, i.e. sar-bulk did not write it.
    ``etag`` changes whenever the object is replaced or its metadata edited.
    """

    name: str
    sha256: str
    etag: str
    size: int


@runtime_checkable
class OutputTarget(Protocol):
    """A place that holds dossiers under final names that only ever hold complete files."""

    @property
    def description(self) -> str:
        """The folder or container URL, for messages and the report (never a secret)."""
        ...

    async def prepare(self) -> None:
        """Create the folder or check the container, before any work is fetched.

        Raises ``OutputError`` (``OutputUnreachable`` when the store does not answer).
        """
        ...

    async def publish(
        self, staged: Path, name: str, *, sha256: str | None = None, replace: bool = False
    ) -> Published:
        """Move the complete file ``staged`` under ``name``; it appears whole or not at all.

        ``sha256`` is the digest if the caller already knows it (checked against the bytes
        sent). Without ``replace`` an existing ``name`` is an error. ``staged`` is gone after
        success; after a failure it is left for the caller to remove.
        """
        ...

    async def lookup(self, name: str) -> Published | None:
        """What is stored under ``name`` (from properties, without reading it), or None."""
        ...

    def open_for_verify(self, name: str) -> AbstractAsyncContextManager[Path]:
        """A local file with the content of ``name`` for the verifier, removed afterwards.

        Raises ``OutputError`` when the content does not match its recorded SHA-256.
        """
        ...

    async def put_report(self, name: str, body: bytes) -> Published:
        """Store the run report under ``name``, replacing an earlier one, atomically."""
        ...

    async def remove(self, name: str) -> None:
        """Delete ``name`` (a dossier replaced by its other form); absent is not an error."""
        ...

    def list_dossiers(self) -> AsyncIterator[str]:
        """The names of the dossiers (``*.zip``, ``*.zip.age``) directly under the target."""
        ...

    async def close(self) -> None:
        """Release connections; the target is not used afterwards."""
        ...


def file_digests(path: Path) -> tuple[str, bytes, int]:
    """SHA-256 (hex), MD5 (raw, for Content-MD5) and size of a file (blocking)."""
    sha = hashlib.sha256()
    md5 = hashlib.md5(usedforsecurity=False)
    size = 0
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            sha.update(chunk)
            md5.update(chunk)
            size += len(chunk)
    return sha.hexdigest(), md5.digest(), size


def check_name(name: str) -> None:
    """A target name is one plain file name: no folder, no hidden or relative part."""
    if not name or "/" in name or "\\" in name or name.startswith(".") or "\x00" in name:
        raise OutputError(f"{name!r} is not a plain file name for the output")


class LocalTarget:
    """Today's output folder: ``publish`` is fsync + rename (same file system) or copy + rename.

    The etag of a file is ``<mtime_ns>-<size>``: it changes when the file is replaced.
    """

    __slots__ = ("folder",)

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)

    @property
    def description(self) -> str:
        return str(self.folder)

    async def prepare(self) -> None:
        await asyncio.to_thread(self._prepare)

    def _prepare(self) -> None:
        try:
            if not self.folder.exists():
                self.folder.mkdir(parents=True, mode=_DIR_MODE)
                self.folder.chmod(_DIR_MODE)  # mkdir's mode obeys the umask
        except OSError as exc:
            raise OutputError(f"cannot create output folder {self.folder}: {exc.strerror}") from exc
        if not self.folder.is_dir():
            raise OutputError(f"output folder {self.folder} exists but is not a folder")

    async def publish(
        self, staged: Path, name: str, *, sha256: str | None = None, replace: bool = False
    ) -> Published:
        check_name(name)
        return await asyncio.to_thread(self._publish, Path(staged), name, sha256, replace)

    def _publish(self, staged: Path, name: str, sha256: str | None, replace: bool) -> Published:
        final = self.folder / name
        digest, _, _ = file_digests(staged)
        if sha256 is not None and sha256 != digest:
            raise OutputError(
                f"{staged} changed before it was published: its SHA-256 is not the one "
                "recorded when it was written; the contact is fetched again next run"
            )
        if not replace and final.exists():
            raise OutputError(f"{final} already exists; it is not replaced without a check")
        try:
            if staged.parent.resolve() != self.folder.resolve():
                # Another file system, maybe: copy under a hidden name, then rename in place.
                hidden = self.folder / f".sar-bulk-partial-{name}.{os.getpid()}"
                _copy_private(staged, hidden)
                os.replace(hidden, final)
                staged.unlink()
            elif staged != final:
                os.replace(staged, final)
            _fsync_folder(self.folder)
        except OSError as exc:
            raise OutputError(f"cannot put {name} into {self.folder}: {exc.strerror}") from exc
        return self._published(final, digest)

    def _published(self, path: Path, digest: str) -> Published:
        info = path.stat()
        return Published(path.name, digest, f"{info.st_mtime_ns}-{info.st_size}", info.st_size)

    async def lookup(self, name: str) -> Published | None:
        check_name(name)
        return await asyncio.to_thread(self._lookup, self.folder / name)

    def _lookup(self, path: Path) -> Published | None:
        # A local file has no separate metadata: its digest is its bytes' (cheap next to a fetch).
        try:
            info = os.lstat(path)
            if not stat.S_ISREG(info.st_mode):
                # A link, a pipe (its read would block the run), a folder: something, but not a
                # dossier this tool wrote; never read or followed.
                etag = f"{info.st_mtime_ns}-{info.st_size}"
                return Published(path.name, "", etag, info.st_size)
            digest, _, _ = file_digests(path)
            return self._published(path, digest)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise OutputError(f"cannot read {path}: {exc.strerror}") from exc

    @asynccontextmanager
    async def _open(self, name: str) -> AsyncIterator[Path]:
        check_name(name)
        path = self.folder / name
        if not await asyncio.to_thread(path.is_file):
            raise OutputError(f"{path} does not exist")
        yield path  # the file itself: nothing to download, nothing to remove

    def open_for_verify(self, name: str) -> AbstractAsyncContextManager[Path]:
        return self._open(name)

    async def put_report(self, name: str, body: bytes) -> Published:
        check_name(name)
        return await asyncio.to_thread(self._put_report, name, body)

    def _put_report(self, name: str, body: bytes) -> Published:
        path = self.folder / name
        # A new file under a name nobody can guess: never one planted there (a link would have
        # the report written through it, onto whatever it points to).
        temporary = self.folder / f".{name}.{secrets.token_hex(8)}.tmp"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            fd = os.open(temporary, flags, _FILE_MODE)
        except OSError as exc:
            raise OutputError(f"cannot write {path}: {exc.strerror}") from exc
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(body)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, path)
        except OSError as exc:
            temporary.unlink(missing_ok=True)
            raise OutputError(f"cannot write {path}: {exc.strerror}") from exc
        return self._published(path, hashlib.sha256(body).hexdigest())

    async def remove(self, name: str) -> None:
        check_name(name)
        await asyncio.to_thread(self._remove, self.folder / name)

    def _remove(self, path: Path) -> None:
        try:
            path.unlink(missing_ok=True)
            _fsync_folder(self.folder)
        except OSError as exc:
            raise OutputError(f"cannot remove {path}: {exc.strerror}") from exc

    async def list_dossiers(self) -> AsyncIterator[str]:
        names = await asyncio.to_thread(self._names)
        for name in names:
            yield name

    def _names(self) -> list[str]:
        try:
            return sorted(
                entry.name
                for entry in os.scandir(self.folder)
                if entry.name.endswith((".zip", ".zip.age"))
                and not entry.name.startswith(".")
                and entry.is_file(follow_symlinks=False)
            )
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise OutputError(f"cannot list {self.folder}: {exc.strerror}") from exc

    async def close(self) -> None:
        """Nothing to release."""


def _copy_private(source: Path, target: Path) -> None:
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, _FILE_MODE)
    try:
        with os.fdopen(fd, "wb") as out, source.open("rb") as data:
            shutil.copyfileobj(data, out, _CHUNK)
            out.flush()
            os.fsync(out.fileno())
    except BaseException:
        target.unlink(missing_ok=True)
        raise


def _fsync_folder(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
