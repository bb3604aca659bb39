"""Stop the run when the output store stops answering, instead of failing every contact.

Usage (``BlobTarget.publish``)::

    breaker = OutputBreaker(failures=5)
    try:
        published = await upload(...)
    except OutputUnreachable as exc:
        breaker.unreachable(exc, where)     # raises OutputGone on the 5th in a row
        raise
    breaker.answered()

Why: a dossier is published after the contact's data was fetched. With the store down (a
storage outage at 2 a.m., a firewall change), every contact of the run would be fetched, fail
at its upload and be fetched again by the next run: hours of the identities' request limits
spent for nothing, and a report listing thousands of failures. Each failure counted here has
already been retried by the storage client (three retries over about 14 s by default), so
``failures`` of them in a row, with no upload succeeding in between, is an outage, not a blip:
the run stops with ``OutputGone`` (a ``RunStopper``, exit 3) and a rerun resumes it.

A store that answers every upload with a refusal (a SAS that expired mid-run, a role removed, a
5xx outage, a proxy answering in its place) is as useless as a silent one, so ``OutputRefused``
counts too (a store rehearsal saw a run fail 31 contacts in a row at their upload and go on).
"""

from __future__ import annotations

from sar_bulk.errors import OutputGone, OutputRefused, OutputUnreachable

__all__ = ["OutputBreaker"]


class OutputBreaker:
    """Counts failed uploads in a row that got no answer or a refusal; any upload that works
    resets it."""

    __slots__ = ("count", "failures")

    def __init__(self, failures: int = 5) -> None:
        if failures < 1:
            raise ValueError("failures must be at least 1")
        self.failures = failures
        self.count = 0

    def answered(self) -> None:
        self.count = 0

    def unreachable(self, error: OutputUnreachable | OutputRefused, where: str) -> None:
        """Count one; raise ``OutputGone`` (with ``error`` as its cause) once too many."""
        self.count += 1
        if self.count >= self.failures:
            why = (
                "no answer from the blob store"
                if isinstance(error, OutputUnreachable)
                else "the blob store refused them"
            )
            gone = OutputGone(
                None,
                f"{self.count} dossiers in a row could not be published to {where}: {why} "
                f"(last: {error})",
            )
            raise gone from error
