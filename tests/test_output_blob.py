"""The blob output against a real Azurite on loopback: publish, lookup, verify, outages.

Every test starts its own emulator with its data in the test's tmp_path (tests/azurite.py).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path

import pytest
from azure.core.credentials import AzureNamedKeyCredential, AzureSasCredential
from azure.core.exceptions import ResourceNotFoundError
from azure.storage.blob.aio import BlobClient, ContainerClient
from azurite import ACCOUNT, ACCOUNT_KEY, Azurite
from hypothesis import given
from hypothesis import strategies as st

from sar_bulk.config import RUN_OPTIONS, RunConfig, resolve
from sar_bulk.dataverse.auth import AuthKind
from sar_bulk.dossier.format import SCHEMA as DOSSIER_SCHEMA
from sar_bulk.errors import ConfigError, OutputError, OutputUnreachable
from sar_bulk.output import ContainerUrl, LocalTarget, OutputTarget, Published, open_target
from sar_bulk.output.blob import BlobTarget, storage_credential, storage_secrets

NAME = "0b5c7f4e-9a7d-4c35-8a0f-6c1c9b3a5e11.zip"


def _target(
    azurite: Azurite, prefix: str = "run-1", *, chunk_size: int = 4 << 20, timeout: float = 5.0
) -> BlobTarget:
    url = ContainerUrl.parse(azurite.container_url("dossiers", prefix))
    credential = storage_credential(url, AuthKind.DEFAULT, azurite.env())
    return BlobTarget(
        url, credential, chunk_size=chunk_size, retries=1, backoff=0.05, timeout=timeout
    )


def _container(azurite: Azurite) -> ContainerClient:
    return ContainerClient(
        azurite.account_url, "dossiers", credential=AzureNamedKeyCredential(ACCOUNT, ACCOUNT_KEY)
    )


async def _wait_for_staged_blocks(blob: BlobClient, upload: asyncio.Task[Published]) -> int:
    """How many blocks ``upload`` has staged, once it has staged some (before its commit)."""
    while not upload.done():
        try:
            _, uncommitted = await blob.get_block_list("uncommitted")
        except ResourceNotFoundError:  # no block staged yet
            continue
        if uncommitted:
            return len(uncommitted)
    return 0


def _staged(folder: Path, size: int, seed: int = 1) -> tuple[Path, bytes]:
    folder.mkdir(parents=True, exist_ok=True)
    body = hashlib.shake_256(seed.to_bytes(4, "big")).digest(size)
    path = folder / f"staged-{seed}.zip"
    path.write_bytes(body)
    return path, body


async def test_publish_lookup_verify_round_trip(azurite: Azurite, tmp_path: Path) -> None:
    target = _target(azurite, chunk_size=64 << 10)
    assert isinstance(target, OutputTarget)
    try:
        await target.prepare()
        staged, body = _staged(tmp_path / "stage", 200_000)
        published = await target.publish(staged, NAME)

        assert published == Published(
            NAME, hashlib.sha256(body).hexdigest(), published.etag, 200_000
        )
        assert published.etag
        assert not staged.exists(), "the staged file is removed once published"
        assert await target.lookup(NAME) == published
        assert await target.lookup("9" + NAME[1:]) is None
        async with target.open_for_verify(NAME) as path:
            assert path.read_bytes() == body
            assert os.stat(path).st_mode & 0o777 == 0o600
            folder = path.parent
        assert not folder.exists(), "the downloaded copy is removed afterwards"
        assert [name async for name in target.list_dossiers()] == [NAME]

        async with _container(azurite) as container:
            properties = await container.get_blob_client(f"run-1/{NAME}").get_blob_properties()
        assert properties.metadata == {
            "sha256": published.sha256,
            "sar_bulk_schema": DOSSIER_SCHEMA,
        }
        stored_md5 = properties.content_settings.content_md5
        assert stored_md5 is not None
        assert bytes(stored_md5) == hashlib.md5(body, usedforsecurity=False).digest()
        assert properties.content_settings.content_type == "application/zip"

        report = await target.put_report("run-report.json", b'{"ok": true}\n')
        again = await target.put_report("run-report.json", b'{"ok": false}\n')
        assert report.etag != again.etag
        assert [name async for name in target.list_dossiers()] == [NAME], "reports are no dossier"
    finally:
        await target.close()


async def test_an_existing_name_is_replaced_only_when_asked(
    azurite: Azurite, tmp_path: Path
) -> None:
    target = _target(azurite)
    try:
        await target.prepare()
        first = await target.publish(_staged(tmp_path, 1000, seed=1)[0], NAME)
        second_file, second_body = _staged(tmp_path, 1000, seed=2)
        with pytest.raises(OutputError, match="already exists in container http://127"):
            await target.publish(second_file, NAME)
        assert second_file.exists(), "a refused file stays for the caller"
        assert await target.lookup(NAME) == first
        replaced = await target.publish(second_file, NAME, replace=True)
        assert replaced.etag != first.etag
        assert replaced.sha256 == hashlib.sha256(second_body).hexdigest()
    finally:
        await target.close()


async def test_remove_deletes_a_dossier_and_an_absent_one_is_no_error(
    azurite: Azurite, tmp_path: Path
) -> None:
    """The other form of a dossier (plain vs sealed) is removed when --replace replaces it."""
    target = _target(azurite)
    try:
        await target.prepare()
        await target.publish(_staged(tmp_path, 1000, seed=3)[0], NAME)
        await target.remove(NAME)
        assert await target.lookup(NAME) is None
        assert [name async for name in target.list_dossiers()] == []
        await target.remove(NAME)  # gone already: nothing to do
    finally:
        await target.close()


async def test_local_remove_deletes_a_dossier_and_an_absent_one_is_no_error(
    tmp_path: Path,
) -> None:
    target = LocalTarget(tmp_path / "out")
    await target.prepare()
    await target.publish(_staged(tmp_path, 1000, seed=4)[0], NAME)
    await target.remove(NAME)
    assert await target.lookup(NAME) is None
    await target.remove(NAME)
    with pytest.raises(OutputError, match="not a plain file name"):
        await target.remove("../x.zip")


async def test_a_staged_file_that_changed_is_not_published(
    azurite: Azurite, tmp_path: Path
) -> None:
    target = _target(azurite)
    try:
        await target.prepare()
        staged, _ = _staged(tmp_path, 5000)
        with pytest.raises(OutputError, match="changed after it was written"):
            await target.publish(staged, NAME, sha256="0" * 64)
        assert await target.lookup(NAME) is None
    finally:
        await target.close()


async def test_uncommitted_blocks_are_invisible_under_the_final_name(
    azurite: Azurite, tmp_path: Path
) -> None:
    """An upload killed between its blocks and its commit leaves no blob, and later uploads of
    the same name never pick its blocks up."""
    target = _target(azurite, chunk_size=16 << 10)
    try:
        await target.prepare()
        staged, body = _staged(tmp_path, 2 << 20)
        upload = asyncio.create_task(target.publish(staged, NAME))
        async with _container(azurite) as container:
            blob = container.get_blob_client(f"run-1/{NAME}")
            uncommitted = await _wait_for_staged_blocks(blob, upload)
            upload.cancel()
            with pytest.raises(asyncio.CancelledError):
                await upload
            assert uncommitted, "the upload was stopped between staging and commit"
            assert await target.lookup(NAME) is None
            assert [b.name async for b in container.list_blobs()] == []
            assert staged.exists()

            published = await target.publish(staged, NAME)
            committed, _ = await blob.get_block_list("committed")
        assert published.size == len(body)
        assert len(committed) == (2 << 20) // (16 << 10)
        async with target.open_for_verify(NAME) as path:
            assert path.read_bytes() == body
    finally:
        await target.close()


async def test_edited_blobs_and_wrong_metadata_are_detected(
    azurite: Azurite, tmp_path: Path
) -> None:
    target = _target(azurite)
    try:
        await target.prepare()
        staged, body = _staged(tmp_path, 3000)
        published = await target.publish(staged, NAME)
        async with _container(azurite) as container:
            blob = container.get_blob_client(f"run-1/{NAME}")

            await blob.set_blob_metadata({"sha256": "ab" * 32, "sar_bulk_schema": "x"})
            seen = await target.lookup(NAME)
            assert seen is not None
            assert seen.sha256 == "ab" * 32
            assert seen.etag != published.etag
            with pytest.raises(OutputError, match="does not match its sha256 metadata"):
                async with target.open_for_verify(NAME):
                    pass

            # Edited content under the original metadata: only the bytes tell.
            await blob.upload_blob(
                body[:-1] + b"!", overwrite=True, metadata={"sha256": published.sha256}
            )
            seen = await target.lookup(NAME)
            assert seen is not None
            assert seen.sha256 == published.sha256
            assert seen.etag != published.etag
            with pytest.raises(OutputError, match="changed after it was published"):
                async with target.open_for_verify(NAME):
                    pass

            await blob.upload_blob(body, overwrite=True)
            seen = await target.lookup(NAME)
            assert seen is not None
            assert seen.sha256 == ""
            with pytest.raises(OutputError, match="no sha256 metadata"):
                async with target.open_for_verify(NAME):
                    pass
    finally:
        await target.close()


async def test_azurite_stopped_mid_upload(azurite: Azurite, tmp_path: Path) -> None:
    target = _target(azurite, chunk_size=16 << 10, timeout=3.0)
    try:
        await target.prepare()
        staged, body = _staged(tmp_path, 4 << 20)
        upload = asyncio.create_task(target.publish(staged, NAME))
        async with _container(azurite) as container:
            blob = container.get_blob_client(f"run-1/{NAME}")
            assert await _wait_for_staged_blocks(blob, upload)
        await azurite.stop()
        with pytest.raises(OutputUnreachable) as caught:
            await upload
        message = str(caught.value)
        assert f"container {azurite.container_url('dossiers', 'run-1')}" in message
        assert "no answer from the blob store" in message
        assert "Connect" in message or "connect" in message, message
        assert ACCOUNT_KEY not in message
        assert staged.exists()

        await azurite.start()
        assert await target.lookup(NAME) is None, "nothing partial under the final name"
        published = await target.publish(staged, NAME)
        assert published.sha256 == hashlib.sha256(body).hexdigest()
    finally:
        await target.close()


async def test_an_unreachable_store_fails_prepare_clearly(tmp_path: Path) -> None:
    emulator = Azurite(tmp_path / "azurite")  # never started: nothing listens on its port
    target = _target(emulator)
    try:
        with pytest.raises(OutputUnreachable, match="opening the container in container http"):
            await target.prepare()
    finally:
        await target.close()


async def test_a_wrong_key_is_refused_with_advice(azurite: Azurite) -> None:
    url = ContainerUrl.parse(azurite.container_url("dossiers"))
    wrong = AzureNamedKeyCredential(ACCOUNT, "d3Jvbmcga2V5IGZvciB0aGUgdGVzdA==")
    target = BlobTarget(url, wrong, retries=0)
    try:
        with pytest.raises(OutputError, match=r"HTTP 403.*refused the credential") as refused:
            await target.prepare()
    finally:
        await target.close()
    # The service's code as it spells it, not the SDK enum's name.
    assert "HTTP 403, AuthorizationFailure)" in str(refused.value)
    assert "StorageErrorCode" not in str(refused.value)


async def test_the_local_target_keeps_the_folder_semantics(tmp_path: Path) -> None:
    out = tmp_path / "out"
    target = open_target(str(out), AuthKind.DEFAULT, {})
    assert isinstance(target, LocalTarget)
    await target.prepare()
    assert out.stat().st_mode & 0o777 == 0o700
    staged, body = _staged(out, 1000)
    published = await target.publish(staged, NAME)
    assert (out / NAME).read_bytes() == body
    assert not staged.exists()
    assert await target.lookup(NAME) == published
    assert [n async for n in target.list_dossiers()] == [NAME]
    with pytest.raises(OutputError, match="already exists"):
        await target.publish(_staged(out, 10, seed=3)[0], NAME)
    await target.put_report("run-report.json", b"{}\n")
    assert (out / "run-report.json").stat().st_mode & 0o777 == 0o600
    async with target.open_for_verify(NAME) as path:
        assert path == out / NAME


_SERVICE = "https://acme.blob.core.windows.net"
_LOCAL = "http://127.0.0.1:10000/devstoreaccount1"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"{_SERVICE}/sar", ContainerUrl(_SERVICE, "acme", "sar", "")),
        (f"{_SERVICE}/sar/2026/nov/", ContainerUrl(_SERVICE, "acme", "sar", "2026/nov/")),
        (f"{_LOCAL}/c-1/p", ContainerUrl(_LOCAL, "devstoreaccount1", "c-1", "p/")),
        (
            "http://localhost:9/devstoreaccount1/abc",
            ContainerUrl("http://localhost:9/devstoreaccount1", "devstoreaccount1", "abc", ""),
        ),
        (
            "http://[::1]:9/devstoreaccount1/abc",
            ContainerUrl("http://[::1]:9/devstoreaccount1", "devstoreaccount1", "abc", ""),
        ),
    ],
)
def test_container_urls_parse(text: str, expected: ContainerUrl) -> None:
    assert ContainerUrl.parse(text) == expected


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("http://acme.blob.core.windows.net/sar", "plain http is only for a local emulator"),
        ("https://acme.blob.core.windows.net/sar?sv=1&sig=abc", "AZURE_STORAGE_SAS_TOKEN"),
        ("https://acme.blob.core.windows.net/", "name the container"),
        ("https://acme.blob.core.windows.net/Sar", "not a container name"),
        ("https://acme.blob.core.windows.net/a--b", "not a container name"),
        ("https://acme.blob.core.windows.net/sar/../x", "cannot be part of a blob name"),
        ("https://u:p@acme.blob.core.windows.net/sar", "no user or password"),
        ("http://127.0.0.1:10000/devstoreaccount1", "path style"),
        ("ftp://acme/sar", "starts with https://"),
    ],
)
def test_bad_container_urls_are_refused(text: str, why: str) -> None:
    with pytest.raises(ConfigError, match=why.replace("?", r"\?")):
        ContainerUrl.parse(text)


_NAMES = st.from_regex(r"[a-z0-9]{1,10}(-[a-z0-9]{1,10}){0,2}", fullmatch=True).filter(
    lambda s: 3 <= len(s) <= 63
)
_SEGMENTS = st.lists(st.from_regex(r"[A-Za-z0-9_.=-]{1,12}", fullmatch=True), max_size=3).filter(
    lambda parts: all(p not in (".", "..") for p in parts)
)


@given(account=_NAMES, container=_NAMES, segments=_SEGMENTS)
def test_container_url_text_round_trips(account: str, container: str, segments: list[str]) -> None:
    text = "/".join([f"https://{account}.blob.core.windows.net", container, *segments])
    url = ContainerUrl.parse(text)
    assert (url.account, url.container, url.prefix) == (
        account,
        container,
        "".join(f"{s}/" for s in segments),
    )
    assert ContainerUrl.parse(url.text) == url


def test_credentials_come_from_the_environment() -> None:
    url = ContainerUrl.parse("https://acme.blob.core.windows.net/sar")
    key = "c2VjcmV0LWtleS1vZi1hY21lLWZvci10ZXN0cw=="
    connection = f"DefaultEndpointsProtocol=https;AccountName=acme;AccountKey={key}"
    credential = storage_credential(
        url, AuthKind.STATIC_TOKEN, {"AZURE_STORAGE_CONNECTION_STRING": connection}
    )
    assert isinstance(credential, AzureNamedKeyCredential)
    assert credential.named_key == ("acme", key)
    assert key in storage_secrets({"AZURE_STORAGE_CONNECTION_STRING": connection})

    sas = "sv=2024-01-01&sp=racwl&sig=c2lnbmF0dXJlLWZvci10ZXN0cw%3D"
    credential = storage_credential(url, AuthKind.DEFAULT, {"AZURE_STORAGE_SAS_TOKEN": "?" + sas})
    assert isinstance(credential, AzureSasCredential)
    assert credential.signature == sas
    assert sas in storage_secrets({"AZURE_STORAGE_SAS_TOKEN": "?" + sas})

    other = connection.replace("AccountName=acme", "AccountName=other")
    with pytest.raises(ConfigError, match="for account 'other', but --out names account 'acme'"):
        storage_credential(url, AuthKind.DEFAULT, {"AZURE_STORAGE_CONNECTION_STRING": other})
    with pytest.raises(ConfigError, match="holds a token for the org, not for storage"):
        storage_credential(url, AuthKind.STATIC_TOKEN, {"SAR_BULK_TOKEN": "x" * 20})
    local = ContainerUrl.parse("http://127.0.0.1:1/devstoreaccount1/sar")
    with pytest.raises(ConfigError, match="only sent over https"):
        storage_credential(local, AuthKind.DEFAULT, {})


def _settings(**flags: str) -> dict[str, object]:
    base = {"org": "https://contoso.crm4.dynamics.com", "contacts": "c.csv"}
    return resolve(RUN_OPTIONS, flags=base | flags, environ={}, config_file=None)


def test_a_container_out_gets_a_local_work_folder() -> None:
    config = RunConfig.from_settings(
        _settings(out="https://acme.blob.core.windows.net/sar/nightly/x"), {}
    )
    assert config.blob == ContainerUrl.parse("https://acme.blob.core.windows.net/sar/nightly/x")
    assert config.out == Path("sar-bulk-work/acme/sar/nightly/x")
    assert config.state == config.out / ".sar-bulk" / "state.sqlite"
    assert config.public_parameters()["out"] == "https://acme.blob.core.windows.net/sar/nightly/x"
    assert config.public_parameters()["work"] == str(
        Path.cwd() / "sar-bulk-work/acme/sar/nightly/x"
    )

    chosen = RunConfig.from_settings(
        _settings(out="https://acme.blob.core.windows.net/sar", work="/var/sar"), {}
    )
    assert (chosen.out, chosen.state) == (Path("/var/sar"), Path("/var/sar/.sar-bulk/state.sqlite"))

    folder = RunConfig.from_settings(_settings(out="dossiers"), {})
    assert (folder.blob, folder.out) == (None, Path("dossiers"))
    assert folder.public_parameters()["work"] is None
    # A folder --out with --work: the work folder stages, the output folder only receives.
    staged = RunConfig.from_settings(_settings(out="dossiers", work="w"), {})
    assert (staged.out, staged.publish_folder, staged.blob) == (Path("w"), Path("dossiers"), None)
    assert staged.state == Path("w/.sar-bulk/state.sqlite")
    assert staged.public_parameters()["out"] == "dossiers"
    assert staged.public_parameters()["work"] == str(Path.cwd() / "w")  # absolute
    for out, work in (("d", "d"), ("d", "d/w"), ("d/w", "d"), ("d", "./d/")):
        with pytest.raises(ConfigError, match="must be two separate folders"):
            RunConfig.from_settings(_settings(out=out, work=work), {})
    with pytest.raises(ConfigError, match=r"^--out: 'http://example.com/c' is not valid: plain"):
        RunConfig.from_settings(_settings(out="http://example.com/c"), {})
