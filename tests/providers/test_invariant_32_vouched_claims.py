"""spec/security.md 32 through the real app: only claims the provider vouches for become identity.

Every test signs a user in through ``OAuthProxyApp`` under uvicorn on loopback (DCR, authorize,
consent, the scripted provider's redirect back, the callback, the token exchange), then calls the MCP
path through the real ``Gateway`` to an echo server and reads what the MCP server received. The
provider is scripted in the shapes the built-in profiles expect (OIDC UserInfo, Google and Entra ID
tokens signed with a key from its JWK Set and carrying the transaction's nonce, GitHub's ``GET /user``
and ``GET /user/emails``), and each test puts a victim's address where that shape carries an email
the provider does not vouch for. The address must be in neither the access token nor the
``X-OAuthProxy-Claim-*`` headers; the same address vouched for is forwarded.

The incident: "nOAuth" (2023). Entra never sends ``email_verified``, a tenant's administrator sets any
``email`` and ``preferred_username`` for its users, and with the multi-tenant ``common`` endpoint every
tenant can sign in: applications that keyed accounts on those claims were taken over.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from typing import Any

import attrs
import httpx
import pytest

from oauthproxy_adapters.asgi import OAuthProxyApp
from oauthproxy_adapters.gateway import Gateway
from oauthproxy_adapters.testing.flow import Call, Reply, drive, login
from oauthproxy_core.providers import (
    entra_profile,
    github_app_profile,
    github_profile,
    google_profile,
    oidc_profile_from_discovery,
)
from oauthproxy_core.upstream import UpstreamProfile
from tests.adapters.live_servers import UvicornThread, async_proxy
from tests.harness import make_config

from .idp import ABSENT, CLIENT_ID, IDP, ClaimsProvider, at_idp

VICTIM = "ceo@victim.example"
TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"


class EchoMcp:
    """The MCP server behind the gateway: answers with the headers it received."""

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        while (await receive()).get("more_body"):
            pass
        headers = {k.decode().lower(): v.decode("latin-1") for k, v in scope["headers"]}
        body = json.dumps(headers).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": body})


@pytest.fixture(scope="module")
def mcp_server() -> Iterator[str]:
    server = UvicornThread(lambda _base: EchoMcp())
    try:
        yield server.base + "/mcp"
    finally:
        server.stop()


@attrs.frozen
class SignedIn:
    token_claims: dict[str, Any]
    headers: dict[str, str]
    provider: ClaimsProvider

    def identity_headers(self) -> dict[str, str]:
        return {k: v for k, v in self.headers.items() if k.startswith("x-oauthproxy-")}


def sign_in(
    mcp_server: str, profile: UpstreamProfile, provider: Callable[[str], ClaimsProvider]
) -> SignedIn:
    """A complete sign-in through the ASGI app, then one request through the gateway."""
    made: dict[str, Any] = {}

    def build(base: str) -> Any:
        config = make_config(issuer=base, upstream=profile)
        made["idp"] = provider(config.callback_url)
        proxy = async_proxy(config, made["idp"])
        return OAuthProxyApp(proxy, Gateway(mcp_server, mount_path=config.mcp_path))

    server = UvicornThread(build)
    try:
        with httpx.Client(timeout=10.0, trust_env=False) as http:

            def send(call: Call) -> Reply:
                r = http.request(
                    call.method, call.url, headers=list(call.headers), content=call.body
                )
                items = tuple((k.lower(), v) for k, v in r.headers.multi_items())
                return Reply(r.status_code, items, r.content)

            session = drive(login(server.base, made["idp"]), send)
            token = session.tokens["access_token"]
            seen = http.post(
                server.base + "/mcp", content=b"{}", headers={"Authorization": f"Bearer {token}"}
            )
            assert seen.status_code == 200, seen.text
    finally:
        server.stop()
    payload = token.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return SignedIn(token_claims=claims, headers=seen.json(), provider=made["idp"])


def assert_email(signed_in: SignedIn, expected: str | None, display: tuple[str, ...] = ()) -> None:
    """``expected`` is the email in the token and in the forwarded identity headers; without one,
    the victim's address appears nowhere but under the ``display`` claim names."""
    assert signed_in.token_claims.get("email") == expected, signed_in.token_claims
    assert signed_in.identity_headers().get("x-oauthproxy-claim-email") == expected
    if expected is None:
        shown = {f"x-oauthproxy-claim-{name.replace('_', '-')}" for name in display}
        rest = [
            {k: v for k, v in signed_in.token_claims.items() if k not in display},
            {k: v for k, v in signed_in.identity_headers().items() if k not in shown},
        ]
        assert VICTIM not in json.dumps(rest), rest


# --------------------------------------------------------------------------------------------------
# OpenID Connect: email_verified in the same document


def oidc_userinfo_profile() -> UpstreamProfile:
    discovery = {
        "issuer": IDP,
        "authorization_endpoint": IDP + "/authorize",
        "token_endpoint": IDP + "/token",
        "userinfo_endpoint": IDP + "/userinfo",
    }
    return oidc_profile_from_discovery(
        discovery, issuer=IDP, client_id=CLIENT_ID, client_secret="s"
    )


# `True` and the exact string "true" (AWS Cognito's UserInfo) vouch; nothing else does.
VOUCHING = [pytest.param(True, True, id="true"), pytest.param("true", True, id="string-true")]
NOT_VOUCHING = [
    pytest.param(ABSENT, False, id="absent"),
    pytest.param(None, False, id="null"),
    pytest.param(False, False, id="false"),
    pytest.param("false", False, id="string-false"),
    pytest.param("True", False, id="string-True"),
    pytest.param(1, False, id="one"),
    pytest.param("1", False, id="string-1"),
]


@pytest.mark.parametrize(("email_verified", "vouched"), NOT_VOUCHING + VOUCHING)
def test_invariant_32_oidc_userinfo_email_only_with_email_verified_true(
    mcp_server: str, email_verified: object, vouched: bool
) -> None:
    user = {"sub": "u-1", "email": VICTIM, "email_verified": email_verified, "name": "Mallory"}
    signed_in = sign_in(
        mcp_server,
        oidc_userinfo_profile(),
        lambda cb: ClaimsProvider(callback_url=cb, claims=user, id_token=False),
    )
    assert signed_in.token_claims["sub"] == "oidc:u-1"
    assert signed_in.headers["x-oauthproxy-subject"] == "oidc:u-1"
    assert signed_in.headers["x-oauthproxy-claim-name"] == "Mallory"  # display data still flows
    assert_email(signed_in, VICTIM if vouched else None)


def google_test_profile() -> UpstreamProfile:
    return at_idp(google_profile(client_id=CLIENT_ID, client_secret="s"))


@pytest.mark.parametrize(("email_verified", "vouched"), [*NOT_VOUCHING[:4], VOUCHING[0]])
def test_invariant_32_google_id_token_email_only_with_email_verified_true(
    mcp_server: str, email_verified: object, vouched: bool
) -> None:
    claims = {"iss": IDP, "sub": "1084", "email": VICTIM, "email_verified": email_verified}
    signed_in = sign_in(
        mcp_server,
        google_test_profile(),
        lambda cb: ClaimsProvider(callback_url=cb, claims=claims, id_token=True),
    )
    assert signed_in.provider.paths.count("/userinfo") == 0  # identity from the ID token
    assert signed_in.headers["x-oauthproxy-subject"] == "google:1084"
    assert_email(signed_in, VICTIM if vouched else None)


# --------------------------------------------------------------------------------------------------
# Entra ID: no email_verified ever; xms_edov or nothing; preferred_username is never `login`


def entra_test_profile(**fields: Any) -> UpstreamProfile:
    return entra_profile(
        client_id=CLIENT_ID, client_secret="s", tenant="common", authority=IDP, **fields
    )


def entra_claims(**more: Any) -> dict[str, Any]:
    """What a hostile tenant's ID token says: its admin set the victim's address on a user."""
    return {
        "iss": f"{IDP}/{TENANT}/v2.0",
        "tid": TENANT,
        "oid": "00000000-0000-0000-0000-00000000a11c",
        "sub": "AAAAAAAAAAAAAAAAAAAAAIkzqFVrSaSaFHy782bbtaQ",
        "preferred_username": VICTIM,
        "email": VICTIM,
        "name": "Mallory",
        **more,
    }


@pytest.mark.parametrize(
    "xms_edov",
    [
        pytest.param(ABSENT, id="absent"),
        pytest.param(False, id="false"),
        pytest.param(None, id="null"),
        pytest.param("false", id="string-false"),
        pytest.param(1, id="one"),
    ],
)
def test_invariant_32_entra_nOAuth_unverified_email_is_not_identity(
    mcp_server: str, xms_edov: object
) -> None:
    claims = entra_claims(xms_edov=xms_edov, email_verified=True)  # an email_verified Entra never
    # sends proves nothing either: only xms_edov is Entra's word.
    signed_in = sign_in(
        mcp_server,
        entra_test_profile(),
        lambda cb: ClaimsProvider(callback_url=cb, claims=claims, id_token=True),
    )
    assert signed_in.token_claims["sub"] == "entra:" + claims["sub"]
    assert "login" not in signed_in.token_claims
    assert "x-oauthproxy-claim-login" not in signed_in.headers
    # The tenant-controlled name is display data under its own name, never `login`.
    assert signed_in.headers["x-oauthproxy-claim-preferred-username"] == VICTIM
    assert_email(signed_in, None, display=("preferred_username",))


def test_invariant_32_entra_email_with_xms_edov_true_is_forwarded(mcp_server: str) -> None:
    claims = entra_claims(xms_edov=True)
    signed_in = sign_in(
        mcp_server,
        entra_test_profile(),
        lambda cb: ClaimsProvider(callback_url=cb, claims=claims, id_token=True),
    )
    assert_email(signed_in, VICTIM)
    assert "x-oauthproxy-claim-login" not in signed_in.headers


def test_invariant_32_entra_oid_subject_is_qualified_by_tenant(mcp_server: str) -> None:
    claims = entra_claims()
    signed_in = sign_in(
        mcp_server,
        entra_test_profile(subject_field="oid"),
        lambda cb: ClaimsProvider(callback_url=cb, claims=claims, id_token=True),
    )
    assert signed_in.headers["x-oauthproxy-subject"] == f"entra:{TENANT}:{claims['oid']}"
    assert_email(signed_in, None, display=("preferred_username",))


# --------------------------------------------------------------------------------------------------
# GitHub: GET /user's email is the public profile address; only /user/emails vouches


def github_test_profile(app: bool = False, **fields: Any) -> UpstreamProfile:
    factory = github_app_profile if app else github_profile
    return factory(
        client_id=CLIENT_ID,
        client_secret="s",
        authorize_url=IDP + "/login/oauth/authorize",
        token_url=IDP + "/login/oauth/access_token",
        api_base_url=IDP + "/api/v3",
        **fields,
    )


GITHUB_USER = {"id": 4242, "login": "mallory", "name": "Mallory", "email": VICTIM}


def github_provider(
    emails: list[dict[str, Any]] | None, granted: str
) -> Callable[[str], ClaimsProvider]:
    return lambda cb: ClaimsProvider(
        callback_url=cb,
        claims=GITHUB_USER,
        id_token=False,
        iss=IDP + "/login/oauth",
        emails=emails,
        granted=granted,
    )


@pytest.mark.parametrize(
    ("emails", "granted"),
    [
        # No user:email scope: /user/emails is not asked, and /user's public email is not taken.
        pytest.param(None, "read:user", id="no-user-email-scope"),
        # The scope, but the listed address is unverified, or verified but not the primary one.
        pytest.param(
            [{"email": VICTIM, "primary": True, "verified": False}],
            "read:user, user:email",
            id="primary-unverified",
        ),
        pytest.param(
            [
                {"email": "m@attacker.example", "primary": True, "verified": False},
                {"email": VICTIM, "primary": False, "verified": True},
            ],
            "read:user, user:email",
            id="verified-not-primary",
        ),
        # The scope, and GitHub refuses the list (403).
        pytest.param(None, "user:email", id="emails-forbidden"),
    ],
)
def test_invariant_32_github_public_profile_email_is_not_identity(
    mcp_server: str, emails: list[dict[str, Any]] | None, granted: str
) -> None:
    signed_in = sign_in(
        mcp_server,
        github_test_profile(scopes=("read:user", "user:email")),
        github_provider(emails, granted),
    )
    assert signed_in.headers["x-oauthproxy-subject"] == "github:4242"
    assert signed_in.headers["x-oauthproxy-claim-login"] == "mallory"
    assert_email(signed_in, None)
    asked = signed_in.provider.paths.count("/api/v3/user/emails")
    assert asked == (0 if "user:email" not in granted else 1)


@pytest.mark.parametrize("app", [False, True])
def test_invariant_32_github_verified_primary_email_is_forwarded(
    mcp_server: str, app: bool
) -> None:
    emails = [
        {"email": "old@victim.example", "primary": False, "verified": True},
        {"email": VICTIM, "primary": True, "verified": True, "visibility": "private"},
    ]
    # A GitHub App's token carries no OAuth scopes: its permissions decide, so it always asks.
    granted = "" if app else "read:user, user:email"
    profile = github_test_profile(app) if app else github_test_profile(scopes=("user:email",))
    signed_in = sign_in(mcp_server, profile, github_provider(emails, granted))
    assert_email(signed_in, VICTIM)
    assert signed_in.provider.paths.count("/api/v3/user/emails") == 1
