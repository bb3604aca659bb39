"""``sar-bulk check``: every source's pre-flight probe on its own, with a plain answer.

Usage::

    code = await run_check(settings, os.environ, out=sys.stdout)

The first line says what holds for the org as a whole (``ready``, ``token-refused``,
``action-missing``, ...); one line per source follows: available, missing (why) or forbidden
(which privilege). Exit codes: 0 at least one source can answer; 1 a probe failed in a way
that says nothing about the org (a server error); 3 refused, or no source available.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, TextIO

from sar_bulk.dataverse.auth import TokenProvider, build_credential
from sar_bulk.dataverse.client import DataverseClient
from sar_bulk.dataverse.fetcher import Fetcher
from sar_bulk.dataverse.http import OrgHttp, Timeouts, create_session
from sar_bulk.dataverse.org import OrgUrl
from sar_bulk.dataverse.preflight import Outcome, probe_sources
from sar_bulk.dataverse.retry import RetryPolicy
from sar_bulk.dataverse.throttle import Throttle, ThrottleSettings
from sar_bulk.errors import ConfigError
from sar_bulk.sources.base import SourceDeps, SourceSettings
from sar_bulk.sources.registry import build_many

__all__ = ["run_check"]

_EXIT = {Outcome.READY: 0, Outcome.FAILED: 1}


async def run_check(settings: Mapping[str, Any], environ: Mapping[str, str], *, out: TextIO) -> int:
    """Get a token, probe every source once, print what holds; returns the exit code."""
    if not settings.get("org"):
        raise ConfigError("no org given: use --org URL (or SAR_BULK_ORG)")
    org = OrgUrl.parse(settings["org"])
    credential = build_credential(settings["auth"], environ)
    name = type(credential).__name__
    timeouts = Timeouts(request=settings["timeout"])
    loop = asyncio.get_running_loop()
    async with (
        TokenProvider(credential, org.scope, describe=name) as tokens,
        create_session(timeouts) as session,
    ):
        http = OrgHttp(session, org, tokens, timeouts=timeouts)
        fetcher = Fetcher(
            DataverseClient(http), Throttle(ThrottleSettings(), clock=loop.time), RetryPolicy()
        )
        deps = SourceDeps(
            http=http,
            fetcher=fetcher,
            settings=SourceSettings(),
            now=lambda: datetime.now(UTC),
            clock=loop.time,
            sleep=asyncio.sleep,
        )
        result = await probe_sources(build_many(None, deps), credential_name=name)
    outcome = result.outcome
    headline = result.stop if result.stop is not None else _headline(outcome)
    print(f"{org.base}: {outcome.value}: {headline}", file=out)
    for probe in result.probes:
        detail = f" ({probe.detail})" if probe.detail else ""
        print(f"  {probe.source}: {probe.availability.value}{detail}", file=out)
    if (hint := result.dop_hint or http.dop_hint) is not None:
        print(f"x-ms-dop-hint: {hint} requests in parallel recommended", file=out)
    return _EXIT.get(outcome, 3)


def _headline(outcome: Outcome) -> str:
    if outcome is Outcome.READY:
        return "reachable and authorised: at least one source can answer"
    return "no source can answer subject-access requests with this org and identity"
