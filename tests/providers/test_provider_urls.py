"""Provider endpoints are https, or http on a loopback host, however the profile is built (RFC 6749
§3.1 / §3.2: TLS for the endpoints that carry credentials), and OIDC discovery lives in the core.

The rule is enforced where an ``UpstreamProfile`` is constructed
(``oauthproxy_core.url_policy.provider_url_problem``), so the Python API (the factories and the
record itself) refuses what ``proxy.toml`` refuses."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from oauthproxy_core.effects import HttpFailure, HttpResponse
from oauthproxy_core.providers import (
    DiscoveryError,
    build_discovery_request,
    github_profile,
    google_profile,
    oauth2_profile,
    oidc_profile_from_discovery,
    parse_discovery_response,
)
from oauthproxy_core.upstream import UpstreamProfile
from oauthproxy_core.url_policy import provider_url_problem

ISSUER = "https://idp.example"
DOCUMENT = {
    "issuer": ISSUER,
    "authorization_endpoint": ISSUER + "/authorize",
    "token_endpoint": ISSUER + "/token",
    "userinfo_endpoint": ISSUER + "/userinfo",
    "jwks_uri": ISSUER + "/jwks",
}


def _github(url: str) -> UpstreamProfile:
    return github_profile(client_id="c", client_secret="s", token_url=url)


def _github_api(url: str) -> UpstreamProfile:
    return github_profile(client_id="c", client_secret="s", api_base_url=url)


def _oauth2(url: str) -> UpstreamProfile:
    return oauth2_profile(
        authorize_url=ISSUER + "/a",
        token_url=ISSUER + "/t",
        userinfo_url=url,
        client_id="c",
        client_secret="s",
    )


def _record(url: str) -> UpstreamProfile:
    return UpstreamProfile(name="x", authorize_url=url, token_url=ISSUER + "/t", client_id="c")


def _google(url: str) -> UpstreamProfile:
    return google_profile(client_id="c", client_secret="s", jwks_uri=url)


def _oidc_override(url: str) -> UpstreamProfile:
    return oidc_profile_from_discovery(
        DOCUMENT, issuer=ISSUER, client_id="c", client_secret="s", authorize_url=url
    )


BUILDERS: dict[str, Callable[[str], UpstreamProfile]] = {
    "github_profile(token_url=)": _github,
    "github_profile(api_base_url=)": _github_api,
    "oauth2_profile(userinfo_url=)": _oauth2,
    "UpstreamProfile(authorize_url=)": _record,
    "google_profile(jwks_uri=)": _google,
    "oidc_profile_from_discovery(authorize_url=)": _oidc_override,
}


@pytest.mark.parametrize("build", BUILDERS.values(), ids=list(BUILDERS))
@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("http://idp.example/x", "http is allowed only on a loopback host"),
        ("http://10.0.0.1/x", "http is allowed only on a loopback host"),
        ("http://127.0.0.1.nip.io/x", "http is allowed only on a loopback host"),
        ("ftp://idp.example/x", "must be an absolute https URL"),
        ("https://idp.example/x#frag", "must not contain a fragment"),
        ("https://user:pw@idp.example/x", "must not contain userinfo"),
        ("https://idp.example/a b", "must not contain spaces"),
        ("https:///x", "must be an absolute https URL"),
    ],
)
def test_rfc6749_3_1_python_api_refuses_provider_urls_without_tls_off_loopback(
    build: Callable[[str], UpstreamProfile], url: str, problem: str
) -> None:
    """Through every factory and the record itself: no profile carries such a URL."""
    with pytest.raises(ValueError, match=problem):
        build(url)


@pytest.mark.parametrize("build", BUILDERS.values(), ids=list(BUILDERS))
@pytest.mark.parametrize(
    "url",
    [
        "https://idp.example/x",
        "http://127.0.0.1:9000/x",
        "http://[::1]:9000/x",
        "http://localhost/x",
    ],
)
def test_https_and_loopback_http_are_accepted(
    build: Callable[[str], UpstreamProfile], url: str
) -> None:
    build(url)


_NAMES = st.one_of(
    st.sampled_from(
        ["localhost", "LocalHost", "localhost.evil.example", "127.0.0.1.evil.example", "evil"]
    ),
    st.from_regex(r"[a-z][a-z0-9-]{0,20}(\.[a-z][a-z0-9-]{0,10}){0,3}", fullmatch=True),
)


@given(st.one_of(st.ip_addresses(), _NAMES))
def test_plain_http_is_accepted_exactly_on_loopback_hosts(host: Any) -> None:
    """The rule, for any host: http only when the host is this machine; https everywhere."""
    if isinstance(host, str):
        authority, loopback = host, host.lower() == "localhost"
    elif host.version == 4:
        authority, loopback = str(host), str(host).split(".")[0] == "127"
    else:
        authority, loopback = f"[{host}]", int(host) == 1
    assert provider_url_problem(f"https://{authority}/p") is None
    assert (provider_url_problem(f"http://{authority}/p") is None) == loopback


# -- OIDC discovery, once, in the core --------------------------------------------------------------


def test_discovery_request_follows_oidc_discovery_4_1() -> None:
    request = build_discovery_request("https://tenant.example/realms/a/")
    assert request.method == "GET"
    # §4.1: a terminating "/" of the issuer is removed before the well-known path is appended.
    assert request.url == "https://tenant.example/realms/a/.well-known/openid-configuration"
    assert ("Accept", "application/json") in request.headers
    assert request.max_response_bytes <= 256 * 1024
    with pytest.raises(DiscoveryError, match="http is allowed only on a loopback host"):
        build_discovery_request("http://idp.example")


def _answer(document: Any, status: int = 200) -> HttpResponse:
    return HttpResponse(status=status, body=json.dumps(document).encode())


@pytest.mark.parametrize(
    ("result", "problem"),
    [
        (HttpFailure(reason="connect"), "failed (connect)"),
        (HttpFailure(reason="too_large"), "is too large"),
        (_answer(DOCUMENT, status=404), "answered HTTP 404"),
        (HttpResponse(status=200, body=b"<html>"), "is not a JSON object"),
        (_answer([DOCUMENT]), "is not a JSON object"),
        (HttpResponse(status=200, body=b"[" * 100_000), "is not a JSON object"),
    ],
)
def test_discovery_failures_are_discovery_errors(
    result: HttpResponse | HttpFailure, problem: str
) -> None:
    with pytest.raises(DiscoveryError) as info:
        parse_discovery_response(result, issuer=ISSUER)
    assert problem in str(info.value)


def test_discovery_document_endpoints_obey_the_url_policy_and_name_the_member() -> None:
    assert parse_discovery_response(_answer(DOCUMENT), issuer=ISSUER) == DOCUMENT
    for member in ("authorization_endpoint", "token_endpoint", "userinfo_endpoint", "jwks_uri"):
        document = {**DOCUMENT, member: "http://idp.example/x"}
        with pytest.raises(DiscoveryError) as info:
            oidc_profile_from_discovery(document, issuer=ISSUER, client_id="c", client_secret="s")
        assert info.value.member == member
        assert info.value.reason == "http is allowed only on a loopback host"


def test_discovery_defaults_identity_source_from_what_the_document_offers() -> None:
    def source(**changes: Any) -> str:
        document = {k: v for k, v in {**DOCUMENT, **changes}.items() if v is not None}
        return oidc_profile_from_discovery(
            document, issuer=ISSUER, client_id="c", client_secret="s"
        ).identity_source

    assert source() == "both"
    assert source(userinfo_endpoint=None) == "id_token"
    assert source(jwks_uri=None) == "userinfo"
    # Neither a UserInfo endpoint nor a JWK Set: nothing could name the user.
    with pytest.raises(DiscoveryError) as info:
        source(jwks_uri=None, userinfo_endpoint=None)
    assert info.value.member == "userinfo_endpoint"
