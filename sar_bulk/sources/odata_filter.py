"""Safe OData ``$filter`` text and query strings: values never change what a filter means.

Usage::

    any_equal("msdynmkt_contactpointvalue", ["a@x.org", "o'brien@x.org"])
    # "(msdynmkt_contactpointvalue eq 'a@x.org' or msdynmkt_contactpointvalue eq 'o''brien@x.org')"
    equal_guid("_parentcontactid_value", contact_id)   # GUID checked, written bare
    render_template("_x_value eq {contact_id}", contact_id=cid)
    query({"$select": "contactid", "$filter": text})    # "?%24select=..." percent-encoded

Why: the values come from the org (a contact's e-mail address) or from the operator's config; an
address holding ``'`` or ``&`` must stay one literal. OData string literals double their ``'``;
GUIDs are validated and written bare; column names must be plain identifiers; the whole value is
percent-encoded (``+`` in an address would otherwise arrive as a space).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Mapping
from typing import Final
from urllib.parse import quote

from sar_bulk.errors import ConfigError

__all__ = [
    "PLACEHOLDERS",
    "any_equal",
    "any_equal_guid",
    "equal_guid",
    "guid_literal",
    "identifier",
    "query",
    "render_template",
    "string_literal",
    "template_fields",
]

# A column or navigation path: name(/name)*, as Dataverse logical names are.
_IDENTIFIER: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:/[A-Za-z_][A-Za-z0-9_]*)*")
_PLACEHOLDER: Final = re.compile(r"\{([^{}]*)\}")
_GUID_SHAPE: Final = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
)
PLACEHOLDERS: Final = frozenset({"contact_id", "email", "phone"})


def string_literal(value: str) -> str:
    """``value`` as an OData string literal: quoted, every ``'`` doubled."""
    if "\x00" in value:
        raise ValueError("an OData string literal cannot hold a NUL character")
    return "'" + value.replace("'", "''") + "'"


def guid_literal(value: str) -> str:
    """A GUID in the bare canonical form OData compares ``_x_value`` lookups with."""
    if not _GUID_SHAPE.fullmatch(value):
        raise ValueError(f"not a GUID: {value[:40]!r}")
    return str(uuid.UUID(value))


def identifier(name: str) -> str:
    """A column name or navigation path, refused unless it is a plain identifier."""
    if not _IDENTIFIER.fullmatch(name):
        raise ValueError(f"not a column name: {name[:40]!r}")
    return name


def equal_guid(column: str, value: str) -> str:
    """``column eq <guid>``."""
    return f"{identifier(column)} eq {guid_literal(value)}"


def any_equal(column: str, values: Iterable[str]) -> str:
    """``(column eq 'a' or column eq 'b')`` for one or more values."""
    name = identifier(column)
    terms = [f"{name} eq {string_literal(value)}" for value in values]
    if not terms:
        raise ValueError("any_equal needs at least one value")
    return "(" + " or ".join(terms) + ")"


def any_equal_guid(column: str, values: Iterable[str]) -> str:
    """``(column eq g1 or column eq g2)`` for one or more GUIDs."""
    name = identifier(column)
    terms = [f"{name} eq {guid_literal(value)}" for value in values]
    if not terms:
        raise ValueError("any_equal_guid needs at least one value")
    return "(" + " or ".join(terms) + ")"


def template_fields(template: str) -> frozenset[str]:
    """The placeholders a custom table's filter uses; unknown ones are a ``ConfigError``."""
    found = frozenset(_PLACEHOLDER.findall(template))
    unknown = found - PLACEHOLDERS
    if unknown:
        names = ", ".join(sorted(repr(name) for name in unknown))
        raise ConfigError(
            f"filter template uses unknown placeholder(s) {names}; "
            "use {contact_id}, {email} or {phone}"
        )
    return found


def render_template(
    template: str, *, contact_id: str, email: str | None = None, phone: str | None = None
) -> str:
    """Fill ``{contact_id}`` (bare GUID), ``{email}`` and ``{phone}`` (quoted literals)."""
    template_fields(template)
    values = {
        "contact_id": guid_literal(contact_id),
        "email": None if email is None else string_literal(email),
        "phone": None if phone is None else string_literal(phone),
    }

    def fill(match: re.Match[str]) -> str:
        value = values[match.group(1)]
        if value is None:
            raise ValueError(f"no value for {{{match.group(1)}}}")
        return value

    # One pass: a value that itself holds "{email}" is never expanded again.
    return _PLACEHOLDER.sub(fill, template)


def query(params: Mapping[str, str]) -> str:
    """``?k=v&...`` with every value percent-encoded (keys keep their ``$``)."""
    if not params:
        return ""
    return "?" + "&".join(
        f"{quote(key, safe='$')}={quote(value, safe='')}" for key, value in params.items()
    )
