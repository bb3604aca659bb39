"""``sar-bulk verify CONTAINER-URL`` on encrypted dossiers: locked without a key, checked with one.

A run with ``--encrypt-to`` publishes ``<id>.zip.age`` blobs. Verifying the container without a
key must say they were not checked (and how to check them), as for a folder; with ``--identity``
each blob is downloaded, decrypted in a private folder and verified. Azurite, the simulator and
the real command.
"""

from __future__ import annotations

from pathlib import Path

import orjson
from azurite import Azurite
from cli_support import FAST, cli_env, run_cli, token_env
from pyrage import x25519
from support import contact_ids, unlimited, write_csv

from sar_bulk.simulator import Simulator

CONTAINER = "dossiers"
PREFIX = "sealed"


async def test_encrypted_blobs_are_locked_without_a_key_and_verified_with_one(
    azurite: Azurite, tmp_path: Path
) -> None:
    ids = contact_ids(2, 71)
    csv = write_csv(tmp_path / "contacts.csv", ["ContactId", *ids])
    url = azurite.container_url(CONTAINER, PREFIX)
    identity = x25519.Identity.generate()
    key = tmp_path / "key.txt"
    key.write_text(f"{identity}\n")
    key.chmod(0o600)
    other = tmp_path / "other.txt"
    other.write_text(f"{x25519.Identity.generate()}\n")
    async with Simulator(unlimited(seed=71)) as sim:
        run = [
            "run",
            *("--auth", "static-token", "--org", sim.base_url, "--contacts", str(csv)),
            *("--out", url, "--work", str(tmp_path / "work"), "--sources", "interactions"),
            *("--encrypt-to", str(identity.to_public()), "--no-progress", *FAST),
        ]
        done = await run_cli(run, env=token_env(**azurite.env()))
        assert done.code == 0, done.explain()
    env = cli_env(**azurite.env())

    locked = await run_cli(["verify", url], env=env)
    assert locked.code == 1, locked.explain()
    assert locked.stdout.count("LOCKED   ") == 2, locked.explain()
    assert "verified 2 dossier(s): 0 valid, 0 invalid, 2 encrypted and not checked" in (
        locked.stdout
    )

    checked = await run_cli(["verify", "--identity", str(key), url], env=env)
    assert checked.code == 0, checked.explain()
    assert "verified 2 dossier(s): 2 valid, 0 invalid" in checked.stdout
    for cid in ids:
        assert f"ok       {url}/{cid}.zip.age  contact {cid}" in checked.stdout

    wrong = await run_cli(["verify", "--json", "--identity", str(other), url], env=env)
    assert wrong.code == 1, wrong.explain()
    document = orjson.loads(wrong.stdout)
    assert document["invalid"] == 2
    assert all("not encrypted to any identity" in d["problems"][0] for d in document["dossiers"])
