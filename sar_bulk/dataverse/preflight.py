"""Pre-flight: one cheap call per source to learn, before a run, whether it can work at all.

Usage::

    check = await probe_sources(sources, credential_name="ClientSecretCredential")
    if not check.can_run:
        print(check.message)          # what each source said, or why none could be asked

Learning from one call per source that an org cannot answer (the action retired, a privilege
missing, the token refused) is much better than learning it from the first thousand contacts.
``auto`` runs use every source whose probe says available; each source's probe lives with the
source (the action's: ``sources/interactions.py``).

No connection at all (refused, no DNS answer) is tried ``connect_tries`` times, ``connect_pause``
seconds apart, so a blip does not stop a run; after that the org is "unreachable", as it is at
once when TLS fails, and the run does not start. A probe that meets a 429 counts its source as
available and keeps the error (``SourcesCheck.throttled``): the run closes the identity's gate
for its Retry-After before sending anything else.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from sar_bulk.errors import (
    AuthRejected,
    ConnectFailed,
    CredentialError,
    DataverseError,
    RetryableError,
    RunStopper,
    Throttled,
    Unreachable,
)
from sar_bulk.sources.base import Availability, Probe, Source
from sar_bulk.sources.registry import SOURCE_NAMES as SOURCE_ORDER

__all__ = ["Outcome", "SourcesCheck", "probe_sources"]


class Outcome(enum.Enum):
    """The org as a whole, in one word (``sar-bulk check``'s first line)."""

    READY = "ready"
    TOKEN_REFUSED = "token-refused"  # noqa: S105 (an outcome name, not a secret)
    FORBIDDEN = "forbidden"
    ACTION_MISSING = "action-missing"
    UNREACHABLE = "unreachable"
    FAILED = "failed"
    NO_SOURCE = "no-source"


@dataclass(frozen=True, slots=True)
class SourcesCheck:
    """Every source's probe, or why none could be asked (``stop``: token refused, say)."""

    probes: tuple[Probe, ...]
    stop: str | None = None
    dop_hint: int | None = None
    stop_kind: Outcome = Outcome.FAILED
    # The 429 a probe met, if any: the run must close its identity's gate for it before the
    # first request (Dataverse extends the penalty of a client that keeps sending).
    throttled: Throttled | None = None

    @property
    def outcome(self) -> Outcome:
        """One word for the whole org, as ``sar-bulk check`` prints it.

        With nothing available it names the action's own answer when that is all there is to
        say (an org that only ever had the action reads as before: action-missing, forbidden).
        """
        if self.stop is not None:
            return self.stop_kind
        if self.available:
            return Outcome.READY
        seed = next((p for p in self.probes if p.source == "interactions"), None)
        if seed is not None and seed.availability is Availability.MISSING:
            return Outcome.ACTION_MISSING
        if seed is not None and seed.availability is Availability.FORBIDDEN:
            return Outcome.FORBIDDEN
        return Outcome.NO_SOURCE

    @property
    def available(self) -> tuple[str, ...]:
        return tuple(p.source for p in self.probes if p.availability is Availability.AVAILABLE)

    @property
    def can_run(self) -> bool:
        return self.stop is None and bool(self.available)

    @property
    def message(self) -> str:
        """One line: why the run cannot go on, or what each source said."""
        said = "; ".join(_said(p) for p in self.probes)
        if self.stop is not None:
            return self.stop
        if not self.available:
            return f"no source can answer subject-access requests with this org: {said}"
        return said


def _said(probe: Probe) -> str:
    return f"{probe.source}: {probe.availability.value}" + (
        f" ({probe.detail})" if probe.detail else ""
    )


async def probe_sources(
    sources: Sequence[Source],
    *,
    credential_name: str,
    connect_tries: int = 3,
    connect_pause: float = 1.0,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> SourcesCheck:
    """Ask each source's ``probe`` (one cheap call each) and sum up what holds.

    A refused token, an
    unreachable org or a probe that fails for good stops the whole check: no source can be
    trusted then. A throttled or passing fault counts the source as available (the run retries).
    """
    probes: list[Probe] = []
    hint: int | None = None
    throttled: Throttled | None = None
    for source in sources:
        try:
            probe = await _probe_connecting(source, connect_tries, connect_pause, sleep)
        except ConnectFailed as exc:
            why = (
                f"{exc.detail}, {connect_tries} times in a row: the org is unreachable. Check the "
                "org URL, its DNS name and the network path to it (proxy, firewall)."
            )
            return SourcesCheck(tuple(probes), why, stop_kind=Outcome.UNREACHABLE)
        except Unreachable as exc:
            why = f"the org is unreachable: {exc.detail}"
            return SourcesCheck(tuple(probes), why, stop_kind=Outcome.UNREACHABLE)
        except CredentialError as exc:
            why = f"no token from {credential_name}: {exc}"
            return SourcesCheck(tuple(probes), why, stop_kind=Outcome.TOKEN_REFUSED)
        except AuthRejected:
            why = _refused(credential_name)
            return SourcesCheck(tuple(probes), why, stop_kind=Outcome.TOKEN_REFUSED)
        except RunStopper as exc:
            return SourcesCheck(tuple(probes), f"the {source.name} probe failed: {exc}")
        except Throttled as exc:
            throttled = exc
            wait = f"{exc.retry_after:g} s" if exc.retry_after is not None else "an unknown time"
            probe = Probe(
                source.name,
                Availability.AVAILABLE,
                f"throttled now ({exc.limit} limit); Dataverse asks to wait {wait}",
            )
        except RetryableError as exc:
            probe = Probe(
                source.name, Availability.AVAILABLE, f"the probe met a passing fault: {exc}"
            )
        except DataverseError as exc:
            return SourcesCheck(tuple(probes), f"the {source.name} probe failed: {exc}")
        probes.append(probe)
        found = getattr(source, "dop_hint", None)
        if isinstance(found, int) and found > 0:
            hint = found
    order = {name: i for i, name in enumerate(SOURCE_ORDER)}
    probes.sort(key=lambda p: order.get(p.source, len(order)))
    return SourcesCheck(tuple(probes), None, hint, throttled=throttled)


async def _probe_connecting(
    source: Source, tries: int, pause: float, sleep: Callable[[float], Awaitable[None]]
) -> Probe:
    """The source's probe, sent again while no connection at all could be made."""
    tried = 1
    while True:
        try:
            return await source.probe()
        except ConnectFailed:
            if tried >= tries:
                raise
        tried += 1
        await sleep(pause)


def _refused(credential_name: str) -> str:
    return (
        f"the org refused the token from {credential_name} (HTTP 401). Check that the "
        "identity exists in this environment as an application user and that the org URL "
        "is the one the token is for."
    )
