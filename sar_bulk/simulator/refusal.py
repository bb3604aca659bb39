"""Dataverse's error codes and the exception the Web API handlers raise to answer with one.

Usage::

    raise Refusal(404, ROW_MISSING, f"contact With Id = {cid} Does Not Exist", "not_found")

``webapi.handle`` turns it into ``{"error": {"code": ..., "message": ...}}`` and counts its
outcome. The codes Microsoft documents are 0x80060888 (no such segment), 0x80040217 (no such row)
and 0x80040220 (missing privilege); the others are modelled on Dataverse's usual codes.
"""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from sar_bulk.simulator import replies

__all__ = [
    "INVALID",
    "NOT_FOUND",
    "NO_FILE",
    "OPTION_OUT_OF_RANGE",
    "PRIVILEGE_MISSING",
    "ROW_MISSING",
    "Refusal",
    "json_answer",
]

NOT_FOUND = "0x80060888"
ROW_MISSING = "0x80040217"
PRIVILEGE_MISSING = "0x80040220"
INVALID = "0x80040203"
OPTION_OUT_OF_RANGE = "0x8004431a"
NO_FILE = "0x80060891"


class Refusal(Exception):
    """Raised while checking a request; ``handle`` turns it into Dataverse's error answer."""

    def __init__(self, status: int, code: str, message: str, outcome: str = "bad_request") -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.outcome = status, code, message, outcome


def json_answer(
    status: int, body: dict[str, Any], headers: dict[str, str] | None = None
) -> web.Response:
    response = web.Response(
        status=status, body=orjson.dumps(body), headers={"OData-Version": "4.0", **(headers or {})}
    )
    response.headers["Content-Type"] = replies.JSON_TYPE
    return response
