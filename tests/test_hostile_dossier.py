"""Hostile rows and files at the dossier writer: one bad record fails its part, never the run.

Whatever a row holds (a lone surrogate, nesting deeper than any encoder allows, a value that is
not JSON) or whatever goes wrong while it is encoded (no memory), the writer raises a
``DossierError`` that names the contact and the part and none of the content; the writer is then
broken: ``complete`` is refused, ``abort`` cleans up, and other writers carry on.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from sar_bulk.dossier.verify import verify_dossier
from sar_bulk.dossier.writer import DossierRequest, DossierWriter, Question
from sar_bulk.errors import DossierError
from sar_bulk.sources.base import Part

CONTACT = "0f8fad5b-d9cb-469f-a165-70867728950e"
SECRET = "s3cr3t-content"
RECORDS = Part("records", "records")
SENT = Part("interactions", "EmailSent")
QUESTION = Question("https://o", ("interactions", "records"), ("EmailSent",))


def _request() -> DossierRequest:
    return DossierRequest(CONTACT, (SENT, RECORDS), QUESTION)


def _nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {"leaf": SECRET}
    for _ in range(depth):
        value = {"x": value}
    return value


class _NotJson:
    def __repr__(self) -> str:
        return SECRET


def _hostile_rows() -> dict[str, list[dict[str, Any]]]:
    return {
        "lone surrogate": [{"name": SECRET + "\ud800"}],
        "lone surrogate in a key": [{"\udfff" + SECRET: 1}],
        "deep nesting": [_nested(5000)],
        "not JSON": [{"value": _NotJson()}],
        "a set": [{"value": {SECRET}}],
        "bytes": [{"value": SECRET.encode()}],
        "NaN through the fallback": [{"big": 2**70, "nan": float("nan")}],
    }


@pytest.mark.parametrize("inline", [True, False], ids=["small page", "big page (thread)"])
@pytest.mark.parametrize("kind", sorted(_hostile_rows()))
async def test_a_row_that_cannot_be_written_fails_its_part_and_names_no_content(
    tmp_path: Path, kind: str, inline: bool
) -> None:
    bad = _hostile_rows()[kind]
    # A big page (more than the inline bound) is encoded in the worker thread: same outcome.
    rows = bad if inline else [{"n": n} for n in range(100)] + bad
    async with DossierWriter(tmp_path, _request()) as writer:
        sink = writer.sink(RECORDS)
        await sink.add_rows("records/contact.json", [{"ok": 1}])
        with pytest.raises(DossierError) as caught:
            await sink.add_rows("records/contact.json", rows)
        message = str(caught.value)
        assert "part records of contact " + CONTACT in message
        assert SECRET not in message
        with pytest.raises(DossierError, match="broken"):
            await writer.complete()
        with pytest.raises(DossierError, match="broken"):
            await writer.sink(SENT).add_rows("interactions/EmailSent.json", [])
        await writer.abort()
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("error", [MemoryError, RecursionError, TypeError, ValueError])
async def test_any_failure_while_encoding_becomes_a_dossier_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: type[Exception]
) -> None:
    def failing_dumps(value: Any, *args: Any, **kwargs: Any) -> bytes:
        raise error("boom " + SECRET)

    monkeypatch.setattr(orjson, "dumps", failing_dumps)
    async with DossierWriter(tmp_path, _request()) as writer:
        with pytest.raises(DossierError, match=error.__name__) as caught:
            await writer.sink(SENT).add_rows(
                "interactions/EmailSent.json", [{"ContactId": CONTACT}]
            )
        assert "part interactions/EmailSent of contact" in str(caught.value)
        assert SECRET not in str(caught.value)
        with pytest.raises(DossierError, match="broken"):
            await writer.complete()
    assert os.listdir(tmp_path) == []


async def test_a_note_that_is_not_json_fails_the_part(tmp_path: Path) -> None:
    async with DossierWriter(tmp_path, _request()) as writer:
        with pytest.raises(DossierError, match="note of part records") as caught:
            writer.sink(RECORDS).note("bad", {"x": _NotJson()})  # type: ignore[dict-item]
        assert SECRET not in str(caught.value)
        with pytest.raises(DossierError, match="broken"):
            await writer.complete()


async def test_a_broken_writer_does_not_disturb_another_contact(tmp_path: Path) -> None:
    other = "5b7e3f7b-1d3a-4f5b-9c1e-2a3b4c5d6e7f"
    now: Callable[[], datetime] = lambda: datetime(2024, 1, 1, tzinfo=UTC)  # noqa: E731
    good = DossierWriter(
        tmp_path, DossierRequest(other, (RECORDS,), Question("https://o", ("records",))), now=now
    )
    bad = DossierWriter(tmp_path, _request(), now=now)
    with pytest.raises(DossierError):
        await bad.sink(RECORDS).add_rows("records/contact.json", [{"x": "\ud800"}])
    sink = good.sink(RECORDS)
    await sink.add_rows("records/contact.json", [{"x": orjson.Fragment(b"1.50")}])
    summary = await good.complete()
    await bad.abort()
    assert os.listdir(tmp_path) == [summary.path.name]
    assert verify_dossier(summary.path).ok


@pytest.mark.parametrize(
    ("part", "entry", "expected"),
    [
        (RECORDS, "records/../../x.json", "must be records/<name>"),
        (RECORDS, "records/.hidden.json", "not allowed"),
        (RECORDS, "README.txt", "must be records/<name>"),
        (RECORDS, "interactions/EmailSent.json", "must be records/<name>"),
        (RECORDS, "records/contact.csv", "must end with .json"),
        (SENT, "interactions/EmailOpened.json", "writes only rows to"),
    ],
)
async def test_an_entry_a_part_may_not_write_is_refused(
    tmp_path: Path, part: Part, entry: str, expected: str
) -> None:
    async with DossierWriter(tmp_path, _request()) as writer:
        with pytest.raises(DossierError, match=expected):
            await writer.sink(part).add_rows(entry, [])
        with pytest.raises(DossierError, match="broken"):
            await writer.complete()
    assert os.listdir(tmp_path) == []


async def test_a_chunk_that_is_not_bytes_or_an_entry_of_another_kind_is_refused(
    tmp_path: Path,
) -> None:
    part = Part("realtime", "realtime")
    question = Question("https://o", ("realtime",))
    async with DossierWriter(tmp_path, DossierRequest(CONTACT, (part,), question)) as writer:
        with pytest.raises(DossierError, match="not bytes"):
            await writer.sink(part).add_file("realtime/a.json", "text")  # type: ignore[arg-type]
    async with DossierWriter(tmp_path, DossierRequest(CONTACT, (part,), question)) as writer:
        await writer.sink(part).add_file("realtime/a.json", b"x")
        with pytest.raises(DossierError, match="already written by part realtime as file"):
            await writer.sink(part).add_rows("realtime/a.json", [{"a": 1}])
    assert os.listdir(tmp_path) == []
