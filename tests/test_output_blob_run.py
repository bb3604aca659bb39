"""``sar-bulk run --out <container URL>`` as a real process against the simulator and Azurite.

A whole run publishes exact dossiers and the report; a resume checks blob properties and asks
the org for nothing; an edited blob is fetched again; Azurite stopped mid-run fails the
contacts whose uploads met it with a clear reason, then stops the run, and a resume after it is
back completes; ``verify`` reads the container.
"""

from __future__ import annotations

import asyncio
import signal
import sqlite3
from pathlib import Path

import orjson
from azure.core.credentials import AzureNamedKeyCredential
from azure.core.exceptions import ResourceNotFoundError
from azure.storage.blob.aio import ContainerClient
from azurite import ACCOUNT, ACCOUNT_KEY, Azurite
from cli_support import CliResult, cli_env, run_args, run_cli, start_cli, token_env
from support import assert_exact_dossier, contact_ids, unlimited, write_csv

from sar_bulk.dataverse.auth import AuthKind
from sar_bulk.output import ContainerUrl
from sar_bulk.output.blob import BlobTarget, storage_credential
from sar_bulk.simulator import Simulator, SimulatorConfig

CONTAINER = "dossiers"
PREFIX = "nightly/2026-11"


def _args(org: str, contacts: Path, url: str, work: Path, *extra: str) -> list[str]:
    # The interactions only: assert_exact_dossier compares them with the simulator's truth.
    return run_args(org, contacts, url, "--work", str(work), *extra)


def _container(azurite: Azurite) -> ContainerClient:
    return ContainerClient(
        azurite.account_url, CONTAINER, credential=AzureNamedKeyCredential(ACCOUNT, ACCOUNT_KEY)
    )


async def _blobs(azurite: Azurite) -> dict[str, tuple[str, str]]:
    """Every blob under the prefix: name -> (etag, sha256 metadata)."""
    async with _container(azurite) as container:
        return {
            blob.name.removeprefix(f"{PREFIX}/"): (str(blob.etag), blob.metadata.get("sha256", ""))
            async for blob in container.list_blobs(
                name_starts_with=f"{PREFIX}/", include=["metadata"]
            )
        }


async def _blobs_or_none(azurite: Azurite) -> dict[str, tuple[str, str]]:
    """Like ``_blobs``, empty until the run has created the container."""
    try:
        return await _blobs(azurite)
    except ResourceNotFoundError:
        return {}


async def _download(azurite: Azurite, name: str, target: Path) -> Path:
    body = await _download_bytes(azurite, name)
    await asyncio.to_thread(target.write_bytes, body)
    return target


def _contact_requests(sim: Simulator) -> dict[str, int]:
    """Requests answered per contact, less the pre-flight probe's (every run makes one)."""
    counts = sim.counters()["ok_requests_by_contact"]
    return {k: v for k, v in counts.items() if k != "00000000-0000-0000-0000-000000000000"}


def _state_rows(work: Path) -> dict[str, tuple[str, str | None, str | None]]:
    with sqlite3.connect(work / ".sar-bulk" / "state.sqlite") as db:
        rows = db.execute("SELECT contact_id, status, sha256, etag FROM contacts").fetchall()
    db.close()
    return {row[0]: (row[1], row[2], row[3]) for row in rows}


def _report(work: Path) -> dict[str, object]:
    document = orjson.loads((work / "run-report.json").read_bytes())
    assert isinstance(document, dict)
    return document


async def test_a_run_publishes_resumes_and_verifies_from_the_container(
    azurite: Azurite, tmp_path: Path
) -> None:
    ids = contact_ids(6, 21)
    csv = write_csv(tmp_path / "contacts.csv", ["ContactId", *ids])
    work = tmp_path / "work"
    url = azurite.container_url(CONTAINER, PREFIX)
    env = token_env(**azurite.env())
    async with Simulator(unlimited(seed=21)) as sim:
        first = await run_cli(_args(sim.base_url, csv, url, work), env=env)
        assert first.code == 0, first.explain()
        assert f"report: {url}/run-report.json" in first.stdout
        fetched = _contact_requests(sim)

        blobs = await _blobs(azurite)
        assert set(blobs) == {f"{cid}.zip" for cid in ids} | {"run-report.json"}
        for cid in ids:
            path = await _download(azurite, f"{cid}.zip", tmp_path / f"{cid}.zip")
            assert_exact_dossier(sim.dataset, path, cid)
        # The state records each blob's etag and SHA-256; nothing stays staged locally.
        rows = _state_rows(work)
        for cid in ids:
            etag, sha256 = blobs[f"{cid}.zip"]
            assert rows[cid] == ("done", sha256, etag)
        assert not list(work.glob("*.zip"))
        report = orjson.loads(await _download_bytes(azurite, "run-report.json"))
        assert report["totals"]["succeeded"] == 6
        assert report["parameters"]["out"] == url

        second = await run_cli(_args(sim.base_url, csv, url, work), env=env)
        assert second.code == 0, second.explain()
        assert "0 dossiers written" in second.stdout
        assert "6 already done" in second.stdout
        assert _contact_requests(sim) == fetched, "no contact fetched again"
        assert {k: v for k, v in (await _blobs(azurite)).items() if k != "run-report.json"} == {
            k: v for k, v in blobs.items() if k != "run-report.json"
        }

        # A run killed between a commit and its "done" row: with no state at all, every blob is
        # downloaded and verified once, then adopted; the org is asked for nothing.
        adopted = await run_cli(_args(sim.base_url, csv, url, tmp_path / "new-work"), env=env)
        assert adopted.code == 0, adopted.explain()
        assert "6 already done" in adopted.stdout
        assert _contact_requests(sim) == fetched
        rows = _state_rows(tmp_path / "new-work")
        assert all(rows[cid] == ("done", *reversed(blobs[f"{cid}.zip"])) for cid in ids)

        verified = await run_cli(["verify", url], env=cli_env(**azurite.env()))
        assert verified.code == 0, verified.explain()
        assert "verified 6 dossier(s): 6 valid, 0 invalid" in verified.stdout

        # Someone edits one blob: verify says so, and the next run fetches that contact again.
        edited = f"{ids[2]}.zip"
        async with _container(azurite) as container:
            blob = container.get_blob_client(f"{PREFIX}/{edited}")
            body = await (await blob.download_blob()).readall()
            await blob.upload_blob(
                body + b"\0", overwrite=True, metadata={"sha256": blobs[edited][1]}
            )
        verified = await run_cli(["verify", "--json", url], env=cli_env(**azurite.env()))
        assert verified.code == 1, verified.explain()
        document = orjson.loads(verified.stdout)
        assert document["invalid"] == 1
        bad = next(d for d in document["dossiers"] if not d["ok"])
        assert bad["path"] == f"{url}/{edited}"
        assert "changed after it was published" in bad["problems"][0]

        third = await run_cli(_args(sim.base_url, csv, url, work), env=env)
        assert third.code == 0, third.explain()
        assert "1 dossiers written" in third.stdout
        assert "5 already done" in third.stdout
        path = await _download(azurite, edited, tmp_path / "again.zip")
        assert_exact_dossier(sim.dataset, path, ids[2])


async def _download_bytes(azurite: Azurite, name: str) -> bytes:
    async with _container(azurite) as container:
        downloader = await container.get_blob_client(f"{PREFIX}/{name}").download_blob()
        return await downloader.readall()


async def test_azurite_stopped_mid_run_stops_the_run_and_a_resume_completes(
    azurite: Azurite, tmp_path: Path
) -> None:
    ids = contact_ids(40, 22)
    csv = write_csv(tmp_path / "contacts.csv", ["ContactId", *ids])
    work = tmp_path / "work"
    url = azurite.container_url(CONTAINER, PREFIX)
    env = token_env(**azurite.env())
    config = SimulatorConfig(seed=22, request_limit=10**9, latency=0.02)
    async with Simulator(config) as sim:
        log = tmp_path / "run.log"
        args = _args(sim.base_url, csv, url, work, "--window", "2")
        process = await start_cli(args, env=env, log=log)
        try:
            while len(await _blobs_or_none(azurite)) < 3:
                assert process.returncode is None, log.read_text()
                await asyncio.sleep(0.05)
            await azurite.stop()
            code = await asyncio.wait_for(process.wait(), 120)
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
        output = log.read_text()
        # Five uploads in a row without an answer stop the run (exit 3) instead of fetching
        # every remaining contact from the org only to fail it at its upload.
        assert code == 3, output
        stopped = f"run stopped: 5 dossiers in a row could not be published to container {url}"
        assert stopped in output, output
        report = _report(work)
        assert str(report["stopped_by"]).startswith(stopped.removeprefix("run stopped: "))
        failed = report["failed_contacts"]
        assert isinstance(failed, list)
        assert 1 <= len(failed) <= 4, output  # the silent uploads before the fifth
        reason = failed[0]["reasons"]["*"]
        assert reason.startswith("publishing the dossier failed:"), reason
        assert f"in container {url}" in reason
        assert "no answer from the blob store" in reason
        assert "the report stays only at" in output
        assert ACCOUNT_KEY not in output

        await azurite.start()
        # Nothing partial under a final name: every blob there is a complete, recorded upload.
        published = await _blobs(azurite)
        assert 3 <= len(published) < len(ids)
        target = _target(azurite)
        try:
            for name in published:
                async with target.open_for_verify(name):
                    pass  # raises if the content is not what was committed with its hash
        finally:
            await target.close()

        resumed: CliResult = await run_cli(args, env=env)
        assert resumed.code == 0, resumed.explain()
        assert f"{len(published)} already done" in resumed.stdout
        blobs = await _blobs(azurite)
        assert set(blobs) == {f"{cid}.zip" for cid in ids} | {"run-report.json"}
        for cid in ids:
            path = await _download(azurite, f"{cid}.zip", tmp_path / f"{cid}.zip")
            assert_exact_dossier(sim.dataset, path, cid)


async def test_an_unreachable_container_stops_before_the_org_is_asked(tmp_path: Path) -> None:
    dead = Azurite(tmp_path / "azurite")  # never started: nothing listens on its port
    csv = write_csv(tmp_path / "contacts.csv", ["ContactId", *contact_ids(2, 23)])
    url = dead.container_url(CONTAINER, PREFIX)
    key = "bm90LXRoZS1kZXYta2V5LWJ1dC1hLXJlYWwtc2VjcmV0"
    env = token_env(
        AZURE_STORAGE_CONNECTION_STRING=dead.connection_string.replace(ACCOUNT_KEY, key)
    )
    async with Simulator(unlimited(seed=23)) as sim:
        result = await run_cli(
            _args(sim.base_url, csv, url, tmp_path / "work", "--log-level", "debug"), env=env
        )
        requests = sim.counters()["total"]["ok"]
    assert result.code == 3, result.explain()
    assert f"opening the container in container {url} failed: no answer" in result.stderr
    assert requests == 0
    assert key not in result.stdout + result.stderr


async def test_a_static_token_alone_cannot_write_to_a_container(tmp_path: Path) -> None:
    csv = write_csv(tmp_path / "contacts.csv", ["ContactId", *contact_ids(1, 24)])
    url = "https://acme.blob.core.windows.net/dossiers"
    result = await run_cli(
        _args("https://x.crm.dynamics.com", csv, url, tmp_path / "work"), env=token_env()
    )
    assert result.code == 2, result.explain()
    assert "holds a token for the org, not for storage" in result.stderr


def _target(azurite: Azurite) -> BlobTarget:
    url = ContainerUrl.parse(azurite.container_url(CONTAINER, PREFIX))
    credential = storage_credential(url, AuthKind.DEFAULT, azurite.env())
    return BlobTarget(url, credential, retries=1, backoff=0.05)


async def test_encrypted_dossiers_are_published_and_resumed(
    azurite: Azurite, tmp_path: Path
) -> None:
    ids = contact_ids(2, 25)
    csv = write_csv(tmp_path / "contacts.csv", ["ContactId", *ids])
    url = azurite.container_url(CONTAINER, PREFIX)
    passphrase = "correct horse battery staple, blob edition"
    env = token_env(DOSSIER_PASS=passphrase, **azurite.env())
    args = _args("", csv, url, tmp_path / "work", "--encrypt-passphrase-env", "DOSSIER_PASS")
    async with Simulator(unlimited(seed=25)) as sim:
        args[args.index("--org") + 1] = sim.base_url
        first = await run_cli(args, env=env)
        assert first.code == 0, first.explain()
        blobs = await _blobs(azurite)
        assert set(blobs) == {f"{cid}.zip.age" for cid in ids} | {"run-report.json"}
        fetched = _contact_requests(sim)
        second = await run_cli(args, env=env)
        assert second.code == 0, second.explain()
        assert "2 already done" in second.stdout
        assert _contact_requests(sim) == fetched
    for cid in ids:
        body = await _download_bytes(azurite, f"{cid}.zip.age")
        assert passphrase.encode() not in body
        assert not body.startswith(b"PK"), "an encrypted dossier, not a plain zip"


async def test_a_new_shard_count_adopts_the_sealed_blobs_the_old_shards_recorded(
    azurite: Azurite, tmp_path: Path
) -> None:
    """Found in a store rehearsal: 2 shards one night and 3 the next, encrypting, sharing one
    work folder (as the Kubernetes Job does). A contact that moved shard has a sealed blob this
    shard's state does not know and cannot check: every one was fetched and uploaded again.
    The other shards' records of exactly that blob (sha256 and etag) now let it be adopted."""
    ids = contact_ids(9, 26)
    csv = write_csv(tmp_path / "contacts.csv", ["ContactId", *ids])
    url = azurite.container_url(CONTAINER, PREFIX)
    env = token_env(DOSSIER_PASS="a passphrase for the shard test", **azurite.env())
    work = tmp_path / "work"

    async def night(org: str, count: int) -> None:
        for index in range(count):
            shard = ("--shard", f"{index}/{count}")
            args = _args(org, csv, url, work, "--encrypt-passphrase-env", "DOSSIER_PASS", *shard)
            ran = await run_cli(args, env=env)
            assert ran.code == 0, ran.explain()

    async with Simulator(unlimited(seed=26)) as sim:
        await night(sim.base_url, 2)
        sealed = {k: v for k, v in (await _blobs(azurite)).items() if k.endswith(".zip.age")}
        fetched = _contact_requests(sim)
        await night(sim.base_url, 3)
        assert _contact_requests(sim) == fetched
    assert len(sealed) == len(ids)
    now = await _blobs(azurite)
    assert {k: now[k] for k in sealed} == sealed  # the same etags: nothing uploaded again
    reports = [work / f"run-report.shard-{i}-of-3.json" for i in range(3)]
    totals = [orjson.loads(report.read_bytes())["totals"] for report in reports]
    assert sum(t["skipped_already_done"] for t in totals) == len(ids)


async def test_sigterm_while_the_blob_store_stalls_an_upload_exits_at_once(
    azurite: Azurite, tmp_path: Path
) -> None:
    # A rehearsal stalled the store (a proxy holding every byte) and sent SIGTERM: the run took
    # 7.8 minutes to exit, each stalled call waiting out its 60 s read timeout and retries,
    # where Kubernetes kills the pod 60 s after SIGTERM. Uploading is cancelled; a resume
    # publishes what it left, and nothing half-written is under a final name.
    ids = contact_ids(12, 26)
    csv = write_csv(tmp_path / "contacts.csv", ["ContactId", *ids])
    work = tmp_path / "work"
    url = azurite.container_url(CONTAINER, PREFIX)
    env = token_env(**azurite.env())
    config = SimulatorConfig(seed=26, request_limit=10**9, latency=0.02)
    async with Simulator(config) as sim:
        log = tmp_path / "run.log"
        args = _args(sim.base_url, csv, url, work, "--window", "2")
        process = await start_cli(args, env=env, log=log)
        try:
            while len(await _blobs_or_none(azurite)) < 2:
                assert process.returncode is None, log.read_text()
                await asyncio.sleep(0.05)
            azurite.pause()  # connections are accepted, nothing is answered
            await asyncio.sleep(1.5)  # the next contacts reach their upload and stall there
            process.send_signal(signal.SIGTERM)
            loop = asyncio.get_running_loop()
            signalled = loop.time()
            code = await asyncio.wait_for(process.wait(), 120)
            took = loop.time() - signalled
        finally:
            azurite.resume()
            if process.returncode is None:
                process.kill()
                await process.wait()
        output = log.read_text()
        assert code == 143, output
        assert took < 10, f"{took:.1f} s from SIGTERM to exit\n{output}"
        # The store was still frozen at the end: the report's copy waited 5 s, no longer.
        assert f"{url} did not take it within 5 s of the stop" in output, output
        assert "interrupted (SIGTERM)" in output

        published = await _blobs(azurite)
        target = _target(azurite)
        try:
            for name in published:
                if name.endswith(".zip"):
                    async with target.open_for_verify(name):
                        pass  # raises if the content is not what was committed with its hash
        finally:
            await target.close()
        resumed = await run_cli(args, env=env)
        assert resumed.code == 0, resumed.explain()
        for cid in ids:
            path = await _download(azurite, f"{cid}.zip", tmp_path / f"{cid}.zip")
            assert_exact_dossier(sim.dataset, path, cid)
