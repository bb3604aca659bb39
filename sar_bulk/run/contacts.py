"""Streaming reader for the contacts CSV: which column, which rows, and why a row was refused.

The file may have ten million rows, so it is read as a stream of bytes and nothing grows with the
number of rows: no list of rows, no set of ids (the engine removes duplicates through its SQLite
state). Memory is bounded by one read chunk, ``max_line_bytes`` and the sniffing sample.

Usage::

    with open_contacts("contacts.csv") as stream:
        reader = ContactReader(stream, source_name="contacts.csv")
        print("ids from", reader.column_description)
        for row in reader:
            ...  # ContactRow(line, contact_id) or RejectedRow(line, reason, preview)

The rules, in the order they apply:

* Bytes: UTF-8 with or without BOM, or UTF-16 with a BOM (Excel's "Unicode text", which is also
  tab-separated), decoded as a stream to UTF-8 before the rules below, so nothing else changes.
  A UTF-32 BOM, or a start full of NUL bytes (UTF-16 without a BOM), is refused at once with an
  ``InputError`` naming the encoding. Lines end in CRLF, LF or a lone CR; line numbers count
  physical lines, and a record that spans lines (a quoted field with a line break) is reported at
  the line where it starts. Blank lines (and rows whose cells are all blank) are skipped silently.
* A physical line longer than ``max_line_bytes`` is never held whole: its rest is read and dropped
  in chunks and the row is rejected. A line that is not UTF-8 is rejected (and a file with no
  valid id says the encoding may be why). Both leave the rows after them untouched.
* Delimiter: comma, unless the first line (quoted parts ignored) has no comma but a semicolon
  (Excel in some locales) or, failing that, a tab.
* Id column: the header named by ``id_column`` (any case); otherwise the first header found of
  ``ContactId``, ``contact_id``, ``Contact``, ``id`` (any case, spaces and BOM ignored); otherwise
  the one column where most of the first 50 data rows hold a GUID. The first row is a header when it
  has a known name or when its cell in that column is not a GUID.
* Each id cell is normalised with ``canonical_guid`` (braces, upper case, no dashes, spaces); a
  cell that is not a GUID, or empty, rejects the row. A rejected row carries only a short, escaped
  preview, so a report never holds control characters or a large blob.
* Quoting follows RFC 4180 strictly: a quoted field must be closed within ``max_line_bytes``, and a
  closing quote must be followed by a delimiter or the line end. Otherwise the starting line is
  rejected and the lines after it are read again as rows of their own, so one stray quote cannot
  swallow the rest of the file.
* Optional columns (a header is needed): the date the request was received (``received_column``,
  else the first header of ``KNOWN_RECEIVED_HEADERS``), the reason for a two-month extension
  (``extension_column`` or ``KNOWN_EXTENSION_HEADERS``) and the subject's name (``name_column`` or
  ``KNOWN_NAME_HEADERS``). None of these names is an id header, and dates are not GUIDs, so they
  never change which column holds the ids. A received date is ISO (``YYYY-MM-DD``, or an ISO date
  and time) unless ``received_format`` names a ``strptime`` format; an empty cell means "not
  known", while a date that cannot be read, or lies after ``today`` (default: the latest date
  anywhere on Earth, ``deadlines.latest_date``), rejects the row (a wrong date would move a legal
  deadline). The row then carries a ``Deadline`` (``run.deadlines``).
* A file without a single valid id raises ``InputError``: at once for an empty or header-only
  file, otherwise after the last rejected row has been yielded, so every rejection is reported.
  A read that fails (an I/O error) raises ``InputError`` naming the file, not a bare ``OSError``.
"""

from __future__ import annotations

import codecs
import csv
import re
import sys
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from itertools import chain
from typing import BinaryIO, Final, final

from sar_bulk.errors import InputError
from sar_bulk.guids import canonical_guid, is_canonical_guid
from sar_bulk.run.deadlines import Deadline, latest_date, parse_received

__all__ = [
    "KNOWN_EXTENSION_HEADERS",
    "KNOWN_ID_HEADERS",
    "KNOWN_NAME_HEADERS",
    "KNOWN_RECEIVED_HEADERS",
    "SNIFF_ROWS",
    "ContactReader",
    "ContactRow",
    "RejectedRow",
    "open_contacts",
    "safe_preview",
]

# Lower-case header names that mark the id column, in order of preference.
KNOWN_ID_HEADERS: Final = ("contactid", "contact_id", "contact", "id")
KNOWN_RECEIVED_HEADERS: Final = ("received", "received_on", "request_received", "date_received")
KNOWN_EXTENSION_HEADERS: Final = ("extension_reason", "extension")
KNOWN_NAME_HEADERS: Final = ("name", "full_name", "fullname")
# A name or an extension reason is kept to this many characters (they go into the dossier).
_MAX_TEXT: Final = 500
SNIFF_ROWS: Final = 50
PREVIEW_CHARS: Final = 40

_CHUNK: Final = 16 * 1024
_BOM: Final = b"\xef\xbb\xbf"
# Longest first: a UTF-32 LE BOM starts with the UTF-16 LE one.
_REFUSED_BOMS: Final = ((b"\xff\xfe\x00\x00", "UTF-32 LE"), (b"\x00\x00\xfe\xff", "UTF-32 BE"))
_UTF16_BOMS: Final = ((b"\xff\xfe", "utf-16-le"), (b"\xfe\xff", "utf-16-be"))
# Bytes looked at to tell UTF-16 without a BOM: text in it has a NUL in every other byte.
_NUL_SAMPLE: Final = 512
_SAVE_AS: Final = "save it as UTF-8 (Excel: 'CSV UTF-8') or as UTF-16 with a byte-order mark"
# Bytes of an overlong line kept for its preview: enough for 40 characters of UTF-8.
_HEAD: Final = 4 * PREVIEW_CHARS
# Rejected lines held while sniffing, so a file of nothing but bad lines cannot grow the buffer.
_MAX_BUFFERED: Final = 20 * SNIFF_ROWS
_QUOTED: Final = re.compile(r'"[^"]*"')


class _Utf16ToUtf8:
    """A ``read`` that turns a UTF-16 stream into UTF-8, a chunk at a time (bounded memory).

    Unpaired surrogates become U+FFFD, so the row holding one is rejected as "not a GUID"
    instead of the whole file failing.
    """

    __slots__ = ("_decoder", "_done", "_pending", "_read")

    def __init__(self, read: Callable[[int], bytes], head: bytes, encoding: str) -> None:
        self._read = read
        self._pending = head
        self._decoder = codecs.getincrementaldecoder(encoding)(errors="replace")
        self._done = False

    def read(self, size: int) -> bytes:
        while not self._done:
            raw, self._pending = (self._pending or self._read(size)), b""
            if raw:
                text = self._decoder.decode(raw)
            else:
                text = self._decoder.decode(b"", final=True)
                self._done = True
            if text:
                return text.encode("utf-8")
        return b""


def _looks_like_utf16(head: bytes) -> bool:
    """Text in UTF-16 without a BOM: mostly NUL in every other byte, and not in the others.

    Latin text (headers, GUIDs, delimiters) in UTF-16 has a NUL as the high byte of each code
    unit; UTF-8 text never holds a NUL at all.
    """
    sample = head[: _NUL_SAMPLE - _NUL_SAMPLE % 2]
    if len(sample) < 4:
        return False
    even, odd = sample[0::2], sample[1::2]
    nul_even, nul_odd = even.count(0) / len(even), odd.count(0) / len(odd)
    return max(nul_even, nul_odd) >= 0.75 and min(nul_even, nul_odd) <= 0.25


@dataclass(frozen=True, slots=True)
class ContactRow:
    """A usable contact id and the 1-based physical line where its record starts.

    ``deadline`` when the CSV has a received-date column and this row a date in it; ``name``
    when it has a name column (personal data: it goes into the dossier, never a log or report).
    """

    line: int
    contact_id: str
    deadline: Deadline | None = None
    name: str | None = None


@dataclass(frozen=True, slots=True)
class RejectedRow:
    """A row that yields no id: why, and a preview that is safe to log (never the raw value)."""

    line: int
    reason: str
    preview: str


@final
class _Overlong:
    """Stands for a physical line longer than the limit; only its first bytes are kept."""

    __slots__ = ("head",)

    def __init__(self, head: bytes) -> None:
        self.head = head


class _Unclosed(Exception):
    """A quoted field ran past the size limit or into an unreadable line."""


_Line = tuple[int, "bytes | _Overlong"]
_Record = tuple[int, list[str]]


def safe_preview(text: str, limit: int = PREVIEW_CHARS) -> str:
    """At most ``limit`` characters of ``text`` with anything unprintable escaped.

    Backslashes are doubled and bytes that were not UTF-8 (decoded with ``surrogateescape``)
    show as ``\\xNN``, so the preview is unambiguous; a cut preview ends in ``…``.
    """
    pieces: list[str] = []
    used = 0
    for char in text[: limit + 1]:
        piece = _escape(char)
        pieces.append(piece)
        used += len(piece)
    if used <= limit and len(text) <= limit:
        return "".join(pieces)
    kept: list[str] = []
    used = 0
    for piece in pieces:
        if used + len(piece) > limit - 1:
            break
        kept.append(piece)
        used += len(piece)
    return "".join(kept) + "…"


def _escape(char: str) -> str:
    if char == "\\":
        return "\\\\"
    if char.isprintable():
        return char
    code = ord(char)
    if 0xDC80 <= code <= 0xDCFF:  # a byte smuggled through surrogateescape
        return f"\\x{code - 0xDC00:02x}"
    return char.encode("unicode_escape").decode("ascii")


def _preview_bytes(raw: bytes) -> str:
    return safe_preview(raw[:_HEAD].decode("utf-8", "surrogateescape"))


def _is_guid(cell: str) -> bool:
    try:
        canonical_guid(cell)
    except ValueError:
        return False
    return True


def _header_key(cell: str) -> str:
    return cell.replace("\ufeff", "").strip().lower()


def _pick_delimiter(first_line: str) -> str:
    unquoted = _QUOTED.sub("", first_line)
    if "," in unquoted:
        return ","
    if ";" in unquoted:
        return ";"
    if "\t" in unquoted:
        return "\t"
    return ","


def open_contacts(path: str) -> BinaryIO:
    """Open the contacts file for reading in binary; ``-`` is standard input.

    Raises ``InputError`` saying what is wrong with the path, instead of a bare ``OSError``.
    The caller closes a file it opened this way, but not standard input.
    """
    if path == "-":
        return sys.stdin.buffer
    try:
        return open(path, "rb")
    except FileNotFoundError:
        raise InputError(f"contacts file {path!r} does not exist") from None
    except IsADirectoryError:
        raise InputError(f"contacts file {path!r} is a folder, not a CSV file") from None
    except PermissionError:
        raise InputError(f"contacts file {path!r} cannot be read: permission denied") from None
    except OSError as exc:
        raise InputError(f"contacts file {path!r} cannot be opened: {exc.strerror}") from None


class ContactReader:
    """Iterate over a contacts CSV as ``ContactRow`` and ``RejectedRow`` values, in file order.

    ``detect()`` reads the header and the sniffing sample (up to 51 rows) and decides on the
    delimiter and the id column; ``column_description`` calls it when needed, and so does the
    first ``next()`` of the iteration. They raise ``InputError`` for an empty or header-only
    file, an unknown ``id_column`` or a column that cannot be told. The reader is single-pass
    and, like any iterator, is pulled from one thread at a time (``asyncio.to_thread`` batches
    are fine).
    """

    def __init__(
        self,
        stream: BinaryIO,
        *,
        id_column: str | None = None,
        max_line_bytes: int = 4096,
        source_name: str = "<contacts>",
        received_column: str | None = None,
        extension_column: str | None = None,
        name_column: str | None = None,
        received_format: str | None = None,
        today: date | None = None,
    ) -> None:
        if max_line_bytes < 64:
            raise ValueError("max_line_bytes must be at least 64 (a GUID in braces and quotes)")
        self.rows_read = 0
        """Data rows read so far, rejected ones included; not the header, not blank lines."""
        self._stream = stream
        self._id_column = id_column
        self._max_line_bytes = max_line_bytes
        self._source = source_name
        self._too_long = f"line longer than {max_line_bytes} bytes"
        self._replay: deque[_Line] = deque()
        self._delimiter: str | None = None
        self._column = 0
        self._description: str | None = None
        self._header: list[str] = []
        self._buffered: list[RejectedRow | _Record] = []
        self._records: Iterator[RejectedRow | _Record] = iter(())
        self._lines: Iterator[_Line] = iter(())
        self._quoted: Iterator[list[str]] | None = None
        self._slot: str | None = None
        self._room = 0
        self._consumed: list[_Line] = []
        self._failure: InputError | None = None
        self._started = False
        self._not_utf8 = 0
        self._wanted = {
            "received": (received_column, KNOWN_RECEIVED_HEADERS),
            "extension": (extension_column, KNOWN_EXTENSION_HEADERS),
            "name": (name_column, KNOWN_NAME_HEADERS),
        }
        self._optional: dict[str, int] = {}
        self._received_format = received_format
        self._today = today or latest_date(datetime.now(UTC))

    @property
    def optional_columns(self) -> dict[str, str]:
        """The optional columns found, e.g. ``{"received": "column 'Received' (3 of 4)"}``."""
        self.detect()
        header = self._header
        return {
            kind: f"column {safe_preview(header[index].strip())!r} ({index + 1} of {len(header)})"
            for kind, index in self._optional.items()
        }

    @property
    def column_description(self) -> str:
        """Which column holds the ids, e.g. ``column 'ContactId' (2 of 3)``; detects if needed."""
        return self.detect()

    def detect(self) -> str:
        """Read the header and sample rows once, choose the id column and describe it.

        A failure is remembered: asking again raises the same ``InputError`` instead of reading
        on from the middle of the stream.
        """
        if self._failure is not None:
            raise self._failure
        if self._description is None:
            try:
                self._description = self._detect()
            except InputError as exc:
                self._failure = exc
                raise
        return self._description

    def __iter__(self) -> Iterator[ContactRow | RejectedRow]:
        """The rows; nothing is read before the first ``next()``, so ``iter()`` never blocks."""
        if self._started:
            raise RuntimeError("a ContactReader reads its stream once")
        self._started = True
        return self._rows()

    # -- physical lines ---------------------------------------------------------------------

    def _read(self, size: int) -> bytes:
        """The stream's ``read``, with a failed read (EIO, a stale share) as an ``InputError``."""
        try:
            return self._stream.read(size)
        except OSError as exc:
            raise InputError(
                f"{self._source} cannot be read ({exc.strerror or exc}) after {self.rows_read} "
                "rows: check the file or the disk it is on, then run again (finished contacts "
                "are kept)"
            ) from None

    def _physical_lines(self) -> Iterator[bytes | _Overlong]:
        """Every physical line without its terminator, in chunks so no line is held whole."""
        limit = self._max_line_bytes
        pending, eof, read = self._read_past_bom(self._read)
        carry = b""
        skip_lf = False  # the previous chunk ended in CR: a LF at the start finishes that CRLF
        while True:
            if pending:
                chunk, pending = pending, b""
            elif eof:
                break
            else:
                chunk = read(_CHUNK)
                if not chunk:
                    break
            if skip_lf:
                skip_lf = False
                if chunk[:1] == b"\n":
                    chunk = chunk[1:]
                    if not chunk:
                        continue
            buf = carry + chunk if carry else chunk
            lines = buf.splitlines()
            end = buf[-1]
            if end in (0x0A, 0x0D):
                carry = b""
                skip_lf = end == 0x0D
            else:
                carry = lines.pop()
            for line in lines:
                yield line if len(line) <= limit else _Overlong(line[:_HEAD])
            if len(carry) > limit:
                head, carry = carry[:_HEAD], b""
                pending, skip_lf, eof = self._discard_rest_of_line(read)
                yield _Overlong(head)
        if carry:
            yield carry

    def _read_past_bom(
        self, read: Callable[[int], bytes]
    ) -> tuple[bytes, bool, Callable[[int], bytes]]:
        """The first chunk past any BOM, whether the stream already ended, and the ``read`` for
        the rest (a UTF-16 file is decoded to UTF-8 on the way). Raises ``InputError`` for an
        encoding the reader cannot take."""
        chunk = read(_CHUNK)
        if not chunk:
            return b"", True, read
        eof = False
        # A pipe may hand out fewer bytes at a time than a BOM has (UTF-32's has four).
        while len(chunk) < 4:
            more = read(_CHUNK)
            if not more:
                eof = True
                break
            chunk += more
        if chunk.startswith(_BOM):
            return chunk[len(_BOM) :], eof, read
        for bom, name in _REFUSED_BOMS:
            if chunk.startswith(bom):
                raise InputError(f"{self._source} is {name} text, which is not read: {_SAVE_AS}")
        for bom, encoding in _UTF16_BOMS:
            if chunk.startswith(bom):
                source = _Utf16ToUtf8(read, chunk[len(bom) :], encoding)
                return source.read(_CHUNK), False, source.read
        if _looks_like_utf16(chunk):
            raise InputError(
                f"{self._source} looks like UTF-16 without a byte-order mark (or is not text "
                f"at all): {_SAVE_AS}"
            )
        return chunk, eof, read

    @staticmethod
    def _discard_rest_of_line(read: Callable[[int], bytes]) -> tuple[bytes, bool, bool]:
        """Read and drop bytes up to the end of the current line.

        Returns what follows the line terminator, whether a LF at the start of the next chunk
        still belongs to this line's CRLF, and whether the stream ended.
        """
        while True:
            chunk = read(_CHUNK)
            if not chunk:
                return b"", False, True
            ends = [i for i in (chunk.find(b"\n"), chunk.find(b"\r")) if i >= 0]
            if not ends:
                continue
            cut = min(ends)
            if chunk[cut : cut + 2] == b"\r\n":
                return chunk[cut + 2 :], False, False
            rest = chunk[cut + 1 :]
            return rest, chunk[cut] == 0x0D and not rest, False

    # -- records ----------------------------------------------------------------------------

    def _parse_records(self) -> Iterator[RejectedRow | _Record]:
        """CSV records as (start line, cells), or the rejection of an unreadable line."""
        physical = enumerate(self._physical_lines(), 1)
        lines: Iterator[_Line] = physical
        while True:
            self._lines = lines
            yield from self._records_from(lines)
            if not self._replay:
                return
            # A broken quoted record gave lines back: read them first, then go on with the file.
            lines = chain(self._drain_replay(), physical)

    def _drain_replay(self) -> Iterator[_Line]:
        replay = self._replay
        while replay:
            yield replay.popleft()

    def _records_from(self, lines: Iterator[_Line]) -> Iterator[RejectedRow | _Record]:
        """Records until ``lines`` ends, or until a broken quoted record leaves lines to replay."""
        delimiter = self._delimiter
        for line_no, raw in lines:
            if type(raw) is _Overlong:
                yield RejectedRow(line_no, self._too_long, _preview_bytes(raw.head))
                continue
            if not raw or raw.isspace():
                continue
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                self._not_utf8 += 1
                yield RejectedRow(line_no, "not UTF-8", _preview_bytes(raw))
                continue
            if delimiter is None:
                delimiter = self._delimiter = _pick_delimiter(text)
            if '"' in text:
                yield self._parse_quoted(line_no, text, len(raw), delimiter)
                if self._replay:
                    return
            else:
                yield line_no, text.split(delimiter)

    def _parse_quoted(
        self, line_no: int, text: str, size: int, delimiter: str
    ) -> RejectedRow | _Record:
        """Parse a record with quotes; ``_feed`` adds lines while a quoted field stays open."""
        reader = self._quoted
        if reader is None:
            reader = self._quoted = csv.reader(self._feed(), delimiter=delimiter, strict=True)
        self._slot = text
        self._room = self._max_line_bytes - size
        self._consumed.clear()
        try:
            return line_no, next(reader)
        except _Unclosed:
            reason = "unbalanced quotes"
        except csv.Error:
            reason = "malformed CSV quoting"
        # The feed may have died with the exception: start a fresh one for the next record.
        self._quoted = None
        self._slot = None
        # Lines swallowed by the broken record are read again as rows of their own.
        self._replay.extendleft(reversed(self._consumed))
        return RejectedRow(line_no, reason, safe_preview(text))

    def _feed(self) -> Iterator[str]:
        """Lines for the csv module: the record's first line, then continuations on demand.

        A continuation that is unreadable, runs past ``max_line_bytes`` for the whole record, or
        is missing (end of file) ends the record as ``_Unclosed``.
        """
        consumed = self._consumed
        while True:
            slot = self._slot
            if slot is not None:
                self._slot = None
                yield slot
                continue
            item = next(self._lines, None)
            if item is None:
                raise _Unclosed
            consumed.append(item)
            raw = item[1]
            if type(raw) is _Overlong:
                raise _Unclosed
            self._room -= len(raw) + 1
            if self._room < 0:
                raise _Unclosed
            try:
                more = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise _Unclosed from None
            # The line break belongs to the quoted field: "gu<newline>id" must not read as "guid".
            yield "\n" + more

    # -- detection --------------------------------------------------------------------------

    def _detect(self) -> str:
        records = self._records = self._parse_records()
        buffered = self._buffered
        sample: list[_Record] = []
        for item in records:
            if type(item) is RejectedRow:
                buffered.append(item)
                if len(buffered) >= _MAX_BUFFERED:
                    break
                continue
            assert type(item) is tuple
            if not any(cell.strip() for cell in item[1]):
                continue
            buffered.append(item)
            sample.append(item)
            if len(sample) > SNIFF_ROWS:
                break
        if not sample:
            if not buffered:
                raise InputError(f"{self._source} has no contact ids: the file is empty")
            return "none (no readable rows)"
        first = sample[0][1]
        if self._id_column is not None:
            column, header = self._named_column(first), True
        else:
            keys = [_header_key(cell) for cell in first]
            known = [keys.index(name) for name in KNOWN_ID_HEADERS if name in keys]
            if known:
                column, header = known[0], True
            elif len(sample) == 1 and not any(_is_guid(cell) for cell in first):
                column, header = 0, True  # a lone line without a GUID: a header, no data
            else:
                column = self._sniff(sample)
                header = column >= len(first) or not _is_guid(first[column])
        self._column = column
        self._header = first if header else []
        self._find_optional(column)
        if not header:
            width = max(len(cells) for _, cells in sample)
            if width == 1:
                return "the only column (no header)"
            return f"column {column + 1} of {width} (no header)"
        buffered.remove(sample[0])
        if not buffered:
            raise InputError(f"{self._source} has no contact ids: it holds only a header line")
        if column >= len(first):  # the header line is shorter than the rows under it
            return f"column {column + 1} (the header line has only {len(first)})"
        name = safe_preview(first[column].replace("\ufeff", "").strip())
        return f"column '{name}' ({column + 1} of {len(first)})"

    def _find_optional(self, id_column: int) -> None:
        """Locate the received, extension and name columns in the header (named or known)."""
        keys = [_header_key(cell) for cell in self._header]
        for kind, (named, known) in self._wanted.items():
            if named is not None:
                if not keys:
                    raise InputError(
                        f"{self._source} has no header line, so it has no column named "
                        f"{safe_preview(named)!r} for the {kind} column"
                    )
                index = self._named_column(self._header, named)
            else:
                index = next((keys.index(name) for name in known if name in keys), -1)
                if index < 0:
                    continue
            if index == id_column:
                raise InputError(
                    f"the {kind} column of {self._source} is its id column "
                    f"({safe_preview(self._header[index].strip())!r}): name another"
                )
            self._optional[kind] = index

    def _named_column(self, header: list[str], named: str | None = None) -> int:
        named = named if named is not None else self._id_column
        assert named is not None
        keys = [_header_key(cell) for cell in header]
        wanted = _header_key(named)
        if wanted in keys:
            return keys.index(wanted)
        present = ", ".join(repr(safe_preview(cell.strip())) for cell in header[:20])
        more = f" and {len(header) - 20} more" if len(header) > 20 else ""
        raise InputError(
            f"{self._source} has no column named {safe_preview(named)!r}; "
            f"its first line has: {present}{more}"
        )

    def _sniff(self, sample: list[_Record]) -> int:
        """The one column where most sampled rows hold a GUID (the first row may be a header)."""
        first = sample[0][1]
        width = max(len(cells) for _, cells in sample)
        hits = [0] * width
        for _, cells in sample:
            for index, cell in enumerate(cells):
                if _is_guid(cell):
                    hits[index] += 1
        rows = len(sample)
        if width == 1:
            if hits[0]:
                return 0
            raise InputError(
                f"{self._source} has no contact ids: none of its first {rows} rows holds a GUID"
            )
        qualifying = []
        for index, count in enumerate(hits):
            first_is_guid = index < len(first) and _is_guid(first[index])
            data_rows = rows if first_is_guid else rows - 1
            if data_rows > 0 and count * 2 > data_rows:
                qualifying.append(index + 1)
        if len(qualifying) == 1:
            return qualifying[0] - 1
        names = ", ".join(KNOWN_ID_HEADERS)
        if qualifying:
            which = ", ".join(str(number) for number in qualifying)
            problem = f"several columns hold GUIDs ({which})"
        else:
            problem = f"no column holds GUIDs in most of its first {rows} rows"
        raise InputError(
            f"cannot tell which column of {self._source} holds the contact ids: {problem}; "
            f"name it with --id-column (headers recognised without it: {names})"
        )

    def _with_optional(
        self, line_no: int, contact_id: str, cells: list[str]
    ) -> ContactRow | RejectedRow:
        """The row with its deadline and name, or its rejection for an unreadable date."""
        found = self._optional

        def cell(kind: str) -> str:
            index = found.get(kind, -1)
            return cells[index].strip() if 0 <= index < len(cells) else ""

        deadline = None
        if received := cell("received"):
            try:
                day = parse_received(received, self._received_format, today=self._today)
            except ValueError as exc:
                return RejectedRow(line_no, f"received date: {exc}", safe_preview(received))
            deadline = Deadline.from_received(day, cell("extension")[:_MAX_TEXT] or None)
        return ContactRow(line_no, contact_id, deadline, cell("name")[:_MAX_TEXT] or None)

    # -- rows -------------------------------------------------------------------------------

    def _rows(self) -> Iterator[ContactRow | RejectedRow]:
        self.detect()
        column = self._column
        valid = 0
        first: RejectedRow | None = None  # for the error when no row is usable
        items = chain(self._buffered, self._records)
        self._buffered = []
        for item in items:
            if type(item) is RejectedRow:
                self.rows_read += 1
                first = first or item
                yield item
                continue
            assert type(item) is tuple
            line_no, cells = item
            value = cells[column] if column < len(cells) else ""
            # Fast paths for the usual spellings; the length test also keeps out a trailing
            # newline, which is_canonical_guid's "$" lets through.
            if len(value) == 36 and is_canonical_guid(value):
                contact_id = value
            elif len(value) == 36 and is_canonical_guid(lowered := value.lower()):
                contact_id = lowered
            else:
                try:
                    contact_id = canonical_guid(value)
                except ValueError:
                    if value.strip():
                        rejected = RejectedRow(line_no, "not a GUID", safe_preview(value))
                    elif any(cell.strip() for cell in cells):
                        rejected = RejectedRow(line_no, "empty id", "")
                    else:
                        continue
                    self.rows_read += 1
                    first = first or rejected
                    yield rejected
                    continue
            self.rows_read += 1
            if self._optional:
                row = self._with_optional(line_no, contact_id, cells)
                if type(row) is RejectedRow:
                    first = first or row
                    yield row
                    continue
                valid += 1
                yield row
                continue
            valid += 1
            yield ContactRow(line_no, contact_id)
        if not valid:
            encoding = (
                f"; {self._not_utf8} of them are not UTF-8, so the file may be in another "
                f"encoding: {_SAVE_AS}"
                if self._not_utf8
                else ""
            )
            where = f", the first at line {first.line}: {first.reason}" if first else ""
            raise InputError(
                f"{self._source} has no contact ids: all {self.rows_read} rows were rejected"
                f"{where} (each is listed with its line and reason){encoding}"
            )
