"""Pre-flight: one call of the action to learn, before a run, whether it can work at all.

Outbound marketing, and with it ``msdyncrm_LoadInteractionsPublic``, was retired from Microsoft's
cloud orgs, so an org may answer 404. Learning that from one call is much better than from the
first thousand. The call asks for a contact id that need not exist (the nil GUID): a 200, or a
400 about the contact, both prove the action is there and the identity may run it.

No connection at all (refused, no DNS answer) is tried ``connect_tries`` times, ``connect_pause``
seconds apart, so a blip does not stop a run; after that the org is "unreachable", as it is at
once when TLS fails, and the run does not start.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from sar_bulk.dataverse.client import DataverseClient, Query
from sar_bulk.errors import (
    ActionMissing,
    AuthRejected,
    BadRequest,
    ConnectFailed,
    CredentialError,
    DataverseError,
    Forbidden,
    RetryableError,
    Throttled,
    Unreachable,
)
from sar_bulk.sources.interaction_types import InteractionType

__all__ = ["PROBE_CONTACT", "Outcome", "PreflightResult", "preflight"]

PROBE_CONTACT = "00000000-0000-0000-0000-000000000000"


class Outcome(enum.Enum):
    READY = "ready"
    TOKEN_REFUSED = "token-refused"  # noqa: S105 (an outcome name, not a secret)
    FORBIDDEN = "forbidden"
    ACTION_MISSING = "action-missing"
    THROTTLED = "throttled"
    UNREACHABLE = "unreachable"
    UNSURE = "unsure"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class PreflightResult:
    outcome: Outcome
    message: str
    retry_after: float | None = None
    dop_hint: int | None = None

    @property
    def can_run(self) -> bool:
        """Nothing proves the run hopeless: ready, throttled, or a fault the run will retry."""
        return self.outcome in (Outcome.READY, Outcome.THROTTLED, Outcome.UNSURE)


async def preflight(
    client: DataverseClient,
    *,
    credential_name: str,
    connect_tries: int = 3,
    connect_pause: float = 1.0,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> PreflightResult:
    """Call the action (again only when no connection could be made) and say what holds."""
    query = Query(PROBE_CONTACT, InteractionType.EmailSent, top=1)
    tried = 1
    while True:
        try:
            return await _probe(client, query, credential_name)
        except ConnectFailed as exc:
            if tried >= connect_tries:
                return PreflightResult(
                    Outcome.UNREACHABLE,
                    f"{exc.detail}, {tried} times in a row: the org is unreachable. Check the org "
                    "URL, its DNS name and the network path to it (proxy, firewall).",
                )
        tried += 1
        await sleep(connect_pause)


async def _probe(client: DataverseClient, query: Query, credential_name: str) -> PreflightResult:
    try:
        page = await client.fetch_page(query, None, 1)
    except BadRequest as exc:
        return PreflightResult(
            Outcome.READY, f"the action answered (400 for the probe contact: {exc.detail})"
        )
    except CredentialError as exc:
        return PreflightResult(Outcome.TOKEN_REFUSED, f"no token from {credential_name}: {exc}")
    except AuthRejected:
        return PreflightResult(
            Outcome.TOKEN_REFUSED,
            f"the org refused the token from {credential_name} (HTTP 401). Check that the "
            "identity exists in this environment as an application user and that the org URL "
            "is the one the token is for.",
        )
    except Forbidden as exc:
        return PreflightResult(
            Outcome.FORBIDDEN,
            f"the identity ({credential_name}) may not run the action (HTTP 403, code "
            f"{exc.code or 'none'}): give its application user a security role that can.",
        )
    except ActionMissing:
        return PreflightResult(
            Outcome.ACTION_MISSING,
            "this org has no msdyncrm_LoadInteractionsPublic action (HTTP 404). Microsoft retired "
            "outbound marketing, and this action with it, from its cloud orgs, so this org "
            "cannot answer subject-access requests through it. Real-time journeys handles them "
            "through the msdynmkt_gdprrequest table instead.",
        )
    except Throttled as exc:
        wait = f"{exc.retry_after:g} s" if exc.retry_after is not None else "an unknown time"
        return PreflightResult(
            Outcome.THROTTLED,
            f"the action exists but this identity is throttled now ({exc.limit} limit); "
            f"Dataverse asks to wait {wait}.",
            retry_after=exc.retry_after,
        )
    except Unreachable as exc:
        return PreflightResult(Outcome.UNREACHABLE, f"the org is unreachable: {exc.detail}")
    except ConnectFailed:
        raise  # tried again by the caller
    except RetryableError as exc:
        return PreflightResult(Outcome.UNSURE, f"the probe call met a passing fault: {exc}")
    except DataverseError as exc:
        return PreflightResult(Outcome.FAILED, f"the probe call failed: {exc}")
    return PreflightResult(
        Outcome.READY, "reachable and authorised: the action answered", dop_hint=page.dop_hint
    )
