"""Credentials from azure-identity, and the single-flight token cache every request goes through.

Usage::

    credential = build_credential(AuthKind.CLIENT_SECRET, os.environ)
    async with TokenProvider(credential, org.scope) as tokens:
        bearer = await tokens.token()                        # cached, refreshed ahead of expiry
        ...                                                  # on HTTP 401 with `bearer`:
        bearer = await tokens.refresh_after_rejection(bearer)

Why a cache of our own: azure-identity credentials cache too, but many coroutines asking a cold
credential at once each fetch a token, and ``AzureCliCredential`` runs ``az`` on every call.
``TokenProvider`` makes that one fetch, shared by every caller, in a task of its own so that a
caller being cancelled does not cancel the fetch the others wait for.

Tokens and secrets never appear in a message, a ``repr`` or a log line of this module.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import re
import stat
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import TracebackType
from typing import Any, Final, Self

from azure.core.credentials import AccessToken
from azure.core.credentials_async import AsyncTokenCredential
from azure.core.exceptions import ServiceRequestError, ServiceResponseError

from sar_bulk.errors import ConfigError, CredentialError

__all__ = [
    "STATIC_TOKEN_EXPIRES_ON",
    "TOKEN_ENV",
    "AuthKind",
    "StaticTokenCredential",
    "TokenProvider",
    "build_credential",
]

_LOG = logging.getLogger(__name__)

# The S105 notes below: ruff takes names with "token"/"secret" for hard-coded passwords.
TOKEN_ENV: Final = "SAR_BULK_TOKEN"  # noqa: S105
# 9999-12-31T23:59:59Z. A pasted token's lifetime is unknown to us (we do not parse it), and it
# cannot be renewed anyway: the server's 401 is what tells that it has expired.
STATIC_TOKEN_EXPIRES_ON: Final = 253_402_300_799
# After a failed refresh, a still valid token is used this long before the next attempt.
_RETRY_REFRESH_AFTER: Final = 30.0
_DETAIL_MAX: Final = 1000


class AuthKind(StrEnum):
    """How sar-bulk gets its token; the values are what users type."""

    DEFAULT = "default"
    CLIENT_SECRET = "client-secret"  # noqa: S105
    CERTIFICATE = "certificate"
    MANAGED_IDENTITY = "managed-identity"
    WORKLOAD_IDENTITY = "workload-identity"
    AZURE_CLI = "azure-cli"
    STATIC_TOKEN = "static-token"  # noqa: S105


_REQUIRED: Final[dict[AuthKind, tuple[str, ...]]] = {
    AuthKind.CLIENT_SECRET: ("AZURE_TENANT_ID", "AZURE_CLIENT_ID", "AZURE_CLIENT_SECRET"),
    AuthKind.CERTIFICATE: ("AZURE_TENANT_ID", "AZURE_CLIENT_ID", "AZURE_CLIENT_CERTIFICATE_PATH"),
    AuthKind.WORKLOAD_IDENTITY: (
        "AZURE_TENANT_ID",
        "AZURE_CLIENT_ID",
        "AZURE_FEDERATED_TOKEN_FILE",
    ),
    AuthKind.STATIC_TOKEN: (TOKEN_ENV,),
}
# Values that must never be echoed, even inside a library's own error message.
_SECRET_VARIABLES: Final = ("AZURE_CLIENT_SECRET", "AZURE_CLIENT_CERTIFICATE_PASSWORD", TOKEN_ENV)


def build_credential(
    kind: AuthKind, environ: Mapping[str, str], *, ca_bundle: str | None = None
) -> AsyncTokenCredential:
    """Construct the credential for ``kind`` from the standard ``AZURE_*`` variables in ``environ``.

    Nothing goes over the network here. Variables a credential takes as arguments are read from
    ``environ`` and passed explicitly (including ``AZURE_AUTHORITY_HOST``); ``default`` and
    ``managed-identity`` also discover their sources from the process environment, as
    azure-identity does. ``ca_bundle`` is a PEM file of extra CAs for the Entra ID endpoint
    (TLS-inspecting proxies, tests); it applies to the kinds that talk to Entra ID directly.

    The certificate kind reads its file here: call this before the event loop runs or through
    ``asyncio.to_thread``. Raises ``ConfigError`` naming missing or unusable variables, never
    their values.
    """
    missing = [name for name in _REQUIRED.get(kind, ()) if not _get(environ, name)]
    if missing:
        raise ConfigError(
            f"auth kind {kind.value!r} needs the environment variable(s) "
            f"{', '.join(_REQUIRED[kind])}; not set: {', '.join(missing)}"
        )
    secrets = [value for name in _SECRET_VARIABLES if (value := _get(environ, name))]
    try:
        return _construct(kind, environ, ca_bundle)
    except OSError as exc:
        raise ConfigError(
            f"auth kind {kind.value!r}: cannot read {exc.filename!r} ({exc.strerror}); "
            "check AZURE_CLIENT_CERTIFICATE_PATH"
        ) from None
    except ValueError as exc:
        raise ConfigError(
            f"auth kind {kind.value!r} cannot be set up: {_scrub(str(exc), secrets)}"
        ) from None


def _construct(
    kind: AuthKind, environ: Mapping[str, str], ca_bundle: str | None
) -> AsyncTokenCredential:
    if kind is AuthKind.STATIC_TOKEN:
        return StaticTokenCredential.from_environ(environ)
    # Imported here: azure-identity takes ~0.3 s to import, which static-token runs (the
    # simulator, the demo, tokens minted elsewhere) never need.
    from azure.identity.aio import (
        AzureCliCredential,
        CertificateCredential,
        ClientSecretCredential,
        DefaultAzureCredential,
        ManagedIdentityCredential,
        WorkloadIdentityCredential,
    )

    entra: dict[str, Any] = {}
    if authority := _get(environ, "AZURE_AUTHORITY_HOST"):
        entra["authority"] = authority
    if ca_bundle is not None:
        entra["connection_verify"] = ca_bundle
    tenant_id, client_id = _get(environ, "AZURE_TENANT_ID"), _get(environ, "AZURE_CLIENT_ID")
    match kind:
        case AuthKind.DEFAULT:
            return DefaultAzureCredential()
        case AuthKind.CLIENT_SECRET:
            secret = _get(environ, "AZURE_CLIENT_SECRET")
            return ClientSecretCredential(tenant_id, client_id, secret, **entra)
        case AuthKind.CERTIFICATE:
            chain = _get(environ, "AZURE_CLIENT_SEND_CERTIFICATE_CHAIN").lower() in ("1", "true")
            path = _get(environ, "AZURE_CLIENT_CERTIFICATE_PATH")
            _warn_if_others_can_read(path)
            return CertificateCredential(
                tenant_id,
                client_id,
                path,
                password=_get(environ, "AZURE_CLIENT_CERTIFICATE_PASSWORD") or None,
                send_certificate_chain=chain,
                **entra,
            )
        case AuthKind.MANAGED_IDENTITY:
            # With AZURE_CLIENT_ID a user-assigned identity, without it the system-assigned one.
            return ManagedIdentityCredential(client_id=client_id or None)
        case AuthKind.WORKLOAD_IDENTITY:
            return WorkloadIdentityCredential(
                tenant_id=tenant_id,
                client_id=client_id,
                token_file_path=_get(environ, "AZURE_FEDERATED_TOKEN_FILE"),
                **entra,
            )
        case AuthKind.AZURE_CLI:
            return AzureCliCredential()


def _warn_if_others_can_read(path: str) -> None:
    """Warn when the certificate file is open to its group or to others.

    The file holds the app registration's private key: whoever reads it signs in as the
    application and can read every contact of the org. ssh refuses keys like that; a run only
    warns, because a container's secret volume is often mounted 0644 with nobody else inside.
    """
    mode = stat.S_IMODE(os.stat(path).st_mode)  # OSError: build_credential names the file
    if mode & 0o077:
        _LOG.warning(
            "AZURE_CLIENT_CERTIFICATE_PATH %s holds a private key and is open to other users "
            "(mode %03o): make it readable by its owner only (chmod 600, or defaultMode 0400 "
            "on a Kubernetes secret volume)",
            path,
            mode,
        )


def _get(environ: Mapping[str, str], name: str) -> str:
    return environ.get(name, "").strip()


_HEADER_SAFE: Final = re.compile(r"[\x21-\x7e]+")
_BEARER_PREFIX: Final = re.compile(r"^bearer\s+", re.IGNORECASE)


class StaticTokenCredential:
    """A bearer token obtained elsewhere (``SAR_BULK_TOKEN``), for runs without azure-identity.

    It answers every scope with the same token and an ``expires_on`` far in the future
    (``STATIC_TOKEN_EXPIRES_ON``): we cannot know the real expiry, and could not renew the token
    anyway. When it expires the server answers 401 and the run stops with that message.
    """

    __slots__ = ("_token",)

    def __init__(self, token: str) -> None:
        value = _BEARER_PREFIX.sub("", token.strip())
        if not value:
            raise ConfigError(f"{TOKEN_ENV} is empty; put an access token for the org in it")
        if not _HEADER_SAFE.fullmatch(value):
            raise ConfigError(
                f"{TOKEN_ENV} holds spaces or characters a bearer token cannot contain; "
                "put only the token in it"
            )
        self._token = value

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> StaticTokenCredential:
        """Read ``SAR_BULK_TOKEN``; ``ConfigError`` when it is missing or unusable."""
        if TOKEN_ENV not in environ:
            raise ConfigError(
                f"auth kind 'static-token' needs the environment variable {TOKEN_ENV}"
            )
        return cls(environ[TOKEN_ENV])

    async def get_token(
        self,
        *scopes: str,
        claims: str | None = None,
        tenant_id: str | None = None,
        enable_cae: bool = False,
        **kwargs: Any,
    ) -> AccessToken:
        """The same token whatever is asked: it was issued for one org outside our control."""
        return AccessToken(self._token, STATIC_TOKEN_EXPIRES_ON)

    async def close(self) -> None:
        """Nothing to release; present because the credential protocol has it."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc_value: BaseException | None = None,
        traceback: TracebackType | None = None,
    ) -> None:
        await self.close()

    def __repr__(self) -> str:
        return "StaticTokenCredential(token=<hidden>)"


# What to do when a credential cannot produce a token, by its class name.
_ADVICE: Final[dict[str, str]] = {
    "ClientSecretCredential": (
        "check AZURE_TENANT_ID, AZURE_CLIENT_ID and AZURE_CLIENT_SECRET (client secrets expire: "
        "create a new one in the app registration if needed)"
    ),
    "CertificateCredential": (
        "check AZURE_TENANT_ID, AZURE_CLIENT_ID and that the certificate in "
        "AZURE_CLIENT_CERTIFICATE_PATH is uploaded to the app registration and not expired"
    ),
    "ManagedIdentityCredential": (
        "run where a managed identity is assigned (Azure VM, App Service, Container Apps, ...); "
        "for a user-assigned identity set AZURE_CLIENT_ID"
    ),
    "WorkloadIdentityCredential": (
        "check AZURE_TENANT_ID, AZURE_CLIENT_ID, AZURE_FEDERATED_TOKEN_FILE and the federated "
        "credential of the app registration"
    ),
    "AzureCliCredential": "run az login (with --tenant for the org's tenant); az must be on PATH",
    "DefaultAzureCredential": (
        "set up one of the sources it tries (AZURE_* variables, workload identity, managed "
        "identity, az login) or choose an auth kind explicitly"
    ),
    "StaticTokenCredential": f"put a current access token in {TOKEN_ENV}",
}
_DEFAULT_ADVICE: Final = "check the credential's configuration"
# No answer from the identity endpoint is a network matter, whatever the credential.
_NETWORK_ADVICE: Final = (
    "check the network path to the identity endpoint (proxy, firewall, TLS inspection, "
    "AZURE_AUTHORITY_HOST)"
)
_NETWORK_ERRORS: Final = (ServiceRequestError, ServiceResponseError, OSError, TimeoutError)
# OSErrors about a file the credential reads (the federated token, the certificate): the
# credential's own advice names it, the network's would send the operator the wrong way.
_FILE_ERRORS: Final = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)


@dataclass(frozen=True, slots=True)
class _Token:
    """A token as cached: its value stays out of ``repr`` and tracebacks with locals."""

    value: str = field(repr=False)
    expires_on: float

    @classmethod
    def of(cls, access: AccessToken) -> _Token:
        return cls(access.token, float(access.expires_on))


class TokenProvider:
    """A single-flight, refresh-ahead token cache for one credential and one scope.

    ``token()`` returns the cached token until ``refresh_margin`` seconds before it expires, then
    fetches a new one; concurrent callers share one fetch. If that refresh fails while the old
    token is still valid, the old one keeps being used (and the refresh retried 30 s later), as
    azure-identity does. ``refresh_after_rejection()`` is for HTTP 401: it fetches once per
    rejected token, however many requests report it.

    ``clock`` must tell Unix time, as ``expires_on`` does. Failures surface as
    ``CredentialError`` naming the credential and what to do about it.
    """

    __slots__ = (
        "_cached",
        "_clock",
        "_closed",
        "_credential",
        "_fetches",
        "_inflight",
        "_margin",
        "_refetched_for",
        "_refresh_at",
        "_scope",
        "credential_name",
    )

    def __init__(
        self,
        credential: AsyncTokenCredential,
        scope: str,
        *,
        clock: Callable[[], float] = time.time,
        refresh_margin: float = 300.0,
        describe: str | None = None,
    ) -> None:
        if not refresh_margin >= 0:
            raise ValueError("refresh_margin must be zero or more seconds")
        self._credential = credential
        self._scope = scope
        self._clock = clock
        self._margin = refresh_margin
        self.credential_name: str = describe or type(credential).__name__
        self._cached: _Token | None = None
        self._refresh_at = -math.inf
        self._inflight: asyncio.Task[_Token] | None = None
        # The rejected token a fetch was already made for (see refresh_after_rejection).
        self._refetched_for: str | None = None
        self._fetches = 0
        self._closed = False

    @property
    def scope(self) -> str:
        return self._scope

    @property
    def fetches(self) -> int:
        """How many times the credential was asked for a token."""
        return self._fetches

    async def token(self) -> str:
        """The current token, fetching (once, for all waiting callers) when it is due."""
        self._check_open()
        cached = self._cached
        if cached is not None and self._clock() < self._refresh_at:
            return cached.value
        try:
            return (await self._shared_fetch()).value
        except CredentialError as exc:
            cached = self._cached
            now = self._clock()
            if cached is None or now >= cached.expires_on:
                raise
            if self._refresh_at <= now:
                self._refresh_at = min(now + _RETRY_REFRESH_AFTER, cached.expires_on)
                _LOG.warning("token refresh failed, the current token stays in use: %s", exc)
            return cached.value

    async def refresh_after_rejection(self, rejected: str) -> str:
        """A token to retry with after the server refused ``rejected`` with HTTP 401.

        Fetches only if ``rejected`` is still the cached token and no fetch was made for it yet;
        joins a fetch already under way; otherwise returns the token that replaced it.
        azure-identity credentials cache tokens, so the fetched token may be the rejected one
        again: the caller retries once and then fails, which is the intended outcome.
        """
        self._check_open()
        if self._running() is not None:
            return (await self._shared_fetch()).value
        cached = self._cached
        if cached is None or cached.value != rejected:
            return await self.token()
        if self._refetched_for == rejected:
            # Fetched after this rejection already and got the same token back: asking again
            # would only repeat that.
            return cached.value
        self._refetched_for = rejected
        return (await self._shared_fetch()).value

    async def close(self) -> None:
        """Stop a fetch under way and close the credential; later calls do nothing."""
        if self._closed:
            return
        self._closed = True
        task = self._running()
        try:
            if task is not None:
                task.cancel()
                await asyncio.wait([task])
        finally:
            await self._credential.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    def __repr__(self) -> str:
        state = "cached" if self._cached is not None else "empty"
        return (
            f"TokenProvider(credential={self.credential_name}, scope={self._scope!r}, "
            f"token={state}, fetches={self._fetches})"
        )

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("TokenProvider used after close()")

    def _running(self) -> asyncio.Task[_Token] | None:
        task = self._inflight
        return task if task is not None and not task.done() else None

    async def _shared_fetch(self) -> _Token:
        task = self._running()
        if task is None:
            task = asyncio.get_running_loop().create_task(self._fetch())
            task.add_done_callback(self._fetch_done)
            self._inflight = task
        try:
            # The shield keeps this caller's cancellation from cancelling everybody's fetch.
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if task.cancelled() and current is not None and not current.cancelling():
                # Not this caller's cancellation: close() stopped the fetch under it.
                raise CredentialError(
                    f"{self.credential_name}: token fetch stopped because the run is closing"
                ) from None
            raise

    def _fetch_done(self, task: asyncio.Task[_Token]) -> None:
        if self._inflight is task:
            self._inflight = None
        if not task.cancelled():
            # Marks the error as seen even when every waiter was cancelled before it came.
            task.exception()

    async def _fetch(self) -> _Token:
        self._fetches += 1
        try:
            fresh = _Token.of(await self._credential.get_token(self._scope))
        except Exception as exc:  # CancelledError is no Exception: it passes through
            # `from None`: an azure error's cause can hold the token request, secret included.
            raise CredentialError(self._failure(exc)) from None
        if not fresh.value:
            raise CredentialError(f"{self.credential_name} returned an empty token")
        now = self._clock()
        self._cached = fresh
        self._refresh_at = _refresh_time(now, fresh.expires_on, self._margin)
        return fresh

    def _failure(self, exc: Exception) -> str:
        known = [self._cached.value] if self._cached is not None else []
        detail = _scrub(" ".join(str(exc).split()), known) or "no details"
        if len(detail) > _DETAIL_MAX:
            detail = detail[: _DETAIL_MAX - 3] + "..."
        if isinstance(exc, _NETWORK_ERRORS) and not isinstance(exc, _FILE_ERRORS):
            advice = _NETWORK_ADVICE
        else:
            advice = _ADVICE.get(type(self._credential).__name__, _DEFAULT_ADVICE)
        return (
            f"{self.credential_name} could not get a token for {self._scope} "
            f"({type(exc).__name__}: {detail}); {advice}"
        )


def _refresh_time(now: float, expires_on: float, margin: float) -> float:
    ahead = expires_on - margin
    if ahead > now:
        return ahead
    # A token living shorter than the margin: refresh half-way through what is left, so that a
    # credential handing the same short-lived token back is not asked on every call.
    return now + max(0.0, (expires_on - now) / 2)


_JWT: Final = re.compile(r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*")
_FORM_SECRET: Final = re.compile(
    r"((?:client_secret|client_assertion|access_token|refresh_token|assertion)=)[^&\s]+"
)


def _scrub(text: str, known: Iterable[str]) -> str:
    """``text`` without known secret values and anything shaped like a token or secret field."""
    for value in known:
        if value:
            text = text.replace(value, "<redacted>")
    text = _JWT.sub("<redacted>", text)
    return _FORM_SECRET.sub(r"\1<redacted>", text)
