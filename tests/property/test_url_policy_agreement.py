"""The URL rules agree with each other because each piece is decided once (``url_policy.py``).

Five kinds of URL are judged: the issuer (RFC 8414 §2), a provider endpoint (RFC 6749 §3.1, §3.2), a
Client ID Metadata Document (the draft's §3; spec/security.md 23), a resource indicator (RFC 8707 §2)
and a redirect URI (RFC 6749 §3.1.2, RFC 8252 §7.3; spec/security.md 3). For any host, the first four
allow plain ``http`` on exactly the same hosts, which an independent oracle names here (``localhost``
in any case, 127.0.0.0/8, ``::1`` in any spelling); redirect URIs allow a subset of spellings of
those. No rule accepts userinfo or a fragment. The examples at the end, taken from the tests of each
rule before the rules were gathered, still hold.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from urllib.parse import urlsplit

import pytest
from hypothesis import given
from hypothesis import strategies as st

from oauthproxy_core.errors import InvalidTargetError
from oauthproxy_core.redirect_uris import is_acceptable_redirect_uri
from oauthproxy_core.resources import canonical_resource
from oauthproxy_core.url_policy import (
    LOOPBACK_REDIRECT_HOSTS,
    document_url_problem,
    is_loopback_host,
    issuer_problem,
    provider_url_problem,
)


def _resource_ok(url: str) -> bool:
    try:
        canonical_resource(url)
    except InvalidTargetError:
        return False
    return True


#: One URL of each kind on ``authority``, with the verdict of its rule (True: accepted).
RULES: dict[str, Callable[[str, str], bool]] = {
    "issuer": lambda scheme, authority: issuer_problem(f"{scheme}://{authority}") is None,
    "provider": lambda scheme, authority: (
        provider_url_problem(f"{scheme}://{authority}/token") is None
    ),
    "document": lambda scheme, authority: (
        document_url_problem(f"{scheme}://{authority}/client.json", allow_loopback=True) is None
    ),
    "resource": lambda scheme, authority: _resource_ok(f"{scheme}://{authority}/mcp"),
}


# -- hosts, with the oracle's answer to "is this a loopback host?" ---------------------------------

_NAMES = st.one_of(
    st.sampled_from(
        [
            "localhost",
            "LocalHost",
            "LOCALHOST",
            "app.localhost",
            "localhost.evil.example",
            "127.0.0.1.evil.example",
            "loopback",
            "idp.example",
        ]
    ),
    st.from_regex(r"[a-z][a-z0-9-]{0,15}(\.[a-z][a-z0-9-]{0,8}){0,3}", fullmatch=True),
)
#: Spellings ``str(ip)`` never produces, and addresses at the edges of the loopback ranges.
_LITERALS = st.sampled_from(
    [
        ("[0:0:0:0:0:0:0:1]", True),
        ("[::0:1]", True),
        ("[::1]", True),
        ("127.0.0.1", True),
        ("127.0.0.2", True),
        ("127.255.255.255", True),
        ("126.255.255.255", False),
        ("128.0.0.1", False),
        ("[::2]", False),
        ("[::]", False),
        ("[::ffff:127.0.0.1]", False),
        ("[::127.0.0.1]", False),
        ("0.0.0.0", False),
    ]
)


def _address(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> tuple[str, bool]:
    if isinstance(ip, ipaddress.IPv4Address):
        return str(ip), str(ip).split(".")[0] == "127"
    return f"[{ip}]", int(ip) == 1


hosts = st.one_of(
    _NAMES.map(lambda name: (name, name.lower() == "localhost")),
    st.ip_addresses().map(_address),
    _LITERALS,
)


@given(hosts)
def test_http_is_allowed_on_the_same_loopback_hosts_by_every_rule(host: tuple[str, bool]) -> None:
    """Issuer, provider endpoint, metadata document (test policy) and resource: one loopback set."""
    authority, loopback = host
    verdicts = {kind: rule("http", authority) for kind, rule in RULES.items()}
    assert verdicts == dict.fromkeys(RULES, loopback), authority
    assert is_loopback_host(urlsplit(f"http://{authority}/").hostname) is loopback
    assert is_loopback_host(authority) is loopback  # bracketed, as resources.py holds it


@given(hosts)
def test_https_is_allowed_on_any_host_by_the_issuer_provider_and_resource_rules(
    host: tuple[str, bool],
) -> None:
    authority, _ = host
    for kind in ("issuer", "provider", "resource"):
        assert RULES[kind]("https", authority), (kind, authority)


@given(hosts)
def test_invariant_23_no_document_url_names_this_machine_outside_the_test_policy(
    host: tuple[str, bool],
) -> None:
    authority, loopback = host
    url = f"https://{authority}/client.json"
    hostname = urlsplit(url).hostname or ""
    if loopback or hostname.endswith(".localhost"):
        assert document_url_problem(url) is not None, url
        assert document_url_problem(f"http://{authority}/client.json") is not None


@given(hosts)
def test_invariant_3_redirect_uris_take_http_on_loopback_spellings_the_other_rules_accept(
    host: tuple[str, bool],
) -> None:
    """Redirect URIs are compared as strings, so they take one spelling per loopback address
    (``LOOPBACK_REDIRECT_HOSTS``); each is a loopback host for every other rule too."""
    authority, loopback = host
    accepted = is_acceptable_redirect_uri(f"http://{authority}/cb")
    assert accepted is (authority in LOOPBACK_REDIRECT_HOSTS), authority
    if accepted:
        assert loopback
        assert all(rule("http", authority) for rule in RULES.values())


def test_the_redirect_loopback_spellings_are_loopback_hosts() -> None:
    assert {"127.0.0.1", "[::1]", "localhost"} == LOOPBACK_REDIRECT_HOSTS
    for authority in LOOPBACK_REDIRECT_HOSTS:
        assert is_loopback_host(authority)
        assert all(rule("http", authority) for rule in RULES.values()), authority


# -- userinfo and fragments: refused by every rule ---------------------------------------------------

#: (scheme, authority) pairs every rule, redirect URIs included, accepts as they are.
_ACCEPTED_BASES = st.one_of(
    st.tuples(st.just("https"), _NAMES),
    st.tuples(st.just("https"), st.sampled_from(["8.8.8.8", "[2606:4700:4700::1111]"])),
    st.tuples(st.just("http"), st.sampled_from(sorted(LOOPBACK_REDIRECT_HOSTS))),
)
_USERINFO = st.sampled_from(["user@", "user:pw@", "@", ":@", "127.0.0.1@", "localhost:80@"])
_FRAGMENTS = st.sampled_from(["#", "#x", "#/cb", "#@evil.example", "#?q=1"])


def _every_kind(scheme: str, authority: str, after: str = "") -> dict[str, bool]:
    """Each rule's verdict on a URL of its kind, with ``after`` appended to the whole URL."""
    return {
        "issuer": issuer_problem(f"{scheme}://{authority}/tenant{after}") is None,
        "provider": provider_url_problem(f"{scheme}://{authority}/token{after}") is None,
        "document": document_url_problem(
            f"{scheme}://{authority}/client.json{after}", allow_loopback=True
        )
        is None,
        "resource": _resource_ok(f"{scheme}://{authority}/mcp{after}"),
        "redirect": is_acceptable_redirect_uri(f"{scheme}://{authority}/cb{after}"),
    }


@given(_ACCEPTED_BASES, _USERINFO)
def test_userinfo_is_refused_by_every_rule(base: tuple[str, str], userinfo: str) -> None:
    scheme, authority = base
    assert all(_every_kind(scheme, authority).values()), base
    refused = _every_kind(scheme, userinfo + authority)
    assert not any(refused.values()), (base, userinfo, refused)


@given(_ACCEPTED_BASES, _FRAGMENTS)
def test_fragments_are_refused_by_every_rule_even_empty(
    base: tuple[str, str], fragment: str
) -> None:
    scheme, authority = base
    assert all(_every_kind(scheme, authority).values()), base
    refused = _every_kind(scheme, authority, fragment)
    assert not any(refused.values()), (base, fragment, refused)


# -- the rules before they were gathered: examples from their tests -----------------------------------

_EXAMPLES: list[tuple[str, Callable[[str], object], str, bool]] = [
    # config.ProxyConfig's issuer check and tests/adapters/test_config_file.py's base_url
    ("issuer", issuer_problem, "https://as.example", True),
    ("issuer", issuer_problem, "https://as.example/tenant", True),
    ("issuer", issuer_problem, "http://127.0.0.1:8123", True),
    ("issuer", issuer_problem, "http://localhost:8000", True),
    ("issuer", issuer_problem, "http://[::1]:8000", True),
    ("issuer", issuer_problem, "http://a.example", False),
    ("issuer", issuer_problem, "http://127.0.0.1:8123/", False),
    ("issuer", issuer_problem, "https://as.example?x=1", False),
    ("issuer", issuer_problem, "https://as.example#f", False),
    ("issuer", issuer_problem, "ftp://as.example", False),
    # tests/providers/test_provider_urls.py
    ("provider", provider_url_problem, "https://idp.example/x", True),
    ("provider", provider_url_problem, "http://127.0.0.1:9000/x", True),
    ("provider", provider_url_problem, "http://[::1]:9000/x", True),
    ("provider", provider_url_problem, "http://localhost/x", True),
    ("provider", provider_url_problem, "http://idp.example/x", False),
    ("provider", provider_url_problem, "http://10.0.0.1/x", False),
    ("provider", provider_url_problem, "http://127.0.0.1.nip.io/x", False),
    ("provider", provider_url_problem, "ftp://idp.example/x", False),
    ("provider", provider_url_problem, "https://idp.example/x#frag", False),
    ("provider", provider_url_problem, "https://user:pw@idp.example/x", False),
    ("provider", provider_url_problem, "https://idp.example/a b", False),
    ("provider", provider_url_problem, "https:///x", False),
    # tests/clients/test_cimd_documents.py
    ("document", document_url_problem, "https://client.example/client.json", True),
    ("document", document_url_problem, "https://8.8.8.8:8443/a/b/metadata", True),
    ("document", document_url_problem, "https://[2606:4700:4700::1111]/client.json", True),
    ("document", document_url_problem, "https://127.0.0.1/client.json", False),
    ("document", document_url_problem, "https://localhost/client.json", False),
    ("document", document_url_problem, "https://169.254.169.254/client.json", False),
    ("document", document_url_problem, "https://[::ffff:127.0.0.1]/client.json", False),
    ("document", document_url_problem, "https://100.64.0.1/client.json", False),
    ("document", document_url_problem, "http://client.example/client.json", False),
    ("document", document_url_problem, "HTTPS://client.example/client.json", False),
    ("document", document_url_problem, "https://user@client.example/client.json", False),
    ("document", document_url_problem, "https://client.example/", False),
    ("document", document_url_problem, "https://client.example/a/%2e%2e/client.json", False),
    ("document", document_url_problem, "https://client.example/client.json?v=1", False),
    ("document", document_url_problem, "https://client.example/client.json#frag", False),
    # tests/rfc/test_rfc8707_resource_indicators.py
    ("resource", _resource_ok, "https://mcp.example.com/mcp", True),
    ("resource", _resource_ok, "http://LOCALHOST:3000/mcp/", True),
    ("resource", _resource_ok, "http://[0:0::1]:8000/mcp", True),
    ("resource", _resource_ok, "http://mcp.example.com/mcp", False),
    ("resource", _resource_ok, "https://mcp.example.com@evil.example/mcp", False),
    ("resource", _resource_ok, "https://mcp.example.com/mcp#", False),
    ("resource", _resource_ok, "https://mcp.example.com/a/%2e%2e/b", False),
    ("resource", _resource_ok, "https://[fe80::1%25eth0]/mcp", False),
    # tests/rfc/test_rfc8252_redirect_uris.py
    ("redirect", is_acceptable_redirect_uri, "http://127.0.0.1:33418/callback", True),
    ("redirect", is_acceptable_redirect_uri, "http://[::1]:8080/callback", True),
    ("redirect", is_acceptable_redirect_uri, "http://localhost:6274/oauth/callback", True),
    ("redirect", is_acceptable_redirect_uri, "https://client.example/users/@me", True),
    ("redirect", is_acceptable_redirect_uri, "com.example.app://callback", True),
    ("redirect", is_acceptable_redirect_uri, "http://localhost@evil.com/cb", False),
    ("redirect", is_acceptable_redirect_uri, "http://127.0.0.1\\@evil.com", False),
    ("redirect", is_acceptable_redirect_uri, "https://good.example/cb/../evil", False),
    ("redirect", is_acceptable_redirect_uri, "http://127.0.0.2/cb", False),
]


@pytest.mark.parametrize(
    ("kind", "check", "url", "accepted"),
    _EXAMPLES,
    ids=[f"{kind}:{url}" for kind, _, url, _ in _EXAMPLES],
)
def test_the_rules_keep_their_earlier_verdicts(
    kind: str, check: Callable[[str], object], url: str, accepted: bool
) -> None:
    verdict = check(url)
    if isinstance(verdict, bool):
        assert verdict is accepted, (kind, url)
    else:
        assert (verdict is None) is accepted, (kind, url, verdict)


@pytest.mark.parametrize(
    ("check", "url", "accepted"),
    [
        # The issuer and the resource now take every loopback host the provider rule always took.
        (issuer_problem, "http://127.0.0.2:8000", True),
        (_resource_ok, "http://127.0.0.2/mcp", True),
        # An empty query or fragment, or userinfo, in the issuer (proxy.toml refused them already).
        (issuer_problem, "https://as.example?", False),
        (issuer_problem, "https://as.example#", False),
        (issuer_problem, "https://user@as.example", False),
        # Under the test policy, plain http for documents on loopback hosts only, not *.localhost.
        (
            lambda url: document_url_problem(url, allow_loopback=True),
            "http://app.localhost/c.json",
            False,
        ),
    ],
)
def test_where_gathering_the_rules_changed_a_verdict(
    check: Callable[[str], object], url: str, accepted: bool
) -> None:
    """The edges where two rules disagreed before and now follow the shared definition."""
    verdict = check(url)
    assert (verdict is True or verdict is None) is accepted, url
