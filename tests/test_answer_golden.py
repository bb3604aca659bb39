"""The answer files' bytes are pinned: a corpus of answers and their SHA-256s in a golden file.

The answer is what a controller hands a data subject; a change to a single byte of it must be a
decision, not a side effect of making rendering faster. ``tests/data/answer_golden.json`` holds
the SHA-256 of index.html and README.txt for every answer of a fixed corpus:

* the sample answers of the other tests (empty, small with hostile values, heavy);
* answers built from seeded made-up rows (hostile text, many timestamp forms, odd keys, nested
  values, long and hyphenated words, caps of zero and more), through ``AnswerBuilder``;
* whole contacts of the simulator's dataset, spooled in pieces and read back as
  ``Spool.assemble`` does (``answer_files_for``).

The digests were made by the renderers before the speed work of 2026-12 and checked to be the
same after it, together with a differential test against a verbatim copy of the old renderers
(hypothesis, 150 made-up answers a run, and every dossier of ``scripts/bench.py --only 4``).

To change the answer on purpose: ``SAR_BULK_UPDATE_GOLDEN=1 python -m pytest
tests/test_answer_golden.py`` rewrites the file; review the rendered files and commit both.
The wrapper of README.txt is checked against textwrap itself, and reading the spool back
against the entry format, below.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import os
import random
import textwrap
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, Final

import orjson
import pytest
from answer_samples import CONTACT, HOSTILE, PREPARED, empty_view, heavy_view, small_view, statement
from hypothesis import given, settings
from hypothesis import strategies as st

from sar_bulk.answer import AnswerBuilder, Question, answer_files
from sar_bulk.answer.sample import sample_statement
from sar_bulk.answer.statement import Statement
from sar_bulk.dossier import answer_feed
from sar_bulk.dossier.answer_feed import answer_files_for
from sar_bulk.dossier.format import Subject
from sar_bulk.dossier.spool import EntrySpool, encode_rows
from sar_bulk.dossier.writer import DossierRequest
from sar_bulk.simulator.dataset import Dataset
from sar_bulk.sources.interaction_types import ALL_TYPES

GOLDEN: Final = Path(__file__).parent / "data" / "answer_golden.json"
UPDATE: Final = os.environ.get("SAR_BULK_UPDATE_GOLDEN") == "1"


def _digests(files: dict[str, bytes]) -> dict[str, str]:
    return {name: hashlib.sha256(data).hexdigest() for name, data in sorted(files.items())}


# ----- the corpus ------------------------------------------------------------------------------


def _samples() -> Iterator[tuple[str, dict[str, bytes]]]:
    yield "sample/empty", answer_files(empty_view())
    yield "sample/empty-no-statement", answer_files(empty_view(with_statement=False))
    yield "sample/small", answer_files(small_view())
    yield "sample/small-no-statement", answer_files(small_view(with_statement=False))
    yield "sample/heavy", answer_files(heavy_view(1500))


_CHARS: Final = list("ab Z-9 .,'\"<>&\u00e9\u65e5\t\n\u2028\u00a0\u3000-")
_STAMP_FORMS: Final = [
    "2024-03-04T13:10:00+02:00",
    "2024-03-04T13:10:00.1234567Z",
    "2024-03-04 13:10:00Z",
    "20240304T131000.123Z",
    "2024-03-04T131000.1Z",
    "2024-03-04T13:10:00.1Z",
    "2024-03-04T23:10:00-02:00",
    "2024-03-31T23:10:00-02:00",
    "2024-03-04",
    "2024-13-04T13:10:00Z",
    "2024-03-04T25:10:00Z",
    "2024-02-30T13:10:00Z",
    "20240304T131000Z",
    "2024-03-04T13:10Z",
    "2024-03-04T13:10:00z",
    "1970-01-01T00:00:00Z",
    "2031-12-31T23:59:59-01:00",
    "x2024-03-04T13:10:00Z",
    "2024-03-04T13:10:00Zjunk",
    "\uff12\uff10\uff12\uff14-03-04T13:10:00Z",
]
_KEYS: Final = [
    "Timestamp",
    "Subject",
    "Url",
    "MessageId",
    "InteractionType",
    "ContactId",
    "Geo",
    "fullname",
    "VeryLongColumnNameThatIsWiderThanThirtyTwoCharacters",
    HOSTILE,
]
_TYPES: Final = ["EmailSent", "EmailOpened", "LeadScoreBoost", "MadeUpType", "x" * 60]
_TABLES: Final = ["contact", "leads", "msdynmkt_contactpointconsent4s"]


def _words(rng: random.Random) -> str:
    return "".join(rng.choice(_CHARS) for _ in range(rng.randrange(121)))


def _stamp(rng: random.Random) -> str:
    when = datetime(1990, 1, 1, tzinfo=UTC) + timedelta(seconds=rng.randrange(41 * 365 * 86400))
    form = rng.randrange(4)
    if form == 0:
        return when.strftime("%Y-%m-%dT%H:%M:%SZ")
    if form == 1:
        return when.replace(tzinfo=None).isoformat()
    if form == 2:
        offset = rng.choice([0, 2, -5])
        return (
            when.astimezone(UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", f"{offset:+03d}:00" if offset else "+00:00")
        )
    return rng.choice(_STAMP_FORMS)


def _leaf(rng: random.Random) -> Any:
    pick = rng.randrange(8)
    if pick == 0:
        return None
    if pick == 1:
        return rng.random() < 0.5
    if pick == 2:
        return rng.randint(-(10**20), 10**20)
    if pick == 3:
        return rng.choice([0.0, -0.0, 1.5, 1e-300, 1e300, 3.141592653589793, -2.5e-7])
    if pick == 4:
        return _stamp(rng)
    if pick == 5:
        return _words(rng)
    if pick == 6:
        return rng.choice(["", " ", HOSTILE, "https://www.contoso.com/a-b-c?x=1&y=2", "--", "a--b"])
    return "".join(chr(rng.randrange(32, 0x3000)) for _ in range(rng.randrange(41)))


def _value(rng: random.Random, depth: int = 0) -> Any:
    pick = rng.randrange(5)
    if depth >= 2 or pick < 3:
        return _leaf(rng)
    if pick == 3:
        return [_value(rng, depth + 1) for _ in range(rng.randrange(4))]
    return {_words(rng)[:8]: _value(rng, depth + 1) for _ in range(rng.randrange(4))}


def _row(rng: random.Random) -> dict[str, Any]:
    keys = (rng.choice(_KEYS) if rng.random() < 0.7 else _words(rng)[:12] for _ in range(9))
    return {key: _value(rng) for key in itertools.islice(keys, rng.randrange(9))}


def _made_up(seed: int) -> dict[str, bytes]:
    rng = random.Random(seed)
    builder = AnswerBuilder(
        CONTACT,
        Question(
            system="https://contoso.crm4.dynamics.com",
            types=("EmailSent", "EmailClicked", "LeadScoreBoost"),
            date_from=date(2020, 1, 1),
        ),
        row_cap=rng.randrange(31),
        record_cap=3,
    )
    for _ in range(rng.randrange(41)):
        builder.add_interaction(rng.choice(_TYPES), _row(rng))
    for _ in range(rng.randrange(7)):
        builder.add_record(rng.choice(_TABLES), _row(rng))
    for n in range(rng.randrange(3)):
        content = None if rng.random() < 0.3 else rng.randbytes(rng.randrange(61))
        builder.add_export(f"realtime/{n}-x.json", 10 + n, "ab" * 32, content)
    view = builder.build(
        prepared_at=PREPARED,
        statement=statement() if rng.random() < 0.5 else None,
        name=None if rng.random() < 0.3 else _words(rng),
        received=date(2024, 6, 1),
        answered=date(2024, 7, 1),
    )
    return answer_files(view)


def _made_up_answers() -> Iterator[tuple[str, dict[str, bytes]]]:
    for seed in range(60):
        yield f"made-up/{seed}", _made_up(seed)


def _spooled(
    dataset: Dataset, contact: str, request: DossierRequest, start: date | None, end: date | None
) -> list[EntrySpool]:
    entries: list[EntrySpool] = []
    for number, part in enumerate(request.parts):
        rows = list(dataset.interactions(contact, part.name, start, end))
        if not rows:
            continue
        spool = EntrySpool(number, part, f"interactions/{part.name}.json", "rows")
        lines = encode_rows(rows, contact, part.key)
        # Held in several chunks, as pages arrive: a row never straddles two of them.
        for page in range(0, len(lines), 7):
            chunks = spool.chunks_for(lines[page : page + 7])
            spool.held.extend(chunks)
            spool.account(chunks, len(lines[page : page + 7]))
        entries.append(spool)
    return entries


def _simulated(
    seed: int, ranged: bool, with_statement: bool
) -> Iterator[tuple[str, dict[str, bytes]]]:
    heavy = str(uuid.UUID(int=seed, version=4))
    dataset = Dataset(seed, {heavy: 2500})
    start, end = (date(2021, 1, 1), date(2024, 12, 31)) if ranged else (None, None)
    the_statement: Statement | None = sample_statement() if with_statement else None
    contacts = [heavy, *(str(uuid.UUID(int=seed * 1000 + n, version=4)) for n in range(25))]
    for n, contact in enumerate(contacts):
        request = DossierRequest.for_interactions(
            contact,
            ALL_TYPES if n % 3 else ALL_TYPES[::2],
            "https://contoso.crm4.dynamics.com",
            start.strftime("%m-%d-%Y") if start else None,
            end.strftime("%m-%d-%Y") if end else None,
        )
        if n % 2:
            subject = Subject(name="Zoë O'Neil <x>", received=date(2024, 5, 1) + timedelta(n))
            request = dataclasses.replace(request, subject=subject)
        entries = _spooled(dataset, contact, request, start, end)
        prepared = datetime(2026, 12, 1, 3, 23, n, tzinfo=UTC)
        files = answer_files_for(request, entries, statement=the_statement, prepared_at=prepared)
        yield f"simulated/{seed}-{'ranged' if ranged else 'all'}-{int(with_statement)}/{n}", files


def _simulated_answers() -> Iterator[tuple[str, dict[str, bytes]]]:
    for seed, ranged, with_statement in [(11, False, False), (11, False, True), (4, True, True)]:
        yield from _simulated(seed, ranged, with_statement)


_CORPUS: Final[dict[str, Callable[[], Iterator[tuple[str, dict[str, bytes]]]]]] = {
    "sample": _samples,
    "made-up": _made_up_answers,
    "simulated": _simulated_answers,
}


@pytest.fixture(scope="module")
def golden() -> dict[str, dict[str, str]]:
    if UPDATE:
        everything = {case: _digests(files) for make in _CORPUS.values() for case, files in make()}
        GOLDEN.write_text(json.dumps(everything, indent=1, sort_keys=True) + "\n")
    pinned: dict[str, dict[str, str]] = json.loads(GOLDEN.read_text())
    return pinned


@pytest.mark.parametrize("part", sorted(_CORPUS))
def test_the_corpus_renders_the_pinned_bytes(part: str, golden: dict[str, dict[str, str]]) -> None:
    made = dict(_CORPUS[part]())
    pinned = {case: sums for case, sums in golden.items() if case.startswith(f"{part}/")}
    assert made.keys() == pinned.keys()
    changed = [case for case, files in made.items() if _digests(files) != pinned[case]]
    assert not changed, f"answer files differ from the golden file for {changed[:5]}"


# ----- the wrapper against textwrap itself ------------------------------------------------------


@settings(max_examples=1500)
@given(
    st.text(alphabet=st.sampled_from(list(" -ab9Z.,'!?_é日\u00ad")), max_size=200),
    st.integers(min_value=1, max_value=78),
    st.sampled_from(["", " ", "  ", "     "]),
)
def test_the_wrapper_wraps_exactly_as_textwrap_does(text: str, width: int, indent: str) -> None:
    from sar_bulk.answer.text import _wrap

    if width <= len(indent):
        width = len(indent) + 1  # textwrap refuses an indent that leaves no room
    expected = textwrap.wrap(text, width, initial_indent=indent, subsequent_indent=indent)
    assert list(_wrap(text, width, indent)) == expected


@settings(max_examples=1500)
@given(
    st.lists(
        st.one_of(st.text(alphabet="ab.,日", min_size=1, max_size=6), st.just("x" * 45)),
        min_size=1,
        max_size=40,
    ),
    st.integers(min_value=1, max_value=78),
    st.sampled_from(["", "  ", "     "]),
)
def test_words_between_single_spaces_wrap_exactly_as_textwrap_does(
    words: list[str], width: int, indent: str
) -> None:
    # The commonest long text (lists of kinds, sentences) takes the wrapper's line-at-a-time way.
    from sar_bulk.answer.text import _wrap

    text = " ".join(words)
    if width <= len(indent):
        width = len(indent) + 1
    expected = textwrap.wrap(text, width, initial_indent=indent, subsequent_indent=indent)
    assert list(_wrap(text, width, indent)) == expected


def test_the_wrapper_s_corner_cases() -> None:
    from sar_bulk.answer.text import _wrap

    cases = [
        "",
        " ",
        "      x",
        "a-b-c-d-e-f-g-h-i-j-k-l-m-n-o-p",
        "well--known --dash-- and --- more",
        "xx-yy-zz" * 20,
        "-" * 50,
        "- - - -- - -",
        "a" * 200,
        "http://example.com/a-very-long-path-with-hyphens-in-it?and=query-strings",
        "Data portability (Article 20): to receive data you gave us in a machine-readable form",
        "1-2-3-4-5-6-7-8-9-0-1-2-3-4-5-6-7-8-9-0",
        "ab-9c de-\u00e9f \u65e5-\u65e5 a-b",
        "ab " + "c" * 10,
        "ab cd " + "e" * 30 + " f",
        "a b c d e f g h i j k l m n o p q r s t u v w x y z",
    ]
    for text in cases:
        for width in range(1, 40):
            for indent in ("", "  "):
                if width <= len(indent):
                    continue
                expected = textwrap.wrap(
                    text, width, initial_indent=indent, subsequent_indent=indent
                )
                assert list(_wrap(text, width, indent)) == expected, (text, width, indent)


# ----- reading the spool back: the rows the entry format holds ---------------------------------

_LINES = st.sampled_from(
    [
        b'{"a":1}',
        b"{}",
        b"[1,2]",
        b'"text"',
        b"null",
        b'{"big":123456789012345678901234567890}',
        b'{"f":1e400}',
        b"not json",
        b"",
        b'{"Timestamp":"2024-01-01T00:00:00Z","Subject":"a,\\nb"}',
        b'{"nested":{"x":[1,{"y":null}]}}',
    ]
)


def _rows_by_the_format(data: bytes) -> list[dict[str, object]]:
    """What a rows entry holds, line by line: one JSON object per line (a trailing comma is the
    array's separator), a value orjson refuses (1e400, integers past 64 bits) read exactly;
    an empty object, a line neither reads, or anything but an object gives no row."""
    rows: list[dict[str, object]] = []
    for line in data.split(b"\n"):
        line = line.rstrip(b",")
        if not line:
            continue
        try:
            value = orjson.loads(line)
        except orjson.JSONDecodeError:
            try:
                value = json.loads(line, parse_float=Decimal)
            except (ValueError, RecursionError):
                value = {}
        if isinstance(value, dict) and value:
            rows.append(value)
    return rows


@settings(max_examples=200, deadline=None)
@given(
    lines=st.lists(_LINES, max_size=30),
    cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=6),
    on_disk=st.booleans(),
    chunk=st.integers(min_value=1, max_value=64),
)
def test_spooled_rows_are_read_back_as_the_format_says(
    lines: list[bytes],
    cuts: list[int],
    on_disk: bool,
    chunk: int,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    request = DossierRequest.for_interactions(CONTACT, ALL_TYPES, "https://x.example")
    data = b",\n".join(lines)
    spool = EntrySpool(0, request.parts[0], "interactions/x.json", "rows")
    if on_disk:
        spool.file = tmp_path_factory.mktemp("spool") / "0.part"
        spool.file.write_bytes(data)
    else:
        # Held in pieces cut anywhere, even inside a line.
        edges = sorted({0, len(data), *(c for c in cuts if c < len(data))})
        spool.held.extend(data[a:b] for a, b in itertools.pairwise(edges))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(answer_feed, "_CHUNK", chunk)  # files read in small pieces too
        assert list(answer_feed._rows(spool)) == _rows_by_the_format(data)
