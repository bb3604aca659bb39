"""Fuzzing what the client reads from the network: page bodies, error bodies, Retry-After.

Whatever a server, a proxy or a broken connection sends, the decoder must answer with a valid
page or ``MalformedResponse`` (which the engine retries), the classifier with an error of the
tree, and the Retry-After parser with a sane number of seconds or ``None``. Any other exception
would escape the retry policy and end a run of millions of requests over one odd answer.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from sar_bulk.dataverse import jsonexact
from sar_bulk.dataverse.client import Query, classify_error, decode_page, parse_retry_after
from sar_bulk.errors import (
    DataverseError,
    ForeignData,
    MalformedResponse,
    OverLimit,
    RequestContext,
    Throttled,
)
from sar_bulk.sources.interaction_types import InteractionType

CONTACT = "5b7e3f7b-1d3a-4f5b-9c1e-2a3b4c5d6e7f"
QUERY = Query(CONTACT, InteractionType.EmailSent)
CONTEXT = RequestContext(CONTACT, "interactions/EmailSent", 3)
ACTION_CONTEXT = "https://o.example/api/data/v9.0/$metadata#Microsoft.Dynamics.CRM.msdyncrm_LoadInteractionsPublicResponse"
CANARY = "PERSONAL-DATA-CANARY"
NOW = datetime(2025, 6, 1, 12, 0, 0, tzinfo=UTC)
# No wall-clock deadline: the machine is shared, and a hang would stop the run anyway.
FUZZ = settings(deadline=None, max_examples=200)

# Any JSON-like value, including what orjson refuses: integers past 64 bits, NaN, infinities.
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=20)
    | st.just(CANARY),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=25,
)


def _lenient_json(value: Any, *, ascii_only: bool) -> bytes:
    """JSON text as Python's json writes it: NaN and Infinity literals, huge integers, and
    (with ``ascii_only`` off) lone surrogates that turn into bytes that are not UTF-8."""
    text = json.dumps(value, allow_nan=True, ensure_ascii=ascii_only)
    return text.encode("utf-8", "surrogatepass")


def _nested(depth: int, opener: str = "[", closer: str = "]") -> str:
    return opener * depth + closer * depth


interaction_lists = st.lists(
    st.dictionaries(
        st.text(max_size=12),
        st.none()
        | st.booleans()
        | st.integers(-(2**63), 2**63 - 1)
        | st.floats(allow_nan=False, allow_infinity=False)
        | st.text(max_size=30, alphabet=st.characters(exclude_categories=["Cs"])),
        max_size=6,
    ),
    max_size=5,
)

data_values = st.one_of(
    json_values,  # not a string at all
    json_values.map(lambda v: _lenient_json(v, ascii_only=True).decode()),  # a string of JSON
    interaction_lists.map(lambda v: orjson.dumps(v).decode()),  # the expected shape
    st.text(max_size=40),
    st.integers(1, 5000).map(_nested),
    st.integers(1, 5000).map(lambda n: "[" + _nested(n, '{"a":', "}")[:-1] + "]"),
    st.sampled_from(["NaN", "[NaN]", "[Infinity]", "[-Infinity]", "[1e400]", "[{}]", "[null]"]),
    st.integers(64, 400).map(lambda n: '[{"n": ' + "9" * n + "}]"),
)

documents = st.fixed_dictionaries(
    {},
    optional={
        "Data": data_values,
        "NextSkipToken": st.one_of(json_values, st.text(max_size=30)),
        "@odata.context": st.one_of(st.text(max_size=30), st.just(ACTION_CONTEXT)),
        CANARY: json_values,
    },
)


Refusal = MalformedResponse | ForeignData | OverLimit


def _decode(raw: bytes) -> tuple[list[dict[str, Any]], str | None] | Refusal:
    try:
        return decode_page(QUERY, raw, 3)
    except (MalformedResponse, ForeignData, OverLimit) as exc:
        return exc


def _check_decoding(raw: bytes) -> None:
    """The property: a valid page, or a refusal of the tree that does not quote the body."""
    result = _decode(raw)
    if isinstance(result, Refusal):
        assert result.status == 200
        assert result.context == CONTEXT
        assert CANARY not in str(result), "the message quotes the body (it may be personal data)"
        return
    interactions, token = result
    assert isinstance(interactions, list)
    assert all(type(item) is dict for item in interactions)
    assert token is None or (isinstance(token, str) and token != "")


@FUZZ
@given(st.binary(max_size=2000))
@example(b"")
@example(b"\xff\xfe\x00")
@example(b"<!DOCTYPE html><html>" + CANARY.encode())
@example(b'{"Data": "[' + b"[" * 100_000 + b'"}')
@example(b"[" * 100_000 + b"]" * 100_000)
@example(b'{"Data": ' + b"1" * 10_000 + b"}")
def test_any_bytes_decode_to_a_page_or_malformed(raw: bytes) -> None:
    _check_decoding(raw)


@FUZZ
@given(documents, st.booleans())
def test_odd_json_documents_decode_to_a_page_or_malformed(
    document: dict[str, Any], ascii_only: bool
) -> None:
    _check_decoding(_lenient_json(document, ascii_only=ascii_only))


@FUZZ
@given(json_values)
def test_a_body_that_is_not_an_object_is_malformed(value: Any) -> None:
    raw = _lenient_json(value, ascii_only=True)
    if isinstance(value, dict):
        _check_decoding(raw)
        return
    assert isinstance(_decode(raw), MalformedResponse), f"{type(value).__name__} taken for a page"


@FUZZ
@given(interaction_lists, st.one_of(st.none(), st.just(""), st.text(min_size=1, max_size=40)))
def test_a_well_formed_page_decodes_to_exactly_what_was_sent(
    interactions: list[dict[str, Any]], token: str | None
) -> None:
    for item in interactions:
        item.update(ContactId=CONTACT, InteractionType="EmailSent")
    body = {"Data": orjson.dumps(interactions).decode(), "NextSkipToken": token}
    decoded, next_token = decode_page(QUERY, orjson.dumps(body))
    assert orjson.dumps(decoded) == orjson.dumps(interactions)
    assert next_token == (token or None)


@FUZZ
@given(interaction_lists.filter(bool), st.sampled_from(["ContactId", "InteractionType"]))
def test_an_interaction_of_another_contact_or_type_refuses_the_page(
    interactions: list[dict[str, Any]], key: str
) -> None:
    for item in interactions:
        item.update(ContactId=CONTACT, InteractionType="EmailSent")
    interactions[-1][key] = "EmailOpened" if key == "InteractionType" else CANARY
    body = {"Data": orjson.dumps(interactions).decode()}
    result = _decode(orjson.dumps(body))
    assert isinstance(result, ForeignData)
    assert CANARY not in str(result)


# -- exact numbers: decode + orjson.dumps gives back every number's text ---------------------

number_texts = st.from_regex(
    r"\A-?(0|[1-9][0-9]{0,45})(\.[0-9]{1,40})?([eE][+-]?[0-9]{1,4})?\Z", fullmatch=True
)
_SPACE = st.sampled_from(["", " ", "\n", "\t ", "\r\n"])


@st.composite
def _spaced(draw: st.DrawFn, compact: str) -> str:
    return draw(_SPACE) + compact + draw(_SPACE)


def _text_pair(draw: st.DrawFn, value: str) -> tuple[str, str]:
    """A string as some writer might escape it, and as orjson writes it."""
    written = json.dumps(value, ensure_ascii=draw(st.booleans()))
    return written, orjson.dumps(value).decode()


# Strings that look like numbers (or like number starts) so the fast path's scan meets them.
string_values = st.one_of(
    st.text(max_size=12, alphabet=st.characters(exclude_categories=["Cs"])),
    number_texts.map(lambda n: f":{n}"),
    number_texts.map(lambda n: f"[{n},-0"),
    st.just("2024-01-05T10:00:00.123Z"),
)


@st.composite
def documents_with_numbers(draw: st.DrawFn, depth: int = 0) -> tuple[str, str]:
    """(JSON text as a server might write it, the same document as orjson writes it)."""
    kind = draw(
        st.sampled_from(["number", "string", "literal", "array", "object"][: 5 if depth < 4 else 3])
    )
    if kind == "number":
        number = draw(number_texts)
        return draw(_spaced(number)), number
    if kind == "string":
        written, compact = _text_pair(draw, draw(string_values))
        return draw(_spaced(written)), compact
    if kind == "literal":
        literal = draw(st.sampled_from(["true", "false", "null"]))
        return draw(_spaced(literal)), literal
    items = draw(st.lists(documents_with_numbers(depth + 1), max_size=4))
    if kind == "array":
        return (
            "[" + ",".join(w for w, _ in items) + draw(_SPACE) + "]",
            "[" + ",".join(c for _, c in items) + "]",
        )
    keys = draw(st.lists(string_values, min_size=len(items), max_size=len(items), unique=True))
    written_pairs, compact_pairs = [], []
    for key, (w, c) in zip(keys, items, strict=True):
        kw, kc = _text_pair(draw, key)
        written_pairs.append(draw(_SPACE) + kw + draw(_SPACE) + ":" + w)
        compact_pairs.append(kc + ":" + c)
    return (
        "{" + ",".join(written_pairs) + draw(_SPACE) + "}",
        "{" + ",".join(compact_pairs) + "}",
    )


@settings(deadline=None, max_examples=500)
@given(documents_with_numbers(), st.booleans())
@example(
    ("[0.1000000000000000055511151231257827]", "[0.1000000000000000055511151231257827]"), False
)
@example(("[1.5e-400, 1e400]", "[1.5e-400,1e400]"), True)
@example(
    ("[123456789012345678901234, -0, 1E5, 1.50]", "[123456789012345678901234,-0,1E5,1.50]"), True
)
@example(
    ("[18446744073709551615,-9223372036854775808]", "[18446744073709551615,-9223372036854775808]"),
    False,
)
@example(('{"a":"x:1.5","b":7}', '{"a":"x:1.5","b":7}'), True)
@example(('[51.473,{"a":1e-7,"b":-0.5}]', '[51.473,{"a":1e-7,"b":-0.5}]'), False)  # writes back
def test_exact_decoding_keeps_every_number_as_written(
    pair: tuple[str, str], as_bytes: bool
) -> None:
    written, compact = pair
    value = jsonexact.loads(written.encode() if as_bytes else written)
    assert orjson.dumps(value).decode() == compact


def test_a_text_nested_deeper_than_orjson_writes_still_keeps_its_numbers() -> None:
    # orjson decodes 300 levels but writes at most 254: the write-back check must not raise,
    # and the scan then finds 1.50, which orjson would write as 1.5.
    value = jsonexact.loads("[" * 300 + "1.50" + "]" * 300)
    for _ in range(299):
        value = value[0]
    assert isinstance(value[0], orjson.Fragment)


def test_a_text_nested_deeper_than_orjson_reads_is_refused_on_every_python() -> None:
    # 1,100 levels holding 1.50: orjson refuses the depth; json, its fallback for numbers
    # orjson would change, decodes as deep as the interpreter lets it (3.12: 1,500 levels,
    # 3.13: 10,000). A higher recursion limit gives 3.11's json that room too.
    text = "[" * 1100 + "1.50" + "]" * 1100
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 5000))
    try:
        with pytest.raises(jsonexact.JsonRefused, match="nests too deeply"):
            jsonexact.loads(text)
    finally:
        sys.setrecursionlimit(limit)


@FUZZ
@given(st.binary(max_size=300) | st.text(max_size=300))
@example("[NaN]")
@example('["\\ud800"]')
@example('[1.5, "\\udc00"]')
@example("[" * 5000 + "1.5" + "]" * 5000)
@example("[" * 5000 + "]" * 5000)
@example(b'["\xed\xa0\x80"]')  # a surrogate encoded as UTF-8 bytes
def test_exact_decoding_refuses_with_its_own_error_only(data: bytes | str) -> None:
    try:
        value = jsonexact.loads(data)
    except jsonexact.JsonRefused:
        return
    orjson.dumps(value)  # whatever it accepts can be written as UTF-8 JSON


error_bodies = st.one_of(
    st.binary(max_size=300),
    st.fixed_dictionaries(
        {},
        optional={
            "error": st.one_of(
                json_values,
                st.fixed_dictionaries({}, optional={"code": json_values, "message": json_values}),
            )
        },
    ).flatmap(lambda d: st.booleans().map(lambda a: _lenient_json(d, ascii_only=a))),
    st.sampled_from(
        [
            b'{"error": {"code": "0x80072322", "message": "limit"}}',
            b'{"error": {"code": -2147204784, "message": "sql"}}',
            b'{"error": {"code": "' + b"9" * 5000 + b'"}}',
            b'{"error": {"code": "0x' + b"f" * 5000 + b'"}}',
            b'{"error": {"code": 1e308, "message": null}}',
            b'{"error": {"code": true, "message": ["x"]}}',
            b'{"error": "text"}',
        ]
    ),
)

retry_after_texts = st.one_of(
    st.text(max_size=60),
    st.from_regex(r"\A-?[0-9]{1,400}(\.[0-9]{0,20})?([eE][+-]?[0-9]{1,5})?\Z"),
    st.builds(
        "{}, {} {} {} {}:{}:{} {}".format,
        st.sampled_from(["Mon", "Tue", "Xyz", ""]),
        st.integers(-(10**30), 10**30),
        st.sampled_from(["Jan", "Feb", "Dec", "Foo"]),
        st.integers(-(10**30), 10**30),
        st.integers(-(10**30), 10**30),
        st.integers(-(10**30), 10**30),
        st.integers(-(10**30), 10**30),
        st.one_of(
            st.sampled_from(["GMT", "UTC", "EST", "", "-0000"]),
            st.integers(-(10**30), 10**30).map(lambda n: f"{n:+05d}"),
        ),
    ),
)

# Mostly the statuses that mean something, sometimes any number at all.
statuses = st.one_of(
    st.sampled_from([200, 400, 401, 403, 404, 429, 500, 502, 503, 504]),
    st.integers(min_value=-(2**31), max_value=2**31),
)


def _check_retry_after(seconds: float | None) -> None:
    assert seconds is None or (isinstance(seconds, float) and 0.0 <= seconds < float("inf"))


@FUZZ
@given(retry_after_texts, st.datetimes(timezones=st.just(UTC)))
@example("Mon, 01 Jan 99999999999999999999 00:00:00 GMT", NOW)
@example("Mon, 01 Jan 2024 00:00:00 +99999999999999999999", NOW)
@example("Mon, 99999999999999 Jan 2024 00:00:00 GMT", NOW)
@example("nan", NOW)
@example("-inf", NOW)
@example("1e400", NOW)
@example("Sun, 06 Nov 1994 08:49:37", NOW)
def test_parse_retry_after_never_raises(text: str, now: datetime) -> None:
    try:
        seconds = parse_retry_after(text, now)
    except Exception as exc:
        raise AssertionError(
            f"parse_retry_after({text!r}) raised {type(exc).__name__}: a Retry-After header "
            "must give seconds or None, never an exception that ends the run"
        ) from exc
    _check_retry_after(seconds)


def test_parse_retry_after_reads_both_documented_forms() -> None:
    later = NOW + timedelta(seconds=90)
    assert parse_retry_after("90", NOW) == 90.0
    assert parse_retry_after(later.strftime("%a, %d %b %Y %H:%M:%S GMT"), NOW) == 90.0
    assert parse_retry_after("Sun, 01 Jun 2025 13:00:00 +0100", NOW) == 0.0
    assert parse_retry_after(None, NOW) is None
    assert parse_retry_after("soon", NOW) is None


@FUZZ
@given(
    statuses,
    error_bodies,
    st.dictionaries(
        st.sampled_from(["Retry-After", "Content-Type", "x-ms-dop-hint", "Date"]),
        retry_after_texts,
    ),
    st.datetimes(timezones=st.sampled_from([UTC, timezone(timedelta(hours=-11))])),
)
@example(429, b"", {"Retry-After": "Mon, 01 Jan 99999999999999999999 00:00:00 GMT"}, NOW)
@example(
    429,
    b"",
    {"Retry-After": "Mon, 01 Jan 9999 00:00:00 GMT", "Date": "Mon, 01 Jan 0001 00:00:00 -2359"},
    NOW,
)
def test_classify_error_always_gives_an_error_of_the_tree(
    status: int, raw: bytes, headers: dict[str, str], now: datetime
) -> None:
    try:
        error = classify_error(CONTEXT, status, headers, raw, now)
    except Exception as exc:
        raise AssertionError(
            f"classify_error(status={status}, Retry-After={headers.get('Retry-After')!r}) "
            f"raised {type(exc).__name__}; it must always return an error of the tree"
        ) from exc
    assert isinstance(error, DataverseError)
    assert error.context == CONTEXT
    assert isinstance(error.code, str)
    assert len(error.detail) <= 400
    assert isinstance(str(error), str)
    if status == 429:
        assert isinstance(error, Throttled)
        _check_retry_after(error.retry_after)
