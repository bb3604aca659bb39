"""``DigestSet`` answers exactly what a plain ``set`` answers, across merges."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sar_bulk.dataverse.idset import DigestSet

U64 = st.integers(min_value=0, max_value=2**64 - 1)


@given(st.lists(st.one_of(U64, st.integers(0, 40)), max_size=300), st.integers(1, 17))
def test_same_answers_as_a_set(values: list[int], batch: int) -> None:
    digests, plain = DigestSet(batch), set[int]()
    for value in values:
        assert digests.add(value) is (value not in plain)
        plain.add(value)
        assert len(digests) == len(plain)
    for value in [*values, 0, 2**64 - 1, 12345]:
        assert (value in digests) is (value in plain)


def test_members_survive_many_merges() -> None:
    digests = DigestSet(batch=1000)
    for value in range(0, 30_000, 3):
        assert digests.add(value)
    assert len(digests) == 10_000
    assert all(value in digests for value in range(0, 30_000, 3))
    assert not any(value in digests for value in range(1, 30_000, 3))
    assert not digests.add(29_997)


def test_batch_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        DigestSet(0)
