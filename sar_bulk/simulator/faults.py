"""Injected faults: which one (if any) hits a request, and what the broken answers look like.

One ``random.Random`` seeded from the config's seed draws once per admitted request, so a run with
the same seed and the same request order meets the same faults. The kinds:

* ``500``: Dataverse's transient SQL error. The body's code is the hex form ``0x80044150`` (the
  Web API's usual spelling of SDK code -2147204784); the decimal form appears in the message.
* ``502`` / ``503``: an HTML page from a gateway or HTTP.sys, ``text/html``, as proxies send.
* ``drop``: the connection is closed without an answer (clients see ServerDisconnectedError).
* ``slow``: the normal answer, ``slow_seconds`` late (for client timeouts).
* ``malformed``: HTTP 200 with a body the action never sends: truncated JSON, ``Data`` that is not
  a JSON array, or an HTML sign-in page.
* ``lost``: the request is carried out (a POST creates its row), then the connection is closed
  before the answer: the client cannot tell it from ``drop``, and a retry that simply sends again
  makes a second row.
"""

from __future__ import annotations

import random
from collections.abc import Mapping

from sar_bulk.simulator.config import FAULT_KINDS
from sar_bulk.simulator.hashing import stable_digest

__all__ = [
    "GATEWAY_502",
    "MALFORMED_KINDS",
    "SERVICE_UNAVAILABLE_503",
    "SIGN_IN_PAGE",
    "SQL_TRANSIENT_CODE",
    "SQL_TRANSIENT_MESSAGE",
    "FaultPicker",
]

SQL_TRANSIENT_CODE = "0x80044150"
SQL_TRANSIENT_MESSAGE = (
    "Generic SQL error. (SQL error -2147204784: a transient database error occurred; "
    "the operation may succeed if retried.)"
)
GATEWAY_502 = (
    b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    b"<center><h1>502 Bad Gateway</h1></center>\r\n"
    b"<hr><center>Microsoft-Azure-Application-Gateway/v2</center>\r\n</body>\r\n</html>\r\n"
)
SERVICE_UNAVAILABLE_503 = (
    b'<!DOCTYPE HTML PUBLIC "-//W3C//DTD HTML 4.01//EN""http://www.w3.org/TR/html4/strict.dtd">'
    b"\r\n<HTML><HEAD><TITLE>Service Unavailable</TITLE>\r\n"
    b'<META HTTP-EQUIV="Content-Type" Content="text/html; charset=us-ascii"></HEAD>\r\n'
    b"<BODY><h2>Service Unavailable</h2>\r\n<hr><p>HTTP Error 503. The service is unavailable."
    b"</p>\r\n</BODY></HTML>\r\n"
)
SIGN_IN_PAGE = (
    b"<!DOCTYPE html><html><head><title>Sign in to your account</title></head>"
    b'<body><form method="post" action="/login"><input type="email" name="loginfmt">'
    b"</form></body></html>"
)
MALFORMED_KINDS = ("truncated", "data-not-array", "html")


class FaultPicker:
    """Draws the fault (or none) for each admitted request, reproducibly."""

    __slots__ = ("_jitter", "_rates", "_rng")

    def __init__(self, seed: int, rates: Mapping[str, float]) -> None:
        self._rates = [(kind, rates.get(kind, 0.0)) for kind in FAULT_KINDS]
        self._rng = random.Random(stable_digest("faults", seed))
        self._jitter = random.Random(stable_digest("latency", seed))

    def pick(self) -> str | None:
        """A fault kind from ``FAULT_KINDS`` or ``None``; always one draw, so sequences align."""
        draw = self._rng.random()
        edge = 0.0
        for kind, rate in self._rates:
            edge += rate
            if draw < edge:
                return kind
        return None

    def malformed_kind(self) -> str:
        return self._rng.choice(MALFORMED_KINDS)

    def jitter(self, spread: float) -> float:
        """Extra latency in ``[0, spread)``, from its own stream so faults stay aligned."""
        return self._jitter.uniform(0.0, spread) if spread > 0 else 0.0
