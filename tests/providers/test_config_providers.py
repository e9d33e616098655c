"""``[upstream]`` keys of the providers issue: built-in google/entra profiles, GitHub Apps and
Enterprise, claim maps, extra parameters, identity source. Every problem names its key."""

from __future__ import annotations

from typing import Any

import pytest

from oauthproxy_adapters.config_file import ConfigError, parse_settings

SECRET = "provider-secret-never-printed"


def settings(**upstream: Any) -> Any:
    data = {
        "server": {"base_url": "https://mcp.example"},
        "upstream": {"client_id": "cid", "client_secret": SECRET, **upstream},
    }
    return parse_settings(data).upstream


def error(**upstream: Any) -> str:
    with pytest.raises(ConfigError) as info:
        settings(**upstream)
    assert SECRET not in str(info.value)
    return str(info.value)


def test_google_built_in() -> None:
    p = settings(provider="google")
    assert p.name == "google" and p.issuer == "https://accounts.google.com"
    assert p.identity_source == "id_token" and p.nonce and p.jwks_uri
    assert ("access_type", "offline") in p.extra_authorize_params


def test_entra_built_in() -> None:
    p = settings(
        provider="entra", tenant="organizations", app_id_uri="api://app", scopes=["openid", "read"]
    )
    assert p.token_url == "https://login.microsoftonline.com/organizations/oauth2/v2.0/token"
    assert p.scope_prefix == "api://app/"
    assert error(provider="entra", tenant="contoso.com").startswith("[upstream].tenant:")
    assert error(provider="github", tenant="common").startswith("[upstream].tenant: only used")


def test_github_app_and_enterprise() -> None:
    p = settings(
        provider="github",
        github_app=True,
        api_base_url="https://ghe.example/api/v3",
        authorize_url="https://ghe.example/login/oauth/authorize",
        token_url="https://ghe.example/login/oauth/access_token",
    )
    assert p.scopes == () and p.userinfo_url == "https://ghe.example/api/v3/user"
    assert p.scopes_header == "X-OAuth-Scopes"
    assert settings(provider="github").scopes == ("read:user",)
    assert error(provider="oauth2", github_app=True).startswith("[upstream].github_app:")


def test_claims_and_extra_params() -> None:
    p = settings(
        provider="github",
        claims={"handle": "login"},
        extra_authorize_params={"allow_signup": "false"},
        extra_token_params={"audience": "x"},
        forward_resource=True,
    )
    assert p.claim_map == (("handle", "login"),)
    assert p.extra_authorize_params == (("allow_signup", "false"),)
    assert p.extra_token_params == (("audience", "x"),) and p.forward_resource
    assert error(provider="github", claims={"a": 1}).startswith("[upstream].claims:")
    # The core's refusal names the key it is about.
    assert error(provider="github", claims={"sub": "login"}).startswith("[upstream].claims: ")
    assert error(provider="github", extra_authorize_params={"state": "x"}).startswith(
        "[upstream].extra_authorize_params: may not set state"
    )


OAUTH2 = {
    "provider": "oauth2",
    "authorize_url": "https://sso.example/authorize",
    "token_url": "https://sso.example/token",
    "userinfo_url": "https://sso.example/me",
}


def test_invariant_32_how_each_provider_vouches_for_email() -> None:
    """spec/security.md 32: the built-in providers know their vouching claim; oauth2 has none unless
    the file names it; oidc's can be renamed; the built-in ones cannot be overridden."""
    assert settings(provider="google").email_verified_claim == "email_verified"
    entra = settings(provider="entra")
    assert entra.email_verified_claim == "xms_edov"
    assert "login" not in dict(entra.claim_map)
    github = settings(provider="github")
    assert github.email_verified_claim is None
    assert github.verified_email_url == "https://api.github.com/user/emails"
    assert settings(**OAUTH2).email_verified_claim is None
    assert settings(**OAUTH2, email_verified_claim="verified").email_verified_claim == "verified"
    explicit = {k: v for k, v in OAUTH2.items() if k != "provider"}
    assert settings(provider="oidc", **explicit).email_verified_claim == "email_verified"
    assert settings(provider="entra", **explicit).email_verified_claim == "xms_edov"
    for provider in ("github", "google", "entra"):
        assert error(provider=provider, email_verified_claim="x").startswith(
            "[upstream].email_verified_claim:"
        )


@pytest.mark.parametrize("field", ["preferred_username", "upn", "email", "name", "unique_name"])
def test_invariant_32_mutable_claims_are_refused_as_login_and_subject(field: str) -> None:
    assert "login may not come from" in error(**OAUTH2, claims={"login": field})
    assert error(**OAUTH2, userinfo_subject_field=field).startswith(
        "[upstream].userinfo_subject_field:"
    )
    assert error(provider="entra", userinfo_subject_field=field).startswith(
        "[upstream].userinfo_subject_field:"
    )
    # Under its own name a mutable field is display data, and allowed.
    if field != "email":
        assert settings(**OAUTH2, claims={field: field}).claim_map == ((field, field),)
    assert "email can only come from" in error(**OAUTH2, claims={"email": "upn"})


def test_identity_source() -> None:
    assert error(provider="github", identity_source="id_token").startswith(
        "[upstream].identity_source:"
    )
    assert error(
        provider="oauth2",
        identity_source="x",
        authorize_url="https://a/",
        token_url="https://a/t",
        userinfo_url="https://a/u",
    ).startswith("[upstream].identity_source: must be one of")
    assert "needs a jwks_uri" in error(
        provider="oauth2",
        identity_source="both",
        authorize_url="https://a/",
        token_url="https://a/t",
        userinfo_url="https://a/u",
    )
