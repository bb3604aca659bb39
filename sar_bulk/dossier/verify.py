"""Check that a dossier is complete and unchanged, and the ``verify`` command around it.

Anyone who receives a dossier (the data subject, an auditor, the organisation before sending it)
can run ``sar-bulk verify`` to learn whether it is exactly what sar-bulk wrote. Checked:

- the zip opens and every member's CRC holds (each member is read to its end, which is what
  ``ZipFile.testzip`` does, in the same single pass that hashes the entries);
- ``manifest.json`` follows ``sar-bulk/dossier/v1``: required fields and their types, types in
  canonical order without repeats, ``path``/``sha256`` null exactly when ``count`` is 0, totals
  that add up;
- every listed entry exists with the stated sha256, size and count, is a JSON array of objects,
  and every object's ``ContactId`` (any case, braces ignored) is the manifest's contact;
- there are no other members, no member twice, and the file is named after the contact.

Memory stays bounded however big an entry is: entries are read in 256 KiB chunks and, because v1
puts one interaction per line, parsed one line at a time. An entry laid out differently is
reported as a problem rather than loaded whole.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
import tempfile
import zipfile
import zlib
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Final, TextIO, TypeGuard

import orjson

from sar_bulk.dossier.encryption import ENCRYPTED_SUFFIX, Decryptor, is_encrypted_name
from sar_bulk.dossier.format import (
    ACTION,
    MANIFEST_NAME,
    PARTIAL_PREFIX,
    README_NAME,
    SCHEMA,
    contact_matches,
    dossier_file_name,
    entry_name,
)
from sar_bulk.errors import DossierError
from sar_bulk.guids import is_canonical_guid
from sar_bulk.sources.interaction_types import ALL_TYPES, InteractionType

__all__ = ["VerifyResult", "iter_dossiers", "run_verify_command", "verify_dossier"]

EXIT_VALID: Final = 0
EXIT_INVALID: Final = 1
EXIT_USAGE: Final = 2

_CHUNK: Final = 256 << 10
LOCKED_ADVICE: Final = "give --identity FILE, or --passphrase-env NAME"
LOCKED: Final = f"encrypted, not checked: {LOCKED_ADVICE}"
_MAX_TEXT_MEMBER: Final = 4 << 20  # README and manifest are a few kB; more is not a dossier
_MAX_LINE: Final = 16 << 20  # one interaction is a few kB; a longer line is not v1 layout
# What a damaged or hostile zip can raise while it is read.
_ZIP_ERRORS: Final = (
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
    zlib.error,
    EOFError,
    OSError,
    NotImplementedError,
    RuntimeError,
    ValueError,
)
_TOP_FIELDS: Final = (
    "schema",
    "contact_id",
    "generated_at",
    "tool",
    "source",
    "interactions",
    "total_interactions",
)
_SOURCE_FIELDS: Final = ("org_url", "action", "date_from", "date_to")
_ENTRY_FIELDS: Final = ("interaction_type", "count", "pages", "path", "sha256", "bytes")
_GENERATED_AT: Final = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")
_WIRE_DATE: Final = re.compile(r"^\d{2}-\d{2}-\d{4}$")
_SHA256: Final = re.compile(r"^[0-9a-f]{64}$")
_CANONICAL_INDEX: Final = {t.value: i for i, t in enumerate(ALL_TYPES)}


@dataclass(frozen=True, slots=True)
class VerifyResult:
    """The verdict on one file; ``problems`` is empty exactly when ``ok``."""

    path: Path
    ok: bool
    contact_id: str | None
    total_interactions: int | None
    problems: tuple[str, ...]
    # What the dossier answers (from its manifest), so a caller can compare without re-reading.
    source: Mapping[str, Any] | None = None
    interaction_types: tuple[str, ...] = ()
    encrypted: bool = False  # a .zip.age file: the verdict is on the zip inside it
    locked: bool = False  # encrypted and not checked: no identity or passphrase was given


@dataclass(frozen=True, slots=True)
class _Entry:
    """What the manifest promises about one interaction entry."""

    interaction_type: str
    count: int
    sha256: str
    bytes: int


@dataclass(frozen=True, slots=True)
class _Manifest:
    contact_id: str | None
    total_interactions: int | None
    entries: dict[str, _Entry]  # by member name
    source: Mapping[str, Any] | None = None
    interaction_types: tuple[str, ...] = ()


_NO_MANIFEST: Final = _Manifest(None, None, {})


def _is_count(value: object, minimum: int = 0) -> TypeGuard[int]:
    return type(value) is int and value >= minimum  # bool is an int subclass: not a count


def _reason(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


class _ManifestCheck:
    """Schema checks of manifest.json; appends one problem per broken rule."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems

    def _fields(self, where: str, value: object, fields: tuple[str, ...]) -> dict[str, Any] | None:
        if not isinstance(value, dict):
            self.problems.append(f"manifest: {where} is not an object")
            return None
        missing = [f for f in fields if f not in value]
        extra = sorted(str(f) for f in value if f not in fields)
        if missing:
            self.problems.append(f"manifest: {where} lacks {', '.join(missing)}")
        if extra:
            self.problems.append(f"manifest: {where} has unexpected field(s) {', '.join(extra)}")
        return value

    def run(self, manifest: object) -> _Manifest:
        top = self._fields("the top level", manifest, _TOP_FIELDS)
        if top is None:
            return _Manifest(None, None, {})
        if top.get("schema") != SCHEMA:
            self.problems.append(f"manifest: schema is not {SCHEMA!r}")
        contact_id = top.get("contact_id")
        if not isinstance(contact_id, str) or not is_canonical_guid(contact_id):
            self.problems.append("manifest: contact_id is not a lower-case canonical GUID")
            contact_id = None
        self._generated_at(top.get("generated_at"))
        tool = self._fields("tool", top.get("tool"), ("name", "version"))
        if tool is not None and not all(isinstance(tool.get(k), str) for k in ("name", "version")):
            self.problems.append("manifest: tool name and version must be strings")
        source = self._source(top.get("source"))
        listed = top.get("interactions")
        entries, counted = self._interactions(listed)
        total = top.get("total_interactions")
        if not _is_count(total):
            self.problems.append("manifest: total_interactions is not a whole number >= 0")
            total = None
        elif counted is not None and total != counted:
            self.problems.append(
                f"manifest: total_interactions is {total} but the counts add up to {counted}"
            )
        types = tuple(
            row["interaction_type"]
            for row in (listed if isinstance(listed, list) else [])
            if isinstance(row, dict) and isinstance(row.get("interaction_type"), str)
        )
        return _Manifest(contact_id, total, entries, source, types)

    def _generated_at(self, value: object) -> None:
        try:
            ok = isinstance(value, str) and bool(_GENERATED_AT.match(value))
            if ok:
                datetime.strptime(str(value), "%Y-%m-%dT%H:%M:%SZ")
        except ValueError:
            ok = False
        if not ok:
            self.problems.append(
                "manifest: generated_at is not a UTC time like 2024-01-31T12:00:00Z"
            )

    def _source(self, value: object) -> dict[str, Any] | None:
        source = self._fields("source", value, _SOURCE_FIELDS)
        if source is None:
            return None
        if not isinstance(source.get("org_url"), str):
            self.problems.append("manifest: source.org_url is not a string")
        if source.get("action") != ACTION:
            self.problems.append(f"manifest: source.action is not {ACTION!r}")
        for name in ("date_from", "date_to"):
            date = source.get(name)
            if date is not None and not (isinstance(date, str) and _WIRE_DATE.match(date)):
                self.problems.append(f"manifest: source.{name} is neither null nor MM-DD-YYYY")
        return source

    def _interactions(self, value: object) -> tuple[dict[str, _Entry], int | None]:
        """Entries by member name, and the sum of the counts (None if any count is broken)."""
        if not isinstance(value, list) or not value:
            self.problems.append("manifest: interactions is not a non-empty list")
            return {}, None
        entries: dict[str, _Entry] = {}
        total: int | None = 0
        last = -1
        for number, raw in enumerate(value):
            row = self._fields(f"interactions[{number}]", raw, _ENTRY_FIELDS)
            if row is None:
                total = None
                continue
            name = row.get("interaction_type")
            where = f"interactions[{number}] ({name})"
            index = _CANONICAL_INDEX.get(name) if isinstance(name, str) else None
            if index is None:
                self.problems.append(f"manifest: interactions[{number}] names no interaction type")
            elif index <= last:
                self.problems.append(f"manifest: {where} is repeated or out of canonical order")
            else:
                last = index
            count = row.get("count")
            if not _is_count(count):
                self.problems.append(f"manifest: {where} count is not a whole number >= 0")
                total = None
            elif total is not None:
                total += count
            if not _is_count(row.get("pages"), 1):
                self.problems.append(f"manifest: {where} pages is not a whole number >= 1")
            if index is not None and _is_count(count):
                entry = self._entry(where, ALL_TYPES[index], count, row)
                if entry is not None:
                    entries[entry_name(ALL_TYPES[index])] = entry
        return entries, total

    def _entry(
        self, where: str, kind: InteractionType, count: int, row: dict[str, Any]
    ) -> _Entry | None:
        path, sha, size = row.get("path"), row.get("sha256"), row.get("bytes")
        if count == 0:
            if path is not None or sha is not None or size != 0:
                self.problems.append(
                    f"manifest: {where} has count 0, so path and sha256 must be null and bytes 0"
                )
            return None
        broken = False
        if path != entry_name(kind):
            self.problems.append(f"manifest: {where} path must be {entry_name(kind)!r}")
            broken = True
        if not isinstance(sha, str) or not _SHA256.match(sha):
            self.problems.append(f"manifest: {where} sha256 is not 64 lower-case hex digits")
            broken = True
        if not _is_count(size, 1):
            self.problems.append(f"manifest: {where} bytes is not a whole number >= 1")
            broken = True
        if broken:
            return None
        assert isinstance(sha, str)
        assert isinstance(size, int)
        return _Entry(kind.value, count, sha, size)


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
            item = orjson.loads(line[:-1] if self.more else line)
        except orjson.JSONDecodeError:
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


class _Checker:
    """One pass over one open zip, collecting problems."""

    def __init__(self, archive: zipfile.ZipFile, path: Path) -> None:
        self.archive = archive
        self.path = path
        self.problems: list[str] = []

    def run(self) -> _Manifest:
        infos = self.archive.infolist()
        names = Counter(info.filename for info in infos)
        for name, seen in names.items():
            if seen > 1:
                self.problems.append(f"member {name!r} appears {seen} times")
        manifest = self._manifest(names)
        if manifest.contact_id is not None:
            expected_name = dossier_file_name(manifest.contact_id)
            if self.path.name != expected_name:
                self.problems.append(
                    f"file is named {self.path.name!r} but holds contact {manifest.contact_id} "
                    f"(expected {expected_name!r})"
                )
        wanted = {README_NAME, MANIFEST_NAME, *manifest.entries}
        self.problems.extend(f"member {n!r} is missing" for n in sorted(wanted - set(names)))
        self.problems.extend(f"unexpected member {n!r}" for n in sorted(set(names) - wanted))
        done: set[str] = set()
        for info in infos:
            if info.filename in done:
                continue
            done.add(info.filename)
            if info.filename == MANIFEST_NAME:
                continue  # already read in full, which checked its CRC
            if info.filename == README_NAME:
                self._readme(info, manifest.contact_id)
            elif info.filename in manifest.entries:
                self._entry(info, manifest.entries[info.filename], manifest.contact_id)
            else:
                self._drain(info)
        return manifest

    def _read_text_member(self, info: zipfile.ZipInfo) -> bytes | None:
        if info.file_size > _MAX_TEXT_MEMBER:
            self.problems.append(f"{info.filename} is too large ({info.file_size} bytes)")
            return None
        try:
            return self.archive.read(info)
        except _ZIP_ERRORS as exc:
            self.problems.append(f"{info.filename} is damaged: {_reason(exc)}")
            return None

    def _manifest(self, names: Counter[str]) -> _Manifest:
        """The checked manifest; an unreadable one is reported once, not once per field."""
        if MANIFEST_NAME not in names:
            return _NO_MANIFEST  # reported with the other missing members
        data = self._read_text_member(self.archive.getinfo(MANIFEST_NAME))
        if data is None:
            return _NO_MANIFEST
        try:
            parsed = orjson.loads(data)
        except orjson.JSONDecodeError:
            self.problems.append("manifest.json is not valid JSON")
            return _NO_MANIFEST
        return _ManifestCheck(self.problems).run(parsed)

    def _readme(self, info: zipfile.ZipInfo, contact_id: str | None) -> None:
        data = self._read_text_member(info)
        if data is None:
            return
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            self.problems.append("README.txt is not UTF-8 text")
            return
        if contact_id is not None and contact_id not in text:
            self.problems.append("README.txt does not name the contact of the manifest")

    def _drain(self, info: zipfile.ZipInfo) -> None:
        """Read a member to its end so that a damaged one is reported too."""
        try:
            with self.archive.open(info) as member:
                while member.read(_CHUNK):
                    pass
        except _ZIP_ERRORS as exc:
            self.problems.append(f"{info.filename} is damaged: {_reason(exc)}")

    def _entry(self, info: zipfile.ZipInfo, entry: _Entry, contact_id: str | None) -> None:
        name = info.filename
        sha = hashlib.sha256()
        size = 0
        lines = _ArrayLines(contact_id)
        pending = b""
        try:
            with self.archive.open(info) as member:
                while chunk := member.read(_CHUNK):
                    sha.update(chunk)
                    size += len(chunk)
                    if lines.error is not None:
                        continue  # keep hashing; the layout is already reported
                    parts = (pending + chunk).split(b"\n")
                    pending = parts.pop()
                    for part in parts:
                        lines.feed(part)
                    if len(pending) > _MAX_LINE:
                        lines.error = f"a line longer than {_MAX_LINE} bytes"
        except _ZIP_ERRORS as exc:
            self.problems.append(f"{name} is damaged: {_reason(exc)}")
            return
        if lines.error is None:
            if pending:
                lines.feed(pending)
            lines.finish()
        if size != entry.bytes:
            self.problems.append(f"{name} has {size} bytes, the manifest says {entry.bytes}")
        if sha.hexdigest() != entry.sha256:
            self.problems.append(f"{name} does not match its sha256 in the manifest")
        if lines.error is not None:
            self.problems.append(f"{name} is not a v1 JSON array: {lines.error}")
            return
        if lines.count != entry.count:
            self.problems.append(
                f"{name} holds {lines.count} interactions, the manifest says {entry.count}"
            )
        if lines.non_objects:
            self.problems.append(f"{name} holds {lines.non_objects} value(s) that are not objects")
        if lines.foreign:
            self.problems.append(
                f"{name} holds {lines.foreign} interaction(s) whose ContactId is missing or "
                "names another contact"
            )


def verify_dossier(path: Path, *, decryptor: Decryptor | None = None) -> VerifyResult:
    """Check one dossier file; never raises for a bad file (that is what ``problems`` says).

    An encrypted dossier (``<id>.zip.age``) is decrypted with ``decryptor`` and the zip inside
    is checked; without a decryptor it is ``locked``: not ok, and not known to be bad either.
    """
    path = Path(path)
    if is_encrypted_name(path.name):
        return _verify_encrypted(path, decryptor)
    try:
        archive = zipfile.ZipFile(path)
    except _ZIP_ERRORS as exc:
        return VerifyResult(path, False, None, None, (f"not a readable zip file: {_reason(exc)}",))
    with archive:
        checker = _Checker(archive, path)
        manifest = checker.run()
    problems = tuple(checker.problems)
    return VerifyResult(
        path,
        not problems,
        manifest.contact_id,
        manifest.total_interactions,
        problems,
        manifest.source,
        manifest.interaction_types,
    )


def _verify_encrypted(path: Path, decryptor: Decryptor | None) -> VerifyResult:
    if decryptor is None:
        return VerifyResult(path, False, None, None, (LOCKED,), encrypted=True, locked=True)
    # A private folder (mkdtemp: 0700) holds the plaintext under the dossier's own name, which
    # the check compares with the contact; it is removed however the check ends.
    with tempfile.TemporaryDirectory(prefix="sar-bulk-verify-") as scratch:
        inner = Path(scratch) / path.name.removesuffix(ENCRYPTED_SUFFIX)
        try:
            decryptor.decrypt_to(path, inner)
        except DossierError as exc:
            return VerifyResult(path, False, None, None, (str(exc),), encrypted=True)
        except OSError as exc:
            problem = f"cannot be read or decrypted: {exc.strerror or exc}"
            return VerifyResult(path, False, None, None, (problem,), encrypted=True)
        result = verify_dossier(inner)
    return dataclasses.replace(result, path=path, encrypted=True)


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


def _result_json(result: VerifyResult) -> dict[str, Any]:
    return {
        "path": str(result.path),
        "ok": result.ok,
        "contact_id": result.contact_id,
        "total_interactions": result.total_interactions,
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
            "dossiers": [_result_json(r) for r in results],
        }
        out.write(orjson.dumps(document, option=orjson.OPT_INDENT_2).decode() + "\n")
    elif error is not None:
        out.write(f"error: {error}\n")
    else:
        not_checked = f", {locked} encrypted and not checked ({LOCKED_ADVICE})" if locked else ""
        out.write(
            f"verified {len(results)} dossier(s): {valid} valid, {invalid} invalid{not_checked}\n"
        )


def _line(result: VerifyResult) -> str:
    if result.ok:
        return (
            f"ok       {result.path}  contact {result.contact_id}, "
            f"{result.total_interactions} interaction(s)\n"
        )
    if result.locked:
        return f"LOCKED   {result.path}: {LOCKED}\n"
    return f"INVALID  {result.path}: {'; '.join(result.problems)}\n"


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
            out.write(_line(result))
    _report(out, as_json, results, None)
    return EXIT_VALID if all(r.ok for r in results) else EXIT_INVALID
