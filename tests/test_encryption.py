"""age encryption of finished dossiers: recipients, passphrase, identity files, round trips."""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import subprocess
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from hypothesis import given
from hypothesis import strategies as st
from pyrage import ssh, x25519

from sar_bulk.dossier.encryption import (
    Decryptor,
    Encryptor,
    is_encrypted_name,
    parse_identities,
    parse_recipient,
)
from sar_bulk.errors import ConfigError

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
