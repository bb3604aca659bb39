"""One HTTP exchange with the org: token, timeouts, transport errors. The only place that sends.

Usage::

    async with create_session(Timeouts()) as session:
        http = OrgHttp(session, org, tokens)
        answer = await http.send(context, "GET", org.api_url("contacts(...)"))
        if answer.status != 200:
            raise classify_error(context, answer.status, answer.headers, answer.body, now)

Every source (the seed's action, Web API queries, file downloads) goes through ``send``, so the
rules that protect the run hold for all of them: the request only ever goes to the org's own
origin, the bearer token is refreshed once on a 401 and never appears in an exception, a call
has a time limit, and aiohttp's exceptions (whose repr can carry the request's headers) are
turned into the error tree ``from None``.

Everything the server sends is untrusted: a redirect is never followed (it would carry the
token, or lead the run to another org) but raised as ``Redirected`` naming its Location, and an
answer is read in chunks up to ``max_answer_bytes`` *after* decompression, so neither a huge
Content-Length nor a gzip bomb can make the run allocate more (``OverLimit``).

This module knows nothing about pacing or retrying: the fetcher wraps ``send`` in the
identity's throttle and retry policy.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

import aiohttp

from sar_bulk._version import __version__
from sar_bulk.dataverse.auth import TokenProvider
from sar_bulk.dataverse.org import OrgUrl
from sar_bulk.errors import (
    ConfigError,
    ConnectFailed,
    OverLimit,
    Redirected,
    RequestContext,
    Transient,
    Unreachable,
)

__all__ = ["DEFAULT_MAX_ANSWER_BYTES", "Answer", "OrgHttp", "Timeouts", "create_session"]

_MAX_DETAIL: Final = 300
# One answer may hold this much after decompression (a page of 5,000 big interactions is
# ~20 MB); the flag --max-answer-bytes changes it.
DEFAULT_MAX_ANSWER_BYTES: Final = 64 * 1024 * 1024
_READ_CHUNK: Final = 64 * 1024
_MAX_LOCATION: Final = 200
# Sent with every call (set once on the session, so a request only adds its token).
_FIXED_HEADERS: Final = {
    "Accept": "application/json",
    "OData-MaxVersion": "4.0",
    "OData-Version": "4.0",
    "User-Agent": f"sar-bulk/{__version__}",
}


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Per-request time limits in seconds.

    ``request`` bounds one whole call (send, wait, read); ``connect`` the TCP and TLS set-up.
    Neither counts time spent waiting for a free connection: the throttle's concurrency cap stays
    below the connection pool's size, so no request waits for the pool.
    """

    request: float = 120.0
    connect: float = 30.0


@dataclass(frozen=True, slots=True)
class Answer:
    """What came back: status, headers and the whole body (untrusted, all of it)."""

    status: int
    headers: Mapping[str, str]
    body: bytes


def create_session(timeouts: Timeouts, *, pool_size: int = 64) -> aiohttp.ClientSession:
    """The run's one HTTP session: verified TLS, no cookies, timeouts set.

    Cookies are dropped on purpose: Dataverse's affinity cookie would pin every request to one web
    server, and each server counts the service-protection limits on its own.
    """
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=pool_size, ttl_dns_cache=300),
        cookie_jar=aiohttp.DummyCookieJar(),
        timeout=aiohttp.ClientTimeout(
            total=None, sock_connect=timeouts.connect, sock_read=timeouts.request
        ),
        headers=_FIXED_HEADERS,
        raise_for_status=False,
    )


class OrgHttp:
    """Sends requests to one org with one identity's tokens."""

    __slots__ = (
        "_client_timeout",
        "_session",
        "_timeouts",
        "_tokens",
        "dop_hint",
        "max_answer_bytes",
        "org",
    )

    def __init__(
        self,
        session: aiohttp.ClientSession,
        org: OrgUrl,
        tokens: TokenProvider,
        *,
        timeouts: Timeouts | None = None,
        max_answer_bytes: int = DEFAULT_MAX_ANSWER_BYTES,
    ) -> None:
        if max_answer_bytes < 1:
            raise ConfigError("the answer size cap (--max-answer-bytes) must be at least 1 byte")
        self._session = session
        self.org = org
        # The org's latest x-ms-dop-hint, from any answer: every source's requests share it.
        self.dop_hint: int | None = None
        self._tokens = tokens
        self._timeouts = timeouts = timeouts or Timeouts()
        # aiohttp's own total limit covers the whole exchange, body included (its reads wait
        # under the same timer), with one timer per request: cheaper than asyncio.timeout
        # around the call plus a read timeout rescheduled on every chunk.
        self._client_timeout = aiohttp.ClientTimeout(
            total=timeouts.request, sock_connect=timeouts.connect
        )
        self.max_answer_bytes = max_answer_bytes

    async def send(
        self,
        context: RequestContext,
        method: str,
        url: str,
        *,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Answer:
        """One exchange; on a 401 fetch a fresh token once and send again.

        ``url`` must be on the org's origin: a URL from the server (a nextLink) that points
        elsewhere is refused before a token could travel there. A 3xx raises ``Redirected``;
        an answer over ``max_answer_bytes`` raises ``OverLimit``.
        """
        if not self.org.owns(url):
            raise ConfigError(f"refusing to send a request off the org's origin ({url[:80]!r})")
        token = await self._tokens.token()
        answer = await self._exchange(context, method, url, body, headers, token)
        if answer.status == 401:
            token = await self._tokens.refresh_after_rejection(token)
            answer = await self._exchange(context, method, url, body, headers, token)
        return answer

    async def _exchange(
        self,
        context: RequestContext,
        method: str,
        url: str,
        body: bytes | None,
        extra: Mapping[str, str] | None,
        token: str,
    ) -> Answer:
        headers = {**(extra or {}), "Authorization": f"Bearer {token}"}
        limit = self._timeouts.request
        # Exceptions are re-raised "from None": aiohttp's own ones can carry the request's
        # headers (and so the token) in their repr and would leak it into tracebacks.
        try:
            async with self._session.request(
                method,
                url,
                data=body,
                headers=headers,
                allow_redirects=False,
                timeout=self._client_timeout,
            ) as response:
                if 300 <= response.status < 400:
                    raise _redirected(context, response)
                raw = await self._read_capped(context, response)
                if (hint := dop_hint(response.headers)) is not None:
                    self.dop_hint = hint
                return Answer(response.status, response.headers, raw)
        except aiohttp.ConnectionTimeoutError:
            # Before the TimeoutError below (it is one): a connect that never completes (a
            # firewall dropping packets) is a connect failure like a refused one, which the
            # pre-flight retries and ConnectWatch counts, not a slow answer.
            host = _host_port(url)
            raise ConnectFailed(
                context,
                f"cannot connect to {host} (no connection within {self._timeouts.connect:g} s)",
                host=host,
            ) from None
        except TimeoutError:
            raise Transient(context, f"no answer within {limit:g} s") from None
        except aiohttp.ClientConnectorCertificateError as exc:
            raise Unreachable(
                context, f"TLS certificate of {exc.host} not trusted: {_reason(exc)}"
            ) from None
        except aiohttp.ClientSSLError as exc:
            raise Unreachable(context, f"TLS failed: {_reason(exc)}") from None
        except aiohttp.ClientConnectorError as exc:
            raise ConnectFailed(
                context,
                f"cannot connect to {exc.host}:{exc.port} ({_reason(exc)})",
                host=f"{exc.host}:{exc.port}",
            ) from None
        except aiohttp.ServerDisconnectedError:
            raise Transient(context, "the server closed the connection") from None
        except aiohttp.ClientPayloadError:
            raise Transient(context, "the answer was cut short") from None
        except aiohttp.ClientError as exc:
            raise Transient(context, f"connection failed ({type(exc).__name__})") from None

    async def _read_capped(
        self, context: RequestContext, response: aiohttp.ClientResponse
    ) -> bytes:
        """The whole body, decompressed, refused as soon as it passes the cap."""
        cap = self.max_answer_bytes
        announced = response.content_length
        if announced is not None and announced > cap:
            raise _over_cap(context, response.status, f"announces {announced} bytes", cap)
        # Not response.read(), even when the size is announced: it keeps the body on the
        # response object as well, for as long as that object lives.
        body = bytearray()
        # iter_chunked yields decompressed data, and aiohttp inflates in bounded steps, so
        # a gzip bomb is stopped after about one chunk past the cap.
        async for chunk in response.content.iter_chunked(_READ_CHUNK):
            body += chunk
            if len(body) > cap:
                raise _over_cap(context, response.status, f"holds more than {cap} bytes", cap)
        return bytes(body)


def _redirected(context: RequestContext, response: aiohttp.ClientResponse) -> Redirected:
    location = response.headers.get("Location")
    where = repr(location[:_MAX_LOCATION]) if location else "no Location"
    return Redirected(
        context,
        f"the org answered with a redirect to {where}; not followed",
        status=response.status,
    )


def _over_cap(context: RequestContext, status: int, what: str, cap: int) -> OverLimit:
    return OverLimit(
        context,
        f"the answer {what}, over the cap of {cap} bytes (--max-answer-bytes); not read further",
        status=status,
    )


def dop_hint(headers: Mapping[str, str]) -> int | None:
    """The recommended degree of parallelism (``x-ms-dop-hint``), when the answer has a sane one."""
    value = headers.get("x-ms-dop-hint")
    if value is None:
        return None
    try:
        hint = int(value.strip())
    except ValueError:
        return None
    return hint if hint > 0 else None


def _host_port(url: str) -> str:
    """``host:port`` of ``url``, as ``ClientConnectorError`` names it (default port spelled)."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return f"{parts.hostname}:{port}"


def _reason(exc: aiohttp.ClientConnectorError) -> str:
    return str(exc.os_error)[:_MAX_DETAIL]
