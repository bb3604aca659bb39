"""The records source over real loopback HTTP against a scripted Web API."""

from __future__ import annotations

from collections.abc import AsyncIterator

import orjson
import pytest
from aiohttp import web
from webapi_support import (
    DictScope,
    DictSink,
    Handler,
    ScriptedOrg,
    Seen,
    error_response,
    install_gdpr_metadata,
    json_response,
    scripted_org,
    source_deps,
)

from sar_bulk.dataverse.webapi import ResourceMissing
from sar_bulk.errors import (
    BadRequest,
    ConfigError,
    Forbidden,
    ForeignData,
    MalformedResponse,
    PagingError,
    RunStopper,
)
from sar_bulk.sources.base import Availability, CustomTable, Part, Source, SourceSettings
from sar_bulk.sources.own_exports import CREATED, PENDING, note_key
from sar_bulk.sources.records import ContactMissing, RecordsSource, TableForbidden, identifiers

CID = "6f1c2a3b-1111-4222-8333-444455556666"
EMAIL = "o'brien+sar@example.org"
PHONE = "+44 20 7946 0000"
PART = Part("records", "records")
CONTACT_BODY = (
    b'{"@odata.context":"x","contactid":"' + CID.encode() + b'","creditlimit":1.10,'
    b'"emailaddress1":"'
    + EMAIL.encode()
    + b'","emailaddress2":null,"telephone1":"'
    + PHONE.encode()
    + b'","mobilephone":"'
    + PHONE.encode()
    + b'"}'
)


LEAD: dict[str, object] = {
    "leadid": "0e0e0e0e-0000-4000-8000-00000000000a",
    "_parentcontactid_value": CID,
}
CONSENT: dict[str, object] = {
    "msdynmkt_contactpointconsent4id": "0e0e0e0e-0000-4000-8000-00000000000c",
    "msdynmkt_contactpointvalue": PHONE,
    "msdynmkt_value": 534120001,
}


def activity(n: int) -> dict[str, object]:
    return {
        "activityid": f"0e0e0e0e-0000-4000-8000-0000000000a{n}",
        "_regardingobjectid_value": CID,
    }


def request(name: str, n: int = 0, value: str = EMAIL) -> dict[str, object]:
    return {
        "msdynmkt_gdprrequestid": f"0e0e0e0e-0000-4000-8000-00000000010{n}",
        "msdynmkt_name": name,
        "msdynmkt_dsrrequestinput": value,
    }


def rows_for(expected_filter: str, rows: list[dict[str, object]]) -> Handler:
    def handler(seen: Seen) -> web.Response:
        assert seen.params["$filter"] == expected_filter, seen.params
        return json_response({"value": rows})

    return handler


@pytest.fixture
async def org() -> AsyncIterator[ScriptedOrg]:
    async with scripted_org() as org:
        org.on("GET", f"contacts({CID})", lambda s: web.Response(body=CONTACT_BODY))
        org.on("GET", "leads", rows_for(f"_parentcontactid_value eq {CID}", [LEAD]))
        org.on("GET", "accounts", rows_for(f"_primarycontactid_value eq {CID}", []))

        def activities(seen: Seen) -> web.Response:
            if seen.params.get("page") == "2":
                return json_response({"value": [activity(2)]})
            assert seen.params["$filter"] == f"_regardingobjectid_value eq {CID}"
            link = f"{org.base_url}/api/data/v9.2/activitypointers?page=2"
            return json_response({"value": [activity(1)], "@odata.nextLink": link})

        org.on("GET", "activitypointers", activities)
        values = (
            "(msdynmkt_contactpointvalue eq 'o''brien+sar@example.org' "
            "or msdynmkt_contactpointvalue eq '+44 20 7946 0000')"
        )
        org.on(
            "GET",
            "msdynmkt_contactpointconsent4s",
            rows_for(values, [CONSENT]),
        )
        install_gdpr_metadata(org)
        inputs = (
            "(msdynmkt_dsrrequestinput eq 'o''brien+sar@example.org' "
            "or msdynmkt_dsrrequestinput eq '+44 20 7946 0000')"
        )
        org.on("GET", "msdynmkt_gdprrequests", rows_for(inputs, [request("old")]))
        yield org


async def test_every_table_is_stored_as_sent(org: ScriptedOrg) -> None:
    sink = DictSink()
    async with source_deps(org) as deps:
        source: Source = RecordsSource(deps)  # mypy checks it meets the seam
        assert source.parts() == (PART,)
        await source.fetch(DictScope(CID), PART, sink)
    assert orjson.dumps(sink.rows["records/contact.json"][0]) == CONTACT_BODY.replace(
        b'"@odata.context":"x",', b'"@odata.context":"x",'
    )
    assert sink.rows["records/lead.json"] == [LEAD]
    assert sink.rows["records/activitypointer.json"] == [activity(1), activity(2)]
    assert "records/account.json" not in sink.rows
    assert sink.notes["tables"] == {
        "contact": 1,
        "lead": 1,
        "account": 0,
        "activitypointer": 2,
        "parent_account": 0,
        "activityparty": "not present",  # the scripted org has no such entity set
        "msdynmkt_contactpointconsent4": 1,
        "msdynmkt_gdprrequest": 1,
    }
    contact = org.seen("GET", f"contacts({CID})")[0]
    assert "FormattedValue" in contact.headers["Prefer"]
    # 1 contact + 4 tables (+1 page) + consent + 3 metadata + earlier requests
    assert len(org.log) == 11


async def test_export_requests_this_run_made_are_left_out_of_earlier_requests(
    org: ScriptedOrg,
) -> None:
    made, named = "5b7a1a52-31d4-4f4b-8a55-0e3c2b1d9f10", "sar-bulk export 3f2504e0 2 0badcafe"
    rows: list[dict[str, object]] = [
        request("old", 1),
        # an export an earlier run made for this contact: an earlier subject request, kept
        request("sar-bulk export 3f2504e0 1 12345678", 2),
        # this run's, noted by id (created) and by name (the POST's answer not noted yet)
        {**request("sar-bulk export x 1 aa", 3, PHONE), "msdynmkt_gdprrequestid": made.upper()},
        request(named, 4, PHONE),
    ]
    org.on("GET", "msdynmkt_gdprrequests", lambda s: json_response({"value": rows}))
    notes = {
        note_key("email", "o'brien+sar@example.org"): CREATED + made,
        note_key("phone", "+44 20 7946 0000"): PENDING + named,
    }
    sink = DictSink()
    async with source_deps(org) as deps:
        await RecordsSource(deps).fetch(DictScope(CID, notes=notes), PART, sink)
    kept = sink.rows["records/msdynmkt_gdprrequest.json"]
    assert [r["msdynmkt_name"] for r in kept] == ["old", "sar-bulk export 3f2504e0 1 12345678"]
    tables = sink.notes["tables"]
    assert isinstance(tables, dict)
    assert tables["msdynmkt_gdprrequest"] == 2
    # Without the realtime part in this run, those notes are an earlier run's (the contact
    # failed then): its requests are earlier subject requests like any other.
    alone = DictSink()
    async with source_deps(org) as deps:
        scope = DictScope(CID, notes=notes, sources=frozenset({"records"}))
        await RecordsSource(deps).fetch(scope, PART, alone)
    assert len(alone.rows["records/msdynmkt_gdprrequest.json"]) == 4


OTHER = "0e0e0e0e-0000-4000-8000-0000000000ff"


@pytest.mark.parametrize(
    ("entity_set", "rows", "column"),
    [
        ("leads", [LEAD, {**LEAD, "_parentcontactid_value": OTHER}], "_parentcontactid_value"),
        ("leads", [{"leadid": LEAD["leadid"]}], "_parentcontactid_value"),
        ("activitypointers", [{**activity(1), "_regardingobjectid_value": None}], "_regarding"),
        (
            "msdynmkt_contactpointconsent4s",
            [{**CONSENT, "msdynmkt_contactpointvalue": "x@y.z"}],
            "_contactpointvalue",
        ),
        ("msdynmkt_gdprrequests", [request("old", value="x@y.z")], "dsrrequestinput"),
    ],
)
async def test_a_row_of_another_contact_fails_the_part_and_nothing_of_its_table_is_kept(
    org: ScriptedOrg, entity_set: str, rows: list[dict[str, object]], column: str
) -> None:
    org.on("GET", entity_set, lambda s: json_response({"value": rows}))
    sink = DictSink()
    async with source_deps(org) as deps:
        with pytest.raises(ForeignData, match=column) as caught:
            await RecordsSource(deps).fetch(DictScope(CID), PART, sink)
    message = str(caught.value)
    assert OTHER not in message  # names no one's data
    assert "x@y.z" not in message
    table = {"leads": "lead", "activitypointers": "activitypointer"}.get(entity_set)
    assert f"records/{table or entity_set[:-1]}.json" not in sink.rows


async def test_the_row_of_another_contact_is_not_taken_for_the_contact(org: ScriptedOrg) -> None:
    org.on("GET", f"contacts({CID})", lambda s: json_response({"contactid": OTHER}))
    sink = DictSink()
    async with source_deps(org) as deps:
        with pytest.raises(ForeignData, match="contactid"):
            await RecordsSource(deps).fetch(DictScope(CID), PART, sink)
    assert sink.rows == {}
    assert len(org.log) == 1


async def test_keyed_rows_match_without_case_or_outer_blanks(org: ScriptedOrg) -> None:
    # Dataverse compares strings without case (and SQL ignores trailing blanks): these are the
    # contact's own rows, kept as sent.
    upper = {**CONSENT, "msdynmkt_contactpointvalue": PHONE + " "}
    org.on("GET", "msdynmkt_contactpointconsent4s", lambda s: json_response({"value": [upper]}))
    shouted = request("old", value=EMAIL.upper())
    org.on("GET", "msdynmkt_gdprrequests", lambda s: json_response({"value": [shouted]}))
    org.on(
        "GET",
        f"contacts({CID})",
        lambda s: json_response(
            {"contactid": CID.upper(), "emailaddress1": EMAIL, "telephone1": PHONE}
        ),
    )
    sink = DictSink()
    async with source_deps(org) as deps:
        await RecordsSource(deps).fetch(DictScope(CID), PART, sink)
    assert sink.rows["records/msdynmkt_contactpointconsent4.json"] == [upper]
    assert sink.rows["records/msdynmkt_gdprrequest.json"] == [shouted]


@pytest.mark.parametrize("same_page", [False, True])
async def test_a_row_sent_twice_fails_the_part(org: ScriptedOrg, same_page: bool) -> None:
    # Each nextLink is new (so no loop is seen), but the rows repeat: without a check the
    # dossier would hold the lead twice, or 10,000 pages of it.
    def leads(seen: Seen) -> web.Response:
        page = int(seen.params.get("page", "1"))
        link = f"{org.base_url}/api/data/v9.2/leads?page={page + 1}"
        rows = [LEAD, LEAD] if same_page else [LEAD]
        return json_response({"value": rows, "@odata.nextLink": link})

    org.on("GET", "leads", leads)
    sink = DictSink()
    async with source_deps(org) as deps:
        with pytest.raises(
            PagingError, match=r"lead \(leads\) sent a row twice \(the same leadid\)"
        ) as caught:
            await RecordsSource(deps).fetch(DictScope(CID), PART, sink)
    assert str(LEAD["leadid"]) not in str(caught.value)
    assert len(org.seen("GET", "leads")) == (1 if same_page else 2)


async def test_a_row_without_its_id_fails_the_part(org: ScriptedOrg) -> None:
    org.on("GET", "leads", lambda s: json_response({"value": [{**LEAD, "leadid": None}]}))
    async with source_deps(org) as deps:
        with pytest.raises(MalformedResponse, match=r"lead \(leads\).*leadid"):
            await RecordsSource(deps).fetch(DictScope(CID), PART, DictSink())


async def test_contact_row_and_metadata_are_fetched_once(org: ScriptedOrg) -> None:
    async with source_deps(org) as deps:
        source = RecordsSource(deps)
        scope = DictScope(CID)
        await source.fetch(scope, PART, DictSink())
        await source.fetch(scope, PART, DictSink())
        await source.fetch(DictScope(CID, number=2), PART, DictSink())
    assert len(org.seen("GET", f"contacts({CID})")) == 2  # once per contact scope
    assert len(org.seen("GET", "EntityDefinitions(LogicalName='msdynmkt_gdprrequest')")) == 1


async def test_a_table_it_may_not_read_fails_the_part_unless_excluded(org: ScriptedOrg) -> None:
    org.on(
        "GET",
        "leads",
        lambda s: error_response(
            403, "0x80040220", "Principal user is missing prvReadLead privilege"
        ),
    )
    async with source_deps(org) as deps:
        with pytest.raises(TableForbidden, match=r"lead \(leads\).*prvReadLead.*excluded_tables"):
            await RecordsSource(deps).fetch(DictScope(CID), PART, DictSink())
    org.log.clear()
    sink = DictSink()
    settings = SourceSettings(excluded_tables=frozenset({"lead"}))
    async with source_deps(org, settings) as deps:
        await RecordsSource(deps).fetch(DictScope(CID), PART, sink)
    assert sink.notes["tables"]["lead"] == "excluded"  # type: ignore[index,call-overload]
    assert not org.seen("GET", "leads")


async def test_a_refused_read_outside_the_tables_gives_advice_for_the_web_api(
    org: ScriptedOrg,
) -> None:
    # The contact row and the subject-request metadata are read like tables: a 403 there must
    # not tell the operator to grant a role "that may run the action" (the retired one).
    refused = "Principal user is missing prvReadContact privilege"
    org.on("GET", f"contacts({CID})", lambda s: error_response(403, "0x80040220", refused))
    async with source_deps(org) as deps:
        with pytest.raises(Forbidden) as caught:
            await RecordsSource(deps).fetch(DictScope(CID), PART, DictSink())
    message = str(caught.value)
    assert "prvReadContact" in message
    assert "run the action" not in message
    assert "read privilege" in message


async def test_a_contact_that_does_not_exist_fails_the_part_only(org: ScriptedOrg) -> None:
    other = "00000000-0000-4000-8000-000000000009"
    org.on(
        "GET",
        f"contacts({other})",
        lambda s: error_response(404, "0x80040217", "contact With Id = x Does Not Exist"),
    )
    async with source_deps(org) as deps:
        with pytest.raises(ContactMissing, match="does not exist") as caught:
            await RecordsSource(deps).fetch(DictScope(other), PART, DictSink())
    assert not isinstance(caught.value, RunStopper)
    assert len(org.log) == 1


async def test_a_bare_404_does_not_say_the_contact_does_not_exist(org: ScriptedOrg) -> None:
    # A 404 without Dataverse's "Does Not Exist" code (a proxy, a gateway) says nothing about
    # the contact: telling the operator it was deleted would answer the person "nothing held".
    org.on("GET", f"contacts({CID})", lambda s: web.Response(status=404, text="Not Found"))
    async with source_deps(org) as deps:
        with pytest.raises(ResourceMissing) as caught:
            await RecordsSource(deps).fetch(DictScope(CID), PART, DictSink())
    assert not isinstance(caught.value, ContactMissing)
    assert "does not exist" not in str(caught.value)


async def test_a_contact_without_email_or_phone_skips_the_keyed_tables(org: ScriptedOrg) -> None:
    org.on(
        "GET", f"contacts({CID})", lambda s: json_response({"contactid": CID, "emailaddress1": " "})
    )
    sink = DictSink()
    async with source_deps(org) as deps:
        await RecordsSource(deps).fetch(DictScope(CID), PART, sink)
    assert not org.seen("GET", "msdynmkt_contactpointconsent4s")
    assert not org.seen("GET", "msdynmkt_gdprrequests")
    assert "no e-mail" in str(sink.notes["identifiers"])
    assert sink.notes["tables"]["msdynmkt_contactpointconsent4"] == 0  # type: ignore[index,call-overload]


async def test_custom_tables_run_per_email(org: ScriptedOrg) -> None:
    org.on(
        "GET",
        f"contacts({CID})",
        lambda s: json_response(
            {"contactid": CID, "emailaddress1": "a@x.org", "emailaddress3": "b'@x.org"}
        ),
    )
    seen_filters: list[str] = []

    def cases(seen: Seen) -> web.Response:
        seen_filters.append(seen.params["$filter"])
        return json_response({"value": [{"f": seen.params["$filter"]}]})

    org.on("GET", "incidents", cases)
    for keyed in ("msdynmkt_contactpointconsent4s", "msdynmkt_gdprrequests"):
        org.on("GET", keyed, lambda s: json_response({"value": []}))
    org.on("GET", "new_things", cases)
    settings = SourceSettings(
        custom_tables=(
            CustomTable("incident", "incidents", "_customerid_value eq {contact_id}"),
            CustomTable("new_thing", "new_things", "new_email eq {email}"),
        )
    )
    sink = DictSink()
    async with source_deps(org, settings) as deps:
        await RecordsSource(deps).fetch(DictScope(CID), PART, sink)
    assert seen_filters == [
        f"_customerid_value eq {CID}",
        "new_email eq 'a@x.org'",
        "new_email eq 'b''@x.org'",
    ]
    assert len(sink.rows["records/new_thing.json"]) == 2


async def test_a_refused_query_names_the_table_and_the_settings_to_check(
    org: ScriptedOrg,
) -> None:
    refused = (
        "Could not find a property named 'new_emial' on type 'Microsoft.Dynamics.CRM.new_thing'."
    )
    org.on("GET", "new_things", lambda s: error_response(400, "0x80060888", refused))
    table = CustomTable("new_thing", "new_things", "new_emial eq {email}")
    async with source_deps(org, SourceSettings(custom_tables=(table,))) as deps:
        with pytest.raises(BadRequest) as caught:
            await RecordsSource(deps).fetch(DictScope(CID), PART, DictSink())
    message = str(caught.value)
    assert "new_thing (new_things)" in message
    assert "new_emial" in message
    assert "custom_tables" in message
    assert "interaction type" not in message  # the retired action's advice


@pytest.mark.parametrize(
    "table",
    [
        CustomTable("x", "bad set", "a eq {contact_id}"),
        CustomTable("x", "things", "a eq {emial}"),
        CustomTable("x", "things", "a eq {email} or b eq {phone}"),
        CustomTable("a/b", "things", "a eq {contact_id}"),
    ],
)
async def test_a_bad_custom_table_is_a_config_error(org: ScriptedOrg, table: CustomTable) -> None:
    async with source_deps(org, SourceSettings(custom_tables=(table,))) as deps:
        with pytest.raises(ConfigError):
            RecordsSource(deps)


async def test_probe(org: ScriptedOrg) -> None:
    async with source_deps(org) as deps:
        source = RecordsSource(deps)
        org.on("GET", "contacts", lambda s: json_response({"value": []}))
        assert (await source.probe()).availability is Availability.AVAILABLE
        assert org.log[-1].params == {
            "$top": "1",
            "$select": "contactid",
            "$filter": "contactid eq 00000000-0000-0000-0000-000000000000",
        }
        org.on(
            "GET", "contacts", lambda s: error_response(403, "0x80040220", "missing prvReadContact")
        )
        probe = await source.probe()
        assert probe.availability is Availability.FORBIDDEN
        assert "prvReadContact" in probe.detail
        del org.routes[("GET", "contacts")]
        assert (await source.probe()).availability is Availability.MISSING
        # A bare 404 (a proxy's) is no proof the org lacks the table: in auto mode "missing"
        # would leave the source out of every dossier. The check fails instead, naming it.
        org.on("GET", "contacts", lambda s: web.Response(status=404, text="Not Found"))
        with pytest.raises(ResourceMissing):
            await source.probe()


def test_identifiers_drop_blanks_and_repeats() -> None:
    row = {
        "emailaddress1": "a@x",
        "emailaddress2": "",
        "emailaddress3": "a@x",
        "telephone2": "1",
        "mobilephone": "1",
        "telephone1": 5,
    }
    assert [(i.kind, i.value) for i in identifiers(row)] == [("email", "a@x"), ("phone", "1")]
