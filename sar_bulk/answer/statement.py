"""The controller's statement: what Article 15 GDPR says a person must be told besides their data.

Usage::

    statement = load_statement(document.get("controller"))   # None when the table is absent
    if statement is None: ...                                  # the answer says it is missing

The statement comes from the ``[controller]`` table of the run's TOML file (``sar-bulk init``
writes a commented template). sar-bulk never invents any of it: a missing table gives ``None`` and
the answer says plainly that the statement is missing; a table that is there must be complete,
and every problem is a ``ConfigError`` that names the key and what to write. Values still holding
the template's ``<placeholder>`` text are refused, so an untouched template cannot be sent.

The list of rights (Articles 15-22 and 77) is the law, not the controller's text, so the renderers
always state it; ``rights_note`` adds how this controller handles them (e.g. a form to use).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from sar_bulk.errors import ConfigError

__all__ = ["NOT_FILLED_IN", "Purpose", "Statement", "Transfer", "load_statement", "mark_unfilled"]

# The template's placeholders are phrases ("<how to reach you about personal data, ...>"): a
# word right after "<" and a space inside. An address in angle brackets ("Privacy Team
# <privacy@contoso.com>", "<https://...>") has no space, and is a value, not a placeholder.
_PLACEHOLDER: Final = re.compile(r"<(?=[^<>]*\s)[^\s<>][^<>]{2,}>")
_WHERE: Final = "config [controller]"
NOT_FILLED_IN: Final = "(not filled in yet)"


@dataclass(frozen=True, slots=True)
class Purpose:
    """One purpose of the processing and the legal basis it rests on (Art. 6 / Art. 9)."""

    purpose: str
    legal_basis: str


@dataclass(frozen=True, slots=True)
class Transfer:
    """Personal data sent outside the EEA: where to, and under which safeguard (Art. 46)."""

    destination: str
    safeguard: str


@dataclass(frozen=True, slots=True)
class Statement:
    """What Art. 15(1)-(2) requires next to the copy of the data, in the controller's words."""

    name: str
    address: str
    contact: str
    supervisory_authority: str
    purposes: tuple[Purpose, ...]
    categories: tuple[str, ...]
    recipients: tuple[str, ...]
    retention: str
    source_of_data: str
    automated_decisions: str
    transfers: tuple[Transfer, ...]
    dpo: str | None = None
    rights_note: str | None = None


_REQUIRED_TEXT: Final = (
    "name",
    "address",
    "contact",
    "supervisory_authority",
    "retention",
    "source_of_data",
    "automated_decisions",
)
_OPTIONAL_TEXT: Final = ("dpo", "rights_note")
_TEXT_LISTS: Final = ("categories", "recipients")
_KNOWN: Final = frozenset({*_REQUIRED_TEXT, *_OPTIONAL_TEXT, *_TEXT_LISTS, "purposes", "transfers"})


def mark_unfilled(value: Any) -> Any:
    """A copy of a ``[controller]`` table whose template placeholders say "not filled in yet".

    Only for ``sar-bulk demo --config``: a draft statement (the name filled in, the rest still
    the template's) shows what its answers will look like. A run never does this: ``run``
    refuses placeholders, so an unfinished statement is never sent to anyone.
    """
    if isinstance(value, str):
        return NOT_FILLED_IN if _PLACEHOLDER.search(value) else value
    if isinstance(value, Mapping):
        return {key: mark_unfilled(item) for key, item in value.items()}
    if isinstance(value, list):
        return [mark_unfilled(item) for item in value]
    return value


def load_statement(table: Mapping[str, Any] | None) -> Statement | None:
    """The ``[controller]`` table checked and typed; ``None`` when there is no table."""
    if table is None:
        return None
    if not isinstance(table, Mapping):
        raise ConfigError(f"{_WHERE} must be a table, e.g. a [controller] section")
    unknown = sorted(set(table) - _KNOWN)
    if unknown:
        raise ConfigError(
            f"{_WHERE}: unknown key {unknown[0]!r}; known: {', '.join(sorted(_KNOWN))}"
        )
    missing = [
        key for key in (*_REQUIRED_TEXT, *_TEXT_LISTS, "purposes", "transfers") if key not in table
    ]
    if missing:
        raise ConfigError(
            f"{_WHERE} lacks {', '.join(missing)}: Article 15 GDPR requires them in every "
            "answer; `sar-bulk init` writes a template that explains each"
        )
    purposes = _tables(table["purposes"], "purposes", ("purpose", "legal_basis"), at_least_one=True)
    transfers = _tables(table["transfers"], "transfers", ("destination", "safeguard"))
    return Statement(
        name=_text(table["name"], "name"),
        address=_text(table["address"], "address"),
        contact=_text(table["contact"], "contact"),
        supervisory_authority=_text(table["supervisory_authority"], "supervisory_authority"),
        purposes=tuple(
            Purpose(
                _text(item.get("purpose"), f"purposes[{n}].purpose"),
                _text(item.get("legal_basis"), f"purposes[{n}].legal_basis"),
            )
            for n, item in enumerate(purposes)
        ),
        categories=_text_list(table["categories"], "categories"),
        recipients=_text_list(table["recipients"], "recipients"),
        retention=_text(table["retention"], "retention"),
        source_of_data=_text(table["source_of_data"], "source_of_data"),
        automated_decisions=_text(table["automated_decisions"], "automated_decisions"),
        transfers=tuple(
            Transfer(
                _text(item.get("destination"), f"transfers[{n}].destination"),
                _text(item.get("safeguard"), f"transfers[{n}].safeguard"),
            )
            for n, item in enumerate(transfers)
        ),
        dpo=_text(table["dpo"], "dpo") if "dpo" in table else None,
        rights_note=_text(table["rights_note"], "rights_note") if "rights_note" in table else None,
    )


def _text(value: object, key: str) -> str:
    if value is None:
        raise ConfigError(f"{_WHERE}: {key} is missing")
    if not isinstance(value, str):
        raise ConfigError(f"{_WHERE}: {key} must be text in quotes, not {type(value).__name__}")
    cleaned = value.strip()
    if not cleaned:
        raise ConfigError(f"{_WHERE}: {key} is empty; write what the person must be told")
    if placeholder := _PLACEHOLDER.search(cleaned):
        raise ConfigError(
            f"{_WHERE}: {key} still holds the template's placeholder "
            f"{placeholder.group(0)!r}; replace it with your own text"
        )
    return cleaned


def _text_list(value: object, key: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not value:
        raise ConfigError(f'{_WHERE}: {key} must be a non-empty list of texts, e.g. ["..."]')
    return tuple(_text(item, f"{key}[{n}]") for n, item in enumerate(value))


def _tables(
    value: object, key: str, fields: tuple[str, ...], *, at_least_one: bool = False
) -> list[Mapping[str, Any]]:
    example = f"[[controller.{key}]] with " + " and ".join(fields)
    if not isinstance(value, list) or (at_least_one and not value):
        raise ConfigError(f"{_WHERE}: {key} must be a list of tables ({example})")
    for n, item in enumerate(value):
        if not isinstance(item, Mapping):
            raise ConfigError(f"{_WHERE}: {key}[{n}] must be a table ({example})")
        extra = sorted(set(item) - set(fields))
        if extra:
            raise ConfigError(f"{_WHERE}: {key}[{n}] has unknown key {extra[0]!r} ({example})")
    return list(value)
