"""Recorded provider responses (written from GitHub, Google and Microsoft documentation) through the
pure builders and parsers: one test per quirk of spec/interop.md "Upstream providers: the quirks"."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest

from oauthproxy_core.effects import HttpResponse
from oauthproxy_core.providers import (
    IdTokenError,
    entra_profile,
    github_app_profile,
    github_profile,
    google_profile,
    oauth2_profile,
    oidc_profile_from_discovery,
    verify_id_token,
)
from oauthproxy_core.providers.google import GOOGLE_DISCOVERY
from oauthproxy_core.upstream import (
    UpstreamDeniedError,
    UpstreamMixUpError,
    UpstreamProtocolError,
    build_authorize_url,
    build_token_request,
    check_callback_issuer,
    identity_from_claims,
    issuer_matches,
    parse_identity,
    parse_token_response,
)

from .idp import RSA_KEY, jwks_of, sign

NOW = 1_800_000_000
CB = "https://proxy.example/auth/callback"
REFRESH = "ghr_1B4a2e77838347a7E420ce178F2E7c6912E169246c34E1ccbF66C46812d16D5B1A9Dc86A1498"
TID = "9122040d-6c67-4c5b-b112-36a304b66dad"


def resp(
    body: Any, status: int = 200, ctype: str = "application/json", **headers: str
) -> HttpResponse:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return HttpResponse(
        status=status, headers=(("Content-Type", ctype), *headers.items()), body=raw
    )


def query(url: str) -> dict[str, str]:
    return dict(parse_qsl(urlsplit(url).query))


def gh() -> Any:
    return github_profile(client_id="Iv1.8a61f9b3a7aba766", client_secret="s")


# -- GitHub ----------------------------------------------------------------------------------------


def test_github_token_request_asks_for_json() -> None:
    req = build_token_request(
        gh(), code="c", redirect_uri=CB, code_verifier="v" * 43, resource=None
    )
    assert ("Accept", "application/json") in req.headers
    assert req.url == "https://github.com/login/oauth/access_token"


def test_github_oauth_app_token_has_no_refresh_and_no_expiry() -> None:
    t = parse_token_response(
        resp(
            {
                "access_token": "gho_16C7e42F292c6912E7710c838347Ae178B4a",
                "scope": "repo,gist",
                "token_type": "bearer",
            }
        ),
        now=NOW,
    )
    assert t.refresh_token is None and t.expires_at is None and t.scope == ("repo", "gist")


def test_github_form_encoded_token_answer() -> None:
    body = (
        b"access_token=gho_16C7e42F292c6912E7710c838347Ae178B4a&scope=repo%2Cgist&token_type=bearer"
    )
    t = parse_token_response(resp(body, ctype="application/x-www-form-urlencoded"), now=NOW)
    assert t.scope == ("repo", "gist")


@pytest.mark.parametrize(
    "code",
    [
        "bad_verification_code",
        "bad_refresh_token",
        "incorrect_client_credentials",
        "redirect_uri_mismatch",
    ],
)
def test_github_http_200_error(code: str) -> None:
    body = {
        "error": code,
        "error_description": "The code passed is incorrect or expired.",
        "error_uri": "https://docs.github.com/x",
    }
    with pytest.raises((UpstreamDeniedError, UpstreamProtocolError)) as info:
        parse_token_response(resp(body), now=NOW)
    assert "incorrect or expired" not in str(info.value)


def test_github_app_token_rotation_fields() -> None:
    t = parse_token_response(
        resp(
            {
                "access_token": "ghu_16C7e42F292c6912E7710c838347Ae178B4a",
                "expires_in": 28800,
                "refresh_token": REFRESH,
                "refresh_token_expires_in": 15811200,
                "scope": "",
                "token_type": "bearer",
            }
        ),
        now=NOW,
    )
    assert t.expires_at == NOW + 28800 and t.refresh_expires_at == NOW + 15811200
    assert t.scope == ()


def test_github_app_profile_sends_no_scope() -> None:
    p = github_app_profile(client_id="Iv1.x", client_secret="s")
    assert "scope" not in query(
        build_authorize_url(
            p, redirect_uri=CB, state="s" * 43, code_challenge="c" * 43, resource=None
        )
    )


def test_github_user_and_scopes_header() -> None:
    user = {
        "login": "octocat",
        "id": 1,
        "node_id": "MDQ6VXNlcjE=",
        "name": "monalisa octocat",
        "email": None,
        "type": "User",
    }
    ident = parse_identity(
        gh(), resp(user, **{"X-OAuth-Scopes": "repo, user", "X-Accepted-OAuth-Scopes": "user"})
    )
    assert ident.subject == "1"
    assert dict(ident.claims) == {
        "login": "octocat",
        "name": "monalisa octocat",
    }  # null email skipped
    assert ident.scopes == ("repo", "user")
    assert parse_identity(gh(), resp(user, **{"X-OAuth-Scopes": ""})).scopes == ()
    assert parse_identity(gh(), resp(user)).scopes is None
    with pytest.raises(UpstreamProtocolError):
        parse_identity(gh(), resp(user, **{"X-OAuth-Scopes": 'repo, "bad"'}))


def test_github_enterprise_urls() -> None:
    p = github_profile(client_id="c", client_secret="s", enterprise_host="github.example.com")
    assert p.authorize_url == "https://github.example.com/login/oauth/authorize"
    assert p.token_url == "https://github.example.com/login/oauth/access_token"
    assert p.userinfo_url == "https://github.example.com/api/v3/user"
    p = github_profile(client_id="c", client_secret="s", api_base_url="https://ghe.example/api/v3/")
    assert p.userinfo_url == "https://ghe.example/api/v3/user"


def test_claim_mapping() -> None:
    p = github_profile(
        client_id="c", client_secret="s", claim_map=(("handle", "login"), ("display", "name"))
    )
    ident = parse_identity(p, resp({"id": 5, "login": "x", "name": "X Y", "email": "x@e"}))
    assert ident.claims == (("handle", "x"), ("display", "X Y"))
    with pytest.raises(ValueError):
        github_profile(client_id="c", client_secret="s", claim_map=(("sub", "login"),))


# -- Google ----------------------------------------------------------------------------------------


def google() -> Any:
    return google_profile(client_id="1234.apps.googleusercontent.com", client_secret="s")


def test_google_profile_from_discovery() -> None:
    p = google()
    assert p.issuer == "https://accounts.google.com" and p.jwks_uri == GOOGLE_DISCOVERY["jwks_uri"]
    q = query(
        build_authorize_url(
            p, redirect_uri=CB, state="st" * 22, code_challenge="c" * 43, resource=None
        )
    )
    assert q["access_type"] == "offline" and q["prompt"] == "consent" and q["nonce"]
    assert q["scope"] == "openid email profile"
    with pytest.raises(ValueError):
        google_profile(
            client_id="c",
            client_secret="s",
            discovery={**GOOGLE_DISCOVERY, "issuer": "https://evil.example"},
        )


def test_google_id_token_issuer_without_scheme_and_unverified_email() -> None:
    p = google()
    claims = {
        "iss": "accounts.google.com",
        "azp": p.client_id,
        "aud": p.client_id,
        "sub": "10769150350006150715113082367",
        "email": "jsmith@example.com",
        "email_verified": False,
        "iat": NOW,
        "exp": NOW + 3599,
        "nonce": "n",
    }
    out = verify_id_token(p, sign(claims), jwks_of(RSA_KEY), now=NOW, nonce="n")
    assert dict(identity_from_claims(p, out).claims) == {}  # unverified email dropped


def test_google_refresh_without_rotation() -> None:
    t = parse_token_response(
        resp(
            {
                "access_token": "ya29.a0",
                "expires_in": 3599,
                "scope": "openid",
                "token_type": "Bearer",
            }
        ),
        now=NOW,
    )
    assert t.refresh_token is None  # handlers.upstream_token keeps the old one


# -- Entra ID --------------------------------------------------------------------------------------


def test_entra_urls_per_tenant() -> None:
    p = entra_profile(client_id="c", client_secret="s", tenant="organizations")
    assert (
        p.authorize_url == "https://login.microsoftonline.com/organizations/oauth2/v2.0/authorize"
    )
    assert p.token_url == "https://login.microsoftonline.com/organizations/oauth2/v2.0/token"
    assert p.jwks_uri == "https://login.microsoftonline.com/organizations/discovery/v2.0/keys"
    assert p.issuer == "https://login.microsoftonline.com/{tenantid}/v2.0"
    g = entra_profile(client_id="c", client_secret="s", tenant=TID)
    assert g.issuer == f"https://login.microsoftonline.com/{TID}/v2.0"
    with pytest.raises(ValueError):
        entra_profile(client_id="c", client_secret="s", tenant="contoso.onmicrosoft.com")


def test_entra_tenant_issuer_template() -> None:
    template = "https://login.microsoftonline.com/{tenantid}/v2.0"
    good = f"https://login.microsoftonline.com/{TID}/v2.0"
    assert issuer_matches(template, good, tenant_id=TID)
    assert issuer_matches(template, good)
    assert not issuer_matches(template, good, tenant_id="00000000-0000-0000-0000-000000000000")
    assert not issuer_matches(template, "https://login.microsoftonline.com/evil/v2.0")
    assert not issuer_matches(template, f"https://evil.example/{TID}/v2.0")
    p = entra_profile(client_id="app", client_secret="s")
    base = {
        "aud": "app",
        "sub": "AAAA",
        "iat": NOW,
        "exp": NOW + 3600,
        "nonce": "n",
        "tid": TID,
        "iss": good,
    }
    assert verify_id_token(p, sign(base), jwks_of(RSA_KEY), now=NOW, nonce="n")["sub"] == "AAAA"
    other = "72f988bf-86f1-41af-91ab-2d7cd011db47"
    with pytest.raises(IdTokenError):  # iss names another tenant than tid
        verify_id_token(p, sign({**base, "tid": other}), jwks_of(RSA_KEY), now=NOW, nonce="n")
    with pytest.raises(IdTokenError):
        verify_id_token(
            p,
            sign({k: v for k, v in base.items() if k != "tid"}),
            jwks_of(RSA_KEY),
            now=NOW,
            nonce="n",
        )
    check_callback_issuer(p, None)
    check_callback_issuer(p, good)
    with pytest.raises(UpstreamMixUpError):
        check_callback_issuer(p, "https://login.microsoftonline.com/common/v2.0")


def test_entra_scope_prefixing_and_unprefixing() -> None:
    p = entra_profile(
        client_id="c",
        client_secret="s",
        app_id_uri="api://11112222-bbbb",
        scopes=("openid", "offline_access", "read", "api://11112222-bbbb/write"),
    )
    q = query(
        build_authorize_url(
            p, redirect_uri=CB, state="s" * 43, code_challenge="c" * 43, resource=None
        )
    )
    assert q["scope"].split() == [
        "openid",
        "offline_access",
        "api://11112222-bbbb/read",
        "api://11112222-bbbb/write",
    ]
    t = parse_token_response(
        resp(
            {
                "token_type": "Bearer",
                "scope": "api://11112222-bbbb/read api://11112222-bbbb/write openid",
                "expires_in": 3599,
                "access_token": "eyJ0",
                "refresh_token": "0.AAAA",
            }
        ),
        now=NOW,
        profile=p,
    )
    assert t.scope == ("read", "write", "openid")


# -- Generic OIDC and OAuth 2 ---------------------------------------------------------------------


DISCOVERY = {
    "issuer": "https://tenant.auth0.example/",
    "authorization_endpoint": "https://tenant.auth0.example/authorize",
    "token_endpoint": "https://tenant.auth0.example/oauth/token",
    "userinfo_endpoint": "https://tenant.auth0.example/userinfo",
    "jwks_uri": "https://tenant.auth0.example/.well-known/jwks.json",
    "id_token_signing_alg_values_supported": ["HS256", "RS256", "PS256"],
    "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
}


def test_oidc_discovery_profile_with_extra_params() -> None:
    p = oidc_profile_from_discovery(
        DISCOVERY,
        issuer="https://tenant.auth0.example/",
        client_id="c",
        client_secret="s",
        extra_authorize_params=(("audience", "https://api.example"),),
        extra_token_params=(("audience", "https://api.example"),),
    )
    assert p.identity_source == "both" and p.nonce
    assert p.id_token_signing_algs == ("RS256", "PS256")  # HS256 never
    q = query(
        build_authorize_url(
            p,
            redirect_uri=CB,
            state="s" * 43,
            code_challenge="c" * 43,
            resource="https://mcp.example/mcp",
        )
    )
    assert q["audience"] == "https://api.example" and "resource" not in q
    req = build_token_request(
        p, code="c", redirect_uri=CB, code_verifier="v" * 43, resource="https://mcp.example/mcp"
    )
    form = dict(parse_qsl(req.body.decode()))
    assert form["audience"] == "https://api.example" and "resource" not in form
    fwd = oidc_profile_from_discovery(
        DISCOVERY,
        issuer=DISCOVERY["issuer"],
        client_id="c",
        client_secret="s",
        forward_resource=True,
    )
    assert (
        query(
            build_authorize_url(
                fwd,
                redirect_uri=CB,
                state="s" * 43,
                code_challenge="c" * 43,
                resource="https://mcp.example/mcp",
            )
        )["resource"]
        == "https://mcp.example/mcp"
    )
    with pytest.raises(ValueError):
        oidc_profile_from_discovery(
            DISCOVERY, issuer="https://other.example/", client_id="c", client_secret="s"
        )
    with pytest.raises(ValueError):  # nonce is ours
        oidc_profile_from_discovery(
            DISCOVERY,
            issuer=DISCOVERY["issuer"],
            client_id="c",
            client_secret="s",
            extra_authorize_params=(("nonce", "x"),),
        )


def test_oauth2_profile() -> None:
    p = oauth2_profile(
        authorize_url="https://a.example/auth",
        token_url="https://a.example/token",
        userinfo_url="https://a.example/me",
        client_id="c",
        client_secret="s",
        subject_field="uid",
    )
    assert p.identity_source == "userinfo" and not p.nonce
    assert "nonce" not in query(
        build_authorize_url(
            p, redirect_uri=CB, state="s" * 43, code_challenge="c" * 43, resource=None
        )
    )
