"""Protected delivery: a finished dossier zip encrypted with age, and decrypted again to verify.

Usage::

    encryptor = Encryptor.from_settings(["age1..."], None, os.environ)   # None: no encryption
    outer_sha256, size = encryptor.seal(partial_zip, out / "<id>.zip.age")  # blocking: a thread
    encryptor.close()

    decryptor = Decryptor.from_identity_file(Path("key.txt"))            # verify --identity
    with decryptor.decrypted(Path("x.zip.age"), scratch_dir) as inner_zip:
        verify the inner zip as usual

Why age (through ``pyrage``, the binding to the Rust implementation): the recipient gets one
standard file, ``<contact-id>.zip.age``, that ``age -d -i key.txt`` or ``rage`` opens anywhere,
and the format, its X25519/SSH recipients and its scrypt passphrase mode are security code that
must not be written by hand here. Zip's own "AES" encryption is not offered: its headers leak
member names and sizes, and tools disagree on it.

Two modes, never both (an age file with a passphrase has exactly one recipient, by design):

- recipients (``--encrypt-to``, repeatable): ``age1...`` X25519 public keys and ``ssh-ed25519``
  / ``ssh-rsa`` public key lines; each recipient can decrypt alone. Streams in ~64 KiB chunks,
  so memory stays flat however big the dossier.
- a passphrase read from the environment variable that ``--encrypt-passphrase-env NAME`` names
  (never from a flag: flags end up in shell history and process lists). pyrage offers only an
  in-memory passphrase API and its scrypt holds the GIL for about a second, so each file is
  encrypted whole in a child process of its own (``python -m sar_bulk.dossier.encryption``,
  the passphrase on its stdin), one at a time, off the event loop; files above
  ``MAX_PASSPHRASE_BYTES`` are refused with advice to use recipients instead.

Everything written here is created 0600 with ``O_EXCL`` and fsynced; renaming into place is the
caller's (the dossier writer's) job, like for the zip itself. Decryption writes to a private
temporary file that is deleted on every way out, because age authenticates chunk by chunk: a
damaged or truncated file fails only after earlier plaintext was already produced.

The passphrase and identities never appear in a message; ``secret_values`` lists what the log
redactor must blank.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets as _secrets
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Final

import pyrage
from pyrage import passphrase as age_passphrase
from pyrage import ssh, x25519

from sar_bulk.errors import ConfigError, DossierError
from sar_bulk.logs import REDACTOR

__all__ = [
    "ENCRYPTED_SUFFIX",
    "MAX_PASSPHRASE_BYTES",
    "Decryptor",
    "Encryptor",
    "is_encrypted_name",
    "parse_identities",
    "parse_recipient",
    "read_passphrase",
]

ENCRYPTED_SUFFIX: Final = ".age"
# Passphrase mode holds the plaintext and the ciphertext in memory at once (see the docstring).
MAX_PASSPHRASE_BYTES: Final = 256 << 20
# An age file is its plaintext plus 16 bytes per 64 KiB chunk plus a header of a few hundred.
_MAX_PASSPHRASE_CIPHERTEXT: Final = MAX_PASSPHRASE_BYTES + (MAX_PASSPHRASE_BYTES >> 12) + 4096
MIN_PASSPHRASE_CHARS: Final = 12
# scrypt takes ~1 s; a child that has not answered in this long is stuck, not slow.
_PASSPHRASE_TIMEOUT: Final = 600.0
_FILE_MODE: Final = 0o600
_MAX_IDENTITY_FILE: Final = 1 << 20
_AGE_MAGIC: Final = b"age-encryption.org/v1\n"
_SCRYPT_STANZA: Final = b"-> scrypt "
_SSH_PREFIXES: Final = ("ssh-ed25519 ", "ssh-rsa ")
_AGE_KEY_PREFIX: Final = "AGE-SECRET-KEY-1"
_ACCEPTED: Final = (
    "use an age public key (age1..., from 'age-keygen -y key.txt') or an ssh-ed25519 / "
    "ssh-rsa public key line"
)

Recipient = x25519.Recipient | ssh.Recipient
Identity = x25519.Identity | ssh.Identity


def is_encrypted_name(name: str) -> bool:
    """Whether a file name is an encrypted dossier's (``<id>.zip.age``)."""
    return name.endswith(".zip" + ENCRYPTED_SUFFIX)


def _shown(text: str) -> str:
    """A public value as a message may quote it: one line, not endless."""
    flat = " ".join(text.split())
    return repr(flat if len(flat) <= 80 else flat[:77] + "...")


def parse_recipient(text: str) -> Recipient:
    """One ``--encrypt-to`` value as a pyrage recipient; ``ConfigError`` says what is accepted."""
    value = text.strip()
    if value.startswith(_AGE_KEY_PREFIX):
        # Never quote it: it is a secret key, given where the public one belongs.
        raise ConfigError(
            "--encrypt-to was given an age SECRET key (AGE-SECRET-KEY-1...): give its public "
            "key instead ('age-keygen -y key.txt'), and keep the secret key with the recipient"
        )
    try:
        if value.startswith("age1"):
            return x25519.Recipient.from_str(value)
        if value.startswith(_SSH_PREFIXES):
            return ssh.Recipient.from_str(value)
    except pyrage.RecipientError as exc:
        raise ConfigError(
            f"--encrypt-to {_shown(value)} is not a valid recipient ({exc}): {_ACCEPTED}"
        ) from None
    raise ConfigError(f"--encrypt-to {_shown(value)} is not a recipient: {_ACCEPTED}")


def read_passphrase(variable: str, environ: Mapping[str, str]) -> str:
    """The passphrase held by environment variable ``variable``; never echoed in a message."""
    if not variable or "=" in variable or "\0" in variable:
        raise ConfigError(f"--encrypt-passphrase-env {_shown(variable)} is not a variable name")
    value = environ.get(variable)
    if value is None:
        raise ConfigError(
            f"--encrypt-passphrase-env {variable}: that environment variable is not set"
        )
    if len(value) < MIN_PASSPHRASE_CHARS:
        raise ConfigError(
            f"the passphrase in {variable} is shorter than {MIN_PASSPHRASE_CHARS} characters: "
            "it would be the weak point of every dossier; choose a longer one"
        )
    return value


def _create_private(path: Path) -> int:
    """A new 0600 file; fails if the name exists (never follows or reuses someone's file)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(path, flags, _FILE_MODE)
    try:
        os.fchmod(fd, _FILE_MODE)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _remove_quietly(path: Path) -> None:
    with suppress(OSError):
        path.unlink()


class _HashingWriter:
    """What pyrage writes into: passes bytes to the file and hashes them on the way."""

    def __init__(self, out: IO[bytes]) -> None:
        self.out = out
        self.sha = hashlib.sha256()

    def write(self, data: bytes) -> int:
        self.sha.update(data)
        return self.out.write(data)

    def flush(self) -> None:
        self.out.flush()

    def writable(self) -> bool:
        return True


def _write_into(target: Path, data: bytes) -> str:
    """Write ``data`` into the (empty, 0600) file ``target`` the parent created, fsync it; the
    SHA-256 of what was written."""
    fd = os.open(target, os.O_WRONLY | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC)
    with open(fd, "wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
    return hashlib.sha256(data).hexdigest()


def _passphrase_child(source: str, target: str) -> int:
    """``python -m sar_bulk.dossier.encryption SOURCE TARGET``, the passphrase on stdin.

    Encrypts ``source`` whole into the new file ``target`` and prints the SHA-256 of what it
    wrote. A process of its own because scrypt holds the GIL for about a second; started by
    path, not by multiprocessing, so no caller's ``__main__`` is run again and no shared-memory
    semaphore is needed. Messages never hold the passphrase.
    """
    passphrase = sys.stdin.read()
    with open(source, "rb") as handle:
        plain = handle.read(MAX_PASSPHRASE_BYTES + 1)
    if len(plain) > MAX_PASSPHRASE_BYTES:
        print(f"{Path(source).name} grew past the passphrase limit", file=sys.stderr)
        return 1
    try:
        sealed = age_passphrase.encrypt(plain, passphrase)
    except pyrage.EncryptError as exc:
        print(f"age refused: {exc}", file=sys.stderr)
        return 1
    print(_write_into(Path(target), sealed))
    return 0


@dataclass(eq=False)
class Encryptor:
    """How finished dossiers are encrypted: to ``recipients``, or with a ``passphrase``.

    ``encrypt_file`` blocks (call it in a worker thread) and may be called from several threads
    at once; passphrase files are encrypted one at a time (each scrypt takes a core for about a
    second and holds a whole dossier in memory).
    """

    recipients: tuple[Recipient, ...] = ()
    passphrase: str | None = field(default=None, repr=False)
    description: str = ""
    _one_at_a_time: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def __post_init__(self) -> None:
        if bool(self.recipients) == (self.passphrase is not None):
            raise ConfigError("encrypt either to recipients or with a passphrase, not both")

    @classmethod
    def to_recipients(cls, texts: Sequence[str]) -> Encryptor:
        """An encryptor for the ``--encrypt-to`` values (duplicates count once)."""
        unique = list(dict.fromkeys(t.strip() for t in texts))
        recipients = tuple(parse_recipient(t) for t in unique)
        if not recipients:
            raise ConfigError(f"--encrypt-to needs at least one recipient: {_ACCEPTED}")
        plural = "s" if len(recipients) > 1 else ""
        return cls(recipients=recipients, description=f"age, {len(recipients)} recipient{plural}")

    @classmethod
    def with_passphrase(cls, passphrase: str, *, variable: str = "") -> Encryptor:
        where = f" from {variable}" if variable else ""
        return cls(passphrase=passphrase, description=f"age, passphrase{where}")

    @classmethod
    def from_settings(
        cls,
        recipients: Sequence[str],
        passphrase_env: str | None,
        environ: Mapping[str, str],
    ) -> Encryptor | None:
        """The encryptor a run's settings ask for; ``None`` when they ask for none."""
        if recipients and passphrase_env:
            raise ConfigError(
                "give --encrypt-to or --encrypt-passphrase-env, not both: an age file "
                "protected by a passphrase has no other recipient"
            )
        if recipients:
            return cls.to_recipients(recipients)
        if passphrase_env:
            value = read_passphrase(passphrase_env, environ)
            REDACTOR.add(value)  # from now on no output of this process can carry it
            return cls.with_passphrase(value, variable=passphrase_env)
        return None

    def secret_values(self) -> list[str]:
        """What the log redactor must blank (the passphrase; recipients are public)."""
        return [self.passphrase] if self.passphrase is not None else []

    def encrypt_file(self, source: Path, target: Path) -> str:
        """Encrypt the file ``source`` into the new file ``target`` (0600, fsynced).

        Returns the SHA-256 of the encrypted file. ``target`` must not exist; on any failure it
        is removed again. Raises ``DossierError`` when pyrage refuses.
        """
        if self.passphrase is not None:
            return self._encrypt_with_passphrase(source, target)
        fd = _create_private(target)
        try:
            with open(source, "rb") as plain, open(fd, "wb") as out:
                hashing = _HashingWriter(out)
                # encrypt_io, not encrypt_file: it calls back into Python per chunk, so other
                # threads (the event loop) keep running, and the file is ours, created 0600.
                # The stub asks for a BufferedIOBase; pyrage only calls write() on it.
                pyrage.encrypt_io(plain, hashing, list(self.recipients))  # type: ignore[arg-type]
                out.flush()
                os.fsync(out.fileno())
        except pyrage.EncryptError as exc:
            _remove_quietly(target)
            raise DossierError(f"cannot encrypt {source.name}: {exc}") from None
        except BaseException:
            _remove_quietly(target)
            raise
        return hashing.sha.hexdigest()

    def seal(self, plain: Path, final: Path) -> tuple[str, int]:
        """Encrypt the finished zip ``plain`` into place at ``final``; ``plain`` is removed.

        The ciphertext is written next to ``plain`` (its name plus ``.age``, so an interrupted
        write leaves only names the writer's leftover clean-up removes), fsynced and renamed
        onto ``final``; the caller fsyncs the folder. Returns the SHA-256 and size of the
        encrypted file. Whatever happens, no plaintext zip stays behind.
        """
        temp = plain.with_name(plain.name + ENCRYPTED_SUFFIX)
        try:
            outer_sha256 = self.encrypt_file(plain, temp)
            size = temp.stat().st_size
            os.replace(temp, final)
        finally:
            _remove_quietly(plain)
            _remove_quietly(temp)
        return outer_sha256, size

    def _encrypt_with_passphrase(self, source: Path, target: Path) -> str:
        assert self.passphrase is not None
        size = source.stat().st_size
        if size > MAX_PASSPHRASE_BYTES:
            raise DossierError(
                f"{source.name} is {size >> 20} MiB: passphrase encryption holds a whole dossier "
                f"in memory and stops at {MAX_PASSPHRASE_BYTES >> 20} MiB; encrypt to "
                "recipients (--encrypt-to) instead, which streams"
            )
        command = [sys.executable, "-m", __name__, str(source), str(target)]
        os.close(_create_private(target))  # ours, 0600, and never someone else's file
        try:
            with self._one_at_a_time:
                # The passphrase goes through a pipe: arguments and environments can be read by
                # other users of the machine (ps, /proc), a pipe cannot.
                done = subprocess.run(  # noqa: S603 - our own interpreter and module
                    command,
                    input=self.passphrase,
                    capture_output=True,
                    text=True,
                    timeout=_PASSPHRASE_TIMEOUT,
                    check=False,
                )
        except BaseException:
            _remove_quietly(target)
            raise
        digest = done.stdout.strip()
        if done.returncode != 0 or not re.fullmatch(r"[0-9a-f]{64}", digest):
            _remove_quietly(target)
            detail = " ".join(done.stderr.split()[-40:]) or f"exit {done.returncode}"
            raise DossierError(f"cannot encrypt {source.name} with the passphrase: {detail}")
        return digest

    def close(self) -> None:
        """Nothing to release today (each passphrase file has its own child process)."""

    def __enter__(self) -> Encryptor:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def parse_identities(data: bytes, where: str) -> tuple[Identity, ...]:
    """Identities from an identity file's bytes: age's format, or one OpenSSH private key.

    age's format is one ``AGE-SECRET-KEY-1...`` per line, with blank lines and ``#`` comments
    (what ``age-keygen`` writes). A line that is neither is refused by its number, never quoted:
    it may be part of a secret.
    """
    if data.lstrip().startswith(b"-----BEGIN"):
        try:
            return (ssh.Identity.from_buffer(data),)
        except pyrage.IdentityError as exc:
            raise ConfigError(
                f"identity file {where} is not an unencrypted OpenSSH private key ({exc})"
            ) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"identity file {where} is not text: give an age identity file") from None
    identities: list[Identity] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if not line.startswith(_AGE_KEY_PREFIX):
            raise ConfigError(
                f"identity file {where} line {number} is not an age secret key "
                "(AGE-SECRET-KEY-1...); only those, blank lines and # comments belong there"
            )
        REDACTOR.add(line)  # a secret key: no output of this process may carry it
        try:
            identities.append(x25519.Identity.from_str(line))
        except pyrage.IdentityError:
            raise ConfigError(
                f"identity file {where} line {number} is a damaged age secret key"
            ) from None
    if not identities:
        raise ConfigError(f"identity file {where} holds no AGE-SECRET-KEY-1... line")
    return tuple(identities)


def _read_header(path: Path) -> bytes:
    with open(path, "rb") as handle:
        return handle.read(4096)


@dataclass(frozen=True, eq=False)
class Decryptor:
    """Opens ``.zip.age`` dossiers with ``identities`` or a ``passphrase`` (for ``verify``)."""

    identities: tuple[Identity, ...] = ()
    passphrase: str | None = field(default=None, repr=False)

    @classmethod
    def from_identity_file(cls, path: Path) -> Decryptor:
        try:
            size = path.stat().st_size
            if size > _MAX_IDENTITY_FILE:
                raise ConfigError(f"identity file {path} is {size} bytes: not an identity file")
            data = path.read_bytes()
        except FileNotFoundError:
            raise ConfigError(f"identity file {path} does not exist") from None
        except IsADirectoryError:
            raise ConfigError(f"identity file {path} is a folder") from None
        except OSError as exc:
            raise ConfigError(f"identity file {path} cannot be read: {exc.strerror}") from None
        return cls(identities=parse_identities(data, str(path)))

    @classmethod
    def from_passphrase_env(cls, variable: str, environ: Mapping[str, str]) -> Decryptor:
        if not variable or variable not in environ:
            raise ConfigError(
                f"--passphrase-env {variable or repr(variable)}: no such environment variable"
            )
        REDACTOR.add(environ[variable])
        return cls(passphrase=environ[variable])

    def secret_values(self) -> list[str]:
        return [self.passphrase] if self.passphrase is not None else []

    def decrypt_to(self, source: Path, target: Path) -> None:
        """Decrypt ``source`` into the new file ``target`` (0600, ``O_EXCL``).

        Raises ``DossierError`` with what went wrong: not an age file, no matching key, a wrong
        passphrase, damaged or truncated ciphertext. ``target`` is removed on any failure.
        """
        header = _read_header(source)
        if not header.startswith(_AGE_MAGIC):
            raise DossierError(f"{source.name} is not an age-encrypted file")
        scrypt = _SCRYPT_STANZA in header
        if scrypt and self.passphrase is None:
            raise DossierError(
                f"{source.name} is encrypted with a passphrase: give --passphrase-env NAME"
            )
        if not scrypt and self.passphrase is not None:
            raise DossierError(
                f"{source.name} is encrypted to recipients, not with a passphrase: "
                "give --identity FILE"
            )
        fd = _create_private(target)
        try:
            with open(fd, "wb") as out:
                if self.passphrase is not None:
                    out.write(self._passphrase_plaintext(source))
                else:
                    with open(source, "rb") as encrypted:
                        pyrage.decrypt_io(encrypted, out, list(self.identities))
        except pyrage.DecryptError as exc:
            _remove_quietly(target)
            raise DossierError(_decrypt_failure(source, str(exc), passphrase=scrypt)) from None
        except OSError as exc:
            _remove_quietly(target)
            if exc.errno is not None:  # a real I/O error of our own files
                raise
            # pyrage reports a failed chunk (bit flipped, bytes cut off) as a bare OSError.
            raise DossierError(
                f"{source.name} is damaged or truncated: its ciphertext does not authenticate "
                f"({exc}); nothing of it can be trusted, ask for it again"
            ) from None
        except BaseException:
            _remove_quietly(target)
            raise

    def _passphrase_plaintext(self, source: Path) -> bytes:
        assert self.passphrase is not None
        size = source.stat().st_size
        if size > _MAX_PASSPHRASE_CIPHERTEXT:
            raise DossierError(
                f"{source.name} is {size >> 20} MiB: larger than any passphrase-encrypted "
                "dossier sar-bulk writes"
            )
        with open(source, "rb") as handle:
            data = handle.read()
        return age_passphrase.decrypt(data, self.passphrase)

    @contextmanager
    def decrypted(self, source: Path, scratch: Path) -> Iterator[Path]:
        """The plaintext of ``source`` in a private temporary file in ``scratch``, then gone."""
        target = scratch / f".sar-bulk-decrypted-{_secrets.token_hex(8)}.zip"
        self.decrypt_to(source, target)
        try:
            yield target
        finally:
            _remove_quietly(target)


def _decrypt_failure(source: Path, detail: str, *, passphrase: bool) -> str:
    if passphrase:
        return (
            f"{source.name} cannot be decrypted with this passphrase: it is the wrong "
            "passphrase, or the file was altered"
        )
    if "No matching keys" in detail:
        return (
            f"{source.name} is not encrypted to any identity in the identity file (a wrong "
            "key, or its header was altered); give the identity of one of its recipients"
        )
    return (
        f"{source.name} cannot be decrypted: {detail}; it may be damaged or truncated, "
        "ask for it again"
    )


if __name__ == "__main__":
    sys.exit(_passphrase_child(*sys.argv[1:3]))
