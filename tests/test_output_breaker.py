"""``OutputBreaker``: uploads without an answer in a row stop the run; one that works resets."""

from __future__ import annotations

import pytest

from sar_bulk.errors import OutputGone, OutputRefused, OutputUnreachable, RunStopper
from sar_bulk.output.breaker import OutputBreaker

WHERE = "container http://127.0.0.1:10000/devstoreaccount1/sar/nightly"


def _silent(n: int) -> OutputUnreachable:
    return OutputUnreachable(f"uploading contact-{n}.zip failed: no answer from the blob store")


def test_the_fifth_silent_upload_in_a_row_stops_the_run() -> None:
    breaker = OutputBreaker(failures=5)
    for n in range(4):
        breaker.unreachable(_silent(n), WHERE)
    with pytest.raises(OutputGone) as stopped:
        breaker.unreachable(_silent(4), WHERE)
    error = stopped.value
    assert isinstance(error, RunStopper)
    assert not isinstance(error, OutputUnreachable)  # the engine must not take it for one contact
    assert str(error).startswith(f"5 dossiers in a row could not be published to {WHERE}")
    assert "contact-4.zip" in str(error)
    assert "once that is fixed, rerun" in str(error)
    assert isinstance(error.__cause__, OutputUnreachable)


def test_an_upload_that_works_starts_the_count_again() -> None:
    breaker = OutputBreaker(failures=3)
    for round_ in range(5):
        breaker.unreachable(_silent(2 * round_), WHERE)
        breaker.unreachable(_silent(2 * round_ + 1), WHERE)
        breaker.answered()
    assert breaker.count == 0


def test_failures_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        OutputBreaker(0)


def test_refused_uploads_in_a_row_stop_the_run_too() -> None:
    # A SAS that expired at 3 a.m. answers every upload with 403: as useless as silence.
    breaker = OutputBreaker(failures=3)
    breaker.unreachable(_silent(0), WHERE)
    refused = OutputRefused("uploading contact-1.zip failed (HTTP 403, AuthenticationFailed)")
    breaker.unreachable(refused, WHERE)
    with pytest.raises(OutputGone) as stopped:
        breaker.unreachable(refused, WHERE)
    assert "the blob store refused them" in str(stopped.value)
    assert "HTTP 403" in str(stopped.value)
