"""Check that a dossier is complete and unchanged, and the ``verify`` command around it.

The zip layout check lives in ``zip_layout.py``, the reading of one member in ``zip_member.py``
and the manifest schema checks in ``manifest_check.py``; this module checks the members and
runs the command.

Anyone who receives a dossier (the data subject, an auditor, the organisation before sending it)
can run ``sar-bulk verify`` to learn whether it is exactly what sar-bulk wrote. Strict: the file
must have exactly the layout the writer makes, so anything added, removed or changed is named.

- Layout: the file starts with the first member's local header and ends with the end of
  central directory record, with no zip comment; members follow one another with nothing in
  between, the central directory lists exactly them, in order: README.txt, index.html (v3),
  manifest.json, then the entries in the order the manifest lists them. Every member's CRC
  holds (each is read to its end in the same single pass that hashes it), and its compressed
  data ends exactly where the member does (zipfile's reader would drop what follows unseen).
- ``manifest.json`` follows its schema (``sar-bulk/dossier/v3``, or v2 or v1 for dossiers
  written before; a v3 dossier must have index.html, hashed like README.txt): the question,
  parts grouped by source in their fixed order, entries with names their part may write,
  counts that add up; every asked interaction type and source has its part.
- Every member but the manifest matches its sha256 and size in the manifest (v1 has no hash of
  README.txt, so there it must be byte for byte the README its manifest produces); row counts
  match line counts; every interaction's ``ContactId`` (any case, braces ignored) is the
  manifest's contact; the file is named after the contact.
- The dossier is a regular file: a symbolic link is named, not followed (a link planted in an
  output folder must not make a resume adopt a file that is not in it), and a FIFO is refused
  at once instead of blocking the read.
- ``verify_dossier(path, expected_sha256=...)`` also compares the whole file's sha256 (the one
  the writer's summary gave, or the sender's): the only check that covers manifest.json itself.

Memory stays bounded however big an entry is: entries are read in 256 KiB chunks and, because
rows are one per line, parsed one line at a time. An entry laid out differently is reported as a
problem rather than loaded whole.

Usage::

    result = verify_dossier(path, expected_sha256=summary.sha256)
    if not result.ok: print(result.problems)
    result.question          # what the dossier answers (v2 form, also for v1)
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import os
import stat
import struct
import tempfile
import zipfile
import zlib
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, BinaryIO, Final, TextIO

import orjson

from sar_bulk.dossier import format_v1
from sar_bulk.dossier.encryption import ENCRYPTED_SUFFIX, Decryptor, is_encrypted_name
from sar_bulk.dossier.format import (
    INDEX_NAME,
    MANIFEST_NAME,
    PARTIAL_PREFIX,
    README_NAME,
    SCHEMA,
    contact_matches,
    dossier_file_name,
)
from sar_bulk.dossier.manifest_check import (
    NO_MANIFEST,
    CheckedManifest,
    ExpectedEntry,
    check_manifest,
)
from sar_bulk.dossier.zip_layout import layout_problems
from sar_bulk.dossier.zip_member import MemberError, member_chunks
from sar_bulk.errors import DossierError

__all__ = [
    "VerifyResult",
    "file_sha256",
    "iter_dossiers",
    "result_json",
    "result_line",
    "run_verify_command",
    "verify_dossier",
]

EXIT_VALID: Final = 0
EXIT_INVALID: Final = 1
EXIT_USAGE: Final = 2

_CHUNK: Final = 256 << 10
LOCKED_ADVICE: Final = "give --identity FILE, or --passphrase-env NAME"
LOCKED: Final = f"encrypted, not checked: {LOCKED_ADVICE}"
_MAX_TEXT_MEMBER: Final = 4 << 20  # README and manifest are a few kB; more is not a dossier
_MAX_MANIFEST: Final = 64 << 20  # v2 lists parts and notes: larger, still bounded
_MAX_LINE: Final = 16 << 20  # one row is a few kB; a longer line is not our layout
# What a damaged or hostile zip can raise while it is read.
_ZIP_ERRORS: Final = (
    MemberError,
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
    zlib.error,
    EOFError,
    OSError,
    NotImplementedError,
    RuntimeError,
    ValueError,
    struct.error,
)


@dataclass(frozen=True, slots=True)
class VerifyResult:
    """The verdict on one file; ``problems`` is empty exactly when ``ok``."""

    path: Path
    ok: bool
    contact_id: str | None
    total_interactions: int | None
    problems: tuple[str, ...]
    # What the dossier answers (from its manifest), so a caller can compare without re-reading:
    # ``source`` holds org_url, date_from and date_to (v1's shape, also for v2), and
    # ``question`` the v2 question (derived for v1: sources ["interactions"], no tables).
    source: Mapping[str, Any] | None = None
    interaction_types: tuple[str, ...] = ()
    schema: str | None = None
    question: Mapping[str, Any] | None = None
    sha256: str | None = None  # of the whole file, when expected_sha256 was given
    encrypted: bool = False  # a .zip.age file: the verdict is on the zip inside it
    locked: bool = False  # encrypted and not checked: no identity or passphrase was given
    total_rows: int | None = None  # v2 and v3: every source's rows (interactions among them)
    files: int | None = None  # v2 and v3: files stored byte for byte (real-time exports)

    @property
    def contents(self) -> str:
        """What a valid dossier holds, in words: a dossier of today's cloud org has rows and
        export files but no interactions, and "0 interaction(s)" alone read as empty."""
        if self.total_rows is None:
            return f"{self.total_interactions} interaction(s)"
        said = [f"{self.total_rows:,} row(s)"]
        asked = self.question.get("sources") if self.question is not None else None
        if isinstance(asked, list) and "interactions" in asked:
            said.append(f"{self.total_interactions or 0:,} of them interaction(s)")
        if self.files or (isinstance(asked, list) and "realtime" in asked):
            said.append(f"{self.files or 0} export file(s)")
        return ", ".join(said)


def _reason(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


class _NotAFile(OSError):
    """What is at a dossier's name is a symbolic link, a FIFO, a folder or a device."""


def _open_file(path: Path, *, follow: bool = True) -> BinaryIO:
    """``path`` opened for reading if it is a regular file, else ``_NotAFile``.

    Whatever sits in an output folder may have been planted there: a FIFO would block a plain
    ``open`` until someone writes to it (so it is opened non-blocking, then looked at), and a
    symbolic link is not followed unless ``follow``.
    """
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | (0 if follow else os.O_NOFOLLOW)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if exc.errno == errno.ELOOP and not follow and os.path.islink(path):
            raise _NotAFile(
                f"{path.name} is a symbolic link, not a dossier file: verify the file it points to"
            ) from None
        raise
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise _NotAFile(f"{path.name} is not a regular file, not a dossier")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def file_sha256(path: Path) -> str:
    """The sha256 of a whole file, read in chunks (never held whole).

    Raises ``OSError`` for what is not a regular file (a FIFO would block the read forever).
    """
    sha = hashlib.sha256()
    with _open_file(Path(path)) as stream:
        while chunk := stream.read(_CHUNK):
            sha.update(chunk)
    return sha.hexdigest()


def _sha256_of(stream: BinaryIO) -> str:
    sha = hashlib.sha256()
    stream.seek(0)
    while chunk := stream.read(_CHUNK):
        sha.update(chunk)
    return sha.hexdigest()


def _reject_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


def _loads(line: bytes) -> object:
    """One JSON value; numbers orjson refuses (1e400, beyond 64 bits) are still JSON, and the
    writer keeps them verbatim, so the standard library reads those (NaN and Infinity, which
    are not JSON, stay refused). Raises ``ValueError`` for anything that is not JSON."""
    try:
        return orjson.loads(line)
    except orjson.JSONDecodeError:
        try:
            return json.loads(line, parse_constant=_reject_constant)
        except RecursionError:
            raise ValueError("nested too deeply") from None


class _ArrayLines:
    """Parses a v1 entry one line at a time: ``[``, one object per line, ``]``."""

    __slots__ = ("contact_id", "count", "error", "foreign", "line", "more", "non_objects", "state")

    def __init__(self, contact_id: str | None) -> None:
        self.contact_id = contact_id
        self.state = 0  # 0: before "[", 1: inside, 2: after "]"
        self.count = 0
        self.foreign = 0
        self.non_objects = 0
        self.more = False  # the last object ended with a comma: another must follow
        self.line = 0
        self.error: str | None = None

    def feed(self, raw: bytes) -> None:
        self.line += 1
        line = raw.rstrip(b" \t\r")
        if not line:
            return  # whitespace between JSON tokens is allowed
        if self.state == 1:
            if line == b"]":
                self.state = 2
                if self.more:
                    self.error = f"a comma before the closing ] (line {self.line})"
                return
            self._item(line)
        elif self.state == 0 and line == b"[":
            self.state = 1
        else:
            where = "before the opening [" if self.state == 0 else "after the closing ]"
            self.error = f"unexpected content {where} (line {self.line})"

    def _item(self, line: bytes) -> None:
        if self.count and not self.more:
            self.error = f"a missing comma before line {self.line}"
            return
        self.more = line.endswith(b",")
        try:
            item = _loads(line[:-1] if self.more else line)
        except ValueError:
            self.error = f"line {self.line} is not one whole JSON value (v1 puts one per line)"
            return
        self.count += 1
        if type(item) is not dict:
            self.non_objects += 1
        elif self.contact_id is not None and not contact_matches(
            item.get("ContactId"), self.contact_id
        ):
            self.foreign += 1

    def finish(self) -> None:
        if self.error is None and self.state != 2:
            self.error = "it does not end with a closing ]"


class _JsonLines:
    """Parses a JSON-lines entry one line at a time: one JSON object per line, each ended."""

    __slots__ = ("count", "error", "line", "non_objects")

    def __init__(self) -> None:
        self.count = 0
        self.non_objects = 0
        self.line = 0
        self.error: str | None = None

    def feed(self, raw: bytes) -> None:
        self.line += 1
        try:
            item = _loads(raw)
        except ValueError:
            self.error = f"line {self.line} is not one whole JSON value (one row per line)"
            return
        self.count += 1
        if type(item) is not dict:
            self.non_objects += 1

    def finish(self, rest: bytes) -> None:
        if self.error is None and rest:
            self.error = "its last line does not end with a newline"


class _Checker:
    """One pass over one open zip, collecting problems."""

    def __init__(self, archive: zipfile.ZipFile, stream: IO[bytes], path: Path) -> None:
        self.archive = archive
        self.stream = stream  # members are read from it by zip_member, not by zipfile
        self.path = path
        self.problems: list[str] = []

    def run(self) -> CheckedManifest:
        infos = self.archive.infolist()
        names = Counter(info.filename for info in infos)
        for name, seen in names.items():
            if seen > 1:
                self.problems.append(f"member {name!r} appears {seen} times")
        before = len(self.problems)
        manifest = self._manifest(names)
        manifest_ok = len(self.problems) == before
        if manifest.contact_id is not None:
            expected_name = dossier_file_name(manifest.contact_id)
            if self.path.name != expected_name:
                self.problems.append(
                    f"file is named {self.path.name!r} but holds contact {manifest.contact_id} "
                    f"(expected {expected_name!r})"
                )
        front = [README_NAME, INDEX_NAME] if manifest.schema == SCHEMA else [README_NAME]
        wanted = [*front, MANIFEST_NAME, *manifest.entries]
        missing = sorted(set(wanted) - set(names))
        unexpected = sorted(set(names) - set(wanted))
        self.problems.extend(f"member {n!r} is missing" for n in missing)
        self.problems.extend(f"unexpected member {n!r}" for n in unexpected)
        if not (missing or unexpected) and [i.filename for i in infos] != wanted:
            self.problems.append(
                f"members are not in the writer's order ({', '.join(front)}, manifest.json, "
                "then the entries as the manifest lists them)"
            )
        done: set[str] = set()
        for info in infos:
            if info.filename in done:
                continue
            done.add(info.filename)
            if info.filename == MANIFEST_NAME:
                continue  # already read in full, which checked its CRC
            if info.filename == README_NAME:
                self._readme(info, manifest, manifest_ok)
            elif info.filename == INDEX_NAME and manifest.index is not None:
                self._entry(info, manifest.index, None)
            elif info.filename in manifest.entries:
                self._entry(info, manifest.entries[info.filename], manifest.contact_id)
            else:
                self._drain(info)
        return manifest

    def _read_text_member(self, info: zipfile.ZipInfo, limit: int) -> bytes | None:
        if info.file_size > limit:
            self.problems.append(f"{info.filename} is too large ({info.file_size} bytes)")
            return None
        try:
            return b"".join(member_chunks(self.stream, info))
        except _ZIP_ERRORS as exc:
            self.problems.append(f"{info.filename} is damaged: {_reason(exc)}")
            return None

    def _manifest(self, names: Counter[str]) -> CheckedManifest:
        """The checked manifest; an unreadable one is reported once, not once per field."""
        if MANIFEST_NAME not in names:
            return NO_MANIFEST  # reported with the other missing members
        data = self._read_text_member(self.archive.getinfo(MANIFEST_NAME), _MAX_MANIFEST)
        if data is None:
            return NO_MANIFEST
        try:
            parsed = orjson.loads(data)
        except orjson.JSONDecodeError:
            self.problems.append("manifest.json is not valid JSON")
            return NO_MANIFEST
        return check_manifest(parsed, self.problems)

    def _readme(self, info: zipfile.ZipInfo, manifest: CheckedManifest, manifest_ok: bool) -> None:
        if manifest.readme is not None:  # v2: hashed in the manifest like any entry
            self._entry(info, manifest.readme, None)
        data = self._read_text_member(info, _MAX_TEXT_MEMBER)
        if data is None:
            return
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            self.problems.append("README.txt is not UTF-8 text")
            return
        if manifest.contact_id is not None and manifest.contact_id not in text:
            self.problems.append("README.txt does not name the contact of the manifest")
        elif (
            # v1 did not hash its README; it is a function of the manifest, so rebuild it.
            manifest.schema == format_v1.SCHEMA
            and manifest_ok
            and text != format_v1.readme_text(manifest.raw)
        ):
            self.problems.append("README.txt is not the one its manifest produces (changed)")

    def _drain(self, info: zipfile.ZipInfo) -> None:
        """Read a member to its end so that a damaged one is reported too.

        Only a small one: the member is already reported as unexpected, and a large one may be
        a zip bomb (deflate turns 1 MiB into 1 GiB of zeros), gigabytes inflated for nothing.
        """
        if info.file_size > _MAX_TEXT_MEMBER:
            return
        try:
            for _ in member_chunks(self.stream, info):
                pass
        except _ZIP_ERRORS as exc:
            self.problems.append(f"{info.filename} is damaged: {_reason(exc)}")

    def _entry(self, info: zipfile.ZipInfo, entry: ExpectedEntry, contact_id: str | None) -> None:
        name = info.filename
        sha = hashlib.sha256()
        size = 0
        lines: _ArrayLines | _JsonLines | None = None
        if entry.layout == "array":
            lines = _ArrayLines(contact_id)
        elif entry.layout == "lines":
            lines = _JsonLines()
        pending = b""
        try:
            for chunk in member_chunks(self.stream, info):
                sha.update(chunk)
                size += len(chunk)
                if size > entry.bytes:
                    # Already more than the manifest says: not inflated to its end, because a
                    # size far beyond the manifest's is how a zip bomb looks. The reading would
                    # stop at the central directory's size, so that is the size it holds.
                    size = info.file_size
                    break
                if lines is None or lines.error is not None:
                    continue  # keep hashing; the layout is already reported
                parts = (pending + chunk).split(b"\n")
                pending = parts.pop()
                for part in parts:
                    lines.feed(part)
                    if lines.error is not None:
                        break  # the first broken line is the one to name
                if len(pending) > _MAX_LINE:
                    lines.error = f"a line longer than {_MAX_LINE} bytes"
        except _ZIP_ERRORS as exc:
            self.problems.append(f"{name} is damaged: {_reason(exc)}")
            return
        if size != entry.bytes:
            self.problems.append(f"{name} has {size} bytes, the manifest says {entry.bytes}")
        if sha.hexdigest() != entry.sha256:
            self.problems.append(f"{name} does not match its sha256 in the manifest")
        if isinstance(lines, _ArrayLines):
            if lines.error is None:
                if pending:
                    lines.feed(pending)
                lines.finish()
            self._rows(name, lines, entry, "is not a JSON array of one object per line")
            if lines.error is None and lines.foreign:
                self.problems.append(
                    f"{name} holds {lines.foreign} interaction(s) whose ContactId is missing or "
                    "names another contact"
                )
        elif isinstance(lines, _JsonLines):
            if lines.error is None:
                lines.finish(pending)
            self._rows(name, lines, entry, "is not JSON lines")

    def _rows(
        self, name: str, lines: _ArrayLines | _JsonLines, entry: ExpectedEntry, layout: str
    ) -> None:
        if lines.error is not None:
            self.problems.append(f"{name} {layout}: {lines.error}")
            return
        if lines.count != entry.count:
            what = "interactions" if isinstance(lines, _ArrayLines) else "rows"
            self.problems.append(
                f"{name} holds {lines.count} {what}, the manifest says {entry.count}"
            )
        if lines.non_objects:
            self.problems.append(f"{name} holds {lines.non_objects} value(s) that are not objects")


def _names_as_written(archive: zipfile.ZipFile) -> None:
    """Give each member the name its central directory record holds, as Python 3.11 does.

    From Python 3.12 zipfile takes a member's name from its Info-ZIP Unicode Path extra field
    (0x7075) when it has one: the member named ``records/contact.json`` in the central directory
    would be checked as the field's other name (and reported missing, unexpected and with a NUL
    byte), and the same dossier would get other problems on each Python. The writer never
    writes that field; ``zip_layout`` names it as the problem, on every Python.
    """
    renamed = False
    for info in archive.infolist():
        # ZipInfo's own reading of a raw name (cut at a NUL, "/" for os.sep), nothing more.
        name = zipfile.ZipInfo(info.orig_filename).filename
        if info.filename != name:
            info.filename = name
            renamed = True
    if renamed:  # getinfo() looks names up here; the last of a repeated name wins, as in zipfile
        archive.NameToInfo = {info.filename: info for info in archive.infolist()}


def verify_dossier(
    path: Path, expected_sha256: str | None = None, *, decryptor: Decryptor | None = None
) -> VerifyResult:
    """Check one dossier file; never raises for a bad file (that is what ``problems`` says).

    With ``expected_sha256`` the whole file's sha256 must be that too (and is returned).
    An encrypted dossier (``<id>.zip.age``) is decrypted with ``decryptor`` and the zip inside
    is checked (``expected_sha256`` is then the encrypted file's); without a decryptor it is
    ``locked``: not ok, and not known to be bad either.
    """
    path = Path(path)
    if is_encrypted_name(path.name):
        return _verify_encrypted(path, expected_sha256, decryptor)
    problems: list[str] = []
    digest: str | None = None
    try:
        # One open file for the hash and the check: what is hashed is what is checked.
        with _open_file(path, follow=False) as stream:
            if expected_sha256 is not None:
                digest = _sha256_of(stream)
                if digest != expected_sha256.lower():
                    problems.append("the file's sha256 is not the expected one (it was changed)")
            archive = zipfile.ZipFile(stream)
            with archive:
                _names_as_written(archive)
                problems.extend(layout_problems(stream, archive.infolist(), archive.start_dir))
                checker = _Checker(archive, stream, path)
                manifest = checker.run()
    except _NotAFile as exc:
        return VerifyResult(path, False, None, None, (str(exc),))
    except _ZIP_ERRORS as exc:
        problems.append(f"not a readable zip file: {_reason(exc)}")
        return VerifyResult(path, False, None, None, tuple(problems), sha256=digest)
    problems.extend(checker.problems)
    return VerifyResult(
        path,
        not problems,
        manifest.contact_id,
        manifest.total_interactions,
        tuple(problems),
        manifest.source,
        manifest.interaction_types,
        manifest.schema,
        manifest.question,
        digest,
        total_rows=manifest.total_rows,
        # (A v1 dossier has neither count: only interactions.)
        files=None
        if manifest.total_rows is None
        else sum(entry.count is None for entry in manifest.entries.values()),
    )


def _verify_encrypted(
    path: Path, expected_sha256: str | None, decryptor: Decryptor | None
) -> VerifyResult:
    problems: list[str] = []
    digest: str | None = None
    try:
        with _open_file(path, follow=False) as stream:
            if expected_sha256 is not None:
                digest = _sha256_of(stream)
    except _NotAFile as exc:
        return _encrypted_failure(path, str(exc), None)
    except OSError as exc:
        return _encrypted_failure(path, f"cannot be read: {exc.strerror or exc}", None)
    if expected_sha256 is not None and digest != expected_sha256.lower():
        problems.append("the file's sha256 is not the expected one (it was changed)")
    if decryptor is None:
        return VerifyResult(
            path,
            False,
            None,
            None,
            (*problems, LOCKED),
            sha256=digest,
            encrypted=True,
            locked=not problems,  # a changed file is invalid, whatever is inside
        )
    # A private folder (mkdtemp: 0700) holds the plaintext under the dossier's own name, which
    # the check compares with the contact; it is removed however the check ends.
    with tempfile.TemporaryDirectory(prefix="sar-bulk-verify-") as scratch:
        inner = Path(scratch) / path.name.removesuffix(ENCRYPTED_SUFFIX)
        try:
            decryptor.decrypt_to(path, inner)
        except DossierError as exc:
            return _encrypted_failure(path, str(exc), digest, problems)
        except OSError as exc:
            reason = f"cannot be read or decrypted: {exc.strerror or exc}"
            return _encrypted_failure(path, reason, digest, problems)
        result = verify_dossier(inner)
    problems.extend(result.problems)
    return dataclasses.replace(
        result,
        path=path,
        ok=not problems,
        problems=tuple(problems),
        sha256=digest,
        encrypted=True,
    )


def _encrypted_failure(
    path: Path, problem: str, digest: str | None, earlier: Sequence[str] = ()
) -> VerifyResult:
    problems = (*earlier, problem)
    return VerifyResult(path, False, None, None, problems, sha256=digest, encrypted=True)


def iter_dossiers(paths: Sequence[Path]) -> Iterator[Path]:
    """The files to verify: each file as given, and the ``*.zip`` directly inside each folder.

    Leftovers of interrupted writes (``.sar-bulk-partial-*``) are not dossiers and are skipped.
    """
    for path in paths:
        if path.is_dir():
            yield from sorted(
                child
                for child in path.iterdir()
                if (child.name.endswith(".zip") or is_encrypted_name(child.name))
                and not child.name.startswith(PARTIAL_PREFIX)
                and child.is_file()
            )
        else:
            yield path


def result_json(where: str, result: VerifyResult) -> dict[str, Any]:
    """One dossier's verdict in ``verify --json`` (a file's or a blob's)."""
    return {
        "path": where,
        "ok": result.ok,
        "contact_id": result.contact_id,
        "total_interactions": result.total_interactions,
        "total_rows": result.total_rows,
        "files": result.files,
        "problems": list(result.problems),
    } | ({"encrypted": True, "checked": not result.locked} if result.encrypted else {})


def _report(out: TextIO, as_json: bool, results: list[VerifyResult], error: str | None) -> None:
    valid = sum(r.ok for r in results)
    locked = sum(r.locked for r in results)
    invalid = len(results) - valid - locked
    if as_json:
        document = {
            "ok": error is None and valid == len(results),
            "error": error,
            "checked": len(results) - locked,
            "valid": valid,
            "invalid": invalid,
            # Only where encrypted dossiers were given: the plain document keeps its shape.
            **({"locked": locked} if any(r.encrypted for r in results) else {}),
            "dossiers": [result_json(str(r.path), r) for r in results],
        }
        out.write(orjson.dumps(document, option=orjson.OPT_INDENT_2).decode() + "\n")
    elif error is not None:
        out.write(f"error: {error}\n")
    else:
        not_checked = f", {locked} encrypted and not checked ({LOCKED_ADVICE})" if locked else ""
        out.write(
            f"verified {len(results)} dossier(s): {valid} valid, {invalid} invalid{not_checked}\n"
        )


def result_line(where: str, result: VerifyResult) -> str:
    """One dossier's verdict as ``verify`` prints it (a file's or a blob's)."""
    if result.ok:
        return f"ok       {where}  contact {result.contact_id}, {result.contents}\n"
    if result.locked:
        return f"LOCKED   {where}: {LOCKED}\n"
    return f"INVALID  {where}: {'; '.join(result.problems)}\n"


def run_verify_command(
    paths: Sequence[str], *, as_json: bool, out: TextIO, decryptor: Decryptor | None = None
) -> int:
    """``sar-bulk verify PATH...``: exit 0 when all are valid, 1 when any is not, 2 on misuse.

    Misuse is: no path, a path that does not exist, or a folder without a single dossier.
    """
    if not paths:
        _report(out, as_json, [], "give at least one dossier (.zip) or folder of dossiers")
        return EXIT_USAGE
    targets: list[Path] = []
    seen: set[Path] = set()
    for text in paths:
        path = Path(text)
        if not path.exists():
            _report(out, as_json, [], f"{text}: no such file or folder")
            return EXIT_USAGE
        found = list(iter_dossiers([path]))
        if path.is_dir() and not found:
            _report(out, as_json, [], f"{text}: folder holds no dossiers (*.zip, *.zip.age)")
            return EXIT_USAGE
        for found_path in found:
            if found_path not in seen:
                seen.add(found_path)
                targets.append(found_path)
    results: list[VerifyResult] = []
    for target in targets:
        result = verify_dossier(target, decryptor=decryptor)
        results.append(result)
        if not as_json:
            out.write(result_line(str(result.path), result))
    _report(out, as_json, results, None)
    return EXIT_VALID if all(r.ok for r in results) else EXIT_INVALID
