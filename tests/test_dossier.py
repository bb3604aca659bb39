"""The dossier writer: streaming spool, zip layout, atomic rename, determinism, safety."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import random
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import textwrap
import tracemalloc
import zipfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sar_bulk.dossier import spool as dossier
from sar_bulk.dossier.format import PARTIAL_PREFIX
from sar_bulk.dossier.format import interactions_entry as entry_name
from sar_bulk.dossier.verify import verify_dossier
from sar_bulk.dossier.writer import (
    DossierRequest,
    DossierWriter,
    HeldMemory,
    Question,
    dossier_path,
    remove_leftovers,
)
from sar_bulk.errors import DossierError
from sar_bulk.sources.base import Part
from sar_bulk.sources.interaction_types import ALL_TYPES, InteractionType

CONTACT = "0f8fad5b-d9cb-469f-a165-70867728950e"
OTHER = "11111111-2222-3333-4444-555555555555"
ORG = "https://contoso.crm4.dynamics.com"
T = InteractionType


@pytest.fixture
def spool_on_disk(monkeypatch: pytest.MonkeyPatch) -> None:
    """Send every non-empty page to the spool folder, as a contact past the memory bound."""
    monkeypatch.setattr(dossier, "MEMORY_SPOOL_BYTES", 0)


def _assert_unzip_accepts(path: Path) -> None:
    """Info-ZIP is the reference reader; skipped only where it is not installed."""
    if shutil.which("unzip") is not None:
        result = subprocess.run(["unzip", "-t", str(path)], capture_output=True, check=False)
        assert result.returncode == 0, result.stdout


def _at(second: int = 9) -> datetime:
    return datetime(2024, 5, 6, 7, 8, second, tzinfo=UTC)


def _interaction(kind: InteractionType, seq: int, contact: str = CONTACT) -> dict[str, Any]:
    return {
        "InteractionId": f"{seq:032X}",
        "InteractionType": kind.value,
        "Timestamp": f"2024-03-{seq % 28 + 1:02d}T12:00:{seq % 60:02d}Z",
        "ContactId": contact,
        "EmailAddressUsed": "jane.doe@example.com",
        "Seq": seq,
    }


def _request(*types: InteractionType, **kwargs: Any) -> DossierRequest:
    return DossierRequest.for_interactions(CONTACT, types or ALL_TYPES, ORG, **kwargs)


def _entry(path: Path, kind: InteractionType) -> list[dict[str, Any]]:
    with zipfile.ZipFile(path) as archive:
        items = orjson.loads(archive.read(entry_name(kind)))
    assert isinstance(items, list)
    return items


def _parts(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """The parts of the interactions source, in manifest order."""
    (interactions,) = [s for s in manifest["sources"] if s["source"] == "interactions"]
    parts: list[dict[str, Any]] = interactions["parts"]
    return parts


def _manifest(path: Path) -> dict[str, Any]:
    with zipfile.ZipFile(path) as archive:
        manifest = orjson.loads(archive.read("manifest.json"))
    assert isinstance(manifest, dict)
    return manifest


async def _write(
    out: Path, pages: dict[InteractionType, list[list[dict[str, Any]]]], second: int = 9
) -> Path:
    async with DossierWriter(out, _request(*pages), now=lambda: _at(second)) as writer:
        for kind, kind_pages in pages.items():
            for page in kind_pages:
                await writer.add_page(kind, page)
        summary = await writer.complete()
    return summary.path


async def test_interleaved_pages_of_all_40_types_land_in_their_entries_in_server_order(
    tmp_path: Path,
) -> None:
    rng = random.Random(7)
    expected: dict[InteractionType, list[dict[str, Any]]] = {}
    queues: dict[InteractionType, list[list[dict[str, Any]]]] = {}
    seq = 0
    for number, kind in enumerate(ALL_TYPES):
        pages: list[list[dict[str, Any]]] = []
        for _ in range(number % 4 + 1):  # 1..4 pages; types with number % 5 == 0 are empty
            size = 0 if number % 5 == 0 else rng.randint(0, 30)
            pages.append([_interaction(kind, seq + i) for i in range(size)])
            seq += size
        queues[kind] = pages
        expected[kind] = [item for page in pages for item in page]
    writer = DossierWriter(tmp_path, _request(), now=_at)
    while queues:
        # One round: the next page of a random subset of types, all at once, like the engine.
        kinds = rng.sample(sorted(queues), k=min(len(queues), rng.randint(1, 12)))
        await asyncio.gather(*(writer.add_page(k, queues[k].pop(0)) for k in kinds))
        for kind in kinds:
            if not queues[kind]:
                del queues[kind]
    summary = await writer.complete()

    assert summary.path == tmp_path / f"{CONTACT}.zip"
    assert summary.total_interactions == seq
    manifest = _manifest(summary.path)
    rows = _parts(manifest)
    assert [row["part"] for row in rows] == [t.value for t in ALL_TYPES]
    with zipfile.ZipFile(summary.path) as archive:
        names = archive.namelist()
    for number, (kind, row) in enumerate(zip(ALL_TYPES, rows, strict=True)):
        assert row["pages"] == number % 4 + 1
        assert row["rows"] == len(expected[kind]) == summary.counts[f"interactions/{kind}"]
        if expected[kind]:
            assert _entry(summary.path, kind) == expected[kind]
            assert [e["name"] for e in row["entries"]] == [entry_name(kind)]
        else:
            assert entry_name(kind) not in names
            assert row["entries"] == []
    assert verify_dossier(summary.path).ok


async def test_layout_member_order_and_fixed_member_metadata(tmp_path: Path) -> None:
    pages: dict[InteractionType, list[list[dict[str, Any]]]] = {
        T.WebsiteVisited: [[_interaction(T.WebsiteVisited, 1)]],
        T.EmailSent: [[_interaction(T.EmailSent, 2)], [_interaction(T.EmailSent, 3)]],
        T.EmailOpened: [[]],
    }
    path = await _write(tmp_path, pages)
    with zipfile.ZipFile(path) as archive:
        infos = archive.infolist()
        assert archive.testzip() is None
        readme = archive.read("README.txt").decode("utf-8")
    assert [i.filename for i in infos] == [
        "README.txt",
        "index.html",
        "manifest.json",
        "interactions/EmailSent.json",
        "interactions/WebsiteVisited.json",
    ]
    for info in infos:
        assert info.compress_type == zipfile.ZIP_DEFLATED
        assert info.date_time == (1980, 1, 1, 0, 0, 0)
        assert info.external_attr >> 16 == 0o600
    manifest = _manifest(path)
    assert manifest["schema"] == "sar-bulk/dossier/v3"
    assert manifest["contact_id"] == CONTACT
    assert manifest["generated_at"] == "2024-05-06T07:08:09Z"
    assert manifest["tool"]["name"] == "sar-bulk"
    assert manifest["question"] == {
        "org_url": ORG,
        "sources": ["interactions"],
        "interaction_types": ["EmailOpened", "EmailSent", "WebsiteVisited"],  # canonical
        "date_from": None,
        "date_to": None,
        "custom_tables": [],
        "excluded_tables": [],
    }
    readme_bytes = readme.encode("utf-8")
    assert manifest["readme"] == {
        "name": "README.txt",
        "sha256": hashlib.sha256(readme_bytes).hexdigest(),
        "bytes": len(readme_bytes),
    }
    with zipfile.ZipFile(path) as archive:
        index = archive.read("index.html")
    assert manifest["index"] == {
        "name": "index.html",
        "sha256": hashlib.sha256(index).hexdigest(),
        "bytes": len(index),
    }
    # README.txt is the person's answer: a subset question says what was not searched.
    assert "Sources not searched" in readme
    assert "Records in the customer database" in readme
    assert "Kinds not searched" in readme
    assert manifest["total_interactions"] == 3
    assert CONTACT in readme
    assert "Searched, nothing found  Email opened" in readme  # asked, none held
    assert "all records, however old" in readme  # no date range
    assert "has not yet provided its statement" in readme  # none was given
    _assert_unzip_accepts(path)


async def test_entry_is_one_compact_object_per_line(tmp_path: Path) -> None:
    items = [_interaction(T.EmailSent, n) for n in range(3)]
    path = await _write(tmp_path, {T.EmailSent: [items[:2], [], items[2:]]})
    with zipfile.ZipFile(path) as archive:
        data = archive.read("interactions/EmailSent.json")
    assert data == b"[\n" + b",\n".join(orjson.dumps(i) for i in items) + b"\n]\n"
    manifest = _manifest(path)
    (entry,) = _parts(manifest)[0]["entries"]
    assert entry["bytes"] == len(data)
    assert entry["pages"] == 3
    assert entry["sha256"] == hashlib.sha256(data).hexdigest()


async def test_dates_are_recorded_as_sent_and_readable_in_the_readme(tmp_path: Path) -> None:
    request = _request(T.EmailSent, date_from="01-31-2024", date_to="12-01-2024")
    async with DossierWriter(tmp_path, request, now=_at) as writer:
        await writer.add_page(T.EmailSent, [])
        summary = await writer.complete()
    manifest = _manifest(summary.path)
    assert manifest["question"]["date_from"] == "01-31-2024"
    assert manifest["question"]["date_to"] == "12-01-2024"
    with zipfile.ZipFile(summary.path) as archive:
        readme = archive.read("README.txt").decode()
    assert "from 31 January 2024 to 1 December 2024" in readme


async def test_non_ascii_content_round_trips_exactly(tmp_path: Path) -> None:
    texts = [
        "Zoë Ødegård-Łukasiewicz",
        "日本語のメール",
        "مرحبا",
        "emoji 😀👍🏽 and a ZWJ 👩‍👩‍👧",
        'line\nbreak\ttab\x00nul \u2028 \u2029 "quoted" back\\slash',
        "\ufeffBOM-led",
    ]
    items = [
        {**_interaction(T.FormSubmitted, n), "Field": text, text: [text, {"nested": text}]}
        for n, text in enumerate(texts)
    ]
    path = await _write(tmp_path, {T.FormSubmitted: [items]})
    assert _entry(path, T.FormSubmitted) == items
    assert verify_dossier(path).ok


async def test_contact_id_in_any_case_or_braces_is_accepted(tmp_path: Path) -> None:
    items = [
        _interaction(T.EmailSent, 1, contact=CONTACT.upper()),
        _interaction(T.EmailSent, 2, contact="{" + CONTACT + "}"),
    ]
    path = await _write(tmp_path, {T.EmailSent: [items]})
    assert _entry(path, T.EmailSent) == items
    assert verify_dossier(path).ok


async def test_an_interaction_of_another_contact_is_refused(tmp_path: Path) -> None:
    async with DossierWriter(tmp_path, _request(T.EmailSent)) as writer:
        with pytest.raises(DossierError, match="another contact") as caught:
            await writer.add_page(T.EmailSent, [_interaction(T.EmailSent, 1, contact=OTHER)])
        assert OTHER not in str(caught.value)
        with pytest.raises(DossierError, match="broken"):
            await writer.complete()
    assert os.listdir(tmp_path) == []


async def test_an_interaction_without_contact_id_or_not_an_object_is_refused(
    tmp_path: Path,
) -> None:
    async with DossierWriter(tmp_path, _request(T.EmailSent)) as writer:
        with pytest.raises(DossierError, match="ContactId"):
            await writer.add_page(T.EmailSent, [{"InteractionId": "x"}])
    async with DossierWriter(tmp_path, _request(T.EmailSent)) as writer:
        with pytest.raises(DossierError, match="not a JSON object"):
            await writer.add_page(T.EmailSent, ["text"])  # type: ignore[list-item]
    assert os.listdir(tmp_path) == []


async def test_complete_refuses_a_requested_type_without_any_page(tmp_path: Path) -> None:
    async with DossierWriter(tmp_path, _request(T.EmailSent, T.EmailOpened)) as writer:
        await writer.add_page(T.EmailSent, [_interaction(T.EmailSent, 1)])
        with pytest.raises(DossierError, match="no data came for interactions/EmailOpened"):
            await writer.complete()
    assert os.listdir(tmp_path) == []


async def test_a_page_of_a_type_not_requested_is_refused_and_complete_fails(
    tmp_path: Path,
) -> None:
    async with DossierWriter(tmp_path, _request(T.EmailSent)) as writer:
        await writer.add_page(T.EmailSent, [])
        with pytest.raises(DossierError, match="not requested"):
            await writer.add_page(T.EmailOpened, [])
        with pytest.raises(DossierError, match="EmailOpened"):
            await writer.complete()
    assert not dossier_path(tmp_path, CONTACT).exists()


@pytest.mark.parametrize("contact", ["../../etc/passwd", CONTACT.upper(), "{" + CONTACT + "}", ""])
def test_only_a_canonical_contact_id_reaches_a_path(tmp_path: Path, contact: str) -> None:
    with pytest.raises(DossierError, match="canonical"):
        DossierRequest.for_interactions(contact, (T.EmailSent,), ORG)
    with pytest.raises(DossierError, match="canonical"):
        dossier_path(tmp_path, contact)


@pytest.mark.parametrize(
    ("types", "kwargs", "match"),
    [
        ((), {}, "at least one"),
        ((T.EmailSent, T.EmailSent), {}, "twice"),
        (("EmailSent",), {}, "InteractionType"),
        ((T.EmailSent,), {"date_from": "2024-01-31"}, "MM-DD-YYYY"),
    ],
)
def test_a_malformed_request_is_refused(
    types: tuple[Any, ...], kwargs: dict[str, str], match: str
) -> None:
    with pytest.raises(DossierError, match=match):
        DossierRequest.for_interactions(CONTACT, types, ORG, **kwargs)


async def test_writing_twice_gives_identical_entries_and_zips_that_differ_only_in_time(
    tmp_path: Path,
) -> None:
    pages = {
        kind: [[_interaction(kind, n + 100 * i) for n in range(40)] for i in range(3)]
        for kind in (T.EmailSent, T.EmailClicked, T.WebsiteVisited)
    }
    first = await _write(tmp_path / "a", pages, second=1)
    second = await _write(tmp_path / "b", pages, second=2)
    same_time = await _write(tmp_path / "c", pages, second=1)
    assert first.read_bytes() == same_time.read_bytes()

    with zipfile.ZipFile(first) as one, zipfile.ZipFile(second) as two:
        assert one.namelist() == two.namelist()
        for a, b in zip(one.infolist(), two.infolist(), strict=True):
            if a.filename.startswith("interactions/"):
                assert (a.CRC, a.compress_size, a.file_size) == (
                    b.CRC,
                    b.compress_size,
                    b.file_size,
                )
                assert _raw_member(first, a) == _raw_member(second, b)
        one_readme = one.read("README.txt")
        readme_diff = [
            (x, y)
            for x, y in zip(
                one.read("README.txt").decode().splitlines(),
                two.read("README.txt").decode().splitlines(),
                strict=True,
            )
            if x != y
        ]
    # The answer says when it was prepared to the minute: two seconds apart, the same text.
    assert readme_diff == []
    manifests = [_manifest(first), _manifest(second)]
    assert [m.pop("generated_at") for m in manifests] == [
        "2024-05-06T07:08:01Z",
        "2024-05-06T07:08:02Z",
    ]
    assert manifests[0]["readme"]["bytes"] == len(one_readme)
    assert manifests[0] == manifests[1]


def _raw_member(path: Path, info: zipfile.ZipInfo) -> bytes:
    """The member's local header and compressed bytes, exactly as stored in the file."""
    with path.open("rb") as handle:
        handle.seek(info.header_offset)
        header = handle.read(30)
        name_len = int.from_bytes(header[26:28], "little")
        extra_len = int.from_bytes(header[28:30], "little")
        return header + handle.read(name_len + extra_len + info.compress_size)


@pytest.fixture
def no_umask() -> Iterator[None]:
    # With umask 0 only the writer's explicit modes keep the files private.
    previous = os.umask(0)
    try:
        yield
    finally:
        os.umask(previous)


@pytest.mark.usefixtures("no_umask")
@pytest.mark.usefixtures("spool_on_disk")
async def test_files_are_0600_and_created_folders_0700(tmp_path: Path) -> None:
    out = tmp_path / "new" / "out"
    async with DossierWriter(out, _request(T.EmailSent, T.EmailOpened), now=_at) as writer:
        await writer.add_page(T.EmailSent, [_interaction(T.EmailSent, 1)])
        (spool,) = out.iterdir()
        assert spool.name.startswith(PARTIAL_PREFIX)
        assert stat.S_IMODE(spool.stat().st_mode) == 0o700
        (spool_file,) = spool.iterdir()
        assert stat.S_IMODE(spool_file.stat().st_mode) == 0o600
        await writer.add_page(T.EmailOpened, [])
        summary = await writer.complete()
    assert stat.S_IMODE(summary.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(out.stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "new").stat().st_mode) == 0o700
    assert os.listdir(out) == [summary.path.name]  # spool gone
    assert summary.zip_bytes == summary.path.stat().st_size


async def test_an_existing_output_folder_keeps_its_mode(tmp_path: Path) -> None:
    os.chmod(tmp_path, 0o740)
    await _write(tmp_path, {T.EmailSent: [[]]})
    assert stat.S_IMODE(os.stat(tmp_path).st_mode) == 0o740


async def test_a_small_contact_needs_no_spool(tmp_path: Path) -> None:
    writer = DossierWriter(tmp_path / "out", _request(T.EmailSent, T.EmailOpened))
    await writer.add_page(T.EmailSent, [])
    await writer.add_page(T.EmailOpened, [])
    assert not (tmp_path / "out").exists()  # nothing on disk before complete()
    summary = await writer.complete()
    assert summary.total_interactions == 0
    assert verify_dossier(summary.path).ok


async def test_an_output_folder_removed_before_assembly_is_made_again(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    writer = DossierWriter(out, _request(T.EmailSent))
    await writer.add_page(T.EmailSent, [_interaction(T.EmailSent, 1)])
    out.rmdir()  # gone between the first page and assembly (the folder is not checked first)
    summary = await writer.complete()
    assert verify_dossier(summary.path).ok
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o700
    assert os.listdir(out) == [summary.path.name]


async def test_an_output_folder_that_became_a_file_fails_assembly_by_name(
    tmp_path: Path,
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    writer = DossierWriter(out, _request(T.EmailSent))
    await writer.add_page(T.EmailSent, [_interaction(T.EmailSent, 1)])
    out.rmdir()
    out.write_text("not a folder\n")
    with pytest.raises(DossierError, match="exists but is not a folder"):
        await writer.complete()
    await writer.abort()
    assert out.read_text() == "not a folder\n"
    assert os.listdir(tmp_path) == ["out"]


async def test_a_rewrite_replaces_the_previous_dossier(tmp_path: Path) -> None:
    await _write(tmp_path, {T.EmailSent: [[_interaction(T.EmailSent, 1)]]})
    path = await _write(tmp_path, {T.EmailSent: [[_interaction(T.EmailSent, 2)]] * 2})
    assert [item["Seq"] for item in _entry(path, T.EmailSent)] == [2, 2]
    assert os.listdir(tmp_path) == [path.name]


@pytest.mark.usefixtures("spool_on_disk")
async def test_failure_mid_assembly_leaves_no_dossier_and_abort_cleans_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def failing_copy(source: IO[bytes], target: IO[bytes]) -> None:
        target.write(source.read(1000))
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(dossier, "_copy_entry", failing_copy)
    async with DossierWriter(tmp_path, _request(T.EmailSent), now=_at) as writer:
        await writer.add_page(T.EmailSent, [_interaction(T.EmailSent, n) for n in range(100)])
        with pytest.raises(DossierError, match="No space left"):
            await writer.complete()
        assert not dossier_path(tmp_path, CONTACT).exists()
        assert all(name.startswith(PARTIAL_PREFIX) for name in os.listdir(tmp_path))
        with pytest.raises(DossierError, match="broken"):
            await writer.add_page(T.EmailSent, [])
    assert os.listdir(tmp_path) == []


@pytest.mark.usefixtures("spool_on_disk")
async def test_a_spool_changed_on_disk_is_caught_before_the_rename(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def corrupting_copy(source: IO[bytes], target: IO[bytes]) -> None:
        target.write(source.read().replace(b'"Seq":1', b'"Seq":2', 1))  # same size

    monkeypatch.setattr(dossier, "_copy_entry", corrupting_copy)
    async with DossierWriter(tmp_path, _request(T.EmailSent), now=_at) as writer:
        await writer.add_page(T.EmailSent, [_interaction(T.EmailSent, n) for n in range(3)])
        with pytest.raises(DossierError, match="changed on disk"):
            await writer.complete()
    assert os.listdir(tmp_path) == []


@pytest.mark.usefixtures("spool_on_disk")
async def test_leaving_the_block_with_an_error_discards_the_spool(tmp_path: Path) -> None:
    writer = DossierWriter(tmp_path, _request(T.EmailSent))

    async def give_up() -> None:
        async with writer:
            await writer.add_page(T.EmailSent, [_interaction(T.EmailSent, 1)])
            assert os.listdir(tmp_path)
            raise RuntimeError("engine gave up")

    with pytest.raises(RuntimeError, match="engine gave up"):
        await give_up()
    assert os.listdir(tmp_path) == []
    await writer.abort()  # idempotent


@pytest.mark.usefixtures("spool_on_disk")
async def test_a_cancelled_page_breaks_the_writer_and_abort_waits_for_the_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading

    entered, release, finished = threading.Event(), threading.Event(), threading.Event()
    real_append = dossier.Spool._append

    def slow_append(self: Any, spool: Any, chunks: Any) -> None:
        # Runs in the writer's worker thread (the page spills to disk): the loop stays free.
        entered.set()
        release.wait(10)
        real_append(self, spool, chunks)
        finished.set()

    monkeypatch.setattr(dossier.Spool, "_append", slow_append)
    writer = DossierWriter(tmp_path, _request(T.EmailSent))
    task = asyncio.create_task(writer.add_page(T.EmailSent, [_interaction(T.EmailSent, 1)]))
    await asyncio.to_thread(entered.wait, 10)
    assert entered.is_set()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not finished.is_set()  # the cancel came while the thread was still writing
    with pytest.raises(DossierError, match="broken"):
        await writer.complete()
    release.set()  # the thread now writes its page; abort must wait for it, then delete
    await writer.abort()
    assert finished.is_set()
    assert os.listdir(tmp_path) == []


KILL_MID_ASSEMBLY = textwrap.dedent(
    """
    import asyncio, os, signal, sys
    from pathlib import Path
    from sar_bulk.dossier import spool as dossier
    from sar_bulk.dossier import writer
    from sar_bulk.sources.interaction_types import InteractionType as T

    def copy_then_die(source, target):
        target.write(source.read(5000))
        target.flush()
        os.kill(os.getpid(), signal.SIGKILL)

    dossier._copy_entry = copy_then_die
    dossier.MEMORY_SPOOL_BYTES = 0  # the subprocess spools to disk, as a big contact does
    contact = sys.argv[2]

    async def main():
        request = writer.DossierRequest.for_interactions(
            contact, (T.EmailSent,), "https://org.example"
        )
        dossier_writer = writer.DossierWriter(Path(sys.argv[1]), request)
        page = [{"ContactId": contact, "Seq": n, "Pad": "x" * 100} for n in range(500)]
        await dossier_writer.add_page(T.EmailSent, page)
        await dossier_writer.complete()

    asyncio.run(main())
    """
)


def test_a_killed_writer_leaves_only_leftovers_the_next_run_removes(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("not ours")
    result = subprocess.run(
        [sys.executable, "-c", KILL_MID_ASSEMBLY, str(out), CONTACT],
        capture_output=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == -signal.SIGKILL, result.stderr
    assert not dossier_path(out, CONTACT).exists()
    leftovers = sorted(p.name for p in out.iterdir() if p.name != "keep.txt")
    assert len(leftovers) == 2  # the spool folder and the unfinished zip
    assert all(name.startswith(PARTIAL_PREFIX) for name in leftovers)

    assert remove_leftovers(out) == 2
    assert os.listdir(out) == ["keep.txt"]
    assert remove_leftovers(out) == 0
    assert remove_leftovers(tmp_path / "missing") == 0


async def test_large_entries_switch_to_zip64(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Same code path as a 4 GiB entry, with the limit lowered instead of the data raised.
    monkeypatch.setattr(zipfile, "ZIP64_LIMIT", 2000)
    items = [_interaction(T.EmailSent, n) for n in range(200)]
    path = await _write(tmp_path, {T.EmailSent: [items[:100], items[100:]]})
    monkeypatch.undo()
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo("interactions/EmailSent.json")
        assert info.file_size > 2000
        assert info.extra[:2] == b"\x01\x00"  # the ZIP64 extra field
        assert archive.testzip() is None
    assert _entry(path, T.EmailSent) == items
    # ZIP64 extra fields, 24-byte data descriptors and the ZIP64 end records pass the strict check.
    assert verify_dossier(path).problems == ()
    _assert_unzip_accepts(path)


def _page_stream(total: int, page_size: int) -> Iterator[tuple[InteractionType, list[Any]]]:
    """Pages made on demand, so that the test itself holds only one page."""
    kinds = (T.EmailSent, T.EmailDelivered, T.EmailOpened, T.WebsiteVisited)
    for start in range(0, total, page_size):
        kind = kinds[(start // page_size) % len(kinds)]
        yield kind, [_interaction(kind, n) for n in range(start, min(total, start + page_size))]


@pytest.mark.slow
async def test_memory_is_bounded_by_a_page_not_by_the_contact(tmp_path: Path) -> None:
    total, page_size = 200_000, 500
    request = _request(T.EmailSent, T.EmailDelivered, T.EmailOpened, T.WebsiteVisited)
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        async with DossierWriter(tmp_path, request, now=_at) as writer:
            for kind, page in _page_stream(total, page_size):
                await writer.add_page(kind, page)
            summary = await writer.complete()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    data_bytes = sum(e["bytes"] for row in _parts(_manifest(summary.path)) for e in row["entries"])
    assert summary.total_interactions == total
    assert data_bytes > 40_000_000  # the contact is far bigger than the bound below
    assert peak < 16_000_000, f"peak {peak} bytes for {data_bytes} bytes of interactions"


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)
interactions = st.builds(
    lambda extra: {**extra, "ContactId": CONTACT},
    st.dictionaries(st.text(), json_values, max_size=6),
)


@pytest.mark.slow
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    pages=st.dictionaries(
        st.sampled_from(ALL_TYPES),
        st.lists(st.lists(interactions, max_size=5), min_size=1, max_size=3),
        min_size=1,
        max_size=4,
    )
)
def test_arbitrary_json_objects_round_trip_through_the_zip(
    pages: dict[InteractionType, list[list[dict[str, Any]]]],
) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = asyncio.run(_write(Path(folder), pages))
        manifest = _manifest(path)
        for kind, kind_pages in pages.items():
            expected = [item for page in kind_pages for item in page]
            if expected:
                assert _entry(path, kind) == expected
            row = next(r for r in _parts(manifest) if r["part"] == kind)
            assert (row["rows"], row["pages"]) == (len(expected), len(kind_pages))
        assert verify_dossier(path).ok


async def test_integers_beyond_64_bits_are_written_exactly(tmp_path: Path) -> None:
    contact = "5b7e3f7b-1d3a-4f5b-9c1e-2a3b4c5d6e7f"
    item = {"ContactId": contact, "Big": 123456789012345678901234567890, "Text": "Zürich"}
    request = DossierRequest.for_interactions(
        contact, (InteractionType.EmailSent,), "https://x.crm.dynamics.com"
    )
    async with DossierWriter(tmp_path, request) as writer:
        await writer.add_page(InteractionType.EmailSent, [item])
        summary = await writer.complete()
    with zipfile.ZipFile(summary.path) as archive:
        entry = archive.read("interactions/EmailSent.json")
    assert b"123456789012345678901234567890" in entry
    assert json.loads(entry) == [item]


async def test_a_small_contact_never_touches_the_disk_before_assembly(tmp_path: Path) -> None:
    request = DossierRequest.for_interactions(CONTACT, ALL_TYPES, "https://x.crm.dynamics.com")
    async with DossierWriter(tmp_path, request) as writer:
        for itype in ALL_TYPES:
            await writer.add_page(itype, [_interaction(itype, 1)])
        assert os.listdir(tmp_path) == []
        summary = await writer.complete()
    assert summary.total_interactions == len(ALL_TYPES)
    assert os.listdir(tmp_path) == [f"{CONTACT}.zip"]
    assert verify_dossier(summary.path).ok


async def test_pages_past_the_memory_bound_spill_to_disk_in_order(tmp_path: Path) -> None:
    types = (T.EmailSent, T.EmailOpened)
    request = DossierRequest.for_interactions(CONTACT, types, "https://x.crm.dynamics.com")
    sent: dict[InteractionType, list[dict[str, Any]]] = {t: [] for t in types}
    async with DossierWriter(tmp_path, request) as writer:
        for page in range(40):  # about 40 x 2 x 20 x 200 bytes: well past the bound
            for itype in types:
                items = [_interaction(itype, page * 20 + n) for n in range(20)]
                for item in items:
                    item["Pad"] = "é" * 150
                sent[itype].extend(items)
                await writer.add_page(itype, items)
        spools = [n for n in os.listdir(tmp_path) if n.startswith(PARTIAL_PREFIX)]
        assert len(spools) == 1
        summary = await writer.complete()
    with zipfile.ZipFile(summary.path) as archive:
        for itype in types:
            assert orjson.loads(archive.read(entry_name(itype))) == sent[itype]
    assert verify_dossier(summary.path).ok
    assert not [n for n in os.listdir(tmp_path) if n.startswith(PARTIAL_PREFIX)]


async def test_past_the_run_wide_bound_contacts_spool_to_disk(tmp_path: Path) -> None:
    """Contacts waiting on exports keep their data: the run bounds it, not only each contact."""
    memory = HeldMemory(limit=6_000)
    first_out, second_out = tmp_path / "a", tmp_path / "b"
    page = [_interaction(T.EmailSent, n) for n in range(20)]  # about 4 KB, under both bounds
    first = DossierWriter(first_out, _request(T.EmailSent), memory=memory)
    second = DossierWriter(second_out, _request(T.EmailSent), memory=memory)
    async with first, second:
        await first.add_page(T.EmailSent, page)
        held = memory.used
        assert 0 < held <= 6_000
        assert not first_out.exists() or not os.listdir(first_out)  # in memory, no folder
        await second.add_page(T.EmailSent, page)  # would pass the run's bound: to disk
        assert memory.used == held
        assert [n for n in os.listdir(second_out) if n.startswith(PARTIAL_PREFIX)]
        done = [await first.complete(), await second.complete()]
    assert memory.used == 0  # given back when assembled
    for summary in done:
        assert _entry(summary.path, T.EmailSent) == page
        assert verify_dossier(summary.path).ok
    third = DossierWriter(tmp_path / "c", _request(T.EmailSent), memory=memory)
    async with third:
        await third.add_page(T.EmailSent, page)
        assert memory.used == held
        await third.abort()
    assert memory.used == 0  # and when discarded


# --- Parts: records (JSON lines) and realtime (verbatim files) next to interactions ---

RECORDS = Part("records", "records")
REALTIME = Part("realtime", "realtime")
ALL_SOURCES = ("interactions", "records", "realtime")


def _parts_request(
    *types: InteractionType, sources: tuple[str, ...] = ALL_SOURCES
) -> DossierRequest:
    parts = [Part("interactions", t.value) for t in types]
    parts += [Part(s, s) for s in sources if s != "interactions"]
    question = Question(ORG, sources, tuple(t.value for t in types))
    return DossierRequest(CONTACT, tuple(parts), question)


async def test_records_rows_are_json_lines_with_fragment_numbers_written_verbatim(
    tmp_path: Path,
) -> None:
    rows = [
        {"contactid": CONTACT, "revenue": orjson.Fragment(b"1234.5000"), "name": "Zoë"},
        {"contactid": CONTACT, "big": orjson.Fragment(b"123456789012345678901234567890")},
    ]
    async with DossierWriter(tmp_path, _parts_request(T.EmailSent), now=_at) as writer:
        await writer.add_page(T.EmailSent, [_interaction(T.EmailSent, 1)])
        records = writer.sink(RECORDS)
        await records.add_rows("records/contact.json", rows[:1])
        await records.add_rows("records/contact.json", [])
        await records.add_rows("records/contact.json", rows[1:])
        records.note("tables_absent", ["msdynmkt_consent"])
        records.note("a_first", 1)
        writer.sink(REALTIME)  # fetched, found nothing
        summary = await writer.complete()
    with zipfile.ZipFile(summary.path) as archive:
        data = archive.read("records/contact.json")
        names = archive.namelist()
        readme = archive.read("README.txt").decode()
    assert (
        data
        == (
            f'{{"contactid":"{CONTACT}","revenue":1234.5000,"name":"Zoë"}}\n'
            f'{{"contactid":"{CONTACT}","big":123456789012345678901234567890}}\n'
        ).encode()
    )
    assert names == [
        "README.txt",
        "index.html",
        "manifest.json",
        entry_name(T.EmailSent),
        "records/contact.json",
    ]
    manifest = _manifest(summary.path)
    (records_group,) = [s for s in manifest["sources"] if s["source"] == "records"]
    (part,) = records_group["parts"]
    assert part["notes"] == {"a_first": 1, "tables_absent": ["msdynmkt_consent"]}
    assert list(part["notes"]) == ["a_first", "tables_absent"]  # sorted: deterministic
    assert (part["pages"], part["rows"], part["status"]) == (3, 2, "complete")
    assert part["entries"] == [
        {
            "name": "records/contact.json",
            "kind": "rows",
            "sha256": hashlib.sha256(data).hexdigest(),
            "bytes": len(data),
            "rows": 2,
            "pages": 3,
        }
    ]
    (realtime_group,) = [s for s in manifest["sources"] if s["source"] == "realtime"]
    assert realtime_group["parts"][0]["entries"] == []
    assert "Real-time export files" in readme
    assert "Real-time journeys export" in readme
    assert "Dear Sir or Madam," in readme  # the record has no fullname, the request no name
    assert (summary.total_interactions, summary.total_rows) == (1, 3)
    assert summary.counts == {"interactions/EmailSent": 1, "records": 2, "realtime": 0}
    assert verify_dossier(summary.path, expected_sha256=summary.sha256).ok


async def test_a_realtime_file_is_streamed_verbatim_with_bounded_memory(tmp_path: Path) -> None:
    rng = random.Random(3)
    chunk = bytes(rng.getrandbits(8) for _ in range(1 << 16))  # incompressible
    chunks, sha = 384, hashlib.sha256()  # 24 MiB in 64 KiB chunks
    tracemalloc.start()
    try:
        async with DossierWriter(tmp_path, _parts_request(sources=("realtime",))) as writer:
            sink = writer.sink(REALTIME)
            for n in range(chunks):
                piece = bytes([n % 256]) + chunk[1:]
                sha.update(piece)
                await sink.add_file("realtime/jane@example.com.json", piece)
            summary = await writer.complete()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8_000_000, f"peak {peak} bytes for a 24 MiB file"
    with zipfile.ZipFile(summary.path) as archive:
        with archive.open("realtime/jane@example.com.json") as member:
            got = hashlib.sha256()
            while block := member.read(1 << 20):
                got.update(block)
        infos = archive.infolist()
    assert got.hexdigest() == sha.hexdigest()
    assert all(info.flag_bits & 0x08 for info in infos)  # streamed: data descriptors
    assert summary.sha256 == hashlib.sha256(summary.path.read_bytes()).hexdigest()
    assert summary.zip_bytes == summary.path.stat().st_size
    assert verify_dossier(summary.path).ok


async def test_short_writes_of_the_zip_are_written_on_and_hashed_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The zip goes to its descriptor with os.write, which may write less than it was given
    # (a signal, a nearly full disk); what is left must follow, and the hash cover each byte once.
    real_write = os.write
    sizes: list[int] = []

    def short_write(fd: int, data: Any) -> int:
        sizes.append(len(data))
        return real_write(fd, bytes(data[:1000]))

    big = [_interaction(T.EmailSent, n) | {"Body": os.urandom(300).hex()} for n in range(400)]
    async with DossierWriter(tmp_path, _request(T.EmailSent, T.EmailOpened), now=_at) as writer:
        await writer.add_page(T.EmailSent, big)
        await writer.add_page(T.EmailOpened, [_interaction(T.EmailOpened, 1)])
        monkeypatch.setattr(os, "write", short_write)
        summary = await writer.complete()
        monkeypatch.undo()
    assert len(sizes) > 100  # the writes were cut short, many times
    assert summary.sha256 == hashlib.sha256(summary.path.read_bytes()).hexdigest()
    assert summary.zip_bytes == summary.path.stat().st_size
    assert verify_dossier(summary.path, expected_sha256=summary.sha256).ok
    assert _entry(summary.path, T.EmailSent) == big
    _assert_unzip_accepts(summary.path)


async def test_parts_and_entries_land_in_a_fixed_order_whatever_the_arrival_order(
    tmp_path: Path,
) -> None:
    async def write(folder: Path, reverse: bool) -> bytes:
        request = _parts_request(T.EmailSent, T.WebsiteVisited)
        steps: list[tuple[Part, str, Any]] = [
            (
                Part("interactions", "WebsiteVisited"),
                entry_name(T.WebsiteVisited),
                [_interaction(T.WebsiteVisited, 1)],
            ),
            (
                Part("interactions", "EmailSent"),
                entry_name(T.EmailSent),
                [_interaction(T.EmailSent, 2)],
            ),
            (RECORDS, "records/lead.json", [{"leadid": 1}]),
            (RECORDS, "records/contact.json", [{"contactid": CONTACT}]),
            (REALTIME, "realtime/b.json", b"b"),
            (REALTIME, "realtime/a.json", b"a"),
        ]
        async with DossierWriter(folder, request, now=_at) as writer:
            for part, entry, data in reversed(steps) if reverse else steps:
                sink = writer.sink(part)
                if isinstance(data, bytes):
                    await sink.add_file(entry, data)
                else:
                    await sink.add_rows(entry, data)
            summary = await writer.complete()
        return summary.path.read_bytes()

    first = await write(tmp_path / "a", reverse=False)
    assert first == await write(tmp_path / "b", reverse=True)
    with zipfile.ZipFile(tmp_path / "a" / f"{CONTACT}.zip") as archive:
        assert archive.namelist() == [
            "README.txt",
            "index.html",
            "manifest.json",
            "interactions/EmailSent.json",
            "interactions/WebsiteVisited.json",
            "records/contact.json",
            "records/lead.json",
            "realtime/a.json",
            "realtime/b.json",
        ]


async def test_complete_refuses_a_part_that_never_opened_its_sink(tmp_path: Path) -> None:
    async with DossierWriter(tmp_path, _parts_request(T.EmailSent)) as writer:
        await writer.add_page(T.EmailSent, [])
        writer.sink(RECORDS)
        with pytest.raises(DossierError, match="no data came for realtime"):
            await writer.complete()
        with pytest.raises(DossierError, match="not requested"):
            writer.sink(Part("records", "other"))
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize(
    ("parts", "question", "match"),
    [
        ((), Question(ORG, ("records",)), "at least one part"),
        ((RECORDS, RECORDS), Question(ORG, ("records",)), "twice"),
        ((RECORDS,), Question(ORG, ("records", "realtime")), "asks realtime but no part"),
        ((REALTIME,), Question(ORG, ("records",)), "source the question does not ask"),
        ((Part("interactions", "Nope"),), Question(ORG, ("interactions",)), "no interaction"),
        (
            (Part("interactions", "EmailSent"),),
            Question(ORG, ("interactions",), ("EmailSent", "EmailOpened")),
            "not the question's interaction types",
        ),
        ((Part("Bad/Name", "x"),), Question(ORG, ("Bad/Name",)), "not allowed"),
    ],
)
def test_a_malformed_parts_request_is_refused(
    parts: tuple[Part, ...], question: Question, match: str
) -> None:
    with pytest.raises(DossierError, match=match):
        DossierRequest(CONTACT, parts, question)


def test_parts_checked_once_are_still_checked_for_other_parts_and_questions() -> None:
    # The check is skipped only for the very parts and question found valid before.
    parts = (Part("interactions", "EmailSent"), RECORDS)
    question = Question(ORG, ("interactions", "records"), ("EmailSent",))
    DossierRequest(CONTACT, parts, question)
    DossierRequest(CONTACT, parts, question)  # the same pair again: valid, as before
    with pytest.raises(DossierError, match="twice"):
        DossierRequest(CONTACT, (*parts, RECORDS), question)
    with pytest.raises(DossierError, match="asks realtime but no part"):
        DossierRequest(
            CONTACT, parts, Question(ORG, (*question.sources, "realtime"), ("EmailSent",))
        )
    with pytest.raises(DossierError, match="canonical"):
        DossierRequest(CONTACT.upper(), parts, question)  # the contact is checked every time
    # A list of parts is never taken as checked: it could change after the check.
    listed: Any = [Part("interactions", "EmailSent"), RECORDS]
    DossierRequest(CONTACT, listed, question)
    listed.append(RECORDS)
    with pytest.raises(DossierError, match="twice"):
        DossierRequest(CONTACT, listed, question)


async def test_the_readme_names_what_a_subset_question_did_not_search(tmp_path: Path) -> None:
    request = _parts_request(T.EmailSent, sources=("interactions", "records"))
    async with DossierWriter(tmp_path, request, now=_at) as writer:
        await writer.add_page(T.EmailSent, [])
        writer.sink(RECORDS)
        summary = await writer.complete()
    with zipfile.ZipFile(summary.path) as archive:
        readme = archive.read("README.txt").decode()
    searched = readme[readme.index("What we searched") :].split("\r\n\r\n")[1]
    assert "Sources not searched     Real-time journeys" in searched
    not_searched = " ".join(searched[searched.index("Kinds not searched") :].split())
    assert "Email opened" in not_searched
    assert "Website visited" in not_searched
    assert "Email sent" not in not_searched
    assert "Marketing interactions" in searched
    assert "Records in the customer database" in searched


@pytest.mark.slow
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    pages=st.lists(
        st.lists(st.dictionaries(st.text(), json_values, max_size=6), max_size=5),
        min_size=1,
        max_size=4,
    ),
    export=st.lists(st.binary(max_size=300), max_size=4),
)
def test_arbitrary_records_rows_and_file_chunks_round_trip(
    pages: list[list[dict[str, Any]]], export: list[bytes]
) -> None:
    async def write(folder: Path) -> Path:
        async with DossierWriter(folder, _parts_request(sources=("records", "realtime"))) as writer:
            records, realtime = writer.sink(RECORDS), writer.sink(REALTIME)
            for page in pages:
                await records.add_rows("records/table.json", page)
            for chunk in export:
                await realtime.add_file("realtime/export.json", chunk)
            return (await writer.complete()).path

    with tempfile.TemporaryDirectory() as folder:
        path = asyncio.run(write(Path(folder)))
        rows = [row for page in pages for row in page]
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            if rows:
                lines = archive.read("records/table.json").splitlines()
                assert [orjson.loads(line) for line in lines] == rows
            else:
                assert "records/table.json" not in names
            if export:
                assert archive.read("realtime/export.json") == b"".join(export)
            else:
                assert "realtime/export.json" not in names
        assert verify_dossier(path).problems == ()
