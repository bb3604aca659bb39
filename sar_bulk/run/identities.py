"""Several application users for one run: each contact goes to the identity with least work.

Usage (the runner)::

    environ = identity_environ(spec, os.environ)       # ConfigError names identity and variable
    credential = build_credential(spec.auth, environ)
    ...                                                # per identity: tokens, http, throttle,
    identity = Identity(name, tokens, http, throttle, fetcher, sources)   # fetcher, sources
    pool = IdentityPool([identity_a, identity_b])
    engine = Engine(config, pool.sources(["interactions", "records"]))

Why: Dataverse limits each application user to 6,000 requests per 5 minutes and 52 at once; with
~40 requests per contact one identity answers at most ~1,800 contacts an hour. N identities
(``[[identities]]`` in the config file) give N times that, because every limit is per identity.

Each identity keeps what one identity has without a pool: its own token cache, pacer, 429 gate,
concurrency cap and source instances (the realtime source's schema and progress poller too), so
a throttled identity never slows the others. The engine does not know about identities: it gets
one ``PooledSource`` per source name, and the pool routes each contact, all its parts together
(they share the contact's memo), to the live identity with the least queued work (parts in
flight, divided by its current pace, plus what is left of its 429 pause) when its first part
starts.

A refused identity (401 after a fresh token: ``AuthRejected``; with more than one identity also
a credential that cannot produce a token, or the action's 403: its security role was removed
mid-run, which the pre-flight would have dropped it for, for ``FORBIDDEN_TO_DROP`` contacts with no
part of it succeeding in between: one 403 may be about one contact's record) is dropped with one
warning line.
Kept, a refused identity ends every part at once by failing it, looks the idlest and takes
nearly every contact after that. The parts that were running on it fail with a reason that
says so and a rerun resumes them on the others (they are not retried here: the contact's memo
may already hold the refusal, and half a part may already be written). A table's or an
export's 403 (``ReadForbidden``, ``ExportForbidden``) may be about one row: it fails the part
only. The run stops (``NoIdentityLeft``, exit 3) only when no identity is left; with a
single identity the refusal itself stops the run, exactly as before pools existed.

Export requests of the realtime source are org-wide rows: a contact resumed on another identity
than the one that created its request finds the request id in the run state and polls it with
its own poller.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import structlog

from sar_bulk.config import IDENTITY_VARIABLES, IdentitySpec
from sar_bulk.dataverse.auth import TokenProvider
from sar_bulk.dataverse.fetcher import Fetcher
from sar_bulk.dataverse.http import OrgHttp
from sar_bulk.dataverse.preflight import SourcesCheck
from sar_bulk.dataverse.throttle import Throttle
from sar_bulk.errors import (
    AuthRejected,
    ConfigError,
    CredentialError,
    DataverseError,
    Forbidden,
    RequestContext,
    RunStopper,
)
from sar_bulk.logs import REDACTOR
from sar_bulk.sources.base import ContactScope, Part, PartSink, Probe, Source

__all__ = [
    "FORBIDDEN_TO_DROP",
    "AggregateStats",
    "Identity",
    "IdentityDropped",
    "IdentityPool",
    "NoIdentityLeft",
    "PooledSource",
    "identity_environ",
]

_log = structlog.get_logger("sar_bulk.run.identities")

# Contacts in a row whose parts met the action's 403 (no part of the identity succeeding in
# between) that drop the identity: its role was taken away, not one record out of its reach.
FORBIDDEN_TO_DROP: Final = 3

# Shared by every identity unless one names its own: one tenant and one authority are the rule.
_SHARED: Final = frozenset({"AZURE_TENANT_ID", "AZURE_AUTHORITY_HOST"})
_SECRET_VARIABLES: Final = frozenset(
    {"AZURE_CLIENT_SECRET", "AZURE_CLIENT_CERTIFICATE_PASSWORD", "SAR_BULK_TOKEN"}
)


def identity_environ(spec: IdentitySpec, environ: Mapping[str, str]) -> dict[str, str]:
    """The environment ``spec``'s credential reads: the process's, with the identity's variables
    in place of the standard ones (``env.SAR_BULK_TOKEN = "TOKEN_A"``: ``TOKEN_A``'s value).

    A standard credential variable the identity does not map is hidden (but the tenant and the
    authority, shared unless mapped), so two identities never silently share one secret. A
    mapped variable that is not set is a ``ConfigError`` naming the identity and the variable,
    never a value. Secret values are registered with the process's redactor at once.
    """
    hidden = IDENTITY_VARIABLES - _SHARED
    mine = {k: v for k, v in environ.items() if k not in hidden}
    for standard, own in sorted(spec.env.items()):
        value = environ.get(own, "").strip()
        if not value:
            raise ConfigError(
                f"identity {spec.name!r}: env.{standard} names the environment variable {own}, "
                "which is not set (or empty); set it, or correct the [[identities]] table"
            )
        if standard in _SECRET_VARIABLES:
            REDACTOR.add(value)
        mine[standard] = value
    return mine


class IdentityDropped(DataverseError):
    """A part's identity was refused during the run: the part fails, the run goes on."""

    advice = "the other identities go on; rerun to fetch this contact with them"

    def __init__(self, context: RequestContext | None, identity: str, why: str) -> None:
        self.identity = identity
        super().__init__(
            context, f"identity {identity!r} was refused and dropped from the run ({why})"
        )


class NoIdentityLeft(RunStopper):
    """Every identity of the pool was refused: nothing can be fetched any more."""

    advice = (
        "check that each identity exists in the environment as an application user and that "
        "its secret is current; the run stops"
    )


@dataclass(eq=False, slots=True)
class Identity:
    """One application user of the run, with everything that is its own."""

    name: str
    tokens: TokenProvider
    http: OrgHttp
    throttle: Throttle
    fetcher: Fetcher
    sources: dict[str, Source]  # by name: this identity's own instances
    check: SourcesCheck | None = None  # its pre-flight
    queued: int = 0  # parts in flight now
    contacts: int = 0  # contacts given to it so far
    dropped: str | None = None  # why it was dropped, or None while it is live
    # Contacts whose parts met the action's 403 since its last part that succeeded, and the
    # latest of them (a contact's parts all meet the same 403 about its record).
    forbidden_contacts: int = 0
    last_forbidden: str | None = None

    @property
    def live(self) -> bool:
        return self.dropped is None

    def load(self) -> float:
        """Seconds until its queued work is done: the work at its current pace (a slowed
        identity counts as busier), after the pause of its 429 gate. A paused identity without
        queued work is not idle: a contact given to it would wait the whole Retry-After (up
        to 5 minutes) while another identity could serve it at once."""
        return self.throttle.gate_closed_for + self.queued / max(self.throttle.rate, 1e-9)

    def report(self) -> dict[str, Any]:
        stats, throttle = self.fetcher.stats, self.throttle
        return {
            "name": self.name,
            "contacts": self.contacts,
            "requests": stats.requests,
            "ok_requests": stats.ok,
            "throttled": stats.throttled,
            "retries": stats.retries,
            "faults": stats.faults,
            "final_rate": round(throttle.rate, 3),
            "configured_rate": throttle.settings.rate,
            "final_concurrency": throttle.concurrency,
            "limits_hit": dict(throttle.limits_hit),
            "dropped": self.dropped,
        }


@dataclass(slots=True)
class _Assignment:
    identity: Identity
    running: int = 0  # parts of the contact in flight on it


class AggregateStats:
    """The fetch counters of every identity, summed (what the progress line shows)."""

    __slots__ = ("_identities",)

    def __init__(self, identities: Sequence[Identity]) -> None:
        self._identities = tuple(identities)

    def _sum(self, name: str) -> int:
        return sum(int(getattr(i.fetcher.stats, name)) for i in self._identities)

    @property
    def requests(self) -> int:
        return self._sum("requests")

    @property
    def ok(self) -> int:
        return self._sum("ok")

    @property
    def throttled(self) -> int:
        return self._sum("throttled")

    @property
    def retries(self) -> int:
        return self._sum("retries")

    @property
    def faults(self) -> int:
        return self._sum("faults")


@dataclass(eq=False, slots=True)
class IdentityPool:
    """The run's identities and which contact is on which."""

    identities: tuple[Identity, ...]
    _running: dict[int, _Assignment] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.identities:
            raise ValueError("a pool needs at least one identity")
        names = [i.name for i in self.identities]
        if len(set(names)) != len(names):
            raise ValueError("identity names must be unique")

    @property
    def single(self) -> bool:
        """One identity: a refusal stops the run as it always did."""
        return len(self.identities) == 1

    @property
    def live(self) -> tuple[Identity, ...]:
        return tuple(i for i in self.identities if i.live)

    @property
    def stats(self) -> AggregateStats:
        return AggregateStats(self.identities)

    def paused_for(self) -> float:
        """Seconds until some live identity may send again (0 while any may)."""
        pauses = [i.fetcher.paused_for for i in self.live]
        return min(pauses) if pauses else 0.0

    def describe(self) -> str:
        """A few words for the progress line: nothing with one identity."""
        if self.single:
            return ""
        return f"identities {len(self.live)}/{len(self.identities)}"

    def sources(self, names: Sequence[str]) -> list[PooledSource]:
        """One routed source per name; every live identity has its own instance of each."""
        return [PooledSource(name, self) for name in names]

    def enter(self, number: int) -> Identity:
        """The identity the contact ``number`` is on; its first part chooses one."""
        assigned = self._running.get(number)
        if assigned is None:
            live = self.live
            if not live:
                raise NoIdentityLeft(None, "every identity of the run was refused")
            chosen = min(live, key=lambda i: (i.load(), i.contacts))
            chosen.contacts += 1
            assigned = self._running[number] = _Assignment(chosen)
        assigned.running += 1
        assigned.identity.queued += 1
        return assigned.identity

    def leave(self, number: int) -> None:
        """A part of contact ``number`` ended; the contact is forgotten with its last part."""
        assigned = self._running[number]
        assigned.running -= 1
        assigned.identity.queued -= 1
        if assigned.running == 0:
            del self._running[number]

    def refused(self, identity: Identity, error: Exception) -> None:
        """Drop ``identity`` (once, with one log line); raise when no identity is left."""
        if identity.live:
            why = _why(error)
            identity.dropped = why
            left = [i.name for i in self.live]
            _log.warning("identity.dropped", identity=identity.name, why=why, left=left)
            if not left:
                if self.single and isinstance(error, RunStopper):
                    raise error
                reasons = "; ".join(f"{i.name}: {i.dropped}" for i in self.identities)
                raise NoIdentityLeft(None, f"every identity was refused ({reasons})") from None

    def report(self) -> list[dict[str, Any]]:
        """The report's per-identity section."""
        return [identity.report() for identity in self.identities]


def _why(error: Exception) -> str:
    if isinstance(error, DataverseError):
        status = f"HTTP {error.status}" if error.status is not None else "no answer"
        return f"{type(error).__name__}, {status}: {error.detail}"
    return f"{type(error).__name__}: {error}"


class PooledSource:
    """The engine's view of one source: each contact's parts run on its identity's instance."""

    __slots__ = ("_parts", "_pool", "name")

    def __init__(self, name: str, pool: IdentityPool) -> None:
        self.name = name
        self._pool = pool
        # Every identity's instance was built from the same settings: same parts.
        self._parts = tuple(pool.identities[0].sources[name].parts())

    def parts(self) -> Sequence[Part]:
        return self._parts

    async def probe(self) -> Probe:
        """The first live identity's probe (each identity was probed before the run)."""
        live = self._pool.live
        if not live:
            raise NoIdentityLeft(None, "every identity of the run was refused")
        return await live[0].sources[self.name].probe()

    def instances(self) -> list[Source]:
        """This source's instance of every identity (for the report's counts)."""
        return [i.sources[self.name] for i in self._pool.identities if self.name in i.sources]

    async def fetch(self, scope: ContactScope, part: Part, sink: PartSink) -> None:
        pool = self._pool
        identity = pool.enter(scope.number)
        try:
            if not identity.live:  # another part of this contact met the refusal first
                raise IdentityDropped(
                    RequestContext(scope.contact_id, part.key),
                    identity.name,
                    identity.dropped or "refused",
                )
            await identity.sources[self.name].fetch(scope, part, sink)
            identity.forbidden_contacts, identity.last_forbidden = 0, None
        except (AuthRejected, CredentialError, Forbidden) as exc:
            if not isinstance(exc, AuthRejected) and pool.single:
                raise  # one identity: a part fails, as it always did
            if isinstance(exc, Forbidden):
                if type(exc) is not Forbidden:
                    raise  # a table's or an export's 403 (a subclass): may be about one row
                # A 403 may be about one contact (a record its role may not read); only
                # refusals for several contacts with no success in between say the role
                # itself was taken away.
                if identity.last_forbidden != scope.contact_id:
                    identity.forbidden_contacts += 1
                    identity.last_forbidden = scope.contact_id
                if identity.forbidden_contacts < FORBIDDEN_TO_DROP:
                    raise
            pool.refused(identity, exc)
            context = exc.context if isinstance(exc, DataverseError) else None
            raise IdentityDropped(
                context or RequestContext(scope.contact_id, part.key),
                identity.name,
                identity.dropped or "refused",
            ) from None
        finally:
            pool.leave(scope.number)
