"""Shared fixtures for the client credentials grant's tests (RFC 6749 §4.4): machine clients written
with the ``[[clients.static]]`` contract's keys, parsed by the configuration parser, and a harness
that serves them (with a document host for a ``jwks_uri``)."""

from __future__ import annotations

import base64
import json
from typing import Any

from oauthproxy_adapters.config_file import parse_settings
from oauthproxy_core.client_auth import ASSERTION_TYPE
from oauthproxy_core.records import Client
from tests.clients.support import DocumentHost, assertion, new_ec_key, public_jwks
from tests.harness import ISSUER, Harness, make_config

SCOPES = ("mcp", "mcp:read", "mcp:write", "offline_access")
CI_SECRET = "ci-bot-secret-0123456789"
POSTER_SECRET = "poster-secret-0123456789"
APP_SECRET = "app-secret-0123456789abc"
KEY = new_ec_key("signer-key")
OTHER_KEY = new_ec_key("signer-key")
FETCHED_KEY = new_ec_key("fetched-key")
JWKS_URL = "https://keys.example/ci/jwks.json"

#: The contract's keys, as an operator writes them (``[[clients.static]]``).
ENTRIES: list[dict[str, Any]] = [
    {
        "client_id": "ci-bot",
        "client_secret_env": "CI_BOT_SECRET",
        "token_endpoint_auth_method": "client_secret_basic",
        "grant_types": ["client_credentials"],
        "scopes": ["mcp:read", "mcp:write"],
        "subject": "service:ci-bot",
    },
    {
        # Both grants; no scopes: every supported scope.
        "client_id": "poster",
        "client_secret": POSTER_SECRET,
        "token_endpoint_auth_method": "client_secret_post",
        "grant_types": ["client_credentials", "authorization_code", "refresh_token"],
        "redirect_uris": ["https://poster.example/cb"],
        "subject": "service:poster",
    },
    {
        "client_id": "signer",
        "token_endpoint_auth_method": "private_key_jwt",
        "jwks": public_jwks(KEY),
        "grant_types": ["client_credentials"],
        "scopes": ["mcp"],
        "subject": "service:signer",
    },
    {
        "client_id": "fetcher",
        "token_endpoint_auth_method": "private_key_jwt",
        "jwks_uri": JWKS_URL,
        "grant_types": ["client_credentials"],
        "subject": "agent:fetcher",
    },
    # Not allowed the grant: a confidential and a public client of the authorization code grant.
    {"client_id": "app", "client_secret": APP_SECRET, "redirect_uris": ["https://app.example/cb"]},
    {"client_id": "pub", "redirect_uris": ["http://127.0.0.1:9000/cb"]},
]


def static_clients(entries: list[dict[str, Any]] = ENTRIES) -> tuple[Client, ...]:
    """The entries through the configuration parser, as ``oauthproxy serve`` reads them."""
    document = {
        "server": {"base_url": ISSUER, "scopes_supported": list(SCOPES)},
        "upstream": {"provider": "github", "client_id": "gh", "client_secret": "gh-secret"},
        "clients": {"static": entries},
    }
    settings = parse_settings(document, environ={"CI_BOT_SECRET": CI_SECRET})
    return settings.proxy.static_clients


def harness(**config: Any) -> tuple[Harness, DocumentHost]:
    fields: dict[str, Any] = {"static_clients": static_clients(), "scopes_supported": SCOPES}
    fields.update(config)
    h = Harness(make_config(**fields))
    host = DocumentHost(callback_url=h.config.callback_url)
    host.serve(JWKS_URL, public_jwks(FETCHED_KEY))
    h.upstream = host
    h.fetch = host.fetch
    return h, host


def basic(client_id: str, secret: str) -> tuple[tuple[str, str], ...]:
    raw = f"{client_id}:{secret}".encode()
    return (("authorization", "Basic " + base64.b64encode(raw).decode()),)


def ci_bot(h: Harness, **form: str) -> Any:
    return h.token({"grant_type": "client_credentials", **form}, headers=basic("ci-bot", CI_SECRET))


def signed(key: Any = KEY, *, now: int, client_id: str = "signer", **claims: Any) -> str:
    kid = claims.pop("kid", "signer-key")
    return assertion(key, client_id=client_id, now=now, kid=kid, **claims)


def with_assertion(h: Harness, client_assertion: str, **form: str) -> Any:
    return h.token(
        {
            "grant_type": "client_credentials",
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": client_assertion,
            **form,
        }
    )


def error_of(resp: Any) -> str:
    return str(json.loads(resp.body)["error"])


def claims_of(token: str) -> dict[str, Any]:
    """The token's claims, its signature unchecked (the tests verify it through the bearer check)."""
    payload = token.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))))
