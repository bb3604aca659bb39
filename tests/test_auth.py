"""auth: credential construction from the environment, and the single-flight token cache.

The cache is driven by a fake credential gated by an event and by an injected clock, so nothing
sleeps. The last tests run a real ClientSecretCredential against a token endpoint served over
loopback TLS with a certificate made here, to see what azure-identity's own errors say.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import gc
import ipaddress
import ssl
import traceback
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import pytest
from aiohttp import web
from azure.core.credentials import AccessToken
from azure.core.exceptions import ClientAuthenticationError
from azure.identity import CredentialUnavailableError
from azure.identity.aio import (
    AzureCliCredential,
    CertificateCredential,
    ClientSecretCredential,
    DefaultAzureCredential,
    ManagedIdentityCredential,
    WorkloadIdentityCredential,
)
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from sar_bulk.dataverse.auth import (
    STATIC_TOKEN_EXPIRES_ON,
    AuthKind,
    StaticTokenCredential,
    TokenProvider,
    build_credential,
)
from sar_bulk.errors import ConfigError, CredentialError

SCOPE = "https://contoso.crm4.dynamics.com/.default"
SECRET = "Fake~Secret~9f2c71d4e0b8a6"
TENANT = "11111111-2222-3333-4444-555555555555"
CLIENT = "66666666-7777-8888-9999-000000000000"
# Shaped like a JWT, so the scrubbing of token-looking text is exercised too.
JWT = "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ0ZXN0In0.c2lnbmF0dXJl"


class Clock:
    """A settable Unix clock."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@dataclass
class FakeCredential:
    """An AsyncTokenCredential that counts calls, waits for ``gate`` and hands out token-1, -2..."""

    clock: Clock = field(default_factory=Clock)
    lifetime: float = 3600.0
    gate: asyncio.Event | None = None
    fail_with: Exception | None = None
    same_token: bool = False
    calls: int = 0
    closes: int = 0
    started: asyncio.Event = field(default_factory=asyncio.Event)

    async def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        assert scopes == (SCOPE,)
        self.calls += 1
        self.started.set()
        if self.gate is not None:
            await self.gate.wait()
        if self.fail_with is not None:
            raise self.fail_with
        number = 1 if self.same_token else self.calls
        return AccessToken(f"token-{number}", int(self.clock() + self.lifetime))

    async def close(self) -> None:
        self.closes += 1

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc_value: BaseException | None = None,
        traceback: TracebackType | None = None,
    ) -> None:
        await self.close()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def fake(clock: Clock) -> FakeCredential:
    return FakeCredential(clock=clock)


@pytest.fixture
async def provider(fake: FakeCredential, clock: Clock) -> AsyncIterator[TokenProvider]:
    async with TokenProvider(fake, SCOPE, clock=clock) as tokens:
        yield tokens


# --- single flight -----------------------------------------------------------------------------


async def test_100_concurrent_first_callers_cause_one_fetch(
    fake: FakeCredential, provider: TokenProvider
) -> None:
    fake.gate = asyncio.Event()
    callers = [asyncio.create_task(provider.token()) for _ in range(100)]
    await fake.started.wait()
    await asyncio.sleep(0)  # let every caller reach the shared fetch
    fake.gate.set()
    assert set(await asyncio.gather(*callers)) == {"token-1"}
    assert fake.calls == 1
    assert provider.fetches == 1


async def test_a_cached_token_is_not_fetched_again(
    fake: FakeCredential, provider: TokenProvider
) -> None:
    for _ in range(10):
        assert await provider.token() == "token-1"
    assert fake.calls == 1


async def test_refresh_happens_at_the_margin_before_expiry(
    fake: FakeCredential, provider: TokenProvider, clock: Clock
) -> None:
    assert await provider.token() == "token-1"
    clock.now += 3600 - 300 - 0.5
    assert await provider.token() == "token-1"
    clock.now += 0.5
    assert await provider.token() == "token-2"
    assert fake.calls == 2


async def test_custom_refresh_margin(fake: FakeCredential, clock: Clock) -> None:
    async with TokenProvider(fake, SCOPE, clock=clock, refresh_margin=10) as tokens:
        await tokens.token()
        clock.now += 3589
        assert await tokens.token() == "token-1"
        clock.now += 1
        assert await tokens.token() == "token-2"


async def test_a_token_shorter_than_the_margin_is_refreshed_half_way(
    fake: FakeCredential, provider: TokenProvider, clock: Clock
) -> None:
    fake.lifetime = 100.0
    assert await provider.token() == "token-1"
    clock.now += 49
    assert await provider.token() == "token-1"
    clock.now += 1
    assert await provider.token() == "token-2"


async def test_a_failed_refresh_keeps_the_still_valid_token(
    fake: FakeCredential, provider: TokenProvider, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    await provider.token()
    fake.fail_with = ClientAuthenticationError("service unavailable")
    clock.now += 3400
    assert set(await asyncio.gather(*(provider.token() for _ in range(5)))) == {"token-1"}
    assert fake.calls == 2
    assert caplog.text.count("token refresh failed") == 1
    assert "token-1" not in caplog.text
    clock.now += 29
    assert await provider.token() == "token-1"
    assert fake.calls == 2, "a failed refresh is retried after 30 s, not at once"
    clock.now += 1
    assert await provider.token() == "token-1"
    assert fake.calls == 3
    clock.now += 200  # past expiry: nothing to fall back on
    with pytest.raises(CredentialError, match="service unavailable"):
        await provider.token()
    fake.fail_with = None
    assert await provider.token() == "token-5"


async def test_a_failed_first_fetch_fails_every_waiter_once_and_is_retried_later(
    fake: FakeCredential, provider: TokenProvider
) -> None:
    fake.gate = asyncio.Event()
    fake.fail_with = ClientAuthenticationError("AADSTS7000215: Invalid client secret provided.")
    callers = [asyncio.create_task(provider.token()) for _ in range(5)]
    await fake.started.wait()
    fake.gate.set()
    results = await asyncio.gather(*callers, return_exceptions=True)
    assert all(isinstance(result, CredentialError) for result in results)
    assert fake.calls == 1
    fake.fail_with = None
    assert await provider.token() == "token-2"


# --- after a 401 -------------------------------------------------------------------------------


async def test_concurrent_rejections_of_one_token_cause_one_fetch(
    fake: FakeCredential, provider: TokenProvider
) -> None:
    rejected = await provider.token()
    fake.gate = asyncio.Event()
    fake.started.clear()
    retries = [asyncio.create_task(provider.refresh_after_rejection(rejected)) for _ in range(20)]
    await fake.started.wait()
    await asyncio.sleep(0)
    fake.gate.set()
    assert set(await asyncio.gather(*retries)) == {"token-2"}
    assert fake.calls == 2
    assert await provider.token() == "token-2"


async def test_a_stale_rejection_fetches_nothing(
    fake: FakeCredential, provider: TokenProvider
) -> None:
    old = await provider.token()
    assert await provider.refresh_after_rejection(old) == "token-2"
    assert await provider.refresh_after_rejection(old) == "token-2"
    assert await provider.refresh_after_rejection("never-issued") == "token-2"
    assert fake.calls == 2


async def test_a_rejection_that_gets_the_same_token_back_is_not_refetched(
    fake: FakeCredential, provider: TokenProvider
) -> None:
    # azure-identity credentials cache: right after a 401 they may hand the same token back.
    fake.same_token = True
    rejected = await provider.token()
    assert await provider.refresh_after_rejection(rejected) == rejected
    assert await provider.refresh_after_rejection(rejected) == rejected
    assert fake.calls == 2


async def test_a_rejection_before_any_token_fetches_one(
    fake: FakeCredential, provider: TokenProvider
) -> None:
    assert await provider.refresh_after_rejection("from-elsewhere") == "token-1"
    assert fake.calls == 1


async def test_a_failed_refresh_after_rejection_raises(
    fake: FakeCredential, provider: TokenProvider
) -> None:
    rejected = await provider.token()
    fake.fail_with = ClientAuthenticationError("AADSTS700016: Application not found.")
    with pytest.raises(CredentialError, match="AADSTS700016"):
        await provider.refresh_after_rejection(rejected)


# --- cancellation and closing ------------------------------------------------------------------


async def test_cancelling_the_caller_that_started_the_fetch_leaves_the_others_served(
    fake: FakeCredential, provider: TokenProvider
) -> None:
    fake.gate = asyncio.Event()
    first = asyncio.create_task(provider.token())
    await fake.started.wait()
    others = [asyncio.create_task(provider.token()) for _ in range(5)]
    await asyncio.sleep(0)
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    fake.gate.set()
    assert set(await asyncio.gather(*others)) == {"token-1"}
    assert fake.calls == 1


async def test_a_fetch_whose_only_caller_was_cancelled_still_serves_the_next(
    fake: FakeCredential, provider: TokenProvider
) -> None:
    fake.gate = asyncio.Event()
    first = asyncio.create_task(provider.token())
    await fake.started.wait()
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    later = asyncio.create_task(provider.token())
    await asyncio.sleep(0)
    fake.gate.set()
    assert await later == "token-1"
    assert await provider.token() == "token-1"
    assert fake.calls == 1


async def test_cancelled_callers_with_a_failing_fetch_leave_it_retryable(
    fake: FakeCredential, provider: TokenProvider, caplog: pytest.LogCaptureFixture
) -> None:
    fake.gate = asyncio.Event()
    fake.fail_with = ClientAuthenticationError("down")
    first = asyncio.create_task(provider.token())
    await fake.started.wait()
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    fake.gate.set()
    for _ in range(3):
        await asyncio.sleep(0)
    del first
    gc.collect()
    # Nobody was left to see the fetch's error: it must not surface as an asyncio complaint.
    assert "never retrieved" not in caplog.text
    fake.fail_with = None
    assert await asyncio.wait_for(provider.token(), timeout=10) == "token-2"


async def test_close_stops_a_fetch_under_way_and_closes_the_credential_once(
    fake: FakeCredential, clock: Clock
) -> None:
    fake.gate = asyncio.Event()
    tokens = TokenProvider(fake, SCOPE, clock=clock)
    waiter = asyncio.create_task(tokens.token())
    await fake.started.wait()
    await tokens.close()
    with pytest.raises(CredentialError, match="closing"):
        await waiter
    await tokens.close()
    assert fake.closes == 1
    with pytest.raises(RuntimeError, match="after close"):
        await tokens.token()


async def test_closing_an_unused_provider_closes_the_credential(fake: FakeCredential) -> None:
    async with TokenProvider(fake, SCOPE):
        pass
    assert fake.closes == 1
    assert fake.calls == 0


def test_a_negative_margin_is_refused(fake: FakeCredential) -> None:
    with pytest.raises(ValueError, match="refresh_margin"):
        TokenProvider(fake, SCOPE, refresh_margin=-1)


# --- messages ----------------------------------------------------------------------------------


async def test_a_credential_failure_becomes_a_credential_error_naming_the_credential(
    fake: FakeCredential, clock: Clock
) -> None:
    fake.fail_with = ClientAuthenticationError("AADSTS7000215: Invalid client secret provided.")
    async with TokenProvider(fake, SCOPE, clock=clock, describe="ClientSecretCredential") as tokens:
        with pytest.raises(CredentialError) as caught:
            await tokens.token()
    message = str(caught.value)
    assert message.startswith(f"ClientSecretCredential could not get a token for {SCOPE}")
    assert "ClientAuthenticationError: AADSTS7000215: Invalid client secret provided." in message
    assert tokens.credential_name == "ClientSecretCredential"


async def test_any_exception_from_the_credential_is_a_credential_error(
    fake: FakeCredential, provider: TokenProvider
) -> None:
    fake.fail_with = OSError("connection refused")
    with pytest.raises(CredentialError) as caught:
        await provider.token()
    message = str(caught.value)
    assert message.startswith("FakeCredential could not get a token")
    assert "(OSError: connection refused); check the network path" in message


async def test_token_looking_text_in_a_library_message_is_redacted(
    fake: FakeCredential, provider: TokenProvider
) -> None:
    fake.fail_with = ClientAuthenticationError(
        f"refused {JWT} in body client_secret={SECRET}&grant_type=client_credentials"
    )
    with pytest.raises(CredentialError) as caught:
        await provider.token()
    text = "".join(traceback.format_exception(caught.value))
    assert JWT not in text
    assert SECRET not in text
    assert "client_secret=<redacted>&grant_type" in text


async def test_the_cached_token_never_appears_in_a_failure_message(
    fake: FakeCredential, provider: TokenProvider, clock: Clock
) -> None:
    token = await provider.token()
    fake.fail_with = ClientAuthenticationError(f"would not renew {token}")
    clock.now += 4000
    with pytest.raises(CredentialError) as caught:
        await provider.token()
    assert token not in str(caught.value)
    assert "<redacted>" in str(caught.value)


async def test_azure_cli_missing_gives_advice_to_log_in(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no `az` anywhere
    credential = build_credential(AuthKind.AZURE_CLI, {})
    async with TokenProvider(credential, SCOPE) as tokens:
        with pytest.raises(CredentialError) as caught:
            await tokens.token()
    message = str(caught.value)
    assert message.startswith("AzureCliCredential could not get a token")
    assert CredentialUnavailableError.__name__ in message
    assert "run az login" in message


async def test_repr_shows_no_token(provider: TokenProvider) -> None:
    assert "empty" in repr(provider)
    token = await provider.token()
    assert token not in repr(provider)
    assert repr(provider) == (
        f"TokenProvider(credential=FakeCredential, scope={SCOPE!r}, token=cached, fetches=1)"
    )


# --- the static token --------------------------------------------------------------------------


async def test_static_token_comes_from_the_environment() -> None:
    credential = build_credential(AuthKind.STATIC_TOKEN, {"SAR_BULK_TOKEN": f" Bearer {JWT}\n"})
    assert isinstance(credential, StaticTokenCredential)
    async with credential:
        access = await credential.get_token(SCOPE)
        assert access == AccessToken(JWT, STATIC_TOKEN_EXPIRES_ON)
    assert JWT not in repr(credential)
    assert repr(credential) == "StaticTokenCredential(token=<hidden>)"


async def test_static_token_far_future_expiry_means_one_fetch(clock: Clock) -> None:
    credential = StaticTokenCredential(JWT)
    async with TokenProvider(credential, SCOPE, clock=clock) as tokens:
        assert await tokens.token() == JWT
        clock.now += 365 * 24 * 3600
        assert await tokens.token() == JWT
        assert tokens.fetches == 1


@pytest.mark.parametrize("environ", [{}, {"SAR_BULK_TOKEN": ""}, {"SAR_BULK_TOKEN": "  "}])
def test_static_token_missing_is_a_config_error(environ: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match="SAR_BULK_TOKEN"):
        build_credential(AuthKind.STATIC_TOKEN, environ)
    with pytest.raises(ConfigError, match="SAR_BULK_TOKEN"):
        StaticTokenCredential.from_environ(environ)


@pytest.mark.parametrize("bad", ["abc def", "abc\r\nX-Injected: 1", "tök"])
def test_static_token_that_cannot_be_a_header_is_refused_without_echo(bad: str) -> None:
    with pytest.raises(ConfigError, match="only the token") as caught:
        StaticTokenCredential.from_environ({"SAR_BULK_TOKEN": bad})
    assert bad.split()[0] not in str(caught.value)


# --- building credentials ----------------------------------------------------------------------


def _rsa_certificate_pem(password: bytes | None = None) -> bytes:
    """A self-signed RSA certificate with its key, the form CertificateCredential loads."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sar-bulk test")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password)
        if password
        else serialization.NoEncryption()
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )
    return key_pem + cert.public_bytes(serialization.Encoding.PEM)


@pytest.fixture(scope="module")
def certificate_pem() -> bytes:
    return _rsa_certificate_pem(b"pfx-Pa55word")


@pytest.fixture
def full_environ(tmp_path: Path, certificate_pem: bytes) -> dict[str, str]:
    pem = tmp_path / "app.pem"
    pem.write_bytes(certificate_pem)
    return {
        "AZURE_TENANT_ID": TENANT,
        "AZURE_CLIENT_ID": CLIENT,
        "AZURE_CLIENT_SECRET": SECRET,
        "AZURE_CLIENT_CERTIFICATE_PATH": str(pem),
        "AZURE_CLIENT_CERTIFICATE_PASSWORD": "pfx-Pa55word",
        "AZURE_FEDERATED_TOKEN_FILE": str(tmp_path / "federated-token"),
        "SAR_BULK_TOKEN": JWT,
    }


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        (AuthKind.DEFAULT, DefaultAzureCredential),
        (AuthKind.CLIENT_SECRET, ClientSecretCredential),
        (AuthKind.CERTIFICATE, CertificateCredential),
        (AuthKind.MANAGED_IDENTITY, ManagedIdentityCredential),
        (AuthKind.WORKLOAD_IDENTITY, WorkloadIdentityCredential),
        (AuthKind.AZURE_CLI, AzureCliCredential),
        (AuthKind.STATIC_TOKEN, StaticTokenCredential),
    ],
)
async def test_each_kind_builds_its_credential_and_closes_cleanly(
    kind: AuthKind, expected: type, full_environ: dict[str, str]
) -> None:
    credential = build_credential(kind, full_environ)
    assert type(credential) is expected
    for secret in (SECRET, "pfx-Pa55word", JWT):
        assert secret not in repr(credential)
    tokens = TokenProvider(credential, SCOPE)
    assert tokens.credential_name == expected.__name__
    await tokens.close()
    await tokens.close()


def test_every_kind_is_covered_and_spelled_as_users_type_it() -> None:
    assert [kind.value for kind in AuthKind] == [
        "default",
        "client-secret",
        "certificate",
        "managed-identity",
        "workload-identity",
        "azure-cli",
        "static-token",
    ]
    assert AuthKind("client-secret") is AuthKind.CLIENT_SECRET


@pytest.mark.parametrize(
    ("kind", "drop", "missing"),
    [
        (AuthKind.CLIENT_SECRET, ["AZURE_CLIENT_SECRET"], "AZURE_CLIENT_SECRET"),
        (
            AuthKind.CLIENT_SECRET,
            ["AZURE_TENANT_ID", "AZURE_CLIENT_ID"],
            "AZURE_TENANT_ID, AZURE_CLIENT_ID",
        ),
        (AuthKind.CERTIFICATE, ["AZURE_CLIENT_CERTIFICATE_PATH"], "AZURE_CLIENT_CERTIFICATE_PATH"),
        (AuthKind.CERTIFICATE, ["AZURE_TENANT_ID"], "AZURE_TENANT_ID"),
        (AuthKind.WORKLOAD_IDENTITY, ["AZURE_FEDERATED_TOKEN_FILE"], "AZURE_FEDERATED_TOKEN_FILE"),
        (AuthKind.WORKLOAD_IDENTITY, ["AZURE_CLIENT_ID"], "AZURE_CLIENT_ID"),
        (AuthKind.STATIC_TOKEN, ["SAR_BULK_TOKEN"], "SAR_BULK_TOKEN"),
    ],
)
def test_missing_variables_are_named_and_no_value_is_echoed(
    kind: AuthKind, drop: list[str], missing: str, full_environ: dict[str, str]
) -> None:
    environ = {name: value for name, value in full_environ.items() if name not in drop}
    with pytest.raises(ConfigError) as caught:
        build_credential(kind, environ)
    message = str(caught.value)
    assert message.endswith(f"not set: {missing}")
    assert f"auth kind {kind.value!r} needs" in message
    for value in full_environ.values():
        assert value not in message


def test_blank_variables_count_as_missing(full_environ: dict[str, str]) -> None:
    full_environ["AZURE_CLIENT_SECRET"] = "   "
    with pytest.raises(ConfigError, match=r"not set: AZURE_CLIENT_SECRET$"):
        build_credential(AuthKind.CLIENT_SECRET, full_environ)


@pytest.mark.parametrize("kind", [AuthKind.DEFAULT, AuthKind.MANAGED_IDENTITY, AuthKind.AZURE_CLI])
async def test_kinds_without_required_variables_build_from_an_empty_environment(
    kind: AuthKind,
) -> None:
    credential = build_credential(kind, {})
    await credential.close()


def test_unusable_values_become_config_errors_without_the_secret(
    full_environ: dict[str, str],
) -> None:
    full_environ["AZURE_TENANT_ID"] = "not a tenant!"
    with pytest.raises(ConfigError, match="Invalid tenant ID") as caught:
        build_credential(AuthKind.CLIENT_SECRET, full_environ)
    assert SECRET not in "".join(traceback.format_exception(caught.value))


def test_a_plain_http_authority_is_refused(full_environ: dict[str, str]) -> None:
    full_environ["AZURE_AUTHORITY_HOST"] = "http://127.0.0.1:1"
    with pytest.raises(ConfigError, match="https"):
        build_credential(AuthKind.CLIENT_SECRET, full_environ)


def test_a_missing_certificate_file_is_named(full_environ: dict[str, str], tmp_path: Path) -> None:
    full_environ["AZURE_CLIENT_CERTIFICATE_PATH"] = str(tmp_path / "absent.pem")
    with pytest.raises(ConfigError, match=r"absent\.pem.*AZURE_CLIENT_CERTIFICATE_PATH"):
        build_credential(AuthKind.CERTIFICATE, full_environ)


def test_a_wrong_certificate_password_does_not_echo_it(full_environ: dict[str, str]) -> None:
    full_environ["AZURE_CLIENT_CERTIFICATE_PASSWORD"] = "Wrong-Pa55word-123"
    with pytest.raises(ConfigError) as caught:
        build_credential(AuthKind.CERTIFICATE, full_environ)
    text = "".join(traceback.format_exception(caught.value))
    assert "Wrong-Pa55word-123" not in text
    assert "auth kind 'certificate' cannot be set up" in text


def test_a_certificate_without_key_is_refused(full_environ: dict[str, str], tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate")
    full_environ["AZURE_CLIENT_CERTIFICATE_PATH"] = str(garbage)
    with pytest.raises(ConfigError, match="certificate"):
        build_credential(AuthKind.CERTIFICATE, full_environ)


@pytest.fixture(params=[0o644, 0o640, 0o600])
def pem_mode(request: pytest.FixtureRequest, full_environ: dict[str, str]) -> int:
    """The certificate file of ``full_environ``, with the mode of the parameter."""
    mode: int = request.param
    Path(full_environ["AZURE_CLIENT_CERTIFICATE_PATH"]).chmod(mode)
    return mode


async def test_a_certificate_others_can_read_is_warned_about(
    full_environ: dict[str, str], caplog: pytest.LogCaptureFixture, pem_mode: int
) -> None:
    # The PEM holds the app registration's private key: anyone who can read it can sign in as
    # the application and read every contact of the org (ssh refuses keys like that).
    caplog.set_level("WARNING", logger="sar_bulk.dataverse.auth")
    credential = build_credential(AuthKind.CERTIFICATE, full_environ)
    await credential.close()
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    if pem_mode & 0o077:
        assert len(warnings) == 1
        assert full_environ["AZURE_CLIENT_CERTIFICATE_PATH"] in warnings[0]
        assert f"(mode {pem_mode:o})" in warnings[0]
        assert "chmod 600" in warnings[0]
        assert "pfx-Pa55word" not in caplog.text
    else:
        assert warnings == []


# --- a real ClientSecretCredential against a loopback TLS token endpoint ------------------------


@dataclass
class TokenEndpoint:
    authority: str
    ca_bundle: str
    requests: list[dict[str, str]]
    answer: Callable[[dict[str, str]], web.Response]


def _tls_files(folder: Path) -> tuple[Path, Path, Path]:
    """A CA, and a server certificate for 127.0.0.1 it signed: (ca.pem, server.pem, key.pem)."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sar-bulk test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    server = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.IPv4Address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    paths = folder / "ca.pem", folder / "server.pem", folder / "server-key.pem"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(server.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return paths


def _issue(form: dict[str, str]) -> web.Response:
    if form.get("client_secret") != SECRET:
        return web.json_response(
            {
                "error": "invalid_client",
                "error_description": "AADSTS7000215: Invalid client secret provided.",
                "error_codes": [7000215],
            },
            status=401,
        )
    return web.json_response(
        {"token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599, "access_token": JWT}
    )


@pytest.fixture
def tls_files(tmp_path: Path) -> tuple[Path, Path, Path]:
    return _tls_files(tmp_path)


@pytest.fixture
async def token_endpoint(tls_files: tuple[Path, Path, Path]) -> AsyncIterator[TokenEndpoint]:
    ca_pem, server_pem, key_pem = tls_files
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(server_pem, key_pem)
    endpoint = TokenEndpoint("", str(ca_pem), [], _issue)

    async def token(request: web.Request) -> web.Response:
        assert request.match_info["tenant"] == TENANT
        form = {key: str(value) for key, value in (await request.post()).items()}
        endpoint.requests.append(form)
        return endpoint.answer(form)

    app = web.Application()
    app.router.add_post("/{tenant}/oauth2/v2.0/token", token)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_tls)
    await site.start()
    port = runner.addresses[0][1]
    endpoint.authority = f"https://127.0.0.1:{port}"
    try:
        yield endpoint
    finally:
        await runner.cleanup()


def _secret_environ(endpoint: TokenEndpoint, secret: str = SECRET) -> dict[str, str]:
    return {
        "AZURE_TENANT_ID": TENANT,
        "AZURE_CLIENT_ID": CLIENT,
        "AZURE_CLIENT_SECRET": secret,
        "AZURE_AUTHORITY_HOST": endpoint.authority,
    }


async def test_real_client_secret_credential_single_flight_over_tls(
    token_endpoint: TokenEndpoint,
) -> None:
    credential = build_credential(
        AuthKind.CLIENT_SECRET, _secret_environ(token_endpoint), ca_bundle=token_endpoint.ca_bundle
    )
    async with TokenProvider(credential, SCOPE) as tokens:
        got = await asyncio.gather(*(tokens.token() for _ in range(20)))
    assert set(got) == {JWT}
    assert len(token_endpoint.requests) == 1
    form = token_endpoint.requests[0]
    assert form["client_id"] == CLIENT
    assert form["scope"] == SCOPE
    assert form["grant_type"] == "client_credentials"


async def test_real_client_secret_refused_names_the_fix_not_the_secret(
    token_endpoint: TokenEndpoint,
) -> None:
    wrong = "Wrong~Secret~41b7c2aa9d"
    credential = build_credential(
        AuthKind.CLIENT_SECRET,
        _secret_environ(token_endpoint, wrong),
        ca_bundle=token_endpoint.ca_bundle,
    )
    async with TokenProvider(credential, SCOPE) as tokens:
        with pytest.raises(CredentialError) as caught:
            await tokens.token()
    assert token_endpoint.requests[0]["client_secret"] == wrong  # it did reach the server
    message = str(caught.value)
    assert message.startswith("ClientSecretCredential could not get a token")
    assert "AADSTS7000215" in message
    assert "AZURE_CLIENT_SECRET" in message
    assert wrong not in "".join(traceback.format_exception(caught.value))


@pytest.mark.slow  # azure-core retries the failed connection with backoff: about 5 s
async def test_an_untrusted_token_endpoint_is_a_credential_error(
    token_endpoint: TokenEndpoint,
) -> None:
    # Without the test CA the TLS handshake fails: no token, and nothing was sent.
    credential = build_credential(AuthKind.CLIENT_SECRET, _secret_environ(token_endpoint))
    async with TokenProvider(credential, SCOPE) as tokens:
        with pytest.raises(CredentialError) as caught:
            await tokens.token()
    assert token_endpoint.requests == []
    message = str(caught.value)
    assert message.startswith("ClientSecretCredential could not get a token")
    assert "CERTIFICATE_VERIFY_FAILED" in message
    assert "check the network path to the identity endpoint" in message
    assert SECRET not in "".join(traceback.format_exception(caught.value))


async def test_a_missing_federated_token_file_points_at_the_file_not_the_network(
    tmp_path: Path,
) -> None:
    # A pod without the workload-identity webhook's projected token: the real credential reads
    # a file that is not there. The advice is the credential's (it names the variable), not
    # "check the network path", which would send the operator to look at proxies.
    missing = tmp_path / "azure-identity-token"
    environ = {
        "AZURE_TENANT_ID": TENANT,
        "AZURE_CLIENT_ID": CLIENT,
        "AZURE_FEDERATED_TOKEN_FILE": str(missing),
    }
    credential = build_credential(AuthKind.WORKLOAD_IDENTITY, environ)
    async with TokenProvider(credential, SCOPE) as tokens:
        with pytest.raises(CredentialError) as caught:
            await tokens.token()
    message = str(caught.value)
    assert "FileNotFoundError" in message
    assert "AZURE_FEDERATED_TOKEN_FILE" in message
    assert "network path" not in message
