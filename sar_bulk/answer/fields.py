"""How a field of the org's data is shown to a person: its label, its order, its value as text.

Usage::

    columns = interaction_columns(rows)          # personal fields first, technical ids last
    label("EmailAddressUsed")                    # "Email address used"
    show(row.get("Timestamp"))                   # "4 March 2024, 13:10 UTC"
    record_fields(contact_row)                   # [(label, text)] with Dataverse's formatted values

Shared by the HTML and the text renderer so both say the same thing. Values are returned as
plain text; escaping is the renderer's job (HTML escapes every one of them).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping
from datetime import UTC, date, datetime
from typing import Any, Final

from sar_bulk.answer.view import TypeRows, parse_stamp, parse_when
from sar_bulk.dates import MONTHS

__all__ = [
    "KindTables",
    "interaction_columns",
    "label",
    "long_date",
    "long_day",
    "record_fields",
    "show",
    "shown_cells",
]

_FORMATTED: Final = "@OData.Community.Display.V1.FormattedValue"

_STRINGS: Final = frozenset({str})
_PLAIN: Final = frozenset({str, type(None)})

# Columns every row of one table repeats (the type is the table, the contact is the person).
_DROPPED: Final = frozenset({"InteractionType", "ContactId"})

# Known Dataverse columns and what a person calls them.
_LABELS: Final[dict[str, str]] = {
    "fullname": "Full name",
    "firstname": "First name",
    "middlename": "Middle name",
    "lastname": "Last name",
    "salutation": "Salutation",
    "jobtitle": "Job title",
    "birthdate": "Date of birth",
    "gendercode": "Gender",
    "emailaddress1": "E-mail address",
    "emailaddress2": "Second e-mail address",
    "emailaddress3": "Third e-mail address",
    "telephone1": "Business phone",
    "telephone2": "Home phone",
    "telephone3": "Other phone",
    "mobilephone": "Mobile phone",
    "address1_line1": "Street",
    "address1_line2": "Street (2)",
    "address1_city": "City",
    "address1_stateorprovince": "State or province",
    "address1_postalcode": "Postal code",
    "address1_country": "Country",
    "address1_composite": "Address (as one line)",
    "parentcustomerid": "Company",
    "_parentcustomerid_value": "Company",
    "preferredcontactmethodcode": "Preferred way to contact you",
    "donotemail": "Do not e-mail",
    "donotbulkemail": "Do not send marketing e-mail",
    "donotphone": "Do not phone",
    "donotpostalmail": "Do not send post",
    "msdynmkt_contactpointvalue": "E-mail address or phone number",
    "msdynmkt_contactpointtype": "Channel",
    "msdynmkt_value": "Consent",
    "msdynmkt_contactpointconsenttype": "Consent for",
    "_msdynmkt_purposeid_value": "Purpose",
    "_msdynmkt_topicid_value": "Topic",
    "msdynmkt_source": "Source",
    "msdynmkt_reason": "Reason",
    "subject": "Subject",
    "description": "Description",
    # The other tables the records source reads (leads, accounts, activities, their parties,
    # earlier subject requests): their logical names mean nothing to a person.
    "name": "Name",
    "companyname": "Company name",
    "_parentcontactid_value": "Contact",
    "_primarycontactid_value": "Primary contact",
    "activitytypecode": "Kind of activity",
    "_regardingobjectid_value": "About",
    "scheduledstart": "Planned for",
    "actualend": "Ended",
    "activitypointer_activity_parties": "Who took part",
    "partyidname": "Name used",
    "_partyid_value": "Participant",
    "participationtypemask": "Your part in it",
    "addressused": "Address used",
    "_activityid_value": "Activity",
    "msdynmkt_name": "Request name",
    "msdynmkt_dsrrequesttype": "Kind of request",
    "msdynmkt_dsrrequestinput": "E-mail address or phone number asked about",
    "msdynmkt_dsrrequestprogress": "Progress",
    "msdynmkt_dsrrequestdata_name": "File name",
    "_ownerid_value": "Owner (a user of the organisation)",
    "createdon": "Created",
    "modifiedon": "Last changed",
    "statecode": "Status",
    "statuscode": "Status reason",
    "contactid": "Contact id",
    "leadid": "Lead id",
    "msdynmkt_contactpointconsent4id": "Consent record id",
    "msdynmkt_gdprrequestid": "Request record id",
    "accountid": "Account id",
    "activityid": "Activity id",
    "activitypartyid": "Participation id",
    "msdynmkt_dsrrequestdata": "Export file id",
}


_WORD_BREAK: Final = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")
_INITIALISM: Final = re.compile(r"\b(crm|url|sms)\b", flags=re.IGNORECASE)


_CACHED_NAME: Final = 100  # longest column name whose label is kept


def label(column: str) -> str:
    """A person's name for a column: known Dataverse names, else PascalCase split into words."""
    if column in _LABELS:
        return _LABELS[column]
    # Column names repeat on every row of every contact, so each label is worked out once. The
    # cache is bounded in entries and, since names come from the org, in each entry's size.
    return _cached_label(column) if len(column) <= _CACHED_NAME else _label(column)


@functools.lru_cache(maxsize=4096)
def _cached_label(column: str) -> str:
    return _label(column)


def _label(column: str) -> str:
    words = _WORD_BREAK.sub(" ", column)
    words = words.replace("_", " ").strip()
    if words.endswith(" Id"):
        words = words[:-3] + " id"
    if not words.isascii():
        return words
    text = words[:1].upper() + words[1:].lower()
    # Initialisms that PascalCase spells as words ("CreateCrmActivity...") read better in capitals.
    return _INITIALISM.sub(lambda m: m.group(1).upper(), text)


def long_date(when: datetime) -> str:
    """``4 March 2024, 13:10 UTC``; an aware time of another zone is converted first (a naive
    one is taken as UTC, as the org's timestamps without a zone are)."""
    tz = when.tzinfo
    if tz is not UTC and tz is not None and when.utcoffset():
        when = when.astimezone(UTC)
    return f"{when.day} {MONTHS[when.month - 1]} {when.year}, {when.hour:02d}:{when.minute:02d} UTC"


def long_day(day: date) -> str:
    """``4 March 2024``."""
    return f"{day.day} {MONTHS[day.month - 1]} {day.year}"


def show(value: Any) -> str:
    """A JSON value as short readable text: dates spelled out, booleans as Yes/No, nesting flat."""
    if type(value) is str:  # most values: tested first, and exactly, since bool is an int
        when = parse_when(value) if "T" in value[:11] else None
        return long_date(when) if when else value
    if value is None:
        return ""
    if type(value) is dict:  # a JSON object: the Mapping case below, without its ABC check
        return _nested(value)
    if isinstance(value, bool):
        return "Yes" if value else "No"
    if isinstance(value, str):
        when = parse_when(value) if "T" in value[:11] else None
        return long_date(when) if when else value
    if isinstance(value, float):
        # As held: the shortest text that reads back as the same number ("47.6062095", not
        # "47.6062" as :g rounds to six digits); whole numbers without ".0".
        if value.is_integer() and abs(value) < 1e16:
            return str(int(value))
        return repr(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, Mapping):
        return _nested(value)
    if isinstance(value, list):
        return ", ".join(show(v) for v in value)
    return str(value)


def _is_technical(column: str) -> bool:
    # Interaction ids are PascalCase ("MessageId"), Dataverse keys lower case ("contactid");
    # lookups ("_parentcustomerid_value") are shown by their formatted value, so they stay.
    return column.endswith(("Id", "id"))


def interaction_columns(rows: Iterable[Mapping[str, Any]]) -> list[str]:
    """Columns of one type's table: Timestamp, then personal fields, then technical ids."""
    seen: dict[str, None] = {}
    for row in rows:
        # Rows of one type mostly share their columns: a row that adds none costs one set test.
        if not seen.keys() >= row.keys():
            seen.update(dict.fromkeys(row))
    columns = [c for c in seen if c != "Timestamp" and c not in _DROPPED]
    personal = [c for c in columns if not _is_technical(c)]
    technical = [c for c in columns if _is_technical(c)]
    return (["Timestamp"] if "Timestamp" in seen else []) + personal + technical


def record_fields(row: Mapping[str, Any]) -> list[tuple[str, str]]:
    """A Dataverse row as (label, text), using the org's formatted values where it sent them
    (but for dates and times, which are shown as everywhere else in the answer).

    Known columns come first in the order of ``_LABELS``; annotations (``@odata...``) are left
    out, and other columns follow with their own names, technical ids last.
    """
    columns = [c for c in row if "@" not in c]
    known = [c for c in _LABELS if c in row]
    rest = [c for c in columns if c not in _LABELS]
    ordered = (
        [c for c in known if not _is_technical(c)]
        + [c for c in rest if not _is_technical(c)]
        + [c for c in known if _is_technical(c)]
        + [c for c in rest if _is_technical(c)]
    )
    fields: list[tuple[str, str]] = []
    for column in ordered:
        value = row[column]
        formatted = row.get(column + _FORMATTED)
        text = show(value) if formatted is None else (_own_date(value) or str(formatted))
        if text:
            fields.append((label(column), text))
    return fields


def _nested(row: Mapping[Any, Any]) -> str:
    """A JSON object inside a value (a Dataverse row's expanded rows: an activity's parties) as
    its top-level rows are shown: formatted values, labels, no ``@odata`` annotations. Shown
    key by key, "Partyid value@odata.community.display.v1.formatted value: Zoë" reached the
    page."""
    return "; ".join(
        f"{key}: {text}" for key, text in record_fields({str(k): v for k, v in row.items()})
    )


_DAY: Final = re.compile(r"\d{4}-\d{2}-\d{2}")


def _own_date(value: Any) -> str:
    """A date or time of a Dataverse row as the answer writes it, "" for any other value.

    Dataverse formats them in the calling user's time zone and locale ("3/4/2024 5:10 AM": which
    day, and which zone?); the answer shows times in UTC and days spelled out, as everywhere.
    """
    if type(value) is not str:
        return ""
    if _DAY.fullmatch(value):
        try:
            return long_day(date.fromisoformat(value))
        except ValueError:
            return ""
    when = parse_when(value) if "T" in value[:11] else None
    return long_date(when) if when else ""


def shown_cells(rows: Iterable[Mapping[str, Any]], columns: list[str]) -> list[list[str]]:
    """``[[show(row.get(c)) for c in columns] for row in rows]``, with ``show``'s common cases
    done in place (a string, a timestamp) or once (a flat object seen before)."""
    table: list[list[str]] = []
    objects: dict[tuple[tuple[str, str | None], ...], str] = {}
    for row in rows:
        cells: list[str] = []
        for value in map(row.get, columns):
            if type(value) is str:
                if "T" in value[:11]:
                    when = parse_stamp(value)
                    if when:
                        value = long_date(when)
                cells.append(value)
            elif value is None:
                cells.append("")
            elif type(value) is dict and _flat(value):
                # Nested objects such as Geo repeat from row to row: each shown once.
                key = tuple(value.items())
                text = objects.get(key)
                if text is None:
                    text = objects[key] = show(value)
                cells.append(text)
            else:
                cells.append(show(value))
        table.append(cells)
    return table


def _flat(value: dict[Any, Any]) -> bool:
    """Only strings as keys and only strings or nulls as values: the object's items then say
    exactly what ``show`` makes of it (no 1 == True == 1.0), and can be a dictionary key."""
    return _STRINGS.issuperset(map(type, value)) and _PLAIN.issuperset(map(type, value.values()))


class KindTables:
    """Each kind's columns and its rows' values as text, worked out once for both files.

    ``answer_files`` hands one to both renderers: index.html shows every kept row and
    README.txt the newest ``TEXT_ROWS`` of them, the same text for the same cell. Keyed by the
    kind's name, so one instance serves one view only.
    """

    __slots__ = ("_done",)

    def __init__(self) -> None:
        self._done: dict[str, tuple[list[str], list[list[str]]]] = {}

    def of(self, kind: TypeRows, limit: int | None = None) -> tuple[list[str], list[list[str]]]:
        """The columns of ``kind`` and the values of its first ``limit`` rows (all: ``None``)."""
        wanted = len(kind.rows) if limit is None else min(limit, len(kind.rows))
        done = self._done.get(kind.name)
        if done is not None and len(done[1]) >= wanted:
            return done[0], done[1][:wanted]
        columns = done[0] if done is not None else interaction_columns(kind.rows)
        cells = shown_cells(kind.rows[:wanted], columns)
        self._done[kind.name] = (columns, cells)
        return columns, cells
