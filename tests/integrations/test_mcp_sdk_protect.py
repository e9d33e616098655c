"""``protect(server, proxy)``: an `mcp` SDK server without any auth of its own, protected in one
call; the real SDK client completes discovery, DCR, PKCE, consent, token, a tool call that sees the
verified user (the SDK's ``get_access_token()``) and the user's upstream token, and a refresh."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.mcpserver import MCPServer

from oauthproxy_adapters.http_clients import AsyncHttpClient
from oauthproxy_adapters.keygen import new_keyring
from oauthproxy_adapters.mcp_sdk import mcp_auth, protect, upstream_token
from oauthproxy_adapters.proxy import AsyncProxy
from oauthproxy_adapters.stores.memory import AsyncMemoryStore
from tests.e2e.mcp_client import refresh_and_call, run_mcp_session
from tests.harness import make_config

from .support import Upstream, asgi_behind_proxy


def build(base: str, upstream: Upstream) -> Any:
    proxy = AsyncProxy(upstream.config(base), new_keyring(), AsyncMemoryStore(), AsyncHttpClient())
    server = MCPServer("plain", log_level="WARNING")

    @server.tool()
    async def whoami() -> str:
        token = get_access_token()
        assert token is not None
        github = await upstream_token(proxy)
        return f"{token.subject} {token.client_id} upstream:{github.access_token[:4]}"

    return protect(server, proxy)


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    with asgi_behind_proxy(build) as (base, _upstream):
        yield base


def test_unauthenticated_gets_the_cores_single_challenge(server: str) -> None:
    r = httpx.post(server + "/mcp", json={})
    assert r.status_code == 401
    assert r.headers.get_list("www-authenticate") == [
        f'Bearer resource_metadata="{server}/.well-known/oauth-protected-resource/mcp", scope="mcp"'
    ]
    bad = httpx.post(server + "/mcp", json={}, headers={"Authorization": "Bearer x.y.z"})
    assert bad.status_code == 401 and 'error="invalid_token"' in bad.headers["www-authenticate"]
    assert httpx.get(server + "/.well-known/oauth-authorization-server").json()["issuer"] == server


def test_sdk_client_full_flow_and_refresh(server: str) -> None:
    async def scenario() -> None:
        outcome = await run_mcp_session(server + "/mcp", expected_issuer=server)
        subject, client_id, upstream = outcome.text.split()
        assert subject == "github:4242" and upstream == "upstream:gho_"
        assert outcome.client_info is not None and outcome.client_info.client_id == client_id
        assert outcome.browser.consent_pages == 1
        again = await refresh_and_call(outcome)
        assert again.text == outcome.text
        # protect() set the SDK's DNS-rebinding check to the issuer's host: a valid token sent
        # with another Host header passes the proxy and is refused by the SDK's transport.
        assert again.tokens is not None
        async with httpx.AsyncClient() as client:
            r = await client.post(
                server + "/mcp",
                json={},
                headers={
                    "Host": "rebound.example",
                    "Authorization": f"Bearer {again.tokens.access_token}",
                    "Accept": "application/json, text/event-stream",
                },
            )
        assert r.status_code == 421

    asyncio.run(scenario())


def test_a_server_built_with_mcp_auth_is_pointed_elsewhere() -> None:
    proxy = AsyncProxy(
        make_config(issuer="http://127.0.0.1:8000"),
        new_keyring(),
        AsyncMemoryStore(),
        AsyncHttpClient(),
    )
    server = MCPServer("already", **mcp_auth(proxy))
    with pytest.raises(ValueError, match="with_authorization_server"):
        protect(server, proxy)
