"""Bearer-token use at the protected MCP resource: RFC 6750 §2.1 and §3, RFC 9728 §5.1 and the MCP
authorization spec (spec/interop.md: exactly one challenge, starting with ``Bearer ``, carrying
``resource_metadata`` and ``scope``; ``error="invalid_token"`` when a token was presented; 403
``insufficient_scope``). spec/security.md 18: bounded lifetime, audience checked, no passthrough."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

import pytest

from oauthproxy_adapters.driver import run
from oauthproxy_adapters.keygen import new_keyring
from oauthproxy_core import AuthorizationServer
from oauthproxy_core.handlers.bearer import Challenge, Principal
from tests.harness import VERIFIER, Browser, Harness, make_config, redirect_params

PRM = "https://proxy.example/.well-known/oauth-protected-resource/mcp"
NO_TOKEN = f'Bearer resource_metadata="{PRM}", scope="mcp"'


def _access(h: Harness, **authorize: str) -> dict[str, Any]:
    client = h.register()
    resp = h.run_to_callback(client, VERIFIER, Browser(), **authorize)
    code = redirect_params(resp)["code"]
    tok = h.token(
        {
            "grant_type": "authorization_code",
            "code": code,
            "client_id": client["client_id"],
            "redirect_uri": client["redirect_uris"][0],
            "code_verifier": VERIFIER,
        }
    )
    assert tok.status == 200, tok.body
    return json.loads(tok.body)  # type: ignore[no-any-return]


def _challenge(verdict: Principal | Challenge, status: int) -> Challenge:
    assert isinstance(verdict, Challenge), verdict
    assert verdict.status == status
    assert verdict.www_authenticate.startswith("Bearer ")
    # Exactly one challenge: one scheme, one resource_metadata.
    assert verdict.www_authenticate.count("Bearer") == 1
    assert verdict.www_authenticate.count("resource_metadata=") == 1
    return verdict


def test_rfc6750_3_no_token_gets_the_exact_challenge() -> None:
    h = Harness()
    verdict = _challenge(h.bearer(None), 401)
    assert verdict.www_authenticate == NO_TOKEN
    assert "error=" not in verdict.www_authenticate
    resp = verdict.response()
    assert resp.status == 401
    assert resp.header("www-authenticate") == NO_TOKEN
    assert resp.header("cache-control") == "no-store"


def test_rfc6750_3_challenge_names_the_required_scopes() -> None:
    h = Harness()
    verdict = _challenge(h.bearer(None, ("mcp", "mcp:write")), 401)
    assert verdict.www_authenticate == f'Bearer resource_metadata="{PRM}", scope="mcp mcp:write"'


def test_mcp_2026_07_28_no_challenge_names_offline_access() -> None:
    """SEP-2207: offline_access asks for a refresh token, not for access; a challenge never lists
    it, whether it comes from the required scopes or the configured defaults."""
    h = Harness(make_config(default_scopes=("mcp", "offline_access")))
    assert _challenge(h.bearer(None), 401).www_authenticate == NO_TOKEN
    assert _challenge(h.bearer(None, ("mcp", "offline_access")), 401).www_authenticate == NO_TOKEN
    assert _challenge(h.bearer("not-a-token", ("offline_access", "mcp")), 401).www_authenticate == (
        NO_TOKEN + ', error="invalid_token"'
    )


def test_rfc9728_5_1_resource_metadata_url_is_served() -> None:
    h = Harness()
    verdict = _challenge(h.bearer(None), 401)
    url = verdict.www_authenticate.split('resource_metadata="', 1)[1].split('"', 1)[0]
    assert url == PRM
    resp = h.request("GET", urlsplit(url).path)
    assert resp.status == 200
    assert json.loads(resp.body)["resource"] == h.config.resource


def test_rfc9728_5_1_resource_metadata_url_is_served_for_an_issuer_with_a_path() -> None:
    # The challenge must point at a URL this server answers (RFC 9728 §3.1: the well-known segment
    # goes between the host and the resource's path), also when the issuer has a path.
    h = Harness(make_config(issuer="https://proxy.example/tenant"))
    verdict = _challenge(h.bearer(None), 401)
    url = verdict.www_authenticate.split('resource_metadata="', 1)[1].split('"', 1)[0]
    assert url == "https://proxy.example/.well-known/oauth-protected-resource/tenant/mcp"
    resp = h.request("GET", urlsplit(url).path)
    assert resp.status == 200
    assert json.loads(resp.body)["resource"] == "https://proxy.example/tenant/mcp"


def run_header(h: Harness, header: str) -> Principal | Challenge:
    return run(h.server.verify_bearer(header, now=h.clock.now, random=h.random), h.store)


@pytest.mark.parametrize(
    "header",
    [
        "Bearer not-a-jwt",
        "Bearer eyJhbGciOiJub25lIiwidHlwIjoiYXQrand0In0.eyJzdWIiOiJ4In0.",
        "Bearer a.b.c",
        "Bearer ",
        "Basic dXNlcjpwYXNz",
        "Bearertoken",
        "Bearer " + "A" * 9000,
    ],
)
def test_rfc6750_3_1_bad_token_is_401_invalid_token(header: str) -> None:
    h = Harness()
    v = _challenge(run_header(h, header), 401)
    assert v.www_authenticate == NO_TOKEN + ', error="invalid_token"'
    assert v.error == "invalid_token"


def test_rfc6750_valid_token_gives_principal() -> None:
    h = Harness()
    body = _access(h)
    principal = h.bearer(body["access_token"], ("mcp",))
    assert isinstance(principal, Principal)
    assert principal.scopes == ("mcp",)
    assert principal.resource == h.config.resource
    # The scheme name is case-insensitive (RFC 9110 §11.1).
    assert isinstance(run_header(h, "bearer " + body["access_token"]), Principal)


def test_rfc6750_3_1_missing_scope_is_403_insufficient_scope() -> None:
    h = Harness()
    body = _access(h)
    v = _challenge(h.bearer(body["access_token"], ("mcp", "mcp:write")), 403)
    assert v.error == "insufficient_scope"
    assert v.www_authenticate == (
        f'Bearer resource_metadata="{PRM}", scope="mcp mcp:write", error="insufficient_scope"'
    )
    resp = v.response()
    assert resp.status == 403
    assert json.loads(resp.body)["error"] == "insufficient_scope"


def test_rfc6750_expired_token_is_401() -> None:
    h = Harness()
    body = _access(h)
    h.clock.advance(3599)
    assert isinstance(h.bearer(body["access_token"]), Principal)
    h.clock.advance(1 + 31)  # 3600 + 31 s after issue
    v = _challenge(h.bearer(body["access_token"]), 401)
    assert v.error == "invalid_token"


def test_rfc6750_tampered_token_is_401() -> None:
    h = Harness()
    token = _access(h)["access_token"]
    header, payload, sig = token.split(".")
    flipped = sig[:-2] + ("A" if sig[-2] != "A" else "B") + sig[-1]
    assert _challenge(h.bearer(f"{header}.{payload}.{flipped}"), 401).error == "invalid_token"
    # Another proxy's keys (a fresh keyring) do not verify here either.
    other = Harness()
    other.server = AuthorizationServer(other.config, new_keyring())
    foreign = _access(other)["access_token"]
    assert _challenge(h.bearer(foreign), 401).error == "invalid_token"


def test_rfc6750_revoked_grant_is_401() -> None:
    h = Harness()
    client = h.register()
    code = h.full_code(client, VERIFIER)
    body = json.loads(
        h.token(
            {
                "grant_type": "authorization_code",
                "code": code,
                "client_id": client["client_id"],
                "redirect_uri": client["redirect_uris"][0],
                "code_verifier": VERIFIER,
            }
        ).body
    )
    h.form("/revoke", {"token": body["refresh_token"], "client_id": client["client_id"]})
    assert _challenge(h.bearer(body["access_token"]), 401).error == "invalid_token"
