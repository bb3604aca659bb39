"""The OData query subset the simulated Web API understands: ``$filter``, ``$select``, ``Prefer``.

Usage::

    expr = parse_filter("_parentcontactid_value eq 0f0f... or subject eq 'O''Brien'")
    expr.matches(row)                       # evaluate on one row (a dict of column -> value)
    expr.anchors()                          # [(column, value), ...] if only equalities are ORed
    prefs = parse_prefer('odata.maxpagesize=50,odata.include-annotations="*"')

Supported, because it is what a subject-access client needs (anything else is a 400, as a real
org answers a query it cannot parse):

* ``column eq literal`` where literal is a GUID (bare), a quoted string (``''`` escapes a quote),
  an integer, ``true``/``false`` or ``null``;
* ``Microsoft.Dynamics.CRM.In(PropertyName='column',PropertyValues=['a','b'])``;
* ``and``, ``or`` and parentheses.

String comparison ignores case, as Dataverse's default collation does.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sar_bulk.simulator.guids import is_dashed_guid

__all__ = [
    "And",
    "AnyOf",
    "Eq",
    "Expr",
    "Guid",
    "Or",
    "Prefer",
    "QueryError",
    "guid_literal",
    "parse_filter",
    "parse_prefer",
    "parse_select",
]


class Guid(str):
    """A bare GUID literal (``eq 0f0f...``), told apart from a quoted string (``eq '0f0f...'``)."""

    __slots__ = ()


Literal = str | int | bool | None

_TOKEN = re.compile(
    r"""\s*(?:
      (?P<string>'(?:[^']|'')*')
    | (?P<guid>[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})(?![\w-])
    | (?P<number>-?\d+)(?![\w.])
    | (?P<in>Microsoft\.Dynamics\.CRM\.In)\b
    | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
    | (?P<punct>[()\[\],=])
    )""",
    re.VERBOSE,
)


class QueryError(ValueError):
    """A query option the simulated org cannot parse or does not support (answered with 400)."""


def _fold(value: Literal) -> Literal:
    return value.lower() if isinstance(value, str) else value


@dataclass(frozen=True, slots=True)
class Eq:
    column: str
    value: Literal

    def matches(self, row: Mapping[str, Any]) -> bool:
        return _fold(row.get(self.column)) == _fold(self.value)

    def columns(self) -> set[str]:
        return {self.column}

    def anchors(self) -> list[tuple[str, Literal]] | None:
        return [(self.column, self.value)]


@dataclass(frozen=True, slots=True)
class AnyOf:
    column: str
    values: tuple[Literal, ...]

    def matches(self, row: Mapping[str, Any]) -> bool:
        return _fold(row.get(self.column)) in {_fold(v) for v in self.values}

    def columns(self) -> set[str]:
        return {self.column}

    def anchors(self) -> list[tuple[str, Literal]] | None:
        return [(self.column, v) for v in self.values]


@dataclass(frozen=True, slots=True)
class And:
    parts: tuple[Expr, ...]

    def matches(self, row: Mapping[str, Any]) -> bool:
        return all(p.matches(row) for p in self.parts)

    def columns(self) -> set[str]:
        return set().union(*(p.columns() for p in self.parts))

    def anchors(self) -> list[tuple[str, Literal]] | None:
        # Any one bounded part bounds the conjunction; the rest is checked by ``matches``.
        bounded = [a for a in (p.anchors() for p in self.parts) if a is not None]
        return min(bounded, key=len) if bounded else None


@dataclass(frozen=True, slots=True)
class Or:
    parts: tuple[Expr, ...]

    def matches(self, row: Mapping[str, Any]) -> bool:
        return any(p.matches(row) for p in self.parts)

    def columns(self) -> set[str]:
        return set().union(*(p.columns() for p in self.parts))

    def anchors(self) -> list[tuple[str, Literal]] | None:
        found: list[tuple[str, Literal]] = []
        for part in self.parts:
            anchors = part.anchors()
            if anchors is None:
                return None
            found.extend(anchors)
        return found


Expr = Eq | AnyOf | And | Or


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens: list[tuple[str, str]] = []
        position = 0
        text = text.rstrip()
        while position < len(text):
            match = _TOKEN.match(text, position)
            if match is None or match.end() == position:
                raise QueryError(f"Syntax error at position {position} in '{text}'.")
            kind = match.lastgroup or ""
            self.tokens.append((kind, match[kind]))
            position = match.end()
        self.at = 0

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.at] if self.at < len(self.tokens) else None

    def take(self, kind: str, text: str | None = None) -> str:
        token = self.peek()
        if token is None or token[0] != kind or (text is not None and token[1] != text):
            shown = token[1] if token else "end of query"
            raise QueryError(f"Syntax error: expected {text or kind} but found '{shown}'.")
        self.at += 1
        return token[1]

    def keyword(self, word: str) -> bool:
        token = self.peek()
        if token is not None and token[0] == "name" and token[1] == word:
            self.at += 1
            return True
        return False

    def expr(self) -> Expr:
        parts = [self.conjunction()]
        while self.keyword("or"):
            parts.append(self.conjunction())
        return parts[0] if len(parts) == 1 else Or(tuple(parts))

    def conjunction(self) -> Expr:
        parts = [self.atom()]
        while self.keyword("and"):
            parts.append(self.atom())
        return parts[0] if len(parts) == 1 else And(tuple(parts))

    def atom(self) -> Expr:
        token = self.peek()
        if token == ("punct", "("):
            self.at += 1
            inner = self.expr()
            self.take("punct", ")")
            return inner
        if token is not None and token[0] == "in":
            return self.in_call()
        column = self.take("name")
        operator = self.take("name")
        if operator != "eq":
            raise QueryError(f"The operator '{operator}' is not supported by this org's API.")
        return Eq(column, self.literal())

    def in_call(self) -> Expr:
        self.take("in")
        self.take("punct", "(")
        if self.take("name") != "PropertyName":
            raise QueryError("Microsoft.Dynamics.CRM.In needs PropertyName first.")
        self.take("punct", "=")
        column = self.literal()
        self.take("punct", ",")
        if self.take("name") != "PropertyValues":
            raise QueryError("Microsoft.Dynamics.CRM.In needs PropertyValues second.")
        self.take("punct", "=")
        self.take("punct", "[")
        values = [self.literal()]
        while self.peek() == ("punct", ","):
            self.at += 1
            values.append(self.literal())
        self.take("punct", "]")
        self.take("punct", ")")
        if not isinstance(column, str):
            raise QueryError("PropertyName must be a quoted column name.")
        # In's values are strings; a GUID column compares them as GUIDs.
        return AnyOf(column, tuple(values))

    def literal(self) -> Literal:
        token = self.peek()
        if token is None:
            raise QueryError("Syntax error: a value is missing at the end of the query.")
        kind, text = token
        self.at += 1
        if kind == "string":
            return text[1:-1].replace("''", "'")
        if kind == "guid":
            return Guid(text.lower())
        if kind == "number":
            return int(text)
        if kind == "name" and text in ("true", "false", "null"):
            return None if text == "null" else text == "true"
        raise QueryError(f"Syntax error: '{text}' is not a value.")


def parse_filter(text: str) -> Expr:
    """The expression of a ``$filter``; ``QueryError`` for anything outside the subset."""
    parser = _Parser(text)
    if not parser.tokens:
        raise QueryError("The $filter query option is empty.")
    expr = parser.expr()
    if parser.peek() is not None:
        raise QueryError(f"Syntax error: unexpected '{parser.peek()[1]}' in '{text}'.")  # type: ignore[index]
    return expr


def parse_select(text: str | None) -> tuple[str, ...] | None:
    """The columns of ``$select`` (``None`` when absent: every column)."""
    if text is None:
        return None
    columns = tuple(part.strip() for part in text.split(","))
    if not all(re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", c) for c in columns):
        raise QueryError(f"The $select query option '{text}' is not a list of column names.")
    return columns


@dataclass(frozen=True, slots=True)
class Prefer:
    """What a request's ``Prefer`` header asks for."""

    max_page_size: int | None = None
    annotations: tuple[str, ...] = ()
    return_representation: bool = False

    def wants(self, annotation: str) -> bool:
        """True when ``odata.include-annotations`` covers ``annotation`` (``*`` patterns too)."""
        for pattern in self.annotations:
            if pattern == "*" or pattern == annotation:
                return True
            if pattern.endswith(".*") and annotation.startswith(pattern[:-1]):
                return True
        return False

    def applied(self, page_size_used: bool) -> str | None:
        """The ``Preference-Applied`` header for the preferences this answer honoured."""
        parts = []
        if page_size_used and self.max_page_size is not None:
            parts.append(f"odata.maxpagesize={self.max_page_size}")
        if self.annotations:
            parts.append(f'odata.include-annotations="{",".join(self.annotations)}"')
        if self.return_representation:
            parts.append("return=representation")
        return ",".join(parts) or None


def _split_preferences(header: str) -> Sequence[str]:
    return [part.strip() for part in re.findall(r'(?:[^,"]|"[^"]*")+', header) if part.strip()]


def parse_prefer(headers: Sequence[str]) -> Prefer:
    """Read every ``Prefer`` header; unknown preferences are ignored, as OData allows."""
    size: int | None = None
    annotations: tuple[str, ...] = ()
    representation = False
    for header in headers:
        for preference in _split_preferences(header):
            name, _, value = preference.partition("=")
            name = name.strip().lower()
            value = value.strip()
            if name == "odata.maxpagesize":
                if not value.isdigit() or int(value) < 1:
                    raise QueryError(
                        f"Prefer odata.maxpagesize={value!r} is not a positive integer."
                    )
                size = int(value)
            elif name == "odata.include-annotations":
                annotations = tuple(p.strip() for p in value.strip('"').split(",") if p.strip())
            elif name == "return" and value == "representation":
                representation = True
    return Prefer(size, annotations, representation)


def guid_literal(value: Literal) -> str | None:
    """A filter value as a row id, if it is one."""
    return value.lower() if isinstance(value, str) and is_dashed_guid(value) else None
