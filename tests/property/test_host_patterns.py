"""Host patterns of the ``[clients]`` lists (``url_policy.HostPattern``, admission.py), as properties.

The operator's lists decide which metadata document hosts are fetched (spec/security.md 23: a refused
host is never contacted) and which hosts redirect URIs may use (spec/security.md 1, 3). An oracle
written here, independently of the code, compares hosts label by label: an exact pattern names its
host only; ``*.b`` names every host with one or more whole labels before ``b``. Hypothesis checks:

- the matcher agrees with the oracle, so it is never a suffix match without the dot
  (``evilvscode.dev`` is not below ``vscode.dev``) and a wildcard never names its own base;
- case never matters, and one final dot never does (two are no host at all);
- a host without a canonical form (non-ASCII, percent-encoded, an IPv4 address in a spelling other
  than dotted-quad, a zone identifier) is named by no pattern: an allow list refuses it and a deny
  list counts it as denied, so the lists fail closed, whatever ``url_policy`` lets through;
- an internationalised name is named only in its A-label (``xn--``) form, the form URLs carry;
- IP addresses compare by value (``[::1]``, ``::1`` and ``0:0::1`` are one address);
- every pattern the parser accepts prints as text the parser reads back to the same pattern.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from hypothesis import assume, example, given
from hypothesis import strategies as st

from oauthproxy_core.admission import CIMD_HOST_DENIED, CIMD_HOST_NOT_ALLOWED, ClientAdmission
from oauthproxy_core.url_policy import (
    HostPattern,
    canonical_host,
    document_url_problem,
    parse_host_pattern,
)

# Few characters, so that hosts and patterns share labels and suffixes often.
_LABEL = st.text(alphabet="abAB-_1x", min_size=1, max_size=4)
#: A last label that is no number (a numeric one makes the host an IPv4 address to a browser).
_LAST = _LABEL.filter(lambda label: not label.isdigit())
_NAME = st.builds(
    lambda labels, last: ".".join([*labels, last]), st.lists(_LABEL, max_size=3), _LAST
)
_BASE = st.builds(lambda first, name: f"{first}.{name}", _LABEL, _NAME)  # two labels or more


def _labels(host: str) -> list[str]:
    return host.lower().removesuffix(".").split(".")


def _oracle(pattern: str, host: str) -> bool:
    """Label by label, independently of the code under test."""
    wanted = _labels(pattern.removeprefix("*."))
    got = _labels(host)
    if not pattern.startswith("*."):
        return got == wanted
    return len(got) > len(wanted) and got[-len(wanted) :] == wanted


@given(base=_BASE, host=_NAME, wildcard=st.booleans())
@example(base="vscode.dev", host="evilvscode.dev", wildcard=True)
@example(base="vscode.dev", host="vscode.dev", wildcard=True)
@example(base="vscode.dev", host="a.b.vscode.dev", wildcard=True)
@example(base="claude.ai", host="sub.claude.ai", wildcard=False)
def test_host_pattern_matches_whole_labels_as_the_oracle_does(
    base: str, host: str, wildcard: bool
) -> None:
    text = ("*." if wildcard else "") + base
    assert parse_host_pattern(text).matches(host) == _oracle(text, host)


@given(base=_BASE, prefix=st.text(alphabet="abAB-_1x.", min_size=1, max_size=6))
def test_host_pattern_is_never_a_suffix_match_without_the_dot(base: str, prefix: str) -> None:
    assume(not prefix.endswith("."))
    host = prefix + base  # ends with the base's characters, but not at a label boundary
    assert not parse_host_pattern(base).matches(host)
    assert not parse_host_pattern("*." + base).matches(host)
    # The same host with the dot is below the base: only the wildcard names it.
    below = prefix + "." + base
    if canonical_host(below) is not None:
        assert parse_host_pattern("*." + base).matches(below)
        assert not parse_host_pattern(base).matches(below)


@given(base=_BASE, host=_NAME, wildcard=st.booleans())
def test_host_pattern_ignores_case_and_one_final_dot(base: str, host: str, wildcard: bool) -> None:
    text = ("*." if wildcard else "") + base
    verdict = parse_host_pattern(text).matches(host)
    for spelling in (host.upper(), host.lower(), host.swapcase(), host + "."):
        assert parse_host_pattern(text).matches(spelling) == verdict
    for written in (text.upper(), text + "."):
        assert parse_host_pattern(written) == parse_host_pattern(text)
    assert not parse_host_pattern(text).matches(host + "..")


@given(
    host=st.one_of(
        st.text(min_size=1, max_size=12),
        st.builds(lambda n: n + ".é", _NAME),
        st.builds(lambda n: n + "%2e", _NAME),
        st.sampled_from(["127.1", "0x7f.0.0.1", "127.000.0.1", "fe80::1%eth0", "[::1", "a..b"]),
    ),
    patterns=st.lists(st.one_of(_BASE, st.builds(lambda b: "*." + b, _BASE)), max_size=3),
)
@example(host="A:", patterns=[])  # the URL's host is `a` (an empty port): not this property's
def test_host_pattern_a_host_without_canonical_form_fails_closed(
    host: str, patterns: list[str]
) -> None:
    assume(canonical_host(host) is None)
    assert not any(parse_host_pattern(p).matches(host) for p in patterns)
    url = f"https://{host}/client.json"
    try:
        in_url = urlsplit(url).hostname
    except ValueError:
        in_url = None
    # A drawn text with `:` or `@` may put another, canonical, host into the URL: then the lists
    # judge that host, rightly (`https://A:/` is the host `a` with an empty port).
    assume(in_url is None or canonical_host(in_url) is None)
    policy = ClientAdmission(cimd_allowed_hosts=[*patterns, "client.example"] if patterns else None)
    deny = ClientAdmission(cimd_denied_hosts=["client.example"])
    if document_url_problem(url) is None:
        # url_policy let the URL through (``127.1`` is a valid reg-name): the lists still decide.
        denied = deny.document_refusal(url)
        assert denied is not None and denied.cause == CIMD_HOST_DENIED
        if policy.cimd_allowed_hosts is not None:
            refusal = policy.document_refusal(url)
            assert refusal is not None and refusal.cause == CIMD_HOST_NOT_ALLOWED


@given(name=st.text(alphabet="abcdüéß", min_size=1, max_size=6))
def test_host_pattern_names_an_internationalised_host_only_in_its_a_label_form(name: str) -> None:
    assume(not name.isascii())
    try:
        a_label = name.encode("idna").decode("ascii")
    except UnicodeError:
        return
    pattern = parse_host_pattern(f"{a_label}.example")
    assert pattern.matches(f"{a_label.upper()}.example")
    # The Unicode spelling of the same name is no host a URL of ours carries: never matched.
    assert not pattern.matches(f"{name}.example")
    assert not parse_host_pattern("*.b.example").matches(f"{name}.b.example")


@given(address=st.ip_addresses())
def test_host_pattern_compares_ip_addresses_by_value(address: object) -> None:
    assert isinstance(address, ipaddress.IPv4Address | ipaddress.IPv6Address)
    pattern = parse_host_pattern(str(address))
    if address.version == 6:
        assert pattern.matches(f"[{address}]")
        assert pattern.matches(f"[{address.exploded}]")
        assert parse_host_pattern(f"[{address.exploded.upper()}]") == pattern
    else:
        assert pattern.matches(str(address))
        # Only dotted-quad names an IPv4 address: "127.1" is no spelling of 127.0.0.1 here.
        assert not pattern.matches(str(int(address)))


@given(text=st.one_of(_BASE, st.builds(lambda b: "*." + b, _BASE), st.ip_addresses().map(str)))
def test_host_pattern_prints_as_text_that_parses_back_to_itself(text: str) -> None:
    pattern = parse_host_pattern(text)
    assert parse_host_pattern(str(pattern)) == pattern
    assert isinstance(pattern, HostPattern) and str(pattern) == str(pattern).lower()
