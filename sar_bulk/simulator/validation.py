"""What a request must look like before the action runs: headers, token shape and body.

Dataverse's exact messages for a bad ContactId or InteractionType are undocumented; the ones here
are modelled on its OData messages so that a client's error reporting gets realistic input:

* ``0x80048d19``: the payload or a protocol header cannot be read (bad JSON, wrong types, wrong
  Content-Type, Accept or OData version headers);
* ``0x0``: a parameter name the action does not have (names are case-sensitive);
* ``0x80040203``: a parameter with an unusable value (a GUID in braces, an unknown type, a date
  not in MM-DD-YYYY, a negative Top, a skip token this server did not issue for this query).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any

import orjson

from sar_bulk.simulator.interaction_types import InteractionType

__all__ = [
    "LoadRequest",
    "Rejection",
    "bearer_token",
    "check_headers",
    "identity_of",
    "parse_body",
]

PAYLOAD = "0x80048d19"
UNKNOWN_PROPERTY = "0x0"
INVALID_ARGUMENT = "0x80040203"

_REQUEST_TYPE = "Microsoft.Dynamics.CRM.msdyncrm_LoadInteractionsPublicRequest"
_ALLOWED = ("ContactId", "InteractionType", "DateFrom", "DateTo", "Top", "SkipToken")
_GUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_DATE = re.compile(r"(\d{2})-(\d{2})-(\d{4})", re.ASCII)
_INT32_MAX = 2**31 - 1


@dataclass(frozen=True, slots=True)
class Rejection:
    """A 400 (or other) answer in Dataverse's error shape."""

    status: int
    code: str
    message: str


@dataclass(frozen=True, slots=True)
class LoadRequest:
    """A well-formed call of the action; ``contact_id`` is lower-cased."""

    contact_id: str
    interaction_type: InteractionType
    date_from: date | None = None
    date_to: date | None = None
    top: int | None = None
    skip_token: str | None = None

    def query(self) -> str:
        """Names the query a skip token belongs to: everything but the token itself."""
        parts = [
            self.contact_id,
            self.interaction_type.value,
            self.date_from.isoformat() if self.date_from else None,
            self.date_to.isoformat() if self.date_to else None,
            self.top,
        ]
        return orjson.dumps(parts).decode()


class _Refused(Exception):
    """Raised inside the body checks; ``parse_body`` turns it into its ``Rejection``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.rejection = Rejection(400, code, message)


def _bad(code: str, message: str) -> Rejection:
    return Rejection(400, code, message)


def bearer_token(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, else ``None``."""
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or " " in token:
        return None
    return token


def identity_of(token: str) -> str:
    """The user a token belongs to: the part before the first dot (``sim-a.1`` is ``sim-a``)."""
    return token.partition(".")[0]


def _media_type(value: str) -> str:
    return value.partition(";")[0].strip().lower()


def check_headers(headers: Mapping[str, str]) -> Rejection | None:
    """The protocol headers Dataverse's Web API insists on for this call."""
    content_type = headers.get("Content-Type")
    if content_type is None or _media_type(content_type) != "application/json":
        return _bad(
            PAYLOAD,
            "A supported MIME type could not be found that matches the content type of the "
            f"payload ({content_type or 'none'!r}). The supported type is 'application/json'.",
        )
    accept = headers.get("Accept")
    if accept is None or "application/json" not in {_media_type(p) for p in accept.split(",")}:
        return _bad(
            PAYLOAD,
            f"The Accept header ({accept or 'none'!r}) does not allow 'application/json', the "
            "only format this action answers in.",
        )
    for name in ("OData-MaxVersion", "OData-Version"):
        value = headers.get(name)
        if value is None or value.strip() != "4.0":
            return _bad(
                PAYLOAD,
                f"The {name} header must be '4.0' (got {value or 'none'!r}); this service "
                "supports OData version 4.0 only.",
            )
    return None


def _literal(value: Any) -> str:
    return orjson.dumps(value).decode()


def _string(body: dict[str, Any], name: str) -> str | None:
    value = body.get(name)
    if value is None or isinstance(value, str):
        return value
    raise _Refused(
        PAYLOAD,
        f"Cannot convert the literal '{_literal(value)}' to the expected type 'Edm.String' "
        f"for parameter '{name}'.",
    )


def _date(body: dict[str, Any], name: str) -> date | None:
    text = _string(body, name)
    if text is None:
        return None
    match = _DATE.fullmatch(text)
    if match is not None:
        month, day, year = (int(group) for group in match.groups())
        try:
            return date(year, month, day)
        except ValueError:
            pass
    raise _Refused(INVALID_ARGUMENT, f"Invalid {name}: {text!r} is not a real date in MM-DD-YYYY.")


def _top(body: dict[str, Any]) -> int | None:
    value = body.get("Top")
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value > _INT32_MAX:
        raise _Refused(
            PAYLOAD,
            f"Cannot convert the literal '{_literal(value)}' to the expected type 'Edm.Int32' "
            "for parameter 'Top'.",
        )
    if value < 0:
        raise _Refused(INVALID_ARGUMENT, f"Invalid Top: {value} is negative.")
    return value


def _object(raw: bytes) -> dict[str, Any]:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise _Refused(
            PAYLOAD, "Error identified in Payload provided by the user: invalid JSON."
        ) from None
    if not isinstance(body, dict):
        raise _Refused(PAYLOAD, "Error identified in Payload provided by the user: not an object.")
    for name in body:
        if name not in _ALLOWED:
            raise _Refused(
                UNKNOWN_PROPERTY,
                f"The property '{name}' does not exist on type '{_REQUEST_TYPE}'. Make sure to "
                "only use property names that are defined by the type.",
            )
    return body


def _load_request(raw: bytes) -> LoadRequest:
    body = _object(raw)
    contact = _string(body, "ContactId")
    itype = _string(body, "InteractionType")
    skip = _string(body, "SkipToken")
    date_from = _date(body, "DateFrom")
    date_to = _date(body, "DateTo")
    top = _top(body)
    if contact is None:
        raise _Refused(INVALID_ARGUMENT, "Required parameter 'ContactId' is missing.")
    if _GUID.fullmatch(contact) is None:
        raise _Refused(
            INVALID_ARGUMENT,
            f"Invalid ContactId: {contact!r} is not a GUID of the form "
            "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx.",
        )
    if itype is None:
        raise _Refused(INVALID_ARGUMENT, "Required parameter 'InteractionType' is missing.")
    if itype not in InteractionType.__members__:
        raise _Refused(
            INVALID_ARGUMENT, f"Invalid InteractionType: {itype!r} is not a known interaction type."
        )
    if date_from is not None and date_to is not None and date_from > date_to:
        raise _Refused(INVALID_ARGUMENT, "Invalid date range: DateFrom is after DateTo.")
    # An empty SkipToken is taken as "first page", like an absent one.
    return LoadRequest(
        contact.lower(), InteractionType(itype), date_from, date_to, top, skip or None
    )


def parse_body(raw: bytes) -> LoadRequest | Rejection:
    """Decode and check the JSON body; the skip token's validity is checked by the caller."""
    try:
        return _load_request(raw)
    except _Refused as refused:
        return refused.rejection
