"""Shards: parsing, the Kubernetes index, and that they split any input exactly once."""

from __future__ import annotations

import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sar_bulk.errors import ConfigError
from sar_bulk.run.sharding import INDEX_VARIABLE, Shard


@pytest.mark.parametrize(
    ("text", "index", "count"),
    [("0/1", 0, 1), ("0/4", 0, 4), ("3/4", 3, 4), (" 2 / 8 ", 2, 8), ("007/010", 7, 10)],
)
def test_parse_accepts_i_of_n(text: str, index: int, count: int) -> None:
    shard = Shard.parse(text)
    assert (shard.index, shard.count) == (index, count)
    assert str(shard) == f"{index}/{count}"


@pytest.mark.parametrize(
    "text", ["", "4", "4/4", "5/4", "0/0", "-1/4", "1/-4", "a/b", "1/2/3", "1.0/2", "٣/4", "1_0/20"]
)
def test_parse_rejects_anything_else_with_a_config_error(text: str) -> None:
    with pytest.raises(ConfigError, match=r"I/N|between 0 and|at least 1"):
        Shard.parse(text)


def test_parse_error_names_the_input_and_the_form() -> None:
    with pytest.raises(ConfigError) as caught:
        Shard.parse("two of four")
    assert "'two of four'" in str(caught.value)
    assert "0/4" in str(caught.value)


def test_index_out_of_range_says_the_range() -> None:
    with pytest.raises(ConfigError, match="between 0 and 3 for 4 shards, got 4"):
        Shard.parse("4/4")


def test_str_round_trips() -> None:
    assert Shard.parse(str(Shard(5, 9))) == Shard(5, 9)


def test_from_env_reads_the_job_completion_index() -> None:
    assert Shard.from_env(4, {INDEX_VARIABLE: "3"}) == Shard(3, 4)
    assert Shard.from_env(1, {INDEX_VARIABLE: "0"}) == Shard(0, 1)


def test_from_env_without_the_variable_explains_where_it_comes_from() -> None:
    with pytest.raises(ConfigError, match=r"JOB_COMPLETION_INDEX is not set.*Indexed Job"):
        Shard.from_env(4, {})


@pytest.mark.parametrize("value", ["", "x", "-1", "1.5", "0x1", "99999999999"])
def test_from_env_rejects_a_value_that_is_no_index(value: str) -> None:
    with pytest.raises(ConfigError, match=INDEX_VARIABLE):
        Shard.from_env(4, {INDEX_VARIABLE: value})


def test_from_env_rejects_an_index_beyond_the_count() -> None:
    with pytest.raises(ConfigError, match="only 4 shards"):
        Shard.from_env(4, {INDEX_VARIABLE: "4"})


def test_from_env_rejects_a_count_below_one() -> None:
    with pytest.raises(ConfigError, match="at least 1"):
        Shard.from_env(0, {INDEX_VARIABLE: "0"})


def test_owns_rejects_what_is_no_guid() -> None:
    with pytest.raises(ValueError, match="not a GUID"):
        Shard(0, 2).owns("../../x")


def test_every_shard_gets_a_share_of_a_fixed_set() -> None:
    ids = [str(uuid.uuid5(uuid.NAMESPACE_URL, f"contact-{n}")) for n in range(4000)]
    sizes = [sum(Shard(index, 8).owns(contact) for contact in ids) for index in range(8)]
    assert sum(sizes) == len(ids)
    # SHA-256 spreads 4,000 ids over 8 shards evenly; 300 is far below the expected 500.
    assert min(sizes) > 300


@given(count=st.integers(min_value=1, max_value=64), ids=st.lists(st.uuids(), max_size=40))
def test_shards_are_disjoint_and_cover_the_input(count: int, ids: list[uuid.UUID]) -> None:
    shards = [Shard(index, count) for index in range(count)]
    for contact in ids:
        owners = [shard for shard in shards if shard.owns(str(contact))]
        assert len(owners) == 1
    parts = [[c for c in ids if shard.owns(str(c))] for shard in shards]
    assert sorted(c for part in parts for c in part) == sorted(ids)


@given(count=st.integers(min_value=2, max_value=64), contact=st.uuids())
def test_ownership_ignores_the_spelling(count: int, contact: uuid.UUID) -> None:
    canonical = str(contact)
    spellings = [canonical.upper(), f"{{{canonical}}}", contact.hex, f"  {canonical}  "]
    for index in range(count):
        shard = Shard(index, count)
        assert all(shard.owns(s) == shard.owns(canonical) for s in spellings)
