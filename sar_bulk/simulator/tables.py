"""The tables of the simulated org: entity sets, logical names, columns and who has them.

Usage::

    table = TABLES["leads"]          # by entity set name
    table.logical, table.primary_id  # "lead", "leadid"
    table.present(org_kind)          # False -> the org answers 404 for the entity set

``core`` tables are in every Dataverse org (a Sales/Service org too); ``marketing`` tables
(``msdynmkt_*``) only where real-time journeys is installed. ``columns`` maps each logical column
name to its display label and attribute type (what the metadata endpoints serve, and what
``$select``/``$filter`` may name). ``anchors`` are the columns a ``$filter`` must pin with equality
before the simulated org will answer: it builds rows on demand and cannot scan a whole table.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["GDPR", "ORG_KINDS", "TABLES", "OrgKind", "Table", "table_by_logical"]

OrgKind = Literal["outbound", "realtime", "both", "dataverse"]
ORG_KINDS: tuple[str, ...] = ("outbound", "realtime", "both", "dataverse")

_STR, _GUID, _LOOKUP, _DATE, _TIME, _PICK, _STATE, _STATUS, _INT, _BOOL, _FILE = (
    "String",
    "Uniqueidentifier",
    "Lookup",
    "DateTime",
    "DateTime",
    "Picklist",
    "State",
    "Status",
    "Integer",
    "Boolean",
    "File",
)
_COMMON = {
    "createdon": ("Created On", _TIME),
    "modifiedon": ("Modified On", _TIME),
    "statecode": ("Status", _STATE),
    "statuscode": ("Status Reason", _STATUS),
}


@dataclass(frozen=True, slots=True)
class Table:
    entity_set: str
    logical: str
    primary_id: str
    primary_name: str
    group: Literal["core", "marketing"]
    anchors: tuple[str, ...]
    columns: dict[str, tuple[str, str]]  # logical column -> (display label, attribute type)
    display: str

    def present(self, org_kind: str) -> bool:
        return self.group == "core" or org_kind in ("realtime", "both")

    @property
    def privilege(self) -> str:
        return f"prvRead{self.logical}"


def _table(
    entity_set: str,
    logical: str,
    primary_name: str,
    display: str,
    anchors: tuple[str, ...],
    columns: dict[str, tuple[str, str]],
    group: Literal["core", "marketing"] = "core",
) -> Table:
    primary_id = f"{logical}id"
    everything = {primary_id: (display, _GUID), **columns, **_COMMON}
    return Table(
        entity_set,
        logical,
        primary_id,
        primary_name,
        group,
        (primary_id, *anchors),
        everything,
        display,
    )


CONTACTS = _table(
    "contacts",
    "contact",
    "fullname",
    "Contact",
    (),
    {
        "firstname": ("First Name", _STR),
        "lastname": ("Last Name", _STR),
        "fullname": ("Full Name", _STR),
        "emailaddress1": ("Email", _STR),
        "emailaddress2": ("Email Address 2", _STR),
        "emailaddress3": ("Email Address 3", _STR),
        "telephone1": ("Business Phone", _STR),
        "telephone2": ("Home Phone", _STR),
        "telephone3": ("Telephone 3", _STR),
        "mobilephone": ("Mobile Phone", _STR),
        "address1_line1": ("Address 1: Street 1", _STR),
        "address1_city": ("Address 1: City", _STR),
        "address1_postalcode": ("Address 1: ZIP/Postal Code", _STR),
        "address1_country": ("Address 1: Country/Region", _STR),
        "address1_composite": ("Address 1", _STR),
        "birthdate": ("Birthday", _DATE),
        "_parentcustomerid_value": ("Company Name", _LOOKUP),
        "donotbulkemail": ("Do not allow Bulk Emails", _BOOL),
        "description": ("Description", _STR),
    },
)
LEADS = _table(
    "leads",
    "lead",
    "fullname",
    "Lead",
    ("_parentcontactid_value",),
    {
        "subject": ("Topic", _STR),
        "firstname": ("First Name", _STR),
        "lastname": ("Last Name", _STR),
        "fullname": ("Name", _STR),
        "emailaddress1": ("Email", _STR),
        "telephone1": ("Business Phone", _STR),
        "companyname": ("Company Name", _STR),
        "_parentcontactid_value": ("Parent Contact for lead", _LOOKUP),
    },
)
ACCOUNTS = _table(
    "accounts",
    "account",
    "name",
    "Account",
    ("_primarycontactid_value",),
    {
        "name": ("Account Name", _STR),
        "telephone1": ("Main Phone", _STR),
        "emailaddress1": ("Email", _STR),
        "_primarycontactid_value": ("Primary Contact", _LOOKUP),
    },
)
ACTIVITIES = Table(
    "activitypointers",
    "activitypointer",
    "activityid",
    "subject",
    "core",
    ("activityid", "_regardingobjectid_value"),
    {
        "activityid": ("Activity", _GUID),
        "activitytypecode": ("Activity Type", "EntityName"),
        "subject": ("Subject", _STR),
        "description": ("Description", _STR),
        "_regardingobjectid_value": ("Regarding", _LOOKUP),
        "scheduledstart": ("Start Date", _TIME),
        "actualend": ("Actual End", _TIME),
        **_COMMON,
    },
    "Activity",
)
PARTIES = Table(
    "activityparties",
    "activityparty",
    "activitypartyid",
    "partyidname",
    "core",
    ("activitypartyid", "_activityid_value", "_partyid_value"),
    {
        "activitypartyid": ("Activity Party", _GUID),
        "_activityid_value": ("Activity", _LOOKUP),
        "_partyid_value": ("Party", _LOOKUP),
        "partyidname": ("Party Name", _STR),
        "participationtypemask": ("Participation Type", _PICK),
        "addressused": ("Address", _STR),
    },
    "Activity Party",
)
CONSENTS = _table(
    "msdynmkt_contactpointconsent4s",
    "msdynmkt_contactpointconsent4",
    "msdynmkt_contactpointvalue",
    "Contact point consent",
    ("msdynmkt_contactpointvalue",),
    {
        "msdynmkt_contactpointvalue": ("Contact point value", _STR),
        "msdynmkt_contactpointtype": ("Contact point type", _PICK),
        "msdynmkt_value": ("Value", _PICK),
        "msdynmkt_contactpointconsenttype": ("Consent type", _PICK),
        "msdynmkt_source": ("Source", _STR),
        "msdynmkt_reason": ("Reason", _STR),
        "_msdynmkt_purposeid_value": ("Purpose", _LOOKUP),
        "_msdynmkt_topicid_value": ("Topic", _LOOKUP),
    },
    group="marketing",
)
GDPR = _table(
    "msdynmkt_gdprrequests",
    "msdynmkt_gdprrequest",
    "msdynmkt_name",
    "GdprRequest",
    # By name: a client that lost a create's answer finds the row it named (Dataverse filters on
    # any column; the simulator builds rows from an anchor, and knows its own requests by name).
    ("msdynmkt_dsrrequestinput", "msdynmkt_name"),
    {
        "msdynmkt_name": ("Name", _STR),
        "msdynmkt_dsrrequesttype": ("DsrRequestType", _PICK),
        "msdynmkt_dsrrequestinput": ("DsrRequestInput", _STR),
        "msdynmkt_dsrrequestprogress": ("DsrRequestProgress", _PICK),
        "msdynmkt_dsrrequestdata": ("DsrRequestData", _FILE),
        "msdynmkt_dsrrequestdata_name": ("DsrRequestData_Name", _STR),
        "_ownerid_value": ("Owner", "Owner"),
    },
    group="marketing",
)

TABLES: dict[str, Table] = {
    t.entity_set: t for t in (CONTACTS, LEADS, ACCOUNTS, ACTIVITIES, PARTIES, CONSENTS, GDPR)
}


def table_by_logical(logical: str) -> Table | None:
    return next((t for t in TABLES.values() if t.logical == logical), None)
