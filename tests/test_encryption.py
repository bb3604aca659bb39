"""age encryption of finished dossiers: recipients, passphrase, identity files, round trips."""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import subprocess
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import orjson
from cli_support import cli_env, run_args, run_cli, token_env
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from hypothesis import given
from hypothesis import strategies as st
from pyrage import ssh, x25519
from support import assert_exact_dossier, contact_ids, read_report, write_csv

from sar_bulk.dossier.encryption import (
    Decryptor,
    Encryptor,
    is_encrypted_name,
    parse_identities,
    parse_recipient,
)
from sar_bulk.dossier.writer import DossierRequest, DossierWriter
from sar_bulk.errors import ConfigError
from sar_bulk.run.run_lock import FOLDER_LOCK as LOCK
from sar_bulk.run.runner import ExitCode
from sar_bulk.simulator import Simulator, SimulatorConfig
from sar_bulk.sources.interaction_types import ALL_TYPES

PASSPHRASE = "correct horse battery staple"


def _plain(tmp_path: Path, size: int = 300_000) -> Path:
    path = tmp_path / "plain.zip"
    # Not compressible and longer than several 64 KiB age chunks.
    path.write_bytes(os.urandom(size))
    return path


def _identity_file(tmp_path: Path, *identities: x25519.Identity, name: str = "key.txt") -> Path:
    lines = ["# created: by the test", "# public key: ..."]
    lines += [str(identity) for identity in identities]
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n\n")
    return path


def _decrypt(decryptor: Decryptor, source: Path, tmp_path: Path) -> bytes:
    with decryptor.decrypted(source, tmp_path) as inner:
        return inner.read_bytes()


def _ssh_ed25519() -> tuple[str, bytes]:
    key = ed25519.Ed25519PrivateKey.generate()
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    return public.decode() + " someone@example", private


def _ssh_rsa() -> tuple[str, bytes]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    return public.decode(), private


def test_round_trip_to_one_x25519_recipient(tmp_path: Path) -> None:
    identity = x25519.Identity.generate()
    plain = _plain(tmp_path)
    target = tmp_path / "x.zip.age"
    encryptor = Encryptor.to_recipients([str(identity.to_public())])
    outer_sha = encryptor.encrypt_file(plain, target)

    data = target.read_bytes()
    assert data.startswith(b"age-encryption.org/v1\n")
    assert outer_sha == hashlib.sha256(data).hexdigest()
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert plain.read_bytes() not in data
    decryptor = Decryptor.from_identity_file(_identity_file(tmp_path, identity))
    assert _decrypt(decryptor, target, tmp_path) == plain.read_bytes()
    # The private plaintext copy is gone once the block ends.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["key.txt", "plain.zip", "x.zip.age"]


def test_every_recipient_can_decrypt_alone(tmp_path: Path) -> None:
    alice, bob = x25519.Identity.generate(), x25519.Identity.generate()
    ssh_public, ssh_private = _ssh_ed25519()
    rsa_public, rsa_private = _ssh_rsa()
    plain = _plain(tmp_path)
    target = tmp_path / "x.zip.age"
    recipients = [str(alice.to_public()), str(bob.to_public()), ssh_public, rsa_public]
    Encryptor.to_recipients(recipients).encrypt_file(plain, target)

    for number, identity in enumerate((alice, bob)):
        key = _identity_file(tmp_path, identity, name=f"key{number}.txt")
        assert _decrypt(Decryptor.from_identity_file(key), target, tmp_path) == plain.read_bytes()
    for number, private in enumerate((ssh_private, rsa_private)):
        key = tmp_path / f"ssh{number}"
        key.write_bytes(private)
        assert _decrypt(Decryptor.from_identity_file(key), target, tmp_path) == plain.read_bytes()


def test_identity_file_with_several_keys_finds_the_right_one(tmp_path: Path) -> None:
    wanted, other = x25519.Identity.generate(), x25519.Identity.generate()
    plain = _plain(tmp_path, 1000)
    target = tmp_path / "x.zip.age"
    Encryptor.to_recipients([str(wanted.to_public())]).encrypt_file(plain, target)
    key = _identity_file(tmp_path, other, wanted)
    assert _decrypt(Decryptor.from_identity_file(key), target, tmp_path) == plain.read_bytes()


def test_passphrase_round_trip_in_a_child_process(tmp_path: Path) -> None:
    plain = _plain(tmp_path, 100_000)
    target = tmp_path / "x.zip.age"
    encryptor = Encryptor.from_settings([], "DOSSIER_PASS", {"DOSSIER_PASS": PASSPHRASE})
    assert encryptor is not None
    with encryptor:
        outer_sha = encryptor.encrypt_file(plain, target)
        # The child process is reused for the next file.
        second = tmp_path / "y.zip.age"
        encryptor.encrypt_file(plain, second)
    data = target.read_bytes()
    assert b"-> scrypt " in data[:200]
    assert outer_sha == hashlib.sha256(data).hexdigest()
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert data != second.read_bytes()  # a fresh salt and file key each time
    decryptor = Decryptor.from_passphrase_env("DOSSIER_PASS", {"DOSSIER_PASS": PASSPHRASE})
    assert _decrypt(decryptor, target, tmp_path) == plain.read_bytes()
    assert _decrypt(decryptor, second, tmp_path) == plain.read_bytes()
    assert encryptor.secret_values() == [PASSPHRASE]
    assert PASSPHRASE not in repr(encryptor)
    assert PASSPHRASE not in repr(decryptor)


def test_two_encryptions_differ_but_hold_the_same_plaintext(tmp_path: Path) -> None:
    identity = x25519.Identity.generate()
    plain = _plain(tmp_path, 5000)
    encryptor = Encryptor.to_recipients([str(identity.to_public())])
    one, two = tmp_path / "1.zip.age", tmp_path / "2.zip.age"
    encryptor.encrypt_file(plain, one)
    encryptor.encrypt_file(plain, two)
    assert one.read_bytes() != two.read_bytes()
    decryptor = Decryptor(identities=(identity,))
    assert _decrypt(decryptor, one, tmp_path) == _decrypt(decryptor, two, tmp_path)


def test_empty_file_round_trips(tmp_path: Path) -> None:
    identity = x25519.Identity.generate()
    plain = tmp_path / "empty.zip"
    plain.write_bytes(b"")
    target = tmp_path / "x.zip.age"
    Encryptor.to_recipients([str(identity.to_public())]).encrypt_file(plain, target)
    assert _decrypt(Decryptor(identities=(identity,)), target, tmp_path) == b""


def test_recipients_parse_and_duplicates_count_once() -> None:
    identity = x25519.Identity.generate()
    public = str(identity.to_public())
    ssh_public, _ = _ssh_ed25519()
    assert isinstance(parse_recipient(f"  {public}\n"), x25519.Recipient)
    assert isinstance(parse_recipient(ssh_public), ssh.Recipient)
    encryptor = Encryptor.to_recipients([public, public, ssh_public])
    assert len(encryptor.recipients) == 2
    assert encryptor.description == "age, 2 recipients"
    assert encryptor.secret_values() == []


def test_no_encryption_asked_is_none() -> None:
    assert Encryptor.from_settings([], None, {}) is None


def test_identity_file_comments_and_blank_lines(tmp_path: Path) -> None:
    identity = x25519.Identity.generate()
    text = f"\n# comment\n   \n  {identity}  \n# another\n"
    parsed = parse_identities(text.encode(), "key.txt")
    assert len(parsed) == 1


def test_encrypted_names() -> None:
    assert is_encrypted_name("0b9f2c1e-0000-4000-8000-000000000001.zip.age")
    assert not is_encrypted_name("0b9f2c1e-0000-4000-8000-000000000001.zip")
    assert not is_encrypted_name("notes.age")


@given(st.text(max_size=120))
def test_any_recipient_text_is_accepted_or_refused_cleanly(text: str) -> None:
    try:
        parse_recipient(text)
    except ConfigError as exc:
        message = str(exc)
        assert "\n" not in message
        assert len(message) < 400


def _age_tool(name: str) -> str:
    # .ci/run installs Debian's age package; without it this interop check must fail, not skip.
    path = shutil.which(name)
    assert path is not None, f"{name} is missing: apt-get install age (.ci/run does)"
    return path


def test_the_age_cli_decrypts_our_file_and_we_read_its_keys(tmp_path: Path) -> None:
    key = tmp_path / "key.txt"
    subprocess.run([_age_tool("age-keygen"), "-o", str(key)], check=True, capture_output=True)
    public = next(
        line.split(":", 1)[1].strip()
        for line in key.read_text().splitlines()
        if line.startswith("# public key:")
    )
    plain = _plain(tmp_path)
    target = tmp_path / "x.zip.age"
    Encryptor.to_recipients([public]).encrypt_file(plain, target)
    out = tmp_path / "out.zip"
    subprocess.run(
        [_age_tool("age"), "-d", "-i", str(key), "-o", str(out), str(target)],
        check=True,
        capture_output=True,
    )
    assert out.read_bytes() == plain.read_bytes()
    # And the other way: age-keygen's file (with its comments) is an identity file for us.
    by_cli = tmp_path / "cli.zip.age"
    subprocess.run(
        [_age_tool("age"), "-r", public, "-o", str(by_cli), str(plain)],
        check=True,
        capture_output=True,
    )
    decryptor = Decryptor.from_identity_file(key)
    assert _decrypt(decryptor, by_cli, tmp_path) == plain.read_bytes()


def test_seal_renames_into_place_and_leaves_no_plaintext(tmp_path: Path) -> None:
    identity = x25519.Identity.generate()
    plain = tmp_path / ".sar-bulk-partial-x.zip"
    plain.write_bytes(os.urandom(70_000))
    expected = plain.read_bytes()
    final = tmp_path / "x.zip.age"
    final.write_bytes(b"an older dossier")  # replaced, as a plain zip is by os.replace
    outer_sha, size = Encryptor.to_recipients([str(identity.to_public())]).seal(plain, final)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.zip.age"]
    assert size == final.stat().st_size
    assert outer_sha == hashlib.sha256(final.read_bytes()).hexdigest()
    assert _decrypt(Decryptor(identities=(identity,)), final, tmp_path) == expected


# --- whole runs of the command against the simulator ------------------------------------------


def _files(out: Path) -> list[str]:
    """Every file name under ``out``, at any depth (the state folder too)."""
    return sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())


def _entries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def _plain_zips(out: Path) -> list[str]:
    """Any unencrypted zip in ``out``: a finished one or a partial one, at any depth."""
    return [name for name in _files(out) if name.endswith(".zip")]


def _small_simulator() -> SimulatorConfig:
    return SimulatorConfig(seed=5, heavy_fraction=0.0, page_size=20)


async def test_a_run_with_encrypt_to_writes_only_encrypted_dossiers(tmp_path: Path) -> None:
    alice, bob = x25519.Identity.generate(), x25519.Identity.generate()
    contacts = contact_ids(4, 51)
    csv = write_csv(tmp_path / "contacts.csv", ["ContactId", *contacts])
    out = tmp_path / "out"
    recipients = ["--encrypt-to", str(alice.to_public()), "--encrypt-to", str(bob.to_public())]
    async with Simulator(_small_simulator()) as sim:
        result = await run_cli(run_args(sim.base_url, csv, out, *recipients), env=token_env())
        assert result.code == ExitCode.OK, result.explain()
        fetched = {c: sim.counters()["ok_requests_by_contact"][c] for c in contacts}
        # Resume: every encrypted dossier is done by its recorded SHA-256; nothing is fetched.
        again = await run_cli(run_args(sim.base_url, csv, out, *recipients), env=token_env())
        assert again.code == ExitCode.OK, again.explain()
        # (The pre-flight probe asks again, for a zero contact id; no real contact is asked.)
        assert {c: sim.counters()["ok_requests_by_contact"][c] for c in contacts} == fetched
        dataset = sim.dataset

    names = {p.name for p in out.iterdir() if p.is_file() and ".zip" in p.name}
    assert names == {f"{c}.zip.age" for c in contacts}
    assert _plain_zips(out) == []
    assert not [n for n in _files(out) if n.startswith(".sar-bulk-partial-")]
    report = read_report(out)
    assert report["parameters"]["encryption"] == "age, 2 recipients"
    assert read_report(out)["totals"]["skipped_already_done"] == len(contacts)

    # Each recipient alone opens each dossier, and the inside is the exact dossier.
    plain_dir = tmp_path / "opened"
    plain_dir.mkdir()
    for number, identity in enumerate((alice, bob)):
        decryptor = Decryptor(identities=(identity,))
        for contact in contacts:
            inner = plain_dir / f"{contact}.zip"
            decryptor.decrypt_to(out / f"{contact}.zip.age", inner)
            if number == 0:
                assert_exact_dossier(dataset, inner, contact)
            inner.unlink()

    # sar-bulk verify: with an identity every dossier is checked; without one, none is.
    # The plaintext is opened in a private folder under TMPDIR, gone when the command ends.
    key = _identity_file(tmp_path, bob)
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = cli_env(TMPDIR=str(scratch))
    checked = await run_cli(["verify", "--identity", str(key), str(out)], env=env)
    assert checked.code == 0, checked.explain()
    assert checked.stdout.count("ok ") == len(contacts)
    assert _entries(scratch) == []
    unchecked = await run_cli(["verify", str(out)], env=env)
    assert unchecked.code == 1, unchecked.explain()
    assert unchecked.stdout.count("LOCKED ") == len(contacts)
    assert "encrypted, not checked: give --identity" in unchecked.stdout


async def test_a_run_with_a_passphrase_and_verify_with_it(tmp_path: Path) -> None:
    contacts = contact_ids(2, 52)
    csv = write_csv(tmp_path / "contacts.csv", ["ContactId", *contacts])
    out = tmp_path / "out"
    env = token_env(DOSSIER_PASS=PASSPHRASE)
    async with Simulator(_small_simulator()) as sim:
        args = run_args(sim.base_url, csv, out, "--encrypt-passphrase-env", "DOSSIER_PASS")
        result = await run_cli([*args, "--log-format", "json", "--log-level", "debug"], env=env)
        assert result.code == ExitCode.OK, result.explain()
    assert PASSPHRASE not in result.stdout + result.stderr
    assert all(PASSPHRASE.encode() not in (out / n).read_bytes() for n in _files(out))
    assert sorted(p.name for p in out.glob("*.zip*")) == sorted(f"{c}.zip.age" for c in contacts)
    checked = await run_cli(
        ["verify", "--passphrase-env", "DOSSIER_PASS", "--json", str(out)], env=env
    )
    assert checked.code == 0, checked.explain()
    assert orjson.loads(checked.stdout)["valid"] == len(contacts)


async def test_the_inner_zip_is_the_same_bytes_for_the_same_data(tmp_path: Path) -> None:
    identity = x25519.Identity.generate()
    contact = contact_ids(1, 53)[0]
    request = DossierRequest.for_interactions(contact, ALL_TYPES[:3], "https://x.crm.dynamics.com")
    fixed = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    encryptor = Encryptor.to_recipients([str(identity.to_public())])
    inners: list[bytes] = []
    outers: list[bytes] = []
    for run in ("one", "two"):
        out = tmp_path / run
        async with DossierWriter(out, request, now=lambda: fixed, encryptor=encryptor) as writer:
            for itype in ALL_TYPES[:3]:
                row = {"ContactId": contact, "Subject": f"hello {itype.value}"}
                await writer.add_page(itype, [row])
            summary = await writer.complete()
        assert summary.path == out / f"{contact}.zip.age"
        assert sorted(p.name for p in out.iterdir()) == [f"{contact}.zip.age"]
        outer = summary.path.read_bytes()
        assert summary.sha256 == hashlib.sha256(outer).hexdigest()
        assert summary.zip_bytes == len(outer)
        inner = _decrypt(Decryptor(identities=(identity,)), summary.path, tmp_path)
        assert summary.inner_sha256 == hashlib.sha256(inner).hexdigest()
        inners.append(inner)
        outers.append(outer)
    assert inners[0] == inners[1]
    assert outers[0] != outers[1]


class _FolderWatch:
    """Every file name that shows up under a folder while a run works, polled in a thread."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.seen: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        while not self._stop.is_set():
            for root, _, names in os.walk(self.folder):
                self.seen.update(os.path.relpath(os.path.join(root, n), self.folder) for n in names)
            time.sleep(0.0005)

    def __enter__(self) -> _FolderWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()


def _plaintext_names(names: set[str]) -> list[str]:
    """Names that may hold plaintext: anything but an age file, the report or its temporary."""
    return sorted(
        n
        for n in names
        if not n.endswith(".age")
        and not (n.startswith(".sar-bulk-partial-") and ".zip.age." in n)
        and n not in ("run-report.json", LOCK)
        and not (n.startswith(".run-report.json.") and n.endswith(".tmp"))
    )


async def test_a_work_folder_keeps_every_plaintext_out_of_the_output_folder(
    tmp_path: Path,
) -> None:
    """With --work beside a folder --out, spooled rows, the unencrypted zip and the state stay
    in the work folder: the output folder only ever holds sealed dossiers and the report."""
    identity = x25519.Identity.generate()
    contacts = contact_ids(6, 54)
    csv = write_csv(tmp_path / "contacts.csv", ["ContactId", *contacts])
    out, work = tmp_path / "out", tmp_path / "work"
    out.mkdir()
    extra = ("--work", str(work), "--encrypt-to", str(identity.to_public()))
    # Heavy contacts spill their spool to disk: the spill must land in the work folder too.
    simulator = SimulatorConfig(
        seed=5, heavy_fraction=0.0, heavy_contacts={contacts[0]: 3_000}, page_size=500
    )
    async with Simulator(simulator) as sim:
        with _FolderWatch(out) as watch:
            result = await run_cli(run_args(sim.base_url, csv, out, *extra), env=token_env())
        assert result.code == ExitCode.OK, result.explain()
        fetched = {c: sim.counters()["ok_requests_by_contact"][c] for c in contacts}
        again = await run_cli(run_args(sim.base_url, csv, out, *extra), env=token_env())
        assert again.code == ExitCode.OK, again.explain()
        assert f"{len(contacts)} already done" in again.stdout
        assert {c: sim.counters()["ok_requests_by_contact"][c] for c in contacts} == fetched
        dataset = sim.dataset

    assert _plaintext_names(watch.seen) == []
    assert any(n.endswith(".zip.age") for n in watch.seen), "the watch saw the dossiers arrive"
    assert _files(out) == sorted([f"{c}.zip.age" for c in contacts] + ["run-report.json", LOCK])
    # The state, the report's copy and nothing staged are left in the work folder.
    assert (work / ".sar-bulk").is_dir()
    assert [n for n in _files(work) if ".zip" in n or n.endswith(".part")] == []
    assert read_report(out)["parameters"]["out"] == str(out)
    assert read_report(out)["parameters"]["work"] == str(work)
    decryptor = Decryptor(identities=(identity,))
    for contact in contacts:
        inner = tmp_path / f"{contact}.zip"
        decryptor.decrypt_to(out / f"{contact}.zip.age", inner)
        assert_exact_dossier(dataset, inner, contact)
        inner.unlink()


async def test_a_plain_dossier_in_the_output_folder_is_never_left_beside_its_sealed_one(
    tmp_path: Path,
) -> None:
    identity = x25519.Identity.generate()
    contact = contact_ids(1, 55)[0]
    csv = write_csv(tmp_path / "contacts.csv", ["ContactId", contact])
    out, work = tmp_path / "out", tmp_path / "work"
    sealed = ("--work", str(work), "--encrypt-to", str(identity.to_public()))
    async with Simulator(_small_simulator()) as sim:
        plain = await run_cli(run_args(sim.base_url, csv, out), env=token_env())
        assert plain.code == ExitCode.OK, plain.explain()
        refused = await run_cli(run_args(sim.base_url, csv, out, *sealed), env=token_env())
        assert refused.code == ExitCode.INCOMPLETE, refused.explain()
        report = read_report(out)
        assert "is an unencrypted dossier, but this run encrypts" in str(report["failed_contacts"])
        assert sorted(p.name for p in out.glob("*.zip*")) == [f"{contact}.zip"]

        replaced = await run_cli(
            run_args(sim.base_url, csv, out, *sealed, "--replace"), env=token_env()
        )
        assert replaced.code == ExitCode.OK, replaced.explain()
    assert sorted(p.name for p in out.glob("*.zip*")) == [f"{contact}.zip.age"]
    assert read_report(out)["replaced_count"] == 1


async def test_a_copy_cut_short_in_the_output_folder_is_removed_by_the_next_run(
    tmp_path: Path,
) -> None:
    """A SIGKILL while a dossier was copied from --work into --out leaves a hidden partial copy
    there; the next run removes it (as it does in its own folder) and touches nothing else."""
    contact = contact_ids(1, 57)[0]
    csv = write_csv(tmp_path / "contacts.csv", ["ContactId", contact])
    out, work = tmp_path / "out", tmp_path / "work"
    out.mkdir()
    cut_short = out / f".sar-bulk-partial-{contact}.zip.4242"
    cut_short.write_bytes(b"PK\x03\x04 half a copy")
    someone_elses = out / ".notes-of-the-dpo.txt"
    someone_elses.write_text("kept")
    async with Simulator(_small_simulator()) as sim:
        ran = await run_cli(run_args(sim.base_url, csv, out, "--work", str(work)), env=token_env())
        assert ran.code == ExitCode.OK, ran.explain()
    assert not cut_short.exists()
    assert someone_elses.read_text() == "kept"
    expected = [f"{contact}.zip", "run-report.json", someone_elses.name, LOCK]
    assert _files(out) == sorted(expected)


async def test_a_new_shard_count_adopts_the_sealed_dossiers_the_old_shards_recorded(
    tmp_path: Path,
) -> None:
    """Two shards one night, three the next, encrypting: most contacts move to another shard,
    whose state has no record of them, and a sealed dossier cannot be verified here. They were
    all fetched again; the other shards' records of exactly those files now let them be
    adopted, and the org is asked nothing."""
    identity = x25519.Identity.generate()
    contacts = contact_ids(12, 58)
    csv = write_csv(tmp_path / "contacts.csv", ["ContactId", *contacts])
    out = tmp_path / "out"
    sealed = ("--encrypt-to", str(identity.to_public()))

    async def night(count: int) -> list[str]:
        said = []
        for index in range(count):
            args = run_args(sim.base_url, csv, out, *sealed, "--shard", f"{index}/{count}")
            ran = await run_cli(args, env=token_env())
            assert ran.code == ExitCode.OK, ran.explain()
            said.append(ran.stdout)
        return said

    async with Simulator(_small_simulator()) as sim:
        await night(2)
        # One sealed file changed since its shard recorded it: that one is not adopted.
        changed = out / f"{contacts[0]}.zip.age"
        changed.write_bytes(changed.read_bytes() + b"\n")
        fetched = {c: sim.counters()["ok_requests_by_contact"][c] for c in contacts}
        written = {p.name: p.stat().st_mtime_ns for p in out.glob("*.zip.age") if p != changed}
        said = await night(3)
        # (Each run's probes ask about a contact of their own, not counted here.)
        now = {c: sim.counters()["ok_requests_by_contact"][c] for c in contacts}
    assert len(written) == len(contacts) - 1
    assert {c for c in contacts if now[c] != fetched[c]} == {contacts[0]}
    assert {name: (out / name).stat().st_mtime_ns for name in written} == written
    totals = [read_report(out, f"run-report.shard-{i}-of-3.json")["totals"] for i in range(3)]
    assert sum(t["skipped_already_done"] for t in totals) == len(contacts) - 1, said
    assert sum(t["succeeded"] for t in totals) == 1


async def test_status_of_an_output_folder_names_the_work_folder_its_run_used(
    tmp_path: Path,
) -> None:
    contact = contact_ids(1, 56)[0]
    csv = write_csv(tmp_path / "contacts.csv", ["ContactId", contact])
    out, work = tmp_path / "out", tmp_path / "work"
    async with Simulator(_small_simulator()) as sim:
        ran = await run_cli(run_args(sim.base_url, csv, out, "--work", str(work)), env=token_env())
        assert ran.code == ExitCode.OK, ran.explain()
    asked = await run_cli(["status", str(out)])
    assert asked.code == ExitCode.USAGE, asked.explain()
    assert f"sar-bulk status {work}" in asked.stderr
    status = await run_cli(["status", str(work)])
    assert status.code == ExitCode.OK, status.explain()
    assert "1 done, 0 failed" in status.stdout
