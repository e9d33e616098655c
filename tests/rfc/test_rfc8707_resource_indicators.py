"""Resource indicators: RFC 8707 §2 and the MCP "canonical server URI" rules."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from oauthproxy_core.errors import InvalidTargetError
from oauthproxy_core.resources import canonical_resource, select_resource


@pytest.mark.parametrize(
    ("value", "canonical"),
    [
        ("https://mcp.example.com/mcp", "https://mcp.example.com/mcp"),
        ("https://mcp.example.com/mcp/", "https://mcp.example.com/mcp"),
        ("HTTPS://MCP.Example.COM/mcp", "https://mcp.example.com/mcp"),
        ("https://mcp.example.com/MCP", "https://mcp.example.com/MCP"),
        ("https://mcp.example.com:443/mcp", "https://mcp.example.com/mcp"),
        ("https://mcp.example.com:8443/mcp", "https://mcp.example.com:8443/mcp"),
        ("https://mcp.example.com:080/mcp", "https://mcp.example.com:80/mcp"),
        ("https://mcp.example.com/", "https://mcp.example.com"),
        ("https://mcp.example.com", "https://mcp.example.com"),
        ("https://mcp.example.com/?x=1", "https://mcp.example.com?x=1"),
        ("https://mcp.example.com/a/?X=%2F", "https://mcp.example.com/a?X=%2F"),
        ("http://127.0.0.1:80/mcp", "http://127.0.0.1/mcp"),
        ("http://LOCALHOST:3000/mcp/", "http://localhost:3000/mcp"),
        ("http://[::1]:8000/mcp", "http://[::1]:8000/mcp"),
        ("http://[0:0::1]:8000/mcp", "http://[::1]:8000/mcp"),
        # Any loopback host (url_policy.is_loopback_host), like the issuer the resource derives from.
        ("http://127.0.0.2/mcp", "http://127.0.0.2/mcp"),
        ("https://[2001:DB8::1]:443/", "https://[2001:db8::1]"),
    ],
)
def test_rfc8707_2_canonical_form(value: str, canonical: str) -> None:
    assert canonical_resource(value) == canonical
    assert canonical_resource(canonical) == canonical


@pytest.mark.parametrize(
    "value",
    [
        "",
        "mcp.example.com/mcp",
        "/mcp",
        "https:mcp.example.com",
        "https:///mcp",
        "https://mcp.example.com/mcp#frag",
        "https://mcp.example.com/mcp#",
        "https://user@mcp.example.com/mcp",
        "https://mcp.example.com@evil.example/mcp",
        "http://mcp.example.com/mcp",
        "http://127.0.0.1.nip.io/mcp",
        "http://[::ffff:127.0.0.1]/mcp",
        "ftp://mcp.example.com/mcp",
        "urn:example:mcp",
        "https://mcp.example.com/m cp",
        " https://mcp.example.com/mcp",
        "https://mcp.example.com/mcp\n",
        "https://mcp.example.com/\u00e9",
        "https://mcp.example.com\u3002evil/mcp",
        "https://mcp.example.com\\evil/mcp",
        "https://mcp.example.com/a/../b",
        "https://mcp.example.com/a/%2e%2e/b",
        "https://mcp.example.com/a//",
        "https://mcp.example.com:0/mcp",
        "https://mcp.example.com:65536/mcp",
        "https://mcp.example.com:/mcp",
        "https://mcp.example.com:x/mcp",
        "https://[fe80::1%25eth0]/mcp",
        "https://mcp.example.com/%zz",
        "https://mcp.example.com/" + "a" * 2000,
    ],
)
def test_rfc8707_2_invalid_resources_rejected(value: str) -> None:
    with pytest.raises(InvalidTargetError):
        canonical_resource(value)


_label = st.from_regex(r"[A-Za-z][A-Za-z0-9]{0,6}", fullmatch=True)
_segment = st.from_regex(r"[A-Za-z0-9_~-]{1,6}", fullmatch=True)


@st.composite
def resources(draw: st.DrawFn) -> str:
    scheme = draw(st.sampled_from(["https", "HTTPS", "Https"]))
    host = ".".join(draw(st.lists(_label, min_size=1, max_size=3)))
    port = draw(st.sampled_from(["", ":443", ":8443", ":1"]))
    path = "".join("/" + s for s in draw(st.lists(_segment, max_size=3)))
    if draw(st.booleans()):
        path += "/"
    query = draw(st.sampled_from(["", "?a=1", "?"]))
    return f"{scheme}://{host}{port}{path}{query}"


@given(resources())
def test_canonical_resource_is_idempotent_and_normalised(value: str) -> None:
    canonical = canonical_resource(value)
    assert canonical_resource(canonical) == canonical
    scheme, _, rest = canonical.partition("://")
    authority = rest.split("/", 1)[0].split("?", 1)[0]
    assert scheme == "https"
    assert authority == authority.lower()
    assert not authority.endswith(":443")
    assert not canonical.partition("?")[0].endswith("/")


@given(resources(), resources())
def test_canonical_equality_means_same_resource(a: str, b: str) -> None:
    # Two spellings canonicalise equal only if they differ in nothing but case of scheme/host,
    # a default port and a single trailing slash.
    def key(value: str) -> tuple[str, str, str]:
        _, _, rest = value.partition("://")
        rest, question, query = rest.partition("?")
        authority, slash, path = rest.partition("/")
        authority = authority.lower().removesuffix(":443")
        path = (slash + path).removesuffix("/")
        return authority, path, question + query

    assert (canonical_resource(a) == canonical_resource(b)) == (key(a) == key(b))


ALLOWED = ("https://mcp.example.com/mcp", "https://mcp.example.com/other")


def test_select_resource_defaults_to_first() -> None:
    assert select_resource(None, ALLOWED) == ALLOWED[0]


@pytest.mark.parametrize(
    "requested",
    ["https://mcp.example.com/other", "https://MCP.example.com:443/other/"],
)
def test_select_resource_canonicalises(requested: str) -> None:
    assert select_resource(requested, ALLOWED) == ALLOWED[1]


@pytest.mark.parametrize(
    "requested",
    [
        "https://mcp.example.com",
        "https://mcp.example.com/mcp/x",
        "https://mcp.example.com/MCP",
        "https://evil.example/mcp",
        "http://mcp.example.com/mcp",
        "https://mcp.example.com/mcp#x",
        "",
    ],
)
def test_select_resource_rejects_other_resources(requested: str) -> None:
    with pytest.raises(InvalidTargetError):
        select_resource(requested, ALLOWED)


def test_select_resource_without_configuration() -> None:
    with pytest.raises(InvalidTargetError):
        select_resource(None, ())
