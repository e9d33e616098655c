"""FastMCP with ``auth=OAuthProxyAuth(proxy)``: FastMCP's own OAuth proxy replaced by oauthproxy.

A real FastMCP 4 server under uvicorn on loopback, the development provider upstream; FastMCP's own
``Client`` with its ``OAuth`` helper and the `mcp` SDK's client each complete discovery, DCR, PKCE,
this proxy's consent page, the token exchange and a tool call that sees the verified user.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastmcp import Client, FastMCP
from fastmcp.server.auth import require_scopes
from fastmcp.server.dependencies import get_access_token

from oauthproxy_adapters.http_clients import AsyncHttpClient
from oauthproxy_adapters.integrations.fastmcp import OAuthProxyAuth, upstream_token
from oauthproxy_adapters.keygen import new_keyring
from oauthproxy_adapters.proxy import AsyncProxy
from oauthproxy_adapters.stores.memory import AsyncMemoryStore
from oauthproxy_core.tokens import mint_access_token
from tests.e2e.mcp_client import refresh_and_call, run_mcp_session
from tests.harness import make_config

from .support import HeadlessFastMCPOAuth, Upstream, asgi_behind_proxy


def fastmcp_app(
    base: str, upstream: Upstream, *, proxy: AsyncProxy | None = None, **auth: Any
) -> Any:
    proxy = proxy or AsyncProxy(
        upstream.config(base), new_keyring(), AsyncMemoryStore(), AsyncHttpClient()
    )
    mcp = FastMCP("protected", auth=OAuthProxyAuth(proxy, **auth))

    @mcp.tool
    async def whoami() -> str:
        token = get_access_token()
        assert token is not None
        github = await upstream_token(proxy)
        return f"{token.subject} {token.client_id} upstream:{github.access_token[:4]}"

    @mcp.tool(auth=require_scopes("admin"))
    async def admin_only() -> str:
        return "admin"

    return mcp.http_app(path="/mcp")


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    with asgi_behind_proxy(fastmcp_app) as (base, _upstream):
        yield base


def test_challenge_and_metadata_are_the_cores(server: str) -> None:
    r = httpx.post(server + "/mcp", json={})
    assert r.status_code == 401
    assert r.headers.get_list("www-authenticate") == [
        f'Bearer resource_metadata="{server}/.well-known/oauth-protected-resource/mcp", scope="mcp"'
    ]
    bad = httpx.post(server + "/mcp", json={}, headers={"Authorization": "Bearer nope"})
    assert bad.status_code == 401 and 'error="invalid_token"' in bad.headers["www-authenticate"]
    prm = httpx.get(server + "/.well-known/oauth-protected-resource/mcp").json()
    assert prm["resource"] == server + "/mcp" and prm["authorization_servers"] == [server]
    for path in ("/.well-known/oauth-authorization-server", "/.well-known/openid-configuration"):
        meta = httpx.get(server + path).json()
        assert meta["issuer"] == server
        assert meta["registration_endpoint"] == server + "/register"
        assert meta["authorization_response_iss_parameter_supported"] is True


@pytest.mark.filterwarnings("ignore:Using in-memory token storage:UserWarning")
def test_fastmcp_client_with_its_oauth_helper(server: str) -> None:
    async def scenario() -> None:
        auth = HeadlessFastMCPOAuth(client_name="fastmcp-client")
        async with Client(server + "/mcp", auth=auth) as client:
            names = {tool.name for tool in await client.list_tools()}
            result = await client.call_tool("whoami", {})
            again = await client.call_tool("whoami", {})
        subject, client_id, upstream = result.content[0].text.split()  # type: ignore[union-attr]
        assert subject == "github:4242"
        assert upstream == "upstream:gho_"  # the provider token stays server-side, used by the tool
        assert auth.consents == 1  # this proxy's consent page, approved once
        info = await auth.token_storage_adapter.get_client_info()
        assert info is not None and info.client_id == client_id
        assert info.redirect_uris is not None and info.redirect_uris[0].host == "localhost"
        tokens = await auth.token_storage_adapter.get_tokens()
        assert tokens is not None and not tokens.access_token.startswith("gho_")
        assert again.content == result.content
        # FastMCP's own per-tool authorization reads the scopes our verifier put on the token.
        assert names == {"whoami"}
        await asyncio.gather(*auth.deliveries)

    asyncio.run(scenario())


def test_mcp_sdk_client_and_refresh(server: str) -> None:
    async def scenario() -> None:
        outcome = await run_mcp_session(server + "/mcp", expected_issuer=server)
        assert outcome.text.startswith("github:4242 ")
        assert outcome.browser.consent_pages == 1
        assert outcome.requests_to("/register", actor="mcp")[0].status == 201
        again = await refresh_and_call(outcome)
        assert again.text == outcome.text

    asyncio.run(scenario())


def test_required_scopes_challenge_and_403_insufficient_scope() -> None:
    proxies: list[AsyncProxy] = []

    def build(base: str, upstream: Upstream) -> Any:
        config = upstream.config(base, scopes_supported=("mcp", "admin", "offline_access"))
        proxies.append(AsyncProxy(config, new_keyring(), AsyncMemoryStore(), AsyncHttpClient()))
        return fastmcp_app(base, upstream, proxy=proxies[0], required_scopes=["admin"])

    with asgi_behind_proxy(build) as (base, _up):
        r = httpx.post(base + "/mcp", json={})
        assert r.status_code == 401 and 'scope="admin"' in r.headers["www-authenticate"]

        # A valid token of this proxy without "admin": 403 naming the scope (RFC 6750 §3.1).
        proxy = proxies[0]
        ctx = proxy.server.context(now=proxy.now(), random=proxy.random)
        token, _ = mint_access_token(
            ctx,
            subject="github:1",
            client_id="c",
            scopes=("mcp",),
            resource=proxy.config.resource,
            grant_id="g",
            jti="j",
        )
        r = httpx.post(base + "/mcp", json={}, headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 403
        assert 'error="insufficient_scope"' in r.headers["www-authenticate"]
        assert 'scope="admin"' in r.headers["www-authenticate"]

        async def scenario() -> None:
            # The SDK requests the scope the challenge names, and gets through.
            outcome = await run_mcp_session(base + "/mcp")
            assert outcome.text.startswith("github:4242 ")
            assert outcome.tokens is not None and "admin" in (outcome.tokens.scope or "")

        asyncio.run(scenario())


def test_mcp_path_must_match_the_proxy() -> None:
    proxy = AsyncProxy(
        make_config(issuer="http://127.0.0.1:8000"),
        new_keyring(),
        AsyncMemoryStore(),
        AsyncHttpClient(),
    )
    mcp = FastMCP("protected", auth=OAuthProxyAuth(proxy))
    with pytest.raises(ValueError, match="mcp_path"):
        mcp.http_app(path="/other")
