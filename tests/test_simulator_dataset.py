"""The simulator's synthetic org and its skip tokens: deterministic, lazy, awkward, unforgeable."""

from __future__ import annotations

import re
import tracemalloc
from datetime import date, timedelta
from functools import cache
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sar_bulk.simulator import Dataset, Position, SimulatorConfig, SkipTokenCodec
from sar_bulk.simulator.hashing import Draw, stable_digest
from sar_bulk.simulator.interaction_types import ALL_TYPES, InteractionType
from sar_bulk.simulator.records import Person, build_record

MILLION = "0f0f0f0f-0000-4000-8000-000000000001"
MID = "0e0e0e0e-0000-4000-8000-000000000002"
_STAMP = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z")


def contact(n: int) -> str:
    return f"{n:08x}-1234-4abc-8def-{n:012x}"


@cache
def mid_dataset() -> Dataset:
    return Dataset(5, {MID: 6000})


@cache
def mid_pair() -> tuple[InteractionType, tuple[dict[str, Any], ...]]:
    """The biggest type of a 6,000-interaction contact and all its interactions (built once)."""
    totals = mid_dataset().totals(MID)
    itype = max(totals, key=lambda t: totals[t])
    return itype, tuple(mid_dataset().interactions(MID, itype))


def day_of(record: dict[str, Any]) -> date:
    return date.fromisoformat(record["Timestamp"][:10])


def test_same_seed_same_org_other_seed_other_org() -> None:
    first, second, other = Dataset(11), Dataset(11), Dataset(12)
    people = [contact(n) for n in range(40)]
    assert [first.totals(c) for c in people] == [second.totals(c) for c in people]
    assert [first.totals(c) for c in people] != [other.totals(c) for c in people]
    busy = next(c for c in people if sum(first.totals(c).values()) > 0)
    for itype in ALL_TYPES:
        assert list(first.interactions(busy, itype)) == list(second.interactions(busy, itype))


def test_most_pairs_are_empty_and_light_pairs_hold_one_to_twenty() -> None:
    dataset = Dataset(3, heavy_fraction=0.0)
    counts = [n for c in range(300) for n in dataset.totals(contact(c)).values()]
    empty_share = counts.count(0) / len(counts)
    assert 0.82 < empty_share < 0.88
    assert max(counts) <= 20
    assert 1 in counts
    assert any(n >= 10 for n in counts)


def test_about_one_percent_of_contacts_are_heavy_and_page() -> None:
    dataset = Dataset(3)
    heavy = [contact(c) for c in range(3000) if dataset.is_heavy(contact(c))]
    assert 10 <= len(heavy) <= 50
    totals = dataset.totals(heavy[0])
    assert 2000 <= sum(totals.values()) <= 12000 + 20 * len(ALL_TYPES)
    assert max(totals.values()) > 500  # more than one page at the default page size


def test_explicit_heavy_contact_has_exactly_its_total_over_a_few_types() -> None:
    dataset = Dataset(1, {"{0E0E0E0E-0000-4000-8000-000000000002}": 4321})
    totals = dataset.totals(MID)
    assert sum(totals.values()) == 4321
    assert 3 <= sum(1 for n in totals.values() if n) <= 8
    assert dataset.is_heavy(MID)


def test_config_canonicalises_heavy_contacts_and_checks_fault_rates() -> None:
    config = SimulatorConfig(heavy_contacts={"{0E0E0E0E-0000-4000-8000-000000000002}": 5})
    assert dict(config.heavy_contacts) == {MID: 5}
    with pytest.raises(ValueError, match="add up"):
        SimulatorConfig(fault_500=0.6, fault_502=0.6)
    with pytest.raises(ValueError, match="within"):
        SimulatorConfig(fault_drop=1.5)


def test_records_have_the_documented_shape() -> None:
    itype, records = mid_pair()
    assert len(records) == mid_dataset().count(MID, itype)
    ids = [r["InteractionId"] for r in records]
    assert all(re.fullmatch(r"[0-9A-F]{32}", i) for i in ids)
    assert len(set(ids)) == len(ids)
    stamps = [r["Timestamp"] for r in records]
    assert all(_STAMP.fullmatch(s) for s in stamps)
    assert stamps == sorted(stamps)
    assert stamps[0] >= "2019"
    assert stamps[-1] < "2026"
    assert {r["ContactId"] for r in records} == {MID}
    assert {r["InteractionType"] for r in records} == {itype.value}


@pytest.mark.parametrize("itype", ALL_TYPES)
def test_every_type_builds_json_ready_records_with_its_own_fields(itype: InteractionType) -> None:
    person = Person.from_draw(Draw(stable_digest("person")))
    records = [
        build_record(
            Draw(stable_digest(itype.value, n)),
            interaction_id="0" * 32,
            itype=itype,
            timestamp="2020-01-01T00:00:00Z",
            contact_id=MID,
            person=person,
        )
        for n in range(30)
    ]
    assert all(len(r) > 4 for r in records)
    assert all(orjson.loads(orjson.dumps(r)) == r for r in records)
    keys = set().union(*records)
    if itype.value.startswith("Email"):
        assert {"MessageId", "SendingId", "EmailAddressUsed", "EmailDomain"} <= keys
    if itype in (InteractionType.EmailHardBounced, InteractionType.EmailSoftBounced):
        assert {"BounceCategory", "BounceReason"} <= keys
    if itype in (InteractionType.WebsiteVisited, InteractionType.EmailClicked):
        assert {"VisitorId", "SessionId", "Browser", "OperatingSystem", "Url"} <= keys
        assert set(records[0]["Geo"]) == {"Country", "State", "City", "PostalCode"}
    if itype.value.endswith("ContactProcessed"):
        assert {"CustomerJourneyId", "ActivityId", "WorkflowId"} <= keys
    if itype is InteractionType.SurveyResponse:
        assert all(isinstance(r["Score"], int) for r in records)
    if itype is InteractionType.LeadScoreBoost:
        assert all(isinstance(r["BoostValue"], float) for r in records)


def test_content_is_awkward_on_purpose() -> None:
    _, records = mid_pair()
    text = orjson.dumps(list(records)).decode()
    everything = (
        text
        + orjson.dumps(
            [
                build_record(
                    Draw(stable_digest(t.value, n)),
                    interaction_id="0" * 32,
                    itype=t,
                    timestamp="2020-01-01T00:00:00Z",
                    contact_id=MID,
                    person=Person.from_draw(Draw(stable_digest("p", n))),
                )
                for t in ALL_TYPES
                for n in range(20)
            ]
        ).decode()
    )
    for needle in ("Zürich", "São Paulo", "Łódź", "</script>", '\\"', "\\\\", "null", "true"):
        assert needle in everything, needle
    assert any(ord(ch) > 0xFFFF for ch in everything)  # emoji
    assert any("\u4e00" <= ch <= "\u9fff" for ch in everything)  # CJK


@settings(deadline=None)  # the first example builds the cached ground truth
@given(
    start=st.dates(date(2018, 6, 1), date(2026, 6, 1)),
    length=st.integers(0, 900),
)
def test_date_filter_is_whole_utc_days_inclusive(start: date, length: int) -> None:
    itype, records = mid_pair()
    end = start + timedelta(days=length)
    expected = [r for r in records if start <= day_of(r) <= end]
    dataset = mid_dataset()
    assert dataset.count(MID, itype, start, end) == len(expected)
    assert list(dataset.interactions(MID, itype, start, end)) == expected
    assert dataset.count(MID, itype, start, None) == sum(1 for r in records if day_of(r) >= start)
    assert dataset.count(MID, itype, None, end) == sum(1 for r in records if day_of(r) <= end)


def test_pages_are_slices_of_the_whole() -> None:
    itype, records = mid_pair()
    dataset = mid_dataset()
    assert dataset.page(MID, itype, None, None, offset=0, limit=7) == list(records[:7])
    assert dataset.page(MID, itype, None, None, offset=100, limit=50) == list(records[100:150])
    tail = dataset.page(MID, itype, None, None, offset=len(records) - 3, limit=50)
    assert tail == list(records[-3:])
    assert dataset.page(MID, itype, None, None, offset=len(records), limit=5) == []


def test_a_million_interactions_are_served_without_building_them() -> None:
    dataset = Dataset(9, {MILLION: 1_000_000})
    totals = dataset.totals(MILLION)
    assert sum(totals.values()) == 1_000_000
    itype = max(totals, key=lambda t: totals[t])
    count = dataset.count(MILLION, itype)
    tracemalloc.start()
    try:
        last = dataset.page(MILLION, itype, None, None, offset=count - 500, limit=500)
        filtered = dataset.count(MILLION, itype, date(2022, 1, 1), date(2022, 12, 31))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(last) == 500
    assert peak < 5_000_000  # a page, not a million records
    assert 0 < filtered < count
    first = dataset.page(MILLION, itype, None, None, offset=0, limit=1)[0]
    assert first["Timestamp"] <= last[0]["Timestamp"] <= last[-1]["Timestamp"]


def test_contact_ids_must_be_canonical() -> None:
    with pytest.raises(ValueError, match="canonical"):
        Dataset().count(MID.upper(), InteractionType.EmailSent)
    with pytest.raises(ValueError, match="NoSuchType"):
        Dataset().count(MID, "NoSuchType")


# ----- skip tokens ---------------------------------------------------------------------------

queries = st.text(min_size=1, max_size=60)
positions = st.builds(Position, st.integers(1, 10**9), st.integers(0, 2**63))


@given(query=queries, position=positions)
def test_skip_token_round_trips_and_looks_like_a_paging_cookie(
    query: str, position: Position
) -> None:
    codec = SkipTokenCodec.for_seed(4)
    token = codec.issue(query, position)
    assert codec.open(token, query) == position
    assert token.startswith("<cookie ")
    assert '"' in token
    assert "&quot;" in token


@given(query=queries, position=positions, data=st.data())
def test_any_change_to_a_skip_token_is_refused(
    query: str, position: Position, data: st.DataObject
) -> None:
    codec = SkipTokenCodec.for_seed(4)
    token = codec.issue(query, position)
    at = data.draw(st.integers(0, len(token) - 1))
    replacement = data.draw(st.characters().filter(lambda ch: ch != token[at]))
    assert codec.open(token[:at] + replacement + token[at + 1 :], query) is None
    assert codec.open(token[:at] + token[at + 1 :], query) is None
    assert codec.open(token + " ", query) is None


@given(query=queries, other=queries, position=positions)
def test_a_skip_token_only_opens_for_its_own_query_and_key(
    query: str, other: str, position: Position
) -> None:
    token = SkipTokenCodec.for_seed(4).issue(query, position)
    if other != query:
        assert SkipTokenCodec.for_seed(4).open(token, other) is None
    assert SkipTokenCodec.for_seed(5).open(token, query) is None


@given(garbage=st.text(max_size=300))
def test_garbage_skip_tokens_are_refused_without_error(garbage: str) -> None:
    assert SkipTokenCodec.for_seed(4).open(garbage, "q") is None
