"""``EntityDefinitions``: the table and column metadata a client reads instead of guessing.

Served (``{t}`` is ``EntityDefinitions(LogicalName='x')``)::

    GET {t}?$select=EntitySetName,PrimaryIdAttribute,PrimaryNameAttribute
    GET {t}/Attributes?$select=LogicalName,DisplayName          (every column, with its label)
    GET {t}/Attributes/Microsoft.Dynamics.CRM.PicklistAttributeMetadata
            ?$select=LogicalName&$expand=OptionSet
    GET {t}/Attributes/Microsoft.Dynamics.CRM.FileAttributeMetadata?$select=LogicalName,MaxSizeInKB
    GET {t}/Attributes(LogicalName='y')[/Microsoft.Dynamics.CRM.PicklistAttributeMetadata]

Shapes follow Dataverse's metadata documents: labels are ``{"LocalizedLabels": [...],
"UserLocalizedLabel": {"Label": ..., "LanguageCode": 1033}}``; an option is ``{"Value": n,
"Label": <label>}`` under ``OptionSet.Options``. ``$select`` keeps the named properties plus
``MetadataId``; without ``$expand=OptionSet`` picklists come without their options.
"""

from __future__ import annotations

import re
from typing import Any

from sar_bulk.simulator.hashing import Draw, stable_digest
from sar_bulk.simulator.odata import QueryError
from sar_bulk.simulator.realtime import Options
from sar_bulk.simulator.rows import CONSENT_KIND, CONSENT_TYPE, CONSENT_VALUE
from sar_bulk.simulator.tables import Table

__all__ = ["MetadataNotFound", "answer_metadata"]

_TYPE_NAMES = {
    "String": "StringAttributeMetadata",
    "Uniqueidentifier": "UniqueIdentifierAttributeMetadata",
    "Lookup": "LookupAttributeMetadata",
    "Owner": "LookupAttributeMetadata",
    "DateTime": "DateTimeAttributeMetadata",
    "Picklist": "PicklistAttributeMetadata",
    "State": "StateAttributeMetadata",
    "Status": "StatusAttributeMetadata",
    "Integer": "IntegerAttributeMetadata",
    "Boolean": "BooleanAttributeMetadata",
    "File": "FileAttributeMetadata",
    "EntityName": "EntityNameAttributeMetadata",
}
_FILE_MAX_KB = 131_072
_ATTRIBUTE = re.compile(r"Attributes\(LogicalName='([A-Za-z0-9_]+)'\)")


class MetadataNotFound(LookupError):
    """The path names a column or a metadata type the table does not have (404)."""


def _label(text: str, seed: int) -> dict[str, Any]:
    label = {
        "Label": text,
        "LanguageCode": 1033,
        "IsManaged": True,
        "MetadataId": Draw(stable_digest(seed, "label", text)).guid(),
        "HasChanged": None,
    }
    return {"LocalizedLabels": [label], "UserLocalizedLabel": label}


def _options(table: Table, column: str, options: Options) -> dict[int, str]:
    if table.logical == "msdynmkt_gdprrequest" and column == "msdynmkt_dsrrequesttype":
        return {options.export: "Export", options.delete: "Delete"}
    if table.logical == "msdynmkt_gdprrequest" and column == "msdynmkt_dsrrequestprogress":
        return {options.in_progress: "InProgress", options.completed: "Completed"}
    return {
        "msdynmkt_contactpointtype": CONSENT_TYPE,
        "msdynmkt_value": CONSENT_VALUE,
        "msdynmkt_contactpointconsenttype": CONSENT_KIND,
        "participationtypemask": {
            1: "Sender",
            2: "To Recipient",
            3: "CC Recipient",
            8: "Regarding",
            9: "Owner",
        },
        "statecode": {0: "Active", 1: "Inactive"},
        "statuscode": {1: "Active", 2: "Inactive"},
    }.get(column, {})


def _attribute(
    table: Table, column: str, seed: int, options: Options, expand: bool
) -> dict[str, Any]:
    label, kind = table.columns[column]
    body: dict[str, Any] = {
        "@odata.type": f"#Microsoft.Dynamics.CRM.{_TYPE_NAMES[kind]}",
        "LogicalName": column.removeprefix("_").removesuffix("_value")
        if column.startswith("_")
        else column,
        "SchemaName": column,
        "AttributeType": kind,
        "DisplayName": _label(label, seed),
        "MetadataId": Draw(stable_digest(seed, "attribute", table.logical, column)).guid(),
    }
    if kind == "File":
        body["MaxSizeInKB"] = _FILE_MAX_KB
    if kind in ("Picklist", "State", "Status") and expand:
        body["OptionSet"] = {
            "Name": f"{table.logical}_{column}",
            "IsGlobal": False,
            "OptionSetType": kind,
            "Options": [
                {"Value": value, "Label": _label(text, seed)}
                for value, text in _options(table, column, options).items()
            ],
        }
    return body


def _selected(body: dict[str, Any], select: tuple[str, ...] | None) -> dict[str, Any]:
    if select is None:
        return body
    keep = {*select, "MetadataId", "@odata.type", "OptionSet"}
    return {k: v for k, v in body.items() if k in keep}


def answer_metadata(
    table: Table,
    rest: str,
    *,
    seed: int,
    options: Options,
    select: tuple[str, ...] | None,
    expand: str | None,
    context: str,
) -> dict[str, Any]:
    """The JSON body for ``EntityDefinitions(LogicalName=...){rest}``."""
    if expand not in (None, "OptionSet", "GlobalOptionSet") and not (expand or "").startswith(
        "OptionSet("
    ):
        raise QueryError(f"The $expand '{expand}' is not supported on attribute metadata.")
    wants_options = expand is not None and expand.startswith("OptionSet")
    if rest == "":
        body = {
            "@odata.context": f"{context}#EntityDefinitions/$entity",
            "LogicalName": table.logical,
            "EntitySetName": table.entity_set,
            "PrimaryIdAttribute": table.primary_id,
            "PrimaryNameAttribute": table.primary_name,
            "DisplayName": _label(table.display, seed),
            "MetadataId": Draw(stable_digest(seed, "entity", table.logical)).guid(),
        }
        return _selected(body, select)
    parts = rest.lstrip("/").split("/")
    only = parts[1].removeprefix("Microsoft.Dynamics.CRM.") if len(parts) > 1 else None
    if len(parts) > 2 or (only is not None and only not in _TYPE_NAMES.values()):
        raise MetadataNotFound(f"Resource not found for the segment '{parts[-1]}'.")
    single = _ATTRIBUTE.fullmatch(parts[0])
    if single is None and parts[0] != "Attributes":
        raise MetadataNotFound(f"Resource not found for the segment '{parts[0]}'.")
    columns = [c for c in table.columns if only is None or _TYPE_NAMES[table.columns[c][1]] == only]
    if single is not None:
        wanted = single[1]
        columns = [c for c in columns if c == wanted or c == f"_{wanted}_value"]
        if not columns:
            raise MetadataNotFound(
                f"Could not find attribute '{wanted}' of type {only or 'any'} on entity "
                f"'{table.logical}'."
            )
        body = _selected(_attribute(table, columns[0], seed, options, wants_options), select)
        return {
            "@odata.context": f"{context}#EntityDefinitions('{table.logical}')/Attributes/$entity",
            **body,
        }
    values = [
        _selected(_attribute(table, c, seed, options, wants_options), select) for c in columns
    ]
    return {
        "@odata.context": f"{context}#EntityDefinitions('{table.logical}')/Attributes",
        "value": values,
    }
