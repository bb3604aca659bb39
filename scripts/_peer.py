"""What the two yardstick clients (naive peer, bare loop) share: the action's URL and a session."""

from __future__ import annotations

import aiohttp

ACTION = "/api/data/v9.0/msdyncrm_LoadInteractionsPublic"


def action_session(org: str, token: str, concurrency: int) -> tuple[aiohttp.ClientSession, str]:
    """A plain aiohttp session with the action's headers, and the action's URL."""
    headers = {
        "Accept": "application/json",
        "Content-Type": "application/json; charset=utf-8",
        "OData-MaxVersion": "4.0",
        "OData-Version": "4.0",
        "Authorization": f"Bearer {token}",
    }
    connector = aiohttp.TCPConnector(limit=concurrency)
    session = aiohttp.ClientSession(headers=headers, connector=connector)
    return session, org.rstrip("/") + ACTION
