"""OData filter building: literals round-trip, GUIDs are checked, templates fill once."""

from __future__ import annotations

import re
import uuid
from urllib.parse import parse_qsl

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sar_bulk.errors import ConfigError
from sar_bulk.sources.odata_filter import (
    any_equal,
    equal_guid,
    guid_literal,
    identifier,
    query,
    render_template,
    string_literal,
    template_fields,
)

# Lone surrogates cannot be sent at all (query raises UnicodeEncodeError, a ValueError).
texts = st.text(alphabet=st.characters(codec="utf-8", blacklist_characters="\x00"), max_size=60)


def parse_literal(text: str) -> tuple[str, str]:
    """An OData string literal at the start of ``text``: (its value, what follows)."""
    assert text.startswith("'")
    out: list[str] = []
    i = 1
    while True:
        j = text.index("'", i)
        out.append(text[i:j])
        if text[j + 1 : j + 2] == "'":
            out.append("'")
            i = j + 2
            continue
        return "".join(out), text[j + 1 :]


@given(texts)
def test_string_literal_round_trips_and_ends_where_it_should(value: str) -> None:
    parsed, rest = parse_literal(string_literal(value) + " or x eq 1")
    assert parsed == value
    assert rest == " or x eq 1"


@given(st.lists(texts, min_size=1, max_size=5))
def test_any_equal_keeps_every_value_one_literal(values: list[str]) -> None:
    text = any_equal("emailaddress1", values)
    assert text.startswith("(")
    assert text.endswith(")")
    body = text[1:-1]
    got = []
    for n in range(len(values)):
        prefix = ("" if n == 0 else " or ") + "emailaddress1 eq "
        assert body.startswith(prefix)
        value, body = parse_literal(body[len(prefix) :])
        got.append(value)
    assert body == ""
    assert got == values


@given(st.dictionaries(st.sampled_from(["$filter", "$select", "$top"]), texts, min_size=1))
def test_query_values_decode_back_exactly(params: dict[str, str]) -> None:
    text = query(params)
    assert re.fullmatch(r"\?[A-Za-z0-9$%=&._~-]*", text)
    assert dict(parse_qsl(text[1:], keep_blank_values=True)) == params


def test_plus_and_ampersand_in_an_address_stay_in_the_value() -> None:
    text = query({"$filter": any_equal("x", ["a+b&c=d#e@f.org"])})
    assert "+" not in text
    assert "#" not in text
    assert dict(parse_qsl(text[1:]))["$filter"] == "(x eq 'a+b&c=d#e@f.org')"


@given(st.uuids())
def test_guid_literal_is_canonical(value: uuid.UUID) -> None:
    assert guid_literal(str(value).upper()) == str(value)
    assert equal_guid("_a_value", str(value)) == f"_a_value eq {value}"


@pytest.mark.parametrize(
    "bad", ["", "x", "{" + str(uuid.UUID(int=1)) + "}", str(uuid.UUID(int=1)) + " or 1 eq 1"]
)
def test_guid_literal_refuses_what_is_not_a_bare_guid(bad: str) -> None:
    with pytest.raises(ValueError, match="not a GUID"):
        guid_literal(bad)


@pytest.mark.parametrize("bad", ["", "a b", "a eq 1", "x'", "1abc", "a//b", "a/"])
def test_identifier_refuses_anything_but_a_name(bad: str) -> None:
    with pytest.raises(ValueError, match="not a column name"):
        identifier(bad)


def test_a_lone_surrogate_is_refused() -> None:
    with pytest.raises(ValueError, match="surrogates"):
        query({"$filter": string_literal("\ud800")})


def test_nul_cannot_be_a_literal() -> None:
    with pytest.raises(ValueError, match="NUL"):
        string_literal("a\x00b")


@given(texts)
def test_template_fills_each_placeholder_once(email: str) -> None:
    contact = str(uuid.UUID(int=7))
    text = render_template(
        "emailaddress eq {email} and _c_value eq {contact_id}", contact_id=contact, email=email
    )
    value, rest = parse_literal(text.removeprefix("emailaddress eq "))
    assert value == email
    assert rest == f" and _c_value eq {contact}"


def test_template_refuses_unknown_placeholders_and_missing_values() -> None:
    with pytest.raises(ConfigError, match="'name'"):
        template_fields("x eq {name}")
    with pytest.raises(ConfigError):
        template_fields("x eq {email.__class__}")
    with pytest.raises(ValueError, match="no value for"):
        render_template("x eq {phone}", contact_id=str(uuid.UUID(int=1)))
    assert template_fields("a eq {email} and b eq {contact_id}") == {"email", "contact_id"}
