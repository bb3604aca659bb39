"""The verifier: a good dossier passes, each kind of damage or tampering is named.

Strict: the zip must have exactly the writer's layout, every member matches its hash. Dossiers of
the earlier format v1 still verify (built here by a small v1 writer, ``_v1_dossier``).
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import shutil
import tracemalloc
import zipfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from sar_bulk.dossier import format_v1
from sar_bulk.dossier.format import interactions_entry as entry_name
from sar_bulk.dossier.format import member_info, question_matches
from sar_bulk.dossier.verify import (
    file_sha256,
    iter_dossiers,
    run_verify_command,
    verify_dossier,
)
from sar_bulk.dossier.writer import DossierRequest, DossierWriter, Question
from sar_bulk.sources.base import Part
from sar_bulk.sources.interaction_types import InteractionType

CONTACT = "0f8fad5b-d9cb-469f-a165-70867728950e"
OTHER = "11111111-2222-3333-4444-555555555555"
T = InteractionType
SENT = entry_name(T.EmailSent)
CONTACT_ROWS = "records/contact.json"
EXPORT = "realtime/jane@example.com.json"
TYPES = (T.EmailSent, T.EmailOpened, T.WebsiteVisited)
PARTS = (
    *(Part("interactions", t.value) for t in TYPES),
    Part("records", "records"),
    Part("realtime", "realtime"),
)


def _interaction(kind: InteractionType, seq: int, contact: str = CONTACT) -> dict[str, Any]:
    return {
        "InteractionId": f"{seq:032X}",
        "InteractionType": kind.value,
        "ContactId": contact,
        "Timestamp": "2024-03-01T12:00:00Z",
        "Seq": seq,
    }


async def _dossier(out: Path, contact: str = CONTACT, count: int = 30) -> Path:
    question = Question(
        "https://o", ("interactions", "records", "realtime"), tuple(t.value for t in TYPES)
    )
    request = DossierRequest(contact, PARTS, question)
    now = datetime(2024, 5, 6, tzinfo=UTC)
    async with DossierWriter(out, request, now=lambda: now) as writer:
        for start in range(0, count, 500):
            page = [
                _interaction(T.EmailSent, n, contact) for n in range(start, min(count, start + 500))
            ]
            await writer.add_page(T.EmailSent, page)
        await writer.add_page(T.EmailOpened, [])
        await writer.add_page(T.WebsiteVisited, [_interaction(T.WebsiteVisited, 0, contact)])
        records = writer.sink(Part("records", "records"))
        await records.add_rows(CONTACT_ROWS, [{"contactid": contact, "n": n} for n in range(3)])
        records.note("tables_absent", ["msdynmkt_consent"])
        export = writer.sink(Part("realtime", "realtime"))
        await export.add_file(EXPORT, b'{"verbatim": ')
        await export.add_file(EXPORT, b"true}")
        summary = await writer.complete()
    assert summary.sha256 == file_sha256(summary.path)
    return summary.path


def _v1_dossier(out: Path, contact: str = CONTACT) -> Path:
    """A dossier exactly as sar-bulk wrote format v1 (seekable zip, no README hash)."""
    items = [_interaction(T.EmailSent, n, contact) for n in range(4)]
    data = format_v1.ENTRY_OPEN
    data += format_v1.ENTRY_SEPARATOR.join(orjson.dumps(i) for i in items)
    data += format_v1.ENTRY_CLOSE
    stats = [
        format_v1.EntryStats(T.EmailSent, 4, 1, hashlib.sha256(data).hexdigest(), len(data)),
        format_v1.EntryStats(T.EmailOpened, 0, 1, None, 0),
    ]
    manifest = format_v1.build_manifest(
        contact_id=contact,
        generated_at="2024-05-06T00:00:00Z",
        tool_version="0.1.0",
        org_url="https://o",
        date_from=None,
        date_to="12-31-2024",
        entries=stats,
    )
    manifest_data = format_v1.manifest_bytes(manifest)
    readme = format_v1.readme_text(manifest).encode()
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{contact}.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(member_info("README.txt", len(readme)), readme)
        archive.writestr(member_info("manifest.json", len(manifest_data)), manifest_data)
        archive.writestr(member_info(SENT, len(data)), data)
    return path


@pytest.fixture
async def good(tmp_path: Path) -> Path:
    return await _dossier(tmp_path / "out")


@pytest.fixture
def v1(tmp_path: Path) -> Path:
    return _v1_dossier(tmp_path / "v1")


def _members(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def _rebuild(path: Path, members: dict[str, bytes], target: Path | None = None) -> Path:
    """Write ``members`` as a new zip (at ``target``, or over ``path``)."""
    target = target or path
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(member_info(name, len(data)), data)
    target.write_bytes(buffer.getvalue())
    return target


def _tamper(path: Path, change: Callable[[dict[str, bytes], dict[str, Any]], object]) -> Path:
    """Let ``change`` edit the members and the parsed manifest, then write them back."""
    members = _members(path)
    manifest = orjson.loads(members["manifest.json"])
    change(members, manifest)
    members["manifest.json"] = orjson.dumps(manifest, option=orjson.OPT_INDENT_2)
    return _rebuild(path, members)


def _part(manifest: dict[str, Any], key: str) -> dict[str, Any]:
    parts = [p for group in manifest["sources"] for p in group["parts"]]
    return next(p for p in parts if p["key"] == key)


def _row(manifest: dict[str, Any], kind: InteractionType) -> dict[str, Any]:
    return _part(manifest, f"interactions/{kind.value}")


def _listed(manifest: dict[str, Any], name: str) -> dict[str, Any]:
    entries = [e for g in manifest["sources"] for p in g["parts"] for e in p["entries"]]
    return next(e for e in entries if e["name"] == name)


def _reseal(members: dict[str, bytes], manifest: dict[str, Any], name: str, data: bytes) -> None:
    """Replace an entry and update its sha256 and size: only content checks can catch it."""
    members[name] = data
    row = _listed(manifest, name)
    row["sha256"] = hashlib.sha256(data).hexdigest()
    row["bytes"] = len(data)


def _problems(path: Path) -> str:
    result = verify_dossier(path)
    assert not result.ok
    assert result.problems
    return " | ".join(result.problems)


def test_a_good_dossier_passes(good: Path) -> None:
    result = verify_dossier(good)
    assert result.problems == ()
    assert result.ok
    assert result.contact_id == CONTACT
    assert result.total_interactions == 31
    assert result.path == good
    assert result.schema == "sar-bulk/dossier/v3"
    assert result.source == {"org_url": "https://o", "date_from": None, "date_to": None}
    assert result.interaction_types == ("EmailSent", "EmailOpened", "WebsiteVisited")
    assert result.question is not None
    assert result.question["sources"] == ["interactions", "records", "realtime"]
    assert result.sha256 is None  # only computed when a hash is expected


def test_the_question_of_a_dossier_is_compared_as_sets(good: Path, v1: Path) -> None:
    found = verify_dossier(good).question
    types = ("WebsiteVisited", "EmailOpened", "EmailSent")  # another order, same question
    asked = Question("https://o", ("realtime", "records", "interactions"), types)
    assert question_matches(found, asked)
    assert not question_matches(found, Question("https://o", ("interactions",), types))
    assert not question_matches(found, Question("https://other", asked.sources, types))
    assert not question_matches(found, Question("https://o", asked.sources, types, "01-01-2024"))
    assert not question_matches(found, Question("https://o", asked.sources, types[:2]))
    assert not question_matches(None, asked)
    v1_question = Question("https://o", ("interactions",), ("EmailSent", "EmailOpened"))
    assert not question_matches(verify_dossier(v1).question, v1_question)  # v1 has date_to
    dated = Question(
        "https://o", ("interactions",), ("EmailSent", "EmailOpened"), None, "12-31-2024"
    )
    assert question_matches(verify_dossier(v1).question, dated)


def test_the_whole_file_hash_is_checked_when_given(good: Path) -> None:
    digest = file_sha256(good)
    assert digest == hashlib.sha256(good.read_bytes()).hexdigest()
    result = verify_dossier(good, expected_sha256=digest.upper())
    assert (result.ok, result.sha256) == (True, digest)
    wrong = verify_dossier(good, expected_sha256="0" * 64)
    assert not wrong.ok
    assert wrong.problems == ("the file's sha256 is not the expected one (it was changed)",)


def test_bytes_prepended_to_the_zip_are_caught(good: Path) -> None:
    good.write_bytes(b"#!/bin/sh\necho hi\n" + good.read_bytes())
    assert "bytes before the first member" in _problems(good)


def test_bytes_appended_to_the_zip_are_caught(good: Path) -> None:
    good.write_bytes(good.read_bytes() + b"hidden payload")
    assert "bytes after the end of the zip" in _problems(good)


def test_a_zip_comment_is_caught(good: Path) -> None:
    with zipfile.ZipFile(good, "a") as archive:
        archive.comment = b"hello"
    assert "the zip has a comment" in _problems(good)


def test_an_edited_readme_is_caught(good: Path) -> None:
    members = _members(good)
    members["README.txt"] = members["README.txt"].replace(b"organisation", b"organization")
    _rebuild(good, members)
    assert _problems(good) == "README.txt does not match its sha256 in the manifest"


def test_members_out_of_order_are_caught(good: Path) -> None:
    members = _members(good)
    reordered = {"manifest.json": members.pop("manifest.json"), **members}
    _rebuild(good, reordered)
    assert "members are not in the writer's order" in _problems(good)


def test_a_rebuilt_zip_with_the_same_members_still_verifies(good: Path) -> None:
    _rebuild(good, _members(good))  # another writer's layout (no data descriptors) is fine
    assert verify_dossier(good).ok


def test_a_changed_records_row_or_export_file_is_caught(good: Path) -> None:
    members = _members(good)
    members[CONTACT_ROWS] = members[CONTACT_ROWS].replace(b'"n":1', b'"n":7')
    members[EXPORT] = members[EXPORT].replace(b"true", b"fals")
    _rebuild(good, members)
    problems = _problems(good)
    assert f"{CONTACT_ROWS} does not match its sha256" in problems
    assert f"{EXPORT} does not match its sha256" in problems


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b'{"n":1}\n{"n":2}\n', "holds 2 rows, the manifest says 3"),
        (b'{"n":1}\n{"n":2}\n{"n":3}', "last line does not end with a newline"),
        (b'{"n":1}\n[2]\n{"n":3}\n', "1 value(s) that are not objects"),
        (b'{"n":1}\n{"n":\n2}\n', "line 2 is not one whole JSON value"),
    ],
)
def test_broken_json_lines_are_named(good: Path, data: bytes, expected: str) -> None:
    _tamper(good, lambda members, manifest: _reseal(members, manifest, CONTACT_ROWS, data))
    assert expected in _problems(good)


def test_an_asked_type_or_source_without_its_part_is_caught(good: Path) -> None:
    def change(members: dict[str, bytes], manifest: dict[str, Any]) -> None:
        manifest["question"]["interaction_types"].append("EmailClicked")
        manifest["question"]["sources"].remove("realtime")

    _tamper(good, change)
    problems = _problems(good)
    assert "asked interaction types lack a part: EmailClicked" in problems
    assert "source realtime was not asked" in problems


def test_an_entry_name_a_part_may_not_write_is_caught(good: Path) -> None:
    def change(members: dict[str, bytes], manifest: dict[str, Any]) -> None:
        _listed(manifest, EXPORT)["name"] = "realtime/.."

    _tamper(good, change)
    assert "has a name that is not allowed" in _problems(good)


def test_a_v1_dossier_still_verifies(v1: Path) -> None:
    result = verify_dossier(v1)
    assert result.problems == ()
    assert result.schema == "sar-bulk/dossier/v1"
    assert result.total_interactions == 4
    assert result.source is not None
    assert result.source["date_to"] == "12-31-2024"
    assert result.interaction_types == ("EmailOpened", "EmailSent")  # canonical order
    assert result.question is not None
    assert result.question["sources"] == ["interactions"]


def test_a_v1_dossier_with_an_edited_readme_prepended_or_appended_data_fails(v1: Path) -> None:
    original = v1.read_bytes()
    v1.write_bytes(b"x" * 10 + original)
    assert "bytes before the first member" in _problems(v1)
    v1.write_bytes(original + b"x" * 10)
    assert "bytes after the end of the zip" in _problems(v1)
    v1.write_bytes(original)
    members = _members(v1)
    members["README.txt"] = members["README.txt"].replace(b"Period", b"Periods")
    _rebuild(v1, members)
    assert _problems(v1) == "README.txt is not the one its manifest produces (changed)"


def test_a_flipped_byte_in_the_file_is_caught(good: Path) -> None:
    data = bytearray(good.read_bytes())
    with zipfile.ZipFile(good) as archive:
        info = archive.getinfo(SENT)
    # Somewhere inside the compressed data of the entry, past its local header.
    data[info.header_offset + 30 + len(SENT) + info.compress_size // 2] ^= 0x01
    good.write_bytes(bytes(data))
    assert SENT in _problems(good)


def test_a_changed_entry_with_the_old_manifest_is_caught(good: Path) -> None:
    members = _members(good)
    members[SENT] = members[SENT].replace(b'"Seq":7', b'"Seq":8', 1)
    _rebuild(good, members)
    assert "does not match its sha256" in _problems(good)


def test_a_missing_entry_is_caught(good: Path) -> None:
    members = _members(good)
    del members[SENT]
    _rebuild(good, members)
    assert f"member {SENT!r} is missing" in _problems(good)


def test_a_wrong_count_is_caught(good: Path) -> None:
    def change(members: dict[str, bytes], manifest: dict[str, Any]) -> None:
        _listed(manifest, SENT)["rows"] = 29
        _row(manifest, T.EmailSent)["rows"] = 29
        manifest["total_interactions"] = 30  # consistent totals: only the entry can tell
        manifest["total_rows"] = 33

    _tamper(good, change)
    assert _problems(good) == f"{SENT} holds 30 interactions, the manifest says 29"


def test_totals_that_do_not_add_up_are_caught(good: Path) -> None:
    _tamper(good, lambda members, manifest: manifest.update(total_interactions=5, total_rows=1))
    problems = _problems(good)
    assert "total_interactions is 5 but the interactions add up to 31" in problems
    assert "total_rows is 1 but the rows add up to 34" in problems


def test_an_interaction_of_another_contact_is_caught(good: Path) -> None:
    def change(members: dict[str, bytes], manifest: dict[str, Any]) -> None:
        data = members[SENT].replace(CONTACT.encode(), OTHER.encode(), 1)
        _reseal(members, manifest, SENT, data)

    _tamper(good, change)
    problems = _problems(good)
    assert (
        problems
        == f"{SENT} holds 1 interaction(s) whose ContactId is missing or names another contact"
    )
    assert OTHER not in problems


def test_an_upper_case_or_braced_contact_id_in_an_interaction_is_fine(good: Path) -> None:
    def change(members: dict[str, bytes], manifest: dict[str, Any]) -> None:
        data = members[SENT].replace(CONTACT.encode(), CONTACT.upper().encode(), 1)
        data = data.replace(f'"{CONTACT}"'.encode(), f'"{{{CONTACT}}}"'.encode(), 1)
        _reseal(members, manifest, SENT, data)

    _tamper(good, change)
    assert verify_dossier(good).ok


def test_an_unexpected_member_is_caught(good: Path) -> None:
    members = _members(good)
    members["interactions/Extra.json"] = b"[]"
    _rebuild(good, members)
    assert _problems(good) == "unexpected member 'interactions/Extra.json'"


def test_a_member_twice_is_caught(good: Path) -> None:
    with zipfile.ZipFile(good, "a") as archive, pytest.warns(UserWarning, match="Duplicate"):
        archive.writestr(member_info("README.txt", 3), b"hey")
    assert "member 'README.txt' appears 2 times" in _problems(good)


def test_a_wrong_file_name_is_caught(good: Path) -> None:
    renamed = good.with_name(f"{OTHER}.zip")
    good.rename(renamed)
    assert f"file is named '{OTHER}.zip' but holds contact {CONTACT}" in _problems(renamed)


def test_an_entry_without_rows_is_caught(good: Path) -> None:
    def change(members: dict[str, bytes], manifest: dict[str, Any]) -> None:
        _listed(manifest, SENT)["rows"] = 0

    _tamper(good, change)
    assert "rows, pages and bytes must be whole numbers >= 1" in _problems(good)


def test_an_entry_under_another_name_is_caught(good: Path) -> None:
    def change(members: dict[str, bytes], manifest: dict[str, Any]) -> None:
        _listed(manifest, entry_name(T.WebsiteVisited))["name"] = "interactions/Other.json"

    _tamper(good, change)
    problems = _problems(good)
    assert "writes only rows to interactions/WebsiteVisited.json" in problems
    assert "unexpected member 'interactions/WebsiteVisited.json'" in problems


def test_parts_out_of_order_are_caught(good: Path) -> None:
    _tamper(good, lambda members, manifest: manifest["sources"][0]["parts"].reverse())
    assert "is repeated or out of order" in _problems(good)


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda m: m.update(schema="other/v9"), "schema is not"),
        (lambda m: m.pop("tool"), "lacks tool"),
        (lambda m: m.update(extra=1), "unexpected field(s) extra"),
        (lambda m: m.update(contact_id=CONTACT.upper()), "contact_id is not"),
        (lambda m: m.update(generated_at="yesterday"), "generated_at is not"),
        (lambda m: m["question"].update(org_url=1), "question.org_url"),
        (lambda m: m["question"].update(date_from="2024-01-01"), "question.date_from"),
        (lambda m: m["question"].update(interaction_types=["Nope"]), "distinct interaction"),
        (lambda m: m["readme"].update(sha256="x"), "readme must name README.txt"),
        (lambda m: m["sources"][0]["parts"][0].update(status="failed"), "status is not"),
        (lambda m: m["sources"][0]["parts"][0].update(pages=-1), "pages is not a whole number"),
        (lambda m: m["sources"][0]["parts"][1].update(key="x"), "key must be"),
        (lambda m: m["sources"][2]["parts"][0].update(notes=[]), "notes is not an object"),
        (lambda m: _listed(m, SENT).update(sha256="XYZ"), "sha256 is not 64"),
        (lambda m: _listed(m, EXPORT).update(rows=1), "is a file: rows and pages must be null"),
        (lambda m: m["sources"][0]["parts"][0].update(part="Nope"), "names no interaction"),
        (lambda m: m.update(sources=[]), "sources is not a non-empty list"),
    ],
)
def test_schema_violations_in_the_manifest_are_caught(
    good: Path, edit: Callable[[dict[str, Any]], object], expected: str
) -> None:
    _tamper(good, lambda members, manifest: edit(manifest))
    assert expected in _problems(good)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (None, "member 'manifest.json' is missing"),
        (b"{not json", "manifest.json is not valid JSON"),
        (b"null", "manifest: the top level is not an object"),
    ],
)
def test_a_missing_or_unreadable_manifest_is_one_problem(
    good: Path, data: bytes | None, expected: str
) -> None:
    members = _members(good)
    del members["manifest.json"]
    if data is not None:
        members["manifest.json"] = data
    _rebuild(good, members)
    result = verify_dossier(good)
    # Without a manifest the entries are unexpected too, so the first problem is what matters.
    assert expected in result.problems
    assert (result.ok, result.contact_id, result.total_interactions) == (False, None, None)


def test_an_entry_in_another_json_layout_is_reported_not_loaded(good: Path) -> None:
    def change(members: dict[str, bytes], manifest: dict[str, Any]) -> None:
        items = orjson.loads(members[SENT])
        _reseal(members, manifest, SENT, orjson.dumps(items))  # valid JSON, all on one line

    _tamper(good, change)
    assert f"{SENT} is not a JSON array of one object per line" in _problems(good)


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (b"\n]\n", b",\n]\n", "a comma before the closing ]"),
        (b"\n]\n", b"\n", "does not end with a closing ]"),
        (b"},\n{", b"}\n{", "missing comma"),
        (b"\n]\n", b"\n]\n[\n", "after the closing ]"),
        (b"[\n{", b"[\n[1],\n{", "value(s) that are not objects"),
    ],
)
def test_broken_array_layouts_are_named(good: Path, old: bytes, new: bytes, expected: str) -> None:
    def change(members: dict[str, bytes], manifest: dict[str, Any]) -> None:
        _reseal(members, manifest, SENT, members[SENT].replace(old, new, 1))

    _tamper(good, change)
    assert expected in _problems(good)


def test_a_file_that_is_no_zip_is_reported(tmp_path: Path) -> None:
    path = tmp_path / f"{CONTACT}.zip"
    path.write_bytes(b"PK but not really")
    result = verify_dossier(path)
    assert not result.ok
    assert result.problems[0].startswith("not a readable zip file")
    assert result.contact_id is None


async def test_verifying_a_large_entry_needs_little_memory(tmp_path: Path) -> None:
    path = await _dossier(tmp_path, count=100_000)
    tracemalloc.start()
    try:
        result = await asyncio.to_thread(verify_dossier, path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.ok
    assert result.total_interactions == 100_001
    with zipfile.ZipFile(path) as archive:
        size = archive.getinfo(SENT).file_size
    assert size > 15_000_000
    assert peak < 8_000_000, f"peak {peak} bytes for a {size}-byte entry"


def test_iter_dossiers_takes_files_as_given_and_zips_directly_inside_folders(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "out"
    (folder / "sub").mkdir(parents=True)
    for name in ("b.zip", "a.zip", ".sar-bulk-partial-x.zip", "notes.txt", "sub/c.zip"):
        (folder / name).write_bytes(b"")
    (folder / "d.zip").mkdir()
    loose = tmp_path / "loose.zip"
    assert list(iter_dossiers([folder, loose])) == [folder / "a.zip", folder / "b.zip", loose]


async def test_verify_command_exit_codes_and_text(tmp_path: Path) -> None:
    out = tmp_path / "out"
    first = await _dossier(out)
    await _dossier(out, contact=OTHER)
    (out / ".sar-bulk-partial-leftover.zip").write_bytes(b"junk")

    text = io.StringIO()
    assert run_verify_command([str(out)], as_json=False, out=text) == 0
    lines = text.getvalue().splitlines()
    assert lines[0].startswith("ok ")
    # Rows of every source, the interactions among them, and the export files kept verbatim.
    assert lines[0].endswith(
        f"contact {CONTACT}, 34 row(s), 31 of them interaction(s), 1 export file(s)"
    )
    assert lines[-1] == "verified 2 dossier(s): 2 valid, 0 invalid"

    members = _members(first)
    del members[SENT]
    _rebuild(first, members)
    text = io.StringIO()
    assert run_verify_command([str(out), str(first)], as_json=False, out=text) == 1
    lines = text.getvalue().splitlines()
    assert lines[0].startswith(f"INVALID  {first}: member ")
    assert lines[-1] == "verified 2 dossier(s): 1 valid, 1 invalid"  # given twice, checked once


async def test_verify_says_what_a_dossier_without_interactions_holds(
    tmp_path: Path, v1: Path
) -> None:
    """A dossier of today's cloud org (records and a real-time export, no interactions source)
    is not reported as "0 interaction(s)", which an officer read as an empty dossier."""
    question = Question("https://o", ("records", "realtime"), ())
    parts = (Part("records", "records"), Part("realtime", "realtime"))
    request = DossierRequest(CONTACT, parts, question)
    async with DossierWriter(tmp_path / "out", request) as writer:
        records = writer.sink(Part("records", "records"))
        await records.add_rows(CONTACT_ROWS, [{"contactid": CONTACT, "n": n} for n in range(3)])
        await writer.sink(Part("realtime", "realtime")).add_file(EXPORT, b"{}")
        path = (await writer.complete()).path
    text = io.StringIO()
    assert run_verify_command([str(path), str(v1)], as_json=False, out=text) == 0
    cloud, old = text.getvalue().splitlines()[:2]
    assert cloud.endswith(f"contact {CONTACT}, 3 row(s), 1 export file(s)"), cloud
    assert old.endswith(f"contact {CONTACT}, 4 interaction(s)"), old  # a v1 dossier: as before


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ([], "give at least one"),
        (["missing.zip"], "no such file or folder"),
        (["empty"], "holds no dossiers"),
    ],
)
def test_verify_command_usage_errors_exit_2(tmp_path: Path, args: list[str], expected: str) -> None:
    (tmp_path / "empty").mkdir()  # the working folder is tmp_path
    text = io.StringIO()
    assert run_verify_command(args, as_json=False, out=text) == 2
    assert text.getvalue().startswith("error: ")
    assert expected in text.getvalue()
    text = io.StringIO()
    assert run_verify_command(args, as_json=True, out=text) == 2
    document = orjson.loads(text.getvalue())
    assert expected in document["error"]
    assert (document["ok"], document["checked"], document["dossiers"]) == (False, 0, [])


async def test_verify_command_json_shape(tmp_path: Path) -> None:
    good = await _dossier(tmp_path / "out")
    bad = tmp_path / f"{OTHER}.zip"
    shutil.copy(good, bad)
    text = io.StringIO()
    assert run_verify_command([str(good), str(bad)], as_json=True, out=text) == 1
    document = orjson.loads(text.getvalue())
    assert document == {
        "ok": False,
        "error": None,
        "checked": 2,
        "valid": 1,
        "invalid": 1,
        "dossiers": [
            {
                "path": str(good),
                "ok": True,
                "contact_id": CONTACT,
                "total_interactions": 31,
                "total_rows": 34,
                "files": 1,
                "problems": [],
            },
            {
                "path": str(bad),
                "ok": False,
                "contact_id": CONTACT,
                "total_interactions": 31,
                "total_rows": 34,
                "files": 1,
                "problems": [
                    f"file is named '{OTHER}.zip' but holds contact {CONTACT} "
                    f"(expected '{CONTACT}.zip')"
                ],
            },
        ],
    }
