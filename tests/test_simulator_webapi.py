"""The simulated Web API over real loopback HTTP, seen by a plain aiohttp client.

Only the simulator is imported: these tests check the org the client is built against.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest
from multidict import CIMultiDictProxy

from sar_bulk.simulator import Simulator, SimulatorConfig

API = "/api/data/v9.2/"
TOKEN = "sim-tester.1"
FORMATTED = 'odata.include-annotations="OData.Community.Display.V1.FormattedValue"'


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Answer:
    def __init__(self, status: int, headers: CIMultiDictProxy[str], raw: bytes) -> None:
        self.status = status
        self.headers = headers
        self.raw = raw

    def json(self) -> Any:
        return orjson.loads(self.raw)

    @property
    def code(self) -> str:
        return str(self.json()["error"]["code"])


def contact(n: int) -> str:
    return f"{n:08x}-0000-4000-8000-{n:012x}"


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


async def call(
    session: aiohttp.ClientSession,
    sim: Simulator,
    path: str,
    *,
    method: str = "GET",
    prefer: str | None = None,
    body: Any = None,
    headers: dict[str, str] | None = None,
    token: str = TOKEN,
) -> Answer:
    sent = {"Authorization": f"Bearer {token}", "Accept": "application/json", **(headers or {})}
    if prefer is not None:
        sent["Prefer"] = prefer
    data = None
    if body is not None:
        data = orjson.dumps(body)
        sent["Content-Type"] = "application/json"
    url = path if path.startswith("http") else sim.base_url + API + path
    async with session.request(method, url, headers=sent, data=data) as response:
        return Answer(response.status, response.headers, await response.read())


def existing(sim: Simulator, start: int = 1) -> str:
    """A contact id the org holds, with at least one e-mail."""
    for n in range(start, start + 500):
        truth = sim.rows.truth(contact(n))
        if truth is not None and any("@" in i for i in truth.identifiers):
            return contact(n)
    raise AssertionError("no contact with an e-mail in 500 tries")


# ----- contacts -----------------------------------------------------------------------------------


async def test_contact_row_has_every_column_and_formatted_values_only_when_asked(
    session: aiohttp.ClientSession,
) -> None:
    async with Simulator(SimulatorConfig(seed=4, org_kind="realtime")) as sim:
        cid = existing(sim)
        plain = await call(session, sim, f"contacts({cid})")
        annotated = await call(session, sim, f"contacts({cid.upper()})", prefer=FORMATTED)
        truth = sim.rows.truth(cid)
    assert truth is not None
    assert plain.status == 200
    body = plain.json()
    assert {k: v for k, v in body.items() if not k.startswith("@")} == truth.contact
    assert not any("@OData.Community" in k for k in body)
    assert body["@odata.context"].endswith("$metadata#contacts/$entity")
    extra = annotated.json()
    assert extra["statecode@OData.Community.Display.V1.FormattedValue"] == "Active"
    assert annotated.headers["Preference-Applied"] == FORMATTED.replace("'", "")
    assert {
        "firstname",
        "lastname",
        "fullname",
        "emailaddress3",
        "mobilephone",
        "birthdate",
    } <= set(body)


async def test_contacts_have_zero_to_three_emails_and_phones_with_gaps() -> None:
    async with Simulator(SimulatorConfig(seed=2)) as sim:
        shapes = set()
        for n in range(1, 300):
            row = sim.rows.contact(contact(n))
            assert row is not None
            emails = tuple(row[f"emailaddress{i}"] is not None for i in (1, 2, 3))
            phones = sum(
                row[c] is not None
                for c in ("telephone1", "telephone2", "telephone3", "mobilephone")
            )
            assert phones <= 3
            shapes.add((sum(emails), emails[0]))
            assert sim.rows.identifiers(contact(n)) == sim.rows.identifiers(contact(n))
    counts = {count for count, _ in shapes}
    assert counts == {0, 1, 2, 3}
    assert (1, False) in shapes  # an e-mail in emailaddress2/3 while emailaddress1 is empty


async def test_missing_contact_and_bad_key(session: aiohttp.ClientSession) -> None:
    gone = contact(77)
    async with Simulator(SimulatorConfig(missing_contacts=frozenset({gone}))) as sim:
        missing = await call(session, sim, f"contacts({gone})")
        braces = await call(session, sim, f"contacts({{{contact(1)}}})")
        assert sim.rows.truth(gone) is None
    assert missing.status == 404
    assert missing.json()["error"] == {
        "code": "0x80040217",
        "message": f"contact With Id = {gone} Does Not Exist",
    }
    assert braces.status == 400


async def test_select_returns_only_those_columns_and_the_id(session: aiohttp.ClientSession) -> None:
    async with Simulator(SimulatorConfig(seed=1)) as sim:
        cid = existing(sim)
        answer = await call(session, sim, f"contacts({cid})?$select=fullname,emailaddress2")
        unknown = await call(session, sim, f"contacts({cid})?$select=nosuchcolumn")
    assert set(answer.json()) == {
        "@odata.context",
        "@odata.etag",
        "contactid",
        "fullname",
        "emailaddress2",
    }
    assert unknown.status == 400
    assert "nosuchcolumn" in unknown.json()["error"]["message"]


# ----- org kinds, privileges ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("org_kind", "action", "consent", "leads"),
    [
        ("outbound", 200, 404, 200),
        ("realtime", 404, 200, 200),
        ("both", 200, 200, 200),
        ("dataverse", 404, 404, 200),
    ],
)
async def test_org_kinds_decide_what_exists(
    session: aiohttp.ClientSession, org_kind: str, action: int, consent: int, leads: int
) -> None:
    async with Simulator(SimulatorConfig(seed=1, org_kind=org_kind)) as sim:  # type: ignore[arg-type]
        action_answer = await call(
            session,
            sim,
            "msdyncrm_LoadInteractionsPublic",
            method="POST",
            body={"ContactId": contact(1), "InteractionType": "EmailSent"},
            headers={"OData-MaxVersion": "4.0", "OData-Version": "4.0"},
        )
        consent_answer = await call(
            session,
            sim,
            "msdynmkt_contactpointconsent4s?$filter=msdynmkt_contactpointvalue eq 'a@b.c'",
        )
        leads_answer = await call(
            session, sim, f"leads?$filter=_parentcontactid_value eq {contact(1)}"
        )
    assert (action_answer.status, consent_answer.status, leads_answer.status) == (
        action,
        consent,
        leads,
    )
    if action == 404:
        assert action_answer.json()["error"] == {
            "code": "0x80060888",
            "message": "Resource not found for the segment 'msdyncrm_LoadInteractionsPublic'.",
        }
    if consent == 404:
        assert consent_answer.json()["error"]["message"] == (
            "Resource not found for the segment 'msdynmkt_contactpointconsent4s'."
        )


async def test_forbidden_table_names_its_privilege(session: aiohttp.ClientSession) -> None:
    config = SimulatorConfig(forbidden_tables=frozenset({"msdynmkt_contactpointconsent4"}))
    async with Simulator(config) as sim:
        refused = await call(
            session, sim, "msdynmkt_contactpointconsent4s?$filter=msdynmkt_contactpointvalue eq 'x'"
        )
        allowed = await call(session, sim, f"contacts({contact(1)})")
        counters = sim.counters()["total"]
    assert refused.status == 403
    assert (
        "missing prvReadmsdynmkt_contactpointconsent4 privilege"
        in refused.json()["error"]["message"]
    )
    assert allowed.status == 200
    assert counters["forbidden"] == 1
