"""Dossiers into an Azure Blob Storage container: ``--out https://ACCOUNT.blob.core.windows.net/C/P``.

Usage::

    url = ContainerUrl.parse("https://acme.blob.core.windows.net/sar/2026-11")
    target = BlobTarget(url, storage_credential(url, AuthKind.MANAGED_IDENTITY, os.environ))
    await target.prepare()                               # the container answers (or is created)
    published = await target.publish(staged_zip, "<contact-id>.zip")

Why azure-storage-blob: the Blob REST protocol, its three kinds of auth (shared key, SAS, Entra ID
tokens) and the block-list semantics are not ours to rewrite; its async client runs on aiohttp.

How a blob appears only complete: the file is sent as blocks (``stage_block``, 4 MiB each, each
with its own Content-MD5 that the service checks), and the blob is created by ONE
``commit_block_list`` carrying the whole file's Content-MD5 and our metadata (``sha256``,
``sar_bulk_schema``). Staged but uncommitted blocks are invisible: a name holds nothing until
the commit, and the commit is atomic. A new name is committed with ``If-None-Match: *`` so an
existing blob is never overwritten unless the caller says it replaces it. After the commit the
blob's properties are read back and compared (etag, size, MD5, sha256).

A store that stops answering stops the run (``breaker.py``): five uploads in a row that got no
answer or a refusal (403, 5xx, an answer that is not Blob Storage's), each after the client's own
retries, raise ``OutputGone`` (exit 3) rather than letting every later contact be fetched from
the org only to fail at its upload. A conflict (the name exists) is about one dossier: not counted.

Credentials, first match wins: ``AZURE_STORAGE_CONNECTION_STRING`` (its AccountKey or
SharedAccessSignature; its account must be the URL's), ``AZURE_STORAGE_SAS_TOKEN``, else the
run's ``--auth`` kind through azure-identity (scope ``https://storage.azure.com/.default``; the
identity needs "Storage Blob Data Contributor" on the container). ``static-token`` holds an org
token, never a storage one, so it needs one of the two variables.

Plain http is refused except to a loopback address (Azurite); loopback URLs are path style,
``http://127.0.0.1:10000/devstoreaccount1/CONTAINER/PREFIX``, as the emulator serves them.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import random
import re
import secrets
import shutil
import tempfile
from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import IO, Any, Final
from urllib.parse import urlsplit

from azure.core.credentials import AzureNamedKeyCredential, AzureSasCredential
from azure.core.credentials_async import AsyncTokenCredential
from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    HttpResponseError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.storage.blob import BlobBlock, ContentSettings
from azure.storage.blob.aio import ContainerClient, ExponentialRetry

from sar_bulk.dataverse.auth import AuthKind, build_credential
from sar_bulk.dossier.format import SCHEMA as DOSSIER_SCHEMA
from sar_bulk.errors import ConfigError, OutputError, OutputRefused, OutputUnreachable
from sar_bulk.output.breaker import OutputBreaker
from sar_bulk.output.target import Published, check_name
from sar_bulk.output.url import (
    _DEV_ACCOUNT,
    _DEV_KEY,
    CONNECTION_STRING_ENV,
    SAS_TOKEN_ENV,
    ContainerUrl,
    _connection_string,
    storage_secrets,
)
from sar_bulk.run.report import REPORT_SCHEMA

__all__ = [
    "CONNECTION_STRING_ENV",
    "SAS_TOKEN_ENV",
    "STORAGE_SCOPE",
    "BlobTarget",
    "StorageCredential",
    "storage_credential",
    "storage_secrets",
]

STORAGE_SCOPE: Final = "https://storage.azure.com/.default"
_CHUNK: Final = 4 << 20
# verify and adoption download a dossier to a temporary file: a blob larger than any dossier
# (ZIP64 allows more, but 64 GiB is far beyond a person's data) is not fetched at all.
MAX_DOWNLOAD_BYTES: Final = 64 << 30
# Uploads at once per target: each holds one block in memory.
_UPLOADS: Final = 8
_SHA256: Final = re.compile(r"^[0-9a-f]{64}$")
_SIG: Final = re.compile(r"(?i)(sig=)[^&\s'\"]+")

StorageCredential = AzureNamedKeyCredential | AzureSasCredential | AsyncTokenCredential


def storage_credential(
    url: ContainerUrl, auth: AuthKind, environ: Mapping[str, str]
) -> StorageCredential:
    """The credential for ``url``: connection string, SAS token, or the ``--auth`` kind."""
    if connection := environ.get(CONNECTION_STRING_ENV, "").strip():
        fields = _connection_string(connection)
        if fields.get("usedevelopmentstorage", "").lower() == "true":
            fields.setdefault("accountname", _DEV_ACCOUNT)
            fields.setdefault("accountkey", _DEV_KEY)
        name = fields.get("accountname")
        if name is not None and name != url.account:
            raise ConfigError(
                f"{CONNECTION_STRING_ENV} is for account {name!r}, but --out names account "
                f"{url.account!r}; use the connection string of that account"
            )
        if key := fields.get("accountkey"):
            return AzureNamedKeyCredential(name or url.account, key)
        if sas := fields.get("sharedaccesssignature"):
            return AzureSasCredential(sas.lstrip("?"))
        raise ConfigError(
            f"{CONNECTION_STRING_ENV} holds neither AccountKey nor SharedAccessSignature"
        )
    if sas := environ.get(SAS_TOKEN_ENV, "").strip().lstrip("?"):
        if "sig=" not in sas:
            raise ConfigError(f"{SAS_TOKEN_ENV} does not look like a SAS token (no sig=)")
        return AzureSasCredential(sas)
    if auth is AuthKind.STATIC_TOKEN:
        raise ConfigError(
            "--auth static-token holds a token for the org, not for storage: set "
            f"{CONNECTION_STRING_ENV} or {SAS_TOKEN_ENV} for a container output"
        )
    if urlsplit(url.account_url).scheme != "https":
        raise ConfigError(
            f"Entra ID tokens are only sent over https; for {url.text} set "
            f"{CONNECTION_STRING_ENV} or {SAS_TOKEN_ENV}"
        )
    return build_credential(auth, environ)


class _Backoff(ExponentialRetry):
    """Waits ``first`` x 2^n seconds, +-25 % jitter, before retry n (n = 0, 1, ...).

    The SDK's own formula adds ``increment_base ** n`` whole seconds to the first wait, which
    makes every failed call to a stopped store cost 14 s or more whatever the first wait is.
    """

    def __init__(self, first: float, retries: int) -> None:
        super().__init__(initial_backoff=0, increment_base=2, retry_total=retries)
        self._first = first

    def get_backoff_time(self, settings: dict[str, Any]) -> float:
        wait: float = self._first * 2 ** int(settings["count"])
        return wait * random.uniform(0.75, 1.25)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _read_block(handle: IO[bytes], size: int, sha: Any, md5: Any) -> tuple[bytes, str]:
    """One block of the file, folded into the running digests, and the block's own MD5."""
    chunk = handle.read(size)
    sha.update(chunk)
    md5.update(chunk)
    return chunk, _b64(hashlib.md5(chunk, usedforsecurity=False).digest())


class BlobTarget:
    """An ``OutputTarget`` on one container and prefix (see the module docstring)."""

    def __init__(
        self,
        url: ContainerUrl,
        credential: StorageCredential,
        *,
        chunk_size: int = _CHUNK,
        retries: int = 3,
        backoff: float = 2.0,
        timeout: float = 60.0,
        breaker_failures: int = 5,
    ) -> None:
        if not 1 <= chunk_size <= 100 << 20:
            raise ValueError("chunk_size must be 1 byte to 100 MiB")
        self.url = url
        self._chunk = chunk_size
        self._credential = credential
        self._uploads = asyncio.Semaphore(_UPLOADS)
        # Uploads in a row that got no answer: at ``breaker_failures`` of them the run stops.
        self._breaker = OutputBreaker(breaker_failures)
        # The SDK retries what its policy calls retryable (timeouts, 500/503, dropped
        # connections, refused connects); our policy only sets how long it waits.
        self._client = ContainerClient(
            url.account_url,
            url.container,
            credential=credential,
            retry_policy=_Backoff(backoff, retries),
            connection_timeout=min(timeout, 20.0),
            read_timeout=timeout,
        )

    @property
    def description(self) -> str:
        return self.url.text

    def _key(self, name: str) -> str:
        check_name(name)
        return self.url.prefix + name

    def _failure(self, what: str, exc: AzureError) -> OutputError:
        """Our error for an SDK one: what failed, where, why, and what to do; no secret."""
        where = f"{what} in container {self.url.text}"
        if isinstance(exc, ServiceRequestError | ServiceResponseError):
            cause = _scrub(str(exc.inner_exception or exc.message or type(exc).__name__))
            return OutputUnreachable(
                f"{where} failed: no answer from the blob store ({cause}); check that the "
                "storage account is reachable (network, firewall, emulator running); "
                "rerun to resume"
            )
        if isinstance(exc, HttpResponseError):
            status = exc.status_code
            code = getattr(exc, "error_code", None) or getattr(exc, "reason", None) or ""
            # The SDK gives a StorageErrorCode (its str() is the enum's name) or the header's
            # text: the code as the service spelt it, scrubbed (it comes from the server).
            code = _scrub(str(getattr(code, "value", code)))[:100]
            answer = f"HTTP {status}" + (f", {code}" if code else "")
            if isinstance(exc, ClientAuthenticationError) or status in (401, 403):
                advice = (
                    "the store refused the credential: check the account key or SAS (expiry, "
                    "permissions racwl), or give the identity 'Storage Blob Data Contributor' "
                    "on the container"
                )
            elif status is not None and status < 400:
                # A 200 where Blob Storage answers 201: something else answered in its place.
                advice = (
                    "that is not Blob Storage's answer to it: check for a proxy or gateway "
                    "in between; rerun to resume"
                )
            else:
                advice = "the store refused the request; rerun to resume"
            return OutputRefused(f"{where} failed ({answer}): {advice}")
        return OutputRefused(f"{where} failed: {_scrub(str(exc))}; rerun to resume")

    async def prepare(self) -> None:
        try:
            # Listing, not reading the container's properties: a container SAS (racwl, the
            # credential an operator is usually handed) may list but not read the properties.
            pages = self._client.list_blobs(
                name_starts_with=self.url.prefix or None, results_per_page=1
            ).by_page()
            async for _ in pages:
                break
        except ResourceNotFoundError:
            try:
                await self._client.create_container()
            except ResourceExistsError:
                pass  # another shard created it a moment ago
            except AzureError as exc:
                raise self._failure("creating the container", exc) from None
        except AzureError as exc:
            raise self._failure("opening the container", exc) from None
        await self._check_write()

    async def _check_write(self) -> None:
        """Stage one block under a hidden name: a credential that may read but not write
        stops the run here, before the org is asked for data no upload could keep.

        Staged blocks are never committed: no blob appears, and the service discards them
        (after a week at the latest); ``list_dossiers`` skips hidden names anyway.
        """
        blob = self._client.get_blob_client(self.url.prefix + _WRITE_CHECK)
        block_id = _b64(f"check-{secrets.token_hex(6)}".encode())
        try:
            await blob.stage_block(block_id, b"sar-bulk", length=8)
        except AzureError as exc:
            raise self._failure("writing a test block", exc) from None

    async def publish(
        self, staged: Path, name: str, *, sha256: str | None = None, replace: bool = False
    ) -> Published:
        key = self._key(name)
        async with self._uploads:
            try:
                published = await self._upload(
                    Path(staged), key, name, ("application/zip", DOSSIER_SCHEMA), sha256, replace
                )
            except (OutputUnreachable, OutputRefused) as exc:
                self._breaker.unreachable(exc, f"container {self.url.text}")  # may stop the run
                raise
        self._breaker.answered()
        await asyncio.to_thread(Path(staged).unlink, missing_ok=True)
        return published

    async def _upload(
        self,
        staged: Path,
        key: str,
        name: str,
        kind: tuple[str, str],  # content type, and the schema named in the metadata
        expected: str | None,
        replace: bool,
    ) -> Published:
        blob = self._client.get_blob_client(key)
        # Block ids unique to this upload: blocks an interrupted earlier upload left staged
        # under the same name are never part of this blob.
        upload = secrets.token_hex(6)
        sha, md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
        blocks: list[BlobBlock] = []
        size = 0
        what = f"uploading {name}"
        try:
            handle = await asyncio.to_thread(staged.open, "rb")
        except OSError as exc:
            raise OutputError(f"cannot read staged {staged}: {exc.strerror}") from exc
        try:
            while True:
                chunk, block_md5 = await asyncio.to_thread(
                    _read_block, handle, self._chunk, sha, md5
                )
                if not chunk:
                    break  # an empty file commits an empty list: an empty blob
                block_id = _b64(f"{upload}-{len(blocks):06d}".encode())
                await blob.stage_block(
                    block_id, chunk, length=len(chunk), headers={"Content-MD5": block_md5}
                )
                blocks.append(BlobBlock(block_id))
                size += len(chunk)
            digest = sha.hexdigest()
            if expected is not None and expected != digest:
                raise OutputError(
                    f"{staged} changed after it was written (its SHA-256 differs); "
                    f"{name} is not published, the contact is fetched again by the next run"
                )
            condition: dict[str, Any] = {} if replace else {"if_none_match": "*"}
            result = await blob.commit_block_list(
                blocks,
                content_settings=ContentSettings(
                    content_type=kind[0], content_md5=bytearray(md5.digest())
                ),
                metadata={"sha256": digest, "sar_bulk_schema": kind[1]},
                **condition,
            )
            what = f"checking {name} after upload"
            properties = await blob.get_blob_properties()
        except (ResourceExistsError, ResourceModifiedError) as exc:
            if exc.status_code in (409, 412):
                raise OutputError(
                    f"{name} already exists in container {self.url.text} and is not "
                    "replaced without a check; rerun to resume (it is checked then)"
                ) from None
            raise self._failure(what, exc) from None
        except AzureError as exc:
            raise self._failure(what, exc) from None
        finally:
            await asyncio.to_thread(handle.close)
        etag = _etag(result["etag"])
        stored_md5 = properties.content_settings.content_md5
        problems = [
            text
            for bad, text in (
                (_etag(properties.etag) != etag, "it was replaced right after the commit"),
                (properties.size != size, f"its size is {properties.size}, not {size}"),
                (bytes(stored_md5 or b"") != md5.digest(), "its Content-MD5 is not ours"),
                (properties.metadata.get("sha256") != digest, "its sha256 metadata is not ours"),
            )
            if bad
        ]
        if problems:
            raise OutputRefused(
                f"{name} in container {self.url.text} is not what was sent: "
                f"{'; '.join(problems)}; rerun to resume"
            )
        return Published(name, digest, etag, size)

    async def lookup(self, name: str) -> Published | None:
        blob = self._client.get_blob_client(self._key(name))
        try:
            properties = await blob.get_blob_properties()
        except ResourceNotFoundError:
            return None
        except AzureError as exc:
            raise self._failure(f"reading the properties of {name}", exc) from None
        recorded = properties.metadata.get("sha256", "")
        return Published(
            name,
            recorded if _SHA256.match(recorded) else "",
            _etag(properties.etag),
            int(properties.size),
        )

    def open_for_verify(self, name: str) -> AbstractAsyncContextManager[Path]:
        return self._download(name)

    @asynccontextmanager
    async def _download(self, name: str) -> AsyncIterator[Path]:
        blob = self._client.get_blob_client(self._key(name))
        folder = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix="sar-bulk-verify-"))
        try:
            path = folder / name
            await self._fetch(blob, name, path)
            yield path
        finally:
            await asyncio.to_thread(shutil.rmtree, folder, True)

    async def _fetch(self, blob: Any, name: str, path: Path) -> None:
        """Download ``name`` into ``path`` (0600), checking it against its recorded digests."""
        sha, md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
        try:
            # The SDK pins the first answer's etag for the later ranges: a blob replaced while
            # it is read fails instead of mixing two versions.
            downloader = await blob.download_blob()
            properties = downloader.properties
            if (properties.size or 0) > MAX_DOWNLOAD_BYTES:
                raise OutputError(
                    f"{name} in container {self.url.text} has {properties.size} bytes, more than "
                    f"a dossier holds ({MAX_DOWNLOAD_BYTES}); not downloaded"
                )
            fd = await asyncio.to_thread(
                os.open, path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600
            )
            with os.fdopen(fd, "wb") as handle:
                async for chunk in downloader.chunks():
                    await asyncio.to_thread(_write_block, handle, chunk, sha, md5)
        except ResourceNotFoundError:
            raise OutputError(f"{name} does not exist in container {self.url.text}") from None
        except AzureError as exc:
            raise self._failure(f"downloading {name}", exc) from None
        except OSError as exc:  # the local copy: a full disk, a name too long for a file
            raise OutputError(
                f"downloading {name} from container {self.url.text} failed locally: "
                f"{exc.strerror or type(exc).__name__}"
            ) from None
        recorded = properties.metadata.get("sha256")
        stored_md5 = properties.content_settings.content_md5
        if recorded is None:
            raise OutputError(
                f"{name} in container {self.url.text} has no sha256 metadata: sar-bulk did "
                "not publish it, or someone replaced it"
            )
        if recorded != sha.hexdigest():
            raise OutputError(
                f"{name} in container {self.url.text} was changed after it was published: "
                "its content does not match its sha256 metadata"
            )
        if stored_md5 is not None and bytes(stored_md5) != md5.digest():
            raise OutputError(
                f"{name} in container {self.url.text} was changed after it was published: "
                "its content does not match its Content-MD5"
            )

    async def put_report(self, name: str, body: bytes) -> Published:
        key = self._key(name)
        folder = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix="sar-bulk-report-"))
        try:
            staged = folder / name
            await asyncio.to_thread(staged.write_bytes, body)
            async with self._uploads:
                kind = ("application/json", REPORT_SCHEMA)
                return await self._upload(staged, key, name, kind, None, True)
        finally:
            await asyncio.to_thread(shutil.rmtree, folder, True)

    async def remove(self, name: str) -> None:
        try:
            await self._client.delete_blob(self._key(name))
        except ResourceNotFoundError:
            return
        except AzureError as exc:
            raise self._failure(f"removing {name}", exc) from None

    async def list_dossiers(self) -> AsyncIterator[str]:
        prefix = self.url.prefix
        try:
            async for item in self._client.list_blobs(name_starts_with=prefix or None):
                rest = str(item.name)[len(prefix) :]
                if rest.endswith(_DOSSIER_ENDINGS) and "/" not in rest and not rest.startswith("."):
                    yield rest
        except AzureError as exc:
            raise self._failure("listing the dossiers", exc) from None

    async def close(self) -> None:
        await self._client.close()
        close = getattr(self._credential, "close", None)
        if close is not None:
            await close()


_DOSSIER_ENDINGS: Final = (".zip", ".zip.age")  # plain, or encrypted (--encrypt-to)
# The name ``prepare`` stages its write check under (never committed, never a dossier).
_WRITE_CHECK: Final = ".sar-bulk-write-check"


def _etag(value: object) -> str:
    """Etags without their quotes: HTTP headers quote them, container listings do not."""
    return str(value).strip('"')


def _write_block(handle: IO[bytes], chunk: bytes, sha: Any, md5: Any) -> None:
    sha.update(chunk)
    md5.update(chunk)
    handle.write(chunk)


def _scrub(text: str) -> str:
    """A SAS signature may sit in a URL inside a library's message: never show it."""
    return _SIG.sub(r"\1[redacted]", text)
