"""Rows for the Web API: which rows an anchor equality selects, and how one is rendered.

Usage::

    rows = find_rows(state, TABLES["leads"], "_parentcontactid_value", contact_id)
    body = render(rows[0], TABLES["leads"], select=("subject",), prefer=prefer)

``render`` returns the selected columns plus the primary id and ``@odata.etag``; formatted values
(``col@OData.Community.Display.V1.FormattedValue``) and lookup annotations
(``@Microsoft.Dynamics.CRM.lookuplogicalname``, ``...associatednavigationproperty``) only when the
request's ``Prefer: odata.include-annotations`` covers them, as Dataverse does.
"""

from __future__ import annotations

from typing import Any

import orjson

from sar_bulk.simulator.guids import is_dashed_guid
from sar_bulk.simulator.hashing import stable_digest
from sar_bulk.simulator.odata import Prefer
from sar_bulk.simulator.rows import Row
from sar_bulk.simulator.state import SimulatorState
from sar_bulk.simulator.tables import Table

__all__ = ["ID_TYPES", "find_rows", "render"]

ID_TYPES = ("Uniqueidentifier", "Lookup", "Owner")
_FORMATTED = "OData.Community.Display.V1.FormattedValue"
_LOOKUP = "Microsoft.Dynamics.CRM.lookuplogicalname"
_NAVIGATION = "Microsoft.Dynamics.CRM.associatednavigationproperty"


def find_rows(state: SimulatorState, table: Table, column: str, value: Any) -> list[Row]:
    """The rows an anchor equality selects (a superset is fine: the filter is applied after)."""
    rows, realtime = state.rows, state.realtime
    key = str(value).lower() if isinstance(value, str) else None
    if key is None:
        return []
    if table.columns[column][1] in ID_TYPES and not is_dashed_guid(key):
        return []
    found: list[Row | None]
    if table.entity_set == "contacts":
        found = [rows.contact_row(key)]
    elif table.entity_set == "leads":
        found = [rows.lead(key)] if column == "leadid" else list(rows.leads(key))
    elif table.entity_set == "accounts":
        found = [rows.account(key)] if column == "accountid" else list(rows.primary_accounts(key))
    elif table.entity_set == "activitypointers":
        if column == "activityid":
            one = rows.activity(key)
            found = [one[0] if one else None]
        else:
            found = [a for a, _ in rows.activities(key)]
    elif table.entity_set == "activityparties":
        if column == "_activityid_value":
            one = rows.activity(key)
            found = list(one[1]) if one else []
        elif column == "_partyid_value":
            found = [p for _, parties in rows.activities(key) for p in parties]
        else:
            found = []
    elif table.entity_set == "msdynmkt_contactpointconsent4s":
        found = list(rows.consents(str(value)))
    else:
        if column == table.primary_id:
            request = realtime.by_id(key)
            found = [realtime.row(request) if request else None]
        elif column == "msdynmkt_name":
            found = [realtime.row(r) for r in realtime.by_name(str(value))]
        else:
            found = [realtime.row(r) for r in realtime.by_input(str(value))]
    return [r for r in found if r is not None]


def render(
    row: Row, table: Table, select: tuple[str, ...] | None, prefer: Prefer
) -> dict[str, Any]:
    columns = (
        list(table.columns)
        if select is None
        else [table.primary_id, *(c for c in select if c != table.primary_id)]
    )
    etag = int.from_bytes(
        stable_digest(orjson.dumps(row.values, option=orjson.OPT_SORT_KEYS))[:4], "big"
    )
    out: dict[str, Any] = {"@odata.etag": f'W/"{etag}"'}
    for column in columns:
        value = row.values.get(column)
        out[column] = value
        if value is None:
            continue
        if column in row.formatted and prefer.wants(_FORMATTED):
            out[f"{column}@{_FORMATTED}"] = row.formatted[column]
        if column in row.lookups:
            target, navigation = row.lookups[column]
            if prefer.wants(_NAVIGATION):
                out[f"{column}@{_NAVIGATION}"] = navigation
            if prefer.wants(_LOOKUP):
                out[f"{column}@{_LOOKUP}"] = target
    return out
