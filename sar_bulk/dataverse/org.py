"""The Dataverse organisation URL: the one value every request and the token scope derive from.

Usage::

    org = OrgUrl.parse("https://Contoso.crm4.dynamics.com/")
    org.base        # "https://contoso.crm4.dynamics.com"
    org.scope       # "https://contoso.crm4.dynamics.com/.default"
    org.action_url  # ".../api/data/v9.0/msdyncrm_LoadInteractionsPublic"

Parsing is strict because the token travels to whatever host this names: plain http is refused
except for loopback (the local simulator), and user info, paths, queries and fragments are refused
rather than silently dropped, so a pasted URL never means something other than it looks.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

from sar_bulk.errors import ConfigError

__all__ = ["OrgUrl"]

_ACTION_PATH: Final = "/api/data/v9.0/msdyncrm_LoadInteractionsPublic"
_LABEL: Final = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
# Anything outside visible ASCII: urlsplit silently deletes tabs and newlines, and a URL with
# spaces or control characters is a paste accident, never a host.
_INVISIBLE: Final = re.compile(r"[^\x21-\x7e]")
_USERINFO: Final = re.compile(r"//[^/?#]*@")
_SHOWN_MAX: Final = 80


@dataclass(frozen=True, slots=True)
class OrgUrl:
    """A validated organisation URL: ``https://host[:port]``, host in lower case, nothing after.

    Build it with :meth:`parse`; constructing it directly with anything but that canonical form
    raises ``ConfigError``.
    """

    base: str

    def __post_init__(self) -> None:
        if _canonical(self.base) != self.base:
            raise ConfigError(f"org URL {_shown(self.base)} is not canonical; use OrgUrl.parse")

    @classmethod
    def parse(cls, text: str) -> OrgUrl:
        """Validate and normalise what a user typed, or raise ``ConfigError`` saying why not."""
        return cls(_canonical(text))

    @property
    def scope(self) -> str:
        """The OAuth scope that asks Entra ID for a token for this org."""
        return f"{self.base}/.default"

    @property
    def action_url(self) -> str:
        """Where msdyncrm_LoadInteractionsPublic is POSTed."""
        return f"{self.base}{_ACTION_PATH}"

    def api_url(self, path: str, version: str = "v9.2") -> str:
        """A Web API URL under this org, e.g. ``api_url("contacts(...)")``."""
        return f"{self.base}/api/data/{version}/{path.lstrip('/')}"

    def owns(self, url: str) -> bool:
        """True when ``url`` is on this org's origin (scheme, host and port), e.g. a nextLink."""
        return url == self.base or url.startswith(self.base + "/")

    @property
    def is_loopback(self) -> bool:
        """True for localhost, 127.0.0.0/8 and ::1: the only hosts plain http may reach."""
        host = urlsplit(self.base).hostname
        return host is not None and is_loopback_host(host)

    def __str__(self) -> str:
        return self.base


def _canonical(text: str) -> str:
    stripped = text.strip()
    shown = _shown(stripped)
    if not stripped:
        raise ConfigError("org URL is empty; give it like https://contoso.crm4.dynamics.com")
    if _INVISIBLE.search(stripped):
        raise ConfigError(f"org URL {shown} contains spaces or control characters")
    try:
        parts = urlsplit(stripped)
        port = parts.port
    except ValueError as exc:
        raise ConfigError(f"org URL {shown} is not a URL ({exc})") from None
    scheme = parts.scheme.lower()
    if scheme not in ("https", "http"):
        raise ConfigError(
            f"org URL {shown} must start with https:// (like https://contoso.crm4.dynamics.com)"
        )
    if "@" in parts.netloc:
        raise ConfigError("org URL must not contain a user name or password")
    if parts.path not in ("", "/"):
        raise ConfigError(f"org URL {shown} must have no path: give only https://host[:port]")
    if "?" in stripped or "#" in stripped:
        raise ConfigError(f"org URL {shown} must have no query or fragment")
    if port == 0:
        raise ConfigError(f"org URL {shown} has port 0")
    host = _canonical_host(parts.hostname or "", shown)
    if scheme == "http" and not is_loopback_host(host.strip("[]")):
        raise ConfigError(
            f"refusing plain http to {host}: tokens would travel unencrypted; use https"
        )
    # The explicit port stays even when it is the default: the user asked for it.
    return f"{scheme}://{host}" + ("" if port is None else f":{port}")


def _canonical_host(host: str, shown: str) -> str:
    """Lower-case DNS name, dotted IPv4 or bracketed compressed IPv6; anything else refused."""
    if not host:
        raise ConfigError(f"org URL {shown} has no host")
    if ":" in host:
        try:
            address = ipaddress.IPv6Address(host)
        except ValueError:
            raise ConfigError(f"org URL {shown} has an invalid IPv6 address") from None
        if address.scope_id is not None:
            raise ConfigError(f"org URL {shown} must not carry an IPv6 zone")
        return f"[{address.compressed}]"
    if re.fullmatch(r"[0-9.]+", host):
        try:
            return str(ipaddress.IPv4Address(host))
        except ValueError:
            raise ConfigError(f"org URL {shown} has an invalid IPv4 address") from None
    labels = host.split(".")
    if len(host) > 253 or not all(_LABEL.match(label) for label in labels):
        raise ConfigError(f"org URL {shown} has an invalid host name")
    return host


def is_loopback_host(host: str) -> bool:
    """True for localhost, 127.0.0.0/8 and ::1: the only hosts plain http may reach."""
    if host == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    # An IPv4-mapped IPv6 address (::ffff:127.0.0.1) is not one of them: Python 3.13 calls it
    # loopback when the IPv4 address is, 3.11 and 3.12.1 do not; the rule must not depend on it.
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return False
    return address.is_loopback


def _shown(text: str) -> str:
    """The input as it may appear in a message: user info hidden, length capped."""
    hidden = _USERINFO.sub("//***@", text)
    if len(hidden) > _SHOWN_MAX:
        hidden = hidden[: _SHOWN_MAX - 3] + "..."
    return repr(hidden)
