"""The simulated Web API over real loopback HTTP, seen by a plain aiohttp client.

Only the simulator is imported: these tests check the org the client is built against.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson
import pytest
from multidict import CIMultiDictProxy

from sar_bulk.guids import is_canonical_guid
from sar_bulk.simulator import Simulator, SimulatorConfig

API = "/api/data/v9.2/"
TOKEN = "sim-tester.1"
_FORMATTED = "OData.Community.Display.V1.FormattedValue"
FORMATTED = f'odata.include-annotations="{_FORMATTED}"'


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


async def test_a_misfiled_contact_answers_with_another_contacts_row(
    session: aiohttp.ClientSession,
) -> None:
    async with Simulator(SimulatorConfig(seed=4)) as sim:
        cid = existing(sim)
        truth = sim.rows.truth(cid)
    async with Simulator(SimulatorConfig(seed=4, misfiled_contacts=frozenset({cid}))) as sim:
        answer = await call(session, sim, f"contacts({cid})")
        leads = await call(session, sim, f"leads?$filter=_parentcontactid_value eq {cid}")
        assert sim.rows.truth(cid) == truth  # only the answer is wrong, not the org's data
    assert answer.status == 200
    assert truth is not None
    assert answer.json()["contactid"] != cid
    assert answer.json()["contactid"][:-1] == cid[:-1]
    assert leads.status == 200  # the other tables answer as ever


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


# ----- metadata -----------------------------------------------------------------------------------

DEFINITION = "EntityDefinitions(LogicalName='msdynmkt_gdprrequest')"


async def test_metadata_names_the_table_and_its_columns(session: aiohttp.ClientSession) -> None:
    async with Simulator(SimulatorConfig(seed=9, org_kind="realtime")) as sim:
        entity = await call(
            session,
            sim,
            f"{DEFINITION}?$select=EntitySetName,PrimaryIdAttribute,PrimaryNameAttribute",
        )
        attributes = await call(
            session, sim, f"{DEFINITION}/Attributes?$select=LogicalName,DisplayName"
        )
        files = await call(
            session,
            sim,
            f"{DEFINITION}/Attributes/Microsoft.Dynamics.CRM.FileAttributeMetadata"
            "?$select=LogicalName,MaxSizeInKB",
        )
        kinds = sim.counters()["total"]["by_kind"]
    body = entity.json()
    assert (body["EntitySetName"], body["PrimaryIdAttribute"], body["PrimaryNameAttribute"]) == (
        "msdynmkt_gdprrequests",
        "msdynmkt_gdprrequestid",
        "msdynmkt_name",
    )
    by_label = {
        a["DisplayName"]["UserLocalizedLabel"]["Label"]: a["LogicalName"]
        for a in attributes.json()["value"]
    }
    assert by_label["Name"] == "msdynmkt_name"
    assert by_label["DsrRequestType"] == "msdynmkt_dsrrequesttype"
    assert by_label["DsrRequestInput"] == "msdynmkt_dsrrequestinput"
    assert by_label["DsrRequestProgress"] == "msdynmkt_dsrrequestprogress"
    assert by_label["DsrRequestData"] == "msdynmkt_dsrrequestdata"
    assert [(f["LogicalName"], f["MaxSizeInKB"]) for f in files.json()["value"]] == [
        ("msdynmkt_dsrrequestdata", 131072)
    ]
    assert kinds["metadata"] == 3


async def picklists(session: aiohttp.ClientSession, sim: Simulator) -> dict[str, dict[str, int]]:
    answer = await call(
        session,
        sim,
        f"{DEFINITION}/Attributes/Microsoft.Dynamics.CRM.PicklistAttributeMetadata"
        "?$select=LogicalName&$expand=OptionSet",
    )
    assert answer.status == 200, answer.raw
    return {
        a["LogicalName"]: {
            o["Label"]["UserLocalizedLabel"]["Label"]: o["Value"] for o in a["OptionSet"]["Options"]
        }
        for a in answer.json()["value"]
    }


async def test_option_values_come_from_the_seed_not_the_usual_series(
    session: aiohttp.ClientSession,
) -> None:
    seen = []
    for seed in (1, 2):
        async with Simulator(SimulatorConfig(seed=seed, org_kind="realtime")) as sim:
            options = await picklists(session, sim)
        kinds = options["msdynmkt_dsrrequesttype"]
        progress = options["msdynmkt_dsrrequestprogress"]
        assert set(kinds) == {"Export", "Delete"}
        assert set(progress) == {"InProgress", "Completed"}
        assert all(v // 10_000 == 77_340 for v in (*kinds.values(), *progress.values()))
        seen.append(kinds["Export"])
    assert seen[0] != seen[1]


async def test_metadata_of_a_table_the_org_lacks_is_404(session: aiohttp.ClientSession) -> None:
    async with Simulator(SimulatorConfig(org_kind="dataverse")) as sim:
        answer = await call(session, sim, f"{DEFINITION}?$select=EntitySetName")
    assert answer.status == 404


# ----- queries: filters, paging, related tables ---------------------------------------------------


async def test_related_rows_by_filter_match_the_ground_truth(
    session: aiohttp.ClientSession,
) -> None:
    async with Simulator(SimulatorConfig(seed=5)) as sim:
        found: dict[str, list[Any]] = {"leads": [], "accounts": [], "activities": [], "parties": []}
        truths = []
        for n in range(1, 40):
            cid = contact(n)
            truth = sim.rows.truth(cid)
            assert truth is not None
            truths.append(truth)
            leads = await call(session, sim, f"leads?$filter=_parentcontactid_value eq {cid}")
            accounts = await call(
                session, sim, f"accounts?$filter=_primarycontactid_value eq {cid}"
            )
            regarding = await call(
                session,
                sim,
                f"activitypointers?$filter=_regardingobjectid_value eq {cid}"
                "&$expand=activitypointer_activity_parties",
            )
            parties = await call(session, sim, f"activityparties?$filter=_partyid_value eq {cid}")
            assert leads.json()["value"] == [
                {"@odata.etag": row["@odata.etag"], **lead}
                for row, lead in zip(leads.json()["value"], truth.leads, strict=True)
            ]
            assert [a["accountid"] for a in accounts.json()["value"]] == [
                a["accountid"] for a in truth.primary_accounts
            ]
            for activity in regarding.json()["value"]:
                assert activity["_regardingobjectid_value"] == cid
                assert cid in {
                    p["_partyid_value"] for p in activity["activitypointer_activity_parties"]
                }
            found["activities"] += [a["activityid"] for a in regarding.json()["value"]]
            found["parties"] += [p["_activityid_value"] for p in parties.json()["value"]]
        every_activity = [a["activityid"] for t in truths for a in t.activities]
        regarding_truth = [
            a["activityid"]
            for t in truths
            for a in t.activities
            if a["_regardingobjectid_value"] == t.contact["contactid"]
        ]
    assert found["activities"] == regarding_truth
    assert sorted(found["parties"]) == sorted(every_activity)
    assert len(every_activity) > len(regarding_truth)  # some activities are found only as a party


async def test_or_and_in_filters_and_quoted_strings(session: aiohttp.ClientSession) -> None:
    async with Simulator(SimulatorConfig(seed=3)) as sim:
        ids = [contact(n) for n in range(1, 6)]
        ored = await call(
            session, sim, "contacts?$filter=" + " or ".join(f"contactid eq {i}" for i in ids)
        )
        values = ",".join(f"'{i}'" for i in ids)
        inned = await call(
            session,
            sim,
            f"contacts?$filter=Microsoft.Dynamics.CRM.In(PropertyName='contactid',PropertyValues=[{values}])",
        )
        anded = await call(
            session, sim, f"contacts?$filter=contactid eq {ids[0]} and statecode eq 1"
        )
        quoted_guid = await call(session, sim, f"contacts?$filter=contactid eq '{ids[0]}'")
        unanchored = await call(session, sim, "contacts?$filter=lastname eq 'O''Brien'")
        broken = await call(session, sim, "contacts?$filter=contactid gt 3")
    assert sorted(r["contactid"] for r in ored.json()["value"]) == sorted(ids)
    assert sorted(r["contactid"] for r in inned.json()["value"]) == sorted(ids)
    assert anded.json()["value"] == []
    assert quoted_guid.status == 400
    assert "Edm.Guid" in quoted_guid.json()["error"]["message"]
    assert unanchored.status == 400
    assert broken.status == 400


async def test_consent_is_keyed_by_value_case_insensitively(session: aiohttp.ClientSession) -> None:
    async with Simulator(SimulatorConfig(seed=6, org_kind="realtime")) as sim:
        got: dict[str, list[Any]] = {}
        expected: dict[str, list[Any]] = {}
        names: list[Any] = []
        for n in range(1, 30):
            truth = sim.rows.truth(contact(n))
            assert truth is not None
            for value in truth.identifiers:
                # '+' in a query means a blank, as on the real service: percent-encode values.
                escaped = quote(value.upper().replace("'", "''"), safe="")
                answer = await call(
                    session,
                    sim,
                    "msdynmkt_contactpointconsent4s"
                    f"?$filter=msdynmkt_contactpointvalue eq '{escaped}'",
                    prefer=FORMATTED,
                )
                assert answer.status == 200, answer.raw
                rows = answer.json()["value"]
                got[value] = [{k: v for k, v in r.items() if "@" not in k} for r in rows]
                expected[value] = truth.consents[value]
                names += [
                    r[f"{lookup}@{_FORMATTED}"]
                    for r in rows
                    for lookup in ("_msdynmkt_purposeid_value", "_msdynmkt_topicid_value")
                    if r[lookup] is not None
                ]
    assert got == expected
    assert any(got.values())
    # A purpose or topic is named, as Dataverse names a lookup's row (not only its GUID).
    assert names
    assert all(isinstance(n, str) and n and not is_canonical_guid(n) for n in names), names
    assert any("'" in value for value in got)  # the '' escape was exercised


async def test_paging_follows_next_links_with_opaque_tokens(session: aiohttp.ClientSession) -> None:
    async with Simulator(SimulatorConfig(seed=3)) as sim:
        ids = [contact(n) for n in range(1, 12)]
        query = "contacts?$select=fullname&$filter=" + " or ".join(f"contactid eq {i}" for i in ids)
        answer = await call(session, sim, query, prefer="odata.maxpagesize=4")
        pages = [answer]
        while "@odata.nextLink" in pages[-1].json():
            link = pages[-1].json()["@odata.nextLink"]
            assert link.startswith(sim.base_url + API)
            pages.append(await call(session, sim, link, prefer="odata.maxpagesize=4"))
        other_query = link.replace("fullname", "lastname")
        forged = await call(session, sim, other_query, prefer="odata.maxpagesize=4")
    assert [len(p.json()["value"]) for p in pages] == [4, 4, 3]
    assert sorted(r["contactid"] for p in pages for r in p.json()["value"]) == sorted(ids)
    assert answer.headers["Preference-Applied"] == "odata.maxpagesize=4"
    assert forged.status == 400


# ----- real-time export requests ------------------------------------------------------------------


async def test_export_lifecycle_poll_and_chunked_download(session: aiohttp.ClientSession) -> None:
    clock = FakeClock()
    config = SimulatorConfig(seed=8, org_kind="realtime", realtime_delay=60.0, file_chunk_size=1000)
    async with Simulator(config, clock=clock) as sim:
        options = await picklists(session, sim)
        export = options["msdynmkt_dsrrequesttype"]["Export"]
        inputs = []
        for n in range(1, 200):
            truth = sim.rows.truth(contact(n))
            assert truth is not None
            inputs += [i for i in truth.identifiers if len(sim.realtime.export_file(i)) > 2500]
            if len(inputs) >= 2:
                break
        made = []
        for value in inputs[:2]:
            created = await call(
                session,
                sim,
                "msdynmkt_gdprrequests",
                method="POST",
                body={
                    "msdynmkt_name": "SAR 1",
                    "msdynmkt_dsrrequesttype": export,
                    "msdynmkt_dsrrequestinput": value,
                },
            )
            assert created.status == 204, created.raw
            location = created.headers["OData-EntityId"]
            assert location.startswith(f"{sim.base_url}{API}msdynmkt_gdprrequests(")
            made.append(location.rpartition("(")[2].rstrip(")"))
        poll = "msdynmkt_gdprrequests?$filter=" + " or ".join(
            f"msdynmkt_gdprrequestid eq {i}" for i in made
        )
        early = await call(session, sim, poll, prefer=FORMATTED)
        early_file = await call(
            session, sim, f"msdynmkt_gdprrequests({made[0]})/msdynmkt_dsrrequestdata/$value"
        )
        clock.now += 61
        late = await call(
            session,
            sim,
            poll + "&$select=msdynmkt_dsrrequestprogress,msdynmkt_dsrrequestdata,"
            "msdynmkt_dsrrequestdata_name",
        )
        url = f"msdynmkt_gdprrequests({made[0]})/msdynmkt_dsrrequestdata/$value"
        received = b""
        chunks = 0
        size = None
        while size is None or len(received) < size:
            start = len(received)
            part = await call(session, sim, url, headers={"Range": f"bytes={start}-{start + 4095}"})
            assert part.status == 206
            size = int(part.headers["x-ms-file-size"])
            assert part.headers["x-ms-file-name"] == "gdpr_output.json"
            assert len(part.raw) <= 1000  # less than asked for
            received += part.raw
            chunks += 1
        whole = await call(session, sim, url)
        expected_file = sim.realtime.export_file(inputs[0])
        kinds = sim.counters()["total"]["by_kind"]
    progress = options["msdynmkt_dsrrequestprogress"]
    assert [r["msdynmkt_dsrrequestprogress"] for r in early.json()["value"]] == [
        progress["InProgress"]
    ] * 2
    assert (
        early.json()["value"][0][
            "msdynmkt_dsrrequestprogress@OData.Community.Display.V1.FormattedValue"
        ]
        == "InProgress"
    )
    assert early_file.status == 404
    rows = late.json()["value"]
    assert [r["msdynmkt_dsrrequestprogress"] for r in rows] == [progress["Completed"]] * 2
    assert all(r["msdynmkt_dsrrequestdata_name"] == "gdpr_output.json" for r in rows)
    assert received == expected_file == whole.raw
    assert hashlib.sha256(received).hexdigest() == sim.realtime.export_sha256(inputs[0])
    assert chunks >= 3
    assert orjson.loads(received)["endUserIdentifier"] == inputs[0].strip().lower()
    assert (kinds["create"], kinds["poll"], kinds["download"]) == (2, 2, chunks + 2)


async def test_create_validates_and_can_return_the_row(session: aiohttp.ClientSession) -> None:
    config = SimulatorConfig(
        seed=1, org_kind="realtime", realtime_never_inputs=frozenset({"x@y.z"})
    )
    async with Simulator(config) as sim:
        options = await picklists(session, sim)
        export = options["msdynmkt_dsrrequesttype"]["Export"]
        guessed = await call(
            session,
            sim,
            "msdynmkt_gdprrequests",
            method="POST",
            body={"msdynmkt_dsrrequesttype": 534120000, "msdynmkt_dsrrequestinput": "x@y.z"},
        )
        unknown = await call(
            session,
            sim,
            "msdynmkt_gdprrequests",
            method="POST",
            body={
                "msdynmkt_dsrrequesttype": export,
                "msdynmkt_dsrrequestinput": "x@y.z",
                "msdynmkt_dsrrequestprogress": 1,
            },
        )
        created = await call(
            session,
            sim,
            "msdynmkt_gdprrequests",
            method="POST",
            body={
                "msdynmkt_name": "n",
                "msdynmkt_dsrrequesttype": export,
                "msdynmkt_dsrrequestinput": "X@Y.Z",
            },
            prefer="return=representation",
        )
        by_input = await call(
            session, sim, "msdynmkt_gdprrequests?$filter=msdynmkt_dsrrequestinput eq 'x@y.z'"
        )
        made = sim.realtime.created()
    assert (guessed.status, guessed.code) == (400, "0x8004431a")
    assert unknown.status == 400
    assert created.status == 201
    row = created.json()
    assert row["msdynmkt_dsrrequestinput"] == "X@Y.Z"
    assert (
        row["msdynmkt_dsrrequestprogress"] == options["msdynmkt_dsrrequestprogress"]["InProgress"]
    )
    assert [r.request_id for r in made] == [row["msdynmkt_gdprrequestid"]]
    assert sim.realtime.never_completes("x@y.z")
    assert row["msdynmkt_gdprrequestid"] in {
        r["msdynmkt_gdprrequestid"] for r in by_input.json()["value"]
    }


# ----- service protection and faults apply to the Web API too -------------------------------------


async def test_web_api_calls_count_against_service_protection(
    session: aiohttp.ClientSession,
) -> None:
    async with Simulator(SimulatorConfig(seed=1, request_limit=3, window_seconds=60)) as sim:
        statuses = [
            (await call(session, sim, f"contacts({contact(n)})")).status for n in range(1, 6)
        ]
        refused = await call(session, sim, f"contacts({contact(1)})")
        other = await call(session, sim, f"contacts({contact(1)})", token="sim-other.1")
    assert statuses == [200, 200, 200, 429, 429]
    assert refused.code == "0x80072322"
    assert int(refused.headers["Retry-After"]) >= 1
    assert other.status == 200


async def test_faults_hit_web_api_calls(session: aiohttp.ClientSession) -> None:
    async with Simulator(SimulatorConfig(seed=1, fault_503=1.0)) as sim:
        answer = await call(session, sim, f"contacts({contact(1)})")
        faults = sim.counters()["total"]["faults"]
    assert answer.status == 503
    assert faults["503"] == 1


async def test_without_a_token_the_answer_is_401(session: aiohttp.ClientSession) -> None:
    async with (
        Simulator(SimulatorConfig()) as sim,
        session.get(sim.base_url + API + f"contacts({contact(1)})") as response,
    ):
        status = response.status
    assert status == 401


async def test_truth_follows_the_org_kind_and_holds_previous_requests() -> None:
    found_previous = False
    async with Simulator(SimulatorConfig(seed=2, org_kind="realtime")) as sim:
        for n in range(1, 60):
            truth = sim.truth(contact(n))
            assert truth is not None
            assert set(truth.consents) == set(truth.identifiers) == set(truth.gdpr_requests)
            found_previous = found_previous or any(truth.gdpr_requests.values())
    async with Simulator(SimulatorConfig(seed=2, org_kind="dataverse")) as sim:
        plain = sim.truth(contact(1))
    assert found_previous
    assert plain is not None
    assert (plain.consents, plain.gdpr_requests) == ({}, {})


async def test_never_completing_inputs_and_the_whole_file_limit(
    session: aiohttp.ClientSession,
) -> None:
    clock = FakeClock()
    config = SimulatorConfig(
        seed=8,
        org_kind="realtime",
        realtime_delay=1.0,
        realtime_never_inputs=frozenset({"Stuck@Example.org"}),
        whole_file_limit=10,
    )
    async with Simulator(config, clock=clock) as sim:
        export = sim.realtime.options.export
        ids = []
        for value in ("stuck@example.org", "free@example.org"):
            body = {"msdynmkt_dsrrequesttype": export, "msdynmkt_dsrrequestinput": value}
            created = await call(session, sim, "msdynmkt_gdprrequests", method="POST", body=body)
            ids.append(created.headers["OData-EntityId"].rpartition("(")[2].rstrip(")"))
        clock.now += 3600
        stuck = await call(session, sim, f"msdynmkt_gdprrequests({ids[0]})")
        free = await call(session, sim, f"msdynmkt_gdprrequests({ids[1]})")
        whole = await call(
            session, sim, f"msdynmkt_gdprrequests({ids[1]})/msdynmkt_dsrrequestdata/$value"
        )
        ranged = await call(
            session,
            sim,
            f"msdynmkt_gdprrequests({ids[1]})/msdynmkt_dsrrequestdata/$value",
            headers={"Range": "bytes=0-4"},
        )
    options = sim.realtime.options
    assert stuck.json()["msdynmkt_dsrrequestprogress"] == options.in_progress
    assert stuck.json()["msdynmkt_dsrrequestdata"] is None
    assert free.json()["msdynmkt_dsrrequestprogress"] == options.completed
    assert whole.status == 400
    assert "Range" in whole.json()["error"]["message"]
    assert (ranged.status, ranged.raw) == (206, sim.realtime.export_file("free@example.org")[:5])
    assert ranged.headers["Content-Range"].startswith("bytes 0-4/")


async def test_parties_by_activity_and_the_parent_account_by_key(
    session: aiohttp.ClientSession,
) -> None:
    async with Simulator(SimulatorConfig(seed=7)) as sim:
        found = (sim.truth(contact(n)) for n in range(1, 100))
        truth = next(t for t in found if t and t.activities and t.parent_account)
        assert truth.parent_account is not None
        activities = [a["activityid"] for a in truth.activities]
        parties = await call(
            session,
            sim,
            "activityparties?$select=_partyid_value,participationtypemask&$filter="
            + " or ".join(f"_activityid_value eq {a}" for a in activities),
        )
        by_key = await call(
            session, sim, f"activityparties({truth.activity_parties[0]['activitypartyid']})"
        )
        parent = await call(
            session, sim, f"accounts({truth.contact['_parentcustomerid_value']})?$select=name"
        )
    got = sorted(p["activitypartyid"] for p in parties.json()["value"])
    assert got == sorted(p["activitypartyid"] for p in truth.activity_parties)
    assert by_key.status == 400
    assert parent.json()["name"] == truth.parent_account["name"]


async def test_a_table_can_be_forbidden_for_one_identity(session: aiohttp.ClientSession) -> None:
    config = SimulatorConfig(forbidden_tables=frozenset({"sim-a:msdynmkt_gdprrequest"}))
    async with Simulator(config) as sim:
        path = "msdynmkt_gdprrequests?$filter=msdynmkt_dsrrequestinput eq 'a@b.c'"
        refused = await call(session, sim, path, token="sim-a.1")
        allowed = await call(session, sim, path, token="sim-b.1")
    assert refused.status == 403
    assert "prvReadmsdynmkt_gdprrequest privilege" in refused.json()["error"]["message"]
    assert allowed.status == 200
    with pytest.raises(ValueError, match="unknown table"):
        SimulatorConfig(forbidden_tables=frozenset({"msdynmkt_contactpointconsent"}))


async def test_a_lost_create_is_carried_out_and_found_by_its_name(
    session: aiohttp.ClientSession,
) -> None:
    """``fault_lost``: the row is made, the answer never comes; a query by name finds it (as
    Dataverse filters on any column), without case, and never a row of another name."""

    async def until_answered(path: str, **kwargs: Any) -> Answer | None:
        for _ in range(50):  # half the requests lose their answer: one soon gets through
            try:
                return await call(session, sim, path, **kwargs)
            except aiohttp.ServerDisconnectedError:
                if kwargs.get("method") == "POST":
                    return None  # carried out, answer lost: what the test is after
        raise AssertionError("no answer in 50 tries")

    async with Simulator(SimulatorConfig(seed=1, org_kind="realtime", fault_lost=0.5)) as sim:
        options = await until_answered(
            f"{DEFINITION}/Attributes/Microsoft.Dynamics.CRM.PicklistAttributeMetadata"
            "?$select=LogicalName&$expand=OptionSet"
        )
        assert options is not None
        assert options.status == 200, options.raw
        export = next(
            o["Value"]
            for a in options.json()["value"]
            if a["LogicalName"] == "msdynmkt_dsrrequesttype"
            for o in a["OptionSet"]["Options"]
            if o["Label"]["UserLocalizedLabel"]["Label"] == "Export"
        )
        lost: str | None = None
        for n in range(50):
            body = {
                "msdynmkt_name": f"sar-bulk export Lost {n}",
                "msdynmkt_dsrrequesttype": export,
                "msdynmkt_dsrrequestinput": f"ann{n}@example.org",
            }
            sent = await until_answered("msdynmkt_gdprrequests", method="POST", body=body)
            if sent is None:
                lost = f"sar-bulk export Lost {n}"
                break
        assert lost is not None
        made = {r.name: r.request_id for r in sim.realtime.created()}
        assert lost in made, "the request was carried out before its answer was lost"
        assert sim.counters()["total"]["faults"]["lost"] >= 1
        found = await until_answered(
            f"msdynmkt_gdprrequests?$filter=msdynmkt_name eq '{lost.upper()}'"
        )
        other = await until_answered(
            "msdynmkt_gdprrequests?$filter=msdynmkt_name eq 'sar-bulk export none'"
        )
    assert found is not None
    assert found.status == 200, found.raw
    assert [r["msdynmkt_gdprrequestid"] for r in found.json()["value"]] == [made[lost]]
    assert other is not None
    assert other.status == 200, other.raw
    assert other.json()["value"] == []
