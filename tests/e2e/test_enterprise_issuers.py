"""End to end, every part real: ``oauthproxy serve`` as a process, its gateway in front of a real `mcp`
SDK server, and a real enterprise identity provider: ``tests/upstream_idp/enterprise_idp.mjs``, a Node
script using `jose` (installed with oidc-provider from the pinned lock file) that signs ID tokens,
answers RFC 8693 token exchanges with ID-JAGs, and mints ordinary JWT access tokens.

- The `mcp` SDK's own identity-assertion provider (``IdentityAssertionOAuthProvider``, SEP-990)
  gets an ID-JAG from the IdP by token exchange, redeems it at the proxy's token endpoint with the
  jwt-bearer grant, then lists and calls tools through the gateway as ``corp:alice``.
- The `mcp` SDK client presents the IdP's own access token (``[[trusted_issuers]]``) and is served
  as ``corp:alice`` too; a rotation of the IdP's keys is picked up by one refetch.
- Negative cases over the wire: a replayed ID-JAG, one carrying ``cnf``, a token for another
  audience (spec/security.md 37).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import httpx2
import pytest
from mcp.client.auth.extensions.identity_assertion import IdentityAssertionOAuthProvider
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp_types import TextContent

from oauthproxy_adapters.testing.serve import ServeProcess
from tests.e2e import conftest_idp as idp_support
from tests.e2e.mcp_client import InMemoryTokenStorage
from tests.e2e.test_serve_oidc_mcp import McpServerThread

# The demo MCP server's tools (demo_mcp.py); with no [[gateway.tools]] rule, tools/list shows all.
ALL_DEMO_TOOLS = ["admin_stats", "provider_token", "whoami"]

SCRIPT = idp_support.IDP_DIR / "enterprise_idp.mjs"
AGENT, AGENT_SECRET = "agent", "agent-secret-0123456789"
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"


@pytest.fixture
def enterprise_idp() -> Iterator[idp_support.IdpProcess]:
    idp_support.ensure_idp_installed()
    env = {**os.environ, "IDP_WATCH_STDIN": "1", "IDP_RAS_CLIENT_ID": AGENT}
    proc = subprocess.Popen(
        ["node", str(SCRIPT), "0"],
        cwd=idp_support.IDP_DIR,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        bufsize=1,
    )
    idp = idp_support.IdpProcess(proc, ["unused"], deny=False)
    idp._wait_ready(idp_support.READY_TIMEOUT)
    try:
        yield idp
    finally:
        idp.stop()


@pytest.fixture
def stack(enterprise_idp: idp_support.IdpProcess, tmp_path: Path) -> Iterator[dict[str, Any]]:
    mcp = McpServerThread()
    issuer, jwks = enterprise_idp.issuer, enterprise_idp.jwks_uri

    def config(port: int) -> str:
        return f"""
[server]
host = "127.0.0.1"
port = {port}
base_url = "http://127.0.0.1:{port}"

[upstream]
provider = "oauth2"
client_id = "unused"
client_secret = "unused-upstream-secret"
authorize_url = "https://upstream.invalid/authorize"
token_url = "https://upstream.invalid/token"
userinfo_url = "https://upstream.invalid/user"

[clients]
cimd_allow_loopback = true   # the IdP's JWK Set is on loopback http

[[clients.static]]
client_id = "{AGENT}"
client_secret = "{AGENT_SECRET}"
token_endpoint_auth_method = "client_secret_post"
redirect_uris = ["http://127.0.0.1:1/callback"]

[[trusted_issuers]]
issuer = "{issuer}"
jwks_uri = "{jwks}"
subject_prefix = "corp"

[[enterprise_issuers]]
issuer = "{issuer}"
jwks_uri = "{jwks}"
subject_prefix = "corp"
clients = ["{AGENT}"]

[store]
url = "sqlite:///{tmp_path / "state.db"}"

[keys]
file = "{tmp_path / "keys.json"}"

[gateway]
upstream_url = "http://127.0.0.1:{mcp.port}/mcp"
"""

    serve = ServeProcess.launch(tmp_path, config, env={"PYTHONUNBUFFERED": "1"})
    try:
        yield {"base": serve.base_url, "idp": enterprise_idp, "serve": serve}
    finally:
        serve.stop()
        mcp.stop()


def _idp_post(idp: idp_support.IdpProcess, path: str, body: dict[str, Any]) -> dict[str, Any]:
    resp = httpx.post(idp.issuer + path, json=body, timeout=10)
    assert resp.status_code == 200, resp.text
    return resp.json()  # type: ignore[no-any-return]


def _id_jag(idp: idp_support.IdpProcess, audience: str, resource: str, sub: str = "alice") -> str:
    """The client's two IdP steps: single sign-on (an ID token), then the token exchange."""
    id_token = _idp_post(idp, "/_test/id_token", {"sub": sub})["id_token"]
    resp = httpx.post(
        idp.token_endpoint,
        auth=("mcp-client", "idp-secret"),
        data={
            "grant_type": "urn:ietf:params:oauth:grant-type:token-exchange",
            "requested_token_type": "urn:ietf:params:oauth:token-type:id-jag",
            "subject_token": id_token,
            "subject_token_type": "urn:ietf:params:oauth:token-type:id_token",
            "audience": audience,
            "resource": resource,
            "scope": "mcp",
        },
        timeout=10,
    )
    assert resp.status_code == 200, resp.text
    assert resp.json()["issued_token_type"] == "urn:ietf:params:oauth:token-type:id-jag"
    return str(resp.json()["access_token"])


async def _whoami(http_client: httpx2.AsyncClient, server_url: str) -> tuple[str, list[str]]:
    with anyio.fail_after(30):
        async with (
            streamable_http_client(server_url, http_client=http_client) as (read, write),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            tools = [t.name for t in (await session.list_tools()).tools]
            result = await session.call_tool("whoami", {})
            text = "".join(c.text for c in result.content if isinstance(c, TextContent))
            return text, tools


def test_invariant_37_the_sdk_identity_assertion_provider_through_serve_and_gateway(
    stack: dict[str, Any],
) -> None:
    base, idp = stack["base"], stack["idp"]
    metadata = httpx.get(base + "/.well-known/oauth-authorization-server").json()
    assert JWT_BEARER in metadata["grant_types_supported"]
    assert metadata["authorization_grant_profiles_supported"] == [
        "urn:ietf:params:oauth:grant-profile:id-jag"
    ]
    requests: list[str] = []
    asked: list[tuple[str, str]] = []

    async def assertion_provider(audience: str, resource: str) -> str:
        asked.append((audience, resource))
        return await asyncio.to_thread(_id_jag, idp, audience, resource)

    async def on_request(request: httpx2.Request) -> None:
        requests.append(f"{request.method} {request.url.path}")

    async def scenario() -> None:
        storage = InMemoryTokenStorage()
        provider = IdentityAssertionOAuthProvider(
            server_url=base + "/mcp",
            storage=storage,
            client_id=AGENT,
            client_secret=AGENT_SECRET,
            issuer=base,
            assertion_provider=assertion_provider,
        )
        async with httpx2.AsyncClient(
            auth=provider, timeout=30, event_hooks={"request": [on_request]}
        ) as client:
            text, tools = await _whoami(client, base + "/mcp")
        assert sorted(tools) == ALL_DEMO_TOOLS  # no [[gateway.tools]] rule hides any
        assert text == "you are corp:alice (login ?), calling through client agent", text
        tokens = storage.tokens
        assert tokens is not None
        assert tokens.refresh_token is None  # the ID-JAG replaces a refresh token
        assert tokens.scope == "mcp"

    asyncio.run(scenario())
    assert asked == [(base, base + "/mcp")]
    assert "POST /token" in requests
    log = httpx.get(idp.issuer + "/_test/log").json()
    assert log["exchanges"] == 1
    assert log["jwks_fetches"] == 1


def test_invariant_37_a_trusted_issuers_token_through_the_gateway_and_a_key_rotation(
    stack: dict[str, Any],
) -> None:
    base, idp = stack["base"], stack["idp"]

    def minted(**claims: Any) -> str:
        body = {
            "header": {"typ": "at+jwt"},
            "claims": {
                "iss": idp.issuer,
                "sub": "alice",
                "aud": base + "/mcp",
                "client_id": "ci-job",
                "scope": "mcp",
                **claims,
            },
        }
        return str(_idp_post(idp, "/_test/mint", body)["token"])

    async def call(token: str) -> str:
        headers = {"Authorization": f"Bearer {token}"}
        async with httpx2.AsyncClient(headers=headers, timeout=30) as client:
            text, _tools = await _whoami(client, base + "/mcp")
            return text

    assert asyncio.run(call(minted())) == (
        "you are corp:alice (login ?), calling through client corp:ci-jo"
    )
    # Another audience: the exact challenge, before the MCP server sees anything.
    refused = httpx.post(
        base + "/mcp",
        headers={"Authorization": "Bearer " + minted(aud="https://api.example")},
        json={"jsonrpc": "2.0", "id": 1, "method": "ping"},
    )
    assert refused.status_code == 401
    assert 'error="invalid_token"' in refused.headers["www-authenticate"]
    # The IdP rotates its keys: a token under the new kid costs one refetch, then works.
    before = httpx.get(idp.issuer + "/_test/log").json()["jwks_fetches"]
    _idp_post(idp, "/_test/rotate", {})
    assert asyncio.run(call(minted(sub="bob"))).startswith("you are corp:bob ")
    assert httpx.get(idp.issuer + "/_test/log").json()["jwks_fetches"] == before + 1


def test_invariant_37_id_jag_refusals_over_the_wire(stack: dict[str, Any]) -> None:
    base, idp = stack["base"], stack["idp"]
    form = {"grant_type": JWT_BEARER, "client_id": AGENT, "client_secret": AGENT_SECRET}
    assertion = _id_jag(idp, base, base + "/mcp")
    first = httpx.post(base + "/token", data={**form, "assertion": assertion})
    assert first.status_code == 200, first.text
    replay = httpx.post(base + "/token", data={**form, "assertion": assertion})
    assert (replay.status_code, replay.json()["error"]) == (400, "invalid_grant")
    claims = json.loads(base64.urlsafe_b64decode(assertion.split(".")[1] + "=="))
    bound = _idp_post(
        idp,
        "/_test/mint",
        {
            "header": {"typ": "oauth-id-jag+jwt"},
            "claims": {**claims, "jti": None, "iat": None, "exp": None, "cnf": {"jkt": "x"}},
        },
    )["token"]
    refused = httpx.post(base + "/token", data={**form, "assertion": bound})
    assert (refused.status_code, refused.json()["error"]) == (400, "invalid_grant")
    # The access token of the first exchange works; it is not a refresh token.
    token = first.json()["access_token"]
    again = httpx.post(
        base + "/token",
        data={**form, "grant_type": "refresh_token", "refresh_token": token},
    )
    assert (again.status_code, again.json()["error"]) == (400, "invalid_grant")
