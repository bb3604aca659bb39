"""Helpers shared by the tests: credentials the simulator accepts, and a client around one."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
from azure.core.credentials import AccessToken

from sar_bulk.auth import TokenProvider
from sar_bulk.dataverse import DataverseClient, Timeouts, create_session
from sar_bulk.org import OrgUrl
from sar_bulk.simulator import Simulator, SimulatorConfig

FAR_FUTURE = 4_102_444_800  # 2100-01-01: these fake tokens never expire on the client's side


class RotatingCredential:
    """An async credential handing out a new simulator token on every call: sim-<user>.<n>."""

    def __init__(self, user: str = "sim-test", *, fail: Exception | None = None) -> None:
        self.user = user
        self.calls = 0
        self.fail = fail
        self._numbers = itertools.count(1)

    async def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        self.calls += 1
        if self.fail is not None:
            raise self.fail
        return AccessToken(f"{self.user}.{next(self._numbers)}", FAR_FUTURE)

    async def close(self) -> None:
        return None

    async def __aenter__(self) -> RotatingCredential:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None


@dataclass
class ClientRig:
    simulator: Simulator
    client: DataverseClient
    tokens: TokenProvider
    credential: RotatingCredential
    session: aiohttp.ClientSession


@asynccontextmanager
async def client_rig(
    config: SimulatorConfig | None = None,
    *,
    credential: RotatingCredential | None = None,
    timeouts: Timeouts | None = None,
    max_pages: int = 10_000,
) -> AsyncIterator[ClientRig]:
    """A simulator on loopback and a real client (real session, real HTTP) pointed at it."""
    credential = credential or RotatingCredential()
    timeouts = timeouts or Timeouts(request=10.0, connect=5.0)
    async with Simulator(config or SimulatorConfig(seed=1)) as simulator:
        org = OrgUrl.parse(simulator.base_url)
        async with (
            TokenProvider(credential, org.scope) as tokens,
            create_session(timeouts) as session,
        ):
            client = DataverseClient(session, org, tokens, timeouts=timeouts, max_pages=max_pages)
            yield ClientRig(simulator, client, tokens, credential, session)
