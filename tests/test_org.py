"""OrgUrl: what users paste becomes one canonical https base, or a ConfigError saying why not."""

from __future__ import annotations

import pytest
from hypothesis import assume, example, given
from hypothesis import strategies as st

from sar_bulk.dataverse.org import OrgUrl
from sar_bulk.errors import ConfigError


@pytest.mark.parametrize(
    ("text", "base"),
    [
        ("https://contoso.crm4.dynamics.com", "https://contoso.crm4.dynamics.com"),
        ("https://contoso.crm4.dynamics.com/", "https://contoso.crm4.dynamics.com"),
        ("  HTTPS://Contoso.CRM4.Dynamics.com/  ", "https://contoso.crm4.dynamics.com"),
        ("https://contoso.crm.dynamics.com:8443/", "https://contoso.crm.dynamics.com:8443"),
        ("https://contoso.crm.dynamics.com:443", "https://contoso.crm.dynamics.com:443"),
        ("https://10.1.2.3", "https://10.1.2.3"),
        ("https://[2001:DB8::1]:8443", "https://[2001:db8::1]:8443"),
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
        ("http://127.5.5.5/", "http://127.5.5.5"),
        ("http://[::1]:9000/", "http://[::1]:9000"),
        ("http://[0:0:0:0:0:0:0:1]", "http://[::1]"),
        ("http://localhost:5000", "http://localhost:5000"),
        ("http://LOCALHOST", "http://localhost"),
    ],
)
def test_accepted_urls_become_their_canonical_base(text: str, base: str) -> None:
    assert OrgUrl.parse(text).base == base


def test_scope_and_action_url_derive_from_the_base() -> None:
    org = OrgUrl.parse("https://contoso.crm4.dynamics.com/")
    assert org.scope == "https://contoso.crm4.dynamics.com/.default"
    assert org.action_url == (
        "https://contoso.crm4.dynamics.com/api/data/v9.0/msdyncrm_LoadInteractionsPublic"
    )
    assert str(org) == org.base


@pytest.mark.parametrize(
    ("text", "loopback"),
    [
        ("http://127.0.0.1", True),
        ("https://127.255.255.254", True),
        ("http://[::1]", True),
        ("https://localhost", True),
        ("https://contoso.crm4.dynamics.com", False),
        ("https://10.0.0.1", False),
        ("https://localhost.contoso.com", False),
    ],
)
def test_is_loopback(text: str, loopback: bool) -> None:
    assert OrgUrl.parse(text).is_loopback is loopback


@pytest.mark.parametrize(
    "text",
    [
        "http://contoso.crm4.dynamics.com",
        "http://10.0.0.1",
        "http://128.0.0.1",
        "http://localhost.contoso.com",
        "http://[::ffff:127.0.0.1]",
        "http://[::2]",
    ],
)
def test_plain_http_is_refused_except_for_loopback(text: str) -> None:
    with pytest.raises(ConfigError, match=r"refusing plain http to .*unencrypted; use https"):
        OrgUrl.parse(text)


def test_plain_http_message_names_the_host() -> None:
    with pytest.raises(ConfigError) as caught:
        OrgUrl.parse("http://Contoso.crm4.dynamics.com/")
    assert str(caught.value) == (
        "refusing plain http to contoso.crm4.dynamics.com: tokens would travel unencrypted; "
        "use https"
    )


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("contoso.crm4.dynamics.com", "must start with https://"),
        ("ftp://contoso.crm4.dynamics.com", "must start with https://"),
        ("garbage", "must start with https://"),
        ("https://", "no host"),
        ("https:contoso.com", "no path"),
        ("https://contoso.crm4.dynamics.com/api/data/v9.0", "no path"),
        ("https://contoso.crm4.dynamics.com//", "no path"),
        ("https://contoso.crm4.dynamics.com/?x=1", "no query or fragment"),
        ("https://contoso.crm4.dynamics.com?", "no query or fragment"),
        ("https://contoso.crm4.dynamics.com#top", "no query or fragment"),
        ("https://contoso.crm4.dynamics.com:0", "port 0"),
        ("https://contoso.crm4.dynamics.com:99999", "not a URL"),
        ("https://contoso.crm4.dynamics.com:https", "not a URL"),
        ("https://con toso.com", "spaces or control characters"),
        ("https://con\ttoso.com", "spaces or control characters"),
        ("https://contoso.com\n/x", "spaces or control characters"),
        ("https://contoso.dynamics.com\u00e9", "spaces or control characters"),
        ("https://-contoso.com", "invalid host name"),
        ("https://contoso..com", "invalid host name"),
        ("https://contoso.com.", "invalid host name"),
        ("https://con_toso.com", "invalid host name"),
        ("https://127.1", "invalid IPv4"),
        ("https://300.1.1.1", "invalid IPv4"),
        ("https://[::1", "not a URL"),
        ("https://[fe80::1%25eth0]", "IPv6 zone"),
    ],
)
def test_unusable_urls_are_refused_with_a_reason(text: str, reason: str) -> None:
    with pytest.raises(ConfigError, match=reason):
        OrgUrl.parse(text)


def test_user_info_is_refused_without_echoing_the_password() -> None:
    with pytest.raises(ConfigError, match="user name or password") as caught:
        OrgUrl.parse("https://admin:hunter2@contoso.crm4.dynamics.com")
    assert "hunter2" not in str(caught.value)


def test_a_password_in_an_otherwise_broken_url_is_not_echoed() -> None:
    with pytest.raises(ConfigError) as caught:
        OrgUrl.parse("https://admin:hunter2@[::1")
    assert "hunter2" not in str(caught.value)


def test_long_input_is_shortened_in_messages() -> None:
    with pytest.raises(ConfigError) as caught:
        OrgUrl.parse("ftp://" + "a" * 500)
    assert len(str(caught.value)) < 200


def test_direct_construction_must_be_canonical() -> None:
    assert OrgUrl("https://contoso.crm4.dynamics.com") == OrgUrl.parse(
        "https://CONTOSO.crm4.dynamics.com/"
    )
    with pytest.raises(ConfigError, match="not canonical"):
        OrgUrl("https://CONTOSO.crm4.dynamics.com/")
    with pytest.raises(ConfigError):
        OrgUrl("http://contoso.crm4.dynamics.com")


@given(st.text())
@example("http://[")
@example("https://h:")
@example("https://\u0661")
def test_arbitrary_text_gives_an_org_url_or_a_config_error(text: str) -> None:
    try:
        org = OrgUrl.parse(text)
    except ConfigError:
        return
    assert OrgUrl.parse(org.base) == org
    assert org.base.startswith(("https://", "http://"))
    assert not org.base.endswith("/")


_LABELS = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?", fullmatch=True)


@given(
    labels=st.lists(_LABELS, min_size=1, max_size=5),
    port=st.none() | st.integers(min_value=1, max_value=65535),
    upper=st.booleans(),
    slash=st.booleans(),
)
def test_any_host_and_port_round_trips(
    labels: list[str], port: int | None, upper: bool, slash: bool
) -> None:
    host = ".".join(labels)
    assume(not host.replace(".", "").isdigit())  # all digits is IPv4 territory
    shown = host.upper() if upper else host
    text = f"https://{shown}" + (f":{port}" if port else "") + ("/" if slash else "")
    org = OrgUrl.parse(text)
    assert org.base == f"https://{host}" + (f":{port}" if port else "")
    assert org.scope == f"{org.base}/.default"


@given(
    st.tuples(*[st.integers(min_value=0, max_value=255)] * 3),
    st.none() | st.integers(min_value=1, max_value=65535),
)
def test_all_of_127_slash_8_may_use_plain_http(
    octets: tuple[int, int, int], port: int | None
) -> None:
    host = "127." + ".".join(map(str, octets))
    org = OrgUrl.parse(f"http://{host}" + (f":{port}" if port else ""))
    assert org.is_loopback
