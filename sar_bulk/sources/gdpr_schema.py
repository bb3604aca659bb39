"""Real-time journeys' subject-request table, as this org's metadata describes it.

Usage::

    schemas = SchemaCache()                         # one per source instance, so once per run
    schema = await schemas.get(api)                 # single-flight: the first caller loads it
    schema.entity_set, schema.input_column, schema.export_value

Why: Microsoft documents the form labels of ``msdynmkt_gdprrequest`` (Name, DsrRequestType,
DsrRequestInput, DsrRequestProgress, DsrRequestData) and the option labels (Export, InProgress,
Completed), but not the logical names of most columns nor any option value. So they are read
from ``EntityDefinitions`` and matched by label, never hard-coded. Three requests per run:

1. ``EntityDefinitions(LogicalName='msdynmkt_gdprrequest')`` with
   ``$select=EntitySetName,PrimaryIdAttribute,PrimaryNameAttribute``
2. ``.../Attributes?$select=LogicalName,DisplayName,AttributeOf`` (columns by display label)
3. ``.../Attributes/Microsoft.Dynamics.CRM.PicklistAttributeMetadata`` with
   ``$select=LogicalName&$expand=OptionSet`` (option values by label)

Labels are compared without case, spaces or punctuation ("DSR request type" matches
"DsrRequestType"); attributes that belong to another one (``AttributeOf`` set: the ``..name``
companions) are skipped. A label found on no column, or on two, is a ``SchemaMismatch``.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from sar_bulk.dataverse.webapi import WebApi
from sar_bulk.errors import DataverseError
from sar_bulk.sources.odata_filter import identifier

__all__ = [
    "LOGICAL_NAME",
    "GdprSchema",
    "SchemaCache",
    "SchemaMismatch",
    "label_key",
    "parse_schema",
]

LOGICAL_NAME: Final = "msdynmkt_gdprrequest"
_BASE: Final = f"EntityDefinitions(LogicalName='{LOGICAL_NAME}')"
ENTITY_PATH: Final = f"{_BASE}?$select=EntitySetName,PrimaryIdAttribute,PrimaryNameAttribute"
ATTRIBUTES_PATH: Final = f"{_BASE}/Attributes?$select=LogicalName,DisplayName,AttributeOf"
PICKLISTS_PATH: Final = (
    f"{_BASE}/Attributes/Microsoft.Dynamics.CRM.PicklistAttributeMetadata"
    "?$select=LogicalName&$expand=OptionSet"
)
_NOT_ALNUM: Final = re.compile(r"[^0-9a-z]+")


class SchemaMismatch(DataverseError):
    """The org's metadata for msdynmkt_gdprrequest is not what Microsoft documents."""

    advice = "the real-time journeys subject-request table differs from the documented one"


@dataclass(frozen=True, slots=True)
class GdprSchema:
    """Logical names and option values of msdynmkt_gdprrequest in this org."""

    entity_set: str
    id_column: str
    name_column: str
    type_column: str
    input_column: str
    progress_column: str
    data_column: str
    export_value: int
    in_progress_value: int | None
    completed_value: int


def label_key(label: str) -> str:
    """The form a label is compared in: lower case letters and digits only."""
    return _NOT_ALNUM.sub("", label.lower())


def _label(node: Any) -> str | None:
    """``X.UserLocalizedLabel.Label``, else the first of ``X.LocalizedLabels``."""
    if not isinstance(node, Mapping):
        return None
    user = node.get("UserLocalizedLabel")
    if isinstance(user, Mapping) and isinstance(user.get("Label"), str):
        return str(user["Label"])
    for localized in node.get("LocalizedLabels") or ():
        if isinstance(localized, Mapping) and isinstance(localized.get("Label"), str):
            return str(localized["Label"])
    return None


def _rows(document: Mapping[str, Any], what: str) -> list[Mapping[str, Any]]:
    rows = document.get("value")
    if not isinstance(rows, list):
        raise SchemaMismatch(None, f"the {what} metadata has no 'value' list")
    return [row for row in rows if isinstance(row, Mapping)]


def _text(document: Mapping[str, Any], key: str) -> str:
    value = document.get(key)
    if not isinstance(value, str) or not value:
        raise SchemaMismatch(None, f"the table metadata has no {key}")
    return _name(value, key)


def _name(value: str, what: str) -> str:
    """A name from the org's metadata goes into URLs and filters: a plain identifier only."""
    try:
        return identifier(value)
    except ValueError:
        raise SchemaMismatch(None, f"the metadata's {what} is not a plain name") from None


def parse_schema(
    entity: Mapping[str, Any], attributes: Mapping[str, Any], picklists: Mapping[str, Any]
) -> GdprSchema:
    """Build the schema from the three metadata answers, or raise ``SchemaMismatch``."""
    by_label: dict[str, list[str]] = {}
    for row in _rows(attributes, "column"):
        name = row.get("LogicalName")
        label = _label(row.get("DisplayName"))
        if not isinstance(name, str) or label is None or row.get("AttributeOf"):
            continue
        by_label.setdefault(label_key(label), []).append(name)

    def column(label: str, fallback: str | None = None) -> str:
        names = by_label.get(label_key(label), [])
        if len(names) == 1:
            return _name(names[0], f"column labelled {label!r}")
        if not names and fallback is not None:
            return fallback
        found = "no column" if not names else f"{len(names)} columns"
        raise SchemaMismatch(None, f"{found} labelled {label!r} on {LOGICAL_NAME}")

    options: dict[str, dict[str, int]] = {}
    for row in _rows(picklists, "choice"):
        name = row.get("LogicalName")
        option_set = row.get("OptionSet")
        if not isinstance(name, str) or not isinstance(option_set, Mapping):
            continue
        values: dict[str, int] = {}
        for entry in option_set.get("Options") or ():
            if not isinstance(entry, Mapping):
                continue
            value, label = entry.get("Value"), _label(entry.get("Label"))
            if isinstance(value, int) and not isinstance(value, bool) and label is not None:
                values.setdefault(label_key(label), value)
        options[name] = values

    def option(choice: str, label: str) -> int | None:
        return options.get(choice, {}).get(label_key(label))

    def required(choice: str, label: str) -> int:
        value = option(choice, label)
        if value is None:
            raise SchemaMismatch(None, f"choice {choice} has no option labelled {label!r}")
        return value

    type_column = column("DsrRequestType")
    progress_column = column("DsrRequestProgress")
    return GdprSchema(
        entity_set=_text(entity, "EntitySetName"),
        id_column=_text(entity, "PrimaryIdAttribute"),
        name_column=column("Name", fallback=_text(entity, "PrimaryNameAttribute")),
        type_column=type_column,
        input_column=column("DsrRequestInput"),
        progress_column=progress_column,
        data_column=column("DsrRequestData"),
        export_value=required(type_column, "Export"),
        in_progress_value=option(progress_column, "InProgress"),
        completed_value=required(progress_column, "Completed"),
    )


class SchemaCache:
    """Loads the schema once (single-flight); a failed load is tried again by the next caller."""

    __slots__ = ("_lock", "_schema")

    def __init__(self) -> None:
        self._lock = asyncio.Lock()
        self._schema: GdprSchema | None = None

    async def get(self, api: WebApi) -> GdprSchema:
        if self._schema is not None:
            return self._schema
        async with self._lock:
            if self._schema is None:
                entity = await api.get_json(api.url(ENTITY_PATH))
                attributes = await api.get_json(api.url(ATTRIBUTES_PATH))
                picklists = await api.get_json(api.url(PICKLISTS_PATH))
                self._schema = parse_schema(entity, attributes, picklists)
            return self._schema
