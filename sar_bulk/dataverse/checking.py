"""``sar-bulk check``: the pre-flight call on its own, with a plain answer and an exit code."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TextIO

from sar_bulk.dataverse.auth import TokenProvider, build_credential
from sar_bulk.dataverse.client import DataverseClient
from sar_bulk.dataverse.http import OrgHttp, Timeouts, create_session
from sar_bulk.dataverse.org import OrgUrl
from sar_bulk.dataverse.preflight import Outcome, preflight
from sar_bulk.errors import ConfigError

__all__ = ["run_check"]

# Exit codes: 0 the action answered; 1 throttled or another failure; 3 refused, missing or
# unreachable.
_EXIT = {
    Outcome.READY: 0,
    Outcome.THROTTLED: 1,
    Outcome.UNSURE: 1,
    Outcome.FAILED: 1,
    Outcome.TOKEN_REFUSED: 3,
    Outcome.FORBIDDEN: 3,
    Outcome.ACTION_MISSING: 3,
    Outcome.UNREACHABLE: 3,
}


async def run_check(settings: Mapping[str, Any], environ: Mapping[str, str], *, out: TextIO) -> int:
    """Get a token, call the action once, print what holds; returns the exit code."""
    if not settings.get("org"):
        raise ConfigError("no org given: use --org URL (or SAR_BULK_ORG)")
    org = OrgUrl.parse(settings["org"])
    credential = build_credential(settings["auth"], environ)
    name = type(credential).__name__
    timeouts = Timeouts(request=settings["timeout"])
    async with (
        TokenProvider(credential, org.scope, describe=name) as tokens,
        create_session(timeouts) as session,
    ):
        client = DataverseClient(OrgHttp(session, org, tokens, timeouts=timeouts))
        result = await preflight(client, credential_name=name)
    print(f"{org.base}: {result.outcome.value}: {result.message}", file=out)
    if result.dop_hint is not None:
        print(f"x-ms-dop-hint: {result.dop_hint} requests in parallel recommended", file=out)
    return _EXIT[result.outcome]
