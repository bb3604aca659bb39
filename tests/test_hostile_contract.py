"""Issue 8, "never a wrong answer": a hostile org's answers never become a valid-looking dossier.

Every misbehaviour is a hostile kind of the simulator (``sar_bulk/simulator/hostile.py``) bound
to one contact, met over real loopback HTTP. At the client level each kind must raise the error
of the tree that names it (or, for exact numbers and repeats, keep the data exactly); at the run
level the hostile contact fails with a reason, every other contact gets its exact dossier, and
the run ends with exit code 1, not a crash.
"""

from __future__ import annotations

import tracemalloc
import zipfile
from pathlib import Path
from typing import Any

import orjson
import pytest
from support import (
    ClientRig,
    assert_exact_dossiers,
    client_rig,
    contact_ids,
    read_report,
    run_config,
    run_engine,
    unlimited,
    write_csv,
)

from sar_bulk.dataverse.client import (
    MAX_SKIP_TOKEN,
    DataverseClient,
    Query,
    classify_error,
    decode_page,
)
from sar_bulk.dataverse.http import OrgHttp
from sar_bulk.errors import (
    ActionMissing,
    ForeignData,
    MalformedResponse,
    NotFound,
    OverLimit,
    Redirected,
    RequestContext,
    RetryableError,
    RunStopper,
)
from sar_bulk.run.runner import ExitCode
from sar_bulk.simulator import Simulator, SimulatorConfig
from sar_bulk.simulator.hostile import EXACT_NUMBERS
from sar_bulk.sources.interaction_types import InteractionType

IDS = contact_ids(4, seed=8)
HOSTILE = IDS[0]
# HOSTILE holds 285 and 206 interactions of these types (seed 8): several pages each.
TYPE = InteractionType.EmailContainsBlacklistedLinks
TYPES = "EmailContainsBlacklistedLinks,EmailBlockBounced"
ACTION_CONTEXT = (
    "https://org.example/api/data/v9.0/$metadata#Microsoft.Dynamics.CRM."
    "msdyncrm_LoadInteractionsPublicResponse"
)


def hostile(kind: str, **settings: Any) -> SimulatorConfig:
    """A simulator where HOSTILE misbehaves as ``kind`` and has data on several pages."""
    return unlimited(
        seed=8,
        page_size=20,
        heavy_contacts={HOSTILE: 2000},
        hostile_contacts={HOSTILE: kind},
        **settings,
    )


async def all_pages(rig: ClientRig, contact: str = HOSTILE) -> list[Any]:
    return [page async for page in rig.client.pages(Query(contact, TYPE))]


def expected(rig: ClientRig, contact: str = HOSTILE) -> list[dict[str, Any]]:
    rows = list(rig.simulator.dataset.interactions(contact, TYPE))
    assert len(rows) > 20, "the test needs a contact with several pages of this type"
    return rows


async def run_with(kind: str, tmp_path: Path, **flags: Any) -> tuple[Simulator, dict[str, Any]]:
    """A whole run over IDS with HOSTILE misbehaving; returns the simulator and the report."""
    async with Simulator(hostile(kind)) as sim:
        csv = write_csv(tmp_path / "c.csv", ["ContactId", *IDS])
        outcome = await run_engine(run_config(sim, csv, tmp_path / "out", types=TYPES, **flags))
    assert outcome.code == ExitCode.INCOMPLETE, outcome.summary
    return sim, read_report(tmp_path / "out")


def assert_only_hostile_failed(sim: Simulator, report: dict[str, Any], tmp_path: Path) -> str:
    """HOSTILE failed with a reason; the others have exact dossiers. Returns the reason."""
    out = tmp_path / "out"
    others = IDS[1:]
    types = [InteractionType(t) for t in TYPES.split(",")]
    assert not (out / f"{HOSTILE}.zip").exists()
    # Every other contact: exactly its dossier (and no dossier for HOSTILE).
    assert_exact_dossiers(sim.dataset, out, others, types)
    failed = report["failed_contacts"]
    assert [entry["contact_id"] for entry in failed] == [HOSTILE]
    reasons: dict[str, str] = failed[0]["reasons"]
    assert reasons
    return " | ".join(reasons.values())


# -- item 1: the answer's contract ------------------------------------------------------------

SHAPES = ["no-data", "value-shape", "lowercase-data", "error-in-200", "data-not-string"]


@pytest.mark.parametrize("kind", SHAPES)
async def test_a_200_that_is_not_the_actions_answer_is_malformed(kind: str) -> None:
    async with client_rig(hostile(kind)) as rig:
        with pytest.raises(MalformedResponse) as caught:
            await rig.client.fetch_page(Query(HOSTILE, TYPE), None, 1)
        await all_pages(rig, IDS[1])  # the other contacts are answered as usual
    assert isinstance(caught.value, RetryableError)
    assert caught.value.status == 200
    assert HOSTILE in str(caught.value)
    assert TYPE.value in str(caught.value)


@pytest.mark.parametrize(
    ("body", "empty"),
    [
        ({"@odata.context": ACTION_CONTEXT, "Data": "[]"}, True),
        ({"Data": "[]"}, True),  # an empty array is an empty page whatever the context
        ({"@odata.context": ACTION_CONTEXT, "Data": None, "NextSkipToken": None}, True),
        ({"@odata.context": ACTION_CONTEXT, "NextSkipToken": ""}, True),
        ({"Data": None}, False),  # null without the action's context: not known to be "none"
        ({}, False),
        ({"@odata.context": "https://o.example/api/data/v9.0/$metadata#contacts"}, False),
        ({"@odata.context": ACTION_CONTEXT, "data": "[]"}, False),  # a key the decoder skips
        ({"@odata.context": ACTION_CONTEXT, "value": []}, False),
        ({"@odata.context": ACTION_CONTEXT, "Data": 0}, False),
        ({"@odata.context": ACTION_CONTEXT, "Data": {}}, False),
        ({"error": {"code": "0x80040216", "message": "x"}, "Data": "[]"}, False),
    ],
)
def test_only_the_actions_own_empty_answer_is_an_empty_page(
    body: dict[str, Any], empty: bool
) -> None:
    raw = orjson.dumps(body)
    if empty:
        assert decode_page(Query(HOSTILE, TYPE), raw) == ([], None)
    else:
        with pytest.raises(MalformedResponse):
            decode_page(Query(HOSTILE, TYPE), raw)


async def test_every_empty_answer_of_the_simulator_names_the_action() -> None:
    """The simulator varies empty answers ("[]", null, absent); each one decodes as empty."""
    spellings: set[str] = set()
    async with client_rig(unlimited(seed=8)) as rig:
        for contact in contact_ids(40, seed=9):
            for itype in (TYPE, InteractionType.FormVisited, InteractionType.EmailClicked):
                query = Query(contact, itype)
                answer = await rig.client.http.send(
                    query.context(1),
                    "POST",
                    rig.client.http.org.action_url,
                    body=orjson.dumps(query.body(None)),
                    headers={"Content-Type": "application/json; charset=utf-8"},
                )
                document = orjson.loads(answer.body)
                if document.get("Data") not in (None, "[]"):
                    continue
                spellings.add(repr(document.get("Data", "absent")))
                assert document["@odata.context"].endswith(
                    "msdyncrm_LoadInteractionsPublicResponse"
                )
                assert decode_page(query, answer.body)[0] == []
    assert spellings == {"'[]'", "None", "'absent'"}


async def test_run_fails_the_contact_whose_answers_are_not_the_action(tmp_path: Path) -> None:
    sim, report = await run_with("value-shape", tmp_path)
    reason = assert_only_hostile_failed(sim, report, tmp_path)
    assert "not the action's answer" in reason
    # Retried like a fault before each of the two types failed (8 attempts each by default).
    assert report["totals"]["retries"] == 2 * 7


# -- item 2: no redirects ---------------------------------------------------------------------


async def test_a_redirect_is_refused_and_never_followed() -> None:
    async with client_rig(hostile("redirect")) as rig:
        with pytest.raises(Redirected) as caught:
            await rig.client.fetch_page(Query(HOSTILE, TYPE), None, 1)
    error = caught.value
    assert error.status == 307
    assert "http://10.0.0.1/" in str(error), "the message names where it pointed"
    assert not isinstance(error, RetryableError | RunStopper)


async def test_a_request_off_the_orgs_origin_is_never_sent() -> None:
    from sar_bulk.errors import ConfigError

    async with client_rig() as rig:
        with pytest.raises(ConfigError, match="origin"):
            await rig.client.http.send(
                Query(HOSTILE, TYPE).context(1), "GET", "http://10.0.0.1/api/data/v9.0/contacts"
            )
        assert rig.credential.calls == 0, "no token was even fetched for it"


async def test_run_fails_the_contact_that_is_redirected(tmp_path: Path) -> None:
    sim, report = await run_with("redirect", tmp_path)
    reason = assert_only_hostile_failed(sim, report, tmp_path)
    assert "redirect" in reason
    assert "10.0.0.1" in reason


# -- item 3: values exactly as sent, foreign types refused, repeats counted -------------------


async def test_numbers_keep_every_digit() -> None:
    async with client_rig(hostile("exact-numbers")) as rig:
        pages = await all_pages(rig)
        rows = expected(rig)
    got = [item for page in pages for item in page.interactions]
    assert len(got) == len(rows)
    for item, row in zip(got, rows, strict=True):
        line = orjson.dumps(item)
        assert line == orjson.dumps(row)[:-1] + f',"Exact":{EXACT_NUMBERS}}}'.encode()


async def test_run_writes_the_numbers_byte_for_byte(tmp_path: Path) -> None:
    async with Simulator(hostile("exact-numbers")) as sim:
        csv = write_csv(tmp_path / "c.csv", ["ContactId", *IDS])
        outcome = await run_engine(run_config(sim, csv, tmp_path / "out", types=TYPE.value))
        rows = list(sim.dataset.interactions(HOSTILE, TYPE))
    assert outcome.code == ExitCode.OK, outcome.summary
    with zipfile.ZipFile(tmp_path / "out" / f"{HOSTILE}.zip") as archive:
        member = archive.read(f"interactions/{TYPE.value}.json")
    assert member.count(f'"Exact":{EXACT_NUMBERS}'.encode()) == len(rows) > 0


async def test_an_interaction_of_another_type_refuses_the_page() -> None:
    async with client_rig(hostile("foreign-type")) as rig:
        with pytest.raises(ForeignData) as caught:
            await rig.client.fetch_page(Query(HOSTILE, TYPE), None, 1)
    message = str(caught.value)
    assert HOSTILE in message
    assert TYPE.value in message
    assert "EmailSent" not in message, "the message names what was asked, not the content"
    assert not isinstance(caught.value, RetryableError | RunStopper)


def test_an_interaction_of_another_contact_refuses_the_page() -> None:
    other = {"ContactId": IDS[1], "InteractionType": TYPE.value, "Subject": "private"}
    raw = orjson.dumps({"Data": orjson.dumps([other]).decode()})
    with pytest.raises(ForeignData) as caught:
        decode_page(Query(HOSTILE, TYPE), raw)
    assert IDS[1] not in str(caught.value)
    assert "private" not in str(caught.value)
    # The same contact in another spelling (upper case, braces) is the same contact.
    mine = dict(other, ContactId="{" + HOSTILE.upper() + "}")
    assert decode_page(Query(HOSTILE, TYPE), orjson.dumps({"Data": orjson.dumps([mine]).decode()}))


async def test_run_fails_the_contact_sent_another_types_data(tmp_path: Path) -> None:
    sim, report = await run_with("foreign-type", tmp_path)
    reason = assert_only_hostile_failed(sim, report, tmp_path)
    assert "InteractionType" in reason


async def test_repeated_records_are_kept_and_counted() -> None:
    async with client_rig(hostile("repeated-records")) as rig:
        pages = await all_pages(rig)
        rows = expected(rig)
    got = [item for page in pages for item in page.interactions]
    assert len(got) == 2 * len(rows)
    assert sum(page.repeats for page in pages) == len(rows)
    assert all(page.repeats == len(page.interactions) // 2 for page in pages)


# -- item 6: bounded memory -------------------------------------------------------------------


def _capped(rig: ClientRig, cap: int) -> DataverseClient:
    http = OrgHttp(rig.session, rig.client.http.org, rig.tokens, max_answer_bytes=cap)
    return DataverseClient(http)


async def test_a_gzip_bomb_stops_at_the_cap_without_inflating() -> None:
    cap = 4 * 1024 * 1024
    async with client_rig(hostile("gzip-bomb")) as rig:
        client = _capped(rig, cap)
        tracemalloc.start()
        try:
            with pytest.raises(OverLimit) as caught:
                await client.fetch_page(Query(HOSTILE, TYPE), None, 1)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert f"{cap} bytes" in str(caught.value)
    assert "--max-answer-bytes" in str(caught.value)
    assert not isinstance(caught.value, RetryableError | RunStopper)
    # The bomb inflates to 1.5 GiB; reading stopped about one chunk past the cap.
    assert peak < 8 * cap, f"peak {peak} bytes"


async def test_an_announced_length_over_the_cap_fails_at_once() -> None:
    async with client_rig(unlimited(seed=8, page_size=20, heavy_contacts={HOSTILE: 2000})) as rig:
        with pytest.raises(OverLimit, match="announces") as caught:
            await _capped(rig, 1000).fetch_page(Query(HOSTILE, TYPE), None, 1)
        page = await _capped(rig, 100_000).fetch_page(Query(HOSTILE, TYPE), None, 1)
    assert "1000 bytes" in str(caught.value)
    assert len(page.interactions) == 20


async def test_run_fails_the_contact_sent_a_gzip_bomb(tmp_path: Path) -> None:
    sim, report = await run_with("gzip-bomb", tmp_path)
    reason = assert_only_hostile_failed(sim, report, tmp_path)
    assert "--max-answer-bytes" in reason
    assert str(64 * 1024 * 1024) in reason


async def test_the_answer_cap_is_the_flag_s(tmp_path: Path) -> None:
    # --max-answer-bytes reaches the HTTP client: the reason names the cap that was given.
    sim, report = await run_with("gzip-bomb", tmp_path, max_answer_bytes=1_000_000)
    reason = assert_only_hostile_failed(sim, report, tmp_path)
    assert "1000000" in reason
    assert report["parameters"]["max_answer_bytes"] == 1_000_000


def test_an_over_long_skip_token_is_refused() -> None:
    raw = orjson.dumps({"Data": "[]", "NextSkipToken": "x" * (MAX_SKIP_TOKEN + 1)})
    with pytest.raises(OverLimit, match=str(MAX_SKIP_TOKEN)):
        decode_page(Query(HOSTILE, TYPE), raw)
    fits = orjson.dumps({"Data": "[]", "NextSkipToken": "x" * MAX_SKIP_TOKEN})
    assert decode_page(Query(HOSTILE, TYPE), fits)[1] == "x" * MAX_SKIP_TOKEN


# -- item 7: 404 means what it says -----------------------------------------------------------


async def test_a_404_about_the_contact_fails_that_contact_only() -> None:
    async with client_rig(hostile("contact-not-found")) as rig:
        with pytest.raises(NotFound) as caught:
            await rig.client.fetch_page(Query(HOSTILE, TYPE), None, 1)
        await all_pages(rig, IDS[1])  # the action is there for everyone else
    assert caught.value.code == "0x80040217"
    assert not isinstance(caught.value, RunStopper | RetryableError)


async def test_a_404_for_the_segment_is_still_action_missing() -> None:
    async with client_rig(SimulatorConfig(seed=1, action_missing=True)) as rig:
        with pytest.raises(ActionMissing):
            await rig.client.fetch_page(Query(HOSTILE, TYPE), None, 1)


def test_what_a_missing_segment_means_is_the_callers_choice() -> None:
    body = orjson.dumps(
        {"error": {"code": "0x80060888", "message": "Resource not found for the segment 'x'."}}
    )
    context = RequestContext(HOSTILE, "records")
    from datetime import UTC, datetime

    now = datetime.now(UTC)
    assert isinstance(classify_error(context, 404, {}, body, now), ActionMissing)
    assert type(classify_error(context, 404, {}, body, now, segment_missing=NotFound)) is NotFound
    assert type(classify_error(context, 404, {}, b"", now)) is NotFound
    html = b"<html>Not Found</html>"
    assert type(classify_error(context, 404, {}, html, now)) is NotFound


async def test_run_fails_the_contact_that_does_not_exist(tmp_path: Path) -> None:
    sim, report = await run_with("contact-not-found", tmp_path)
    reason = assert_only_hostile_failed(sim, report, tmp_path)
    assert "0x80040217" in reason


# -- item 6 (decoding): nothing but the error tree --------------------------------------------


@pytest.mark.parametrize(
    ("kind", "why"),
    [("deep-nesting", "nests too deeply"), ("lone-surrogate", "lone surrogate")],
)
async def test_undecodable_data_is_malformed_with_a_reason(kind: str, why: str) -> None:
    async with client_rig(hostile(kind)) as rig:
        with pytest.raises(MalformedResponse, match=why):
            await rig.client.fetch_page(Query(HOSTILE, TYPE), None, 1)


@pytest.mark.parametrize(
    ("data", "why"),
    [
        ("[" * 100_000 + "]" * 100_000, "nests too deeply"),
        ("[" * 100_000 + "1.5" + "]" * 100_000, "nests too deeply"),  # the exact path
        ('[{"a": NaN}]', "not valid JSON"),
        ('[{"a": Infinity, "b": 1.5}]', "Infinity is not a JSON value"),
        ('[{"a": "\\ud800"}]', "lone surrogate"),
        ('[{"a": "\\udc00", "b": 1.5}]', "lone surrogate"),
        ('[{"a": "\\ud800\\ud800", "b": 1.5}]', "lone surrogate"),
    ],
)
def test_undecodable_data_raises_nothing_but_malformed(data: str, why: str) -> None:
    raw = orjson.dumps({"Data": data})
    with pytest.raises(MalformedResponse, match=why):
        decode_page(Query(HOSTILE, TYPE), raw)


def test_a_huge_integer_is_kept_digit_for_digit() -> None:
    row = f'{{"ContactId":"{HOSTILE}","InteractionType":"{TYPE.value}","N":{"9" * 10_000}}}'
    interactions, _ = decode_page(Query(HOSTILE, TYPE), orjson.dumps({"Data": f"[{row}]"}))
    assert orjson.dumps(interactions[0]).decode() == row
