"""Encryption and decryption under attack or misuse: every failure is clear and leaves nothing.

Wrong keys, altered or cut ciphertext, files that are not age at all, secret keys given where
public ones belong, identity files with stray lines, weak or missing passphrases. No message
quotes a secret, and no plaintext stays behind after a failed decryption.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import signal
from pathlib import Path

import orjson
import pytest
from cli_support import run_args, run_cli, start_cli, token_env
from pyrage import x25519
from support import contact_ids, read_report, write_csv

from sar_bulk.dossier import encryption
from sar_bulk.dossier.encryption import Decryptor, Encryptor, parse_identities, parse_recipient
from sar_bulk.dossier.verify import run_verify_command, verify_dossier
from sar_bulk.dossier.writer import DossierRequest, DossierWriter
from sar_bulk.errors import ConfigError, DossierError
from sar_bulk.logs import REDACTED, scrub
from sar_bulk.run.runner import ExitCode
from sar_bulk.simulator import Simulator, SimulatorConfig
from sar_bulk.sources.interaction_types import ALL_TYPES

PASSPHRASE = "correct horse battery staple"


def _encrypted(tmp_path: Path, size: int = 300_000) -> tuple[x25519.Identity, Path, bytes]:
    identity = x25519.Identity.generate()
    plain = tmp_path / "plain.zip"
    data = os.urandom(size)
    plain.write_bytes(data)
    target = tmp_path / "x.zip.age"
    Encryptor.to_recipients([str(identity.to_public())]).encrypt_file(plain, target)
    plain.unlink()
    return identity, target, data


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".sar-bulk-decrypted"))


def _refused(decryptor: Decryptor, source: Path, scratch: Path) -> str:
    with pytest.raises(DossierError) as caught, decryptor.decrypted(source, scratch):
        pytest.fail("decryption should have been refused")
    assert _leftovers(scratch) == []
    return str(caught.value)


def test_wrong_identity_is_named(tmp_path: Path) -> None:
    _, target, _ = _encrypted(tmp_path)
    message = _refused(Decryptor(identities=(x25519.Identity.generate(),)), target, tmp_path)
    assert "not encrypted to any identity" in message
    assert "x.zip.age" in message


@pytest.mark.parametrize("where", ["middle", "last_byte"])
def test_altered_ciphertext_fails_and_leaves_no_plaintext(tmp_path: Path, where: str) -> None:
    identity, target, _ = _encrypted(tmp_path)
    data = bytearray(target.read_bytes())
    index = len(data) // 2 if where == "middle" else len(data) - 1
    data[index] ^= 0x01
    target.write_bytes(bytes(data))
    message = _refused(Decryptor(identities=(identity,)), target, tmp_path)
    assert "damaged or truncated" in message


@pytest.mark.parametrize("keep", [0.5, 0.99])
def test_truncated_file_fails_and_leaves_no_plaintext(tmp_path: Path, keep: float) -> None:
    identity, target, _ = _encrypted(tmp_path)
    data = target.read_bytes()
    target.write_bytes(data[: int(len(data) * keep)])
    message = _refused(Decryptor(identities=(identity,)), target, tmp_path)
    assert "damaged or truncated" in message or "cannot be decrypted" in message


def test_header_only_fails(tmp_path: Path) -> None:
    identity, target, _ = _encrypted(tmp_path)
    target.write_bytes(target.read_bytes()[:150])
    message = _refused(Decryptor(identities=(identity,)), target, tmp_path)
    assert "x.zip.age" in message


def test_not_an_age_file(tmp_path: Path) -> None:
    target = tmp_path / "x.zip.age"
    target.write_bytes(b"PK\x03\x04 a plain zip renamed")
    message = _refused(Decryptor(identities=(x25519.Identity.generate(),)), target, tmp_path)
    assert "not an age-encrypted file" in message


def test_passphrase_file_given_identities_and_the_reverse(tmp_path: Path) -> None:
    identity, by_key, _ = _encrypted(tmp_path)
    plain = tmp_path / "p.zip"
    plain.write_bytes(b"data")
    by_passphrase = tmp_path / "p.zip.age"
    with Encryptor.with_passphrase(PASSPHRASE) as encryptor:
        encryptor.encrypt_file(plain, by_passphrase)
    message = _refused(Decryptor(identities=(identity,)), by_passphrase, tmp_path)
    assert "--passphrase-env" in message
    message = _refused(Decryptor(passphrase=PASSPHRASE), by_key, tmp_path)
    assert "--identity" in message
    wrong = _refused(Decryptor(passphrase="another long passphrase"), by_passphrase, tmp_path)
    assert "wrong passphrase" in wrong
    assert PASSPHRASE not in wrong


def test_encrypt_never_overwrites_and_cleans_up_on_failure(tmp_path: Path) -> None:
    identity = x25519.Identity.generate()
    plain = tmp_path / "plain.zip"
    plain.write_bytes(b"data")
    target = tmp_path / "x.zip.age"
    target.write_bytes(b"someone else's file")
    encryptor = Encryptor.to_recipients([str(identity.to_public())])
    with pytest.raises(FileExistsError):
        encryptor.encrypt_file(plain, target)
    assert target.read_bytes() == b"someone else's file"
    missing = tmp_path / "gone.zip"
    with pytest.raises(FileNotFoundError):
        encryptor.encrypt_file(missing, tmp_path / "y.zip.age")
    assert not (tmp_path / "y.zip.age").exists()


def test_passphrase_mode_refuses_files_past_its_memory_bound(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(encryption, "MAX_PASSPHRASE_BYTES", 1000)
    plain = tmp_path / "plain.zip"
    plain.write_bytes(b"x" * 1001)
    target = tmp_path / "x.zip.age"
    with (
        Encryptor.with_passphrase(PASSPHRASE) as encryptor,
        pytest.raises(DossierError, match="--encrypt-to"),
    ):
        encryptor.encrypt_file(plain, target)
    assert not target.exists()


def test_a_secret_key_given_as_recipient_is_refused_unquoted() -> None:
    secret = str(x25519.Identity.generate())
    with pytest.raises(ConfigError) as caught:
        parse_recipient(secret)
    assert "SECRET key" in str(caught.value)
    assert secret not in str(caught.value)


@pytest.mark.parametrize(
    "text",
    ["age1notbech32", "", "ssh-ed25519 AAAAnotbase64", "ssh-dss AAAAB3Nza", "age1pq1abc", "x"],
)
def test_bad_recipients_say_what_is_accepted(text: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_recipient(text)
    message = str(caught.value)
    assert message.startswith("--encrypt-to ")
    assert "age1" in message
    assert "\n" not in message


def test_recipients_and_passphrase_together_are_refused() -> None:
    public = str(x25519.Identity.generate().to_public())
    with pytest.raises(ConfigError, match="not both"):
        Encryptor.from_settings([public], "PASS", {"PASS": PASSPHRASE})


@pytest.mark.parametrize(
    ("environ", "needle"),
    [({}, "not set"), ({"PASS": "tiny-pw"}, "shorter than 12"), ({"PASS": ""}, "shorter than")],
)
def test_missing_or_weak_passphrase_is_refused(environ: dict[str, str], needle: str) -> None:
    with pytest.raises(ConfigError, match=needle) as caught:
        Encryptor.from_settings([], "PASS", environ)
    for value in environ.values():
        if value:
            assert value not in str(caught.value)


def test_identity_file_stray_line_is_named_by_number_not_quoted(tmp_path: Path) -> None:
    identity = str(x25519.Identity.generate())
    text = f"# key\n{identity}\nAGE-SECRET-KEY-1 with a typo: secret-looking-stuff\n"
    with pytest.raises(ConfigError) as caught:
        parse_identities(text.encode(), "key.txt")
    message = str(caught.value)
    assert "line 3" in message
    assert "secret-looking-stuff" not in message
    assert identity not in message
    with pytest.raises(ConfigError, match="line 1 is not an age secret key"):
        parse_identities(b"age1publickeyinstead\n", "key.txt")


@pytest.mark.parametrize(
    "data",
    [b"", b"# only a comment\n", b"\xff\xfe\x00binary", b"-----BEGIN OPENSSH PRIVATE KEY-----\nx"],
)
def test_unusable_identity_files(tmp_path: Path, data: bytes) -> None:
    key = tmp_path / "key.txt"
    key.write_bytes(data)
    with pytest.raises(ConfigError, match="identity file"):
        Decryptor.from_identity_file(key)


def test_identity_file_missing_or_a_folder(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        Decryptor.from_identity_file(tmp_path / "nope.txt")
    with pytest.raises(ConfigError, match="is a folder"):
        Decryptor.from_identity_file(tmp_path)


def test_seal_that_fails_leaves_neither_plaintext_nor_partial_ciphertext(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(encryption, "MAX_PASSPHRASE_BYTES", 10)
    plain = tmp_path / ".sar-bulk-partial-x.zip"
    plain.write_bytes(b"x" * 11)
    with Encryptor.with_passphrase(PASSPHRASE) as encryptor, pytest.raises(DossierError):
        encryptor.seal(plain, tmp_path / "x.zip.age")
    assert list(tmp_path.iterdir()) == []


# --- the command ---------------------------------------------------------------------------


async def test_a_bad_recipient_is_exit_2_in_one_line_before_any_request(tmp_path: Path) -> None:
    csv = write_csv(tmp_path / "contacts.csv", ["ContactId", *contact_ids(2, 61)])
    out = tmp_path / "out"
    good = str(x25519.Identity.generate().to_public())
    async with Simulator(SimulatorConfig(seed=6)) as sim:
        for bad in ("age1notakey", str(x25519.Identity.generate())):
            args = run_args(sim.base_url, csv, out, "--encrypt-to", good, "--encrypt-to", bad)
            result = await run_cli(args, env=token_env())
            assert result.code == ExitCode.USAGE, result.explain()
            lines = result.stderr.strip().splitlines()
            assert len(lines) == 1, result.explain()
            assert lines[0].startswith("sar-bulk: --encrypt-to")
            assert "AGE-SECRET-KEY" not in bad or bad not in result.stderr
        both = run_args(
            sim.base_url, csv, out, "--encrypt-to", good, "--encrypt-passphrase-env", "P"
        )
        result = await run_cli(both, env=token_env(P=PASSPHRASE))
        assert result.code == ExitCode.USAGE, result.explain()
        assert "not both" in result.stderr
        assert sim.counters()["total"]["requests"] == 0
    assert not out.exists()


def _plain_or_partial(out: Path) -> list[str]:
    return sorted(
        str(p.relative_to(out))
        for p in out.rglob("*")
        if p.name.endswith(".zip") or p.name.startswith(".sar-bulk-partial-")
    )


async def test_a_killed_encrypting_run_leaves_no_plaintext_once_resumed(tmp_path: Path) -> None:
    identity = x25519.Identity.generate()
    contacts = contact_ids(24, 62)
    csv = write_csv(tmp_path / "contacts.csv", ["ContactId", *contacts])
    out = tmp_path / "out"
    config = SimulatorConfig(seed=62, heavy_fraction=0.0, page_size=5, latency=0.005)
    flags = ("--encrypt-to", str(identity.to_public()), "--window", "4")
    async with Simulator(config) as sim:
        process = await start_cli(run_args(sim.base_url, csv, out, *flags), env=token_env())
        try:
            async with asyncio.timeout(60):
                # Any .zip.age, a partial one too: a kill in the middle of encrypting is the
                # case that matters most.
                while not list(out.glob("*.zip.age")):
                    if process.returncode is not None:
                        break
                    await asyncio.sleep(0.02)
        finally:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGKILL)
            await process.wait()
        assert process.returncode == -signal.SIGKILL  # killed mid-run, not finished
        # Right after the kill a plaintext zip may exist only under a partial name (the next
        # run removes it); a final name is never a plain zip.
        finished_plain = [n for n in _plain_or_partial(out) if not n.startswith(".sar-bulk-")]
        assert finished_plain == []
        result = await run_cli(run_args(sim.base_url, csv, out, *flags), env=token_env())
        assert result.code == ExitCode.OK, result.explain()
    assert _plain_or_partial(out) == []
    assert sorted(p.name for p in out.glob("*.zip.age")) == sorted(f"{c}.zip.age" for c in contacts)
    decryptor = Decryptor(identities=(identity,))
    for contact in contacts:
        with decryptor.decrypted(out / f"{contact}.zip.age", tmp_path) as inner:
            assert inner.stat().st_size > 0


async def test_plain_and_encrypted_dossiers_are_not_swapped_silently(tmp_path: Path) -> None:
    identity = x25519.Identity.generate()
    contacts = contact_ids(2, 63)
    csv = write_csv(tmp_path / "contacts.csv", ["ContactId", *contacts])
    out = tmp_path / "out"
    encrypt = ("--encrypt-to", str(identity.to_public()))
    async with Simulator(SimulatorConfig(seed=63, heavy_fraction=0.0)) as sim:
        plain = await run_cli(run_args(sim.base_url, csv, out), env=token_env())
        assert plain.code == ExitCode.OK, plain.explain()
        before = {c: (out / f"{c}.zip").read_bytes() for c in contacts}
        asked = {c: sim.counters()["ok_requests_by_contact"][c] for c in contacts}

        refused = await run_cli(run_args(sim.base_url, csv, out, *encrypt), env=token_env())
        assert refused.code == ExitCode.INCOMPLETE, refused.explain()
        # No contact was fetched again (the pre-flight probe asks for a zero contact id).
        assert {c: sim.counters()["ok_requests_by_contact"][c] for c in contacts} == asked
        assert {c: (out / f"{c}.zip").read_bytes() for c in contacts} == before
        assert not list(out.glob("*.zip.age"))
        reasons = str(read_report(out))
        assert "unencrypted dossier, but this run encrypts" in reasons
        assert "--replace" in reasons

        replaced = await run_cli(
            run_args(sim.base_url, csv, out, *encrypt, "--replace"), env=token_env()
        )
        assert replaced.code == ExitCode.OK, replaced.explain()
        assert not list(out.glob("*.zip"))
        assert sorted(p.name for p in out.glob("*.zip.age")) == sorted(
            f"{c}.zip.age" for c in contacts
        )

        # And the reverse: a run without encryption does not put plain files beside them.
        back = await run_cli(run_args(sim.base_url, csv, out), env=token_env())
        assert back.code == ExitCode.INCOMPLETE, back.explain()
        assert "encrypted dossier, but this run does not encrypt" in str(read_report(out))
        assert not list(out.glob("*.zip"))


# --- verify on encrypted dossiers --------------------------------------------------------------


async def _encrypted_dossier(out: Path, identity: x25519.Identity) -> Path:
    contact = contact_ids(1, 64)[0]
    types = ALL_TYPES[:2]
    request = DossierRequest.for_interactions(contact, types, "https://x.crm.dynamics.com")
    encryptor = Encryptor.to_recipients([str(identity.to_public())])
    async with DossierWriter(out, request, encryptor=encryptor) as writer:
        for itype in types:
            await writer.add_page(itype, [{"ContactId": contact, "Subject": "s" * 200_000}])
        summary = await writer.complete()
    return summary.path


async def test_verify_encrypted_dossiers_right_wrong_altered_cut_and_locked(
    tmp_path: Path,
) -> None:
    identity = x25519.Identity.generate()
    path = await _encrypted_dossier(tmp_path / "out", identity)
    right = Decryptor(identities=(identity,))

    good = verify_dossier(path, decryptor=right)
    assert good.ok, good.problems
    assert good.encrypted
    assert good.path == path
    assert good.total_interactions == 2

    wrong = verify_dossier(path, decryptor=Decryptor(identities=(x25519.Identity.generate(),)))
    assert not wrong.ok
    assert not wrong.locked
    assert "not encrypted to any identity" in wrong.problems[0]

    locked = verify_dossier(path)
    assert not locked.ok
    assert locked.locked
    assert locked.problems == (
        "encrypted, not checked: give --identity FILE, or --passphrase-env NAME",
    )

    data = path.read_bytes()
    altered = bytearray(data)
    altered[len(data) // 2] ^= 0x40
    path.write_bytes(bytes(altered))
    result = verify_dossier(path, decryptor=right)
    assert not result.ok
    assert "damaged or truncated" in result.problems[0]

    path.write_bytes(data[: len(data) - 1000])
    result = verify_dossier(path, decryptor=right)
    assert not result.ok
    assert "damaged or truncated" in result.problems[0]

    # A sound age file around a zip that is not a dossier: the inner check names the problem.
    inner = tmp_path / "not-a-dossier.zip"
    inner.write_bytes(b"PK\x05\x06" + b"\0" * 18)
    path.unlink()
    Encryptor.to_recipients([str(identity.to_public())]).encrypt_file(inner, path)
    result = verify_dossier(path, decryptor=right)
    assert not result.ok
    assert result.encrypted
    assert not result.locked
    assert result.problems


async def test_verify_command_counts_locked_apart_and_exits_1(tmp_path: Path) -> None:
    identity = x25519.Identity.generate()
    out = tmp_path / "out"
    await _encrypted_dossier(out, identity)
    text = io.StringIO()
    assert run_verify_command([str(out)], as_json=True, out=text) == 1
    document = orjson.loads(text.getvalue())
    assert (document["ok"], document["valid"], document["invalid"], document["locked"]) == (
        False,
        0,
        0,
        1,
    )
    assert document["dossiers"][0]["checked"] is False
    text = io.StringIO()
    assert run_verify_command([str(out)], as_json=False, out=text) == 1
    assert "1 encrypted and not checked (give --identity FILE" in text.getvalue()
    key = tmp_path / "key.txt"
    key.write_text(f"{identity}\n")
    result = await run_cli(["verify", "--identity", str(key), "--passphrase-env", "X", str(out)])
    assert result.code == ExitCode.USAGE
    assert "not both" in result.stderr
    key.write_text("AGE-SECRET-KEY-1BROKEN\n")
    result = await run_cli(["verify", "--identity", str(key), str(out)])
    assert result.code == ExitCode.USAGE, result.explain()
    assert "line 1 is a damaged age secret key" in result.stderr
    assert "BROKEN" not in result.stderr


def test_passphrase_and_secret_keys_are_known_to_the_redactor(tmp_path: Path) -> None:
    passphrase = "a passphrase only this test uses"
    assert passphrase in scrub(f"echo: {passphrase}")  # not known before
    Encryptor.from_settings([], "PASS", {"PASS": passphrase})
    assert scrub(f"echo: {passphrase}") == f"echo: {REDACTED}"
    other = "another passphrase for verify"
    Decryptor.from_passphrase_env("PASS", {"PASS": other})
    assert other not in scrub(f"echo: {other}")
    secret = str(x25519.Identity.generate())
    key = tmp_path / "key.txt"
    key.write_text(f"# mine\n{secret}\n")
    Decryptor.from_identity_file(key)
    assert scrub(f"a server echoed {secret}") == f"a server echoed {REDACTED}"


def test_passphrase_mode_never_overwrites_either(tmp_path: Path) -> None:
    plain = tmp_path / "plain.zip"
    plain.write_bytes(b"data")
    target = tmp_path / "x.zip.age"
    target.write_bytes(b"someone else's file")
    with Encryptor.with_passphrase(PASSPHRASE) as encryptor, pytest.raises(FileExistsError):
        encryptor.encrypt_file(plain, target)
    assert target.read_bytes() == b"someone else's file"


def test_a_failing_passphrase_child_is_a_dossier_error_without_the_passphrase(
    tmp_path: Path,
) -> None:
    not_a_file = tmp_path / "folder.zip"
    not_a_file.mkdir()
    target = tmp_path / "x.zip.age"
    with (
        Encryptor.with_passphrase(PASSPHRASE) as encryptor,
        pytest.raises(
            DossierError, match=r"cannot encrypt folder\.zip with the passphrase"
        ) as caught,
    ):
        encryptor.encrypt_file(not_a_file, target)
    assert PASSPHRASE not in str(caught.value)
    assert not target.exists()
