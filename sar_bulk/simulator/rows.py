"""The Dataverse rows the simulated org holds about a contact: contact, leads, accounts,
activities, activity parties and real-time consent. Deterministic, and the tests' ground truth.

Usage::

    rows = OrgRows(seed=3)
    rows.contact(cid)            # the contact row (raw values) or None when it does not exist
    rows.find("leads", "_parentcontactid_value", cid)   # what a $filter anchor selects
    rows.truth(cid)              # everything the org holds about the contact, for tests

Every row is a pure function of ``(seed, contact)`` (consent rows: of ``(seed, value)``, because
consent has no lookup to the contact by design). Rows that hang off a contact (its leads, accounts
and activities) have ids derived from it; the ids are remembered when built so that a later
``leads({id})`` or ``activityparties?$filter=_activityid_value eq {id}`` finds them (a bounded
memory: an id the org "forgot" answers 404 like a deleted row).

Shapes are deliberately awkward: e-mail and phone columns have gaps (``emailaddress2`` set while
``emailaddress1`` is null), names carry quotes and non-ASCII, some activities about the contact
are regarding something else and find the contact only through their activity parties.
"""

from __future__ import annotations

import calendar
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sar_bulk.simulator.hashing import Draw, stable_digest, stable_unit

__all__ = ["ContactTruth", "OrgRows", "Row"]

_FIRST = ("Jürgen", "Zoë", "Ana María", "小龍", "Ólafur", "Łukasz", "花子", "Nadia", "Chris", "Sam")
_LAST = (
    "Weiß",
    "O'Brien",
    'Pérez "Anita"',
    "李",
    "Jónsson",
    "Żółć",
    "佐藤",
    "Al-Masri",
    "Back\\slash",
)
_DOMAINS = ("contoso.com", "fabrikam.example", "adventure-works.com", "bücher.example", "例え.jp")
_CITIES = (
    ("Bahnhofstrasse 1", "Zürich", "8001", "Switzerland"),
    ("Rua Augusta 100", "São Paulo", "01310-100", "Brazil"),
    ("ul. Piotrkowska 5", "Łódź", "90-001", "Poland"),
    ("1 Microsoft Way", "Redmond", "98052", "United States"),
    ("Laugavegur 3", "Reykjavík", "101", "Iceland"),
)
_COMPANIES = ("Contoso Ltd", "Fabrikam, Inc.", 'Adventure "Works"', "Bücher & Co", "株式会社例え")
_EMAIL_COLUMNS = ("emailaddress1", "emailaddress2", "emailaddress3")
_PHONE_COLUMNS = ("telephone1", "mobilephone", "telephone2", "telephone3")
_ACTIVITY_KINDS = (
    ("email", "Email"),
    ("phonecall", "Phone Call"),
    ("task", "Task"),
    ("appointment", "Appointment"),
)
_PARTICIPATION = {1: "Sender", 2: "To Recipient", 3: "CC Recipient", 8: "Regarding", 9: "Owner"}
_STATE = {0: "Active", 1: "Inactive"}
_FIRST_SECOND = calendar.timegm((2019, 1, 1, 0, 0, 0))
_LAST_SECOND = calendar.timegm((2026, 1, 1, 0, 0, 0))
_REMEMBERED = 200_000
_ACCOUNT_POOL = 40
CONSENT_TYPE = {
    534120000: "Email",
    534120001: "Text Message",
    534120002: "Custom",
    534120003: "Voice",
}
CONSENT_VALUE = {534120000: "Not Set", 534120001: "Opted In", 534120002: "Opted Out"}
CONSENT_KIND = {534120000: "Purpose", 534120001: "Topic"}
# The names of the org's consent purposes and topics (three and six, as the draws were sized).
_PURPOSES = ("Commercial communications", "Tracking", "Transactional communications")
_TOPICS = ("Newsletter", "Events", "Product news", "Offers", "Surveys", "Webinars")


@dataclass(frozen=True, slots=True)
class Row:
    """One row: raw column values, formatted values, and lookup targets (for annotations)."""

    values: dict[str, Any]
    formatted: dict[str, str] = field(default_factory=dict)
    lookups: dict[str, tuple[str, str]] = field(default_factory=dict)  # column -> (table, nav)


@dataclass(frozen=True, slots=True)
class ContactTruth:
    """What the org holds about one contact (raw values only), for tests to compare against."""

    contact: dict[str, Any]
    identifiers: tuple[str, ...]
    leads: list[dict[str, Any]]
    primary_accounts: list[dict[str, Any]]
    parent_account: dict[str, Any] | None
    activities: list[dict[str, Any]]
    activity_parties: list[dict[str, Any]]
    consents: dict[str, list[dict[str, Any]]]
    # Rows of msdynmkt_gdprrequest by input (filled by ``Simulator.truth``, which knows them).
    gdpr_requests: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


def _stamp(second: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(second))


def _shown_stamp(second: int) -> str:
    t = time.gmtime(second)
    hour = t.tm_hour % 12 or 12
    noon = "AM" if t.tm_hour < 12 else "PM"
    return f"{t.tm_mon}/{t.tm_mday}/{t.tm_year} {hour}:{t.tm_min:02d} {noon}"


def _times(draw: Draw, values: dict[str, Any], formatted: dict[str, str]) -> None:
    created = draw.between(_FIRST_SECOND, _LAST_SECOND - 86_400 * 30)
    modified = created + draw.below(86_400 * 30)
    for name, second in (("createdon", created), ("modifiedon", modified)):
        values[name] = _stamp(second)
        formatted[name] = _shown_stamp(second)


def _state(values: dict[str, Any], formatted: dict[str, str], state: int = 0) -> None:
    values["statecode"] = state
    values["statuscode"] = state + 1
    formatted["statecode"] = _STATE[state]
    formatted["statuscode"] = _STATE[state]


class OrgRows:
    """The rows of the simulated org's Dataverse tables, built on demand from the seed."""

    def __init__(
        self,
        seed: int = 0,
        *,
        missing_contact_share: float = 0.0,
        missing_contacts: frozenset[str] = frozenset(),
    ) -> None:
        self.seed = seed
        self.missing_contact_share = missing_contact_share
        self.missing_contacts = missing_contacts
        # Row id -> (table, owning contact or "pool"), so by-id reads find rows built earlier.
        self._owners: OrderedDict[str, tuple[str, str]] = OrderedDict()

    # ----- contacts ------------------------------------------------------------------------

    def exists(self, contact_id: str) -> bool:
        if contact_id in self.missing_contacts:
            return False
        return stable_unit(self.seed, "contact-missing?", contact_id) >= self.missing_contact_share

    def contact_row(self, contact_id: str) -> Row | None:
        if not self.exists(contact_id):
            return None
        draw = Draw(stable_digest(self.seed, "contact", contact_id))
        first, last = draw.choice(_FIRST), draw.choice(_LAST)
        values: dict[str, Any] = {"contactid": contact_id, "firstname": first, "lastname": last}
        values["fullname"] = f"{first} {last}"
        formatted: dict[str, str] = {}
        lookups: dict[str, tuple[str, str]] = {}
        slots = list(_EMAIL_COLUMNS)
        used = sorted(draw.below(3) for _ in range(draw.below(4)))
        local = f"{first.split()[0].lower()}.{draw.below(1000)}"
        for column in slots:
            values[column] = None
        for n, slot in enumerate(sorted(set(used))):
            tag = ("", "+news", ".o'neil")[n]
            values[slots[slot]] = f"{local}{tag}@{draw.choice(_DOMAINS)}"
        phones = sorted({draw.below(4) for _ in range(draw.below(4))})
        for column in _PHONE_COLUMNS:
            values[column] = None
        for slot in phones:
            values[_PHONE_COLUMNS[slot]] = (
                f"+41 44 {draw.between(100, 999)} {draw.between(10, 99)} {draw.between(10, 99)}"
            )
        line, city, postal, country = draw.choice(_CITIES)
        values.update(
            {
                "address1_line1": line,
                "address1_city": city,
                "address1_postalcode": postal,
                "address1_country": country,
                "address1_composite": f"{line}\n{postal} {city}\n{country}",
            }
        )
        if draw.chance(0.7):
            year, month, day = draw.between(1940, 2005), draw.between(1, 12), draw.between(1, 28)
            values["birthdate"] = f"{year:04d}-{month:02d}-{day:02d}"
            formatted["birthdate"] = f"{month}/{day}/{year}"
        else:
            values["birthdate"] = None
        values["_parentcustomerid_value"] = None
        if draw.chance(0.6):
            account = self._pool_account_id(draw.below(_ACCOUNT_POOL))
            values["_parentcustomerid_value"] = account
            formatted["_parentcustomerid_value"] = self._pool_account_name(account)
            lookups["_parentcustomerid_value"] = ("account", "parentcustomerid_account")
        values["donotbulkemail"] = draw.chance(0.2)
        formatted["donotbulkemail"] = "Do Not Allow" if values["donotbulkemail"] else "Allow"
        values["description"] = draw.choice(
            (None, "VIP \u2013 prefers phone", 'Said: "don\'t call"')
        )
        _times(draw, values, formatted)
        _state(values, formatted)
        return Row(values, formatted, lookups)

    def contact(self, contact_id: str) -> dict[str, Any] | None:
        row = self.contact_row(contact_id)
        return None if row is None else row.values

    def identifiers(self, contact_id: str) -> tuple[str, ...]:
        """The contact's e-mails and phones, in column order (what consent is keyed by)."""
        row = self.contact(contact_id)
        if row is None:
            return ()
        return tuple(row[c] for c in (*_EMAIL_COLUMNS, *_PHONE_COLUMNS) if row[c] is not None)

    # ----- accounts ------------------------------------------------------------------------

    def _pool_account_id(self, index: int) -> str:
        return Draw(stable_digest(self.seed, "pool-account", index)).guid()

    def _pool_account_name(self, account_id: str) -> str:
        return _COMPANIES[int(account_id[:8], 16) % len(_COMPANIES)]

    def _account(self, account_id: str, primary_contact: str | None) -> Row:
        draw = Draw(stable_digest(self.seed, "account", account_id))
        name = (
            self._pool_account_name(account_id)
            if primary_contact is None
            else f"{draw.choice(_COMPANIES)} ({draw.below(100)})"
        )
        values: dict[str, Any] = {
            "accountid": account_id,
            "name": name,
            "telephone1": f"+1 425 555 {draw.between(1000, 9999)}",
            "emailaddress1": f"info{draw.below(100)}@{draw.choice(_DOMAINS)}",
            "_primarycontactid_value": primary_contact,
        }
        formatted: dict[str, str] = {}
        lookups: dict[str, tuple[str, str]] = {}
        if primary_contact is not None:
            contact = self.contact(primary_contact)
            formatted["_primarycontactid_value"] = contact["fullname"] if contact else ""
            lookups["_primarycontactid_value"] = ("contact", "primarycontactid")
        _times(draw, values, formatted)
        _state(values, formatted)
        return Row(values, formatted, lookups)

    def primary_accounts(self, contact_id: str) -> list[Row]:
        if not self.exists(contact_id):
            return []
        draw = Draw(stable_digest(self.seed, "accounts-of", contact_id))
        count = 1 if draw.chance(0.15) else 0
        ids = [
            Draw(stable_digest(self.seed, "account-id", contact_id, i)).guid() for i in range(count)
        ]
        self._remember("accounts", contact_id, ids)
        return [self._account(a, contact_id) for a in ids]

    def account(self, account_id: str) -> Row | None:
        owner = self._owners.get(account_id)
        if owner is not None and owner[0] == "accounts":
            return self._account(account_id, owner[1])
        pool = {self._pool_account_id(i) for i in range(_ACCOUNT_POOL)}
        return self._account(account_id, None) if account_id in pool else None

    # ----- leads ---------------------------------------------------------------------------

    def leads(self, contact_id: str) -> list[Row]:
        contact = self.contact(contact_id)
        if contact is None:
            return []
        draw = Draw(stable_digest(self.seed, "leads-of", contact_id))
        count = draw.choice((0, 0, 0, 1, 1, 2))
        ids = [
            Draw(stable_digest(self.seed, "lead-id", contact_id, i)).guid() for i in range(count)
        ]
        self._remember("leads", contact_id, ids)
        rows = []
        for lead_id in ids:
            ld = Draw(stable_digest(self.seed, "lead", lead_id))
            values: dict[str, Any] = {
                "leadid": lead_id,
                "subject": ld.choice(
                    ("Interested in 'Premium'", "Webinar follow-up", "Anfrage \u2013 Preise")
                ),
                "firstname": contact["firstname"],
                "lastname": contact["lastname"],
                "fullname": contact["fullname"],
                "emailaddress1": contact["emailaddress1"] or contact["emailaddress2"],
                "telephone1": contact["telephone1"],
                "companyname": ld.choice(_COMPANIES),
                "_parentcontactid_value": contact_id,
            }
            formatted = {"_parentcontactid_value": str(contact["fullname"])}
            _times(ld, values, formatted)
            _state(values, formatted, ld.choice((0, 0, 1)))
            rows.append(
                Row(values, formatted, {"_parentcontactid_value": ("contact", "parentcontactid")})
            )
        return rows

    def lead(self, lead_id: str) -> Row | None:
        owner = self._owners.get(lead_id)
        if owner is None or owner[0] != "leads":
            return None
        return next((r for r in self.leads(owner[1]) if r.values["leadid"] == lead_id), None)

    # ----- activities ----------------------------------------------------------------------

    def _activity_plan(self, contact_id: str) -> list[tuple[str, bool]]:
        """(activity id, regarding the contact?) for every activity the contact takes part in."""
        if not self.exists(contact_id):
            return []
        draw = Draw(stable_digest(self.seed, "activities-of", contact_id))
        count = draw.choice((0, 0, 1, 2, 3, 5, 8))
        plan = [
            (Draw(stable_digest(self.seed, "activity-id", contact_id, i)).guid(), draw.chance(0.7))
            for i in range(count)
        ]
        self._remember("activitypointers", contact_id, [a for a, _ in plan])
        return plan

    def _activity(
        self, contact_id: str, activity_id: str, regarding_contact: bool
    ) -> tuple[Row, list[Row]]:
        draw = Draw(stable_digest(self.seed, "activity", activity_id))
        code, label = draw.choice(_ACTIVITY_KINDS)
        contact = self.contact(contact_id) or {}
        if regarding_contact:
            regarding, regarding_table, shown = contact_id, "contact", str(contact.get("fullname"))
        else:
            regarding = self._pool_account_id(draw.below(_ACCOUNT_POOL))
            regarding_table, shown = "account", self._pool_account_name(regarding)
        values: dict[str, Any] = {
            "activityid": activity_id,
            "activitytypecode": code,
            "subject": draw.choice(
                (
                    "Call back re: invoice #42",
                    "Angebot für Müller & Söhne",
                    'Meeting "Q3"',
                    "回复\uff1a询价",
                )
            ),
            "description": draw.choice(
                (None, 'Customer said: "please don\'t call before 9".', "Line 1\nLine 2")
            ),
            "_regardingobjectid_value": regarding,
            "scheduledstart": None,
            "actualend": None,
        }
        formatted = {"activitytypecode": label, "_regardingobjectid_value": shown}
        _times(draw, values, formatted)
        values["actualend"] = values["modifiedon"]
        _state(values, formatted, draw.choice((0, 1, 1)))
        row = Row(
            values,
            formatted,
            {
                "_regardingobjectid_value": (
                    regarding_table,
                    f"regardingobjectid_{regarding_table}_activitypointer",
                )
            },
        )
        parties = []
        mask_of_contact = draw.choice((1, 2, 2, 3))
        owner = Draw(stable_digest(self.seed, "systemuser", draw.below(5))).guid()
        members = [
            (contact_id, "contact", mask_of_contact),
            (owner, "systemuser", 1 if mask_of_contact != 1 else 2),
        ]
        for n, (party, table, mask) in enumerate(members):
            party_id = Draw(stable_digest(self.seed, "party", activity_id, n)).guid()
            address = None
            if code == "email" and table == "contact":
                address = contact.get("emailaddress1") or contact.get("emailaddress2")
            pvalues: dict[str, Any] = {
                "activitypartyid": party_id,
                "_activityid_value": activity_id,
                "_partyid_value": party,
                "partyidname": contact.get("fullname") if table == "contact" else "CRM Service",
                "participationtypemask": mask,
                "addressused": address,
            }
            pformatted = {"participationtypemask": _PARTICIPATION[mask]}
            if table == "contact":
                pformatted["_partyid_value"] = str(contact.get("fullname"))
            parties.append(
                Row(
                    pvalues,
                    pformatted,
                    {
                        "_partyid_value": (table, f"partyid_{table}"),
                        "_activityid_value": ("activitypointer", "activityid_activitypointer"),
                    },
                )
            )
        return row, parties

    def activities(self, contact_id: str) -> list[tuple[Row, list[Row]]]:
        """Every activity the contact takes part in (regarding it or not), with its parties."""
        return [self._activity(contact_id, a, r) for a, r in self._activity_plan(contact_id)]

    def activity(self, activity_id: str) -> tuple[Row, list[Row]] | None:
        owner = self._owners.get(activity_id)
        if owner is None or owner[0] != "activitypointers":
            return None
        for aid, regarding in self._activity_plan(owner[1]):
            if aid == activity_id:
                return self._activity(owner[1], aid, regarding)
        return None

    # ----- consent (keyed by e-mail or phone, never by contact) ----------------------------

    def consents(self, value: str) -> list[Row]:
        key = value.strip().lower()
        if not key:
            return []
        draw = Draw(stable_digest(self.seed, "consent", key))
        if draw.chance(0.25):
            return []
        kind = 534120000 if "@" in key else draw.choice((534120001, 534120003))
        rows = []
        for n in range(draw.between(1, 3)):
            consent_id = Draw(stable_digest(self.seed, "consent-id", key, n)).guid()
            choice = draw.choice((534120001, 534120001, 534120002, 534120000))
            topic = n > 0 and draw.chance(0.5)
            values: dict[str, Any] = {
                "msdynmkt_contactpointconsent4id": consent_id,
                "msdynmkt_contactpointvalue": key,
                "msdynmkt_contactpointtype": kind,
                "msdynmkt_value": choice,
                "msdynmkt_contactpointconsenttype": 534120001 if topic else 534120000,
                "msdynmkt_source": draw.choice(("Form", "Journey", "Preference centre", "Import")),
                "msdynmkt_reason": draw.choice(
                    (None, "User clicked 'unsubscribe'", "Double opt-in confirmed")
                ),
                "_msdynmkt_purposeid_value": Draw(
                    stable_digest(self.seed, "purpose", purpose := draw.below(len(_PURPOSES)))
                ).guid(),
                "_msdynmkt_topicid_value": Draw(
                    stable_digest(self.seed, "topic", subject := draw.below(len(_TOPICS)))
                ).guid()
                if topic
                else None,
            }
            formatted = {
                "msdynmkt_contactpointtype": CONSENT_TYPE[kind],
                "msdynmkt_value": CONSENT_VALUE[choice],
                "msdynmkt_contactpointconsenttype": CONSENT_KIND[
                    values["msdynmkt_contactpointconsenttype"]
                ],
                # A lookup's formatted value is the name of the row it points at, as Dataverse
                # sends it with the FormattedValue annotation.
                "_msdynmkt_purposeid_value": _PURPOSES[purpose],
            }
            lookups = {"_msdynmkt_purposeid_value": ("msdynmkt_purpose", "msdynmkt_purposeid")}
            if topic:
                formatted["_msdynmkt_topicid_value"] = _TOPICS[subject]
                lookups["_msdynmkt_topicid_value"] = ("msdynmkt_topic", "msdynmkt_topicid")
            _times(draw, values, formatted)
            _state(values, formatted)
            rows.append(Row(values, formatted, lookups))
        return rows

    # ----- ground truth --------------------------------------------------------------------

    def truth(self, contact_id: str) -> ContactTruth | None:
        """Everything the org's Dataverse tables hold about the contact (None: no such contact)."""
        contact = self.contact(contact_id)
        if contact is None:
            return None
        parent_id = contact["_parentcustomerid_value"]
        parent = self.account(parent_id) if parent_id else None
        activities = self.activities(contact_id)
        identifiers = self.identifiers(contact_id)
        return ContactTruth(
            contact=contact,
            identifiers=identifiers,
            leads=[r.values for r in self.leads(contact_id)],
            primary_accounts=[r.values for r in self.primary_accounts(contact_id)],
            parent_account=parent.values if parent else None,
            activities=[a.values for a, _ in activities],
            activity_parties=[p.values for _, parties in activities for p in parties],
            consents={i: [r.values for r in self.consents(i)] for i in identifiers},
        )

    def _remember(self, table: str, contact_id: str, ids: list[str]) -> None:
        for row_id in ids:
            self._owners[row_id] = (table, contact_id)
            self._owners.move_to_end(row_id)
        while len(self._owners) > _REMEMBERED:
            self._owners.popitem(last=False)


Finder = Callable[[OrgRows, str], list[Row]]
