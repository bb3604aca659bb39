"""A container SAS, the credential an operator is most often handed, against Azurite.

A store rehearsal found two faults that no test had met because every blob test used the
account key: a container SAS with exactly the permissions the README asks for (``racwl``) was
refused at the start (exit 3), since reading a container's properties needs an account-level
credential; and a credential that may read but not write passed the start check, so a run
fetched every contact from the org only to fail each at its upload. A store that refuses
upload after upload (a SAS that expires at 3 a.m.) now stops the run like a silent one.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from azure.core.credentials import AzureNamedKeyCredential, AzureSasCredential
from azure.storage.blob import ContainerSasPermissions, generate_container_sas
from azure.storage.blob.aio import ContainerClient
from azurite import ACCOUNT, ACCOUNT_KEY, Azurite
from cli_support import run_args, run_cli, token_env
from support import contact_ids, unlimited, write_csv

from sar_bulk.errors import OutputError, OutputGone
from sar_bulk.output import ContainerUrl
from sar_bulk.output.blob import BlobTarget
from sar_bulk.simulator import Simulator

CONTAINER = "dossiers"
PREFIX = "nightly"


def _sas(permission: str) -> str:
    """A container SAS (a service SAS, not an account SAS) for ``CONTAINER``."""
    return generate_container_sas(
        ACCOUNT,
        CONTAINER,
        account_key=ACCOUNT_KEY,
        permission=ContainerSasPermissions.from_string(permission),
        expiry=datetime.now(UTC) + timedelta(hours=1),
    )


async def _create_container(azurite: Azurite) -> None:
    # A SAS is made for a container that exists: whoever hands it out created it.
    key = AzureNamedKeyCredential(ACCOUNT, ACCOUNT_KEY)
    async with ContainerClient(azurite.account_url, CONTAINER, credential=key) as container:
        await container.create_container()


def _args(org: str, contacts: Path, url: str, work: Path) -> list[str]:
    return run_args(org, contacts, url, "--work", str(work))


async def test_a_container_sas_with_racwl_publishes_and_resumes(
    azurite: Azurite, tmp_path: Path
) -> None:
    await _create_container(azurite)
    sas = _sas("racwl")
    ids = contact_ids(3, 61)
    csv = write_csv(tmp_path / "contacts.csv", ["ContactId", *ids])
    url = azurite.container_url(CONTAINER, PREFIX)
    env = token_env(AZURE_STORAGE_SAS_TOKEN=sas)
    async with Simulator(unlimited(seed=61)) as sim:
        first = await run_cli(_args(sim.base_url, csv, url, tmp_path / "work"), env=env)
        assert first.code == 0, first.explain()
        assert "3 dossiers written" in first.stdout
        second = await run_cli(_args(sim.base_url, csv, url, tmp_path / "work"), env=env)
        assert second.code == 0, second.explain()
        assert "3 already done" in second.stdout
    assert sas.split("sig=")[1].split("&")[0] not in first.stderr + second.stderr


async def test_a_read_only_sas_stops_the_run_before_the_org_is_asked(
    azurite: Azurite, tmp_path: Path
) -> None:
    await _create_container(azurite)
    csv = write_csv(tmp_path / "contacts.csv", ["ContactId", *contact_ids(3, 62)])
    url = azurite.container_url(CONTAINER, PREFIX)
    env = token_env(AZURE_STORAGE_SAS_TOKEN=_sas("rl"))
    async with Simulator(unlimited(seed=62)) as sim:
        result = await run_cli(_args(sim.base_url, csv, url, tmp_path / "work"), env=env)
        requests = sim.counters()["total"]["ok"]
    assert result.code == 3, result.explain()
    assert f"writing a test block in container {url} failed (HTTP 403" in result.stderr
    assert "permissions racwl" in result.stderr
    assert requests == 0, "the org was asked although no dossier could be published"


async def test_a_store_that_refuses_every_upload_stops_the_run(
    azurite: Azurite, tmp_path: Path
) -> None:
    await _create_container(azurite)
    url = ContainerUrl.parse(azurite.container_url(CONTAINER, PREFIX))
    # Read-only, as a SAS that expired mid-run or a role removed mid-run would leave it.
    target = BlobTarget(url, AzureSasCredential(_sas("rl")), retries=0, backoff=0.01)
    staged = tmp_path / "staged"
    staged.mkdir()
    try:
        for n in range(4):
            path = staged / f"{n}.zip"
            path.write_bytes(b"PK dossier %d" % n)
            with pytest.raises(OutputError, match=r"HTTP 403") as refused:
                await target.publish(path, path.name)
            assert not isinstance(refused.value, OutputGone)
        path = staged / "4.zip"
        path.write_bytes(b"PK dossier 4")
        with pytest.raises(OutputGone, match="5 dossiers in a row could not be published"):
            await target.publish(path, path.name)
    finally:
        await target.close()
