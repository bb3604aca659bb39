"""``--out`` as a container URL, and the storage secrets to redact, without the storage SDK.

Usage::

    if is_container_url(text):
        url = ContainerUrl.parse(text)   # ConfigError naming what is wrong

Kept apart from ``blob.py`` so that reading the configuration does not import
azure-storage-blob (a third of a second) for runs that write to a folder.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final
from urllib.parse import unquote, urlsplit

from sar_bulk.dataverse.org import is_loopback_host
from sar_bulk.errors import ConfigError

__all__ = [
    "CONNECTION_STRING_ENV",
    "SAS_TOKEN_ENV",
    "ContainerUrl",
    "is_container_url",
    "storage_secrets",
]

CONNECTION_STRING_ENV: Final = "AZURE_STORAGE_CONNECTION_STRING"
SAS_TOKEN_ENV: Final = "AZURE_STORAGE_SAS_TOKEN"  # noqa: S105
# Azurite's documented, public development account: never a secret, only ever on loopback.
_DEV_ACCOUNT: Final = "devstoreaccount1"
_DEV_KEY: Final = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)
_CONTAINER: Final = re.compile(r"^(?=.{3,63}$)[a-z0-9]+(?:-[a-z0-9]+)*$")


def is_container_url(text: str) -> bool:
    """Does ``--out`` name a container (a URL) rather than a folder?"""
    return text.lower().startswith(("https://", "http://"))


@dataclass(frozen=True, slots=True)
class ContainerUrl:
    """A container and a name prefix in it; ``prefix`` is empty or ends with ``/``."""

    account_url: str
    account: str
    container: str
    prefix: str

    @property
    def text(self) -> str:
        """The URL as the user would write it (no secret is ever part of it)."""
        return f"{self.account_url}/{self.container}/{self.prefix}".rstrip("/")

    @property
    def is_loopback(self) -> bool:
        return is_loopback_host(urlsplit(self.account_url).hostname or "")

    @classmethod
    def parse(cls, text: str) -> ContainerUrl:
        """Check and split ``https://ACCOUNT.blob.core.windows.net/CONTAINER[/PREFIX]``.

        Loopback hosts (Azurite) are path style: ``http://127.0.0.1:10000/ACCOUNT/CONTAINER``.
        Raises ``ConfigError`` saying what is wrong (the caller names the URL); a SAS in the URL
        is refused (URLs end up in
        logs and reports: put it in AZURE_STORAGE_SAS_TOKEN).
        """
        try:
            parts = urlsplit(text.strip())
            port = parts.port
        except ValueError as exc:
            raise ConfigError(f"not a valid URL: {exc}") from None
        scheme, host = parts.scheme.lower(), (parts.hostname or "").lower()
        if scheme not in ("https", "http") or not host:
            raise ConfigError("a container URL starts with https://ACCOUNT.blob...")
        if parts.username is not None or parts.password is not None:
            raise ConfigError("a container URL holds no user or password")
        if parts.query or parts.fragment:
            raise ConfigError(
                f"no query or fragment in the URL; put a SAS token in "
                f"{SAS_TOKEN_ENV}, not in the URL (URLs are logged and reported)"
            )
        loopback = is_loopback_host(host)
        if scheme == "http" and not loopback:
            raise ConfigError(
                "plain http is only for a local emulator on a loopback address; use https"
            )
        segments = [unquote(s) for s in parts.path.split("/") if s]
        netloc = host if port is None else f"{host}:{port}"
        if ":" in host:  # an IPv6 literal keeps its brackets
            netloc = f"[{host}]" if port is None else f"[{host}]:{port}"
        if loopback:
            if len(segments) < 2:
                raise ConfigError(
                    "a loopback URL is path style: http://HOST:PORT/ACCOUNT/CONTAINER"
                )
            account = segments.pop(0)
            account_url = f"{scheme}://{netloc}/{account}"
        else:
            account = host.split(".")[0]
            account_url = f"{scheme}://{netloc}"
        if not segments:
            raise ConfigError(f"name the container: {account_url}/CONTAINER[/PREFIX]")
        container, prefix_parts = segments[0], segments[1:]
        if not _CONTAINER.match(container):
            raise ConfigError(
                f"{container!r} is not a container name (3-63 lower-case letters, "
                "digits and single hyphens, starting and ending with a letter or digit)"
            )
        for part in prefix_parts:
            if part in (".", "..") or "\\" in part or any(ord(c) < 32 for c in part):
                raise ConfigError(f"{part!r} cannot be part of a blob name prefix")
        prefix = "".join(f"{part}/" for part in prefix_parts)
        if len(prefix) > 900:
            raise ConfigError("the prefix is too long for blob names")
        return cls(account_url, account, container, prefix)


def _connection_string(text: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    for item in text.split(";"):
        key, sep, value = item.strip().partition("=")
        if sep:
            fields[key.strip().lower()] = value.strip()
    return fields


def storage_secrets(environ: Mapping[str, str]) -> list[str]:
    """Values to register with the log redactor: the variables and the key or SAS inside them."""
    found = [environ.get(CONNECTION_STRING_ENV, ""), environ.get(SAS_TOKEN_ENV, "")]
    fields = _connection_string(environ.get(CONNECTION_STRING_ENV, ""))
    found += [fields.get("accountkey", ""), fields.get("sharedaccesssignature", "")]
    found.append(environ.get(SAS_TOKEN_ENV, "").lstrip("?"))
    return [value for value in found if value and value != _DEV_KEY]
